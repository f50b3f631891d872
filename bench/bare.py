"""The baseline: an aiohttp handler that returns a constant 200, served exactly as the gateway is
(uvloop, no access log, ``reuse_port`` workers). ``python -m bench.bare PORT [WORKERS]``."""

from __future__ import annotations

import os
import sys

import uvloop
from aiohttp import web


async def constant(request: web.Request) -> web.Response:
    return web.Response(body=b"{}", content_type="application/json")


def serve(port: int) -> None:
    uvloop.install()
    app = web.Application()
    app.router.add_get("/{tail:.*}", constant)
    app.router.add_post("/{tail:.*}", constant)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, reuse_port=True)


def main() -> None:
    port = int(sys.argv[1])
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    for _ in range(workers - 1):
        if os.fork() == 0:
            break
    serve(port)


if __name__ == "__main__":
    main()

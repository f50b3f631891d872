"""The local entry point (port 8080): routes each public path to its service, as the Ingress does."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from services.device_gateway.routes import OPERATIONS as GATEWAY
from services.heartbeat.routes import OPERATIONS as HEARTBEAT
from services.provisioning.routes import OPERATIONS as PROVISIONING
from services.registry.routes import OPERATIONS as REGISTRY
from shared.errors import ErrorBody, NotFound
from shared.http import json_response
from shared.openapi import document
from shared.routing import service_for

UPSTREAMS = web.AppKey("UPSTREAMS", dict[str, str])
CLIENT = web.AppKey("CLIENT", aiohttp.ClientSession)

# Hop-by-hop headers (RFC 9110 §7.6.1) are the proxy's own, not passed along.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


def create_app(upstreams: dict[str, str]) -> web.Application:
    """``upstreams`` maps service name → base URL (``http://127.0.0.1:8081``)."""
    app = web.Application(client_max_size=0)
    app[UPSTREAMS] = upstreams
    app.cleanup_ctx.append(client_ctx)
    openapi = document("Signage API", REGISTRY + PROVISIONING + GATEWAY + HEARTBEAT)

    async def openapi_document(request: web.Request) -> web.Response:
        return json_response(openapi)

    async def healthz(request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    app.router.add_get("/openapi.json", openapi_document)
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", r"/{path:[\s\S]*}", proxy)
    return app


# A client that goes away cancels its proxied request, which closes the upstream one: a streamed
# response (GET /v1/heartbeats/stream) would otherwise hold the upstream until its next write.
HANDLER_CANCELLATION = True


async def client_ctx(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        app[CLIENT] = session
        yield


async def proxy(request: web.Request) -> web.StreamResponse:
    service = service_for(request.path)
    if service is None:
        return json_response(NotFound("no such path").body(), status=404)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
    forwarded = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{forwarded}, {request.remote}" if forwarded else str(request.remote)
    url = request.app[UPSTREAMS][service] + request.rel_url.raw_path_qs
    try:
        async with request.app[CLIENT].request(
            request.method, url, headers=headers, data=await request.read(), allow_redirects=False
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    response.headers.add(name, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    except aiohttp.ClientConnectionError:
        return json_response(
            ErrorBody(error="unavailable", message=f"{service} is not reachable"), status=502
        )


def main(argv: list[str]) -> None:
    """``python -m devstack.entrypoint [HOST:]PORT NAME=URL...``: the entry point alone, in front of
    services that run elsewhere (docker-compose.yml); on every address unless HOST is given."""
    try:
        address, *pairs = argv
        host, _, port = address.rpartition(":")
        upstreams = dict(pair.split("=", 1) for pair in pairs)
        port_number = int(port)
    except ValueError:
        raise SystemExit(main.__doc__) from None
    web.run_app(
        create_app(upstreams),
        host=host or None,
        port=port_number,
        access_log=None,
        print=None,
        handler_cancellation=HANDLER_CANCELLATION,
    )


if __name__ == "__main__":
    main(sys.argv[1:])

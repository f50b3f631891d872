"""``make run``: the whole stack on one machine, from nothing but Python.

Starts PostgreSQL and nats-server under ``.data/`` when ``DATABASE_URL``/``NATS_URL`` are unset,
applies migrations, starts the four services and the entry point on :8080, prints what to try.
Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from aiohttp import web

from devstack import entrypoint
from devstack.infra import NatsServer, Postgres
from devstack.services import ROOT, SERVICES, spawn, wait_ready
from services.setup import migrate
from shared.auth import generate_signing_key
from shared.logging import configure
from shared.settings import DEFAULT_PORTS

DATA = ROOT / ".data"


def _persisted_secret(name: str, make: Callable[[], str]) -> str:
    """A generated setting kept under .data/, so tokens and keys survive a restart of `make run`."""
    path = DATA / name
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


def main() -> None:
    started = time.monotonic()
    DATA.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.setdefault("LOG_FORMAT", "console")
    env.setdefault("PYTHONUNBUFFERED", "1")
    configure(service="devstack", log_format=env["LOG_FORMAT"])
    postgres = nats = None
    if not env.get("DATABASE_URL"):
        postgres = Postgres(DATA / "postgres", port=int(env.get("POSTGRES_PORT", 55432))).start()
        env["DATABASE_URL"] = postgres.dsn
    if not env.get("NATS_URL"):
        nats = NatsServer(DATA / "nats", port=int(env.get("NATS_PORT", 54222))).start()
        env["NATS_URL"] = nats.url
    env.setdefault(
        "OPERATOR_TOKEN", _persisted_secret("operator_token", lambda: "op_" + secrets.token_urlsafe(24))
    )
    env.setdefault("TOKEN_SIGNING_KEY", _persisted_secret("token_signing_key", generate_signing_key))
    # The entry point forwards the caller's address in X-Forwarded-For; believe it from loopback.
    env.setdefault("TRUSTED_PROXIES", "127.0.0.1/32,::1/128")
    ports = {
        name: int(env.get(f"{name.upper().replace('-', '_')}_PORT", port))
        for name, port in DEFAULT_PORTS.items()
    }
    children: list[subprocess.Popen[bytes]] = []
    try:
        asyncio.run(migrate(env["DATABASE_URL"]))
        children.extend(spawn(service, env) for service in SERVICES)
        asyncio.run(_serve_entrypoint(ports, env, started, children))
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        if nats is not None:
            nats.stop()
        if postgres is not None:
            postgres.stop()
        print("stopped.")


async def _serve_entrypoint(
    ports: dict[str, int], env: dict[str, str], started: float, children: list[subprocess.Popen[bytes]]
) -> None:
    upstreams = {service: f"http://127.0.0.1:{ports[service]}" for service in SERVICES}
    runner = web.AppRunner(entrypoint.create_app(upstreams), access_log=None, **entrypoint.RUNNER_OPTIONS)
    await runner.setup()
    await web.TCPSite(runner, env.get("HOST", "0.0.0.0"), ports["entrypoint"]).start()
    await wait_ready(upstreams, children)
    _print_welcome(ports["entrypoint"], env, time.monotonic() - started)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        if any(child.poll() is not None for child in children):
            print("a service exited; stopping the stack.", file=sys.stderr)
            break
        try:
            await asyncio.wait_for(stop.wait(), 1)
        except TimeoutError:
            pass
    await runner.cleanup()


def _print_welcome(port: int, env: dict[str, str], seconds: float) -> None:
    base = f"http://localhost:{port}"
    print(
        f"""
================================================================================
 Signage backend is up in {seconds:.1f} s: {base}
   OpenAPI:         {base}/openapi.json
   operator token:  {env["OPERATOR_TOKEN"]}
   database:        {env["DATABASE_URL"]}
   nats:            {env["NATS_URL"]}

 Try it (README.md walks the whole flow):
   export OP={env["OPERATOR_TOKEN"]}
   curl -s -X POST {base}/v1/tenants -H "Authorization: Bearer $OP" \\
        -H 'Content-Type: application/json' -d '{{"name": "Acme Retail"}}'
 Ctrl-C stops everything.
================================================================================
""",
        flush=True,
    )


if __name__ == "__main__":
    main()

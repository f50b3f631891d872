"""``python -m bench.webhooks``: webhook deliveries per second on this machine, from one registry
process to local receivers: events put on the bus as fast as it takes them, each fanned out to one
endpoint, then to many, and timed until the last delivery arrived (signed, at least once).

Starts PostgreSQL and nats-server under ``.data/bench-webhooks/`` (or uses ``DATABASE_URL`` and
``NATS_URL``) and registry as its own process; the receivers (one aiohttp server, a path per
endpoint) and the publisher run in this one.

    python -m bench.webhooks [--events 2000] [--endpoints 1,20] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import time
import uuid

import asyncpg
import msgspec
from aiohttp import web

from devstack.infra import free_port
from devstack.services import ROOT, Processes, wait_ready
from shared import bus
from shared.auth import generate_signing_key
from shared.bus_access import SETUP_USER
from shared.environment import environment
from shared.events import CommandFailed, subject_of
from shared.settings import Settings

DATA = ROOT / ".data" / "bench-webhooks"


class Receivers:
    """Every endpoint's receiver, on one port: what arrived, by endpoint, and when the last did."""

    def __init__(self) -> None:
        self.ids: set[tuple[str, str]] = set()
        self.requests = 0
        self.last_at = 0.0
        self.done = asyncio.Event()
        self.expected = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests += 1
        self.ids.add((request.match_info["endpoint"], request.headers["webhook-id"]))
        if len(self.ids) >= self.expected:
            self.last_at = time.perf_counter()
            self.done.set()
        return web.Response(text="ok")


async def round_of(
    settings: Settings, receivers: Receivers, base_url: str, events: int, endpoints: int
) -> tuple[float, float, int]:
    """Seconds from the first event published to the last delivery queued and to the last
    delivery's arrival, and the requests made (more than the deliveries if any was sent again)."""
    tenant_id = uuid.uuid4()
    conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": "registry"})
    try:
        await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, 'Bench')", tenant_id)
        for _ in range(endpoints):
            endpoint_id = uuid.uuid4()
            await conn.execute(
                "INSERT INTO webhook_endpoints (id, tenant_id, url, events, secret)"
                " VALUES ($1, $2, $3, $4, $5)",
                endpoint_id,
                tenant_id,
                f"{base_url}/hooks/{endpoint_id}",
                ["command.failed"],
                "whsec_" + base64.b64encode(os.urandom(32)).decode(),
            )
    finally:
        await conn.close()
    receivers.ids.clear()
    receivers.requests = 0
    receivers.done.clear()
    receivers.expected = events * endpoints
    batch = [
        CommandFailed(
            tenant_id=tenant_id,
            screen_id=uuid.uuid4(),
            command_id=uuid.uuid4(),
            command_type="reboot",
            message="bench",
        )
        for _ in range(events)
    ]
    nc = await bus.connect(settings, SETUP_USER)
    try:
        js = nc.jetstream()
        started = time.perf_counter()
        for start in range(0, events, 200):
            await asyncio.gather(
                *(
                    js.publish(
                        subject_of(event),
                        msgspec.json.encode(event),
                        headers={"Nats-Msg-Id": str(event.event_id)},
                    )
                    for event in batch[start : start + 200]
                )
            )
    finally:
        await nc.close()
    queued = await fanned_out(settings, tenant_id, events * endpoints)
    await asyncio.wait_for(receivers.done.wait(), timeout=600)
    return queued - started, receivers.last_at - started, receivers.requests


async def fanned_out(settings: Settings, tenant_id: uuid.UUID, deliveries: int) -> float:
    """When the last of the round's deliveries was queued (to a tenth of a second)."""
    conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": "registry"})
    try:
        count = "SELECT count(*) FROM webhook_deliveries WHERE tenant_id = $1"
        while await conn.fetchval(count, tenant_id) < deliveries:  # noqa: ASYNC110 - polls the database
            await asyncio.sleep(0.1)
        return time.perf_counter()
    finally:
        await conn.close()


async def bench(settings: Settings, args: argparse.Namespace) -> None:
    receivers = Receivers()
    app = web.Application()
    app.router.add_post("/hooks/{endpoint}", receivers.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        print(
            f"{'endpoints':>9} {'events':>7} {'deliveries':>10} {'queued':>7} {'seconds':>8}"
            f" {'events/s':>9} {'deliveries/s':>12}"
        )
        for endpoints in args.endpoints:
            queued, seconds, requests = await round_of(
                settings, receivers, f"http://127.0.0.1:{port}", args.events, endpoints
            )
            deliveries = args.events * endpoints
            print(
                f"{endpoints:>9} {args.events:>7} {deliveries:>10} {queued:>7.2f} {seconds:>8.2f}"
                f" {args.events / seconds:>9.0f} {deliveries / seconds:>12.0f}"
                + (f"  ({requests - deliveries} sent again)" if requests > deliveries else ""),
                flush=True,
            )
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="events published per round")
    parser.add_argument(
        "--endpoints",
        type=lambda value: [int(part) for part in value.split(",")],
        default=[1, 20],
        help="endpoints subscribed to every event, one round each (comma-separated)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="WEBHOOK_CONCURRENCY_PER_ENDPOINT")
    args = parser.parse_args()
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    registry_port = free_port()
    env = {
        **os.environ,
        **environment(
            Settings,
            token_signing_key=generate_signing_key(),
            log_format="json",
            log_level="warning",
            registry_port=registry_port,
            webhook_allow_private_addresses=True,
            webhook_allow_http=True,
            webhook_concurrency_per_endpoint=args.concurrency,
        ),
        "PYTHONUNBUFFERED": "1",
    }
    with Processes() as processes:
        processes.start_servers(env, DATA)
        settings = Settings.from_env(env)
        registry = processes.start("registry", env, DATA / "registry.log")
        asyncio.run(wait_ready({"registry": f"http://127.0.0.1:{registry_port}"}, [registry]))
        print(f"webhooks: one registry process, {os.cpu_count()} cores; log in {DATA}", flush=True)
        asyncio.run(bench(settings, args))


if __name__ == "__main__":
    main()

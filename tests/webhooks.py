"""What the webhook tests share: a real HTTP receiver on loopback, endpoints registered straight in
registry's table, events put on the bus behind the services, and the delivery log as it stands."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from shared import bus
from shared.bus_access import SETUP_USER
from shared.events import CommandFailed, Event, subject_of
from shared.settings import Settings


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass(frozen=True)
class Endpoint:
    id: str
    secret: str


async def add_endpoint(
    settings: Settings,
    tenant_id: str,
    url: str,
    events: Iterable[str],
    *,
    secret: str | None = None,
    previous_secret: str | None = None,
    previous_for_seconds: float | None = None,
) -> Endpoint:
    """An enabled endpoint of the tenant, as the admin API would register it."""
    endpoint = Endpoint(str(uuid.uuid4()), secret or new_secret())
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(
            "INSERT INTO registry.webhook_endpoints"
            " (id, tenant_id, url, events, secret, previous_secret, previous_secret_until)"
            " VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))",
            uuid.UUID(endpoint.id),
            uuid.UUID(tenant_id),
            url,
            list(events),
            endpoint.secret,
            previous_secret,
            previous_for_seconds,
        )
    finally:
        await conn.close()
    return endpoint


async def sql(settings: Settings, query: str, *args: Any) -> list[dict[str, Any]]:
    """``query`` on registry's schema, its rows as dicts."""
    conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": "registry"})
    try:
        return [dict(row) for row in await conn.fetch(query, *args)]
    finally:
        await conn.close()


async def deliveries(settings: Settings, endpoint: Endpoint) -> list[dict[str, Any]]:
    return await sql(
        settings,
        "SELECT message_id, event_type, state, attempts, last_status_code, last_error, next_attempt_at,"
        " extract(epoch FROM next_attempt_at - now())::float8 AS due_in FROM webhook_deliveries"
        " WHERE endpoint_id = $1 ORDER BY created_at, message_id",
        uuid.UUID(endpoint.id),
    )


async def endpoint_row(settings: Settings, endpoint: Endpoint) -> dict[str, Any]:
    rows = await sql(
        settings,
        "SELECT enabled, disabled_reason, failing_since, last_success_at FROM webhook_endpoints"
        " WHERE id = $1",
        uuid.UUID(endpoint.id),
    )
    return rows[0]


async def publish(settings: Settings, events: Iterable[Event]) -> None:
    """Put ``events`` on the bus as their services' outboxes would (de-duplicated by event id)."""
    nc = await bus.connect(settings, SETUP_USER)
    try:
        js = nc.jetstream()
        for event in events:
            await js.publish(
                subject_of(event), msgspec.json.encode(event), headers={"Nats-Msg-Id": str(event.event_id)}
            )
    finally:
        await nc.close()


def command_failures(tenant_id: str, count: int) -> list[CommandFailed]:
    """``count`` events of a command that failed on a screen of the tenant (a webhook type of its own)."""
    return [
        CommandFailed(
            tenant_id=uuid.UUID(tenant_id),
            screen_id=uuid.uuid4(),
            command_id=uuid.uuid4(),
            command_type="reboot",
            message=f"failure {i}",
        )
        for i in range(count)
    ]


@dataclass
class Request:
    headers: dict[str, str]
    body: bytes
    at: float  # monotonic, on arrival

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    def verified(self, secret: str) -> Any:
        """The body, after the standardwebhooks library checked its signature by ``secret``."""
        return Webhook(secret).verify(self.body, self.headers)


@dataclass
class Receiver:
    """An HTTP server on loopback that records every request on arrival (before it answers, so a
    request whose answer never reached the sender counts too) and answers ``status`` after
    ``delay`` seconds."""

    status: int = 200
    delay: float = 0.0
    requests: list[Request] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    sock: socket.socket = field(default_factory=lambda: _bound_socket())
    _runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> Receiver:
        """Listen on the socket bound at creation: until then a connection is refused."""
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        # A slow receiver's requests in flight are cut off at the end of a test, not waited for.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.SockSite(self._runner, self.sock).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self.sock.close()

    async def _handle(self, request: web.Request) -> web.Response:
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.requests.append(Request(headers, await request.read(), time.monotonic()))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return web.Response(status=self.status, text="ok")

    def ids(self) -> list[str]:
        return [request.id for request in self.requests]

    def distinct_ids(self) -> set[str]:
        return set(self.ids())


def _bound_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock

"""Real faults injected into the real stack: the NATS server killed and restarted, PostgreSQL
stopped and started again, while the API is used. Nothing is lost, nothing applied twice, and the
stack converges by itself once the part is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats
import pytest
import pytest_asyncio

from devstack.infra import Postgres
from services.setup import migrate
from tests.stack import Stack

# How long a change made during an outage may take to be enforced once the part is back: NATS
# clients retry every 0.5 s, the outbox relay wakes on commit or within a second.
CONVERGE_SECONDS = 20

pytestmark = pytest.mark.timeout(180)


async def playlist_status(stack: Stack, key: str) -> int:
    return (await stack.call("GET", "/v1/device/playlist", token=key))[0]


async def screen_state(stack: Stack, token: str, screen_id: str) -> str:
    return (await stack.call("GET", f"/v1/screens/{screen_id}", token=token))[1]["state"]


async def event_counts(nats_url: str) -> dict[str, int]:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info("EVENTS", subjects_filter="provisioning.device.>")
        return dict(info.state.subjects or {})
    finally:
        await nc.close()


async def test_binding_and_revoking_while_nats_is_down_converge_once_it_is_back(stack, nats_server):
    tenant = await stack.tenant()
    first_screen, first = await stack.paired_device(tenant["token"])
    second_screen = await stack.screen(tenant["token"], "Second")

    async def serving() -> bool:
        return await playlist_status(stack, first["apiKey"]) == 200

    await stack.eventually(serving)
    nats_server.kill()
    try:
        # The API keeps working: every change goes to the outbox in the same transaction.
        code = await stack.code(tenant["token"], second_screen["id"])
        status, second = await stack.register(code["code"])
        assert status == 201, second
        status, body, _ = await stack.call(
            "POST", f"/v1/devices/{first['deviceId']}/revoke", token=tenant["token"]
        )
        assert status == 200, body
        # The gateway answers from memory meanwhile: the revoke is not known there yet.
        assert await playlist_status(stack, first["apiKey"]) == 200
        await asyncio.sleep(1)  # relays and consumers meet the outage, retrying
    finally:
        nats_server.start()  # same port, same store: the streams and buckets are still there

    async def converged() -> bool:
        return (
            await playlist_status(stack, first["apiKey"]) == 401
            and await playlist_status(stack, second["apiKey"]) == 200
            and await screen_state(stack, tenant["token"], first_screen["id"]) == "provisioning"
            and await screen_state(stack, tenant["token"], second_screen["id"]) == "active"
        )

    await stack.eventually(converged, timeout=CONVERGE_SECONDS, interval=0.2)
    # Each event once on the bus (the relay's retries are de-duplicated by message id).
    assert await event_counts(stack.settings.nats_url) == {
        "provisioning.device.bound": 2,
        "provisioning.device.revoked": 1,
    }


@pytest_asyncio.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[Postgres]:
    """A PostgreSQL of this test's own, to stop and start (the session's is shared)."""
    server = await asyncio.to_thread(Postgres(tmp_path / "pg", durable=False).start)
    try:
        await migrate(server.dsn)
        yield server
    finally:
        await asyncio.to_thread(server.stop, "immediate")


async def test_services_ride_out_a_postgres_restart(settings, sockets, own_postgres):
    # All services share this test's one event loop; the outage's retries and their log lines
    # must not make the gateway shed polls for loop lag (separate processes in a deployment).
    patient = msgspec.structs.replace(settings, database_url=own_postgres.dsn, gateway_max_lag_ms=10_000)
    async with Stack(patient, sockets) as stack:
        tenant = await stack.tenant()
        screen, registered = await stack.paired_device(tenant["token"])
        await asyncio.to_thread(own_postgres.stop, "fast")
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(stack.url("registry") + "/readyz") as response:
                    assert response.status == 503 and (await response.json())["checks"]["database"] is False
            # No 500 and nothing half-done: a clear 503 to retry.
            status, body, response = await stack.call("GET", "/v1/venues", token=tenant["token"])
            assert status == 503 and body["error"] == "unavailable" and response.headers["Retry-After"], body
            status, body, _ = await stack.call(
                "POST",
                "/v1/devices/provisioning-codes",
                token=tenant["token"],
                json={"screenId": screen["id"]},
            )
            assert status == 503, body
            # Polls need no database.
            assert await playlist_status(stack, registered["apiKey"]) == 200
        finally:
            await asyncio.to_thread(own_postgres.start)

        async def working_again() -> Any:
            status, body, _ = await stack.call(
                "POST",
                f"/v1/devices/{registered['deviceId']}/revoke",
                token=tenant["token"],
                json={"reason": "after restart"},
            )
            return status == 200 or (status == 409 and body)  # 409: an earlier try went through

        await stack.eventually(working_again, timeout=CONVERGE_SECONDS, interval=0.2)

        async def revoked() -> bool:
            return await playlist_status(stack, registered["apiKey"]) == 401

        await stack.eventually(revoked, timeout=CONVERGE_SECONDS)
        for service in ("registry", "provisioning", "heartbeat"):
            async with aiohttp.ClientSession() as http, http.get(stack.url(service) + "/readyz") as response:
                assert response.status == 200, (service, await response.text())

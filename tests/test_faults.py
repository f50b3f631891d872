"""Real faults injected into the real stack: the NATS server killed and restarted, PostgreSQL
stopped and started again, while the API is used. Nothing is lost, nothing applied twice, and the
stack converges by itself once the part is back."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import nats
import nats.js.errors
import pytest
import pytest_asyncio

from devstack.infra import Postgres
from services.setup import migrate
from shared.auth import public_key_of
from shared.projections import DEVICE_KEYS_BUCKET
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


def spawn(service: str, settings: Any, log: Path) -> subprocess.Popen[bytes]:
    """``service`` as its own process on the stack's port for it, logging to ``log``."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "NATS_URL": settings.nats_url,
        f"{service.upper().replace('-', '_')}_PORT": str(settings.ports[service]),
        "REGISTRY_URL": settings.registry_url,
        "HOST": "127.0.0.1",
        "TOKEN_VERIFY_KEYS": public_key_of(settings.token_signing_key),
        "OPERATOR_TOKEN": settings.operator_token,
        "LOG_FORMAT": "json",
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services", service], env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def until_ready(
    stack: Stack, process: subprocess.Popen[bytes], log: Path, service: str = "provisioning"
) -> None:
    async def ready() -> bool:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            async with aiohttp.ClientSession() as http, http.get(stack.url(service) + "/readyz") as r:
                return r.status == 200
        except aiohttp.ClientConnectionError:
            return False

    await stack.eventually(ready, timeout=30, interval=0.1)


async def test_provisioning_killed_in_the_middle_of_binds_and_revokes_leaves_nothing_half_done(
    stack, tmp_path
):
    tenant = await stack.tenant()
    screens = [await stack.screen(tenant["token"], f"S{i}") for i in range(12)]
    await stack.stop_service("provisioning")  # from here on it runs as a process we can kill
    log = tmp_path / "provisioning.log"
    process = spawn("provisioning", stack.settings, log)
    try:
        await until_ready(stack, process, log)
        codes = [await stack.code(tenant["token"], screen["id"]) for screen in screens]

        async def register(code: str) -> int | str:
            try:
                return (await stack.register(code))[0]
            except aiohttp.ClientError as exc:
                return type(exc).__name__

        attempts = [asyncio.create_task(register(code["code"])) for code in codes]
        # Killed as soon as the first is through: the others are in flight or not started.
        await asyncio.wait(attempts, return_when=asyncio.FIRST_COMPLETED)
        process.kill()
        process.wait()
        first_round = await asyncio.gather(*attempts)
        process = spawn("provisioning", stack.settings, log)
        await until_ready(stack, process, log)
        # Whatever the first round left undone, a TV simply tries again with its code.
        second_round = [await stack.register(code["code"]) for code in codes]
        await _check_nothing_half_done(stack, codes, first_round, second_round, log)
    finally:  # kept running until here: its relay publishes what the second round committed
        process.kill()
        process.wait()


async def _check_nothing_half_done(
    stack: Stack, codes: list[Any], first_round: list[Any], second_round: list[Any], log: Path
) -> None:
    # A second try is 201, or 409 when the first one had committed (its answer may have been lost
    # with the process: the entry point said 502).
    assert all(status in (201, 409) for status, _ in second_round), (first_round, second_round)
    assert any(status != 201 for status in first_round), first_round  # the kill did interrupt work

    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        # Every bound code has its device and every device its key; nothing pending on a bound screen.
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM provisioning.provisioning_codes c LEFT JOIN provisioning.devices d"
                " ON d.id = c.device_id WHERE c.status = 'bound' AND d.id IS NULL"
            )
            == 0
        )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM provisioning.devices d WHERE NOT EXISTS"
                " (SELECT 1 FROM provisioning.device_keys k WHERE k.device_id = d.id)"
            )
            == 0
        )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM provisioning.provisioning_codes c JOIN provisioning.devices d"
                " ON d.screen_id = c.screen_id AND d.status = 'active' WHERE c.status = 'pending'"
            )
            == 0
        )
        key_hashes = [
            bytes(r["key_hash"]).hex()
            for r in await conn.fetch(
                "SELECT key_hash FROM provisioning.device_keys WHERE revoked_at IS NULL"
            )
        ]
        assert len(key_hashes) == len(codes)
    finally:
        await conn.close()
    # ...and every key reached the gateways' bucket (the outbox kept what the killed process had
    # committed but not yet published; the new process's relay sent it).
    nc = await nats.connect(stack.settings.nats_url)
    try:
        bucket = await nc.jetstream().key_value(DEVICE_KEYS_BUCKET)

        async def all_published() -> bool:
            for key_hash in key_hashes:
                try:
                    await bucket.get(key_hash)
                except nats.js.errors.KeyNotFoundError:
                    return False
            return True

        try:
            await stack.eventually(all_published, timeout=CONVERGE_SECONDS, interval=0.2)
        except AssertionError:
            conn = await asyncpg.connect(stack.settings.database_url)
            waiting = await conn.fetch("SELECT seq, subject, created_at FROM provisioning.outbox")
            locks = await conn.fetch("SELECT pid, granted, objid FROM pg_locks WHERE locktype = 'advisory'")
            await conn.close()
            raise AssertionError(f"outbox: {waiting}\nlocks: {locks}\n{log.read_text()[-4000:]}") from None
    finally:
        await nc.close()


@pytest.mark.timeout(240)
async def test_heartbeats_acked_by_the_gateway_survive_a_killed_heartbeat_service(stack, tmp_path):
    """202 means in JetStream; the heartbeat service acks a batch only after storing it. Killed in
    the middle, its unacked messages come back (after the consumer's ack wait) to the restarted
    service: every heartbeat ends up stored, none twice."""
    tenant = await stack.tenant()
    screen, registered = await stack.paired_device(tenant["token"])
    await stack.stop_service("heartbeat")
    log = tmp_path / "heartbeat.log"
    process = spawn("heartbeat", stack.settings, log)
    try:
        await until_ready(stack, process, log, "heartbeat")

        async def beat(uptime: int) -> int:
            body = {"uptimeSeconds": uptime}
            return (await stack.call("POST", "/v1/device/heartbeat", token=registered["apiKey"], json=body))[
                0
            ]

        async def gateway_knows_the_key() -> bool:
            return await beat(0) == 202

        await stack.eventually(gateway_knows_the_key)
        # Frozen, the service has a fetch open: JetStream hands it messages it will never ack.
        process.send_signal(signal.SIGSTOP)
        statuses = await asyncio.gather(*(beat(uptime) for uptime in range(1, 400)))
        assert set(statuses) == {202}, collections.Counter(statuses)
        await asyncio.sleep(0.5)
        process.kill()
        process.wait()
        conn = await asyncpg.connect(stack.settings.database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM heartbeat.heartbeats") < 400
        finally:
            await conn.close()
        process = spawn("heartbeat", stack.settings, log)
        await until_ready(stack, process, log, "heartbeat")

        async def stored() -> int:
            count, since = 0, None
            while True:
                query = "?limit=200" + (f"&since={since}" if since else "")
                status, page, _ = await stack.call(
                    "GET", f"/v1/screens/{screen['id']}/heartbeats{query}", token=tenant["token"]
                )
                if status == 404:  # the service's copy of the screen may still be on its way
                    return 0
                assert status == 200, page
                count += len(page["items"])
                since = page["nextSince"]
                if not since:
                    return count

        async def all_stored() -> bool:
            return await stored() >= 400

        await stack.eventually(all_stored, timeout=90, interval=1)
        assert await stored() == 400  # none twice
    finally:
        process.kill()
        process.wait()

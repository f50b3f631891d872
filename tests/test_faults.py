"""Real faults injected into the real stack: the NATS server killed and restarted, PostgreSQL
stopped and started again, while the API is used. Nothing is lost, nothing applied twice, and the
stack converges by itself once the part is back."""

from __future__ import annotations

import asyncio
import collections
import signal
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
from shared import bus
from shared.bus_access import SETUP_USER
from shared.projections import DEVICE_KEYS_BUCKET
from shared.settings import Settings
from tests.stack import Stack, spawn, until_ready

# How long a change made during an outage may take to be enforced once the part is back: NATS
# clients retry every 0.5 s, the outbox relay wakes on commit or within a second.
CONVERGE_SECONDS = 20

pytestmark = pytest.mark.timeout(180)


async def playlist_status(stack: Stack, key: str) -> int:
    return (await stack.call("GET", "/v1/device/playlist", token=key))[0]


async def screen_state(stack: Stack, token: str, screen_id: str) -> str:
    return (await stack.call("GET", f"/v1/screens/{screen_id}", token=token))[1]["state"]


async def event_counts(settings: Settings, subjects: str = "provisioning.device.>") -> dict[str, int]:
    nc = await bus.connect(settings, SETUP_USER)
    try:
        info = await nc.jetstream().stream_info("EVENTS", subjects_filter=subjects)
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
    assert await event_counts(stack.settings) == {
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
            # Still ready: every replica shares the outage, and answers 503 itself.
            async with (
                aiohttp.ClientSession() as http,
                http.get(stack.url("registry") + "/readyz") as response,
            ):
                assert response.status == 200, await response.text()
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


async def test_provisioning_killed_in_the_middle_of_binds_and_revokes_leaves_nothing_half_done(
    settings, sockets, tmp_path
):
    # A kill spends the attempt slots of the registrations in flight (they count as failures:
    # nothing gives them back), which may be more than a window's budget; budgets are not what
    # this test is about.
    generous = msgspec.structs.replace(settings, register_failures_per_window=100)
    async with Stack(generous, sockets) as stack:
        tenant = await stack.tenant()
        token = tenant["token"]
        screens = [await stack.screen(token, f"S{i}") for i in range(12)]
        paired = [(await stack.paired_device(token))[1] for _ in range(6)]  # to be revoked
        await stack.stop_service("provisioning")  # from here on it runs as a process we can kill
        log = tmp_path / "provisioning.log"
        process = spawn("provisioning", stack.settings, log)
        try:
            await until_ready(stack, process, log)
            codes = [await stack.code(token, screen["id"]) for screen in screens]

            async def register(code: str) -> int | str:
                try:
                    return (await stack.register(code))[0]
                except aiohttp.ClientError as exc:
                    return type(exc).__name__

            async def revoke(device: dict[str, Any]) -> int | str:
                try:
                    path = f"/v1/devices/{device['deviceId']}/revoke"
                    return (await stack.call("POST", path, token=token, json={"reason": "stolen"}))[0]
                except aiohttp.ClientError as exc:
                    return type(exc).__name__

            attempts = [asyncio.create_task(register(code["code"])) for code in codes]
            attempts += [asyncio.create_task(revoke(device)) for device in paired]
            # Killed as soon as the first is through: the others are in flight or not started.
            await asyncio.wait(attempts, return_when=asyncio.FIRST_COMPLETED)
            process.kill()
            process.wait()
            first_round = await asyncio.gather(*attempts)
            process = spawn("provisioning", stack.settings, log)
            await until_ready(stack, process, log)
            # Whatever the first round left undone, a TV simply tries again with its code, and the
            # admin revokes again (409 when the first one had gone through).
            second_round = [await stack.register(code["code"]) for code in codes]
            assert {await revoke(device) for device in paired} <= {200, 409}
            await _check_nothing_half_done(stack, codes, first_round, second_round, log)

            async def revoked_everywhere() -> bool:
                statuses = [await playlist_status(stack, device["apiKey"]) for device in paired]
                return set(statuses) == {401}

            await stack.eventually(revoked_everywhere, timeout=CONVERGE_SECONDS, interval=0.2)
        finally:  # kept running until here: its relay publishes what the second round committed
            process.kill()
            process.wait()


async def _check_nothing_half_done(
    stack: Stack, codes: list[Any], first_round: list[Any], second_round: list[Any], log: Path
) -> None:
    # A second try is 201, or 409 when the first one had committed (its answer may have been lost
    # with the process: the entry point said 502).
    assert all(status in (201, 409) for status, _ in second_round), (first_round, second_round)
    assert any(status not in (200, 201) for status in first_round), first_round  # the kill cut work off

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
                "SELECT count(*) FROM provisioning.device_keys k JOIN provisioning.devices d"
                " ON d.id = k.device_id WHERE d.status = 'suspended' AND k.revoked_at IS NULL"
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
    nc = await bus.connect(stack.settings, SETUP_USER)
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
            written = await asyncio.to_thread(log.read_text)
            raise AssertionError(f"outbox: {waiting}\nlocks: {locks}\n{written[-4000:]}") from None
    finally:
        await nc.close()


async def test_registry_killed_in_the_middle_of_changes_loses_no_event(stack, tmp_path):
    """Screens created and playlists and configs changed while registry is SIGKILLed: after a
    restart and the admin's retries, every screen registry has was announced exactly once, and
    every TV plays what registry says its screen has."""
    tenant = await stack.tenant()
    token = tenant["token"]
    paired = [await stack.paired_device(token) for _ in range(4)]
    status, venue, _ = await stack.call("POST", "/v1/venues", token=token, json={"name": "HQ"})
    assert status == 201, venue
    await stack.stop_service("registry")
    log = tmp_path / "registry.log"
    process = spawn("registry", stack.settings, log)

    def playlist(round_: int) -> dict[str, Any]:
        return {
            "items": [{"type": "image", "url": f"https://cdn.example.com/{round_}.png", "durationSeconds": 5}]
        }

    async def change(method: str, path: str, body: Any) -> int | str:
        try:
            return (await stack.call(method, path, token=token, json=body))[0]
        except aiohttp.ClientError as exc:
            return type(exc).__name__

    def changes(round_: int) -> list[Any]:
        return [
            *(
                change("POST", "/v1/screens", {"venueId": venue["id"], "name": f"New {round_}.{i}"})
                for i in range(8)
            ),
            *(
                change("PUT", f"/v1/screens/{screen['id']}/playlist", playlist(round_))
                for screen, _ in paired
            ),
            *(
                change(
                    "PATCH", f"/v1/screens/{screen['id']}/config", {"heartbeatIntervalMinutes": 1 + round_}
                )
                for screen, _ in paired
            ),
        ]

    try:
        await until_ready(stack, process, log, "registry")
        attempts = [asyncio.create_task(attempt) for attempt in changes(1)]
        await asyncio.wait(attempts, return_when=asyncio.FIRST_COMPLETED)
        process.kill()
        process.wait()
        first_round = await asyncio.gather(*attempts)
        assert any(status not in (200, 201) for status in first_round), first_round  # the kill cut work off
        process = spawn("registry", stack.settings, log)
        await until_ready(stack, process, log, "registry")
        # The admin's console tries its changes again (a later round: the last word).
        assert set(await asyncio.gather(*changes(2))) <= {200, 201}

        conn = await asyncpg.connect(stack.settings.database_url)
        try:

            async def each_screen_announced_once() -> bool:
                screens = await conn.fetchval("SELECT count(*) FROM registry.screens")
                announced = await event_counts(stack.settings, "registry.screen.created")
                return announced == {"registry.screen.created": screens}

            await stack.eventually(each_screen_announced_once, timeout=CONVERGE_SECONDS, interval=0.2)
        finally:
            await conn.close()

        async def every_tv_plays_the_last_word() -> bool:
            for screen, registered in paired:
                status, body, _ = await stack.call("GET", "/v1/device/playlist", token=registered["apiKey"])
                _, config, _ = await stack.call("GET", "/v1/device/config", token=registered["apiKey"])
                _, stored, _ = await stack.call("GET", f"/v1/screens/{screen['id']}/playlist", token=token)
                if (
                    status != 200
                    or body["items"] != playlist(2)["items"]
                    or body["version"] != stored["version"]
                    or config["heartbeatIntervalMinutes"] != 3
                ):
                    return False
            return True

        await stack.eventually(every_tv_plays_the_last_word, timeout=CONVERGE_SECONDS, interval=0.2)
    finally:
        process.kill()
        process.wait()


@pytest.mark.timeout(240)
async def test_heartbeats_acked_by_the_gateway_survive_a_killed_heartbeat_service(stack, tmp_path):
    """202 means in JetStream; the heartbeat service acks a batch only after storing it. Killed in
    the middle, its unacked messages come back (after the consumer's ack wait) to the restarted
    service: every heartbeat accepted ends up stored, none twice."""
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

        answers: collections.Counter[int] = collections.Counter()
        last_refusal: Any = None

        async def gateway_knows_the_key() -> bool:
            nonlocal last_refusal
            status, body, _ = await stack.call(
                "POST", "/v1/device/heartbeat", token=registered["apiKey"], json={"uptimeSeconds": 0}
            )
            answers[status] += 1
            if status != 202:
                last_refusal = body
            return status == 202

        try:
            await stack.eventually(gateway_knows_the_key)
        except AssertionError as error:  # which refusal: 401 unknown key, 503 the bus, 429 shed
            raise AssertionError(
                f"{error}: answers {dict(answers)}, the last refused {last_refusal}"
            ) from None
        # Frozen, the service has a fetch open: JetStream hands it messages it will never ack.
        process.send_signal(signal.SIGSTOP)
        statuses = collections.Counter(await asyncio.gather(*(beat(uptime) for uptime in range(1, 400))))
        # The 399 requests come from the event loop the in-process gateway runs on: lagging past
        # its limit, it sheds some (429; a TV sends again later). Never accepted, they are not owed.
        assert set(statuses) <= {202, 429}, statuses
        acked = 1 + statuses[202]  # with the first, which told us the gateway knew the key
        await asyncio.sleep(0.5)
        process.kill()
        process.wait()
        conn = await asyncpg.connect(stack.settings.database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM heartbeat.heartbeats") < acked
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
            return await stored() >= acked

        await stack.eventually(all_stored, timeout=90, interval=1)
        assert await stored() == acked  # none twice
    finally:
        process.kill()
        process.wait()


async def test_a_round_trip_given_up_leaves_the_bus_connection_working(settings):
    """A readiness probe cut off after its timeout (a loop lagging, a loaded machine) cancels a
    flush whose PONG is on its way. That PONG, read later, must not end the connection's reading:
    the connection would look connected while every request and publish timed out."""
    nc = await bus.connect(settings, SETUP_USER)
    try:
        flushes = []
        for _ in range(3):
            flushes.append(asyncio.ensure_future(nc.flush()))
            await asyncio.sleep(0)  # its PING is sent, its PONG not read yet
            flushes[-1].cancel()
        await asyncio.gather(*flushes, return_exceptions=True)
        assert all(flush.cancelled() for flush in flushes)
        await asyncio.sleep(0.2)  # the PONGs come back
        info = await nc.jetstream(timeout=2).account_info()
        assert info.streams == 0  # an answer read: the connection still reads
        await nc.flush(timeout=2)
    finally:
        await nc.close()

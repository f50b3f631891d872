"""A rollout's SIGTERM, service by service: the port closes at once (the load balancer sends new
requests elsewhere), the requests already in flight are answered in full, what they committed is
published before the process ends (nobody waits for the next start), and the process exits 0."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest

from shared import bus
from shared.auth import secret_hash
from shared.bus_access import SETUP_USER
from shared.events import heartbeat_subject
from shared.projections import DEVICE_KEYS_BUCKET
from shared.settings import Settings
from tests.stack import DEVICE_INFO, Stack, spawn, until_ready

pytestmark = pytest.mark.timeout(120)

# A rollout gives a pod 45 s after its preStop delay (deploy/base); the services' own bound for
# in-flight requests is 10 s (shared/serve.py). A clean exit well within both:
EXIT_SECONDS = 15


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No lag shedding in the stack of these tests.

    The stack runs every service in this process, on one event loop: a burst of heartbeats, or the
    work of a service taking over from a stopped process, makes that loop lag past the gateway's
    threshold, and the gateway then answers 429 — which is load shedding doing its job, not what
    these tests are about. A minute of lag would mean the loop hung, which the timeout reports.
    """
    return msgspec.structs.replace(settings, gateway_max_lag_ms=60_000)


async def refuses_connections(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(url + "/healthz"):
            return False
    except aiohttp.ClientConnectionError:
        return True


async def terminated_during(
    stack: Stack, process: subprocess.Popen[bytes], service: str, path: str, body: Any, token: str | None
) -> tuple[int, Any]:
    """Send ``body`` to ``service`` slowly; SIGTERM the process while the request is in flight
    (its handler running, the body half sent); check the port closes; then send the rest and
    return the answer."""
    payload = msgspec.json.encode(body)
    half_sent, go_on = asyncio.Event(), asyncio.Event()

    async def slowly() -> AsyncIterator[bytes]:
        yield payload[:5]
        half_sent.set()
        await go_on.wait()
        yield payload[5:]

    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"

    async def send() -> tuple[int, Any]:
        url = stack.url(service) + path
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, data=slowly(), headers=headers) as response,
        ):
            return response.status, await response.json()

    answer = asyncio.create_task(send())
    await half_sent.wait()
    await asyncio.sleep(0.3)  # the request has reached its handler, which waits for the body
    process.send_signal(signal.SIGTERM)
    await stack.eventually(lambda: refuses_connections(stack.url(service)), timeout=5)
    assert process.poll() is None  # still serving the request in flight
    go_on.set()
    return await answer


async def exit_status(process: subprocess.Popen[bytes], log: Path) -> int:
    # In a thread: the services of the stack, on this loop, keep working while we wait.
    return await asyncio.to_thread(_wait, process, log)


def _wait(process: subprocess.Popen[bytes], log: Path) -> int:
    try:
        return process.wait(timeout=EXIT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(
            f"still running {EXIT_SECONDS} s after SIGTERM:\n{log.read_text()[-3000:]}"
        ) from None


def problems(log: Path) -> list[str]:
    return [
        line for line in log.read_text().splitlines() if '"level": "error"' in line or "Traceback" in line
    ]


async def stream_subjects(settings: Settings, stream: str, subjects: str) -> dict[str, int]:
    nc = await bus.connect(settings, SETUP_USER)
    try:
        info = await nc.jetstream().stream_info(stream, subjects_filter=subjects)
        return dict(info.state.subjects or {})
    finally:
        await nc.close()


async def test_registry_answers_the_request_in_flight_and_publishes_its_event_before_exiting(stack, tmp_path):
    tenant = await stack.tenant()
    status, venue, _ = await stack.call("POST", "/v1/venues", token=tenant["token"], json={"name": "HQ"})
    assert status == 201, venue
    await stack.stop_service("registry")
    log = tmp_path / "registry.log"
    process = spawn("registry", stack.settings, log)
    try:
        await until_ready(stack, process, log, "registry")
        status, screen = await terminated_during(
            stack,
            process,
            "registry",
            "/v1/screens",
            {"venueId": venue["id"], "name": "Late"},
            tenant["token"],
        )
        assert status == 201, screen
        assert await exit_status(process, log) == 0
    finally:
        process.kill()
    assert not problems(log)
    # Published by the stopping process itself: no registry runs now.
    assert await stream_subjects(stack.settings, "EVENTS", "registry.screen.created") == {
        "registry.screen.created": 1
    }


async def test_provisioning_finishes_a_registration_in_flight_and_its_key_reaches_the_gateways(
    stack, tmp_path
):
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    code = await stack.code(tenant["token"], screen["id"])
    await stack.stop_service("provisioning")
    log = tmp_path / "provisioning.log"
    process = spawn("provisioning", stack.settings, log)
    try:
        await until_ready(stack, process, log)
        body = {"pairingCode": code["code"], "deviceInfo": DEVICE_INFO}
        status, registered = await terminated_during(
            stack, process, "provisioning", "/devices/register", body, None
        )
        assert status == 201, registered
        assert await exit_status(process, log) == 0
    finally:
        process.kill()
    assert not problems(log)
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM provisioning.outbox") == 0
    finally:
        await conn.close()
    # The TV can poll at once: its key was put in the gateways' bucket before the process ended.
    status, _, _ = await stack.call("GET", "/v1/device/playlist", token=registered["apiKey"])
    assert status == 200
    nc = await bus.connect(stack.settings, SETUP_USER)
    try:
        bucket = await nc.jetstream().key_value(DEVICE_KEYS_BUCKET)
        assert (await bucket.get(secret_hash(registered["apiKey"]).hex())).value
    finally:
        await nc.close()


async def test_the_gateway_answers_a_heartbeat_in_flight_and_it_is_in_the_stream(stack, tmp_path):
    tenant = await stack.tenant()
    _, registered = await stack.paired_device(tenant["token"])
    await stack.stop_service("device-gateway")
    log = tmp_path / "gateway.log"
    process = spawn("device-gateway", stack.settings, log)
    try:
        await until_ready(stack, process, log, "device-gateway")
        status, body = await terminated_during(
            stack,
            process,
            "device-gateway",
            "/v1/device/heartbeat",
            {"uptimeSeconds": 7},
            registered["apiKey"],
        )
        assert status == 202, body
        assert await exit_status(process, log) == 0
    finally:
        process.kill()
    assert not problems(log)
    # This screen's heartbeats only: the stream also carries presence events (this one made it online).
    subject = heartbeat_subject(registered["tenantId"], registered["screenId"])
    assert await stream_subjects(stack.settings, "HEARTBEATS", subject) == {subject: 1}


@pytest.mark.timeout(180)
async def test_the_heartbeat_service_stops_between_batches_and_loses_nothing(stack, tmp_path):
    """SIGTERM while heartbeats stream in: the batch in hand is stored and acked (not abandoned to
    be redelivered after the ack wait), the process exits 0, and after a start every heartbeat is
    stored once."""
    tenant = await stack.tenant()
    devices = [(await stack.paired_device(tenant["token"]))[1] for _ in range(4)]
    await stack.stop_service("heartbeat")
    log = tmp_path / "heartbeat.log"
    process = spawn("heartbeat", stack.settings, log)
    total = 4 * 300
    try:
        await until_ready(stack, process, log, "heartbeat")
        conn = await asyncpg.connect(stack.settings.database_url)
        try:

            async def beat(key: str, uptime: int) -> int:
                body = {"uptimeSeconds": uptime}
                return (await stack.call("POST", "/v1/device/heartbeat", token=key, json=body))[0]

            sending = asyncio.gather(
                *(beat(device["apiKey"], uptime) for device in devices for uptime in range(300))
            )

            async def storing() -> bool:
                return await conn.fetchval("SELECT count(*) FROM heartbeat.heartbeats") > 0

            await stack.eventually(storing, timeout=30)
            process.send_signal(signal.SIGTERM)
            assert set(await sending) == {202}
            assert await exit_status(process, log) == 0
            assert not problems(log)
            process = spawn("heartbeat", stack.settings, log)
            await until_ready(stack, process, log, "heartbeat")

            async def all_stored() -> bool:
                return await conn.fetchval("SELECT count(*) FROM heartbeat.heartbeats") >= total

            # Well within the consumer's 30 s ack wait: nothing the stopped process held had to wait
            # it out (what it had in hand it stored and acked, what it had fetched besides it
            # handed back).
            await stack.eventually(all_stored, timeout=15, interval=0.5)
            assert await conn.fetchval("SELECT count(*) FROM heartbeat.heartbeats") == total  # none twice
        finally:
            await conn.close()
    finally:
        process.kill()

"""Readiness by the replica's own ability: with NATS or PostgreSQL away every replica stays in the
load balancer; a request that needs the missing part gets a prompt 503 with Retry-After in the
one error shape, the gateway answers polls from memory, and the dependency's state shows in the
verbose health document and the ``dependency_up`` gauge until it is back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import msgspec
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from shared.logging import renderer_chain
from tests import test_faults
from tests.stack import Stack
from tests.test_files import put_file

pytestmark = pytest.mark.timeout(120)

own_postgres = test_faults.own_postgres  # a PostgreSQL of the test's own, to stop and start

# From the part going away to the first 503 of a request that needs it: no hang.
PROMPT_SECONDS = 2.0
# How long the gateway waits for JetStream's ack of a report (services/device_gateway/handlers.py).
REPORT_ACK_SECONDS = 2
# The dependency's state follows within the probe's interval and timeout (shared.dependencies).
NOTICED_SECONDS = 5


async def readiness(stack: Stack, service: str, query: str = "") -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(stack.url(service) + "/readyz" + query) as response:
        return response.status, await response.json()


async def dependency_up(stack: Stack, service: str, dependency: str) -> float:
    """The ``dependency_up`` gauge as the service's /metrics shows it."""
    async with aiohttp.ClientSession() as http, http.get(stack.url(service) + "/metrics") as response:
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "dependency_up" and sample.labels == {"dependency": dependency}:
                return sample.value
    raise AssertionError(f"no dependency_up for {dependency} in {service}'s metrics")


async def shown(stack: Stack, service: str, dependency: str, *, up: bool) -> bool:
    """The verbose document and the gauge both say ``dependency`` is up (or down); and the service
    is ready all the same."""
    status, body = await readiness(stack, service, "?verbose")
    assert status == 200 and body["status"] == "ready", (service, body)
    state = body["dependencies"][dependency]
    return state["up"] is up and await dependency_up(stack, service, dependency) == (1.0 if up else 0.0)


async def first_unavailable(
    attempt: Callable[[], Awaitable[tuple[int, Any, Any]]], stop: Callable[[], None]
) -> tuple[float, float, Any, Any]:
    """Call ``stop`` (in a thread: it waits for the server to end) while repeating ``attempt``
    until it answers 503: never a 500 meanwhile, and an attempt made once the server has ended
    answers 503 within PROMPT_SECONDS. The seconds from the stop's start to its end and to the
    first 503, and that 503's body and headers."""
    started = time.monotonic()
    ended: list[float] = []

    def stopping() -> None:
        stop()
        ended.append(time.monotonic() - started)

    stopped = asyncio.ensure_future(asyncio.to_thread(stopping))
    try:
        while True:
            sent = time.monotonic() - started
            status, body, response = await attempt()
            if status == 503:
                answered = time.monotonic() - started
                await stopped
                return ended[0], answered, body, response.headers
            assert status < 500, (status, body)  # before the outage is noticed: served, never a 500
            if ended and sent >= ended[0]:
                assert time.monotonic() - started - ended[0] < PROMPT_SECONDS, (status, body)
            await asyncio.sleep(0.01)
    finally:
        await stopped


def assert_unavailable(body: Any, headers: Any, message: str) -> None:
    assert body == {"error": "unavailable", "message": message}, body
    assert 1 <= int(headers["Retry-After"]) <= 10, headers


async def test_the_gateway_stays_ready_and_answers_polls_while_nats_is_away(stack, nats_server):
    tenant = await stack.tenant()
    _, registered = await stack.paired_device(tenant["token"])
    key = registered["apiKey"]
    assert (await put_file(stack, tenant["token"], "logo.png", b"png"))[0] == 200

    async def poll(**headers: str) -> tuple[int, Any, Any]:
        return await stack.call("GET", "/v1/device/playlist", token=key, headers=headers)

    async def known() -> bool:
        return (await poll())[0] == 200

    await stack.eventually(known)
    _, playlist, response = await poll()
    etag = response.headers["ETag"]
    await asyncio.to_thread(nats_server.stop)  # it waits for the server to end: not on the loop
    try:
        await stack.eventually(
            lambda: shown(stack, "device-gateway", "nats", up=False), timeout=NOTICED_SECONDS
        )
        status, body = await readiness(stack, "device-gateway")
        assert (status, body) == (200, {"status": "ready", "checks": {"projections": True}})
        state = (await readiness(stack, "device-gateway", "?verbose"))[1]["dependencies"]["nats"]
        assert state["error"] and state["since"].endswith("Z"), state
        # Polls are answered from memory, conditionally too.
        status, body, _ = await poll()
        assert (status, body) == (200, playlist)
        assert (await poll(**{"If-None-Match": etag}))[0] == 304
        # A file needs the bus: a prompt 503 to retry, not a hang.
        started = time.monotonic()
        status, body, response = await stack.call("GET", "/v1/device/content/logo.png", token=key)
        assert status == 503 and time.monotonic() - started < PROMPT_SECONDS
        assert_unavailable(body, response.headers, "the message bus is not reachable; retry shortly")
        # A report waits for its ack at most REPORT_ACK_SECONDS (a blip shorter than that loses
        # nothing), then 503 too: bounded, not hung. The margin is the request's own way through
        # a loaded 2-core machine running the whole stack in this process.
        started = time.monotonic()
        status, body, response = await stack.call(
            "POST", "/v1/device/heartbeat", token=key, json={"uptimeSeconds": 60}
        )
        assert status == 503 and time.monotonic() - started < REPORT_ACK_SECONDS + 3
        assert body["error"] == "unavailable" and int(response.headers["Retry-After"]) >= 1, body
    finally:
        await asyncio.to_thread(nats_server.start)  # same port, same store
    await stack.eventually(lambda: shown(stack, "device-gateway", "nats", up=True), timeout=NOTICED_SECONDS)
    status, _, _ = await stack.call("POST", "/v1/device/heartbeat", token=key, json={"uptimeSeconds": 61})
    assert status == 202
    status, body, _ = await stack.call("GET", "/v1/device/content/logo.png", token=key)
    assert (status, body) == (200, b"png")


async def test_registry_answers_503_for_what_needs_nats_and_every_service_stays_ready(stack, nats_server):
    tenant = await stack.tenant()
    token = tenant["token"]
    screen = await stack.screen(token)
    assert (await put_file(stack, token, "logo.png", b"png"))[0] == 200

    async def store() -> tuple[int, Any, Any]:
        return await stack.call(
            "PUT",
            "/v1/content/logo.png",
            token=token,
            data=b"png2",
            headers={"Content-Type": "application/octet-stream"},
        )

    try:
        first, stopped, body, headers = await first_unavailable(store, nats_server.stop)
        print(f"NATS: first 503 {first:.3f}s after the stop began (server ended in {stopped:.3f}s)")
        assert_unavailable(body, headers, "the message bus is not reachable; retry shortly")
        for method, path in [("GET", "/v1/content"), ("DELETE", "/v1/content/logo.png")]:
            started = time.monotonic()
            status, body, response = await stack.call(method, path, token=token)
            assert status == 503 and time.monotonic() - started < PROMPT_SECONDS, (path, body)
            assert_unavailable(body, response.headers, "the message bus is not reachable; retry shortly")
        status, body, response = await stack.call("GET", "/v1/heartbeats/stream", token=token)
        assert status == 503, body
        assert_unavailable(body, response.headers, "the message bus is not reachable; retry shortly")
        # What needs no bus goes on: changes wait in the outbox.
        status, code, _ = await stack.call(
            "POST", "/v1/devices/provisioning-codes", token=token, json={"screenId": screen["id"]}
        )
        assert status == 201, code
        assert (await stack.call("GET", "/v1/venues", token=token))[0] == 200
        for service in ("registry", "provisioning", "heartbeat"):
            await stack.eventually(
                lambda s=service: shown(stack, s, "nats", up=False), timeout=NOTICED_SECONDS
            )
            assert await readiness(stack, service) == (200, {"status": "ready", "checks": {}})
    finally:
        await asyncio.to_thread(nats_server.start)

    async def stored() -> bool:
        return (await store())[0] == 200

    await stack.eventually(stored, timeout=NOTICED_SECONDS, interval=0.1)
    for service in ("registry", "provisioning", "heartbeat"):
        await stack.eventually(lambda s=service: shown(stack, s, "nats", up=True), timeout=NOTICED_SECONDS)


@pytest.fixture
def plain_tracebacks() -> Iterator[None]:
    """Logs rendered as the services render them, errors only. The services of the stack share the
    test's event loop, and structlog's default traceback (rich's, with every frame's locals) of
    each consumer failing during the outage blocks that loop for a good part of a second."""
    saved = structlog.get_config()
    structlog.configure(
        processors=renderer_chain("console", tty=False),
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**saved)


@pytest.mark.usefixtures("plain_tracebacks")
async def test_postgres_away_is_a_prompt_503_while_every_service_stays_ready(settings, sockets, own_postgres):
    # All services share this test's event loop: the gateway must not shed polls for its lag.
    patient = msgspec.structs.replace(settings, database_url=own_postgres.dsn, gateway_max_lag_ms=10_000)
    async with Stack(patient, sockets) as stack:
        tenant = await stack.tenant()
        token = tenant["token"]
        screen, registered = await stack.paired_device(token)

        async def venues() -> tuple[int, Any, Any]:
            return await stack.call("GET", "/v1/venues", token=token)

        try:
            first, stopped, body, headers = await first_unavailable(venues, own_postgres.stop)
            print(f"PostgreSQL: first 503 {first:.3f}s after the stop began (ended in {stopped:.3f}s)")
            assert_unavailable(body, headers, "the database is not reachable; retry shortly")
            for method, path, json in [
                ("POST", "/v1/devices/provisioning-codes", {"screenId": screen["id"]}),
                ("GET", f"/v1/screens/{screen['id']}/presence", None),
            ]:
                started = time.monotonic()
                status, body, response = await stack.call(method, path, token=token, json=json)
                assert status == 503 and time.monotonic() - started < PROMPT_SECONDS, (path, body)
                assert_unavailable(body, response.headers, "the database is not reachable; retry shortly")
            for service in ("registry", "provisioning", "heartbeat"):
                await stack.eventually(
                    lambda s=service: shown(stack, s, "postgres", up=False), timeout=NOTICED_SECONDS
                )
                assert await readiness(stack, service) == (200, {"status": "ready", "checks": {}})
            # The gateway has no database, and polls need none.
            assert "postgres" not in (await readiness(stack, "device-gateway", "?verbose"))[1]["dependencies"]
            assert (await stack.call("GET", "/v1/device/playlist", token=registered["apiKey"]))[0] == 200
        finally:
            await asyncio.to_thread(own_postgres.start)

        async def served() -> bool:
            return (await venues())[0] == 200

        await stack.eventually(served, timeout=NOTICED_SECONDS, interval=0.1)
        for service in ("registry", "provisioning", "heartbeat"):
            await stack.eventually(
                lambda s=service: shown(stack, s, "postgres", up=True), timeout=NOTICED_SECONDS
            )

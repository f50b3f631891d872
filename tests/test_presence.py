"""Presence: heartbeats make a screen online, missed ones offline, and both ends agree.

The heartbeat service decides; registry hears of each transition through the bus
(``heartbeat.presence.changed``) and shows it on the screen. Short intervals come from the
settings: ``offline_after_intervals=0.02`` makes a 1-minute interval 1.2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import msgspec
import nats
import pytest
import pytest_asyncio
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from services.heartbeat.app import create_app as create_heartbeat
from shared import bus
from shared.bus_access import SETUP_USER
from shared.events import Heartbeat, PresenceChanged
from tests.stack import Stack, new_id

HEARTBEAT = "/v1/device/heartbeat"


@pytest_asyncio.fixture
async def quick(settings, sockets) -> AsyncIterator[Stack]:
    """A stack whose screens go offline 1.2 s after their last heartbeat, checked every 0.2 s."""
    fast = msgspec.structs.replace(settings, offline_after_intervals=0.02, presence_check_seconds=0.2)
    async with Stack(fast, sockets) as stack:
        yield stack


async def presence_of(stack: Stack, token: str, screen_id: str) -> dict[str, Any]:
    """The heartbeat service's view (waiting out the moment before it hears of a new screen)."""

    async def known() -> dict[str, Any] | None:
        status, body, _ = await stack.call("GET", f"/v1/screens/{screen_id}/presence", token=token)
        assert status in (200, 404), body
        return body if status == 200 else None

    return await stack.eventually(known)


async def registry_screen(stack: Stack, token: str, screen_id: str) -> dict[str, Any]:
    status, body, _ = await stack.call("GET", f"/v1/screens/{screen_id}", token=token)
    assert status == 200, body
    return body


async def heartbeat(stack: Stack, key: str, **body: Any) -> None:
    """One heartbeat, accepted (a key paired a moment ago may not have reached the gateway yet)."""

    async def accepted() -> bool:
        status, answer, _ = await stack.call("POST", HEARTBEAT, token=key, json=body)
        assert status in (202, 401), answer
        return status == 202

    await stack.eventually(accepted)


async def until_presence(
    stack: Stack, token: str, screen_id: str, presence: str, timeout: float = 10
) -> None:
    """Both the heartbeat service and registry show ``presence`` for the screen."""

    async def agreed() -> bool:
        seen = await presence_of(stack, token, screen_id)
        screen = await registry_screen(stack, token, screen_id)
        return seen["presence"] == presence and screen["presence"] == presence

    await stack.eventually(agreed, timeout=timeout, interval=0.05)


async def presence_events(stack: Stack) -> list[PresenceChanged]:
    """Every presence event on the bus so far, in order."""
    nc = await bus.connect(stack.settings, SETUP_USER)
    try:
        js = nc.jetstream()
        subscription = await js.subscribe(
            "heartbeat.presence.changed", stream="HEARTBEATS", ordered_consumer=True
        )
        events: list[PresenceChanged] = []
        while True:
            try:
                message = await subscription.next_msg(timeout=0.5)
            except nats.errors.TimeoutError:
                return events
            events.append(msgspec.json.decode(message.data, type=PresenceChanged))
    finally:
        await nc.close()


async def test_a_heartbeat_makes_the_screen_online_in_both_services(stack):
    tenant = await stack.tenant()
    screen, registered = await stack.paired_device(tenant["token"])

    async def fleet_is(expected: dict[str, int]) -> bool:
        status, fleet, _ = await stack.call("GET", "/v1/fleet/status", token=tenant["token"])
        assert status == 200, fleet
        return fleet == expected

    # The heartbeat service learns of the screen from registry's event, a moment after creation.
    await stack.eventually(lambda: fleet_is({"screens": 1, "online": 0, "offline": 0, "unknown": 1}))
    assert (await presence_of(stack, tenant["token"], screen["id"]))["presence"] == "unknown"

    await heartbeat(stack, registered["apiKey"], appVersion="2.1.0", uptimeSeconds=60)
    await until_presence(stack, tenant["token"], screen["id"], "online")

    seen = await presence_of(stack, tenant["token"], screen["id"])
    assert seen["screenId"] == screen["id"] and seen["lastSeenAt"] is not None
    assert seen["lastHeartbeat"]["appVersion"] == "2.1.0" and seen["lastHeartbeat"]["uptimeSeconds"] == 60
    assert (await registry_screen(stack, tenant["token"], screen["id"]))["lastSeenAt"] is not None
    status, fleet, _ = await stack.call("GET", "/v1/fleet/status", token=tenant["token"])
    assert status == 200 and fleet == {"screens": 1, "online": 1, "offline": 0, "unknown": 0}


async def test_missed_heartbeats_make_it_offline_and_the_next_one_online_again(quick):
    stack = quick
    tenant = await stack.tenant()
    screen, registered = await stack.paired_device(tenant["token"])
    await heartbeat(stack, registered["apiKey"])
    await until_presence(stack, tenant["token"], screen["id"], "online")
    await until_presence(stack, tenant["token"], screen["id"], "offline")
    status, fleet, _ = await stack.call("GET", "/v1/fleet/status", token=tenant["token"])
    assert status == 200 and fleet == {"screens": 1, "online": 0, "offline": 1, "unknown": 0}

    await heartbeat(stack, registered["apiKey"])
    await until_presence(stack, tenant["token"], screen["id"], "online")
    mine = [e for e in await presence_events(stack) if str(e.screen_id) == screen["id"]]
    assert [(e.presence, e.presence_seq) for e in mine][:3] == [("online", 1), ("offline", 2), ("online", 3)]


async def test_a_longer_heartbeat_interval_moves_the_offline_deadline(quick):
    stack = quick
    tenant = await stack.tenant()
    screen, registered = await stack.paired_device(tenant["token"])
    status, body, _ = await stack.call(
        "PATCH",
        f"/v1/screens/{screen['id']}/config",
        token=tenant["token"],
        json={"heartbeatIntervalMinutes": 60},
    )
    assert status == 200, body

    async def interval_known() -> bool:  # the heartbeat service has the new interval
        await heartbeat(stack, registered["apiKey"])
        await asyncio.sleep(1.5)  # past the 1-minute interval's deadline (1.2 s here)
        return (await presence_of(stack, tenant["token"], screen["id"]))["presence"] == "online"

    await stack.eventually(interval_known, timeout=15, interval=0.1)


async def test_two_instances_announce_each_transition_once(quick):
    """A second heartbeat service shares the consumer and the offline detector."""
    stack = quick
    second = web.AppRunner(create_heartbeat(stack.settings))
    await second.setup()  # starts its consumer and detector; it needs no port for that
    try:
        tenant = await stack.tenant()
        paired = [await stack.paired_device(tenant["token"]) for _ in range(6)]
        await asyncio.gather(*(heartbeat(stack, registered["apiKey"]) for _, registered in paired))
        for screen, _ in paired:
            await until_presence(stack, tenant["token"], screen["id"], "offline")
        await asyncio.sleep(1)  # any duplicate would have been announced by now
        events = await presence_events(stack)
    finally:
        await second.cleanup()
    for screen, _ in paired:
        mine = [(e.presence, e.presence_seq) for e in events if str(e.screen_id) == screen["id"]]
        assert mine == [("online", 1), ("offline", 2)], (screen["id"], mine)


async def test_presence_belongs_to_the_tenant(stack):
    tenant, other = await stack.tenant(), await stack.tenant("Other Co")
    screen, registered = await stack.paired_device(tenant["token"])
    await heartbeat(stack, registered["apiKey"])
    await until_presence(stack, tenant["token"], screen["id"], "online")

    status, body, _ = await stack.call("GET", f"/v1/screens/{screen['id']}/presence", token=other["token"])
    assert status == 404 and body["error"] == "not_found"
    status, fleet, _ = await stack.call("GET", "/v1/fleet/status", token=other["token"])
    assert fleet == {"screens": 0, "online": 0, "offline": 0, "unknown": 0}
    status, body, _ = await stack.call("GET", f"/v1/screens/{new_id()}/presence", token=tenant["token"])
    assert status == 404
    for path in ("/v1/fleet/status", f"/v1/screens/{screen['id']}/presence"):
        status, body, _ = await stack.call("GET", path)
        assert status == 401 and body["error"] == "unauthorized"
        status, body, _ = await stack.call("GET", path, token=registered["apiKey"])
        assert status == 401


@pytest.mark.parametrize("bad", ["not-a-uuid", "00000000-0000-0000-0000-00000000000g"])
async def test_a_bad_screen_id_is_404(stack, bad):
    tenant = await stack.tenant()
    status, body, _ = await stack.call("GET", f"/v1/screens/{bad}/presence", token=tenant["token"])
    assert status == 404 and body["error"] == "not_found"


async def test_the_heartbeat_history_pages_by_time_and_is_pruned(settings, sockets):
    tiny = msgspec.structs.replace(settings, heartbeat_retention_hours=1)
    async with Stack(tiny, sockets) as stack:
        tenant = await stack.tenant()
        screen, registered = await stack.paired_device(tenant["token"])
        for uptime in range(5):
            await heartbeat(stack, registered["apiKey"], uptimeSeconds=uptime)
        path = f"/v1/screens/{screen['id']}/heartbeats"

        async def all_stored() -> dict[str, Any] | None:
            status, page, _ = await stack.call("GET", path, token=tenant["token"], params={"limit": "3"})
            return page if status == 200 and len(page["items"]) == 3 else None

        first = await stack.eventually(all_stored)
        assert [h["uptimeSeconds"] for h in first["items"]] == [0, 1, 2] and first["nextSince"]
        status, second, _ = await stack.call(
            "GET", path, token=tenant["token"], params={"limit": "3", "since": first["nextSince"]}
        )
        assert status == 200 and [h["uptimeSeconds"] for h in second["items"]] == [3, 4]
        assert second["nextSince"] is None

        for bad in ({"since": "yesterday"}, {"since": "2026-11-23T10:00:00"}, {"limit": "0"}):
            status, body, _ = await stack.call("GET", path, token=tenant["token"], params=bad)
            assert status == 400 and body["details"][0]["field"] in bad, body
        other = await stack.tenant("Other Co")
        status, body, _ = await stack.call("GET", path, token=other["token"])
        assert status == 404

        # Age the first two past the retention, into a range of their own that ends before it: the
        # page leaves them out at once, the pruner (every minute, and at start) drops their range.
        conn = await asyncpg.connect(stack.settings.database_url)
        try:
            await conn.execute(
                "SELECT heartbeat.create_heartbeat_partition("
                " date_bin('6 hours', now() - interval '13 hours', '2000-01-01 00:00+00'))"
            )
            await conn.execute(
                "UPDATE heartbeat.heartbeats SET received_at = received_at - interval '13 hours'"
                " WHERE screen_id = $1::uuid AND (report->>'uptimeSeconds')::int < 2",
                screen["id"],
            )
            status, page, _ = await stack.call("GET", path, token=tenant["token"])
            assert status == 200 and [h["uptimeSeconds"] for h in page["items"]] == [2, 3, 4]
            await stack.stop_service("heartbeat")
            await stack.start_service("heartbeat")
            await stack.wait_ready("heartbeat")

            async def pruned() -> bool:
                left = await conn.fetchval(
                    "SELECT count(*) FROM heartbeat.heartbeats WHERE screen_id = $1::uuid", screen["id"]
                )
                return left == 3

            await stack.eventually(pruned, timeout=10)
        finally:
            await conn.close()


# ---- the SSE stream ----------------------------------------------------------------------------


class EventStream:
    """A minimal SSE client: ``(id, event, data)`` tuples and the comments in between."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments: list[str] = []

    async def next(self, timeout: float = 10) -> tuple[int, str, dict[str, Any]]:
        """The next event within ``timeout`` seconds (comments on the way are kept)."""
        fields: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.response.content.readline()).decode().rstrip("\n")
                if line.startswith(":"):
                    self.comments.append(line)
                elif line == "":
                    if "data" in fields:
                        return int(fields["id"]), fields["event"], json.loads(fields["data"])
                else:
                    name, _, value = line.partition(": ")
                    fields[name] = value


async def open_stream(stack: Stack, token: str, last_event_id: int | None = None) -> EventStream:
    headers = {"Authorization": f"Bearer {token}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    response = await stack.http.get("/v1/heartbeats/stream", headers=headers)
    assert response.status == 200 and response.content_type == "text/event-stream", await response.text()
    return EventStream(response)


async def test_the_stream_carries_the_tenants_heartbeats_and_presence_and_resumes_without_gaps(quick):
    stack = quick
    tenant, other = await stack.tenant(), await stack.tenant("Other Co")
    screen, registered = await stack.paired_device(tenant["token"])
    _, theirs = await stack.paired_device(other["token"])
    stream = await open_stream(stack, tenant["token"])
    await asyncio.sleep(0.2)  # the stream's consumer is in place
    await heartbeat(stack, theirs["apiKey"], uptimeSeconds=999)
    await heartbeat(stack, registered["apiKey"], uptimeSeconds=1)
    seen = [await stream.next() for _ in range(2)]
    assert {event for _, event, _ in seen} == {"heartbeat", "presence"}
    for _, _, data in seen:
        assert data["tenantId"] == tenant["id"] and data["screenId"] == screen["id"]
    assert [d["uptimeSeconds"] for _, e, d in seen if e == "heartbeat"] == [1]
    stream.response.close()

    # Disconnected: what happens meanwhile is there when the client resumes.
    for uptime in (2, 3, 4):
        await heartbeat(stack, registered["apiKey"], uptimeSeconds=uptime)
    resumed = await open_stream(stack, tenant["token"], last_event_id=max(i for i, _, _ in seen))
    got = [await resumed.next() for _ in range(4)]  # three heartbeats and the offline change
    resumed.response.close()
    ids = [i for i, _, _ in got]
    assert ids == sorted(ids) and min(ids) > max(i for i, _, _ in seen)
    assert [d["uptimeSeconds"] for _, e, d in got if e == "heartbeat"] == [2, 3, 4]
    assert [d["presence"] for _, e, d in got if e == "presence"] == ["offline"]


async def test_an_idle_stream_gets_keep_alive_comments(settings, sockets):
    async with Stack(msgspec.structs.replace(settings, sse_keepalive_seconds=0.2), sockets) as stack:
        tenant = await stack.tenant()
        stream = await open_stream(stack, tenant["token"])
        with pytest.raises(asyncio.TimeoutError):
            await stream.next(timeout=1)
        stream.response.close()
        assert len([c for c in stream.comments if c == ": keep-alive"]) >= 2


async def test_the_stream_refuses_bad_credentials_and_ids(stack):
    tenant = await stack.tenant()
    status, body, _ = await stack.call("GET", "/v1/heartbeats/stream")
    assert status == 401 and body["error"] == "unauthorized"
    for last_event_id in ("abc", "\u00b2", "9" * 19):
        status, body, _ = await stack.call(
            "GET", "/v1/heartbeats/stream", token=tenant["token"], headers={"Last-Event-ID": last_event_id}
        )
        assert status == 400 and body["details"][0]["field"] == "Last-Event-ID"


async def test_a_tenant_holds_a_limited_number_of_streams(settings, sockets):
    """Each stream is a JetStream consumer: one tenant cannot open them without end, and a closed
    one frees its place (seen at its next keep-alive); another tenant's streams are counted apart."""
    limited = msgspec.structs.replace(settings, sse_streams_per_tenant=2, sse_keepalive_seconds=0.2)
    async with Stack(limited, sockets) as stack:
        tenant, other = await stack.tenant(), await stack.tenant("Other Co")
        first, second = await open_stream(stack, tenant["token"]), await open_stream(stack, tenant["token"])
        status, body, response = await stack.call("GET", "/v1/heartbeats/stream", token=tenant["token"])
        assert status == 429 and body["error"] == "rate_limited", body
        assert int(response.headers["Retry-After"]) >= 1 and "streams" in body["message"]
        theirs = await open_stream(stack, other["token"])
        first.response.close()

        async def a_place_is_free() -> bool:
            async with stack.http.get(
                "/v1/heartbeats/stream", headers={"Authorization": f"Bearer {tenant['token']}"}
            ) as response:
                return response.status == 200

        await stack.eventually(a_place_is_free)
        second.response.close()
        theirs.response.close()


async def test_the_pipeline_shows_in_the_metrics(stack):
    """Outbox, consumers, the gateway's cache and the heartbeat batches report what they did."""
    tenant = await stack.tenant()
    screen, registered = await stack.paired_device(tenant["token"])
    await heartbeat(stack, registered["apiKey"])
    await until_presence(stack, tenant["token"], screen["id"], "online")

    async def samples(service: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        async with aiohttp.ClientSession() as http, http.get(stack.url(service) + "/metrics") as response:
            text = await response.text()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    async def reported() -> bool:
        found = await samples("heartbeat")
        return (
            found.get(("outbox_published_total", (("schema", "provisioning"),)), 0) >= 2
            and found.get(("outbox_published_total", (("schema", "heartbeat"),)), 0) >= 1
            and found.get(("presence_transitions_total", (("presence", "online"),)), 0) >= 1
            and found.get(("heartbeat_batch_size_count", ()), 0) >= 1
            and ("consumer_pending_messages", (("durable", "heartbeat-presence"),)) in found
            and found.get(("gateway_cached_entries", (("bucket", "keys"),)), 0) >= 1
        )

    await stack.eventually(reported, timeout=10, interval=0.2)


async def test_a_client_that_does_not_read_is_dropped_not_buffered(settings, sockets):
    """Events pile up for a client that stops reading; past SSE_BUFFER it is disconnected."""
    async with Stack(msgspec.structs.replace(settings, sse_buffer=5), sockets) as stack:
        tenant = await stack.tenant()
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.settings.ports["heartbeat"])
        writer.write(
            b"GET /v1/heartbeats/stream HTTP/1.1\r\nHost: test\r\n"
            + f"Authorization: Bearer {tenant['token']}\r\n\r\n".encode()
        )
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(0.3)  # the stream's consumer is in place
        nc = await bus.connect(stack.settings, SETUP_USER)
        try:
            screen_id = new_id()
            for index in range(5000):  # ~20 MB: far more than the sockets' buffers hold
                report = Heartbeat(
                    tenant_id=uuid.UUID(tenant["id"]),
                    screen_id=uuid.UUID(screen_id),
                    device_id=uuid.uuid4(),
                    received_at=datetime.now(UTC) + timedelta(microseconds=index),
                    playing="x" * 4000,
                )
                await nc.publish(f"heartbeat.{tenant['id']}.{screen_id}", msgspec.json.encode(report))
            await nc.flush()
        finally:
            await nc.close()
        await asyncio.sleep(1)  # the server gives up on us while we do not read

        async def until_closed() -> int:
            received = 0
            with contextlib.suppress(ConnectionResetError):  # the server cut us off
                while chunk := await reader.read(1 << 20):
                    received += len(chunk)
            return received

        received = await asyncio.wait_for(until_closed(), 20)
        writer.close()
        assert received < 4000 * 5000  # the server stopped sending long before the end

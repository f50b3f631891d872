"""A message no consumer can decode (a bug of a publisher, a hand-made publish) is terminated, not
redelivered forever, and the consumer goes on with the messages after it — on the real bus."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
import pytest_asyncio
import structlog
from nats.aio.client import Client as NATS

from shared import bus as shared_bus
from shared.bus_access import SETUP_USER
from shared.events import heartbeat_subject
from tests.stack import Stack

TERMINATED = "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{stream}.{consumer}"


@pytest_asyncio.fixture
async def bus(stack: Stack) -> AsyncIterator[NATS]:
    nc = await shared_bus.connect(stack.settings, SETUP_USER)
    yield nc
    await nc.close()


async def assert_terminated_once(
    stack: Stack, bus: NATS, advisories: Any, stream: str, consumer: str, stream_seq: int
) -> None:
    """The server saw the consumer terminate the message at ``stream_seq`` on its first delivery,
    the consumer's ack floor moved past it, and it was never delivered again."""
    advisory = json.loads((await advisories.next_msg(timeout=10)).data)
    assert (advisory["stream"], advisory["consumer"]) == (stream, consumer), advisory
    assert (advisory["stream_seq"], advisory["deliveries"]) == (stream_seq, 1), advisory

    async def settled() -> Any:
        # Other messages (the events the next one causes) may be in flight for a moment.
        info = await bus.jetstream().consumer_info(stream, consumer)
        return info if info.num_ack_pending == 0 and info.ack_floor.stream_seq > stream_seq else None

    info = await stack.eventually(settled)
    assert info.num_redelivered == 0, info
    await bus.flush()
    assert advisories.pending_msgs == 0, "terminated more than once"


GARBAGE = {
    "not_json": b"\xff\x00{not json",
    "unknown_type": b'{"type": "provisioning.device.exploded", "eventId": "x"}',
    "bound_without_its_fields": b'{"type": "provisioning.device.bound"}',
    "json_but_not_an_object": b"[1, 2, 3]",
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
async def test_registry_terminates_an_undecodable_event_and_applies_the_next(
    stack: Stack, bus: NATS, garbage: bytes
) -> None:
    tenant = await stack.tenant()
    consumer = "registry-binding"
    advisories = await bus.subscribe(TERMINATED.format(stream="EVENTS", consumer=consumer))
    with structlog.testing.capture_logs() as logs:
        ack = await bus.jetstream().publish("provisioning.device.bound", garbage)
        # The next event on the same subject: a real binding, which registry shows on the screen.
        screen, registered = await stack.paired_device(tenant["token"])

        async def screen_active() -> dict[str, Any] | None:
            status, body, _ = await stack.call("GET", f"/v1/screens/{screen['id']}", token=tenant["token"])
            assert status == 200, body
            return body if body["state"] == "active" else None

        active = await stack.eventually(screen_active)
        assert active["deviceId"] == registered["deviceId"]
        await assert_terminated_once(stack, bus, advisories, "EVENTS", consumer, ack.seq)
    undecodable = [entry for entry in logs if entry["event"] == "event_undecodable"]
    # Two of registry's consumers read the subject, each terminates it once: binding, and the
    # webhooks' fan-out.
    assert [e["log_level"] for e in undecodable] == ["error", "error"], undecodable


async def test_the_heartbeat_service_terminates_an_undecodable_heartbeat_and_stores_the_next(
    stack: Stack, bus: NATS
) -> None:
    tenant = await stack.tenant()
    screen, registered = await stack.paired_device(tenant["token"])
    consumer = "heartbeat-presence"
    advisories = await bus.subscribe(TERMINATED.format(stream="HEARTBEATS", consumer=consumer))
    # On the very subject the gateway publishes this screen's heartbeats to.
    subject = heartbeat_subject(tenant["id"], screen["id"])
    ack = await bus.jetstream().publish(subject, msgspec.json.encode({"deviceId": "not a heartbeat"}))

    async def accepted() -> bool:
        status, body, _ = await stack.call(
            "POST", "/v1/device/heartbeat", token=registered["apiKey"], json={"uptimeSeconds": 42}
        )
        assert status in (202, 401), body  # 401 until the gateway has heard of the new key
        return status == 202

    await stack.eventually(accepted)
    conn = await asyncpg.connect(stack.settings.database_url)
    try:

        async def stored() -> list[Any]:
            return await conn.fetch(
                "SELECT report->>'deviceId' AS device_id, (report->>'uptimeSeconds')::int AS uptime"
                " FROM heartbeat.heartbeats WHERE screen_id = $1",
                uuid.UUID(screen["id"]),
            )

        rows = await stack.eventually(stored)
        assert [(row["device_id"], row["uptime"]) for row in rows] == [(registered["deviceId"], 42)]
    finally:
        await conn.close()
    await assert_terminated_once(stack, bus, advisories, "HEARTBEATS", consumer, ack.seq)

"""Offline alerts reach an operator's endpoint: TVs miss their heartbeats, registry alerts after
the delay, and the webhook registered through the public API receives ``screen.offline``,
``screen.online``, ``venue.offline`` and ``venue.online``, each verified by the Standard Webhooks
library. (tests/test_alerts.py judges the alerts themselves on the bus; tests/test_webhook_delivery.py
the delivery.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest_asyncio

from tests.stack import Stack
from tests.test_alerts import FAST, heartbeat, paired, venue
from tests.webhooks import Receiver

ALERT_TYPES = ["screen.offline", "screen.online", "venue.offline", "venue.online"]


@pytest_asyncio.fixture
async def alerting(settings, sockets) -> AsyncIterator[tuple[Stack, Receiver]]:
    receiver = Receiver()
    async with Stack(msgspec.structs.replace(settings, **FAST), sockets) as stack:
        await receiver.start()
        try:
            yield stack, receiver
        finally:
            await receiver.stop()


async def subscribe(stack: Stack, token: str, receiver: Receiver) -> str:
    """The tenant's endpoint for the alert types, registered as an admin does; its secret."""
    status, hook, _ = await stack.call(
        "POST", "/v1/webhooks", token=token, json={"url": receiver.url, "events": ALERT_TYPES}
    )
    assert status == 201, hook
    return str(hook["secret"])


def received(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    """Every distinct delivery so far, its signature verified, in order of arrival."""
    bodies: dict[str, dict[str, Any]] = {}
    for request in receiver.requests:
        bodies.setdefault(request.id, request.verified(secret))
    return list(bodies.values())


async def until_received(stack: Stack, receiver: Receiver, secret: str, count: int) -> list[dict[str, Any]]:
    async def enough() -> bool:
        return len(received(receiver, secret)) >= count

    await stack.eventually(enough, timeout=15, interval=0.1)
    return received(receiver, secret)


async def test_a_dark_screen_and_its_return_reach_the_endpoint(alerting):
    stack, receiver = alerting
    tenant = await stack.tenant()
    secret = await subscribe(stack, tenant["token"], receiver)
    place = await venue(stack, tenant["token"], name="Lobby")
    screen, key = await paired(stack, tenant["token"], place["id"], "Entrance")
    await heartbeat(stack, key)  # then silence: offline, then alerted after the delay

    [offline] = await until_received(stack, receiver, secret, 1)
    assert offline["type"] == "screen.offline"
    assert {k: offline["data"][k] for k in ("tenantId", "venueId", "screenId", "screenName")} == {
        "tenantId": tenant["id"],
        "venueId": place["id"],
        "screenId": screen["id"],
        "screenName": "Entrance",
    }
    await heartbeat(stack, key)
    _, online = await until_received(stack, receiver, secret, 2)
    assert online["type"] == "screen.online" and online["data"]["screenId"] == screen["id"]
    assert online["data"]["incidentId"] is None
    await asyncio.sleep(0.5)
    assert len(received(receiver, secret)) == 2  # nothing else, nothing twice


async def test_a_venue_gone_dark_is_one_incident_at_the_endpoint(alerting):
    stack, receiver = alerting
    tenant = await stack.tenant()
    token = tenant["token"]
    secret = await subscribe(stack, token, receiver)
    place = await venue(stack, token, name="Station")
    screens = [await paired(stack, token, place["id"], f"Platform {n}") for n in range(3)]
    ids = sorted(screen["id"] for screen, _ in screens)
    await asyncio.gather(*(heartbeat(stack, key) for _, key in screens))

    [incident] = await until_received(stack, receiver, secret, 1)
    assert incident["type"] == "venue.offline"
    assert sorted(incident["data"]["screenIds"]) == ids and incident["data"]["screensTotal"] == 3
    await asyncio.sleep(1)  # the screens' own alerts were due with it: folded into it, none follows
    assert [body["type"] for body in received(receiver, secret)] == ["venue.offline"]

    await asyncio.gather(*(heartbeat(stack, key) for _, key in screens))
    bodies = await until_received(stack, receiver, secret, 5)
    back = [body for body in bodies if body["type"] == "screen.online"]
    assert sorted(body["data"]["screenId"] for body in back) == ids
    assert {body["data"]["incidentId"] for body in back} == {incident["data"]["incidentId"]}
    [over] = [body for body in bodies if body["type"] == "venue.online"]
    assert over["data"]["incidentId"] == incident["data"]["incidentId"]
    assert over["data"]["venueName"] == "Station"

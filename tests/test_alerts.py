"""Offline alerts worth receiving, end to end: TVs heartbeat, miss their heartbeats and come back;
registry's alert events are read from the bus.

Short times come from the settings: a screen goes offline 1.2 s after its last heartbeat
(``offline_after_intervals=0.02`` of a 1-minute interval) and is alerted 3 s later
(``offline_alert_after_minutes=0.05``); the alert sweep runs every 0.2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
import pytest
import pytest_asyncio

from shared import bus
from shared.bus_access import SETUP_USER
from shared.events import (
    AlertEvent,
    PresenceChanged,
    ScreenOfflineAlert,
    ScreenOnlineAlert,
    VenueOfflineAlert,
    VenueOnlineAlert,
    event_decoder,
)
from tests.bad_input import assert_error
from tests.binding import pair, until_screen
from tests.stack import Stack, new_id

DELAY = timedelta(seconds=3)
FAST = {
    "offline_after_intervals": 0.02,
    "presence_check_seconds": 0.2,
    "offline_alert_after_minutes": DELAY.total_seconds() / 60,
    "alert_check_seconds": 0.2,
}
HEARTBEAT = "/v1/device/heartbeat"


class Bus:
    """Alert and presence events, as they reach the bus (read as the ``setup`` user)."""

    def __init__(self) -> None:
        self.events: list[AlertEvent | PresenceChanged] = []

    async def collect(self, stack: Stack) -> AsyncIterator[Bus]:
        nc = await bus.connect(stack.settings, SETUP_USER)
        js = nc.jetstream()

        async def keep(message: Any) -> None:
            event = event_decoder.decode(message.data)
            assert isinstance(event, (AlertEvent, PresenceChanged)), event
            self.events.append(event)

        await js.subscribe("registry.alert.>", stream="EVENTS", ordered_consumer=True, cb=keep)
        await js.subscribe("heartbeat.presence.changed", stream="HEARTBEATS", ordered_consumer=True, cb=keep)
        try:
            yield self
        finally:
            await nc.close()

    def alerts(self, *, about: set[str] | None = None) -> list[AlertEvent]:
        """The alert events so far (those naming a screen or venue of ``about``)."""
        found = [e for e in self.events if isinstance(e, AlertEvent)]
        if about is None:
            return found
        return [e for e in found if str(getattr(e, "screen_id", e.venue_id)) in about]

    def offline(self, screen_id: str) -> PresenceChanged:
        """The screen's (first) offline presence change."""
        return next(
            e
            for e in self.events
            if isinstance(e, PresenceChanged) and str(e.screen_id) == screen_id and e.presence == "offline"
        )

    async def until(self, stack: Stack, check: Callable[[], Any], timeout: float = 10) -> Any:
        async def met() -> Any:
            return check()

        return await stack.eventually(met, timeout=timeout, interval=0.05)


def only(events: list[AlertEvent], kind: type, **fields: Any) -> list[Any]:
    return [
        e for e in events if isinstance(e, kind) and all(str(getattr(e, k)) == v for k, v in fields.items())
    ]


@contextlib.asynccontextmanager
async def fast_stack(settings: Any, sockets: Any, **more: Any) -> AsyncIterator[tuple[Stack, Bus]]:
    async with Stack(msgspec.structs.replace(settings, **FAST, **more), sockets) as stack:
        async for seen in Bus().collect(stack):
            yield stack, seen


@pytest_asyncio.fixture
async def quick(settings, sockets) -> AsyncIterator[tuple[Stack, Bus]]:
    async with fast_stack(settings, sockets) as running:
        yield running


async def venue(stack: Stack, token: str, **fields: Any) -> dict[str, Any]:
    status, body, _ = await stack.call("POST", "/v1/venues", token=token, json={"name": "Mall", **fields})
    assert status == 201, body
    return body


async def paired(stack: Stack, token: str, venue_id: str, name: str, **fields: Any) -> tuple[dict, str]:
    """A screen of the venue with a TV paired to it, active in registry: ``(screen, apiKey)``."""
    status, screen, _ = await stack.call(
        "POST", "/v1/screens", token=token, json={"venueId": venue_id, "name": name, **fields}
    )
    assert status == 201, screen
    _, registered = await pair(stack, token, screen)
    await until_screen(stack, token, screen["id"], "active")
    return screen, registered["apiKey"]


async def heartbeat(stack: Stack, key: str) -> None:
    async def accepted() -> bool:
        status, answer, _ = await stack.call("POST", HEARTBEAT, token=key, json={})
        assert status in (202, 401), answer
        return status == 202

    await stack.eventually(accepted)


async def presence(stack: Stack, token: str, screen_id: str) -> str:
    status, screen, _ = await stack.call("GET", f"/v1/screens/{screen_id}", token=token)
    assert status == 200, screen
    return screen["presence"]


async def until_presence(stack: Stack, token: str, screen_id: str, expected: str) -> None:
    async def reached() -> bool:
        return await presence(stack, token, screen_id) == expected

    await stack.eventually(reached, timeout=10, interval=0.05)


@contextlib.asynccontextmanager
async def kept_online(stack: Stack, key: str) -> AsyncIterator[None]:
    """Heartbeats every 0.4 s meanwhile (a screen goes offline 1.2 s after its last one)."""

    async def beat() -> None:
        while True:
            await heartbeat(stack, key)
            await asyncio.sleep(0.4)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_screen_offline_for_its_delay_is_alerted_once_and_its_return_announced(quick):
    stack, seen = quick
    tenant = await stack.tenant()
    place = await venue(stack, tenant["token"])
    screen, key = await paired(stack, tenant["token"], place["id"], "Entrance")
    await heartbeat(stack, key)
    await until_presence(stack, tenant["token"], screen["id"], "offline")

    [alert] = await seen.until(stack, lambda: only(seen.alerts(), ScreenOfflineAlert))
    offline = seen.offline(screen["id"])
    assert DELAY <= alert.occurred_at - offline.occurred_at < DELAY + timedelta(seconds=2)
    assert (str(alert.tenant_id), str(alert.venue_id), str(alert.screen_id)) == (
        tenant["id"],
        place["id"],
        screen["id"],
    )
    assert alert.screen_name == "Entrance" and alert.last_seen_at == offline.last_seen_at
    assert alert.offline_alert_after_minutes == round(FAST["offline_alert_after_minutes"])

    await heartbeat(stack, key)
    [back] = await seen.until(stack, lambda: only(seen.alerts(), ScreenOnlineAlert))
    assert str(back.screen_id) == screen["id"] and back.incident_id is None
    assert back.last_seen_at is not None and back.last_seen_at > alert.last_seen_at
    await asyncio.sleep(0.5)  # anything repeated would be here by now
    assert [type(e) for e in seen.alerts()] == [ScreenOfflineAlert, ScreenOnlineAlert]


async def test_a_screen_back_within_its_delay_makes_no_alert_at_all(quick):
    stack, seen = quick
    tenant = await stack.tenant()
    flapping, flapping_key = await paired(
        stack, tenant["token"], (await venue(stack, tenant["token"]))["id"], "Flapping"
    )
    # A screen of another venue, dark for good: the sweep is at work meanwhile.
    dark, dark_key = await paired(stack, tenant["token"], (await venue(stack, tenant["token"]))["id"], "Dark")
    await asyncio.gather(heartbeat(stack, flapping_key), heartbeat(stack, dark_key))
    await until_presence(stack, tenant["token"], flapping["id"], "offline")
    async with kept_online(stack, flapping_key):
        await until_presence(stack, tenant["token"], flapping["id"], "online")
        await seen.until(stack, lambda: only(seen.alerts(), ScreenOfflineAlert, screen_id=dark["id"]))
        # Past the flapping screen's delay too, counted from its own offline.
        wait = seen.offline(flapping["id"]).occurred_at + DELAY + timedelta(seconds=1) - datetime.now(UTC)
        await asyncio.sleep(max(wait.total_seconds(), 0))
    assert seen.alerts(about={flapping["id"]}) == []
    assert [type(e) for e in seen.alerts()] == [ScreenOfflineAlert]


async def test_the_screens_delay_wins_over_the_venues_and_the_venues_over_the_setting(settings, sockets):
    # No venue incident here: each screen is judged on its own.
    async with fast_stack(settings, sockets, venue_incident_min_screens=100) as (stack, seen):
        tenant = await stack.tenant()
        token = tenant["token"]
        patient = await venue(stack, token, offlineAlertAfterMinutes=60)
        assert patient["offlineAlertAfterMinutes"] == 60
        eager, eager_key = await paired(stack, token, patient["id"], "Eager", offlineAlertAfterMinutes=0)
        assert eager["offlineAlertAfterMinutes"] == 0
        calm, calm_key = await paired(stack, token, patient["id"], "Calm")
        assert calm["offlineAlertAfterMinutes"] is None
        usual, usual_key = await paired(stack, token, (await venue(stack, token))["id"], "Usual")
        await asyncio.gather(*(heartbeat(stack, key) for key in (eager_key, calm_key, usual_key)))

        [first] = await seen.until(stack, lambda: only(seen.alerts(), ScreenOfflineAlert))
        assert str(first.screen_id) == eager["id"] and first.offline_alert_after_minutes == 0
        assert first.occurred_at - seen.offline(eager["id"]).occurred_at < DELAY
        await seen.until(stack, lambda: only(seen.alerts(), ScreenOfflineAlert, screen_id=usual["id"]))
        await asyncio.sleep(1)
        assert only(seen.alerts(), ScreenOfflineAlert, screen_id=calm["id"]) == []  # the venue's hour

        # The venue's delay shortened: the screen offline meanwhile is due at once.
        status, body, _ = await stack.call(
            "PATCH", f"/v1/venues/{patient['id']}", token=token, json={"offlineAlertAfterMinutes": 0}
        )
        assert status == 200 and body["offlineAlertAfterMinutes"] == 0, body
        [late] = await seen.until(
            stack, lambda: only(seen.alerts(), ScreenOfflineAlert, screen_id=calm["id"])
        )
        assert late.offline_alert_after_minutes == 0


EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def hhmm(at: datetime) -> str:
    return at.strftime("%H:%M")


async def test_outside_opening_hours_an_alert_waits_for_the_opening(quick):
    stack, seen = quick
    tenant = await stack.tenant()
    zone = "America/New_York"
    now = datetime.now(ZoneInfo(zone))
    # Open an hour a day, from two hours on: closed now.
    later = [
        {"days": EVERY_DAY, "open": hhmm(now + timedelta(hours=2)), "close": hhmm(now + timedelta(hours=3))}
    ]
    place = await venue(stack, tenant["token"], timezone=zone, openingHours=later)
    assert place["openingHours"] == later and place["timezone"] == zone
    screen, key = await paired(stack, tenant["token"], place["id"], "Window")
    await heartbeat(stack, key)
    await until_presence(stack, tenant["token"], screen["id"], "offline")  # presence changes all the same

    # Past the delay: no alert, the pending one moved to the opening (in the venue's time zone).
    opening = (now + timedelta(hours=2)).replace(second=0, microsecond=0)

    async def due_at() -> datetime:
        conn = await asyncpg.connect(stack.settings.database_url)
        try:
            return await conn.fetchval(
                "SELECT due_at FROM registry.screen_alerts WHERE screen_id = $1", uuid.UUID(screen["id"])
            )
        finally:
            await conn.close()

    async def postponed() -> bool:
        return await due_at() == opening

    await stack.eventually(postponed, timeout=10, interval=0.1)
    assert seen.offline(screen["id"]).occurred_at + DELAY < datetime.now(UTC)
    assert seen.alerts() == []

    # The venue opens now (its hours changed to include this moment): the screen, still dark, is alerted.
    now = datetime.now(ZoneInfo(zone))
    around = [
        {"days": EVERY_DAY, "open": hhmm(now - timedelta(hours=1)), "close": hhmm(now + timedelta(hours=1))}
    ]
    status, body, _ = await stack.call(
        "PATCH", f"/v1/venues/{place['id']}", token=tenant["token"], json={"openingHours": around}
    )
    assert status == 200 and body["openingHours"] == around, body
    [alert] = await seen.until(stack, lambda: only(seen.alerts(), ScreenOfflineAlert))
    assert str(alert.screen_id) == screen["id"]


async def test_screens_never_paired_or_unpaired_meanwhile_make_no_alert(quick):
    stack, seen = quick
    tenant = await stack.tenant()
    token = tenant["token"]
    place = await venue(stack, token)
    status, lonely, _ = await stack.call(
        "POST", "/v1/screens", token=token, json={"venueId": place["id"], "name": "Never paired"}
    )
    assert status == 201, lonely
    # Its presence changes anyway, say a TV unpaired before the heartbeat service's word came.
    nc = await bus.connect(stack.settings, SETUP_USER)
    try:
        change = PresenceChanged(
            tenant_id=uuid.UUID(tenant["id"]),
            screen_id=uuid.UUID(lonely["id"]),
            presence="offline",
            last_seen_at=datetime.now(UTC),
            presence_seq=1,
        )
        await nc.jetstream().publish("heartbeat.presence.changed", msgspec.json.encode(change))
    finally:
        await nc.close()
    await until_presence(stack, token, lonely["id"], "offline")

    # A paired one with a long delay of its own, unpaired while its alert is pending.
    revoked, revoked_key = await paired(stack, token, place["id"], "Revoked", offlineAlertAfterMinutes=60)
    await heartbeat(stack, revoked_key)
    await until_presence(stack, token, revoked["id"], "offline")
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        pending = "SELECT state FROM registry.screen_alerts WHERE screen_id = $1"
        assert await conn.fetchval(pending, uuid.UUID(revoked["id"])) == "pending"
        assert await conn.fetchval(pending, uuid.UUID(lonely["id"])) is None
        status, screen, _ = await stack.call("GET", f"/v1/screens/{revoked['id']}", token=token)
        status, body, _ = await stack.call("POST", f"/v1/devices/{screen['deviceId']}/revoke", token=token)
        assert status == 200, body
        await until_screen(stack, token, revoked["id"], "provisioning")

        async def dropped() -> bool:
            return await conn.fetchval(pending, uuid.UUID(revoked["id"])) is None

        await stack.eventually(dropped)
    finally:
        await conn.close()
    await asyncio.sleep(DELAY.total_seconds() + 0.5)
    assert seen.alerts(about={revoked["id"], lonely["id"]}) == []


async def test_most_of_a_venue_dark_together_is_one_incident(quick):
    stack, seen = quick
    tenant = await stack.tenant()
    token = tenant["token"]
    place = await venue(stack, token, name="Station")
    screens = [await paired(stack, token, place["id"], f"Platform {n}") for n in range(3)]
    # A fourth one, quick to alert, goes dark once the incident is open: it joins it silently.
    straggler, straggler_key = await paired(
        stack, token, place["id"], "Platform 4", offlineAlertAfterMinutes=0
    )
    ids = [screen["id"] for screen, _ in screens]
    await asyncio.gather(*(heartbeat(stack, key) for _, key in screens))

    [incident] = await seen.until(stack, lambda: only(seen.alerts(), VenueOfflineAlert))
    assert str(incident.venue_id) == place["id"] and incident.venue_name == "Station"
    assert sorted(map(str, incident.screen_ids)) == sorted(ids) and incident.screens_total == 4
    await heartbeat(stack, straggler_key)
    await until_presence(stack, token, straggler["id"], "offline")
    await asyncio.sleep(1)  # its delay (none) is past: it would be alerted by now
    assert [type(e) for e in seen.alerts()] == [VenueOfflineAlert]

    # Back one by one: each screen's return is announced, the venue's with the last.
    for _, key in [*screens, (straggler, straggler_key)]:
        await heartbeat(stack, key)
    await seen.until(stack, lambda: only(seen.alerts(), VenueOnlineAlert))
    *returns, over = seen.alerts()[1:]
    assert sorted(str(e.screen_id) for e in only(returns, ScreenOnlineAlert)) == sorted(
        [*ids, straggler["id"]]
    )
    assert len(returns) == 4 and {e.incident_id for e in returns} == {incident.incident_id}
    assert isinstance(over, VenueOnlineAlert) and over.incident_id == incident.incident_id


async def test_a_minority_of_a_venue_dark_is_alerted_screen_by_screen(quick):
    stack, seen = quick
    tenant = await stack.tenant()
    place = await venue(stack, tenant["token"])
    screens = [await paired(stack, tenant["token"], place["id"], f"Aisle {n}") for n in range(3)]
    dark = screens[0][0]["id"]
    await heartbeat(stack, screens[0][1])  # the other two never went offline (nor online)

    await seen.until(stack, lambda: only(seen.alerts(), ScreenOfflineAlert, screen_id=dark))
    await asyncio.sleep(0.5)
    assert [type(e) for e in seen.alerts()] == [ScreenOfflineAlert]


# ---- the venue's and the screen's alert settings through the API --------------------------------

BAD_HOURS = [
    ("not-a-list", {"days": ["mon"], "open": "08:00", "close": "18:00"}, "openingHours", "type"),
    ("empty", [], "openingHours", "length"),
    ("no-days", [{"days": [], "open": "08:00", "close": "18:00"}], "openingHours[0].days", "length"),
    (
        "unknown-day",
        [{"days": ["monday"], "open": "08:00", "close": "18:00"}],
        "openingHours[0].days[0]",
        "enum",
    ),
    (
        "a-day-twice",
        [{"days": ["mon", "mon"], "open": "08:00", "close": "18:00"}],
        "openingHours[0].days",
        "format",
    ),
    ("hour-24", [{"days": ["mon"], "open": "08:00", "close": "24:00"}], "openingHours[0].close", "pattern"),
    (
        "no-leading-zero",
        [{"days": ["mon"], "open": "8:00", "close": "18:00"}],
        "openingHours[0].open",
        "pattern",
    ),
    ("no-close", [{"days": ["mon"], "open": "08:00"}], "openingHours[0].close", "required"),
    ("51-periods", [{"days": ["mon"], "open": "08:00", "close": "09:00"}] * 51, "openingHours", "length"),
]


@pytest.mark.parametrize(
    ("hours", "field", "problem"), [c[1:] for c in BAD_HOURS], ids=[c[0] for c in BAD_HOURS]
)
async def test_malformed_opening_hours_are_refused(stack, hours, field, problem):
    tenant = await stack.tenant()
    result = await stack.call(
        "POST", "/v1/venues", token=tenant["token"], json={"name": "HQ", "openingHours": hours}
    )
    assert_error(result, 400, "invalid_request", [(field, problem)])
    place = await venue(stack, tenant["token"])
    result = await stack.call(
        "PATCH", f"/v1/venues/{place['id']}", token=tenant["token"], json={"openingHours": hours}
    )
    assert_error(result, 400, "invalid_request", [(field, problem)])


async def test_bad_delays_names_and_time_zones_are_refused(stack):
    tenant = await stack.tenant()
    token = tenant["token"]
    place = await venue(stack, token)
    _, screen, _ = await stack.call(
        "POST", "/v1/screens", token=token, json={"venueId": place["id"], "name": "Lobby"}
    )
    for delay, problem in ((-1, "range"), (2881, "range"), (1.5, "type"), ("15", "type")):
        body = {"offlineAlertAfterMinutes": delay}
        for method, path in (
            ("POST", "/v1/venues"),
            ("PATCH", f"/v1/venues/{place['id']}"),
            ("POST", "/v1/screens"),
            ("PATCH", f"/v1/screens/{screen['id']}"),
        ):
            extra = {"name": "X", "venueId": place["id"]} if method == "POST" else {}
            result = await stack.call(method, path, token=token, json={**extra, **body})
            assert_error(result, 400, "invalid_request", [("offlineAlertAfterMinutes", problem)])
    result = await stack.call(
        "PATCH", f"/v1/venues/{place['id']}", token=token, json={"timezone": "Mars/Base"}
    )
    assert_error(result, 400, "invalid_request", [("timezone", "format")])
    assert result[1]["message"] == "timezone must be an IANA time zone, like Europe/Berlin"
    for path in (f"/v1/venues/{place['id']}", f"/v1/screens/{screen['id']}"):
        result = await stack.call("PATCH", path, token=token, json={"name": None})
        assert_error(result, 400, "invalid_request", [("name", "type")])
        result = await stack.call("PATCH", path, token=token, json=[])
        assert_error(result, 400, "invalid_request", fields=[""])


async def test_a_patch_changes_what_it_names_and_null_clears(stack):
    tenant = await stack.tenant()
    token = tenant["token"]
    hours = [{"days": ["sat", "sun"], "open": "22:00", "close": "04:00"}]
    place = await venue(stack, token, timezone="Europe/Berlin", address="Main St 1", openingHours=hours)
    status, body, _ = await stack.call(
        "PATCH",
        f"/v1/venues/{place['id']}",
        token=token,
        json={"name": "Mall West", "address": None, "offlineAlertAfterMinutes": 2880},
    )
    assert status == 200, body
    assert (body["name"], body["address"], body["timezone"]) == ("Mall West", None, "Europe/Berlin")
    assert body["openingHours"] == hours and body["offlineAlertAfterMinutes"] == 2880
    status, body, _ = await stack.call(
        "PATCH", f"/v1/venues/{place['id']}", token=token, json={"openingHours": None, "timezone": None}
    )
    assert status == 200 and (body["openingHours"], body["timezone"]) == (None, None), body
    status, read, _ = await stack.call("GET", f"/v1/venues/{place['id']}", token=token)
    assert read == body

    status, screen, _ = await stack.call(
        "POST",
        "/v1/screens",
        token=token,
        json={"venueId": place["id"], "name": "Lobby", "offlineAlertAfterMinutes": 30},
    )
    assert status == 201 and screen["offlineAlertAfterMinutes"] == 30, screen
    status, body, _ = await stack.call(
        "PATCH", f"/v1/screens/{screen['id']}", token=token, json={"name": "Foyer"}
    )
    assert status == 200 and (body["name"], body["offlineAlertAfterMinutes"]) == ("Foyer", 30), body
    status, body, _ = await stack.call(
        "PATCH", f"/v1/screens/{screen['id']}", token=token, json={"offlineAlertAfterMinutes": None}
    )
    assert status == 200 and (body["name"], body["offlineAlertAfterMinutes"]) == ("Foyer", None), body

    status, trail, _ = await stack.call("GET", "/v1/audit", token=token)
    assert [(e["action"], e["resourceId"]) for e in trail["items"][:4]] == [
        ("screen.changed", screen["id"]),
        ("screen.changed", screen["id"]),
        ("screen.created", screen["id"]),
        ("venue.changed", place["id"]),
    ]


async def test_another_tenants_venues_and_screens_cannot_be_patched(stack):
    tenant, other = await stack.tenant(), await stack.tenant("Other Co")
    place = await venue(stack, tenant["token"])
    status, screen, _ = await stack.call(
        "POST", "/v1/screens", token=tenant["token"], json={"venueId": place["id"], "name": "Lobby"}
    )
    for path, thing in ((f"/v1/venues/{place['id']}", place), (f"/v1/screens/{screen['id']}", screen)):
        result = await stack.call("PATCH", path, token=other["token"], json={"name": "Mine now"})
        assert_error(result, 404, "not_found")
        status, unchanged, _ = await stack.call("GET", path, token=tenant["token"])
        assert (
            status == 200
            and unchanged["name"] == thing["name"]
            and unchanged["updatedAt"] == thing["updatedAt"]
        )
        result = await stack.call("PATCH", path, json={"name": "Anyone's"})
        assert_error(result, 401, "unauthorized")
    for path in (f"/v1/venues/{new_id()}", f"/v1/screens/{new_id()}", "/v1/screens/not-a-uuid"):
        assert_error(await stack.call("PATCH", path, token=tenant["token"], json={}), 404, "not_found")
    _, trail, _ = await stack.call("GET", "/v1/audit", token=other["token"])
    assert [e["action"] for e in trail["items"]] == ["tenant.created"]
    _, trail, _ = await stack.call("GET", "/v1/audit", token=tenant["token"])
    assert "venue.changed" not in [e["action"] for e in trail["items"]]

"""Remote commands at the TV (the gateway's side): the TV lists its screen's open commands (and
waits for one), is reported ``delivered`` once, posts results and uploads screenshots.

The commands are put into the ``device-commands`` bucket here, as registry writes them, and the
TV's reports are read from the DEVICE_EVENTS stream, as registry reads them; both as the setup user.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
import pytest
import pytest_asyncio

from services.device_gateway.commands_projection import COMMANDS
from services.device_gateway.waits import WAITS
from shared import bus
from shared.bus_access import SETUP_USER
from shared.events import CommandReported, device_commands_subject
from shared.projections import (
    DEVICE_COMMANDS_BUCKET,
    SCREENSHOTS_BUCKET,
    OpenCommand,
    ScreenCommands,
    screenshot_object,
)
from tests.bad_input import assert_error
from tests.stack import Stack

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(2 * 1024 * 1024)  # past MAX_BODY_BYTES: its own limit
JPEG = b"\xff\xd8\xff\xe0" + os.urandom(1000)


class TV(msgspec.Struct):
    tenant_id: uuid.UUID
    screen_id: uuid.UUID
    device_id: uuid.UUID
    key: str
    token: str  # the tenant's access token


@pytest_asyncio.fixture
async def bus_admin(stack: Stack) -> Any:
    nc = await bus.connect(stack.settings, SETUP_USER)
    yield nc
    await nc.close()


async def paired_tv(stack: Stack, tenant: dict[str, Any] | None = None) -> TV:
    tenant = tenant or await stack.tenant()
    screen, registered = await stack.paired_device(tenant["token"])
    tv = TV(
        uuid.UUID(tenant["id"]),
        uuid.UUID(screen["id"]),
        uuid.UUID(registered["deviceId"]),
        registered["apiKey"],
        tenant["token"],
    )

    async def known() -> bool:  # the key reaches the gateway through the bus
        return (await commands_of(stack, tv))[0] == 200

    await stack.eventually(known)
    return tv


@pytest_asyncio.fixture
async def tv(stack: Stack) -> TV:
    return await paired_tv(stack)


def command(kind: str = "reload", *, args: dict[str, Any] | None = None, ttl: float = 600) -> OpenCommand:
    expires = datetime.now(UTC) + timedelta(seconds=ttl)
    return OpenCommand(id=uuid.uuid4(), type=kind, args=args or {}, expires_at=expires)


async def open_commands(nc: Any, tv: TV, *items: OpenCommand) -> None:
    """What registry does when a command of the screen opens or closes: the whole open set."""
    kv = await nc.jetstream().key_value(DEVICE_COMMANDS_BUCKET)
    entry = ScreenCommands(screen_id=tv.screen_id, tenant_id=tv.tenant_id, items=list(items))
    await kv.put(str(tv.screen_id), msgspec.json.encode(entry))


async def commands_of(stack: Stack, tv: TV, **headers: str) -> tuple[int, Any, Any]:
    return await stack.call("GET", "/v1/device/commands", token=tv.key, headers=headers)


async def listed(stack: Stack, tv: TV, *items: OpenCommand) -> None:
    """Until the gateway lists exactly ``items`` to the TV."""
    wanted = [str(item.id) for item in items]

    async def shown() -> bool:
        status, body, _ = await commands_of(stack, tv)
        return status == 200 and [item["id"] for item in body["items"]] == wanted

    await stack.eventually(shown)


async def reports(nc: Any, tv: TV) -> list[CommandReported]:
    """Every report the gateway stored for the TV's screen, oldest first."""
    js = nc.jetstream()
    subscription = await js.subscribe(
        device_commands_subject(tv.tenant_id, tv.screen_id), stream="DEVICE_EVENTS", ordered_consumer=True
    )
    found = []
    try:
        while True:
            message = await subscription.next_msg(timeout=0.5)
            found.append(msgspec.json.decode(message.data, type=CommandReported))
    except nats.errors.TimeoutError:
        return found
    finally:
        await subscription.unsubscribe()


async def post_result(stack: Stack, tv: TV, command_id: Any, body: Any) -> tuple[int, Any, Any]:
    return await stack.call("POST", f"/v1/device/commands/{command_id}/result", token=tv.key, json=body)


async def put_screenshot(
    stack: Stack, tv: TV, command_id: Any, data: bytes, content_type: str = "image/png"
) -> tuple[int, Any, Any]:
    return await stack.call(
        "PUT",
        f"/v1/device/commands/{command_id}/screenshot",
        token=tv.key,
        data=data,
        headers={"Content-Type": content_type},
    )


async def test_a_tv_gets_its_open_commands_but_not_expired_ones_and_is_reported_delivered_once(
    stack, tv, bus_admin
):
    identify = command("identify", args={"seconds": 10})
    expired = command("reboot", ttl=-1)  # past its expiry, not yet closed by registry's sweep
    power = command("display_power", args={"on": False})
    await open_commands(bus_admin, tv, identify, expired, power)
    await listed(stack, tv, identify, power)
    status, body, response = await commands_of(stack, tv)
    assert status == 200 and response.headers["Cache-Control"] == "no-store"
    assert "Preference-Applied" not in response.headers
    assert body["items"][0] == {
        "id": str(identify.id),
        "type": "identify",
        "args": {"seconds": 10},
        "expiresAt": identify.expires_at.isoformat().replace("+00:00", "Z"),
    }
    assert body["items"][1]["args"] == {"on": False}

    async def delivered() -> list[CommandReported]:
        return [r for r in await reports(bus_admin, tv) if r.status == "delivered"]

    found = await stack.eventually(delivered)
    # However often the TV asks, each command handed out is reported once by this gateway.
    assert sorted(str(r.command_id) for r in found) == sorted([str(identify.id), str(power.id)])
    assert {(r.device_id, r.screen_id, r.tenant_id) for r in found} == {
        (tv.device_id, tv.screen_id, tv.tenant_id)
    }
    # Once a command closes (registry rewrote the entry), the TV no longer sees it.
    await open_commands(bus_admin, tv, power)
    await listed(stack, tv, power)
    await open_commands(bus_admin, tv)
    await listed(stack, tv)
    assert len(await delivered()) == 2


async def test_the_gateway_forgets_what_it_reported_once_the_commands_close(stack, tv, bus_admin):
    reload = command()
    await open_commands(bus_admin, tv, reload)
    gateway = stack.runners["device-gateway"].app

    async def applied() -> bool:
        return tv.screen_id in gateway[COMMANDS].screens

    await stack.eventually(applied)
    # A HEAD hands nothing out, so nothing is reported delivered.
    assert (await stack.call("HEAD", "/v1/device/commands", token=tv.key))[0] == 200
    assert gateway[COMMANDS].reported == set()
    await listed(stack, tv, reload)
    assert gateway[COMMANDS].reported == {reload.id}
    await open_commands(bus_admin, tv)
    await listed(stack, tv)
    assert gateway[COMMANDS].reported == set() and gateway[COMMANDS].screens == {}


async def test_a_waiting_tv_is_answered_when_a_command_opens(stack, tv, bus_admin):
    waits = stack.runners["device-gateway"].app[WAITS]
    started = time.monotonic()
    waiting = asyncio.create_task(commands_of(stack, tv, Prefer="wait=30"))

    async def is_waiting() -> bool:
        return waits.count == 1

    await stack.eventually(is_waiting)
    reload = command()
    await open_commands(bus_admin, tv, reload)
    status, body, response = await asyncio.wait_for(waiting, timeout=5)
    assert status == 200 and [item["id"] for item in body["items"]] == [str(reload.id)]
    assert response.headers["Preference-Applied"] == "wait=30"
    assert time.monotonic() - started < 10


async def test_a_tv_that_has_the_list_waits_until_the_open_set_changes(stack, tv, bus_admin):
    """With the list's ETag in If-None-Match a TV is held while commands stay open (it has them),
    answered 200 when one opens or closes, 304 when the wait ends: no loop while one is open."""
    waits = stack.runners["device-gateway"].app[WAITS]
    reload = command()
    await open_commands(bus_admin, tv, reload)
    await listed(stack, tv, reload)
    status, body, response = await commands_of(stack, tv)
    etag = response.headers["ETag"]
    started = time.monotonic()
    status, _, response = await commands_of(stack, tv, **{"If-None-Match": etag, "Prefer": "wait=1"})
    assert (status, response.headers["ETag"], response.headers["Preference-Applied"]) == (304, etag, "wait=1")
    assert time.monotonic() - started >= 0.9
    waiting = asyncio.create_task(commands_of(stack, tv, **{"If-None-Match": etag, "Prefer": "wait=30"}))

    async def is_waiting() -> bool:
        return waits.count == 1

    await stack.eventually(is_waiting)
    identify = command("identify", args={"seconds": 5})
    await open_commands(bus_admin, tv, reload, identify)
    status, body, response = await asyncio.wait_for(waiting, timeout=5)
    assert status == 200 and [item["id"] for item in body["items"]] == [str(reload.id), str(identify.id)]
    assert response.headers["ETag"] != etag
    # Both closed: the TV that had them hears so at once (an empty list, not a 304).
    await open_commands(bus_admin, tv)

    async def emptied() -> bool:
        answer = await commands_of(stack, tv, **{"If-None-Match": response.headers["ETag"]})
        return answer[:2] == (200, {"items": []})

    await stack.eventually(emptied)


async def test_a_wait_ends_empty_after_its_seconds_and_is_capped(stack, tv, bus_admin):
    started = time.monotonic()
    status, body, response = await commands_of(stack, tv, Prefer="respond-async, wait=1")
    assert (status, body) == (200, {"items": []})
    assert response.headers["Preference-Applied"] == "wait=1"
    assert 0.9 <= time.monotonic() - started < 5
    # With a command open there is no wait at all, so none is said to be applied (the cap on a
    # long wait is the playlist's and config's too: tests/test_waiting_polls.py).
    reload = command()
    await open_commands(bus_admin, tv, reload)
    await listed(stack, tv, reload)
    started = time.monotonic()
    status, body, response = await commands_of(stack, tv, Prefer="wait=100000")
    assert status == 200 and len(body["items"]) == 1
    assert "Preference-Applied" not in response.headers and time.monotonic() - started < 3
    # A preference the gateway does not understand is ignored (RFC 7240): no wait.
    status, _, response = await commands_of(stack, tv, Prefer="wait=soon")
    assert status == 200 and "Preference-Applied" not in response.headers


async def test_a_tv_revoked_while_waiting_gets_device_revoked(stack, tv):
    waits = stack.runners["device-gateway"].app[WAITS]
    waiting = asyncio.create_task(commands_of(stack, tv, Prefer="wait=30"))

    async def is_waiting() -> bool:
        return waits.count == 1

    await stack.eventually(is_waiting)
    status, body, _ = await stack.call("POST", f"/v1/devices/{tv.device_id}/revoke", token=tv.token, json={})
    assert status == 200, body
    # At once, not when the 30 s wait runs out.
    assert_error(await asyncio.wait_for(waiting, timeout=5), 401, "device_revoked")
    assert_error(await commands_of(stack, tv), 401, "device_revoked")
    assert_error(await post_result(stack, tv, uuid.uuid4(), {"status": "succeeded"}), 401, "device_revoked")


async def test_a_result_is_stored_and_repeats_are_one_report(stack, tv, bus_admin):
    reboot, other = command("reboot"), command("clear_cache")
    await open_commands(bus_admin, tv, reboot, other)
    await listed(stack, tv, reboot, other)
    result = {"status": "succeeded", "message": "rebooted", "data": {"uptimeSeconds": 3, "ok": [1, 2]}}
    status, body, _ = await post_result(stack, tv, reboot.id, result)
    assert (status, body) == (202, {"status": "accepted"})
    # The TV did not get the answer and says it again, before registry closed the command.
    assert (await post_result(stack, tv, reboot.id, result))[0] == 202
    status, _, _ = await post_result(stack, tv, other.id, {"status": "failed", "message": "disk full"})
    assert status == 202
    stored = [r for r in await reports(bus_admin, tv) if r.status != "delivered"]
    assert [(r.command_id, r.status, r.message, r.data) for r in stored] == [
        (reboot.id, "succeeded", "rebooted", {"uptimeSeconds": 3, "ok": [1, 2]}),
        (other.id, "failed", "disk full", None),
    ]
    assert stored[0].device_id == tv.device_id
    # Registry closed them: a result now is for no open command.
    await open_commands(bus_admin, tv)
    await listed(stack, tv)
    assert_error(await post_result(stack, tv, reboot.id, result), 404, "not_found")


async def test_commands_of_another_screen_or_tenant_are_not_the_tvs(stack, tv, bus_admin):
    neighbour = await paired_tv(stack, {"id": str(tv.tenant_id), "token": tv.token})
    stranger = await paired_tv(stack)
    theirs, strangers = command("screenshot"), command("screenshot")
    await open_commands(bus_admin, neighbour, theirs)
    await open_commands(bus_admin, stranger, strangers)
    await listed(stack, neighbour, theirs)
    await listed(stack, stranger, strangers)
    assert (await commands_of(stack, tv))[1] == {"items": []}
    for other in (theirs, strangers):
        assert_error(await post_result(stack, tv, other.id, {"status": "succeeded"}), 404, "not_found")
        assert_error(await put_screenshot(stack, tv, other.id, PNG[:100]), 404, "not_found")
    # An entry naming another tenant than the screen's own is nobody's.
    kv = await bus_admin.jetstream().key_value(DEVICE_COMMANDS_BUCKET)
    forged = ScreenCommands(screen_id=tv.screen_id, tenant_id=stranger.tenant_id, items=[command()])
    await kv.put(str(tv.screen_id), msgspec.json.encode(forged))
    mine = command()
    await open_commands(bus_admin, neighbour, theirs, mine)
    await listed(stack, neighbour, theirs, mine)  # the forged entry was applied before this one
    assert (await commands_of(stack, tv))[1] == {"items": []}
    for unknown in (uuid.uuid4(), "not-a-uuid"):
        assert_error(await post_result(stack, tv, unknown, {"status": "succeeded"}), 404, "not_found")


BAD_RESULTS = [
    ("no-status", {"message": "x"}, [("status", "required")]),
    ("unknown-status", {"status": "done"}, [("status", "enum")]),
    ("delivered-is-not-a-result", {"status": "delivered"}, [("status", "enum")]),
    ("message-1001", {"status": "failed", "message": "x" * 1001}, [("message", "length")]),
    ("message-number", {"status": "failed", "message": 5}, [("message", "type")]),
    ("data-list", {"status": "succeeded", "data": [1]}, [("data", "type")]),
    ("data-17k", {"status": "succeeded", "data": {"log": "x" * 17_000}}, [("data", "length")]),
    ("not-an-object", [], [("", "type")]),
]


@pytest.mark.parametrize(("body", "details"), [c[1:] for c in BAD_RESULTS], ids=[c[0] for c in BAD_RESULTS])
async def test_a_bad_result_is_refused_field_by_field(stack, tv, bus_admin, body, details):
    reload = command()
    await open_commands(bus_admin, tv, reload)
    await listed(stack, tv, reload)
    assert_error(await post_result(stack, tv, reload.id, body), 400, "invalid_request", details)


async def test_a_result_that_is_not_json_is_refused(stack, tv, bus_admin):
    reload = command()
    await open_commands(bus_admin, tv, reload)
    await listed(stack, tv, reload)
    path = f"/v1/device/commands/{reload.id}/result"
    headers = {"Content-Type": "application/json"}
    assert_error(
        await stack.call("POST", path, token=tv.key, data=b"{", headers=headers), 400, "invalid_request"
    )
    text = {"Content-Type": "text/plain"}
    result = await stack.call("POST", path, token=tv.key, data=b'{"status": "failed"}', headers=text)
    assert_error(result, 415, "unsupported_media_type")
    assert [r.status for r in await reports(bus_admin, tv)] == ["delivered"]


async def test_a_screenshot_reaches_the_store(stack, tv, bus_admin):
    shot, reload = command("screenshot"), command("reload")
    await open_commands(bus_admin, tv, shot, reload)
    await listed(stack, tv, shot, reload)
    status, body, _ = await put_screenshot(stack, tv, shot.id, PNG)
    assert status == 204, body
    store = await bus_admin.jetstream().object_store(SCREENSHOTS_BUCKET)
    stored = await store.get(screenshot_object(tv.tenant_id, shot.id))
    assert stored.data == PNG and stored.info.description == "image/png"
    # Once: a TV that sends it again (as JPEG this time) is told it is stored already, and the
    # first stays (nothing a TV repeats fills the store).
    assert_error(await put_screenshot(stack, tv, shot.id, JPEG, "image/jpeg"), 409, "conflict")
    stored = await store.get(screenshot_object(tv.tenant_id, shot.id))
    assert stored.data == PNG and stored.info.description == "image/png"
    # Then the TV reports its result.
    assert (await post_result(stack, tv, shot.id, {"status": "succeeded"}))[0] == 202
    # Only a screenshot command takes an image.
    assert_error(await put_screenshot(stack, tv, reload.id, PNG[:100]), 409, "conflict")


async def test_a_bad_screenshot_is_refused(stack, tv, bus_admin):
    shot = command("screenshot")
    await open_commands(bus_admin, tv, shot)
    await listed(stack, tv, shot)
    assert_error(
        await put_screenshot(stack, tv, shot.id, JPEG, "image/png"), 400, "invalid_request", [("", "format")]
    )
    assert_error(
        await put_screenshot(stack, tv, shot.id, PNG[:100], "image/gif"), 415, "unsupported_media_type"
    )
    too_large = b"\x89PNG\r\n\x1a\n" + bytes(stack.settings.max_screenshot_bytes)
    status, body, _ = await put_screenshot(stack, tv, shot.id, too_large)
    assert status == 413 and "MAX_SCREENSHOT_BYTES" in body["message"], body
    store = await bus_admin.jetstream().object_store(SCREENSHOTS_BUCKET)
    with pytest.raises(nats.js.errors.NotFoundError):  # nothing was stored
        await store.get_info(screenshot_object(tv.tenant_id, shot.id))

"""Remote commands, the admin's side: sent, listed, read and cancelled through the entry point; the
screen's device-commands entry that the gateway serves from; the steps a TV's reports make (its
reports published here as the gateway would, on device_commands.<tenant>.<screen>); expiry; events
and the audit trail; a restart of registry; the screenshot a TV stored."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
import pytest
from nats.js import api

from shared import bus
from shared.bus_access import SETUP_USER
from shared.events import CommandReported, device_commands_subject
from shared.projections import DEVICE_COMMANDS_BUCKET, SCREENSHOTS_BUCKET, ScreenCommands, screenshot_object
from tests.stack import Stack, new_id
from tests.test_scopes import scoped_token
from tests.test_undecodable_events import TERMINATED, assert_terminated_once


async def send(stack: Stack, token: str, screen_id: str, body: dict[str, Any]) -> dict[str, Any]:
    status, command, _ = await stack.call("POST", f"/v1/screens/{screen_id}/commands", token=token, json=body)
    assert status == 202, command
    return command


async def command_of(stack: Stack, token: str, screen_id: str, command_id: str) -> dict[str, Any]:
    status, command, _ = await stack.call(
        "GET", f"/v1/screens/{screen_id}/commands/{command_id}", token=token
    )
    assert status == 200, command
    return command


async def open_ids(stack: Stack, screen_id: str) -> list[str] | None:
    """The ids in the screen's device-commands entry; None while there is none."""
    nc = await bus.connect(stack.settings, SETUP_USER)
    try:
        kv = await nc.jetstream().key_value(DEVICE_COMMANDS_BUCKET)
        try:
            entry = await kv.get(screen_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.NotFoundError):
            return None
        assert entry.value is not None
        value = msgspec.json.decode(entry.value, type=ScreenCommands)
        assert str(value.screen_id) == screen_id
        return [str(item.id) for item in value.items]
    finally:
        await nc.close()


async def entry_becomes(stack: Stack, screen_id: str, ids: list[str]) -> None:
    async def shows() -> bool:
        return await open_ids(stack, screen_id) == ids

    await stack.eventually(shows)


async def report(
    stack: Stack,
    screen: dict[str, Any],
    command_id: str,
    status: str,
    *,
    device_id: str | None = None,
    **result: Any,
) -> None:
    """A TV's report, published as the gateway publishes it."""
    message = CommandReported(
        tenant_id=uuid.UUID(screen["tenantId"]),
        screen_id=uuid.UUID(screen["id"]),
        device_id=uuid.UUID(device_id or new_id()),
        command_id=uuid.UUID(command_id),
        status=status,  # type: ignore[arg-type]  # a test's value for a Literal field
        reported_at=datetime.now(UTC),
        **result,
    )
    nc = await bus.connect(stack.settings, SETUP_USER)
    try:
        subject = device_commands_subject(screen["tenantId"], screen["id"])
        await nc.jetstream().publish(subject, msgspec.json.encode(message))
    finally:
        await nc.close()


async def command_events(stack: Stack) -> list[dict[str, Any]]:
    """Every registry.command.* event on the bus so far, in order."""
    nc = await bus.connect(stack.settings, SETUP_USER)
    try:
        subscription = await nc.jetstream().subscribe(
            "registry.command.>", stream="EVENTS", ordered_consumer=True
        )
        events: list[dict[str, Any]] = []
        while True:
            try:
                message = await subscription.next_msg(timeout=0.5)
            except nats.errors.TimeoutError:
                return events
            events.append(msgspec.json.decode(message.data))
    finally:
        await nc.close()


async def audit_of(stack: Stack, token: str, resource_id: str) -> list[tuple[str, str]]:
    """(action, actor) of the audit entries about ``resource_id``, oldest first."""
    status, page, _ = await stack.call("GET", "/v1/audit", token=token)
    assert status == 200, page
    return [(e["action"], e["actor"]) for e in reversed(page["items"]) if e["resourceId"] == resource_id]


async def test_an_admin_sends_lists_reads_and_cancels_commands(stack: Stack) -> None:
    tenant = await stack.tenant()
    token = tenant["token"]
    screen = await stack.screen(token)
    sid = screen["id"]
    assert await open_ids(stack, sid) is None  # a screen that was never sent one has no entry

    reload = await send(stack, token, sid, {"type": "reload"})
    assert reload["screenId"] == sid and reload["type"] == "reload"
    assert (reload["args"], reload["status"], reload["deliveredAt"], reload["completedAt"]) == (
        {},
        "pending",
        None,
        None,
    )
    created = datetime.fromisoformat(reload["createdAt"])
    expires = datetime.fromisoformat(reload["expiresAt"])
    assert abs((expires - created).total_seconds() - 3600) < 1  # an hour by default
    assert reload["createdBy"] == f"client:{tenant['client']['clientId']}"
    identify = await send(stack, token, sid, {"type": "identify", "ttlSeconds": 60})
    assert identify["args"] == {"seconds": 10}
    expires = datetime.fromisoformat(identify["expiresAt"])
    assert abs((expires - datetime.fromisoformat(identify["createdAt"])).total_seconds() - 60) < 1
    # Unknown fields of args are left out, as everywhere else in the API.
    power = await send(stack, token, sid, {"type": "display_power", "args": {"on": False, "brightness": 3}})
    assert power["args"] == {"on": False}
    ids = [reload["id"], identify["id"], power["id"]]
    await entry_becomes(stack, sid, ids)

    status, page, _ = await stack.call("GET", f"/v1/screens/{sid}/commands", token=token)
    assert status == 200 and [c["id"] for c in page["items"]] == ids and page["nextCursor"] is None, page
    status, first, _ = await stack.call("GET", f"/v1/screens/{sid}/commands?limit=2", token=token)
    assert [c["id"] for c in first["items"]] == ids[:2] and first["nextCursor"], first
    status, rest, _ = await stack.call(
        "GET", f"/v1/screens/{sid}/commands?limit=2&cursor={first['nextCursor']}", token=token
    )
    assert [c["id"] for c in rest["items"]] == ids[2:] and rest["nextCursor"] is None, rest
    assert await command_of(stack, token, sid, identify["id"]) == identify

    status, cancelled, _ = await stack.call(
        "POST", f"/v1/screens/{sid}/commands/{identify['id']}/cancel", token=token
    )
    assert (status, cancelled["status"]) == (200, "cancelled"), cancelled
    assert cancelled["completedAt"] is not None
    await entry_becomes(stack, sid, [reload["id"], power["id"]])
    status, again, _ = await stack.call(
        "POST", f"/v1/screens/{sid}/commands/{identify['id']}/cancel", token=token
    )
    assert (status, again["error"]) == (409, "conflict"), again
    assert (
        again["message"] == "the command is cancelled already: only a pending or delivered one is cancelled"
    )

    status, only, _ = await stack.call("GET", f"/v1/screens/{sid}/commands?status=cancelled", token=token)
    assert [c["id"] for c in only["items"]] == [identify["id"]], only
    status, pending, _ = await stack.call("GET", f"/v1/screens/{sid}/commands?status=pending", token=token)
    assert [c["id"] for c in pending["items"]] == [reload["id"], power["id"]], pending

    assert await audit_of(stack, token, identify["id"]) == [
        ("command.created", reload["createdBy"]),
        ("command.cancelled", reload["createdBy"]),
    ]
    events = [e for e in await command_events(stack) if e["commandId"] == identify["id"]]
    assert [e["type"] for e in events] == ["registry.command.created", "registry.command.cancelled"]
    assert events[0]["screenId"] == sid and events[0]["commandType"] == "identify"
    assert events[0]["tenantId"] == tenant["id"] and events[0]["expiresAt"]


async def test_the_tvs_reports_step_a_command_to_its_result(stack: Stack) -> None:
    token = (await stack.tenant())["token"]
    screen, registered = await stack.paired_device(token)
    sid, device_id = screen["id"], registered["deviceId"]
    command = await send(stack, token, sid, {"type": "screenshot"})
    cid = command["id"]
    await entry_becomes(stack, sid, [cid])

    await report(stack, screen, cid, "delivered", device_id=device_id)

    async def status_is(expected: str) -> dict[str, Any] | None:
        found = await command_of(stack, token, sid, cid)
        return found if found["status"] == expected else None

    delivered = await stack.eventually(lambda: status_is("delivered"))
    assert delivered["deliveredAt"] is not None and delivered["completedAt"] is None
    await report(stack, screen, cid, "delivered", device_id=device_id)  # at least once: again
    data = {"width": 1920, "height": 1080}
    await report(stack, screen, cid, "succeeded", device_id=device_id, message="took it", data=data)
    done = await stack.eventually(lambda: status_is("succeeded"))
    assert (done["message"], done["data"], done["deliveredAt"]) == ("took it", data, delivered["deliveredAt"])
    await entry_becomes(stack, sid, [])
    # A result after the result, and a late delivery, change nothing.
    await report(stack, screen, cid, "failed", device_id=device_id, message="no")
    await report(stack, screen, cid, "delivered", device_id=device_id)
    second = await send(stack, token, sid, {"type": "reboot"})  # a marker: reports are applied in order
    await report(stack, screen, second["id"], "failed", device_id=device_id, message="x" * 1500)
    failed = await stack.eventually(lambda: _with_status(stack, token, sid, second["id"], "failed"))
    assert failed["message"] == "x" * 1000  # kept bounded whatever comes
    assert await command_of(stack, token, sid, cid) == done

    actor = f"device:{device_id}"
    assert await audit_of(stack, token, cid) == [
        ("command.created", command["createdBy"]),
        ("command.delivered", actor),
        ("command.succeeded", actor),
    ]
    events = [e for e in await command_events(stack) if e["commandId"] == cid]
    assert [e["type"] for e in events] == [
        "registry.command.created",
        "registry.command.delivered",
        "registry.command.succeeded",
    ]
    assert events[2]["message"] == "took it"


async def _with_status(stack: Stack, token: str, sid: str, cid: str, status: str) -> dict[str, Any] | None:
    found = await command_of(stack, token, sid, cid)
    return found if found["status"] == status else None


async def test_a_report_naming_another_screen_or_tenant_changes_nothing(stack: Stack) -> None:
    a = await stack.tenant("A")
    b = await stack.tenant("B")
    a_screen = await stack.screen(a["token"])
    b_screen = await stack.screen(b["token"])
    a_other = await stack.screen(a["token"], "Window")
    command = await send(stack, a["token"], a_screen["id"], {"type": "reload"})
    # The same command id reported by a TV of another screen, or of another tenant's screen.
    await report(stack, a_other, command["id"], "succeeded")
    await report(stack, b_screen, command["id"], "failed")
    await report(stack, a_screen, new_id(), "succeeded")  # no such command
    # A marker sent after them: once its report is applied, theirs were too (one consumer, in order).
    marker = await send(stack, a["token"], a_screen["id"], {"type": "clear_cache"})
    await report(stack, a_screen, marker["id"], "succeeded")
    await stack.eventually(lambda: _with_status(stack, a["token"], a_screen["id"], marker["id"], "succeeded"))
    assert await command_of(stack, a["token"], a_screen["id"], command["id"]) == command
    await entry_becomes(stack, a_screen["id"], [command["id"]])


async def test_an_open_command_past_its_time_to_live_expires(stack: Stack) -> None:
    token = (await stack.tenant())["token"]
    screen = await stack.screen(token)
    sid = screen["id"]
    short = await send(stack, token, sid, {"type": "identify", "args": {"seconds": 5}, "ttlSeconds": 3})
    lasting = await send(stack, token, sid, {"type": "reload"})
    await report(stack, screen, short["id"], "delivered")  # delivered, and then nothing: it expires too
    # Delivered before its time is up (or the sweep could expire it first); then left to expire.
    await stack.eventually(lambda: _with_status(stack, token, sid, short["id"], "delivered"))
    expired = await stack.eventually(
        lambda: _with_status(stack, token, sid, short["id"], "expired"), timeout=10
    )
    assert expired["completedAt"] is not None
    await entry_becomes(stack, sid, [lasting["id"]])
    assert (await command_of(stack, token, sid, lasting["id"]))["status"] == "pending"
    assert [action for action, actor in await audit_of(stack, token, short["id"]) if actor == "system"] == [
        "command.expired"
    ]
    events = [e["type"] for e in await command_events(stack) if e["commandId"] == short["id"]]
    assert events == ["registry.command.created", "registry.command.delivered", "registry.command.expired"]
    # An expired command is closed: its late result changes nothing.
    await report(stack, screen, short["id"], "succeeded")
    status, body, _ = await stack.call(
        "POST", f"/v1/screens/{sid}/commands/{short['id']}/cancel", token=token
    )
    assert status == 409, body


async def test_a_screen_holds_at_most_20_open_commands(stack: Stack) -> None:
    token = (await stack.tenant())["token"]
    sid = (await stack.screen(token))["id"]
    sent = [await send(stack, token, sid, {"type": "reload"}) for _ in range(20)]
    status, body, _ = await stack.call(
        "POST", f"/v1/screens/{sid}/commands", token=token, json={"type": "reboot"}
    )
    assert (status, body["error"]) == (409, "conflict"), body
    assert body["message"].startswith("the screen has 20 open commands already")
    status, _, _ = await stack.call("POST", f"/v1/screens/{sid}/commands/{sent[0]['id']}/cancel", token=token)
    assert status == 200
    last = await send(stack, token, sid, {"type": "reboot"})
    await entry_becomes(stack, sid, [c["id"] for c in sent[1:]] + [last["id"]])


async def test_reading_needs_devices_read_and_sending_devices_write(stack: Stack) -> None:
    tenant = await stack.tenant()
    sid = (await stack.screen(tenant["token"]))["id"]
    command = await send(stack, tenant["token"], sid, {"type": "reload"})
    reader = await scoped_token(stack, tenant, "devices:read")
    status, body, _ = await stack.call(
        "POST", f"/v1/screens/{sid}/commands", token=reader, json={"type": "reload"}
    )
    assert (status, body["message"]) == (403, "this call needs the scope devices:write"), body
    status, body, _ = await stack.call(
        "POST", f"/v1/screens/{sid}/commands/{command['id']}/cancel", token=reader
    )
    assert (status, body["message"]) == (403, "this call needs the scope devices:write"), body
    assert (await stack.call("GET", f"/v1/screens/{sid}/commands", token=reader))[0] == 200
    assert await command_of(stack, reader, sid, command["id"]) == command
    screens_only = await scoped_token(stack, tenant, "screens:read screens:write")
    status, body, _ = await stack.call("GET", f"/v1/screens/{sid}/commands", token=screens_only)
    assert (status, body["message"]) == (403, "this call needs the scope devices:read"), body


async def test_another_tenants_commands_are_not_found(stack: Stack) -> None:
    a = (await stack.tenant("A"))["token"]
    b = (await stack.tenant("B"))["token"]
    a_screen = await stack.screen(a)
    b_screen = await stack.screen(b)
    sid, cid = a_screen["id"], (await send(stack, a, a_screen["id"], {"type": "screenshot"}))["id"]
    await _put_screenshot(stack, a_screen["tenantId"], cid, b"\x89PNG a's")
    attempts = [
        ("POST", f"/v1/screens/{sid}/commands", {"type": "reboot"}),
        ("GET", f"/v1/screens/{sid}/commands", None),
        ("GET", f"/v1/screens/{sid}/commands/{cid}", None),
        ("POST", f"/v1/screens/{sid}/commands/{cid}/cancel", None),
        ("GET", f"/v1/screens/{sid}/commands/{cid}/screenshot", None),
        # A's command through B's own screen.
        ("GET", f"/v1/screens/{b_screen['id']}/commands/{cid}", None),
        ("POST", f"/v1/screens/{b_screen['id']}/commands/{cid}/cancel", None),
        ("GET", f"/v1/screens/{b_screen['id']}/commands/{cid}/screenshot", None),
    ]
    for method, path, body in attempts:
        status, answer, _ = await stack.call(method, path, token=b, json=body)
        assert (status, answer["error"]) == (404, "not_found"), (method, path, answer)
    status, page, _ = await stack.call("GET", f"/v1/screens/{sid}/commands", token=a)
    assert [(c["id"], c["status"]) for c in page["items"]] == [(cid, "pending")], page
    status, page, _ = await stack.call("GET", f"/v1/screens/{b_screen['id']}/commands", token=b)
    assert (status, page["items"]) == (200, []), page


async def _put_screenshot(
    stack: Stack, tenant_id: str, command_id: str, image: bytes, kind: str = "image/png"
) -> None:
    nc = await bus.connect(stack.settings, SETUP_USER)
    try:
        store = await nc.jetstream().object_store(SCREENSHOTS_BUCKET)
        name = screenshot_object(uuid.UUID(tenant_id), uuid.UUID(command_id))
        await store.put(name, image, meta=api.ObjectMeta(description=kind))
    finally:
        await nc.close()


@pytest.mark.parametrize("kind", ["image/png", "image/jpeg"])
async def test_the_admin_reads_the_screenshot_the_tv_stored(stack: Stack, kind: str) -> None:
    token = (await stack.tenant())["token"]
    screen = await stack.screen(token)
    sid = screen["id"]
    command = await send(stack, token, sid, {"type": "screenshot"})
    path = f"/v1/screens/{sid}/commands/{command['id']}/screenshot"
    status, body, _ = await stack.call("GET", path, token=token)
    assert (status, body["error"], body["message"]) == (404, "not_found", "no screenshot for this command"), (
        body
    )
    image = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 400  # ~100 KB: several chunks of the store
    await _put_screenshot(stack, screen["tenantId"], command["id"], image, kind)
    status, body, response = await stack.call("GET", path, token=token)
    assert (status, response.content_type, body) == (200, kind, image)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    status, body, _ = await stack.call(
        "GET", f"/v1/screens/{sid}/commands/{new_id()}/screenshot", token=token
    )
    assert status == 404, body


async def test_a_screenshot_whose_chunks_are_gone_is_not_found_not_an_error(stack: Stack) -> None:
    """A full store drops its oldest messages: a screenshot's chunks may go before its metadata."""
    token = (await stack.tenant())["token"]
    screen = await stack.screen(token)
    command = await send(stack, token, screen["id"], {"type": "screenshot"})
    await _put_screenshot(stack, screen["tenantId"], command["id"], b"\x89PNG\r\n\x1a\n" + bytes(1000))
    nc = await bus.connect(stack.settings, SETUP_USER)
    try:
        store = await nc.jetstream().object_store(SCREENSHOTS_BUCKET)
        info = await store.get_info(
            screenshot_object(uuid.UUID(screen["tenantId"]), uuid.UUID(command["id"]))
        )
        await nc.jetstream().purge_stream(
            f"OBJ_{SCREENSHOTS_BUCKET}", subject=f"$O.{SCREENSHOTS_BUCKET}.C.{info.nuid}"
        )
        # A chunk of other bytes where the first was: what is read back no longer matches its digest.
        await nc.jetstream().publish(f"$O.{SCREENSHOTS_BUCKET}.C.{info.nuid}", b"\xff" * 1008)
    finally:
        await nc.close()
    path = f"/v1/screens/{screen['id']}/commands/{command['id']}/screenshot"
    status, body, _ = await stack.call("GET", path, token=token)
    assert (status, body["message"]) == (404, "no screenshot for this command"), body


async def test_a_command_and_its_reports_survive_a_restart_of_registry(stack: Stack) -> None:
    token = (await stack.tenant())["token"]
    screen = await stack.screen(token)
    sid = screen["id"]
    command = await send(stack, token, sid, {"type": "display_power", "args": {"on": True}})
    await entry_becomes(stack, sid, [command["id"]])
    await stack.stop_service("registry")
    # Reported while registry is down: the stream keeps it for registry's consumer.
    await report(stack, screen, command["id"], "succeeded", message="on")
    await stack.start_service("registry")
    await stack.wait_ready("registry")
    done = await stack.eventually(
        lambda: _with_status(stack, token, sid, command["id"], "succeeded"), timeout=10
    )
    assert (done["args"], done["message"]) == ({"on": True}, "on")
    await entry_becomes(stack, sid, [])


async def test_an_undecodable_report_is_terminated_and_the_next_applied(stack: Stack) -> None:
    token = (await stack.tenant())["token"]
    screen = await stack.screen(token)
    command = await send(stack, token, screen["id"], {"type": "reload"})
    nc = await bus.connect(stack.settings, SETUP_USER)
    try:
        consumer = "registry-command-reports"
        advisories = await nc.subscribe(TERMINATED.format(stream="DEVICE_EVENTS", consumer=consumer))
        subject = device_commands_subject(screen["tenantId"], screen["id"])
        ack = await nc.jetstream().publish(subject, b'{"commandId": "not a report"}')
        await report(stack, screen, command["id"], "succeeded")
        await stack.eventually(lambda: _with_status(stack, token, screen["id"], command["id"], "succeeded"))
        await assert_terminated_once(stack, nc, advisories, "DEVICE_EVENTS", consumer, ack.seq)
    finally:
        await nc.close()

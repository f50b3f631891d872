"""Screen-first binding with a pairing code, end to end through the public API of the running
stack: the admin makes a screen and a code for it, the TV registers with the code and gets its key."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import pytest

from services.provisioning.queries.codes import CODE_ALPHABET
from shared import bus
from shared.bus_access import SETUP_USER
from tests.binding import DEFAULT_CONFIG, json_shape, parse_time

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


async def screen_state(stack, token: str, screen_id: str) -> dict:
    status, screen, _ = await stack.call("GET", f"/v1/screens/{screen_id}", token=token)
    assert status == 200
    return screen


async def test_screen_first_binding_end_to_end(stack):
    tenant = await stack.tenant()
    token = tenant["token"]

    # Step 1: a venue and a screen, in provisioning state, scoped to the tenant.
    status, venue, _ = await stack.call(
        "POST", "/v1/venues", token=token, json={"name": "HQ", "timezone": "Europe/Berlin"}
    )
    assert status == 201
    assert venue["tenantId"] == tenant["id"] and venue["timezone"] == "Europe/Berlin"
    status, screen, _ = await stack.call(
        "POST", "/v1/screens", token=token, json={"venueId": venue["id"], "name": "Lobby"}
    )
    assert status == 201
    assert UUID.match(screen["id"])
    assert {
        k: screen[k] for k in ("tenantId", "venueId", "name", "state", "deviceId", "presence", "lastSeenAt")
    } == {
        "tenantId": tenant["id"],
        "venueId": venue["id"],
        "name": "Lobby",
        "state": "provisioning",
        "deviceId": None,
        "presence": "unknown",
        "lastSeenAt": None,
    }

    # Step 2: an 8-character code from an alphabet without look-alikes, ~15 minutes to live.
    code = await stack.code(token, screen["id"])
    assert len(code["code"]) == 8 and set(code["code"]) <= set(CODE_ALPHABET)
    assert (code["screenId"], code["tenantId"], code["status"]) == (screen["id"], tenant["id"], "pending")
    ttl = parse_time(code["expiresAt"]) - datetime.now(UTC)
    assert timedelta(minutes=14) < ttl <= timedelta(minutes=15)

    # Steps 3-4: the TV registers; the key is shown once; the screen becomes active.
    status, registered = await stack.register(code["code"])
    assert status == 201
    assert set(registered) == {"deviceId", "screenId", "apiKey", "tenantId", "config"}
    assert re.fullmatch(r"dak_[A-Za-z0-9_-]{43}", registered["apiKey"])
    assert (registered["screenId"], registered["tenantId"]) == (screen["id"], tenant["id"])
    assert registered["config"] == DEFAULT_CONFIG
    key, device_id = registered["apiKey"], registered["deviceId"]

    active = await stack.eventually(lambda: _screen_if(stack, token, screen["id"], state="active"))
    assert active["deviceId"] == device_id
    status, code_status, _ = await stack.call(
        "GET", f"/v1/devices/provisioning-codes/{code['code']}/status", token=token
    )
    assert status == 200
    assert (code_status["status"], code_status["deviceId"], code_status["screenId"]) == (
        "bound",
        device_id,
        screen["id"],
    )
    assert code_status["boundAt"] is not None

    # Step 5: polling with the key; ETag and 304.
    status, config, response = await stack.call("GET", "/v1/device/config", token=key)
    assert status == 200 and config == DEFAULT_CONFIG
    config_etag = response.headers["ETag"]
    status, _, response = await stack.call(
        "GET", "/v1/device/config", token=key, headers={"If-None-Match": config_etag}
    )
    assert status == 304 and response.headers["ETag"] == config_etag

    status, playlist, response = await stack.call("GET", "/v1/device/playlist", token=key)
    assert status == 200 and playlist == {"screenId": screen["id"], "version": 0, "items": []}
    playlist_etag = response.headers["ETag"]

    items = [
        {"type": "image", "url": "https://cdn.example.com/a.png", "durationSeconds": 10},
        {"type": "video", "url": "https://cdn.example.com/b.mp4", "durationSeconds": 30.5},
    ]
    status, stored, _ = await stack.call(
        "PUT", f"/v1/screens/{screen['id']}/playlist", token=token, json={"items": items}
    )
    assert status == 200 and stored["version"] == 1 and stored["items"] == items

    async def new_playlist():
        status, body, response = await stack.call(
            "GET", "/v1/device/playlist", token=key, headers={"If-None-Match": playlist_etag}
        )
        return (body, response.headers["ETag"]) if status == 200 else None

    playlist, new_etag = await stack.eventually(new_playlist)
    assert playlist == {"screenId": screen["id"], "version": 1, "items": items}
    assert new_etag != playlist_etag

    status, patched, _ = await stack.call(
        "PATCH",
        f"/v1/screens/{screen['id']}/config",
        token=token,
        json={"heartbeatIntervalMinutes": 2, "cachePolicy": {"retentionDays": 3}},
    )
    assert status == 200
    expected_config = {
        **DEFAULT_CONFIG,
        "heartbeatIntervalMinutes": 2,
        "cachePolicy": {"maxSizeGB": 10, "retentionDays": 3},
    }
    assert patched == expected_config
    assert json_shape(patched) == json_shape(expected_config)

    async def new_config():
        status, body, _ = await stack.call(
            "GET", "/v1/device/config", token=key, headers={"If-None-Match": config_etag}
        )
        return body if status == 200 else None

    polled = await stack.eventually(new_config)
    assert polled == expected_config
    assert json_shape(polled) == json_shape(expected_config)

    status, body, _ = await stack.call(
        "POST", "/v1/device/heartbeat", token=key, json={"uptimeSeconds": 60, "appVersion": "1.0.0"}
    )
    assert (status, body) == (202, {"status": "accepted"})
    status, body, _ = await stack.call(
        "POST",
        "/v1/device/events",
        token=key,
        json={"events": [{"type": "proof_of_play", "at": "2026-11-23T08:00:00Z", "data": {"item": 0}}]},
    )
    assert (status, body) == (202, {"status": "accepted"})
    seen = await stack.eventually(lambda: _presence(stack, screen["id"]))
    assert str(seen["device_id"]) == device_id
    assert seen["last_heartbeat"]["uptimeSeconds"] == 60

    # Step 6: revoke; the key dies everywhere; the screen goes back to provisioning.
    status, revoked, _ = await stack.call(
        "POST", f"/v1/devices/{device_id}/revoke", token=token, json={"reason": "Replaced hardware"}
    )
    assert status == 200
    assert (revoked["id"], revoked["status"], revoked["screenId"], revoked["reason"]) == (
        device_id,
        "suspended",
        screen["id"],
        "Replaced hardware",
    )

    async def rejected():
        status, body, _ = await stack.call("GET", "/v1/device/playlist", token=key)
        return body if status == 401 else None

    body = await stack.eventually(rejected, timeout=1)
    assert body["error"] == "device_revoked"
    back = await stack.eventually(lambda: _screen_if(stack, token, screen["id"], state="provisioning"))
    assert back["deviceId"] is None
    status, code_status, _ = await stack.call(
        "GET", f"/v1/devices/provisioning-codes/{code['code']}/status", token=token
    )
    assert code_status["status"] == "revoked"
    status, device, _ = await stack.call("GET", f"/v1/devices/{device_id}", token=token)
    assert (device["status"], device["revokeReason"]) == ("suspended", "Replaced hardware")

    # ...and is provisioned again with a new code and a new key.
    second = await stack.code(token, screen["id"])
    status, again = await stack.register(second["code"])
    assert status == 201 and again["deviceId"] != device_id and again["apiKey"] != key

    async def polls_ok():
        status, _, _ = await stack.call("GET", "/v1/device/config", token=again["apiKey"])
        return status == 200

    await stack.eventually(polls_ok)
    status, body, _ = await stack.call("GET", "/v1/device/config", token=key)
    assert (status, body["error"]) == (401, "device_revoked")


async def _screen_if(stack, token: str, screen_id: str, *, state: str) -> dict | None:
    screen = await screen_state(stack, token, screen_id)
    return screen if screen["state"] == state else None


async def _presence(stack, screen_id: str):
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        row = await conn.fetchrow(
            "SELECT device_id, last_heartbeat FROM heartbeat.presence WHERE screen_id = $1::uuid", screen_id
        )
    finally:
        await conn.close()
    if row is None:
        return None
    return {"device_id": row["device_id"], "last_heartbeat": msgspec.json.decode(row["last_heartbeat"])}


async def test_one_code_many_concurrent_registrations_exactly_one_wins(stack):
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    code = await stack.code(tenant["token"], screen["id"])
    results = await asyncio.gather(*(stack.register(code["code"]) for _ in range(25)))
    statuses = sorted(status for status, _ in results)
    # The losers are failed registrations from one address: past the limit (10) they get 429.
    assert statuses[0] == 201 and set(statuses[1:]) <= {409, 429}, statuses
    assert {body["error"] for status, body in results if status == 409} == {"conflict"}
    _, devices, _ = await stack.call("GET", f"/v1/devices?screenId={screen['id']}", token=tenant["token"])
    assert len(devices["items"]) == 1


async def test_a_new_code_supersedes_the_pending_one(stack):
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    first = await stack.code(tenant["token"], screen["id"])
    second = await stack.code(tenant["token"], screen["id"])
    status, body = await stack.register(first["code"])
    assert (status, body["error"]) == (410, "code_expired")
    status, old, _ = await stack.call(
        "GET", f"/v1/devices/provisioning-codes/{first['code']}/status", token=tenant["token"]
    )
    assert old["status"] == "superseded"
    status, _ = await stack.register(second["code"])
    assert status == 201


async def test_a_used_code_is_a_conflict(stack):
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    code = await stack.code(tenant["token"], screen["id"])
    assert (await stack.register(code["code"]))[0] == 201
    status, body = await stack.register(code["code"])
    assert (status, body["error"]) == (409, "conflict")


async def test_unknown_code_is_not_found(stack):
    status, body = await stack.register("ZZZZ2345")
    assert (status, body["error"]) == (404, "not_found")


async def test_no_code_for_a_screen_that_is_not_in_provisioning(stack):
    tenant = await stack.tenant()
    screen, _ = await stack.paired_device(tenant["token"])
    status, body, _ = await stack.call(
        "POST", "/v1/devices/provisioning-codes", token=tenant["token"], json={"screenId": screen["id"]}
    )
    assert (status, body["error"]) == (409, "conflict")


async def test_revoking_twice_is_a_conflict(stack):
    tenant = await stack.tenant()
    _, registered = await stack.paired_device(tenant["token"])
    path = f"/v1/devices/{registered['deviceId']}/revoke"
    assert (await stack.call("POST", path, token=tenant["token"], json={}))[0] == 200
    status, body, _ = await stack.call("POST", path, token=tenant["token"], json={})
    assert (status, body["error"]) == (409, "conflict")


class TestExpiry:
    @pytest.fixture
    def settings(self, settings):
        return msgspec.structs.replace(settings, code_ttl_seconds=1)

    async def test_an_expired_code_is_gone(self, stack):
        tenant = await stack.tenant()
        screen = await stack.screen(tenant["token"])
        code = await stack.code(tenant["token"], screen["id"])
        await asyncio.sleep(1.2)
        status, body = await stack.register(code["code"])
        assert (status, body["error"]) == (410, "code_expired")
        status, expired, _ = await stack.call(
            "GET", f"/v1/devices/provisioning-codes/{code['code']}/status", token=tenant["token"]
        )
        assert expired["status"] == "expired"


async def test_events_carry_the_request_id_of_the_call_that_caused_them(stack):
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    code = await stack.code(tenant["token"], screen["id"])
    status, registered, response = await stack.call(
        "POST",
        "/devices/register",
        headers={"X-Request-ID": "req-binding-42"},
        json={
            "pairingCode": code["code"],
            "deviceInfo": {
                "manufacturer": "LG",
                "model": "webOS",
                "osVersion": "6",
                "appVersion": "2.0",
                "macAddress": "AA-BB-CC-DD-EE-FF",
                "ipAddress": "10.0.0.7",
            },
        },
    )
    assert status == 201 and response.headers["X-Request-ID"] == "req-binding-42"
    client = await bus.connect(stack.settings, SETUP_USER)
    try:
        js = client.jetstream()
        subscription = await js.pull_subscribe("provisioning.device.bound", stream="EVENTS")
        messages = await subscription.fetch(1, timeout=5)
    finally:
        await client.close()
    event = msgspec.json.decode(messages[0].data)
    assert event["type"] == "provisioning.device.bound"
    assert event["deviceId"] == registered["deviceId"]
    headers = messages[0].headers or {}
    assert headers["X-Request-ID"] == "req-binding-42"
    assert headers["Nats-Msg-Id"] == event["eventId"]

"""Binding flows beyond pairing codes, end to end through the entry point, as a TV or an admin:
factory-reset recovery, provisioning tokens, a device's own logout, and the audit trail that
every bind and unbind writes (README "Binding flows beyond pairing codes")."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from tests.stack import DEVICE_INFO, Stack, new_id

KEY = re.compile(r"^dak_[A-Za-z0-9_-]{43}$")
RECOVERY_SECRET = re.compile(r"^drs_[A-Za-z0-9_-]{43}$")
PROVISIONING_TOKEN = re.compile(r"^dpt_[A-Za-z0-9_-]{43}$")
# Well-formed, but never issued.
UNKNOWN_SECRET = "drs_" + "A" * 43
UNKNOWN_TOKEN = "dpt_" + "A" * 43
UNKNOWN_KEY = "dak_" + "A" * 43
DEFAULT_CONFIG = {
    "syncIntervalMinutes": 5,
    "heartbeatIntervalMinutes": 1,
    "cachePolicy": {"maxSizeGB": 10.0, "retentionDays": 7},
}
AUDIT_FIELDS = {"id", "at", "deviceId", "screenId", "action", "method", "actor", "clientAddress", "reason"}


# ---- helpers ----------------------------------------------------------------------------------


def parse_time(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value)


def assert_error(status: int, body: Any, expected_status: int, error: str) -> None:
    assert status == expected_status, body
    assert isinstance(body, dict) and set(body) <= {"error", "message", "details"}, body
    assert body["error"] == error, body
    assert isinstance(body["message"], str) and body["message"], body


async def pair(stack: Stack, token: str, screen: dict[str, Any] | None = None, **device_info: Any):
    """A TV registered with a pairing code on ``screen`` (a new one if None): ``(screen, registered)``."""
    screen = screen or await stack.screen(token)
    code = await stack.code(token, screen["id"])
    status, registered = await stack.register(code["code"], **device_info)
    assert status == 201, registered
    return screen, registered


async def recover(stack: Stack, hardware_id: Any, secret: Any) -> tuple[int, Any, Any]:
    return await stack.call(
        "POST", "/devices/recover", json={"hardwareId": hardware_id, "recoverySecret": secret}
    )


async def new_token(stack: Stack, token: str, screen_id: str, **extra: Any) -> tuple[int, Any]:
    status, body, _ = await stack.call(
        "POST", "/v1/devices/provisioning-tokens", token=token, json={"screenId": screen_id, **extra}
    )
    return status, body


async def provision(stack: Stack, provisioning_token: str, **device_info: Any) -> tuple[int, Any]:
    status, body, _ = await stack.call(
        "POST",
        "/devices/provision",
        json={"provisioningToken": provisioning_token, "deviceInfo": {**DEVICE_INFO, **device_info}},
    )
    return status, body


async def gateway(stack: Stack, key: str) -> tuple[int, Any]:
    status, body, _ = await stack.call("GET", "/v1/device/playlist", token=key)
    return status, body


async def until_gateway(stack: Stack, key: str, status: int, error: str | None = None) -> Any:
    """Wait until the gateway answers ``key`` with ``status`` (and ``error``); its KV is async."""

    async def check() -> Any:
        got, body = await gateway(stack, key)
        if got == status and (error is None or body.get("error") == error):
            return body or True
        return None

    return await stack.eventually(check)


async def until_screen(stack: Stack, token: str, screen_id: str, state: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        status, screen, _ = await stack.call("GET", f"/v1/screens/{screen_id}", token=token)
        assert status == 200, screen
        return screen if screen["state"] == state else None

    return await stack.eventually(check)


async def device(stack: Stack, token: str, device_id: str) -> dict[str, Any]:
    status, body, _ = await stack.call("GET", f"/v1/devices/{device_id}", token=token)
    assert status == 200, body
    return body


async def audit(stack: Stack, token: str, device_id: str) -> list[dict[str, Any]]:
    status, trail, _ = await stack.call("GET", f"/v1/devices/{device_id}/audit", token=token)
    assert status == 200, trail
    assert set(trail) == {"items"}, trail
    for entry in trail["items"]:
        assert set(entry) == AUDIT_FIELDS, trail
        assert entry["deviceId"] == device_id, trail
        parse_time(entry["at"])
    return trail["items"]


def summary(entries: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(e["action"], e["method"], e["actor"]) for e in entries]


# =================================================================================================
# Factory-reset recovery
# =================================================================================================


async def test_only_a_tv_that_reports_a_hardware_id_gets_a_recovery_secret(stack):
    tenant = await stack.tenant()
    _, with_id = await pair(stack, tenant["token"], hardwareId="SN-55-0042")
    assert set(with_id) == {"deviceId", "screenId", "apiKey", "tenantId", "config", "recoverySecret"}, with_id
    assert RECOVERY_SECRET.match(with_id["recoverySecret"]), with_id
    assert KEY.match(with_id["apiKey"]), with_id

    _, without_id = await pair(stack, tenant["token"])
    assert set(without_id) == {"deviceId", "screenId", "apiKey", "tenantId", "config"}, without_id
    # The hardware id is what the device reported, and shown back to the admin.
    assert (await device(stack, tenant["token"], with_id["deviceId"]))["deviceInfo"][
        "hardwareId"
    ] == "SN-55-0042"


async def test_recovery_gives_the_same_device_a_new_key_and_the_old_key_dies(stack):
    tenant = await stack.tenant()
    screen, registered = await pair(stack, tenant["token"], hardwareId="SN-55-0042")
    old_key = registered["apiKey"]
    await until_gateway(stack, old_key, 200)

    status, recovered, _ = await recover(stack, "SN-55-0042", registered["recoverySecret"])
    assert status == 200, recovered
    assert set(recovered) == {"deviceId", "screenId", "apiKey", "tenantId", "config"}, recovered
    assert (recovered["deviceId"], recovered["screenId"], recovered["tenantId"]) == (
        registered["deviceId"],
        screen["id"],
        tenant["id"],
    ), recovered
    assert recovered["config"] == DEFAULT_CONFIG, recovered
    assert KEY.match(recovered["apiKey"]) and recovered["apiKey"] != old_key, recovered

    body = await until_gateway(stack, old_key, 401, "device_revoked")
    assert body["error"] == "device_revoked", body
    await until_gateway(stack, recovered["apiKey"], 200)
    status, playlist = await gateway(stack, recovered["apiKey"])
    assert status == 200 and playlist["screenId"] == screen["id"], playlist

    # The dead key cannot sign the device out either; it stays active on its screen.
    status, body, _ = await stack.call("POST", "/v1/device/logout", token=old_key)
    assert_error(status, body, 401, "device_revoked")
    assert (await device(stack, tenant["token"], registered["deviceId"]))["status"] == "active"
    assert (await until_screen(stack, tenant["token"], screen["id"], "active"))["deviceId"] == registered[
        "deviceId"
    ]
    entries = await audit(stack, tenant["token"], registered["deviceId"])
    assert summary(entries) == [("bound", "code", "device"), ("recovered", "recovery", "device")], entries
    assert entries[1]["clientAddress"] == "127.0.0.1" and entries[1]["reason"] is None, entries


async def test_recovery_with_a_wrong_secret_or_another_devices_secret_is_refused_and_changes_nothing(stack):
    tenant = await stack.tenant()
    _, first = await pair(stack, tenant["token"], hardwareId="SN-A")
    _, second = await pair(stack, tenant["token"], hardwareId="SN-B")

    attempts = {
        "right hardware id, wrong secret": ("SN-A", UNKNOWN_SECRET),
        "A's secret with B's hardware id": ("SN-B", first["recoverySecret"]),
        "B's secret with A's hardware id": ("SN-A", second["recoverySecret"]),
        "a secret with an unknown hardware id": ("SN-C", first["recoverySecret"]),
    }
    for name, (hardware_id, secret) in attempts.items():
        status, body, _ = await recover(stack, hardware_id, secret)
        assert status == 401, (name, body)
        assert body["error"] == "unauthorized", (name, body)
        assert "apiKey" not in body, (name, body)

    # Neither device lost its key or its status.
    for registered in (first, second):
        await until_gateway(stack, registered["apiKey"], 200)
        assert (await device(stack, tenant["token"], registered["deviceId"]))["status"] == "active"
        entries = await audit(stack, tenant["token"], registered["deviceId"])
        assert summary(entries) == [("bound", "code", "device")], entries


async def test_a_malformed_recovery_request_is_a_bad_request_naming_the_field(stack):
    cases = [
        ({"hardwareId": "SN-A", "recoverySecret": "drs_short"}, [("recoverySecret", "pattern")]),
        ({"hardwareId": "SN-A", "recoverySecret": "dak_" + "A" * 43}, [("recoverySecret", "pattern")]),
        ({"hardwareId": "", "recoverySecret": UNKNOWN_SECRET}, [("hardwareId", "length")]),
        ({"hardwareId": "SN-A"}, [("recoverySecret", "required")]),
    ]
    for request_body, details in cases:
        status, body, _ = await stack.call("POST", "/devices/recover", json=request_body)
        assert_error(status, body, 400, "invalid_request")
        assert sorted((d["field"], d["problem"]) for d in body["details"]) == details, (request_body, body)


async def test_a_revoked_device_cannot_recover_even_with_its_secret(stack):
    tenant = await stack.tenant()
    _, registered = await pair(stack, tenant["token"], hardwareId="SN-55-0042")
    status, body, _ = await stack.call(
        "POST",
        f"/v1/devices/{registered['deviceId']}/revoke",
        token=tenant["token"],
        json={"reason": "Stolen"},
    )
    assert status == 200, body

    status, body, _ = await recover(stack, "SN-55-0042", registered["recoverySecret"])
    assert_error(status, body, 401, "unauthorized")
    suspended = await device(stack, tenant["token"], registered["deviceId"])
    assert (suspended["status"], suspended["revokeReason"]) == ("suspended", "Stolen"), suspended
    await until_gateway(stack, registered["apiKey"], 401, "device_revoked")


async def test_a_new_code_for_the_same_screen_gives_the_same_hardware_its_old_device_back(stack):
    tenant = await stack.tenant()
    token = tenant["token"]
    screen, first = await pair(stack, token, hardwareId="SN-55-0042")
    status, body, _ = await stack.call(
        "POST", f"/v1/devices/{first['deviceId']}/revoke", token=token, json={}
    )
    assert status == 200, body
    await until_screen(stack, token, screen["id"], "provisioning")

    _, again = await pair(stack, token, screen, hardwareId="SN-55-0042")
    assert again["deviceId"] == first["deviceId"], (first, again)
    assert again["screenId"] == screen["id"], again
    assert again["apiKey"] != first["apiKey"] and KEY.match(again["apiKey"]), again
    assert (
        RECOVERY_SECRET.match(again["recoverySecret"]) and again["recoverySecret"] != first["recoverySecret"]
    ), again

    active = await device(stack, token, first["deviceId"])
    assert (active["status"], active["revokedAt"], active["revokeReason"]) == ("active", None, None), active
    assert (await until_screen(stack, token, screen["id"], "active"))["deviceId"] == first["deviceId"]
    await until_gateway(stack, again["apiKey"], 200)
    assert (await gateway(stack, first["apiKey"]))[0] == 401
    status, devices, _ = await stack.call("GET", f"/v1/devices?screenId={screen['id']}", token=token)
    assert [d["id"] for d in devices["items"]] == [first["deviceId"]], devices
    entries = await audit(stack, token, first["deviceId"])
    assert [(e["action"], e["method"]) for e in entries] == [
        ("bound", "code"),
        ("unbound", "revoke"),
        ("bound", "code"),
    ], entries

    # The secret of the first bind is dead; the new one works.
    status, body, _ = await recover(stack, "SN-55-0042", first["recoverySecret"])
    assert status == 401, body
    status, body, _ = await recover(stack, "SN-55-0042", again["recoverySecret"])
    assert status == 200 and body["deviceId"] == first["deviceId"], body


async def test_the_same_hardware_on_another_screen_gets_a_new_device_and_leaves_the_old_one_alone(stack):
    tenant = await stack.tenant()
    token = tenant["token"]
    lobby, first = await pair(stack, token, hardwareId="SN-55-0042")
    status, body, _ = await stack.call(
        "POST", f"/v1/devices/{first['deviceId']}/revoke", token=token, json={}
    )
    assert status == 200, body
    before = await device(stack, token, first["deviceId"])

    bar, moved = await pair(stack, token, await stack.screen(token, "Bar"), hardwareId="SN-55-0042")
    assert moved["deviceId"] != first["deviceId"], (first, moved)
    assert moved["screenId"] == bar["id"], moved

    after = await device(stack, token, first["deviceId"])
    assert after == before, (before, after)
    assert after["status"] == "suspended" and after["screenId"] == lobby["id"], after
    assert (await until_screen(stack, token, lobby["id"], "provisioning"))["deviceId"] is None
    await until_gateway(stack, first["apiKey"], 401, "device_revoked")


async def test_failed_recoveries_count_toward_the_address_rate_limit(settings, sockets):
    # An hour-long window: three failures a few milliseconds apart never straddle two windows.
    limited = msgspec.structs.replace(
        settings, register_failures_per_window=3, register_failure_window_seconds=3600
    )
    async with Stack(limited, sockets) as stack:
        tenant = await stack.tenant()
        _, registered = await pair(stack, tenant["token"], hardwareId="SN-55-0042")
        failures = [
            (await recover(stack, "SN-55-0042", UNKNOWN_SECRET))[0],
            (await recover(stack, "SN-OTHER", registered["recoverySecret"]))[0],
            (await recover(stack, "SN-55-0042", "drs_malformed"))[0],
        ]
        assert failures == [401, 401, 400], failures

        status, body, response = await recover(stack, "SN-55-0042", UNKNOWN_SECRET)
        assert_error(status, body, 429, "rate_limited")
        retry_after = response.headers.get("Retry-After", "")
        assert retry_after.isdigit() and 1 <= int(retry_after) <= 3600, response.headers

        # Even the right secret waits, and so does a pairing code from the same address; the
        # device's key is untouched.
        status, body, _ = await recover(stack, "SN-55-0042", registered["recoverySecret"])
        assert_error(status, body, 429, "rate_limited")
        screen = await stack.screen(tenant["token"], "Bar")
        code = await stack.code(tenant["token"], screen["id"])
        status, body = await stack.register(code["code"])
        assert_error(status, body, 429, "rate_limited")
        await until_gateway(stack, registered["apiKey"], 200)


# =================================================================================================
# Provisioning tokens
# =================================================================================================


async def test_a_provisioning_token_provisions_a_device_that_works_and_activates_the_screen(stack):
    tenant = await stack.tenant()
    token = tenant["token"]
    screen = await stack.screen(token)
    status, created = await new_token(stack, token, screen["id"])
    assert status == 201, created
    assert set(created) == {"token", "screenId", "tenantId", "expiresAt"}, created
    assert PROVISIONING_TOKEN.match(created["token"]), created
    assert (created["screenId"], created["tenantId"]) == (screen["id"], tenant["id"]), created
    ttl = parse_time(created["expiresAt"]) - datetime.now(UTC)
    assert timedelta(seconds=590) < ttl <= timedelta(seconds=600), created  # the default ttl: 600 s

    status, registered = await provision(stack, created["token"])
    assert status == 201, registered
    assert set(registered) == {"deviceId", "screenId", "apiKey", "tenantId", "config"}, registered
    assert (registered["screenId"], registered["tenantId"]) == (screen["id"], tenant["id"]), registered
    assert KEY.match(registered["apiKey"]) and registered["config"] == DEFAULT_CONFIG, registered

    await until_gateway(stack, registered["apiKey"], 200)
    status, playlist = await gateway(stack, registered["apiKey"])
    assert status == 200 and playlist["screenId"] == screen["id"], playlist
    active = await until_screen(stack, token, screen["id"], "active")
    assert active["deviceId"] == registered["deviceId"], active
    assert (await device(stack, token, registered["deviceId"]))["status"] == "active"

    entries = await audit(stack, token, registered["deviceId"])
    assert summary(entries) == [("bound", "provisioning_token", "device")], entries
    assert (entries[0]["screenId"], entries[0]["clientAddress"]) == (screen["id"], "127.0.0.1"), entries


async def test_a_token_provisioned_tv_with_a_hardware_id_gets_a_recovery_secret_that_works(stack):
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    status, created = await new_token(stack, tenant["token"], screen["id"], ttlSeconds=60)
    assert status == 201, created
    ttl = parse_time(created["expiresAt"]) - datetime.now(UTC)
    assert timedelta(seconds=50) < ttl <= timedelta(seconds=60), created
    status, registered = await provision(stack, created["token"], hardwareId="SN-TOKEN-1")
    assert status == 201, registered
    assert RECOVERY_SECRET.match(registered.get("recoverySecret", "")), registered
    status, recovered, _ = await recover(stack, "SN-TOKEN-1", registered["recoverySecret"])
    assert status == 200 and recovered["deviceId"] == registered["deviceId"], recovered

    # Revoked, then provisioned again with a new token for the same screen: the same device.
    status, body, _ = await stack.call(
        "POST", f"/v1/devices/{registered['deviceId']}/revoke", token=tenant["token"], json={}
    )
    assert status == 200, body
    status, second = await new_token(stack, tenant["token"], screen["id"])
    assert status == 201, second
    status, again = await provision(stack, second["token"], hardwareId="SN-TOKEN-1")
    assert status == 201 and again["deviceId"] == registered["deviceId"], (registered, again)
    entries = await audit(stack, tenant["token"], registered["deviceId"])
    assert [(e["action"], e["method"]) for e in entries] == [
        ("bound", "provisioning_token"),
        ("recovered", "recovery"),
        ("unbound", "revoke"),
        ("bound", "provisioning_token"),
    ], entries


async def test_a_provisioning_token_is_single_use(stack):
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    _, created = await new_token(stack, tenant["token"], screen["id"])
    status, first = await provision(stack, created["token"])
    assert status == 201, first
    status, body = await provision(stack, created["token"])
    assert_error(status, body, 409, "conflict")
    # Still so once the screen is free again: the token was used.
    status, revoked, _ = await stack.call(
        "POST", f"/v1/devices/{first['deviceId']}/revoke", token=tenant["token"], json={}
    )
    assert status == 200, revoked
    status, body = await provision(stack, created["token"])
    assert_error(status, body, 409, "conflict")


async def test_ten_concurrent_provisions_with_one_token_exactly_one_wins(stack):
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    _, created = await new_token(stack, tenant["token"], screen["id"])
    results = await asyncio.gather(*(provision(stack, created["token"]) for _ in range(10)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [409] * 9, results
    assert {body["error"] for status, body in results if status == 409} == {"conflict"}, results
    status, devices, _ = await stack.call(
        "GET", f"/v1/devices?screenId={screen['id']}", token=tenant["token"]
    )
    assert status == 200, devices
    winner = next(body for status, body in results if status == 201)
    assert [d["id"] for d in devices["items"]] == [winner["deviceId"]], devices


async def test_an_unknown_token_is_not_found_and_a_malformed_one_is_a_bad_request(stack):
    status, body = await provision(stack, UNKNOWN_TOKEN)
    assert_error(status, body, 404, "not_found")
    for malformed in ("dpt_short", "drs_" + "A" * 43, "dpt_" + "A" * 43 + "\n", 42):
        status, body = await provision(stack, malformed)
        assert_error(status, body, 400, "invalid_request")
        assert [d["field"] for d in body["details"]] == ["provisioningToken"], (malformed, body)


async def test_a_ttl_out_of_range_is_a_bad_request(stack):
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    for ttl in (59, 3601, 0, -1):
        status, body = await new_token(stack, tenant["token"], screen["id"], ttlSeconds=ttl)
        assert_error(status, body, 400, "invalid_request")
        assert [(d["field"], d["problem"]) for d in body["details"]] == [("ttlSeconds", "range")], (ttl, body)
    for ttl in (60, 3600):
        status, body = await new_token(stack, tenant["token"], screen["id"], ttlSeconds=ttl)
        assert status == 201, (ttl, body)


async def test_no_token_for_another_tenants_screen_or_an_unknown_one(stack):
    owner = await stack.tenant("Owner")
    other = await stack.tenant("Other")
    screen = await stack.screen(owner["token"])
    status, body = await new_token(stack, other["token"], screen["id"])
    assert_error(status, body, 404, "not_found")
    status, body = await new_token(stack, owner["token"], new_id())
    assert_error(status, body, 404, "not_found")
    status, body, _ = await stack.call(
        "POST", "/v1/devices/provisioning-tokens", json={"screenId": screen["id"]}
    )
    assert_error(status, body, 401, "unauthorized")


async def test_no_token_for_a_screen_that_has_an_active_device(stack):
    tenant = await stack.tenant()
    screen, _ = await pair(stack, tenant["token"])
    status, body = await new_token(stack, tenant["token"], screen["id"])
    assert_error(status, body, 409, "conflict")


async def test_a_second_token_for_a_screen_bound_with_the_first_is_a_conflict(stack):
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    status, first = await new_token(stack, tenant["token"], screen["id"])
    assert status == 201, first
    status, second = await new_token(stack, tenant["token"], screen["id"])
    assert status == 201, second
    assert first["token"] != second["token"]
    status, registered = await provision(stack, first["token"])
    assert status == 201, registered
    status, body = await provision(stack, second["token"])
    assert_error(status, body, 409, "conflict")
    status, devices, _ = await stack.call(
        "GET", f"/v1/devices?screenId={screen['id']}", token=tenant["token"]
    )
    assert [d["id"] for d in devices["items"]] == [registered["deviceId"]], devices


async def test_an_expired_token_is_gone(stack):
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    status, created = await new_token(stack, tenant["token"], screen["id"], ttlSeconds=60)
    assert status == 201, created
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        updated = await conn.execute(
            "UPDATE provisioning.provisioning_tokens SET expires_at = now() - interval '1 second'"
            " WHERE screen_id = $1::uuid",
            screen["id"],
        )
    finally:
        await conn.close()
    assert updated == "UPDATE 1", updated
    status, body = await provision(stack, created["token"])
    assert_error(status, body, 410, "code_expired")
    status, devices, _ = await stack.call(
        "GET", f"/v1/devices?screenId={screen['id']}", token=tenant["token"]
    )
    assert devices["items"] == [], devices


# =================================================================================================
# Device logout
# =================================================================================================


async def test_a_device_logs_itself_out_its_key_dies_and_the_screen_returns_to_provisioning(stack):
    tenant = await stack.tenant()
    token = tenant["token"]
    screen, registered = await pair(stack, token)
    key, device_id = registered["apiKey"], registered["deviceId"]
    await until_gateway(stack, key, 200)
    await until_screen(stack, token, screen["id"], "active")

    status, body, _ = await stack.call("POST", "/v1/device/logout", token=key)
    assert status == 200, body
    assert set(body) == {"id", "status", "screenId", "revokedAt", "reason"}, body
    assert (body["id"], body["status"], body["screenId"], body["reason"]) == (
        device_id,
        "suspended",
        screen["id"],
        "device_logout",
    ), body
    assert abs(parse_time(body["revokedAt"]) - datetime.now(UTC)) < timedelta(seconds=30), body

    await until_gateway(stack, key, 401, "device_revoked")
    status, again, _ = await stack.call("POST", "/v1/device/logout", token=key)
    assert_error(status, again, 401, "device_revoked")

    suspended = await device(stack, token, device_id)
    assert (suspended["status"], suspended["revokeReason"]) == ("suspended", "device_logout"), suspended
    back = await until_screen(stack, token, screen["id"], "provisioning")
    assert back["deviceId"] is None, back
    code = await stack.code(token, screen["id"])
    status, paired = await stack.register(code["code"])
    assert status == 201 and paired["deviceId"] != device_id, paired


async def test_logout_needs_a_known_device_key(stack):
    tenant = await stack.tenant()
    _, registered = await pair(stack, tenant["token"])
    for credential in (None, tenant["token"], UNKNOWN_KEY, "dak_"):
        status, body, _ = await stack.call("POST", "/v1/device/logout", token=credential)
        assert_error(status, body, 401, "unauthorized")
    # None of them touched the device.
    assert (await device(stack, tenant["token"], registered["deviceId"]))["status"] == "active"
    await until_gateway(stack, registered["apiKey"], 200)


# =================================================================================================
# Audit trail
# =================================================================================================


async def test_the_audit_trail_of_a_code_bind_and_an_admin_revoke(stack):
    tenant = await stack.tenant()
    token = tenant["token"]
    screen, registered = await pair(stack, token)
    device_id = registered["deviceId"]

    entries = await audit(stack, token, device_id)
    assert len(entries) == 1, entries
    assert {k: v for k, v in entries[0].items() if k not in ("id", "at")} == {
        "deviceId": device_id,
        "screenId": screen["id"],
        "action": "bound",
        "method": "code",
        "actor": "device",
        "clientAddress": "127.0.0.1",
        "reason": None,
    }, entries

    status, body, _ = await stack.call(
        "POST", f"/v1/devices/{device_id}/revoke", token=token, json={"reason": "Replaced hardware"}
    )
    assert status == 200, body
    entries = await audit(stack, token, device_id)
    assert len(entries) == 2, entries
    assert {k: v for k, v in entries[1].items() if k not in ("id", "at")} == {
        "deviceId": device_id,
        "screenId": screen["id"],
        "action": "unbound",
        "method": "revoke",
        "actor": f"client:{tenant['client']['clientId']}",
        "clientAddress": "127.0.0.1",
        "reason": "Replaced hardware",
    }, entries
    assert (
        parse_time(entries[0]["at"]) <= parse_time(entries[1]["at"]) and entries[0]["id"] < entries[1]["id"]
    ), entries


async def test_the_audit_trail_of_a_logout(stack):
    tenant = await stack.tenant()
    screen, registered = await pair(stack, tenant["token"])
    status, body, _ = await stack.call("POST", "/v1/device/logout", token=registered["apiKey"])
    assert status == 200, body
    entries = await audit(stack, tenant["token"], registered["deviceId"])
    assert summary(entries) == [
        ("bound", "code", "device"),
        ("unbound", "logout", f"device:{registered['deviceId']}"),
    ], entries
    assert (entries[1]["reason"], entries[1]["screenId"], entries[1]["clientAddress"]) == (
        "device_logout",
        screen["id"],
        "127.0.0.1",
    ), entries


async def test_the_audit_trail_is_only_the_tenants_own(stack):
    owner = await stack.tenant("Owner")
    other = await stack.tenant("Other")
    _, registered = await pair(stack, owner["token"])
    path = f"/v1/devices/{registered['deviceId']}/audit"

    status, body, _ = await stack.call("GET", path, token=other["token"])
    assert_error(status, body, 404, "not_found")
    status, body, _ = await stack.call("GET", f"/v1/devices/{new_id()}/audit", token=owner["token"])
    assert_error(status, body, 404, "not_found")
    status, body, _ = await stack.call("GET", path)
    assert_error(status, body, 401, "unauthorized")
    status, body, _ = await stack.call("GET", path, token=registered["apiKey"])
    assert_error(status, body, 401, "unauthorized")
    # The owner still sees it.
    assert len(await audit(stack, owner["token"], registered["deviceId"])) == 1

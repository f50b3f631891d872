"""Provisioning tokens: an admin's single-use token for a screen, with which a TV provisions
itself (POST /devices/provision) without a code shown on it."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tests.binding import (
    DEFAULT_CONFIG,
    KEY,
    RECOVERY_SECRET,
    assert_error,
    audit,
    device,
    gateway,
    pair,
    parse_time,
    recover,
    summary,
    until_gateway,
    until_screen,
)
from tests.stack import DEVICE_INFO, Stack, new_id

PROVISIONING_TOKEN = re.compile(r"^dpt_[A-Za-z0-9_-]{43}$")
# Well-formed, but never issued.
UNKNOWN_TOKEN = "dpt_" + "A" * 43


async def new_token(stack: Stack, token: str, screen_id: str, **extra: Any) -> tuple[int, Any]:
    status, body, _ = await stack.call(
        "POST", "/v1/devices/provisioning-tokens", token=token, json={"screenId": screen_id, **extra}
    )
    return status, body


async def provision(stack: Stack, provisioning_token: Any, **device_info: Any) -> tuple[int, Any]:
    status, body, _ = await stack.call(
        "POST",
        "/devices/provision",
        json={"provisioningToken": provisioning_token, "deviceInfo": {**DEVICE_INFO, **device_info}},
    )
    return status, body


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
    assert summary(entries) == [("bound", "provisioning_token", f"device:{registered['deviceId']}")], entries
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

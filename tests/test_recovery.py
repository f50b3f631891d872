"""Factory-reset recovery: a TV that reported a hardware id gets a recovery secret at binding, and
after a reset it gets its device back with a new key, as long as the device was not revoked."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from services.provisioning import queries
from services.provisioning.models import DeviceInfo
from shared.db import create_pool
from shared.errors import Conflict
from shared.projections import device_key_digest
from tests.binding import (
    DEFAULT_CONFIG,
    KEY,
    RECOVERY_SECRET,
    assert_error,
    audit,
    device,
    gateway,
    pair,
    recover,
    summary,
    until_gateway,
    until_screen,
)
from tests.stack import Stack

# Well-formed, but never issued.
UNKNOWN_SECRET = "drs_" + "A" * 43


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
    assert set(recovered) == {"deviceId", "screenId", "apiKey", "tenantId", "config", "recoverySecret"}, (
        recovered
    )
    assert RECOVERY_SECRET.match(recovered["recoverySecret"]), recovered
    assert recovered["recoverySecret"] != registered["recoverySecret"], recovered
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
    me = f"device:{registered['deviceId']}"
    assert summary(entries) == [("bound", "code", me), ("recovered", "recovery", me)], entries
    assert entries[1]["clientAddress"] == "127.0.0.1" and entries[1]["reason"] is None, entries


async def test_each_recovery_rotates_the_secret_and_a_replay_of_the_old_one_kills_nothing(stack):
    tenant = await stack.tenant()
    _, registered = await pair(stack, tenant["token"], hardwareId="SN-55-0042")
    status, recovered, _ = await recover(stack, "SN-55-0042", registered["recoverySecret"])
    assert status == 200, recovered
    await until_gateway(stack, recovered["apiKey"], 200)

    # Whoever copied the first secret off the TV replays it: refused, and the TV keeps its new key.
    status, body, _ = await recover(stack, "SN-55-0042", registered["recoverySecret"])
    assert_error(status, body, 401, "unauthorized")
    await until_gateway(stack, recovered["apiKey"], 200)
    entries = await audit(stack, tenant["token"], registered["deviceId"])
    me = f"device:{registered['deviceId']}"
    assert summary(entries) == [("bound", "code", me), ("recovered", "recovery", me)], entries

    # The new secret works, once more rotating.
    status, again, _ = await recover(stack, "SN-55-0042", recovered["recoverySecret"])
    assert status == 200 and again["recoverySecret"] not in (
        recovered["recoverySecret"],
        registered["recoverySecret"],
    ), again
    await until_gateway(stack, again["apiKey"], 200)
    status, body, _ = await recover(stack, "SN-55-0042", recovered["recoverySecret"])
    assert_error(status, body, 401, "unauthorized")


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
        assert summary(entries) == [("bound", "code", f"device:{registered['deviceId']}")], entries


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


async def test_failed_recoveries_count_toward_the_address_recovery_budget_only(settings, sockets):
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

        # Even the right secret waits; the device's key is untouched.
        status, body, _ = await recover(stack, "SN-55-0042", registered["recoverySecret"])
        assert_error(status, body, 429, "rate_limited")
        await until_gateway(stack, registered["apiKey"], 200)
        # A recovery secret is no guessable code: spending its budget leaves the pairing codes'
        # budget of the same address whole.
        screen = await stack.screen(tenant["token"], "Bar")
        code = await stack.code(tenant["token"], screen["id"])
        status, body = await stack.register(code["code"])
        assert status == 201, body


async def test_a_bind_never_takes_over_another_device_by_its_id(stack: Stack) -> None:
    """The one statement that binds also brings a suspended device of this hardware back on its own
    screen (``ON CONFLICT (id)``); it must refuse any other holder of the id: an active device,
    or one of another screen."""
    tenant = await stack.tenant()
    screen, registered = await pair(stack, tenant["token"], hardwareId="SN-55-0777")
    other_screen = await stack.screen(tenant["token"])
    device_id, tenant_id = uuid.UUID(registered["deviceId"]), uuid.UUID(tenant["id"])
    info = DeviceInfo(
        manufacturer="Sony",
        model="X",
        os_version="12",
        app_version="1",
        mac_address="00:11:22:33:44:55",
        ip_address="10.0.0.1",
    )
    pool = await create_pool(stack.settings.database_url, "provisioning", min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            for screen_id in (screen["id"], other_screen["id"]):  # its own screen's (active); another
                with pytest.raises(Conflict):
                    async with conn.transaction():
                        await queries.binding.bind_device(
                            conn,
                            device_id,
                            tenant_id=tenant_id,
                            screen_id=uuid.UUID(screen_id),
                            key_hash=device_key_digest("dak_taken_over"),
                            device_info=info,
                            recovery_secret_hash=None,
                            method="claim",
                            actor="test",
                            client_address=None,
                        )
            row = await conn.fetchrow("SELECT screen_id, status FROM devices WHERE id = $1", device_id)
            keys = await conn.fetchval("SELECT count(*) FROM device_keys WHERE device_id = $1", device_id)
    finally:
        await pool.close()
    assert row is not None and (str(row["screen_id"]), row["status"], keys) == (screen["id"], "active", 1)

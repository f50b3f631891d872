"""A device's own logout (POST /v1/device/logout): its key dies and its screen returns to
provisioning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.binding import assert_error, device, pair, parse_time, until_gateway, until_screen

# Well-formed, but never issued.
UNKNOWN_KEY = "dak_" + "A" * 43


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

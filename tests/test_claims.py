"""Pre-provisioned devices (made ahead by the operator) claimed onto screens through claim mode."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tests.stack import DEVICE_INFO, Stack


async def factory_devices(stack: Stack, count: int = 1) -> list[dict[str, Any]]:
    status, made, _ = await stack.call(
        "POST", "/v1/devices/pre-provisioned", token=stack.settings.operator_token, json={"count": count}
    )
    assert status == 201 and len(made["items"]) == count, made
    return made["items"]


async def claim_mode(stack: Stack, key: str, device_id: str, **body: Any) -> tuple[int, Any]:
    status, answer, _ = await stack.call(
        "POST",
        "/v1/device/claim-mode",
        token=key,
        json={"deviceId": device_id, "deviceInfo": DEVICE_INFO, **body},
    )
    return status, answer


async def test_a_device_made_ahead_is_claimed_onto_a_screen_and_works_with_its_flashed_key(stack):
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    (device,) = await factory_devices(stack)
    assert device["apiKey"].startswith("dak_")
    # Before it is claimed, no gateway knows the key.
    status, body, _ = await stack.call("GET", "/v1/device/playlist", token=device["apiKey"])
    assert status == 401, body

    status, mode = await claim_mode(stack, device["apiKey"], device["deviceId"], durationSeconds=120)
    assert status == 200, mode
    expires = datetime.fromisoformat(mode["claimExpirationTime"])
    assert timedelta(seconds=100) < expires - datetime.now(UTC) <= timedelta(seconds=121)

    status, claimed, _ = await stack.call(
        "POST",
        "/v1/devices/claims",
        token=tenant["token"],
        json={"claimCode": mode["claimCode"], "screenId": screen["id"]},
    )
    assert status == 201, claimed
    assert (claimed["id"], claimed["screenId"], claimed["status"]) == (
        device["deviceId"],
        screen["id"],
        "active",
    )
    assert claimed["deviceInfo"]["model"] == DEVICE_INFO["model"]

    async def serves_it() -> bool:
        return (await stack.call("GET", "/v1/device/playlist", token=device["apiKey"]))[0] == 200

    await stack.eventually(serves_it)

    async def screen_active() -> bool:
        return (await stack.call("GET", f"/v1/screens/{screen['id']}", token=tenant["token"]))[1][
            "state"
        ] == "active"

    await stack.eventually(screen_active)
    status, trail, _ = await stack.call(
        "GET", f"/v1/devices/{device['deviceId']}/audit", token=tenant["token"]
    )
    assert [(e["action"], e["method"], e["actor"]) for e in trail["items"]] == [
        ("bound", "claim", f"client:{tenant['client']['clientId']}")
    ]
    # Claimed once: the code is spent, claim mode is over for it.
    status, body, _ = await stack.call(
        "POST",
        "/v1/devices/claims",
        token=tenant["token"],
        json={
            "claimCode": mode["claimCode"],
            "screenId": (await stack.screen(tenant["token"], "Other"))["id"],
        },
    )
    assert status == 404, body
    status, body = await claim_mode(stack, device["apiKey"], device["deviceId"])
    assert status == 409, body


async def test_claim_mode_is_for_the_device_itself_only(stack):
    mine, theirs = await factory_devices(stack, 2)
    status, body = await claim_mode(stack, mine["apiKey"], theirs["deviceId"])
    assert status == 403, body
    assert (body["error"], body["reason"]) == ("forbidden", "MATCHING_DEVICE_ONLY"), body
    status, body = await claim_mode(stack, "dak_" + "x" * 43, mine["deviceId"])
    assert status == 401 and body["error"] == "unauthorized", body
    for seconds in (29, 901):
        status, body = await claim_mode(stack, mine["apiKey"], mine["deviceId"], durationSeconds=seconds)
        assert status == 400 and body["details"][0]["field"] == "durationSeconds", body
    status, body = await claim_mode(stack, mine["apiKey"], mine["deviceId"], deviceInfo={"model": "x"})
    assert status == 400, body


async def test_only_the_operator_makes_devices_ahead(stack):
    tenant = await stack.tenant()
    status, body, _ = await stack.call(
        "POST", "/v1/devices/pre-provisioned", token=tenant["token"], json={"count": 1}
    )
    assert status == 401, body
    for count in (0, 1001, "5"):
        status, body, _ = await stack.call(
            "POST", "/v1/devices/pre-provisioned", token=stack.settings.operator_token, json={"count": count}
        )
        assert status == 400 and body["details"][0]["field"] == "count", body


async def test_a_claim_needs_a_live_code_and_a_free_screen_of_ones_own(stack):
    tenant, other = await stack.tenant(), await stack.tenant("Other Co")
    taken, _ = await stack.paired_device(tenant["token"])
    free = await stack.screen(tenant["token"], "Free")
    theirs = await stack.screen(other["token"])
    (device,) = await factory_devices(stack)
    _, mode = await claim_mode(stack, device["apiKey"], device["deviceId"])

    async def claim(screen_id: str, code: str = mode["claimCode"]) -> tuple[int, Any]:
        status, body, _ = await stack.call(
            "POST",
            "/v1/devices/claims",
            token=tenant["token"],
            json={"claimCode": code, "screenId": screen_id},
        )
        return status, body

    assert (await claim(taken["id"]))[0] == 409
    assert (await claim(theirs["id"]))[0] == 404
    assert (await claim(free["id"], "ZZZZZZZZ"))[0] == 404
    status, body = await claim(free["id"], "short")
    assert status == 400 and body["details"][0]["field"] == "claimCode", body
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        await conn.execute(
            "UPDATE provisioning.factory_devices SET claim_expires_at = now() - interval '1 s'"
        )
    finally:
        await conn.close()
    assert (await claim(free["id"]))[0] == 404  # claim mode is over


async def test_two_admins_claiming_one_device_at_once_bind_it_once(stack):
    tenant = await stack.tenant()
    screens = [await stack.screen(tenant["token"], f"S{i}") for i in range(4)]
    (device,) = await factory_devices(stack)
    _, mode = await claim_mode(stack, device["apiKey"], device["deviceId"])
    results = await asyncio.gather(
        *(
            stack.call(
                "POST",
                "/v1/devices/claims",
                token=tenant["token"],
                json={"claimCode": mode["claimCode"], "screenId": screen["id"]},
            )
            for screen in screens
        )
    )
    assert sorted(status for status, _, _ in results) == [201, 404, 404, 404], [r[:2] for r in results]

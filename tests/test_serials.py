"""Serial numbers registered ahead: assigned to tenants by the operator, mapped by each tenant to
its screens, enabled for a window, activated once by their device."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import msgspec

from services.provisioning.serials import NOT_ACTIVATABLE
from shared import bus
from shared.bus_access import SETUP_USER
from tests.stack import DEVICE_INFO, Stack


async def assign(stack: Stack, rows: list[tuple[str, str]], *, move: bool = False) -> tuple[int, Any]:
    """The operator assigns each serial to a tenant."""
    body = {"serials": [{"serial": serial, "tenantId": tenant} for serial, tenant in rows]}
    path = "/v1/serials?move=true" if move else "/v1/serials"
    status, answer, _ = await stack.call("POST", path, token=stack.settings.operator_token, json=body)
    return status, answer


async def assigned(stack: Stack, tenant: dict[str, Any], *serials: str) -> None:
    status, body = await assign(stack, [(serial, tenant["id"]) for serial in serials])
    assert status == 200, body


async def upload(stack: Stack, token: str, rows: list[tuple[str, str]]) -> tuple[int, Any]:
    body = {"serials": [{"serial": serial, "screenId": screen} for serial, screen in rows]}
    status, answer, _ = await stack.call("POST", "/v1/devices/serials", token=token, json=body)
    return status, answer


async def activate(stack: Stack, serial: str) -> tuple[int, Any]:
    status, body, _ = await stack.call(
        "POST", "/devices/activate", json={"serial": serial, "deviceInfo": DEVICE_INFO}
    )
    return status, body


async def enable(stack: Stack, token: str, serial: str, **body: Any) -> tuple[int, Any]:
    status, answer, _ = await stack.call(
        "POST", f"/v1/devices/serials/{serial}/enable", token=token, json=body
    )
    return status, answer


async def test_uploads_are_idempotent_in_json_and_csv(stack):
    tenant = await stack.tenant()
    lobby, bar = await stack.screen(tenant["token"]), await stack.screen(tenant["token"], "Bar")
    await assigned(stack, tenant, "SN-0001", "SN-0002", "SN-0003")
    rows = [("SN-0001", lobby["id"]), ("SN-0002", bar["id"])]
    assert await upload(stack, tenant["token"], rows) == (200, {"created": 2, "updated": 0, "unchanged": 0})
    assert await upload(stack, tenant["token"], rows) == (200, {"created": 0, "updated": 0, "unchanged": 2})
    assert await upload(stack, tenant["token"], [("SN-0002", lobby["id"])]) == (
        200,
        {"created": 0, "updated": 1, "unchanged": 0},
    )
    csv_body = f"serial,screenId\nSN-0003,{bar['id']}\n\nSN-0001,{lobby['id']}\n"
    status, body, _ = await stack.call(
        "POST",
        "/v1/devices/serials",
        token=tenant["token"],
        data=csv_body,
        headers={"Content-Type": "text/csv"},
    )
    assert (status, body) == (200, {"created": 1, "updated": 0, "unchanged": 1}), body
    await assigned(stack, tenant, "SN-0004")  # assigned, not mapped: the tenant sees it waiting
    status, page, _ = await stack.call("GET", "/v1/devices/serials?limit=2", token=tenant["token"])
    assert status == 200 and [s["serial"] for s in page["items"]] == ["SN-0001", "SN-0002"], page
    assert {s["status"] for s in page["items"]} == {"registered"}
    status, rest, _ = await stack.call(
        "GET", f"/v1/devices/serials?limit=2&cursor={page['nextCursor']}", token=tenant["token"]
    )
    assert [(s["serial"], s["status"]) for s in rest["items"]] == [
        ("SN-0003", "registered"),
        ("SN-0004", "assigned"),
    ], rest
    status, waiting, _ = await stack.call("GET", "/v1/devices/serials?status=assigned", token=tenant["token"])
    assert [(s["serial"], s["screenId"]) for s in waiting["items"]] == [("SN-0004", None)], waiting
    status, body = await enable(stack, tenant["token"], "SN-0004")
    assert status == 409 and "not mapped" in body["message"], body


async def test_a_device_activates_once_inside_its_window_and_a_second_try_raises_an_alert(stack):
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    await assigned(stack, tenant, "SN-0100")
    await upload(stack, tenant["token"], [("SN-0100", screen["id"])])
    status, body = await activate(stack, "SN-0100")
    assert status == 404 and body["message"] == NOT_ACTIVATABLE, body
    status, enabled = await enable(stack, tenant["token"], "SN-0100", windowMinutes=30)
    assert status == 200 and enabled["status"] == "enabled", enabled

    status, registered = await activate(stack, "SN-0100")
    assert (
        status == 201 and registered["apiKey"].startswith("dak_") and registered["screenId"] == screen["id"]
    ), registered

    async def serves_it() -> bool:
        return (await stack.call("GET", "/v1/device/playlist", token=registered["apiKey"]))[0] == 200

    await stack.eventually(serves_it)
    status, page, _ = await stack.call("GET", "/v1/devices/serials?status=activated", token=tenant["token"])
    assert [(s["serial"], s["deviceId"]) for s in page["items"]] == [("SN-0100", registered["deviceId"])]
    status, trail, _ = await stack.call(
        "GET", f"/v1/devices/{registered['deviceId']}/audit", token=tenant["token"]
    )
    assert [(e["method"], e["actor"]) for e in trail["items"]] == [
        ("serial", f"device:{registered['deviceId']}")
    ]

    nc = await bus.connect(stack.settings, SETUP_USER)
    try:
        alerts = await nc.jetstream().subscribe("provisioning.alert.>", stream="EVENTS")
        status, body = await activate(stack, "SN-0100")
        assert status == 409 and "activated already" in body["message"], body
        alert = msgspec.json.decode((await alerts.next_msg(timeout=5)).data)
        assert alert["type"] == "provisioning.alert.activation_repeated"
        assert (alert["serial"], alert["tenantId"], alert["deviceId"]) == (
            "SN-0100",
            tenant["id"],
            registered["deviceId"],
        )
        assert alert["clientAddress"] == "127.0.0.1"
    finally:
        await nc.close()
    status, body = await enable(stack, tenant["token"], "SN-0100")
    assert status == 409, body


async def test_a_closed_window_must_be_opened_again(stack):
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    await assigned(stack, tenant, "SN-0200")
    await upload(stack, tenant["token"], [("SN-0200", screen["id"])])
    await enable(stack, tenant["token"], "SN-0200")
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        await conn.execute("UPDATE provisioning.serials SET enabled_until = now() - interval '1 s'")
    finally:
        await conn.close()
    status, body = await activate(stack, "SN-0200")
    assert status == 404 and body["message"] == NOT_ACTIVATABLE, body
    assert (await enable(stack, tenant["token"], "SN-0200"))[0] == 200
    assert (await activate(stack, "SN-0200"))[0] == 201


async def test_bad_uploads_and_other_tenants_serials_are_refused(stack):
    tenant, other = await stack.tenant(), await stack.tenant("Other Co")
    mine, theirs = await stack.screen(tenant["token"]), await stack.screen(other["token"])
    await assigned(stack, other, "SN-0300")
    await assigned(stack, tenant, "SN-0301", "SN-0302", "SN-0305", "SN-0306")
    await upload(stack, other["token"], [("SN-0300", theirs["id"])])
    status, body = await upload(stack, tenant["token"], [("SN-0301", mine["id"]), ("SN-0300", mine["id"])])
    assert status == 404 and body["details"] == [{"field": "serials[1].serial", "problem": "unknown"}], body
    status, body = await upload(stack, tenant["token"], [("SN-0302", theirs["id"])])
    assert status == 404, body
    status, body = await upload(stack, tenant["token"], [("SN 0303", mine["id"]), ("SN-0304", "nope")])
    assert status == 400 and {d["field"] for d in body["details"]} == {
        "serials[0].serial",
        "serials[1].screenId",
    }, body
    status, body = await upload(stack, tenant["token"], [("SN-0305", mine["id"]), ("SN-0305", mine["id"])])
    assert status == 400, body
    status, body = await upload(stack, tenant["token"], [])
    assert status == 400, body
    status, body, _ = await stack.call(
        "POST",
        "/v1/devices/serials",
        token=tenant["token"],
        data="SN-0306,not-a-uuid\n",
        headers={"Content-Type": "text/csv"},
    )
    assert status == 400 and body["details"][0]["field"] == "serials[0].screenId", body
    # Nothing of the refused uploads was stored: the tenant's serials are mapped to no screen.
    status, page, _ = await stack.call("GET", "/v1/devices/serials", token=tenant["token"])
    assert [(s["serial"], s["screenId"]) for s in page["items"]] == [
        (serial, None) for serial in ("SN-0301", "SN-0302", "SN-0305", "SN-0306")
    ], page
    assert (await enable(stack, tenant["token"], "SN-0300"))[0] == 404  # theirs
    assert (await activate(stack, "SN-9999"))[0] == 404
    status, body = await enable(stack, tenant["token"], "SN-0300", windowMinutes=0)
    assert status == 400, body


async def test_concurrent_activations_of_one_serial_bind_exactly_one_device(stack):
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    await assigned(stack, tenant, "SN-0400")
    await upload(stack, tenant["token"], [("SN-0400", screen["id"])])
    await enable(stack, tenant["token"], "SN-0400")
    results = await asyncio.gather(*(activate(stack, "SN-0400") for _ in range(8)))
    assert sorted(status for status, _ in results) == [201] + [409] * 7, results

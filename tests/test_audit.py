"""The audit trails a tenant reads: its admin changes (GET /v1/audit), the binds and unbinds of its
devices (GET /v1/devices/audit), each with who, how and from where, and only its own."""

from __future__ import annotations

from tests.admin_api import CONFIG_PATCH, PLAYLIST
from tests.stack import Stack


async def test_admin_changes_are_listed_per_tenant_with_who_what_and_from_where(stack: Stack) -> None:
    tenant, other = await stack.tenant(), await stack.tenant("Other Co")
    token = tenant["token"]
    screen = await stack.screen(token)
    await stack.call("PUT", f"/v1/screens/{screen['id']}/playlist", token=token, json=PLAYLIST)
    await stack.call("PATCH", f"/v1/screens/{screen['id']}/config", token=token, json=CONFIG_PATCH)
    status, page, _ = await stack.call("GET", "/v1/audit?limit=3", token=token)
    assert status == 200, page
    me = f"client:{tenant['client']['clientId']}"
    assert [(e["action"], e["actor"], e["resourceId"]) for e in page["items"]] == [
        ("config.changed", me, screen["id"]),
        ("playlist.replaced", me, screen["id"]),
        ("screen.created", me, screen["id"]),
    ]
    assert {e["clientAddress"] for e in page["items"]} == {"127.0.0.1"}
    status, rest, _ = await stack.call("GET", f"/v1/audit?before={page['nextBefore']}", token=token)
    assert [(e["action"], e["actor"]) for e in rest["items"]] == [
        ("venue.created", me),
        ("tenant.created", "operator"),
    ] and rest["nextBefore"] is None, rest
    status, theirs, _ = await stack.call("GET", "/v1/audit", token=other["token"])
    assert [e["action"] for e in theirs["items"]] == ["tenant.created"], theirs
    status, body, _ = await stack.call("GET", "/v1/audit?before=abc", token=token)
    assert status == 400 and body["details"][0]["field"] == "before", body


async def test_binds_and_revokes_are_listed_per_tenant_with_who_how_and_from_where(stack: Stack) -> None:
    tenant, other = await stack.tenant(), await stack.tenant("Other Co")
    token = tenant["token"]
    first_screen, first = await stack.paired_device(token)
    second_screen, second = await stack.paired_device(token)
    await stack.paired_device(other["token"])
    status, body, _ = await stack.call(
        "POST", f"/v1/devices/{first['deviceId']}/revoke", token=token, json={"reason": "stolen"}
    )
    assert status == 200, body
    status, page, _ = await stack.call("GET", "/v1/devices/audit?limit=2", token=token)
    assert status == 200, page
    me = f"client:{tenant['client']['clientId']}"
    assert [(e["action"], e["method"], e["actor"], e["deviceId"], e["reason"]) for e in page["items"]] == [
        ("unbound", "revoke", me, first["deviceId"], "stolen"),
        ("bound", "code", "device", second["deviceId"], None),
    ]
    assert page["items"][1]["screenId"] == second_screen["id"]
    assert {e["clientAddress"] for e in page["items"]} == {"127.0.0.1"}
    status, rest, _ = await stack.call("GET", f"/v1/devices/audit?before={page['nextBefore']}", token=token)
    assert [(e["action"], e["deviceId"], e["screenId"]) for e in rest["items"]] == [
        ("bound", first["deviceId"], first_screen["id"]),
    ] and rest["nextBefore"] is None, rest
    status, theirs, _ = await stack.call("GET", "/v1/devices/audit", token=other["token"])
    assert [e["action"] for e in theirs["items"]] == ["bound"] and theirs["items"][0]["deviceId"] not in (
        first["deviceId"],
        second["deviceId"],
    ), theirs
    status, body, _ = await stack.call("GET", "/v1/devices/audit?before=-1", token=token)
    assert status == 400 and body["details"][0]["field"] == "before", body

"""The audit trails a tenant reads: its admin changes (GET /v1/audit), the binds and unbinds of its
devices (GET /v1/devices/audit) and of one device (GET /v1/devices/{id}/audit), each with who, how
and from where, and only its own."""

from __future__ import annotations

import hashlib

from tests.admin_api import CONFIG_PATCH, PLAYLIST
from tests.binding import assert_error, audit, pair, parse_time, summary
from tests.stack import Stack, new_id


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
    for before in ("abc", "\u00b2", "1" * 19):  # "²" passes str.isdigit, not int()
        status, body, _ = await stack.call("GET", "/v1/audit", params={"before": before}, token=token)
        assert status == 400 and body["details"][0]["field"] == "before", body


async def test_an_initial_access_token_is_named_by_its_id_never_by_itself(stack: Stack) -> None:
    """Its id is the digest it is stored under: the trail can say which token was issued (and an
    operator can find its row) without holding the secret."""
    tenant = await stack.tenant()
    status, issued, _ = await stack.call(
        "POST", "/v1/clients/initial-access-tokens", token=tenant["token"], json={}
    )
    assert status == 201, issued
    status, page, _ = await stack.call("GET", "/v1/audit?limit=1", token=tenant["token"])
    assert status == 200, page
    [entry] = page["items"]
    assert (entry["action"], entry["actor"]) == (
        "initial_access_token.issued",
        f"client:{tenant['client']['clientId']}",
    ), entry
    assert entry["resourceId"] == hashlib.sha256(issued["token"].encode()).hexdigest(), entry
    assert issued["token"] not in str(page), page


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
        ("bound", "code", f"device:{second['deviceId']}", second["deviceId"], None),
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
        "actor": f"device:{device_id}",
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
    # One form for the device, however it proved itself: its code then, its key now.
    me = f"device:{registered['deviceId']}"
    assert summary(entries) == [("bound", "code", me), ("unbound", "logout", me)], entries
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

"""Serials are assigned, not claimed: only the operator gives a serial to a tenant, a tenant maps
only its own, and a device learns nothing of serials it may not activate."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import asyncpg

from tests.stack import Stack
from tests.test_serials import activate, assign, assigned, enable, upload


async def assign_csv(stack: Stack, text: str, *, token: str | None = None) -> tuple[int, Any]:
    status, body, _ = await stack.call(
        "POST",
        "/v1/serials",
        token=stack.settings.operator_token if token is None else token,
        data=text,
        headers={"Content-Type": "text/csv"},
    )
    return status, body


async def test_the_operator_assigns_in_json_and_csv_idempotently_and_moves_only_when_told(stack):
    a, b = await stack.tenant(), await stack.tenant("Other Co")
    rows = [("SN-A1", a["id"]), ("SN-A2", a["id"])]
    assert await assign(stack, rows) == (200, {"assigned": 2, "moved": 0, "unchanged": 0})
    assert await assign(stack, rows) == (200, {"assigned": 0, "moved": 0, "unchanged": 2})
    csv_body = f"serial,tenantId\nSN-B1,{b['id']}\n\nSN-A1,{a['id']}\n"
    assert await assign_csv(stack, csv_body) == (200, {"assigned": 1, "moved": 0, "unchanged": 1})
    assert await assign_csv(stack, f"SN-B2,{b['id']}\n") == (200, {"assigned": 1, "moved": 0, "unchanged": 0})

    # A serial of A's named for B: refused as a whole batch without move, nothing assigned.
    status, body = await assign(stack, [("SN-B3", b["id"]), ("SN-A2", b["id"])])
    assert status == 409 and body["details"] == [
        {"field": "serials[1].serial", "problem": "assigned_elsewhere"}
    ], body
    status, page, _ = await stack.call("GET", "/v1/devices/serials", token=b["token"])
    assert [s["serial"] for s in page["items"]] == ["SN-B1", "SN-B2"], page

    # Moved with move=true: its screen and window stay behind with A.
    screen = await stack.screen(a["token"])
    assert (await upload(stack, a["token"], [("SN-A2", screen["id"])]))[0] == 200
    assert (await enable(stack, a["token"], "SN-A2"))[0] == 200
    assert await assign(stack, [("SN-A2", b["id"])], move=True) == (
        200,
        {"assigned": 0, "moved": 1, "unchanged": 0},
    )
    status, page, _ = await stack.call("GET", "/v1/devices/serials", token=a["token"])
    assert [s["serial"] for s in page["items"]] == ["SN-A1"], page
    status, page, _ = await stack.call("GET", "/v1/devices/serials?status=assigned", token=b["token"])
    assert "SN-A2" in [s["serial"] for s in page["items"]], page
    assert (await activate(stack, "SN-A2"))[0] == 404  # A's window died with the move

    # An activated serial never moves: its device is bound in its tenant.
    assert (await upload(stack, a["token"], [("SN-A1", screen["id"])]))[0] == 200
    await enable(stack, a["token"], "SN-A1")
    assert (await activate(stack, "SN-A1"))[0] == 201
    status, body = await assign(stack, [("SN-A1", b["id"])], move=True)
    assert status == 409 and body["details"] == [{"field": "serials[0].serial", "problem": "activated"}], body

    bad: dict[str, Any]
    for bad in (
        {"serials": []},
        {"serials": [{"serial": "SN 1", "tenantId": a["id"]}]},
        {"serials": [{"serial": "SN-1", "tenantId": "nope"}]},
        {"serials": [{"serial": "SN-1", "tenantId": a["id"]}] * 2},
        {"serials": [{"serial": f"SN-{i}", "tenantId": a["id"]} for i in range(10_001)]},
    ):
        status, body, _ = await stack.call(
            "POST", "/v1/serials", token=stack.settings.operator_token, json=bad
        )
        assert status == 400 and body["error"] == "invalid_request", body
    status, body = await assign_csv(stack, "SN-9,not-a-uuid\n")
    assert status == 400 and body["details"][0]["field"] == "serials[0].tenantId", body
    status, body, _ = await stack.call(
        "POST", "/v1/serials?move=maybe", token=stack.settings.operator_token, json={"serials": []}
    )
    assert status == 400 and body["details"] == [{"field": "move", "problem": "enum"}], body


async def test_only_the_operator_assigns_serials(stack):
    tenant = await stack.tenant()
    body = {"serials": [{"serial": "SN-OP1", "tenantId": tenant["id"]}]}
    status, answer, _ = await stack.call("POST", "/v1/serials", json=body)
    assert status == 401 and answer["error"] == "unauthorized", answer
    status, answer, _ = await stack.call("POST", "/v1/serials", token=tenant["token"], json=body)
    assert status == 401 and answer["error"] == "unauthorized", answer
    status, answer = await assign_csv(stack, f"SN-OP1,{tenant['id']}\n", token=tenant["token"])
    assert status == 401, answer
    # Nothing was assigned: the tenant cannot map it.
    screen = await stack.screen(tenant["token"])
    assert (await upload(stack, tenant["token"], [("SN-OP1", screen["id"])]))[0] == 404


async def test_another_tenant_cannot_take_a_tenants_serials_and_its_tv_activates_into_it(stack):
    a, b = await stack.tenant(), await stack.tenant("Squatter Co")
    mine, theirs = await stack.screen(a["token"]), await stack.screen(b["token"])
    await assigned(stack, a, "SN-V1", "SN-V2")
    # B goes first, as the squatter did: every serial of A's is unknown to it.
    status, body = await upload(stack, b["token"], [("SN-V1", theirs["id"]), ("SN-V2", theirs["id"])])
    assert (status, body["error"]) == (404, "not_found") and body["details"] == [
        {"field": "serials[0].serial", "problem": "unknown"},
        {"field": "serials[1].serial", "problem": "unknown"},
    ], body
    assert "SN-V1" in body["message"]
    assert (await enable(stack, b["token"], "SN-V1"))[0] == 404
    status, page, _ = await stack.call("GET", "/v1/devices/serials", token=b["token"])
    assert page["items"] == [], page

    assert await upload(stack, a["token"], [("SN-V1", mine["id"])]) == (
        200,
        {"created": 1, "updated": 0, "unchanged": 0},
    )
    assert (await upload(stack, b["token"], [("SN-V1", theirs["id"])]))[0] == 404  # after A too
    assert (await enable(stack, a["token"], "SN-V1"))[0] == 200
    status, registered = await activate(stack, "SN-V1")
    assert status == 201, registered
    assert (registered["tenantId"], registered["screenId"]) == (a["id"], mine["id"])


async def test_a_device_cannot_tell_unknown_serials_from_ones_it_may_not_activate(stack):
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    await assigned(stack, tenant, "SN-Q1", "SN-Q2", "SN-Q3")
    await upload(stack, tenant["token"], [("SN-Q2", screen["id"]), ("SN-Q3", screen["id"])])
    await enable(stack, tenant["token"], "SN-Q3")
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        await conn.execute(
            "UPDATE provisioning.serials SET enabled_until = now() - interval '1 s' WHERE serial = 'SN-Q3'"
        )
    finally:
        await conn.close()
    answers = {
        "unknown": await activate(stack, "SN-NOPE"),
        "assigned, not mapped": await activate(stack, "SN-Q1"),
        "mapped, not enabled": await activate(stack, "SN-Q2"),
        "window closed": await activate(stack, "SN-Q3"),
    }
    assert answers["unknown"][0] == 404, answers
    assert all(answer == answers["unknown"] for answer in answers.values()), answers


async def test_concurrent_assignments_moves_and_uploads_never_point_a_serial_at_another_tenants_screen(stack):
    a, b = await stack.tenant(), await stack.tenant("Other Co")
    a_screens = [(await stack.screen(a["token"], f"A{i}"))["id"] for i in range(3)]
    b_screens = [(await stack.screen(b["token"], f"B{i}"))["id"] for i in range(3)]
    a_own = [f"SN-CA-{i:04d}" for i in range(300)]
    b_own = [f"SN-CB-{i:04d}" for i in range(300)]
    contested = [f"SN-CX-{i:04d}" for i in range(100)]  # the operator moves these back and forth
    await assigned(stack, a, *a_own, *contested)
    await assigned(stack, b, *b_own)
    rng = random.Random(14)
    statuses: list[int] = []

    async def tenant_uploads(token: str, own: list[str], screens: list[str], other: list[str]) -> None:
        for _ in range(6):
            batch = rng.sample(own, 100) + contested
            rows = [(serial, rng.choice(screens)) for serial in batch]
            statuses.append((await upload(stack, token, rows))[0])
            # The squatter's try: the other tenant's serials, for its own screens.
            statuses.append((await upload(stack, token, [(s, rng.choice(screens)) for s in other[:100]]))[0])

    async def operator_moves() -> None:
        for round_ in range(6):
            to = b if round_ % 2 == 0 else a
            status, body = await assign(stack, [(serial, to["id"]) for serial in contested], move=True)
            assert status == 200, body
            status, body = await assign(stack, [(serial, a["id"]) for serial in a_own[:50]])
            assert (status, body["unchanged"]) == (200, 50), body

    await asyncio.gather(
        *(tenant_uploads(a["token"], a_own, a_screens, b_own) for _ in range(3)),
        *(tenant_uploads(b["token"], b_own, b_screens, a_own) for _ in range(3)),
        operator_moves(),
    )
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        crossed = await conn.fetch(
            "SELECT s.serial, s.tenant_id, c.tenant_id AS screen_tenant FROM provisioning.serials s"
            " JOIN provisioning.screens c ON c.id = s.screen_id WHERE c.tenant_id <> s.tenant_id"
        )
        owners = {
            row["serial"]: row["tenant_id"]
            for row in await conn.fetch("SELECT serial, tenant_id::text FROM provisioning.serials")
        }
    finally:
        await conn.close()
    assert crossed == []
    assert {owners[serial] for serial in a_own} == {a["id"]}
    assert {owners[serial] for serial in b_own} == {b["id"]}
    assert set(statuses) <= {200, 404}, statuses
    assert statuses.count(404) >= 36  # every squatter's try at least

    # Whatever the race left, A's TV activates into A.
    for serial, screen in ((a_own[0], a_screens[0]), (contested[0], a_screens[1])):
        status, body = await assign(stack, [(serial, a["id"])], move=True)
        assert status == 200, body
        assert (await upload(stack, a["token"], [(serial, screen)]))[0] == 200
        assert (await enable(stack, a["token"], serial))[0] == 200
        status, registered = await activate(stack, serial)
        assert status == 201 and (registered["tenantId"], registered["screenId"]) == (a["id"], screen), (
            registered
        )

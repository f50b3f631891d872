"""The operator's own tools: the list of tenants, and a new admin client for a tenant that lost
its own, so no tenant is ever locked out of itself."""

from __future__ import annotations

import asyncpg

from tests.stack import Stack, new_id


async def operator(stack: Stack, method: str, path: str) -> tuple[int, dict, dict]:
    status, body, response = await stack.call(method, path, token=stack.settings.operator_token)
    return status, body, dict(response.headers)


async def test_the_operator_lists_tenants_page_by_page(stack):
    created = [await stack.tenant(f"Tenant {n}") for n in range(3)]
    seen: list[dict] = []
    cursor = None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page, _ = await operator(stack, "GET", f"/v1/tenants{query}")
        assert status == 200 and len(page["items"]) <= 2, page
        seen += page["items"]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert [t["id"] for t in seen] == [t["id"] for t in created]
    assert [t["name"] for t in seen] == ["Tenant 0", "Tenant 1", "Tenant 2"]
    assert all(set(t) == {"id", "name", "createdAt"} for t in seen), seen
    status, body, _ = await operator(stack, "GET", "/v1/tenants?limit=0")
    assert status == 400 and body["details"][0]["field"] == "limit", body


async def test_a_tenant_that_revoked_its_last_client_gets_a_new_one_from_the_operator(stack):
    tenant = await stack.tenant()
    # Its only client revoked (a client cannot revoke itself through the API, but a stolen one could
    # revoke it, and then be revoked in turn): no usable client is left.
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        await conn.execute(
            "UPDATE registry.api_clients SET revoked_at = now() WHERE tenant_id = $1", tenant["id"]
        )
    finally:
        await conn.close()
    client = tenant["client"]
    status, _, _ = await stack.client_credentials(client["clientId"], client["clientSecret"])
    assert status == 401

    status, issued, headers = await operator(stack, "POST", f"/v1/tenants/{tenant['id']}/clients")
    assert status == 201, issued
    assert headers["Cache-Control"] == "no-store"
    assert set(issued) == {"clientId", "clientSecret"}
    assert issued["clientId"].startswith("cli_") and issued["clientSecret"].startswith("cs_")
    status, token, _ = await stack.client_credentials(issued["clientId"], issued["clientSecret"])
    assert status == 200 and token["scope"] == "admin", token
    status, listed, _ = await stack.call("GET", "/v1/clients", token=token["access_token"])
    assert status == 200, listed
    mine = {c["clientId"]: c for c in listed["items"]}
    assert mine[issued["clientId"]]["registeredBy"] == "operator"
    status, trail, _ = await stack.call("GET", "/v1/audit", token=token["access_token"])
    assert status == 200, trail
    assert {"actor": "operator", "action": "client.registered", "resourceId": issued["clientId"]}.items() <= (
        trail["items"][0].items()
    ), trail["items"][0]


async def test_an_unknown_tenant_is_404(stack):
    for tenant_id in (new_id(), "not-a-uuid"):
        status, body, _ = await operator(stack, "POST", f"/v1/tenants/{tenant_id}/clients")
        assert status == 404 and body["error"] == "not_found", body


async def test_only_the_operator_may(stack):
    tenant = await stack.tenant()
    for method, path in (("GET", "/v1/tenants"), ("POST", f"/v1/tenants/{tenant['id']}/clients")):
        for token in (tenant["token"], None, "not-the-operator-token"):
            status, body, _ = await stack.call(method, path, token=token)
            assert status == 401 and body["error"] == "unauthorized", (method, path, token, body)

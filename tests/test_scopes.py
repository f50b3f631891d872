"""Scoped API clients: each admin operation needs its scope (admin implies all), a token request
may narrow the client's scopes, and a client is registered with no more than its issuer had."""

from __future__ import annotations

import uuid
from typing import Any

import jwt

from shared.auth import ADMIN_SCOPE, SCOPES
from tests.stack import Stack

NARROW = sorted(set(SCOPES) - {ADMIN_SCOPE})


async def token_for(stack: Stack, client_id: str, client_secret: str, scope: str | None) -> Any:
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret}
    if scope is not None:
        form["scope"] = scope
    return await stack.call("POST", "/oauth/token", data=form)


async def scoped_token(stack: Stack, tenant: dict[str, Any], scope: str) -> str:
    client = tenant["client"]
    status, body, _ = await token_for(stack, client["clientId"], client["clientSecret"], scope)
    assert status == 200 and body["scope"] == scope, body
    return str(body["access_token"])


def admin_operations(document: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(method, path with made-up ids, scope) of every operation an access token may call."""
    found = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for option in operation.get("security", []):
                if "accessToken" in option:
                    (scope,) = option["accessToken"]
                    concrete = path
                    for name in ("id", "commandId", "deliveryId"):
                        concrete = concrete.replace("{" + name + "}", str(uuid.uuid4()))
                    for name in ("userCode", "clientId", "serial", "name", "code"):
                        concrete = concrete.replace("{" + name + "}", "BCDFGHJK")
                    found.append((method.upper(), concrete, scope))
    return found


async def test_every_admin_operation_needs_the_scope_it_declares(stack: Stack) -> None:
    tenant = await stack.tenant()
    document = (await stack.call("GET", "/openapi.json"))[1]
    operations = admin_operations(document)
    assert len(operations) >= 36, operations  # the whole admin API, every service, not a sample
    assert {scope for _, _, scope in operations} == set(NARROW), operations
    holding = {scope: await scoped_token(stack, tenant, scope) for scope in NARROW}
    # The strongest token that still lacks the scope: every other one.
    lacking = {scope: await scoped_token(stack, tenant, " ".join(set(NARROW) - {scope})) for scope in NARROW}
    for method, path, scope in operations:
        what = f"{method} {path} ({scope})"
        status, body, _ = await stack.call(method, path, json={}, token=lacking[scope])
        assert (status, body["error"]) == (403, "forbidden"), (what, body)
        assert body["message"] == f"this call needs the scope {scope}", (what, body)
        # Only the status: the stream would not end, and a 404 or 400 is as good as a 200 here.
        headers = {"Authorization": f"Bearer {holding[scope]}"}
        async with stack.http.request(method, path, json={}, headers=headers) as response:
            assert response.status not in (401, 403), (what, response.status, await response.read())


async def test_the_document_shows_each_operations_scope_and_where_to_get_it(stack: Stack) -> None:
    document = (await stack.call("GET", "/openapi.json"))[1]
    scheme = document["components"]["securitySchemes"]["accessToken"]
    assert scheme["type"] == "oauth2"
    flow = scheme["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == "/oauth/token" and set(flow["scopes"]) == set(SCOPES)
    venues = document["paths"]["/v1/venues"]
    assert venues["post"]["security"] == [{"accessToken": ["screens:write"]}]
    assert venues["get"]["security"] == [{"accessToken": ["screens:read"]}]
    assert "403" in venues["get"]["responses"]
    # The operator's and the devices' operations keep their own credentials.
    assert document["paths"]["/v1/tenants"]["post"]["security"] == [{"operatorToken": []}]
    metadata = (await stack.call("GET", "/.well-known/oauth-authorization-server"))[1]
    assert set(metadata["scopes_supported"]) == set(SCOPES)


async def test_a_token_request_narrows_the_clients_scopes(stack: Stack) -> None:
    tenant = await stack.tenant()
    client = tenant["client"]
    status, body, _ = await token_for(stack, client["clientId"], client["clientSecret"], None)
    assert (status, body["scope"]) == (200, ADMIN_SCOPE), body
    status, body, _ = await token_for(
        stack, client["clientId"], client["clientSecret"], "screens:read fleet:read screens:read"
    )
    assert (status, body["scope"]) == (200, "screens:read fleet:read"), body
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["scope"] == "screens:read fleet:read"
    token = body["access_token"]
    assert (await stack.call("GET", "/v1/venues", token=token))[0] == 200
    assert (await stack.call("GET", "/v1/fleet/status", token=token))[0] == 200
    status, body, _ = await stack.call("POST", "/v1/venues", token=token, json={"name": "No"})
    assert (status, body["message"]) == (403, "this call needs the scope screens:write"), body
    status, body, _ = await stack.call("GET", "/v1/devices", token=token)
    assert (status, body["message"]) == (403, "this call needs the scope devices:read"), body
    for unknown in ("screens:delete", "screens:read bogus", "ADMIN"):
        status, body, _ = await token_for(stack, client["clientId"], client["clientSecret"], unknown)
        assert (status, body["error"]) == (400, "invalid_scope"), (unknown, body)


async def register(stack: Stack, issuer_token: str, metadata: dict[str, Any]) -> tuple[int, Any, str]:
    status, issued, _ = await stack.call(
        "POST", "/v1/clients/initial-access-tokens", token=issuer_token, json={}
    )
    assert status == 201, issued
    async with stack.http.post(
        "/oauth/register", json=metadata, headers={"Authorization": f"Bearer {issued['token']}"}
    ) as response:
        return response.status, await response.json(), issued["token"]


async def test_a_client_is_registered_with_no_more_than_its_issuer_had(stack: Stack) -> None:
    tenant = await stack.tenant()
    # An admin's initial access token: any scopes, admin by default.
    status, client, _ = await register(stack, tenant["token"], {})
    assert (status, client["scope"]) == (201, ADMIN_SCOPE), client
    status, reader, _ = await register(stack, tenant["token"], {"scope": "screens:read"})
    assert (status, reader["scope"]) == (201, "screens:read"), reader
    status, body, _ = await token_for(stack, reader["client_id"], reader["client_secret"], None)
    assert (status, body["scope"]) == (200, "screens:read"), body
    for beyond in ("screens:write", "admin", "screens:read devices:read"):
        status, body, _ = await token_for(stack, reader["client_id"], reader["client_secret"], beyond)
        assert (status, body["error"]) == (400, "invalid_scope"), (beyond, body)
    status, body, _ = await register(stack, tenant["token"], {"scope": "screens:delete"})
    assert (status, body["error"]) == (400, "invalid_client_metadata"), body

    # A client that may only manage clients cannot make itself a mightier one.
    managers = await scoped_token(stack, tenant, "clients:write")
    status, body, iat = await register(stack, managers, {"scope": "admin"})
    assert (status, body["error"]) == (400, "invalid_client_metadata"), body
    async with stack.http.post(
        "/oauth/register", json={}, headers={"Authorization": f"Bearer {iat}"}
    ) as response:  # the refusal did not spend the token; by default, the issuer's scopes
        manager = await response.json()
        assert (response.status, manager["scope"]) == (201, "clients:write"), manager
    status, clients, _ = await stack.call("GET", "/v1/clients", token=tenant["token"])
    scopes = {c["clientId"]: c["scope"] for c in clients["items"]}
    assert scopes == {
        tenant["client"]["clientId"]: ADMIN_SCOPE,
        client["client_id"]: ADMIN_SCOPE,
        reader["client_id"]: "screens:read",
        manager["client_id"]: "clients:write",
    }, clients

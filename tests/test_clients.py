"""API clients registered by integrations themselves (RFC 7591), listed and revoked by the tenant."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import msgspec

from tests.stack import Stack


async def initial_access_token(stack: Stack, tenant: dict[str, Any], **body: Any) -> str:
    status, issued, _ = await stack.call(
        "POST", "/v1/clients/initial-access-tokens", token=tenant["token"], json=body
    )
    assert status == 201 and issued["token"].startswith("iat_"), issued
    return issued["token"]


async def register(stack: Stack, token: str | None, metadata: Any) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with stack.http.post("/oauth/register", json=metadata, headers=headers) as response:
        return response.status, await response.json(), response.headers


async def test_an_integration_registers_itself_and_works_as_its_tenant(stack):
    tenant = await stack.tenant()
    await stack.screen(tenant["token"])  # a venue "HQ" to see
    metadata = (await stack.call("GET", "/.well-known/oauth-authorization-server"))[1]
    assert metadata["registration_endpoint"] == f"{stack.settings.public_url}/oauth/register"
    token = await initial_access_token(stack, tenant)
    status, client, headers = await register(stack, token, {"client_name": "POS sync", "scope": "admin"})
    assert status == 201, client
    assert headers["Cache-Control"] == "no-store"
    assert client["client_id"].startswith("cli_") and client["client_secret"].startswith("cs_")
    assert client["client_secret_expires_at"] == 0 and abs(client["client_id_issued_at"] - time.time()) < 60
    assert (client["grant_types"], client["scope"], client["client_name"]) == (
        ["client_credentials"],
        "admin",
        "POS sync",
    )
    assert client["token_endpoint_auth_method"] == "client_secret_basic"

    status, issued, _ = await stack.client_credentials(
        client["client_id"], client["client_secret"], basic=True
    )
    assert status == 200, issued
    status, venues, _ = await stack.call("GET", "/v1/venues", token=issued["access_token"])
    assert status == 200 and [v["name"] for v in venues["items"]] == ["HQ"], venues

    # Single use.
    status, body, headers = await register(stack, token, {})
    assert status == 401 and body["error"] == "invalid_token", body
    assert headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


async def test_registration_refuses_what_this_server_cannot_honour_in_rfc_7591_form(stack):
    tenant = await stack.tenant()
    token = await initial_access_token(stack, tenant)
    for metadata, error in [
        ({"grant_types": ["authorization_code"]}, "invalid_client_metadata"),
        ({"redirect_uris": ["https://app.example.com/cb"]}, "invalid_redirect_uri"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "invalid_client_metadata"),
        ({"scope": "admin devices"}, "invalid_client_metadata"),
        ({"client_name": "x" * 201}, "invalid_client_metadata"),
        ({"client_name": 5}, "invalid_client_metadata"),
        ({"client_name": "nul\u0000here"}, "invalid_client_metadata"),
        ([1, 2], "invalid_client_metadata"),
    ]:
        status, body, _ = await register(stack, token, metadata)
        assert (status, body["error"]) == (400, error), (metadata, body)
        assert body["error_description"], body
    async with stack.http.post(
        "/oauth/register", data="client_name=x", headers={"Authorization": f"Bearer {token}"}
    ) as response:
        assert response.status == 400 and (await response.json())["error"] == "invalid_client_metadata"
    # None of that spent the token.
    status, client, _ = await register(stack, token, {})
    assert status == 201, client


async def test_a_missing_unknown_or_expired_initial_access_token_is_invalid_token(stack):
    tenant = await stack.tenant()
    for token in (None, "iat_unknown", tenant["token"]):
        status, body, _ = await register(stack, token, {})
        assert status == 401 and body["error"] == "invalid_token", (token, body)
    token = await initial_access_token(stack, tenant, ttlSeconds=60)
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        await conn.execute("UPDATE registry.initial_access_tokens SET expires_at = now() - interval '1 s'")
    finally:
        await conn.close()
    status, body, _ = await register(stack, token, {})
    assert status == 401 and body["error"] == "invalid_token", body
    for ttl in (59, 7 * 24 * 3600 + 1, "1h"):
        status, body, _ = await stack.call(
            "POST", "/v1/clients/initial-access-tokens", token=tenant["token"], json={"ttlSeconds": ttl}
        )
        assert status == 400 and body["details"][0]["field"] == "ttlSeconds", body


async def test_the_tenant_lists_and_revokes_its_clients_and_no_one_elses(stack):
    tenant, other = await stack.tenant(), await stack.tenant("Other Co")
    _, client, _ = await register(stack, await initial_access_token(stack, tenant), {"client_name": "BI"})
    status, listed, _ = await stack.call("GET", "/v1/clients", token=tenant["token"])
    assert status == 200, listed
    by_id = {c["clientId"]: c for c in listed["items"]}
    assert set(by_id) == {tenant["client"]["clientId"], client["client_id"]}
    assert by_id[client["client_id"]]["registeredBy"] == f"client:{tenant['client']['clientId']}"
    assert by_id[tenant["client"]["clientId"]]["registeredBy"] == "operator"
    assert all("clientSecret" not in c and c["revokedAt"] is None for c in listed["items"])
    status, theirs, _ = await stack.call("GET", "/v1/clients", token=other["token"])
    assert [c["clientId"] for c in theirs["items"]] == [other["client"]["clientId"]]

    path = f"/v1/clients/{client['client_id']}/revoke"
    status, body, _ = await stack.call("POST", path, token=other["token"])
    assert status == 404, body
    status, revoked, _ = await stack.call("POST", path, token=tenant["token"])
    assert status == 200 and revoked["revokedAt"] is not None, revoked
    status, body, _ = await stack.client_credentials(client["client_id"], client["client_secret"])
    assert status == 401 and body["error"] == "invalid_client", body
    status, body, _ = await stack.call(
        "POST", f"/v1/clients/{tenant['client']['clientId']}/revoke", token=tenant["token"]
    )
    assert status == 409, body
    status, body, _ = await stack.call("POST", "/v1/clients/cli_nope/revoke", token=tenant["token"])
    assert status == 404, body
    status, body, _ = await stack.call("GET", "/v1/clients")
    assert status == 401, body


async def test_secrets_expire_when_the_installation_says_so(settings, sockets):
    async with Stack(msgspec.structs.replace(settings, client_secret_ttl_seconds=3600), sockets) as stack:
        tenant = await stack.tenant()
        _, client, _ = await register(stack, await initial_access_token(stack, tenant), {})
        assert abs(client["client_secret_expires_at"] - (time.time() + 3600)) < 60, client
        status, _, _ = await stack.client_credentials(client["client_id"], client["client_secret"])
        assert status == 200
        conn = await asyncpg.connect(stack.settings.database_url)
        try:
            await conn.execute(
                "UPDATE registry.api_clients SET secret_expires_at = now() - interval '1 s'"
                " WHERE client_id = $1",
                client["client_id"],
            )
        finally:
            await conn.close()
        status, body, _ = await stack.client_credentials(client["client_id"], client["client_secret"])
        assert status == 401 and body["error"] == "invalid_client" and "expired" in body["message"], body

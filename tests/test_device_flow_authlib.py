"""Device-first pairing (RFC 8628) driven by a second OAuth client library, independent of the
first (oauthlib, tests/test_device_flow.py): Authlib's requests client, unmodified. It finds the
endpoints through the RFC 8414 metadata, starts with the client id alone, and polls the token
endpoint with the device-code grant, meeting ``authorization_pending`` and ``slow_down`` as Authlib
surfaces them (``OAuthError``). The admin's side is Authlib too: an access token by the client
credentials grant, then the approval sent with it.

Authlib's client is synchronous (requests): each call runs in a thread, so the stack serving it
keeps running on the test's event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

from tests.stack import Stack

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
TIMEOUT = 10


def discover(base_url: str) -> AuthorizationServerMetadata:
    """RFC 8414 §3, checked by Authlib's own reading of each member a client relies on here."""
    response = requests.get(f"{base_url}/.well-known/oauth-authorization-server", timeout=TIMEOUT)
    response.raise_for_status()
    metadata = AuthorizationServerMetadata(response.json())
    metadata.validate_token_endpoint()
    metadata.validate_jwks_uri()
    metadata.validate_grant_types_supported()
    metadata.validate_token_endpoint_auth_methods_supported()
    metadata.validate_scopes_supported()
    assert DEVICE_CODE_GRANT in metadata["grant_types_supported"]
    assert "none" in metadata["token_endpoint_auth_methods_supported"]  # the TV: a public client
    return metadata


def start(tv: OAuth2Session, metadata: AuthorizationServerMetadata) -> dict[str, Any]:
    """RFC 8628 §3.1: the client id alone (Authlib has no device-authorization call of its own;
    the request is a plain form post, without a token)."""
    response = tv.post(
        metadata["device_authorization_endpoint"],
        data={"client_id": tv.client_id},
        withhold_token=True,
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    started: dict[str, Any] = response.json()
    return started


def poll(tv: OAuth2Session, metadata: AuthorizationServerMetadata, device_code: str) -> dict[str, Any]:
    """One poll through Authlib's ``fetch_token``: the token, or the RFC 8628 §3.5 error it raised."""
    try:
        token = tv.fetch_token(
            metadata["token_endpoint"], grant_type=DEVICE_CODE_GRANT, device_code=device_code, timeout=TIMEOUT
        )
    except OAuthError as exc:
        return {"error": exc.error}
    return dict(token)


async def test_authlib_pairs_a_tv_with_its_client_id_alone(stack: Stack) -> None:
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    metadata = await asyncio.to_thread(discover, stack.base_url)

    tv = OAuth2Session(client_id=stack.settings.device_client_id, token_endpoint_auth_method="none")
    started = await asyncio.to_thread(start, tv, metadata)
    assert started["interval"] == 5 and started["verification_uri_complete"].endswith(started["user_code"])
    device_code = started["device_code"]

    # Waiting for the admin; polling again at once is too soon: the two errors a TV must tell apart.
    assert await asyncio.to_thread(poll, tv, metadata, device_code) == {"error": "authorization_pending"}
    assert await asyncio.to_thread(poll, tv, metadata, device_code) == {"error": "slow_down"}

    # The admin, with Authlib as well: client credentials, then the approval carrying that token.
    admin = OAuth2Session(
        client_id=tenant["client"]["clientId"], client_secret=tenant["client"]["clientSecret"]
    )
    access = await asyncio.to_thread(
        admin.fetch_token, metadata["token_endpoint"], grant_type="client_credentials", timeout=TIMEOUT
    )
    assert access["token_type"] == "Bearer" and access["scope"] == "admin", access
    approve_url = f"{stack.base_url}/v1/devices/device-authorizations/{started['user_code']}/approve"
    response = await asyncio.to_thread(
        admin.post, approve_url, json={"screenId": screen["id"]}, timeout=TIMEOUT
    )
    assert response.status_code == 200 and response.json()["status"] == "approved", response.text

    # The TV waits out its (slowed-down) interval before the next poll; here time moves instead.
    await _interval_passed(stack)
    token = await asyncio.to_thread(poll, tv, metadata, device_code)
    assert token["token_type"] == "Bearer" and token["access_token"].startswith("dak_"), token
    assert (token["screenId"], token["tenantId"]) == (screen["id"], tenant["id"])

    # The device key works as Authlib sends any bearer token.
    device = OAuth2Session(token={"access_token": token["access_token"], "token_type": "Bearer"})

    async def plays() -> bool:
        response = await asyncio.to_thread(
            device.get, f"{stack.base_url}/v1/device/playlist", timeout=TIMEOUT
        )
        return response.status_code == 200

    await stack.eventually(plays)
    # Spent: one more poll is invalid_grant, raised by Authlib like the others.
    assert await asyncio.to_thread(poll, tv, metadata, device_code) == {"error": "invalid_grant"}


async def test_authlib_sees_a_denial_as_access_denied(stack: Stack) -> None:
    tenant = await stack.tenant()
    metadata = await asyncio.to_thread(discover, stack.base_url)
    tv = OAuth2Session(client_id=stack.settings.device_client_id, token_endpoint_auth_method="none")
    started = await asyncio.to_thread(start, tv, metadata)
    status, body, _ = await stack.call(
        "POST", f"/v1/devices/device-authorizations/{started['user_code']}/deny", token=tenant["token"]
    )
    assert status == 200, body
    with pytest.raises(OAuthError) as refused:
        await asyncio.to_thread(
            tv.fetch_token,
            metadata["token_endpoint"],
            grant_type=DEVICE_CODE_GRANT,
            device_code=started["device_code"],
            timeout=TIMEOUT,
        )
    assert refused.value.error == "access_denied"


async def _interval_passed(stack: Stack) -> None:
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        await conn.execute(
            "UPDATE provisioning.device_authorizations SET last_polled_at = now() - interval '1 hour'"
        )
    finally:
        await conn.close()

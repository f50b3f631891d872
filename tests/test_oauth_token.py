"""Access tokens: POST /oauth/token (client credentials, in the form or HTTP Basic, and the RFC 6749
errors), and the rotation of the key that signs them."""

from __future__ import annotations

import base64
import socket
from typing import Any

import aiohttp
import jwt
import msgspec

from shared.auth import generate_signing_key, public_key_of
from tests.admin_api import assert_unauthorized, list_ids, public_key
from tests.stack import Stack


async def test_token_with_http_basic_credentials(stack: Stack) -> None:
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    client = tenant["client"]
    basic = "Basic " + base64.b64encode(f"{client['clientId']}:{client['clientSecret']}".encode()).decode()
    assert basic == aiohttp.BasicAuth(client["clientId"], client["clientSecret"]).encode()

    status, body, response = await stack.call(
        "POST", "/oauth/token", data={"grant_type": "client_credentials"}, headers={"Authorization": basic}
    )
    assert status == 200, body
    assert body["token_type"] == "Bearer"
    assert type(body["expires_in"]) is int and body["expires_in"] > 0
    assert body["expires_in"] == stack.settings.token_ttl_seconds
    assert body["scope"] == "admin"
    assert response.headers.get("Cache-Control") == "no-store"
    claims = jwt.decode(
        body["access_token"],
        public_key(stack.settings.token_signing_key),
        algorithms=["EdDSA"],
        issuer=stack.settings.token_issuer,
    )
    assert (claims["tid"], claims["sub"]) == (tenant["id"], client["clientId"])

    assert await list_ids(stack, body["access_token"], "/v1/screens") == [screen["id"]]


async def test_token_with_credentials_in_basic_and_form_is_invalid_request(stack: Stack) -> None:
    tenant = await stack.tenant()
    client = tenant["client"]
    status, body, response = await stack.call(
        "POST",
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client["clientId"],
            "client_secret": client["clientSecret"],
        },
        headers={"Authorization": aiohttp.BasicAuth(client["clientId"], client["clientSecret"]).encode()},
    )
    assert status == 400, body
    assert body["error"] == "invalid_request"
    assert "access_token" not in body
    assert response.headers.get("Cache-Control") == "no-store"


async def test_token_with_a_wrong_secret_is_invalid_client(stack: Stack) -> None:
    tenant = await stack.tenant()
    client = tenant["client"]
    wrong = client["clientSecret"][:-4] + ("AAAA" if not client["clientSecret"].endswith("AAAA") else "BBBB")

    status, body, response = await stack.client_credentials(client["clientId"], wrong)
    assert (status, body["error"]) == (401, "invalid_client"), body
    assert "access_token" not in body

    status, body, response = await stack.client_credentials(client["clientId"], wrong, basic=True)
    assert (status, body["error"]) == (401, "invalid_client"), body
    assert "access_token" not in body
    # RFC 6749 §5.2: a client that authenticated with the Authorization header is challenged back.
    assert response.headers.get("WWW-Authenticate", "").startswith("Basic")

    # One tenant's client id with another's secret does not work either.
    other = await stack.tenant("Other")
    status, body, _ = await stack.client_credentials(client["clientId"], other["client"]["clientSecret"])
    assert (status, body["error"]) == (401, "invalid_client"), body


async def test_the_signing_key_rotates_without_downtime(settings, sockets) -> None:
    """Registry signs with a new key while every service still accepts the old one's tokens (the old
    public key in TOKEN_VERIFY_KEYS) until they expire; each token names its key (kid)."""
    async with Stack(settings, sockets) as stack:
        tenant = await stack.tenant()
        old_token = tenant["token"]
    new_key = generate_signing_key()
    rotated = msgspec.structs.replace(
        settings,
        token_signing_key=new_key,
        token_verify_keys=(public_key_of(settings.token_signing_key),),
    )
    async with Stack(rotated, bound_sockets_again(settings)) as stack:
        client = tenant["client"]
        status, issued, _ = await stack.client_credentials(client["clientId"], client["clientSecret"])
        assert status == 200, issued
        new_token = issued["access_token"]
        assert jwt.get_unverified_header(new_token)["kid"] != jwt.get_unverified_header(old_token)["kid"]
        for token in (old_token, new_token):  # both work, on every service
            for path in ("/v1/venues", "/v1/devices", "/v1/fleet/status"):
                status, body, _ = await stack.call("GET", path, token=token)
                assert status == 200, (path, body)
    # Once the old key is dropped, its tokens are refused.
    dropped = msgspec.structs.replace(rotated, token_verify_keys=())
    async with Stack(dropped, bound_sockets_again(settings)) as stack:
        status, body, response = await stack.call("GET", "/v1/venues", token=old_token)
        assert_unauthorized(status, body, response, "old key dropped")
        assert (await stack.call("GET", "/v1/venues", token=new_token))[0] == 200


def bound_sockets_again(settings: Any) -> dict[str, Any]:
    """The stack's own ports once more (a stopped stack released them)."""
    sockets = {}
    for name, port in settings.ports.items():
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sockets[name] = sock
    return sockets

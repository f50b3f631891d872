"""Device-first pairing (RFC 8628) through the public API, driven on the TV's side by a stock
OAuth client library (oauthlib's DeviceClient builds the token requests and reads the answers).
The TV sends what §3.1 asks for, its client id, and nothing else unless a test says so."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import msgspec
import pytest
from oauthlib.oauth2 import DeviceClient
from oauthlib.oauth2.rfc6749.errors import OAuth2Error

from tests.stack import Stack

# Our extension parameters: what a TV may say it is (each part optional).
DEVICE_FORM = {
    "manufacturer": "LG",
    "model": "webOS-43",
    "osVersion": "webOS 6",
    "appVersion": "2.1.0",
    "macAddress": "00:11:22:33:44:66",
    "ipAddress": "10.1.2.3",
    "deviceName": "Bar screen",
}


@pytest.fixture
async def quick(settings, sockets):
    """TVs may poll without waiting (interval 0), so a test does not sleep 5 s per poll."""
    async with Stack(msgspec.structs.replace(settings, device_poll_interval_seconds=0), sockets) as stack:
        yield stack


async def metadata(stack: Stack) -> dict[str, Any]:
    status, body, _ = await stack.call("GET", "/.well-known/oauth-authorization-server")
    assert status == 200, body
    return body


async def start(stack: Stack, client_id: str = "signage-player", **fields: str) -> tuple[int, Any]:
    endpoint = (await metadata(stack))["device_authorization_endpoint"]
    async with stack.http.post(endpoint, data={"client_id": client_id, **fields}) as response:
        return response.status, await response.json()


async def poll(stack: Stack, device_code: str, client: DeviceClient | None = None) -> dict[str, Any]:
    """One poll of the token endpoint as a stock client makes it; an error comes back as
    ``{"error": ...}`` after oauthlib has read it, a success as oauthlib's parsed token."""
    client = client or DeviceClient("signage-player")
    endpoint = (await metadata(stack))["token_endpoint"]
    body = client.prepare_request_body(device_code, include_client_id=True)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    async with stack.http.post(endpoint, data=body, headers=headers) as response:
        text = await response.text()
        assert response.headers["Cache-Control"] == "no-store"
    try:
        return dict(client.parse_request_body_response(text))
    except OAuth2Error as exc:
        return {"error": exc.error, "status": response.status}


async def test_the_metadata_names_the_endpoints_and_grants(stack):
    body = await metadata(stack)
    base = stack.settings.public_url
    assert body["issuer"] == base
    assert body["token_endpoint"] == f"{base}/oauth/token"
    assert body["device_authorization_endpoint"] == f"{base}/oauth/device_authorization"
    assert "urn:ietf:params:oauth:grant-type:device_code" in body["grant_types_supported"]
    assert "client_credentials" in body["grant_types_supported"]
    assert body["jwks_uri"] == f"{base}/.well-known/jwks.json"


async def test_a_tv_pairs_itself_once_an_admin_approves(quick):
    stack = quick
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    status, started = await start(stack)
    assert status == 200, started
    assert set(started) == {
        "device_code",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
        "expires_in",
        "interval",
    }
    user_code = started["user_code"]
    assert len(user_code) == 9 and user_code[4] == "-"
    assert started["verification_uri_complete"] == f"{started['verification_uri']}?user_code={user_code}"
    assert (started["expires_in"], started["interval"]) == (600, 0)

    assert (await poll(stack, started["device_code"]))["error"] == "authorization_pending"

    # The admin sees what they approve: where the TV asked from; it said nothing of itself.
    path = f"/v1/devices/device-authorizations/{user_code.lower()}"
    status, shown, _ = await stack.call("GET", path, token=tenant["token"])
    assert status == 200, shown
    assert shown["status"] == "pending" and shown["requestedFrom"] == "127.0.0.1", shown
    assert set(shown["deviceInfo"].values()) == {None}, shown

    status, approved, _ = await stack.call(
        "POST",
        f"/v1/devices/device-authorizations/{user_code.replace('-', '')}/approve",
        token=tenant["token"],
        json={"screenId": screen["id"]},
    )
    assert status == 200 and approved["status"] == "approved" and approved["screenId"] == screen["id"], (
        approved
    )

    token = await poll(stack, started["device_code"])
    assert token["token_type"] == "Bearer" and token["access_token"].startswith("dak_"), token
    assert (token["screenId"], token["tenantId"]) == (screen["id"], tenant["id"])
    assert token["config"]["heartbeatIntervalMinutes"] == 1
    status, device, _ = await stack.call("GET", f"/v1/devices/{token['deviceId']}", token=tenant["token"])
    assert status == 200 and set(device["deviceInfo"].values()) == {None}, device

    async def polls_its_playlist() -> bool:
        status, _, _ = await stack.call("GET", "/v1/device/playlist", token=token["access_token"])
        return status == 200

    await stack.eventually(polls_its_playlist)
    # Single use: the code is spent; the admin's view says so.
    assert (await poll(stack, started["device_code"]))["error"] == "invalid_grant"
    status, shown, _ = await stack.call("GET", path, token=tenant["token"])
    assert shown["status"] == "delivered"
    status, trail, _ = await stack.call(
        "GET", f"/v1/devices/{token['deviceId']}/audit", token=tenant["token"]
    )
    assert [(e["action"], e["method"], e["actor"], e["clientAddress"]) for e in trail["items"]] == [
        ("bound", "device_authorization", f"client:{tenant['client']['clientId']}", "127.0.0.1")
    ]


async def test_what_the_tv_says_it_is_is_shown_and_kept(quick):
    """Our extension parameters, when a TV sends them: the admin sees them beside the address, and
    the device keeps them; a part left out stays null."""
    stack = quick
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    status, started = await start(stack, **DEVICE_FORM)
    assert status == 200, started
    path = f"/v1/devices/device-authorizations/{started['user_code']}"
    status, shown, _ = await stack.call("GET", path, token=tenant["token"])
    assert status == 200, shown
    assert shown["deviceInfo"]["model"] == "webOS-43" and shown["deviceInfo"]["ipAddress"] == "10.1.2.3"
    assert shown["deviceInfo"]["hardwareId"] is None and shown["requestedFrom"] == "127.0.0.1"
    # A TV that says only a little: that little, checked as the rest would be.
    _, partial = await start(stack, model="webOS-43")
    status, shown, _ = await stack.call(
        "GET", f"/v1/devices/device-authorizations/{partial['user_code']}", token=tenant["token"]
    )
    assert {k: v for k, v in shown["deviceInfo"].items() if v is not None} == {"model": "webOS-43"}, shown
    status, body, _ = await stack.call(
        "POST", path + "/approve", token=tenant["token"], json={"screenId": screen["id"]}
    )
    assert status == 200, body
    token = await poll(stack, started["device_code"])
    status, device, _ = await stack.call("GET", f"/v1/devices/{token['deviceId']}", token=tenant["token"])
    assert status == 200, device
    assert device["deviceInfo"] == {
        **DEVICE_FORM,
        "locationHint": None,
        "hardwareId": None,
    }, device


async def test_a_denied_request_is_access_denied(quick):
    stack = quick
    tenant = await stack.tenant()
    _, started = await start(stack)
    status, denied, _ = await stack.call(
        "POST", f"/v1/devices/device-authorizations/{started['user_code']}/deny", token=tenant["token"]
    )
    assert status == 200 and denied["status"] == "denied", denied
    assert (await poll(stack, started["device_code"]))["error"] == "access_denied"
    # Decided by this tenant: another tenant does not see it at all.
    other = await stack.tenant("Other Co")
    status, body, _ = await stack.call(
        "GET", f"/v1/devices/device-authorizations/{started['user_code']}", token=other["token"]
    )
    assert status == 404, body


async def test_polling_too_fast_is_slow_down_and_the_interval_grows_for_good(stack):
    _, started = await start(stack)
    assert started["interval"] == 5
    assert (await poll(stack, started["device_code"]))["error"] == "authorization_pending"
    assert (await poll(stack, started["device_code"]))["error"] == "slow_down"
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        interval = await conn.fetchval("SELECT interval_seconds FROM provisioning.device_authorizations")
    finally:
        await conn.close()
    assert interval == 10


async def test_an_expired_device_code_is_expired_token_and_cannot_be_approved(quick):
    stack = quick
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    _, started = await start(stack)
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        await conn.execute(
            "UPDATE provisioning.device_authorizations SET expires_at = now() - interval '1 s'"
        )
    finally:
        await conn.close()
    assert (await poll(stack, started["device_code"]))["error"] == "expired_token"
    status, body, _ = await stack.call(
        "POST",
        f"/v1/devices/device-authorizations/{started['user_code']}/approve",
        token=tenant["token"],
        json={"screenId": screen["id"]},
    )
    assert status == 410 and body["error"] == "code_expired", body


async def test_bad_requests_get_the_rfc_errors(quick):
    stack = quick
    status, body = await start(stack, client_id="someone-else")
    assert status == 401 and body["error"] == "invalid_client", body
    status, body = await start(stack, client_id="")
    assert status == 400 and body["error"] == "invalid_request", body
    # What a TV says of itself is optional, and checked when said: the OAuth error shape.
    for bad in ({"macAddress": "not-a-mac"}, {**DEVICE_FORM, "macAddress": "not-a-mac"}):
        status, body = await start(stack, **bad)
        assert (
            status == 400 and body["error"] == "invalid_request" and "macAddress" in body["error_description"]
        ), body
    status, body = await start(stack, model="web\x00OS")
    assert status == 400 and body["error"] == "invalid_request", body
    for name, value in (("model", "x" * 101), ("manufacturer", ""), ("ipAddress", "tv.local")):
        status, body = await start(stack, **{name: value})
        assert status == 400 and body["error"] == "invalid_request" and name in body["error_description"], (
            name,
            body,
        )
    assert (await poll(stack, "ddc_" + "x" * 43))["error"] == "invalid_grant"
    _, started = await start(stack)
    assert (await poll(stack, started["device_code"], DeviceClient("another-client")))[
        "error"
    ] == "invalid_grant"
    status, body, _ = await stack.call(
        "POST", "/oauth/token", data={"grant_type": "urn:ietf:params:oauth:grant-type:device_code"}
    )
    assert status == 400 and body["error"] == "invalid_request", body


async def test_approval_needs_a_free_screen_of_ones_own_and_a_real_code(quick):
    stack = quick
    tenant, other = await stack.tenant(), await stack.tenant("Other Co")
    taken, _ = await stack.paired_device(tenant["token"])
    theirs = await stack.screen(other["token"])
    _, started = await start(stack)
    path = f"/v1/devices/device-authorizations/{started['user_code']}/approve"
    status, body, _ = await stack.call("POST", path, token=tenant["token"], json={"screenId": taken["id"]})
    assert status == 409 and body["error"] == "conflict", body
    status, body, _ = await stack.call("POST", path, token=tenant["token"], json={"screenId": theirs["id"]})
    assert status == 404, body
    status, body, _ = await stack.call("POST", path, token=tenant["token"], json={"screenId": "nope"})
    assert status == 400 and body["details"][0]["field"] == "screenId", body
    status, body, _ = await stack.call(
        "POST",
        "/v1/devices/device-authorizations/BCDF-GHJK/approve",
        token=tenant["token"],
        json={"screenId": (await stack.screen(tenant["token"]))["id"]},
    )
    assert status == 404, body
    status, body, _ = await stack.call(
        "GET", "/v1/devices/device-authorizations/AEIO-U123", token=tenant["token"]
    )
    assert status == 400 and body["details"][0]["field"] == "userCode", body
    status, body, _ = await stack.call("POST", path, json={"screenId": theirs["id"]})
    assert status == 401, body
    free = await stack.screen(tenant["token"], "Free")
    status, body, _ = await stack.call("POST", path, token=tenant["token"], json={"screenId": free["id"]})
    assert status == 200, body
    status, body, _ = await stack.call("POST", path, token=tenant["token"], json={"screenId": free["id"]})
    assert status == 409, body


async def test_guessing_user_codes_is_rate_limited_per_tenant(settings, sockets):
    async with Stack(msgspec.structs.replace(settings, register_failures_per_window=3), sockets) as stack:
        tenant = await stack.tenant()
        screen = await stack.screen(tenant["token"])
        statuses = []
        for guess in ("BCDFBCDF", "BCDFBCDG", "BCDFBCDH", "BCDFBCDJ"):
            status, _, response = await stack.call(
                "POST",
                f"/v1/devices/device-authorizations/{guess}/approve",
                token=tenant["token"],
                json={"screenId": screen["id"]},
            )
            statuses.append(status)
        assert statuses == [404, 404, 404, 429], statuses
        assert int(response.headers["Retry-After"]) > 0


async def test_concurrent_polls_after_the_approval_deliver_one_key(quick):
    stack = quick
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    _, started = await start(stack)
    status, body, _ = await stack.call(
        "POST",
        f"/v1/devices/device-authorizations/{started['user_code']}/approve",
        token=tenant["token"],
        json={"screenId": screen["id"]},
    )
    assert status == 200, body
    results = await asyncio.gather(*(poll(stack, started["device_code"]) for _ in range(6)))
    keys = [r["access_token"] for r in results if "access_token" in r]
    assert len(keys) == 1 and sorted(r["error"] for r in results if "error" in r) == ["invalid_grant"] * 5, (
        results
    )

"""Who may see and change what: tenant isolation, admin credentials, OAuth token issuance,
pagination of lists, and the device key that is shown once and never again."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import time
import uuid
from typing import Any

import aiohttp
import asyncpg
import jwt
import msgspec
import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.auth import TokenIssuer, generate_signing_key, public_key_of
from tests.stack import Stack

PLAYLIST = {"items": [{"type": "image", "url": "https://cdn.example.com/a.png", "durationSeconds": 10}]}
CONFIG_PATCH = {"syncIntervalMinutes": 17, "cachePolicy": {"maxSizeGB": 3, "retentionDays": 2}}
CONFIG_AFTER_PATCH = {
    "syncIntervalMinutes": 17,
    "heartbeatIntervalMinutes": 1,
    "cachePolicy": {"maxSizeGB": 3, "retentionDays": 2},
}


# ---- helpers ----------------------------------------------------------------------------------


def assert_not_found(status: int, body: Any, what: str) -> None:
    assert (status, body["error"] if isinstance(body, dict) else body) == (404, "not_found"), (what, body)


def assert_unauthorized(status: int, body: Any, response: aiohttp.ClientResponse, what: str = "") -> None:
    assert status == 401, (what, status, body)
    assert body["error"] == "unauthorized", (what, body)
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer"), (what, dict(response.headers))


def _b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _public_key(signing_key: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(_b64decode(public_key_of(signing_key)))


async def _venue(stack: Stack, token: str, name: str = "HQ") -> dict[str, Any]:
    status, venue, _ = await stack.call("POST", "/v1/venues", token=token, json={"name": name})
    assert status == 201, venue
    return venue


async def _screen_in(stack: Stack, token: str, venue_id: str, name: str) -> dict[str, Any]:
    status, screen, _ = await stack.call(
        "POST", "/v1/screens", token=token, json={"venueId": venue_id, "name": name}
    )
    assert status == 201, screen
    return screen


async def _ids(stack: Stack, token: str, path: str) -> list[str]:
    status, page, _ = await stack.call("GET", path, token=token)
    assert status == 200, page
    return [item["id"] for item in page["items"]]


async def _walk(stack: Stack, token: str, path: str, limit: int) -> list[list[str]]:
    """Every page of a list, following nextCursor until it is null; the ids of each page."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params = {"limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        separator = "&" if "?" in path else "?"
        query = "&".join(f"{k}={v}" for k, v in params.items())
        status, page, _ = await stack.call("GET", f"{path}{separator}{query}", token=token)
        assert status == 200, page
        pages.append([item["id"] for item in page["items"]])
        cursor = page["nextCursor"]
        if cursor is None:
            return pages
        assert len(pages) < 20, "nextCursor never became null"


# ---- 1. cross-tenant isolation ------------------------------------------------------------------


async def test_another_tenant_gets_404_on_every_resource_and_changes_nothing(stack: Stack) -> None:
    a = await stack.tenant("Tenant A")
    b = await stack.tenant("Tenant B")
    ta, tb = a["token"], b["token"]

    # A: a paired screen (venue, screen, code, device) and a second screen with a pending code.
    a_screen, a_registered = await stack.paired_device(ta)
    a_venue_id = a_screen["venueId"]
    a_device_id = a_registered["deviceId"]
    a_key = a_registered["apiKey"]
    a_pending_screen = await _screen_in(stack, ta, a_venue_id, "Window")
    a_pending_code = (await stack.code(ta, a_pending_screen["id"]))["code"]
    status, a_bound_codes, _ = await stack.call("GET", f"/v1/devices?screenId={a_screen['id']}", token=ta)
    assert status == 200 and [d["id"] for d in a_bound_codes["items"]] == [a_device_id]

    status, playlist, _ = await stack.call(
        "PUT", f"/v1/screens/{a_screen['id']}/playlist", token=ta, json=PLAYLIST
    )
    assert status == 200, playlist
    assert playlist["version"] == 1
    status, config, _ = await stack.call(
        "PATCH", f"/v1/screens/{a_screen['id']}/config", token=ta, json=CONFIG_PATCH
    )
    assert (status, config) == (200, CONFIG_AFTER_PATCH)

    async def a_screen_active() -> bool:
        _, screen, _ = await stack.call("GET", f"/v1/screens/{a_screen['id']}", token=ta)
        return screen["state"] == "active"

    await stack.eventually(a_screen_active)

    # B has its own things, so its lists are not trivially empty.
    b_screen, b_registered = await stack.paired_device(tb)

    # ---- B tries every A resource: 404 not_found, never 403 (nor 409 leaking the state) ----
    sid, pid = a_screen["id"], a_pending_screen["id"]
    attempts: list[tuple[str, str, Any]] = [
        ("GET", f"/v1/venues/{a_venue_id}", None),
        ("GET", f"/v1/screens/{sid}", None),
        ("GET", f"/v1/screens/{pid}", None),
        ("GET", f"/v1/screens/{sid}/playlist", None),
        ("PUT", f"/v1/screens/{sid}/playlist", {"items": []}),
        ("PUT", f"/v1/screens/{pid}/playlist", PLAYLIST),
        ("GET", f"/v1/screens/{sid}/config", None),
        ("PATCH", f"/v1/screens/{sid}/config", {"syncIntervalMinutes": 99}),
        ("PATCH", f"/v1/screens/{pid}/config", {"heartbeatIntervalMinutes": 9}),
        ("POST", "/v1/screens", {"venueId": a_venue_id, "name": "Intruder"}),
        ("POST", "/v1/devices/provisioning-codes", {"screenId": pid}),
        # A's paired screen would be 409 for A; for B it must not even exist.
        ("POST", "/v1/devices/provisioning-codes", {"screenId": sid}),
        ("GET", f"/v1/devices/provisioning-codes/{a_pending_code}/status", None),
        ("GET", f"/v1/devices/{a_device_id}", None),
        ("POST", f"/v1/devices/{a_device_id}/revoke", {"reason": "hijack"}),
    ]
    for method, path, body in attempts:
        status, answer, _ = await stack.call(method, path, token=tb, json=body)
        assert_not_found(status, answer, f"{method} {path}")

    # ---- B's lists hold only B's things ----
    assert await _ids(stack, tb, "/v1/venues") == [b_screen["venueId"]]
    assert await _ids(stack, tb, "/v1/screens") == [b_screen["id"]]
    assert await _ids(stack, tb, "/v1/devices") == [b_registered["deviceId"]]
    assert await _ids(stack, tb, f"/v1/screens?venueId={a_venue_id}") == []
    assert await _ids(stack, tb, f"/v1/devices?screenId={sid}") == []

    # ---- A's things are as A left them ----
    status, device, _ = await stack.call("GET", f"/v1/devices/{a_device_id}", token=ta)
    assert status == 200
    assert (device["status"], device["revokedAt"], device["revokeReason"]) == ("active", None, None)
    status, playlist_after, _ = await stack.call("GET", f"/v1/screens/{sid}/playlist", token=ta)
    assert status == 200
    assert playlist_after["version"] == 1
    assert playlist_after["items"] == PLAYLIST["items"]
    status, pending_playlist, _ = await stack.call("GET", f"/v1/screens/{pid}/playlist", token=ta)
    assert (status, pending_playlist["version"], pending_playlist["items"]) == (200, 0, [])
    status, config_after, _ = await stack.call("GET", f"/v1/screens/{sid}/config", token=ta)
    assert (status, config_after) == (200, CONFIG_AFTER_PATCH)
    status, pending_config, _ = await stack.call("GET", f"/v1/screens/{pid}/config", token=ta)
    assert (status, pending_config) == (
        200,
        {
            "syncIntervalMinutes": 5,
            "heartbeatIntervalMinutes": 1,
            "cachePolicy": {"maxSizeGB": 10, "retentionDays": 7},
        },
    )
    status, code_status, _ = await stack.call(
        "GET", f"/v1/devices/provisioning-codes/{a_pending_code}/status", token=ta
    )
    assert (status, code_status["status"], code_status["screenId"]) == (200, "pending", pid)
    assert sorted(await _ids(stack, ta, "/v1/screens")) == sorted([sid, pid])
    assert await _ids(stack, ta, "/v1/venues") == [a_venue_id]
    status, screen_after, _ = await stack.call("GET", f"/v1/screens/{sid}", token=ta)
    assert (screen_after["state"], screen_after["deviceId"]) == ("active", a_device_id)

    # A's TV still works.
    async def a_key_works() -> bool:
        status, _, _ = await stack.call("GET", "/v1/device/config", token=a_key)
        return status == 200

    await stack.eventually(a_key_works)


# ---- 2. admin credentials ----------------------------------------------------------------------


async def _no_header(stack: Stack, tenant: dict[str, Any]) -> dict[str, str]:
    return {}


async def _garbage(stack: Stack, tenant: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": "Bearer garbage"}


async def _empty_bearer(stack: Stack, tenant: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": "Bearer "}


async def _basic_scheme(stack: Stack, tenant: dict[str, Any]) -> dict[str, str]:
    client = tenant["client"]
    return {"Authorization": aiohttp.BasicAuth(client["clientId"], client["clientSecret"]).encode()}


async def _tampered_signature(stack: Stack, tenant: dict[str, Any]) -> dict[str, str]:
    header, payload, signature = tenant["token"].split(".")
    # A character in the middle: every bit of it is signature (the last one carries padding bits).
    flipped = "A" if signature[10] != "A" else "B"
    signature = signature[:10] + flipped + signature[11:]
    return {"Authorization": f"Bearer {header}.{payload}.{signature}"}


async def _tampered_payload(stack: Stack, tenant: dict[str, Any]) -> dict[str, str]:
    """The genuine signature over claims that name another tenant."""
    header, payload, signature = tenant["token"].split(".")
    claims = json.loads(_b64decode(payload))
    claims["tid"] = str(uuid.uuid4())
    forged = _b64encode(json.dumps(claims, separators=(",", ":")).encode())
    return {"Authorization": f"Bearer {header}.{forged}.{signature}"}


async def _expired(stack: Stack, tenant: dict[str, Any]) -> dict[str, str]:
    issuer = TokenIssuer(msgspec.structs.replace(stack.settings, token_ttl_seconds=-10))
    token = issuer.issue(
        tenant_id=uuid.UUID(tenant["id"]), client_id=tenant["client"]["clientId"], scope="admin"
    )
    # Genuinely signed by the right key, and rejected by PyJWT only because it expired.
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(token, _public_key(stack.settings.token_signing_key), algorithms=["EdDSA"])
    claims = jwt.decode(
        token,
        _public_key(stack.settings.token_signing_key),
        algorithms=["EdDSA"],
        options={"verify_exp": False},
    )
    assert claims["exp"] < time.time()
    return {"Authorization": f"Bearer {token}"}


async def _other_key(stack: Stack, tenant: dict[str, Any]) -> dict[str, str]:
    other = msgspec.structs.replace(stack.settings, token_signing_key=generate_signing_key())
    token = TokenIssuer(other).issue(
        tenant_id=uuid.UUID(tenant["id"]), client_id=tenant["client"]["clientId"], scope="admin"
    )
    return {"Authorization": f"Bearer {token}"}


async def _other_key_same_kid(stack: Stack, tenant: dict[str, Any]) -> dict[str, str]:
    """Signed by a stranger's key but naming the real key's kid: the signature must be checked."""
    genuine = tenant["token"]
    kid = jwt.get_unverified_header(genuine)["kid"]
    claims = jwt.decode(genuine, options={"verify_signature": False})
    stranger = Ed25519PrivateKey.from_private_bytes(_b64decode(generate_signing_key()))
    token = jwt.encode(claims, stranger, algorithm="EdDSA", headers={"kid": kid})
    return {"Authorization": f"Bearer {token}"}


async def _alg_none(stack: Stack, tenant: dict[str, Any]) -> dict[str, str]:
    genuine = tenant["token"]
    kid = jwt.get_unverified_header(genuine)["kid"]
    claims = jwt.decode(genuine, options={"verify_signature": False})
    header = _b64encode(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    payload = _b64encode(json.dumps(claims).encode())
    return {"Authorization": f"Bearer {header}.{payload}."}


async def _device_key(stack: Stack, tenant: dict[str, Any]) -> dict[str, str]:
    _, registered = await stack.paired_device(tenant["token"])
    assert registered["apiKey"].startswith("dak_")
    return {"Authorization": f"Bearer {registered['apiKey']}"}


BAD_CREDENTIALS = {
    "no_header": _no_header,
    "garbage": _garbage,
    "empty_bearer": _empty_bearer,
    "basic_scheme": _basic_scheme,
    "tampered_signature": _tampered_signature,
    "tampered_payload": _tampered_payload,
    "expired": _expired,
    "other_key": _other_key,
    "other_key_same_kid": _other_key_same_kid,
    "alg_none": _alg_none,
    "device_key": _device_key,
}


@pytest.mark.parametrize("make_headers", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
async def test_a_bad_admin_credential_is_401_on_every_service(stack: Stack, make_headers: Any) -> None:
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    headers = await make_headers(stack, tenant)
    venues_before = await _ids(stack, tenant["token"], "/v1/venues")
    assert screen["venueId"] in venues_before
    calls: list[tuple[str, str, Any]] = [
        ("GET", "/v1/venues", None),
        ("GET", "/v1/screens", None),
        ("GET", f"/v1/screens/{screen['id']}", None),
        ("POST", "/v1/venues", {"name": "Sneaky"}),
        ("GET", "/v1/devices", None),
        ("POST", "/v1/devices/provisioning-codes", {"screenId": screen["id"]}),
    ]
    for method, path, body in calls:
        status, answer, response = await stack.call(method, path, json=body, headers=dict(headers))
        assert_unauthorized(status, answer, response, f"{method} {path}")
    # Nothing was created with the bad credential; the genuine token still works.
    assert await _ids(stack, tenant["token"], "/v1/venues") == venues_before
    status, codes, _ = await stack.call("GET", f"/v1/devices?screenId={screen['id']}", token=tenant["token"])
    assert (status, codes["items"]) == (200, [])
    status, code, _ = await stack.call(
        "POST", "/v1/devices/provisioning-codes", token=tenant["token"], json={"screenId": screen["id"]}
    )
    assert (status, code["status"]) == (201, "pending"), code


async def test_the_genuine_token_is_accepted_by_every_service(stack: Stack) -> None:
    """The control for the 401 tests: the same calls with the tenant's own token succeed."""
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])
    for path in ("/v1/venues", "/v1/screens", f"/v1/screens/{screen['id']}", "/v1/devices"):
        status, body, _ = await stack.call("GET", path, token=tenant["token"])
        assert status == 200, (path, body)


async def test_the_operator_endpoint_needs_the_operator_token(stack: Stack) -> None:
    tenant = await stack.tenant()
    _, registered = await stack.paired_device(tenant["token"])
    attempts = {
        "no token": {},
        "wrong token": {"Authorization": "Bearer op_wrong_" + uuid.uuid4().hex},
        "operator token with a suffix": {"Authorization": f"Bearer {stack.settings.operator_token}x"},
        "tenant access token": {"Authorization": f"Bearer {tenant['token']}"},
        "device key": {"Authorization": f"Bearer {registered['apiKey']}"},
    }
    for what, headers in attempts.items():
        status, body, response = await stack.call(
            "POST", "/v1/tenants", json={"name": "Mallory"}, headers=headers
        )
        assert_unauthorized(status, body, response, what)
    status, body, _ = await stack.call(
        "POST", "/v1/tenants", token=stack.settings.operator_token, json={"name": "Legit"}
    )
    assert status == 201, body
    assert body["name"] == "Legit"


# ---- 3. POST /oauth/token ----------------------------------------------------------------------


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
        _public_key(stack.settings.token_signing_key),
        algorithms=["EdDSA"],
        issuer=stack.settings.token_issuer,
    )
    assert (claims["tid"], claims["sub"]) == (tenant["id"], client["clientId"])

    assert await _ids(stack, body["access_token"], "/v1/screens") == [screen["id"]]


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


# ---- 4. pagination and filters -----------------------------------------------------------------


async def test_screens_paginate_in_creation_order_and_filter(stack: Stack) -> None:
    tenant = await stack.tenant()
    token = tenant["token"]
    venue = await _venue(stack, token, "Mall")
    created = [(await _screen_in(stack, token, venue["id"], f"Screen {n}"))["id"] for n in range(5)]

    pages = await _walk(stack, token, "/v1/screens", limit=2)
    assert [len(page) for page in pages] == [2, 2, 1]
    seen = [screen_id for page in pages for screen_id in page]
    assert seen == created  # every id exactly once, in creation order

    # A second venue: the venueId filter separates them, and pagination works under the filter.
    other_venue = await _venue(stack, token, "Airport")
    lone = (await _screen_in(stack, token, other_venue["id"], "Gate 1"))["id"]
    assert [i for p in await _walk(stack, token, "/v1/screens", limit=2) for i in p] == [*created, lone]
    filtered = await _walk(stack, token, f"/v1/screens?venueId={venue['id']}", limit=2)
    assert [i for p in filtered for i in p] == created
    assert await _ids(stack, token, f"/v1/screens?venueId={other_venue['id']}") == [lone]

    # Bind a device to the third screen: it alone becomes active.
    code = await stack.code(token, created[2])
    status, registered = await stack.register(code["code"])
    assert status == 201, registered

    async def active_ids() -> list[str]:
        return await _ids(stack, token, "/v1/screens?state=active")

    assert await stack.eventually(active_ids) == [created[2]]
    assert await _ids(stack, token, "/v1/screens?state=provisioning") == [
        created[0],
        created[1],
        created[3],
        created[4],
        lone,
    ]
    assert await _ids(stack, token, f"/v1/screens?venueId={other_venue['id']}&state=active") == []
    assert await _ids(stack, token, f"/v1/screens?venueId={venue['id']}&state=active") == [created[2]]
    provisioning = await _walk(stack, token, "/v1/screens?state=provisioning", limit=2)
    assert provisioning == [[created[0], created[1]], [created[3], created[4]], [lone]]
    status, screen, _ = await stack.call("GET", f"/v1/screens/{created[2]}", token=token)
    assert (screen["state"], screen["deviceId"]) == ("active", registered["deviceId"])


# ---- 5. the device key is shown once ------------------------------------------------------------


def _field_names(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [name for key, item in value.items() for name in (key, *_field_names(item))]
    if isinstance(value, list):
        return [name for item in value for name in _field_names(item)]
    return []


async def test_the_device_key_is_never_readable_again(stack: Stack) -> None:
    tenant = await stack.tenant()
    token = tenant["token"]
    screen, registered = await stack.paired_device(token)
    key, device_id = registered["apiKey"], registered["deviceId"]
    assert key.startswith("dak_") and len(key) > 40
    key_hash = hashlib.sha256(key.encode()).digest()
    secret_part = key.removeprefix("dak_")
    forbidden = (key, secret_part, key_hash.hex())

    status, device, _ = await stack.call("GET", f"/v1/devices/{device_id}", token=token)
    assert status == 200, device
    status, listed, _ = await stack.call("GET", f"/v1/devices?screenId={screen['id']}", token=token)
    assert status == 200, listed
    assert [d["id"] for d in listed["items"]] == [device_id]
    for what, body in (("device", device), ("list", listed)):
        text = json.dumps(body)
        for secret in forbidden:
            assert secret not in text, what
        names = _field_names(body)
        assert "apiKey" not in names, what
        assert [n for n in names if "key" in n.lower()] == [], (what, names)

    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT key_hash, revoked_at FROM provisioning.device_keys WHERE device_id = $1",
            uuid.UUID(device_id),
        )
        assert [(bytes(r["key_hash"]), r["revoked_at"]) for r in rows] == [(key_hash, None)]

        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema IN ('provisioning', 'registry', 'heartbeat')"
            " AND table_type = 'BASE TABLE' ORDER BY 1, 2"
        )
        names = {(t["table_schema"], t["table_name"]) for t in tables}
        assert {
            ("provisioning", "device_keys"),
            ("provisioning", "devices"),
            ("registry", "screens"),
        } <= names
        scanned = 0
        device_rows = 0
        for table in tables:
            qualified = f'"{table["table_schema"]}"."{table["table_name"]}"'
            for row in await conn.fetch(f"SELECT row_to_json(t)::text AS j FROM {qualified} t"):
                scanned += 1
                # bytea columns render as hex in JSON: look for the key's bytes in hex too.
                for secret in (key, secret_part, key.encode().hex(), secret_part.encode().hex()):
                    assert secret not in row["j"], (qualified, row["j"][:300])
                device_rows += device_id in row["j"]
        assert scanned > 0 and device_rows > 0  # the scan did see this device's rows

        bytea_columns = await conn.fetch(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns"
            " WHERE table_schema IN ('provisioning', 'registry', 'heartbeat') AND data_type = 'bytea'"
        )
        for column in bytea_columns:
            qualified = f'"{column["table_schema"]}"."{column["table_name"]}"'
            values = await conn.fetch(
                f'SELECT "{column["column_name"]}" AS v FROM {qualified} WHERE "{column["column_name"]}" IS NOT NULL'
            )
            for value in values:
                raw = bytes(value["v"])
                assert key.encode() not in raw and secret_part.encode() not in raw, qualified
    finally:
        await conn.close()


# ---- every operation of the API document --------------------------------------------------------


def _operations(document: dict[str, Any], scheme: str) -> list[tuple[str, str]]:
    """(method, path with made-up ids) of every operation that the document secures with ``scheme``."""
    found = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            if any(scheme in option for option in operation.get("security", [])):
                concrete = path.replace("{id}", str(uuid.uuid4()))
                for name in ("userCode", "clientId", "serial", "name", "code"):
                    concrete = concrete.replace("{" + name + "}", "BCDFGHJK")
                found.append((method.upper(), concrete))
    return found


@pytest.mark.parametrize(
    "bad", ["no_header", "tampered_signature", "expired", "other_key_same_kid", "alg_none", "device_key"]
)
async def test_every_admin_operation_refuses_a_bad_credential(stack: Stack, bad: str) -> None:
    tenant = await stack.tenant()
    headers = await BAD_CREDENTIALS[bad](stack, tenant)
    status, document, _ = await stack.call("GET", "/openapi.json")
    operations = _operations(document, "accessToken")
    assert len(operations) >= 30, operations  # the whole admin API, not a sample
    for method, path in operations:
        status, body, response = await stack.call(method, path, json={}, headers=dict(headers))
        assert_unauthorized(status, body, response, f"{method} {path}")


async def test_every_operator_and_device_operation_refuses_the_wrong_kind_of_credential(stack: Stack) -> None:
    tenant = await stack.tenant()
    status, document, _ = await stack.call("GET", "/openapi.json")
    for method, path in _operations(document, "operatorToken"):
        status, body, _ = await stack.call(method, path, json={}, token=tenant["token"])
        assert (status, body["error"]) == (401, "unauthorized"), (method, path, body)
    device_operations = _operations(document, "deviceKey")
    assert len(device_operations) >= 6, device_operations
    for token in (tenant["token"], "dak_" + "E" * 43, None):
        for method, path in device_operations:
            status, body, _ = await stack.call(method, path, json={}, token=token)
            assert (status, body["error"]) == (401, "unauthorized"), (method, path, token, body)


async def test_no_secret_of_any_flow_is_stored_in_clear_or_logged(stack: Stack) -> None:
    """Every credential the flows hand out exists only in its holder's hands: the database has its
    hash at most, and no log line carries it."""
    secrets: dict[str, str] = {}
    with structlog.testing.capture_logs() as logs:
        tenant = await stack.tenant()
        token = tenant["token"]
        secrets |= {"client secret": tenant["client"]["clientSecret"], "access token": token}
        screen = await stack.screen(token)
        code = await stack.code(token, screen["id"])
        _, registered = await stack.register(code["code"], hardwareId="HW-SECRET")
        secrets |= {"device key": registered["apiKey"], "recovery secret": registered["recoverySecret"]}
        status, recovered, _ = await stack.call(
            "POST",
            "/devices/recover",
            json={"hardwareId": "HW-SECRET", "recoverySecret": registered["recoverySecret"]},
        )
        assert status == 200, recovered
        secrets["recovered key"] = recovered["apiKey"]
        other = await stack.screen(token, "Other")
        _, provisioning, _ = await stack.call(
            "POST", "/v1/devices/provisioning-tokens", token=token, json={"screenId": other["id"]}
        )
        secrets["provisioning token"] = provisioning["token"]
        _, iat, _ = await stack.call("POST", "/v1/clients/initial-access-tokens", token=token, json={})
        async with stack.http.post(
            "/oauth/register", json={}, headers={"Authorization": f"Bearer {iat['token']}"}
        ) as response:
            client = await response.json()
        secrets |= {"initial access token": iat["token"], "registered client secret": client["client_secret"]}
        async with stack.http.post(
            "/oauth/device_authorization",
            data={
                "client_id": "signage-player",
                "manufacturer": "LG",
                "model": "webOS",
                "osVersion": "6",
                "appVersion": "1",
                "macAddress": "00:11:22:33:44:77",
                "ipAddress": "10.0.0.9",
            },
        ) as response:
            secrets["device code"] = (await response.json())["device_code"]
        _, made, _ = await stack.call(
            "POST", "/v1/devices/pre-provisioned", token=stack.settings.operator_token, json={"count": 1}
        )
        secrets["factory key"] = made["items"][0]["apiKey"]
        secrets["operator token"] = stack.settings.operator_token
    assert all(len(secret) > 20 for secret in secrets.values()), secrets

    logged = "\n".join(str(entry) for entry in logs)
    assert "device_registered" in logged  # the capture did see the services' lines
    for what, secret in secrets.items():
        assert secret not in logged, f"{what} in a log line"

    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema IN ('provisioning', 'registry', 'heartbeat') AND table_type = 'BASE TABLE'"
        )
        dump = "\n".join(
            [
                row["j"]
                for table in tables
                for row in await conn.fetch(
                    f'SELECT row_to_json(t)::text AS j FROM "{table["table_schema"]}"."{table["table_name"]}" t'
                )
            ]
        )
    finally:
        await conn.close()
    assert registered["deviceId"] in dump  # the dump did see this test's rows
    for what, secret in secrets.items():
        if what in ("access token", "operator token"):
            continue  # never stored at all: the token is verified by signature, the operator's is a setting
        body = secret.split("_", 1)[1]
        for form in (secret, body, secret.encode().hex(), body.encode().hex()):
            assert form not in dump, f"{what} stored in clear"
        assert hashlib.sha256(secret.encode()).hexdigest() in dump, f"{what}: its hash is what is kept"


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

"""Who may call the admin API: a bad credential of any kind is a 401 on every service and every
operation, the genuine token works, and creating tenants takes the operator token."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from typing import Any

import aiohttp
import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.auth import TokenIssuer, generate_signing_key
from tests.admin_api import assert_unauthorized, b64url_decode, list_ids, public_key
from tests.stack import Stack


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


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
    claims = json.loads(b64url_decode(payload))
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
        jwt.decode(token, public_key(stack.settings.token_signing_key), algorithms=["EdDSA"])
    claims = jwt.decode(
        token,
        public_key(stack.settings.token_signing_key),
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
    stranger = Ed25519PrivateKey.from_private_bytes(b64url_decode(generate_signing_key()))
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
    venues_before = await list_ids(stack, tenant["token"], "/v1/venues")
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
    assert await list_ids(stack, tenant["token"], "/v1/venues") == venues_before
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


def _operations(document: dict[str, Any], scheme: str) -> list[tuple[str, str]]:
    """(method, path with made-up ids) of every operation that the document secures with ``scheme``."""
    found = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            if any(scheme in option for option in operation.get("security", [])):
                concrete = path
                for name in ("userCode", "clientId", "serial", "name", "code"):
                    concrete = concrete.replace("{" + name + "}", "BCDFGHJK")
                # Every other path parameter is an id ({id}, {commandId}, {deliveryId}, ...).
                concrete = re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), concrete)
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

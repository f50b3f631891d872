"""Bad input on every endpoint: the exact status and the one error shape of the HTTP contract (docs/api.md),

    {"error": <code>, "message": <str>, "details"?: [{"field", "problem"}]}

with ``details`` naming each bad field as a camelCase path ("deviceInfo.macAddress",
"items[0].type") and a problem ("required", "pattern", "length", "range", "enum", "type", "format",
"invalid"), as shared/validation.py names them.

Every test talks HTTP to the entry point, as a TV or an integration would. Messages say in words
what a field must be ("pairingCode must be 8 characters A-Z or 0-9").
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
import pytest_asyncio

from shared.settings import Settings
from tests.stack import DEVICE_INFO, Stack, new_id

MIB = 1024 * 1024
# A JSON body just over the 1 MiB limit (max_body_bytes).
OVERSIZED = b'{"pad": "' + b"x" * MIB + b'"}'
MAX_ERROR_KEYS = {"error", "message", "details"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Most tests here send many bad registrations from one address: lift the failure limit.

    TestRegisterRateLimit below overrides this again with a small limit.
    """
    return msgspec.structs.replace(settings, register_failures_per_window=1000)


# ---- helpers ----------------------------------------------------------------------------------


def assert_error(
    result: tuple[int, Any, Any],
    status: int,
    error: str,
    details: list[tuple[str, str]] | None = None,
    *,
    fields: list[str] | None = None,
    oauth: bool = False,
) -> None:
    """``result`` is ``stack.call(...)``'s answer; ``details`` None means the body has none.

    ``fields`` instead of ``details``: only the named fields are fixed, not their problem (for
    inputs whose problem name the contract leaves open).
    """
    actual_status, body, response = result
    assert actual_status == status, body
    assert response.content_type == "application/json", body
    assert isinstance(body, dict), body
    allowed = MAX_ERROR_KEYS | ({"error_description"} if oauth else set())
    assert set(body) <= allowed, body
    assert body["error"] == error, body
    assert isinstance(body["message"], str) and body["message"], body
    if oauth:  # RFC 6749 §5.2 clients read error_description; it says the same as message
        assert body["error_description"] == body["message"], body
    if fields is not None:
        assert sorted(d["field"] for d in body["details"]) == sorted(fields), body
    elif details is None:
        assert "details" not in body, body
    else:
        got = sorted((d["field"], d["problem"]) for d in body["details"])
        assert got == sorted(details), body
        assert all(set(d) == {"field", "problem"} for d in body["details"]), body


def registration(code: str, **device_info: Any) -> dict[str, Any]:
    return {"pairingCode": code, "deviceInfo": {**DEVICE_INFO, **device_info}}


async def post_register(stack: Stack, body: Any) -> tuple[int, Any, Any]:
    return await stack.call("POST", "/devices/register", json=body)


async def post_raw(
    stack: Stack,
    path: str,
    data: bytes | str,
    content_type: str = "application/json",
    *,
    method: str = "POST",
    token: str | None = None,
) -> tuple[int, Any, Any]:
    """Send ``data`` as it is, with the given Content-Type (malformed JSON, text, huge bodies)."""
    return await stack.call(method, path, token=token, data=data, headers={"Content-Type": content_type})


async def assert_code_still_usable(stack: Stack, token: str, code: str) -> None:
    """The code survived the bad requests: still pending, and a valid registration binds it."""
    status, body, _ = await stack.call("GET", f"/v1/devices/provisioning-codes/{code}/status", token=token)
    assert status == 200, body
    assert body["status"] == "pending", body
    status, body = await stack.register(code)
    assert status == 201, body
    assert body["apiKey"].startswith("dak_")


def cursor_of(payload: Any) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(payload)).rstrip(b"=").decode()


# ---- fixtures ---------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def token(stack: Stack) -> str:
    return (await stack.tenant())["token"]


@pytest_asyncio.fixture
async def screen(stack: Stack, token: str) -> dict[str, Any]:
    return await stack.screen(token)


@pytest_asyncio.fixture
async def code(stack: Stack, token: str, screen: dict[str, Any]) -> str:
    return (await stack.code(token, screen["id"]))["code"]


@pytest_asyncio.fixture
async def device_key(stack: Stack, token: str) -> str:
    """A paired TV's dak_ key, once the gateway knows it."""
    _, registered = await stack.paired_device(token)
    key = registered["apiKey"]

    async def known() -> bool:
        status, _, _ = await stack.call("POST", "/v1/device/heartbeat", token=key, json={})
        return status == 202

    await stack.eventually(known)
    return key


# =================================================================================================
# POST /devices/register
# =================================================================================================


async def test_register_malformed_json(stack, token, code):
    result = await post_raw(stack, "/devices/register", b'{"pairingCode": ')
    assert_error(result, 400, "invalid_request")
    await assert_code_still_usable(stack, token, code)


async def test_register_non_json_content_type(stack, token, code):
    result = await post_raw(stack, "/devices/register", "x", "text/plain")
    assert_error(result, 415, "unsupported_media_type")
    await assert_code_still_usable(stack, token, code)


async def test_register_body_over_1_mib(stack, token, code):
    result = await post_raw(stack, "/devices/register", OVERSIZED)
    assert_error(result, 413, "payload_too_large")
    await assert_code_still_usable(stack, token, code)


@pytest.mark.parametrize(
    "raw", [b"null", b"[]", b'"ABCD1234"', b"42"], ids=["null", "array", "string", "number"]
)
async def test_register_body_not_an_object(stack, raw):
    result = await post_raw(stack, "/devices/register", raw)
    assert_error(result, 400, "invalid_request", [("", "type")])


def _without(key: str) -> Callable[[str], dict[str, Any]]:
    def body(code: str) -> dict[str, Any]:
        result = registration(code)
        result.pop(key)
        return result

    return body


def _without_device_field(key: str) -> Callable[[str], dict[str, Any]]:
    def body(code: str) -> dict[str, Any]:
        result = registration(code)
        del result["deviceInfo"][key]
        return result

    return body


# (id, body from the valid code, expected details)
REGISTER_CASES: list[tuple[str, Callable[[str], Any], list[tuple[str, str]]]] = [
    ("missing-pairingCode", _without("pairingCode"), [("pairingCode", "required")]),
    ("lowercase-code", lambda c: registration("abcd1234"), [("pairingCode", "pattern")]),
    ("7-char-code", lambda c: registration(c[:7]), [("pairingCode", "pattern")]),
    ("9-char-code", lambda c: registration(c + "A"), [("pairingCode", "pattern")]),
    ("code-with-dash", lambda c: registration(c[:4] + "-" + c[4:7]), [("pairingCode", "pattern")]),
    ("code-not-a-string", lambda c: registration(12345678), [("pairingCode", "type")]),  # type: ignore[arg-type]  # a wrong type on purpose
    ("missing-deviceInfo", _without("deviceInfo"), [("deviceInfo", "required")]),
    ("deviceInfo-not-object", lambda c: {"pairingCode": c, "deviceInfo": "Sony"}, [("deviceInfo", "type")]),
    ("missing-model", _without_device_field("model"), [("deviceInfo.model", "required")]),
    ("missing-macAddress", _without_device_field("macAddress"), [("deviceInfo.macAddress", "required")]),
    ("missing-ipAddress", _without_device_field("ipAddress"), [("deviceInfo.ipAddress", "required")]),
    (
        "mac-mixed-separators",
        lambda c: registration(c, macAddress="00:11:22:33:44-55"),
        [("deviceInfo.macAddress", "pattern")],
    ),
    (
        "mac-five-octets",
        lambda c: registration(c, macAddress="00:11:22:33:44"),
        [("deviceInfo.macAddress", "pattern")],
    ),
    (
        "mac-not-hex",
        lambda c: registration(c, macAddress="GG:11:22:33:44:55"),
        [("deviceInfo.macAddress", "pattern")],
    ),
    (
        "mac-no-separators",
        lambda c: registration(c, macAddress="001122334455"),
        [("deviceInfo.macAddress", "pattern")],
    ),
    (
        "ipv4-octet-999",
        lambda c: registration(c, ipAddress="192.168.1.999"),
        [("deviceInfo.ipAddress", "format")],
    ),
    (
        "ipv4-three-parts",
        lambda c: registration(c, ipAddress="192.168.1"),
        [("deviceInfo.ipAddress", "format")],
    ),
    ("ipv6-bad-hex", lambda c: registration(c, ipAddress="fe80::zz"), [("deviceInfo.ipAddress", "format")]),
    (
        "ipv6-two-gaps",
        lambda c: registration(c, ipAddress="2001::db8::1"),
        [("deviceInfo.ipAddress", "format")],
    ),
    ("ip-hostname", lambda c: registration(c, ipAddress="tv.local"), [("deviceInfo.ipAddress", "format")]),
    (
        "manufacturer-101-chars",
        lambda c: registration(c, manufacturer="x" * 101),
        [("deviceInfo.manufacturer", "length")],
    ),
    (
        "manufacturer-empty",
        lambda c: registration(c, manufacturer=""),
        [("deviceInfo.manufacturer", "length")],
    ),
    ("manufacturer-int", lambda c: registration(c, manufacturer=5), [("deviceInfo.manufacturer", "type")]),
    (
        "manufacturer-null",
        lambda c: registration(c, manufacturer=None),
        [("deviceInfo.manufacturer", "type")],
    ),
    (
        "deviceName-201-chars",
        lambda c: registration(c, deviceName="x" * 201),
        [("deviceInfo.deviceName", "length")],
    ),
    (
        "ipAddress-46-chars",
        lambda c: registration(c, ipAddress="1" * 46),
        [("deviceInfo.ipAddress", "length")],
    ),
]


@pytest.mark.parametrize(
    ("make_body", "details"),
    [case[1:] for case in REGISTER_CASES],
    ids=[case[0] for case in REGISTER_CASES],
)
async def test_register_invalid_field(stack, token, code, make_body, details):
    result = await post_register(stack, make_body(code))
    assert_error(result, 400, "invalid_request", details)
    await assert_code_still_usable(stack, token, code)


async def test_register_names_every_bad_field(stack, token, code):
    body = registration(code, manufacturer=5, osVersion="", macAddress="zz")
    body["pairingCode"] = "abc"
    del body["deviceInfo"]["model"]
    result = await post_register(stack, body)
    assert_error(
        result,
        400,
        "invalid_request",
        [
            ("pairingCode", "pattern"),
            ("deviceInfo.manufacturer", "type"),
            ("deviceInfo.model", "required"),
            ("deviceInfo.osVersion", "length"),
            ("deviceInfo.macAddress", "pattern"),
        ],
    )
    await assert_code_still_usable(stack, token, code)


async def test_register_names_bad_ip_next_to_other_bad_device_fields(stack, code):
    result = await post_register(stack, registration(code, manufacturer=5, ipAddress="192.168.1.999"))
    assert_error(
        result,
        400,
        "invalid_request",
        [("deviceInfo.manufacturer", "type"), ("deviceInfo.ipAddress", "format")],
    )


async def test_register_messages_say_in_words_what_each_field_must_be(stack, code):
    body = registration("abcd1234", macAddress="00:11:22:33:44-55", ipAddress="tv.local")
    _, error, _ = await post_register(stack, body)
    assert error["message"] == (
        "pairingCode must be 8 characters A-Z or 0-9; "
        "deviceInfo.macAddress must be a MAC address: six pairs of hex digits, all separated by ':' "
        "or all by '-', like 00:1A:2B:3C:4D:5E; "
        "deviceInfo.ipAddress must be an IPv4 or IPv6 address"
    )


async def test_register_code_survives_a_series_of_bad_requests(stack, token, code):
    bad_requests = [
        post_raw(stack, "/devices/register", b"{not json"),
        post_raw(stack, "/devices/register", "x", "text/plain"),
        post_raw(stack, "/devices/register", OVERSIZED),
        post_register(stack, registration(code, macAddress="00:11:22:33:44-55")),
        post_register(stack, registration(code, ipAddress="192.168.1.999")),
        post_register(stack, registration(code, manufacturer="x" * 101)),
        post_register(stack, registration("abcd1234")),
    ]
    statuses = [(await request)[0] for request in bad_requests]
    assert statuses == [400, 415, 413, 400, 400, 400, 400]
    await assert_code_still_usable(stack, token, code)
    status, body, _ = await stack.call("GET", f"/v1/devices/provisioning-codes/{code}/status", token=token)
    assert (status, body["status"]) == (200, "bound")


async def test_register_unknown_code(stack):
    assert_error(await post_register(stack, registration("ZZZZZZZZ")), 404, "not_found")


async def test_register_accepts_both_mac_forms(stack, token):
    for mac in ("00:1A:2b:3C:4d:5E", "00-1A-2b-3C-4d-5E"):
        screen = await stack.screen(token)
        code = await stack.code(token, screen["id"])
        status, body = await stack.register(code["code"], macAddress=mac)
        assert status == 201, (mac, body)
        assert body["screenId"] == screen["id"]


@pytest.mark.parametrize("ip", ["fe80::1", "2001:db8::8a2e:370:7334", "::1", "10.0.0.1"])
async def test_register_accepts_valid_ip_addresses(stack, code, ip):
    status, body = await stack.register(code, ipAddress=ip)
    assert status == 201, body


async def test_register_ignores_unknown_fields(stack, code):
    body = registration(code, screenSize=55, hdr=True)
    body["firmware"] = {"build": 42}
    status, registered, _ = await post_register(stack, body)
    assert status == 201, registered
    assert set(registered) == {"deviceId", "screenId", "apiKey", "tenantId", "config"}


async def test_register_rejects_mac_with_trailing_newline(stack, code):
    result = await post_register(stack, registration(code, macAddress="00:11:22:33:44:55\n"))
    assert_error(result, 400, "invalid_request", [("deviceInfo.macAddress", "pattern")])


async def test_register_rejects_code_with_trailing_newline(stack, code):
    result = await post_register(stack, registration(code + "\n"))
    assert_error(result, 400, "invalid_request", [("pairingCode", "pattern")])


async def test_register_rejects_nul_character(stack, token, code):
    result = await post_register(stack, registration(code, manufacturer="So\x00ny"))
    assert_error(result, 400, "invalid_request", fields=["deviceInfo.manufacturer"])
    assert result[1]["message"] == "deviceInfo.manufacturer must not contain the NUL character (\\u0000)"


class TestRegisterRateLimit:
    """Failed registrations from one address are limited (here 3 per window) → 429 rate_limited."""

    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return msgspec.structs.replace(settings, register_failures_per_window=3)

    async def test_fourth_failure_is_rate_limited(self, stack, token, code):
        failures = [
            await post_raw(stack, "/devices/register", b"{not json"),
            await post_register(stack, registration(code, macAddress="00:11:22:33:44-55")),
            await post_register(stack, registration("ZZZZZZZZ")),
        ]
        assert [status for status, _, _ in failures] == [400, 400, 404]

        result = await post_register(stack, registration("abc"))
        assert_error(result, 429, "rate_limited")
        retry_after = result[2].headers["Retry-After"]
        assert retry_after.isascii() and retry_after.isdigit(), retry_after
        assert 1 <= int(retry_after) <= stack.settings.register_failure_window_seconds

        # Even a valid code is refused while the address is limited, and the code is not used up.
        status, body = await stack.register(code)
        assert status == 429, body
        assert body["error"] == "rate_limited"
        status, body, _ = await stack.call(
            "GET", f"/v1/devices/provisioning-codes/{code}/status", token=token
        )
        assert (status, body["status"]) == (200, "pending")

    async def test_below_the_limit_a_valid_code_still_registers(self, stack, code):
        for _ in range(2):
            assert (await post_register(stack, registration("ZZZZZZZZ")))[0] == 404
        status, body = await stack.register(code)
        assert status == 201, body


# =================================================================================================
# POST /v1/venues
# =================================================================================================

VENUE_CASES = [
    ("missing-name", {}, [("name", "required")]),
    ("empty-name", {"name": ""}, [("name", "length")]),
    ("name-201-chars", {"name": "x" * 201}, [("name", "length")]),
    ("name-not-string", {"name": 5}, [("name", "type")]),
    ("bad-timezone", {"name": "HQ", "timezone": "Mars/Base"}, [("timezone", "format")]),
    ("timezone-65-chars", {"name": "HQ", "timezone": "x" * 65}, [("timezone", "length")]),
    ("address-501-chars", {"name": "HQ", "address": "x" * 501}, [("address", "length")]),
]


@pytest.mark.parametrize(("body", "details"), [c[1:] for c in VENUE_CASES], ids=[c[0] for c in VENUE_CASES])
async def test_venue_invalid_field(stack, token, body, details):
    result = await stack.call("POST", "/v1/venues", token=token, json=body)
    assert_error(result, 400, "invalid_request", details)


async def test_venue_messages_say_what_each_field_must_be(stack, token):
    body = {"name": "x" * 201, "timezone": "Mars/Base"}
    _, error, _ = await stack.call("POST", "/v1/venues", token=token, json=body)
    assert error["message"] == (
        "name must be 1 to 200 characters; timezone must be an IANA time zone, like Europe/Berlin"
    )


async def test_venue_accepts_valid_timezone(stack, token):
    status, body, _ = await stack.call(
        "POST", "/v1/venues", token=token, json={"name": "HQ", "timezone": "Europe/Berlin"}
    )
    assert status == 201, body
    assert body["timezone"] == "Europe/Berlin"


async def test_venue_not_json(stack, token):
    assert_error(
        await post_raw(stack, "/v1/venues", "name=HQ", "text/plain", token=token),
        415,
        "unsupported_media_type",
    )


async def test_venue_malformed_json(stack, token):
    assert_error(await post_raw(stack, "/v1/venues", b'{"name": "HQ"', token=token), 400, "invalid_request")


async def test_venue_body_over_1_mib(stack, token):
    assert_error(await post_raw(stack, "/v1/venues", OVERSIZED, token=token), 413, "payload_too_large")


async def test_venue_without_token(stack):
    assert_error(await stack.call("POST", "/v1/venues", json={"name": "HQ"}), 401, "unauthorized")


async def test_venue_rejects_nul_character(stack, token):
    result = await stack.call("POST", "/v1/venues", token=token, json={"name": "H\x00Q"})
    assert_error(result, 400, "invalid_request", fields=["name"])


# =================================================================================================
# POST /v1/screens
# =================================================================================================


async def test_screen_venue_id_not_a_uuid(stack, token):
    result = await stack.call("POST", "/v1/screens", token=token, json={"venueId": "nope", "name": "Lobby"})
    assert_error(result, 400, "invalid_request", [("venueId", "invalid")])
    assert result[1]["message"] == "venueId must be a UUID"


async def test_screen_missing_fields(stack, token):
    result = await stack.call("POST", "/v1/screens", token=token, json={})
    assert_error(result, 400, "invalid_request", [("venueId", "required"), ("name", "required")])


async def test_screen_unknown_venue(stack, token):
    result = await stack.call("POST", "/v1/screens", token=token, json={"venueId": new_id(), "name": "Lobby"})
    assert_error(result, 404, "not_found")


async def test_screen_venue_of_another_tenant(stack, token):
    other = (await stack.tenant("Other"))["token"]
    _, venue, _ = await stack.call("POST", "/v1/venues", token=other, json={"name": "Theirs"})
    result = await stack.call(
        "POST", "/v1/screens", token=token, json={"venueId": venue["id"], "name": "Lobby"}
    )
    assert_error(result, 404, "not_found")


@pytest.mark.parametrize(
    ("extra", "details"),
    [
        ({"orientation": "diagonal"}, [("orientation", "enum")]),
        ({"resolution": "big"}, [("resolution", "pattern")]),
        ({"resolution": "1920x"}, [("resolution", "pattern")]),
        ({"name": ""}, [("name", "length")]),
        (
            {"orientation": "diagonal", "resolution": "big"},
            [("orientation", "enum"), ("resolution", "pattern")],
        ),
    ],
    ids=["orientation-diagonal", "resolution-big", "resolution-no-height", "empty-name", "two-bad-fields"],
)
async def test_screen_invalid_field(stack, token, screen, extra, details):
    body = {"venueId": screen["venueId"], "name": "Lobby", **extra}
    result = await stack.call("POST", "/v1/screens", token=token, json=body)
    assert_error(result, 400, "invalid_request", details)


async def test_screen_not_json(stack, token):
    assert_error(
        await post_raw(stack, "/v1/screens", "x", "text/plain", token=token), 415, "unsupported_media_type"
    )


async def test_screen_rejects_resolution_with_trailing_newline(stack, token, screen):
    body = {"venueId": screen["venueId"], "name": "Lobby", "resolution": "1920x1080\n"}
    result = await stack.call("POST", "/v1/screens", token=token, json=body)
    assert_error(result, 400, "invalid_request", [("resolution", "pattern")])


async def test_screen_rejects_nul_character(stack, token, screen):
    body = {"venueId": screen["venueId"], "name": "Lob\x00by"}
    result = await stack.call("POST", "/v1/screens", token=token, json=body)
    assert_error(result, 400, "invalid_request", fields=["name"])


# =================================================================================================
# PUT /v1/screens/{id}/playlist
# =================================================================================================

ITEM = {"type": "image", "url": "https://cdn.example.com/a.png", "durationSeconds": 10}

PLAYLIST_CASES = [
    ("type-pdf", {"items": [{**ITEM, "type": "pdf"}]}, [("items[0].type", "enum")]),
    ("url-ftp", {"items": [{**ITEM, "url": "ftp://x"}]}, [("items[0].url", "pattern")]),
    ("url-2049-chars", {"items": [{**ITEM, "url": "https://x/" + "a" * 2039}]}, [("items[0].url", "length")]),
    ("duration-0", {"items": [{**ITEM, "durationSeconds": 0}]}, [("items[0].durationSeconds", "range")]),
    (
        "duration-over-a-day",
        {"items": [{**ITEM, "durationSeconds": 86401}]},
        [("items[0].durationSeconds", "range")],
    ),
    (
        "duration-string",
        {"items": [{**ITEM, "durationSeconds": "10"}]},
        [("items[0].durationSeconds", "type")],
    ),
    ("second-item-bad", {"items": [ITEM, {**ITEM, "type": "pdf"}]}, [("items[1].type", "enum")]),
    (
        "item-missing-url",
        {"items": [{"type": "image", "durationSeconds": 5}]},
        [("items[0].url", "required")],
    ),
    ("1001-items", {"items": [ITEM] * 1001}, [("items", "length")]),
    ("missing-items", {}, [("items", "required")]),
    ("items-not-list", {"items": ITEM}, [("items", "type")]),
]


@pytest.mark.parametrize(
    ("body", "details"), [c[1:] for c in PLAYLIST_CASES], ids=[c[0] for c in PLAYLIST_CASES]
)
async def test_playlist_invalid_field(stack, token, screen, body, details):
    result = await stack.call("PUT", f"/v1/screens/{screen['id']}/playlist", token=token, json=body)
    assert_error(result, 400, "invalid_request", details)


async def test_playlist_1000_items_accepted(stack, token, screen):
    status, body, _ = await stack.call(
        "PUT", f"/v1/screens/{screen['id']}/playlist", token=token, json={"items": [ITEM] * 1000}
    )
    assert status == 200, body
    assert len(body["items"]) == 1000


async def test_playlist_path_id_not_a_uuid(stack, token):
    result = await stack.call("PUT", "/v1/screens/not-a-uuid/playlist", token=token, json={"items": [ITEM]})
    assert_error(result, 404, "not_found")


async def test_playlist_unknown_screen(stack, token):
    result = await stack.call("PUT", f"/v1/screens/{new_id()}/playlist", token=token, json={"items": [ITEM]})
    assert_error(result, 404, "not_found")


async def test_playlist_not_json(stack, token, screen):
    result = await post_raw(
        stack, f"/v1/screens/{screen['id']}/playlist", "x", "text/plain", token=token, method="PUT"
    )
    assert_error(result, 415, "unsupported_media_type")


async def test_playlist_names_every_bad_item(stack, token, screen):
    body = {"items": [{**ITEM, "type": "pdf"}, {**ITEM, "url": "ftp://x"}, {**ITEM, "durationSeconds": 0}]}
    result = await stack.call("PUT", f"/v1/screens/{screen['id']}/playlist", token=token, json=body)
    assert_error(
        result,
        400,
        "invalid_request",
        [("items[0].type", "enum"), ("items[1].url", "pattern"), ("items[2].durationSeconds", "range")],
    )
    assert result[1]["message"] == (
        "items[0].type must be one of image, video, web; "
        "items[1].url must be an http:// or https:// URL without spaces; "
        "items[2].durationSeconds must be greater than 0 and at most 86400"
    )


async def test_playlist_rejects_url_with_trailing_newline(stack, token, screen):
    body = {"items": [{**ITEM, "url": "https://cdn.example.com/a.png\n"}]}
    result = await stack.call("PUT", f"/v1/screens/{screen['id']}/playlist", token=token, json=body)
    assert_error(result, 400, "invalid_request", [("items[0].url", "pattern")])


async def test_playlist_rejects_nul_character(stack, token, screen):
    body = {"items": [{**ITEM, "url": "https://cdn.example.com/\x00.png"}]}
    result = await stack.call("PUT", f"/v1/screens/{screen['id']}/playlist", token=token, json=body)
    assert_error(result, 400, "invalid_request", fields=["items[0].url"])


# =================================================================================================
# PATCH /v1/screens/{id}/config
# =================================================================================================

CONFIG_CASES = [
    ("sync-0", {"syncIntervalMinutes": 0}, [("syncIntervalMinutes", "range")]),
    ("sync-1441", {"syncIntervalMinutes": 1441}, [("syncIntervalMinutes", "range")]),
    ("sync-string", {"syncIntervalMinutes": "5"}, [("syncIntervalMinutes", "type")]),
    ("sync-float", {"syncIntervalMinutes": 5.5}, [("syncIntervalMinutes", "type")]),
    ("sync-huge", {"syncIntervalMinutes": 10**30}, [("syncIntervalMinutes", "range")]),
    ("heartbeat-0", {"heartbeatIntervalMinutes": 0}, [("heartbeatIntervalMinutes", "range")]),
    ("maxSizeGB-negative", {"cachePolicy": {"maxSizeGB": -1}}, [("cachePolicy.maxSizeGB", "range")]),
    ("maxSizeGB-0", {"cachePolicy": {"maxSizeGB": 0}}, [("cachePolicy.maxSizeGB", "range")]),
    ("retentionDays-0", {"cachePolicy": {"retentionDays": 0}}, [("cachePolicy.retentionDays", "range")]),
    ("cachePolicy-not-object", {"cachePolicy": 10}, [("cachePolicy", "type")]),
    (
        "two-bad-fields",
        {"syncIntervalMinutes": 0, "cachePolicy": {"maxSizeGB": -1}},
        [("syncIntervalMinutes", "range"), ("cachePolicy.maxSizeGB", "range")],
    ),
]


@pytest.mark.parametrize(("body", "details"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
async def test_config_invalid_field(stack, token, screen, body, details):
    result = await stack.call("PATCH", f"/v1/screens/{screen['id']}/config", token=token, json=body)
    assert_error(result, 400, "invalid_request", details)
    # Nothing changed: the defaults are still in place.
    status, config, _ = await stack.call("GET", f"/v1/screens/{screen['id']}/config", token=token)
    assert status == 200, config
    assert config == {
        "syncIntervalMinutes": 5,
        "heartbeatIntervalMinutes": 1,
        "cachePolicy": {"maxSizeGB": 10, "retentionDays": 7},
    }


async def test_config_path_id_not_a_uuid(stack, token):
    result = await stack.call(
        "PATCH", "/v1/screens/nope/config", token=token, json={"syncIntervalMinutes": 5}
    )
    assert_error(result, 404, "not_found")


async def test_config_unknown_screen(stack, token):
    result = await stack.call(
        "PATCH", f"/v1/screens/{new_id()}/config", token=token, json={"syncIntervalMinutes": 5}
    )
    assert_error(result, 404, "not_found")


async def test_config_malformed_json(stack, token, screen):
    result = await post_raw(
        stack, f"/v1/screens/{screen['id']}/config", b"{syncIntervalMinutes: 5}", token=token, method="PATCH"
    )
    assert_error(result, 400, "invalid_request")


async def test_config_not_json(stack, token, screen):
    result = await post_raw(
        stack, f"/v1/screens/{screen['id']}/config", "x", "text/plain", token=token, method="PATCH"
    )
    assert_error(result, 415, "unsupported_media_type")


# =================================================================================================
# POST /v1/devices/provisioning-codes
# =================================================================================================


async def test_new_code_missing_screen_id(stack, token):
    result = await stack.call("POST", "/v1/devices/provisioning-codes", token=token, json={})
    assert_error(result, 400, "invalid_request", [("screenId", "required")])


async def test_new_code_screen_id_not_a_uuid(stack, token):
    result = await stack.call(
        "POST", "/v1/devices/provisioning-codes", token=token, json={"screenId": "nope"}
    )
    assert_error(result, 400, "invalid_request", [("screenId", "invalid")])


async def test_new_code_screen_id_not_a_string(stack, token):
    result = await stack.call("POST", "/v1/devices/provisioning-codes", token=token, json={"screenId": 7})
    assert_error(result, 400, "invalid_request", [("screenId", "type")])


async def test_new_code_unknown_screen(stack, token):
    result = await stack.call(
        "POST", "/v1/devices/provisioning-codes", token=token, json={"screenId": new_id()}
    )
    assert_error(result, 404, "not_found")


async def test_new_code_not_json(stack, token):
    assert_error(
        await post_raw(stack, "/v1/devices/provisioning-codes", "x", "text/plain", token=token),
        415,
        "unsupported_media_type",
    )


async def test_new_code_malformed_json(stack, token):
    assert_error(
        await post_raw(stack, "/v1/devices/provisioning-codes", b'{"screenId"', token=token),
        400,
        "invalid_request",
    )


# =================================================================================================
# GET /v1/devices/provisioning-codes/{code}/status
# =================================================================================================


@pytest.mark.parametrize("bad", ["abc", "abcd1234", "ABCD12345", "ABCD-123"])
async def test_code_status_malformed_code(stack, token, bad):
    result = await stack.call("GET", f"/v1/devices/provisioning-codes/{bad}/status", token=token)
    assert_error(result, 400, "invalid_request", [("code", "pattern")])


async def test_code_status_unknown_code(stack, token):
    result = await stack.call("GET", "/v1/devices/provisioning-codes/ZZZZZZZZ/status", token=token)
    assert_error(result, 404, "not_found")


async def test_code_status_of_another_tenant(stack, token, code):
    other = (await stack.tenant("Other"))["token"]
    result = await stack.call("GET", f"/v1/devices/provisioning-codes/{code}/status", token=other)
    assert_error(result, 404, "not_found")


# =================================================================================================
# GET /v1/screens, /v1/venues, /v1/devices (query parameters)
# =================================================================================================

SCREEN_QUERY_CASES = [
    ("limit=0", [("limit", "range")]),
    ("limit=201", [("limit", "range")]),
    ("limit=abc", [("limit", "range")]),
    ("limit=-1", [("limit", "range")]),
    ("limit=1.5", [("limit", "range")]),
    ("cursor=garbage", [("cursor", "invalid")]),
    (f"cursor={cursor_of([1, 2])}", [("cursor", "invalid")]),
    ("state=bogus", [("state", "enum")]),
    ("venueId=nope", [("venueId", "format")]),
]


@pytest.mark.parametrize(("query", "details"), SCREEN_QUERY_CASES, ids=[c[0] for c in SCREEN_QUERY_CASES])
async def test_list_screens_bad_query(stack, token, query, details):
    result = await stack.call("GET", f"/v1/screens?{query}", token=token)
    assert_error(result, 400, "invalid_request", details)


async def test_list_screens_limit_superscript_digit(stack, token):
    result = await stack.call("GET", "/v1/screens?limit=%C2%B2", token=token)
    assert_error(result, 400, "invalid_request", [("limit", "range")])


@pytest.mark.parametrize(
    ("query", "details"),
    [("limit=0", [("limit", "range")]), ("cursor=garbage", [("cursor", "invalid")])],
    ids=["limit=0", "cursor=garbage"],
)
async def test_list_venues_bad_query(stack, token, query, details):
    assert_error(await stack.call("GET", f"/v1/venues?{query}", token=token), 400, "invalid_request", details)


@pytest.mark.parametrize(
    ("query", "details"),
    [
        ("screenId=nope", [("screenId", "format")]),
        ("status=bogus", [("status", "enum")]),
        ("limit=201", [("limit", "range")]),
        ("cursor=garbage", [("cursor", "invalid")]),
    ],
    ids=["screenId=nope", "status=bogus", "limit=201", "cursor=garbage"],
)
async def test_list_devices_bad_query(stack, token, query, details):
    assert_error(
        await stack.call("GET", f"/v1/devices?{query}", token=token), 400, "invalid_request", details
    )


# =================================================================================================
# POST /oauth/token
# =================================================================================================


async def test_token_missing_grant_type(stack):
    result = await stack.call("POST", "/oauth/token", data={"client_id": "cli_x", "client_secret": "cs_x"})
    assert_error(result, 400, "invalid_request", oauth=True)


async def test_token_password_grant(stack):
    result = await stack.call(
        "POST", "/oauth/token", data={"grant_type": "password", "username": "a", "password": "b"}
    )
    assert_error(result, 400, "unsupported_grant_type", oauth=True)


async def test_token_wrong_secret(stack):
    tenant = await stack.tenant()
    result = await stack.call(
        "POST",
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": tenant["client"]["clientId"],
            "client_secret": "cs_wrong",
        },
    )
    assert_error(result, 401, "invalid_client", oauth=True)


async def test_token_unknown_client(stack):
    result = await stack.call(
        "POST",
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "cli_nobody", "client_secret": "cs_x"},
    )
    assert_error(result, 401, "invalid_client", oauth=True)


async def test_token_malformed_basic_credentials(stack):
    result = await stack.call(
        "POST",
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic !!!not-base64!!!"},
    )
    assert_error(result, 401, "invalid_client", oauth=True)
    assert result[2].headers["WWW-Authenticate"] == 'Basic realm="oauth"'


async def test_token_json_body_instead_of_form(stack):
    tenant = await stack.tenant()
    result = await stack.call(
        "POST",
        "/oauth/token",
        json={
            "grant_type": "client_credentials",
            "client_id": tenant["client"]["clientId"],
            "client_secret": tenant["client"]["clientSecret"],
        },
    )
    assert_error(result, 400, "invalid_request", oauth=True)


async def test_token_client_id_with_nul_character(stack):
    result = await stack.call(
        "POST",
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "cli\x00x", "client_secret": "cs_x"},
    )
    assert_error(result, 401, "invalid_client", oauth=True)
    assert "WWW-Authenticate" not in result[2].headers  # no header was sent, so no challenge


async def test_token_client_secret_with_nul_character_after_a_basic_header(stack):
    """A NUL in a credential is an unknown client; a caller that sent an Authorization header is
    told how to authenticate (RFC 6749 §5.2)."""
    result = await stack.call(
        "POST",
        "/oauth/token",
        headers={"Authorization": "Basic " + base64.b64encode(b"cli_x:cs_x").decode()},
        data={"grant_type": "client_credentials", "client_secret": "cs\x00x"},
    )
    assert_error(result, 401, "invalid_client", oauth=True)
    assert result[2].headers["WWW-Authenticate"] == 'Basic realm="oauth"'


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "client_\x00credentials", "client_id": "cli_x", "client_secret": "cs_x"},
        {"grant_type": "client_credentials", "client_id": "cli_x", "client_secret": "cs_x", "scope": "a\x00"},
        {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": "ddc_\x00"},
        {"grant_type": "client_credentials", "x\x00": "y"},
    ],
)
async def test_token_other_parameters_with_nul_character(stack, form):
    # Encoded here: aiohttp's own form encoder refuses a parameter name holding NUL.
    body, form_type = urllib.parse.urlencode(form), {"Content-Type": "application/x-www-form-urlencoded"}
    result = await stack.call("POST", "/oauth/token", data=body, headers=form_type)
    assert_error(result, 400, "invalid_request", oauth=True)
    assert result[1]["message"] == "parameters must not contain NUL characters"


# =================================================================================================
# Device API: POST /v1/device/heartbeat, POST /v1/device/events
# =================================================================================================

EVENT = {"type": "proof_of_play", "at": "2026-11-23T08:00:00Z", "data": {"itemIndex": 0}}


@pytest.mark.parametrize("path", ["/v1/device/heartbeat", "/v1/device/events"])
async def test_device_api_without_key(stack, path):
    assert_error(await stack.call("POST", path, json={"events": [EVENT]}), 401, "unauthorized")


@pytest.mark.parametrize("path", ["/v1/device/heartbeat", "/v1/device/events"])
async def test_device_api_unknown_key(stack, path):
    result = await stack.call("POST", path, token="dak_" + "A" * 43, json={"events": [EVENT]})
    assert_error(result, 401, "unauthorized")


async def test_device_api_rejects_access_token(stack, token):
    result = await stack.call("POST", "/v1/device/heartbeat", token=token, json={})
    assert_error(result, 401, "unauthorized")


HEARTBEAT_CASES = [
    ("temperature-500", {"temperatureC": 500}, [("temperatureC", "range")]),
    ("temperature-minus-101", {"temperatureC": -101}, [("temperatureC", "range")]),
    ("uptime-negative", {"uptimeSeconds": -1}, [("uptimeSeconds", "range")]),
    ("uptime-string", {"uptimeSeconds": "1"}, [("uptimeSeconds", "type")]),
    ("free-storage-negative", {"freeStorageMB": -5}, [("freeStorageMB", "range")]),
    ("app-version-51-chars", {"appVersion": "1" * 51}, [("appVersion", "length")]),
]


@pytest.mark.parametrize(
    ("body", "details"), [c[1:] for c in HEARTBEAT_CASES], ids=[c[0] for c in HEARTBEAT_CASES]
)
async def test_heartbeat_invalid_field(stack, device_key, body, details):
    result = await stack.call("POST", "/v1/device/heartbeat", token=device_key, json=body)
    assert_error(result, 400, "invalid_request", details)


@pytest.mark.parametrize(
    ("raw", "details", "message"),
    [
        (
            b'{"temperatureC": 1e400}',
            [("temperatureC", "range")],
            "temperatureC must be at least -100 and at most 200",
        ),
        (b'{"freeStorageMB": 1e400}', [("freeStorageMB", "range")], "freeStorageMB is too large a number"),
    ],
    ids=["bounded", "unbounded"],
)
async def test_heartbeat_number_too_large_for_a_float(stack, device_key, raw, details, message):
    """JSON allows numbers no float holds; msgspec refuses them, and so did the re-decoding that
    named the bad fields (a 500)."""
    result = await post_raw(stack, "/v1/device/heartbeat", raw, token=device_key)
    assert_error(result, 400, "invalid_request", details)
    assert result[1]["message"] == message


async def test_heartbeat_malformed_json(stack, device_key):
    result = await post_raw(stack, "/v1/device/heartbeat", b'{"uptimeSeconds": 1', token=device_key)
    assert_error(result, 400, "invalid_request")


async def test_heartbeat_not_json(stack, device_key):
    result = await post_raw(stack, "/v1/device/heartbeat", "uptime=1", "text/plain", token=device_key)
    assert_error(result, 415, "unsupported_media_type")


async def test_heartbeat_body_over_1_mib(stack, device_key):
    result = await post_raw(stack, "/v1/device/heartbeat", OVERSIZED, token=device_key)
    assert_error(result, 413, "payload_too_large")


EVENTS_CASES = [
    ("empty-list", {"events": []}, [("events", "length")]),
    ("501-events", {"events": [EVENT] * 501}, [("events", "length")]),
    ("missing-events", {}, [("events", "required")]),
    ("events-not-list", {"events": EVENT}, [("events", "type")]),
    ("missing-at", {"events": [{"type": "proof_of_play"}]}, [("events[0].at", "required")]),
    ("missing-type", {"events": [{"at": EVENT["at"]}]}, [("events[0].type", "required")]),
    ("at-not-a-time", {"events": [EVENT, {**EVENT, "at": "yesterday"}]}, [("events[1].at", "invalid")]),
    ("at-bad-date", {"events": [{**EVENT, "at": "2026-13-40T08:00:00Z"}]}, [("events[0].at", "invalid")]),
    ("at-number", {"events": [{**EVENT, "at": 1767225600}]}, [("events[0].at", "type")]),
    ("type-empty", {"events": [{**EVENT, "type": ""}]}, [("events[0].type", "length")]),
    ("data-not-object", {"events": [{**EVENT, "data": "x"}]}, [("events[0].data", "type")]),
]


@pytest.mark.parametrize(("body", "details"), [c[1:] for c in EVENTS_CASES], ids=[c[0] for c in EVENTS_CASES])
async def test_events_invalid_field(stack, device_key, body, details):
    result = await stack.call("POST", "/v1/device/events", token=device_key, json=body)
    assert_error(result, 400, "invalid_request", details)


async def test_events_500_accepted(stack, device_key):
    status, body, _ = await stack.call(
        "POST", "/v1/device/events", token=device_key, json={"events": [EVENT] * 500}
    )
    assert (status, body) == (202, {"status": "accepted"})


async def test_events_malformed_json(stack, device_key):
    result = await post_raw(stack, "/v1/device/events", b'{"events": [', token=device_key)
    assert_error(result, 400, "invalid_request")


async def test_events_not_json(stack, device_key):
    result = await post_raw(stack, "/v1/device/events", "x", "text/plain", token=device_key)
    assert_error(result, 415, "unsupported_media_type")


async def test_events_data_with_a_number_too_large_for_a_float(stack, device_key):
    raw = b'{"events": [{"type": "x", "at": "2026-11-23T08:00:00Z", "data": {"n": [1, 1e400]}}]}'
    result = await post_raw(stack, "/v1/device/events", raw, token=device_key)
    assert_error(result, 400, "invalid_request", [("events[0].data.n[1]", "range")])


async def test_events_reject_time_without_offset(stack, device_key):
    body = {"events": [{**EVENT, "at": "2026-11-23T08:00:00"}]}
    result = await stack.call("POST", "/v1/device/events", token=device_key, json=body)
    assert_error(result, 400, "invalid_request", fields=["events[0].at"])


# =================================================================================================
# Unknown paths and methods
# =================================================================================================


@pytest.mark.parametrize("path", ["/nope", "/v1/nothing-here", "/v1/venues/x/y", "/v1/device/nope"])
async def test_unknown_path(stack, token, path):
    assert_error(await stack.call("GET", path, token=token), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/venues", {"GET", "HEAD", "POST"}),
        ("PUT", "/devices/register", {"POST"}),
        ("GET", "/v1/device/heartbeat", {"POST"}),
        ("DELETE", "/oauth/token", {"POST"}),
    ],
)
async def test_wrong_method(stack, token, method, path, allowed):
    result = await stack.call(method, path, token=token)
    assert_error(result, 405, "method_not_allowed")
    assert set(result[2].headers["Allow"].split(",")) == allowed


async def test_unknown_path_with_encoded_newline(stack):
    assert_error(await stack.call("GET", "/nope%0A"), 404, "not_found")

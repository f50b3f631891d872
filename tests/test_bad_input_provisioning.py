"""Bad input at provisioning: a TV's registration (and the limit on failed ones), new pairing codes,
a code's status and the devices list's query parameters (the error shape: tests/bad_input.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest
import pytest_asyncio

from shared.settings import Settings

# `name as name` below: the fixtures shared with the other bad-input modules, re-exported here, for
# pytest looks a fixture up by its name in the test's module.
from tests.bad_input import OVERSIZED, assert_error, post_raw
from tests.bad_input import screen as screen
from tests.bad_input import token as token
from tests.stack import DEVICE_INFO, Stack, new_id


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Most tests here send many bad registrations from one address: lift the failure limit.

    TestRegisterRateLimit below overrides this again with a small limit.
    """
    return msgspec.structs.replace(settings, register_failures_per_window=1000)


def registration(code: str, **device_info: Any) -> dict[str, Any]:
    return {"pairingCode": code, "deviceInfo": {**DEVICE_INFO, **device_info}}


async def post_register(stack: Stack, body: Any) -> tuple[int, Any, Any]:
    return await stack.call("POST", "/devices/register", json=body)


async def assert_code_still_usable(stack: Stack, token: str, code: str) -> None:
    """The code survived the bad requests: still pending, and a valid registration binds it."""
    status, body, _ = await stack.call("GET", f"/v1/devices/provisioning-codes/{code}/status", token=token)
    assert status == 200, body
    assert body["status"] == "pending", body
    status, body = await stack.register(code)
    assert status == 201, body
    assert body["apiKey"].startswith("dak_")


@pytest_asyncio.fixture
async def code(stack: Stack, token: str, screen: dict[str, Any]) -> str:
    return (await stack.code(token, screen["id"]))["code"]


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
# GET /v1/devices (query parameters)
# =================================================================================================


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

"""Bad input at the device API (/v1/device/*): a missing, unknown or wrong kind of key, and bad
heartbeats and events (the error shape: tests/bad_input.py)."""

from __future__ import annotations

import pytest
import pytest_asyncio

# `name as name` below: the fixtures shared with the other bad-input modules, re-exported here, for
# pytest looks a fixture up by its name in the test's module.
from tests.bad_input import OVERSIZED, assert_error, post_raw
from tests.bad_input import token as token
from tests.stack import Stack


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

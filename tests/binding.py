"""Steps and checks the binding-flow tests share: pair a TV, recover one, wait until the gateway or
registry shows a change, read a device's audit trail."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from tests.stack import Stack

KEY = re.compile(r"^dak_[A-Za-z0-9_-]{43}$")
RECOVERY_SECRET = re.compile(r"^drs_[A-Za-z0-9_-]{43}$")
DEFAULT_CONFIG = {
    "syncIntervalMinutes": 5,
    "heartbeatIntervalMinutes": 1,
    "cachePolicy": {"maxSizeGB": 10, "retentionDays": 7},
}
AUDIT_FIELDS = {"id", "at", "deviceId", "screenId", "action", "method", "actor", "clientAddress", "reason"}


def json_shape(value: Any) -> Any:
    """``value`` (as ``json.loads`` read it) with each leaf replaced by its JSON type, numbers told
    apart as a typed decoder tells them: ``10`` is an integer, ``10.0`` a fraction. Python's
    ``10 == 10.0`` would hide the difference a TV app's decoder sees."""
    match value:
        case dict():
            return {key: json_shape(item) for key, item in value.items()}
        case list():
            return [json_shape(item) for item in value]
        case bool():
            return "boolean"
        case int():
            return "integer"
        case float():
            return "fraction"
        case str():
            return "string"
        case None:
            return "null"
    raise TypeError(f"not JSON: {value!r}")


def parse_time(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value)


def assert_error(status: int, body: Any, expected_status: int, error: str) -> None:
    assert status == expected_status, body
    assert isinstance(body, dict) and set(body) <= {"error", "message", "details"}, body
    assert body["error"] == error, body
    assert isinstance(body["message"], str) and body["message"], body


async def pair(stack: Stack, token: str, screen: dict[str, Any] | None = None, **device_info: Any):
    """A TV registered with a pairing code on ``screen`` (a new one if None): ``(screen, registered)``."""
    screen = screen or await stack.screen(token)
    code = await stack.code(token, screen["id"])
    status, registered = await stack.register(code["code"], **device_info)
    assert status == 201, registered
    return screen, registered


async def recover(stack: Stack, hardware_id: Any, secret: Any) -> tuple[int, Any, Any]:
    return await stack.call(
        "POST", "/devices/recover", json={"hardwareId": hardware_id, "recoverySecret": secret}
    )


async def gateway(stack: Stack, key: str) -> tuple[int, Any]:
    status, body, _ = await stack.call("GET", "/v1/device/playlist", token=key)
    return status, body


async def until_gateway(stack: Stack, key: str, status: int, error: str | None = None) -> Any:
    """Wait until the gateway answers ``key`` with ``status`` (and ``error``); its KV is async."""

    async def check() -> Any:
        got, body = await gateway(stack, key)
        if got == status and (error is None or body.get("error") == error):
            return body or True
        return None

    return await stack.eventually(check)


async def until_screen(stack: Stack, token: str, screen_id: str, state: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        status, screen, _ = await stack.call("GET", f"/v1/screens/{screen_id}", token=token)
        assert status == 200, screen
        return screen if screen["state"] == state else None

    return await stack.eventually(check)


async def device(stack: Stack, token: str, device_id: str) -> dict[str, Any]:
    status, body, _ = await stack.call("GET", f"/v1/devices/{device_id}", token=token)
    assert status == 200, body
    return body


async def audit(stack: Stack, token: str, device_id: str) -> list[dict[str, Any]]:
    status, trail, _ = await stack.call("GET", f"/v1/devices/{device_id}/audit", token=token)
    assert status == 200, trail
    assert set(trail) == {"items"}, trail
    for entry in trail["items"]:
        assert set(entry) == AUDIT_FIELDS, trail
        assert entry["deviceId"] == device_id, trail
        parse_time(entry["at"])
    return trail["items"]


def summary(entries: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(e["action"], e["method"], e["actor"]) for e in entries]

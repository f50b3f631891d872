"""Numbers on the wire as the contract's binding sequence shows them: a whole number is a JSON
integer (``10``, never ``10.0``), so a TV app or integration with a typed decoder expecting an
integer reads every answer. The screen-first binding sequence is walked step by step; the answers
the contract shows in full are compared with it key for key and type for type, every other answer
is searched for a whole number written as a fraction.
"""

from __future__ import annotations

from typing import Any

from tests.binding import json_shape

# The contract's examples of the binding sequence, field for field.
# Step 3, "enter code in TV app": the TV sends its pairing code and what it is to POST /devices/register.
REGISTRATION_REQUEST = {
    "pairingCode": "ABCD1234",
    "deviceInfo": {
        "manufacturer": "Sony",
        "model": "BRAVIA-55",
        "osVersion": "Android 12",
        "appVersion": "1.0.0",
        "macAddress": "00:11:22:33:44:55",
        "ipAddress": "192.168.1.100",
        "deviceName": "Lobby Screen",
        "locationHint": "Front desk",
    },
}
# Step 4, "register and bind device": the 201 answer ("<uuid>" and the like stand for the values).
REGISTRATION_ANSWER = {
    "deviceId": "<uuid>",
    "screenId": "<uuid>",
    "apiKey": "dak_<one_time_secret>",
    "tenantId": "<tenant_id>",
    "config": {
        "syncIntervalMinutes": 5,
        "heartbeatIntervalMinutes": 1,
        "cachePolicy": {"maxSizeGB": 10, "retentionDays": 7},
    },
}


def whole_fractions(value: Any, path: str = "") -> list[str]:
    """Where ``value`` holds a whole number written as a fraction (``10.0``)."""
    match value:
        case dict():
            return [found for key, item in value.items() for found in whole_fractions(item, f"{path}.{key}")]
        case list():
            return [found for i, item in enumerate(value) for found in whole_fractions(item, f"{path}[{i}]")]
        case float() if value.is_integer():
            return [f"{path} = {value!r}"]
    return []


class Walk:
    """The flow's calls, each answer's status and numbers checked as it comes."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack

    async def call(self, method: str, path: str, status: int, **kwargs: Any) -> Any:
        got, body, _ = await self.stack.call(method, path, **kwargs)
        assert got == status, (method, path, body)
        assert whole_fractions(body) == [], (method, path, body)
        return body


def test_the_shape_check_tells_integers_from_fractions() -> None:
    assert json_shape({"maxSizeGB": 10}) != json_shape({"maxSizeGB": 10.0})
    assert whole_fractions({"a": [1, {"b": 10.0}], "c": 2.5}) == [".a[1].b = 10.0"]


async def test_every_answer_of_the_binding_sequence_has_the_contracts_numbers(stack):
    walk = Walk(stack)
    tenant = await stack.tenant()
    token = tenant["token"]

    # Step 1: a venue and a screen.
    venue = await walk.call("POST", "/v1/venues", 201, token=token, json={"name": "HQ"})
    screen = await walk.call(
        "POST", "/v1/screens", 201, token=token, json={"venueId": venue["id"], "name": "Lobby"}
    )
    await walk.call("GET", f"/v1/screens/{screen['id']}", 200, token=token)
    await walk.call("GET", f"/v1/screens/{screen['id']}/config", 200, token=token)

    # Step 2: a provisioning code, and its status as the admin polls it.
    code = await walk.call(
        "POST", "/v1/devices/provisioning-codes", 201, token=token, json={"screenId": screen["id"]}
    )
    status_path = f"/v1/devices/provisioning-codes/{code['code']}/status"
    await walk.call("GET", status_path, 200, token=token)

    # Steps 3 and 4: the TV registers with the contract's request; the answer has its example's
    # keys and, number for number, its JSON types (and values: the defaults).
    registered = await walk.call(
        "POST", "/devices/register", 201, json={**REGISTRATION_REQUEST, "pairingCode": code["code"]}
    )
    assert json_shape(registered) == json_shape(REGISTRATION_ANSWER)
    assert registered["config"] == REGISTRATION_ANSWER["config"]
    key = registered["apiKey"]
    await walk.call("GET", status_path, 200, token=token)
    await walk.call("GET", f"/v1/devices/{registered['deviceId']}", 200, token=token)

    # Step 5: the TV polls config and playlist and reports; whole numbers sent as fractions
    # (a JavaScript or Kotlin client may write 10.0) come back as integers, fractions as fractions.
    config = await walk.call("GET", "/v1/device/config", 200, token=key)
    assert json_shape(config) == json_shape(REGISTRATION_ANSWER["config"])
    items = [
        {"type": "image", "url": "https://cdn.example.com/a.png", "durationSeconds": 10.0},
        {"type": "video", "url": "https://cdn.example.com/b.mp4", "durationSeconds": 7.5},
    ]
    playlist = await walk.call(
        "PUT", f"/v1/screens/{screen['id']}/playlist", 200, token=token, json={"items": items}
    )
    assert [item["durationSeconds"] for item in playlist["items"]] == [10, 7.5]
    assert [json_shape(item["durationSeconds"]) for item in playlist["items"]] == ["integer", "fraction"]
    await walk.call("GET", f"/v1/screens/{screen['id']}/playlist", 200, token=token)

    async def polled_playlist() -> Any:
        got, body, _ = await stack.call("GET", "/v1/device/playlist", token=key)
        return body if got == 200 and body["items"] else None

    on_the_tv = await stack.eventually(polled_playlist)
    assert on_the_tv["items"] == playlist["items"]
    assert json_shape(on_the_tv["items"]) == json_shape(playlist["items"])
    await walk.call("GET", "/v1/device/playlist", 200, token=key)

    patched = await walk.call(
        "PATCH",
        f"/v1/screens/{screen['id']}/config",
        200,
        token=token,
        json={"cachePolicy": {"maxSizeGB": 3.0}},
    )
    assert json_shape(patched) == json_shape(REGISTRATION_ANSWER["config"])
    assert patched["cachePolicy"] == {"maxSizeGB": 3, "retentionDays": 7}

    async def polled_config() -> Any:
        got, body, _ = await stack.call("GET", "/v1/device/config", token=key)
        return body if got == 200 and body["cachePolicy"]["maxSizeGB"] == 3 else None

    assert json_shape(await stack.eventually(polled_config)) == json_shape(REGISTRATION_ANSWER["config"])
    # A fraction is still accepted, and stays one.
    halved = await walk.call(
        "PATCH",
        f"/v1/screens/{screen['id']}/config",
        200,
        token=token,
        json={"cachePolicy": {"maxSizeGB": 2.5}},
    )
    assert halved["cachePolicy"]["maxSizeGB"] == 2.5

    heartbeat = {"uptimeSeconds": 60, "appVersion": "1.0.0", "freeStorageMB": 2048.0, "temperatureC": 41.5}
    await walk.call("POST", "/v1/device/heartbeat", 202, token=key, json=heartbeat)
    events = [{"type": "proof_of_play", "at": "2026-11-23T08:00:00Z", "data": {"item": 0}}]
    await walk.call("POST", "/v1/device/events", 202, token=key, json={"events": events})

    async def presence() -> Any:
        got, body, _ = await stack.call("GET", f"/v1/screens/{screen['id']}/presence", token=token)
        return body if got == 200 and body["lastHeartbeat"] else None

    seen = await stack.eventually(presence)
    assert whole_fractions(seen) == []
    assert (seen["lastHeartbeat"]["freeStorageMB"], seen["lastHeartbeat"]["temperatureC"]) == (2048, 41.5)
    await walk.call("GET", "/v1/fleet/status", 200, token=token)
    await walk.call("GET", "/v1/screens", 200, token=token)
    await walk.call("GET", "/v1/devices", 200, token=token)

    # Step 6: revoke; the screen returns to provisioning, the code's status says so.
    await walk.call(
        "POST",
        f"/v1/devices/{registered['deviceId']}/revoke",
        200,
        token=token,
        json={"reason": "Replaced hardware"},
    )
    await walk.call("GET", status_path, 200, token=token)
    await walk.call("GET", f"/v1/devices/{registered['deviceId']}", 200, token=token)

"""One tenant never sees nor changes another's venues, screens, codes, devices, playlists, config or
commands: every attempt is a 404, as if the resource did not exist."""

from __future__ import annotations

from typing import Any

from tests.admin_api import CONFIG_PATCH, PLAYLIST, list_ids, screen_in
from tests.stack import Stack

CONFIG_AFTER_PATCH = {
    "syncIntervalMinutes": 17,
    "heartbeatIntervalMinutes": 1,
    "cachePolicy": {"maxSizeGB": 3, "retentionDays": 2},
}


def assert_not_found(status: int, body: Any, what: str) -> None:
    assert (status, body["error"] if isinstance(body, dict) else body) == (404, "not_found"), (what, body)


async def test_another_tenant_gets_404_on_every_resource_and_changes_nothing(stack: Stack) -> None:
    a = await stack.tenant("Tenant A")
    b = await stack.tenant("Tenant B")
    ta, tb = a["token"], b["token"]

    # A: a paired screen (venue, screen, code, device) and a second screen with a pending code.
    a_screen, a_registered = await stack.paired_device(ta)
    a_venue_id = a_screen["venueId"]
    a_device_id = a_registered["deviceId"]
    a_key = a_registered["apiKey"]
    a_pending_screen = await screen_in(stack, ta, a_venue_id, "Window")
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

    status, a_command, _ = await stack.call(
        "POST", f"/v1/screens/{a_screen['id']}/commands", token=ta, json={"type": "reload"}
    )
    assert status == 202, a_command
    cid = a_command["id"]

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
        ("POST", f"/v1/screens/{sid}/commands", {"type": "reboot"}),
        ("GET", f"/v1/screens/{sid}/commands", None),
        ("GET", f"/v1/screens/{sid}/commands/{cid}", None),
        ("POST", f"/v1/screens/{sid}/commands/{cid}/cancel", None),
        ("GET", f"/v1/screens/{sid}/commands/{cid}/screenshot", None),
    ]
    for method, path, body in attempts:
        status, answer, _ = await stack.call(method, path, token=tb, json=body)
        assert_not_found(status, answer, f"{method} {path}")

    # ---- B's lists hold only B's things ----
    assert await list_ids(stack, tb, "/v1/venues") == [b_screen["venueId"]]
    assert await list_ids(stack, tb, "/v1/screens") == [b_screen["id"]]
    assert await list_ids(stack, tb, "/v1/devices") == [b_registered["deviceId"]]
    assert await list_ids(stack, tb, f"/v1/screens?venueId={a_venue_id}") == []
    assert await list_ids(stack, tb, f"/v1/devices?screenId={sid}") == []

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
    assert sorted(await list_ids(stack, ta, "/v1/screens")) == sorted([sid, pid])
    assert await list_ids(stack, ta, "/v1/venues") == [a_venue_id]
    assert await list_ids(stack, ta, f"/v1/screens/{sid}/commands") == [cid]
    status, command_after, _ = await stack.call("GET", f"/v1/screens/{sid}/commands/{cid}", token=ta)
    assert (status, command_after["status"]) == (200, "pending")
    status, screen_after, _ = await stack.call("GET", f"/v1/screens/{sid}", token=ta)
    assert (screen_after["state"], screen_after["deviceId"]) == ("active", a_device_id)

    # A's TV still works.
    async def a_key_works() -> bool:
        status, _, _ = await stack.call("GET", "/v1/device/config", token=a_key)
        return status == 200

    await stack.eventually(a_key_works)

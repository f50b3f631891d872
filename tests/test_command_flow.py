"""Remote commands end to end, through the entry point: an admin sends, a waiting TV gets the
command at once, uploads a screenshot and reports; the admin sees the result and the image. Each
service restarted between the steps loses nothing (the command lives in PostgreSQL and the bus)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from services.device_gateway.waits import WAITS
from tests.stack import SERVICES, Stack

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(4096)


async def tv_call(stack: Stack, key: str, method: str, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    async with stack.http.request(method, path, headers=headers, **kwargs) as response:
        body = await response.json() if response.content_type == "application/json" else await response.read()
        return response.status, body, response


async def command_status(stack: Stack, token: str, screen_id: str, command_id: str) -> str:
    status, body, _ = await stack.call("GET", f"/v1/screens/{screen_id}/commands/{command_id}", token=token)
    assert status == 200, body
    return str(body["status"])


async def restart(stack: Stack, service: str) -> None:
    await stack.stop_service(service)
    await stack.start_service(service)
    await stack.wait_ready(service)


async def test_a_screenshot_command_from_the_admin_to_the_tv_and_back(stack: Stack) -> None:
    tenant = await stack.tenant()
    token = tenant["token"]
    screen, registered = await stack.paired_device(token)
    key = registered["apiKey"]

    async def key_known() -> bool:
        return (await tv_call(stack, key, "GET", "/v1/device/commands"))[0] == 200

    await stack.eventually(key_known)
    # The TV waits; the admin's command answers it at once, not at the end of its wait.
    waiting = asyncio.create_task(
        tv_call(stack, key, "GET", "/v1/device/commands", headers={"Prefer": "wait=30"})
    )
    waits = stack.runners["device-gateway"].app[WAITS]

    async def held() -> bool:
        return waits.count == 1

    await stack.eventually(held, timeout=15)
    sent_at = time.monotonic()
    status, sent, _ = await stack.call(
        "POST", f"/v1/screens/{screen['id']}/commands", token=token, json={"type": "screenshot"}
    )
    assert status == 202 and sent["status"] == "pending", sent
    status, listed, response = await asyncio.wait_for(waiting, timeout=10)
    assert status == 200 and [item["id"] for item in listed["items"]] == [sent["id"]], listed
    assert time.monotonic() - sent_at < 5 and response.headers["Preference-Applied"] == "wait=30"

    async def delivered() -> bool:
        return await command_status(stack, token, screen["id"], sent["id"]) == "delivered"

    await stack.eventually(delivered)
    path = f"/v1/device/commands/{sent['id']}"
    status, _, _ = await tv_call(
        stack, key, "PUT", f"{path}/screenshot", data=PNG, headers={"Content-Type": "image/png"}
    )
    assert status == 204
    status, body, _ = await tv_call(stack, key, "POST", f"{path}/result", json={"status": "succeeded"})
    assert status == 202, body

    async def succeeded() -> bool:
        return await command_status(stack, token, screen["id"], sent["id"]) == "succeeded"

    await stack.eventually(succeeded)
    status, image, response = await stack.call(
        "GET", f"/v1/screens/{screen['id']}/commands/{sent['id']}/screenshot", token=token
    )
    assert (status, image, response.content_type) == (200, PNG, "image/png")
    # Closed: the TV no longer gets it, and a late result is refused as no longer open.
    assert (await tv_call(stack, key, "GET", "/v1/device/commands"))[1] == {"items": []}
    assert (await tv_call(stack, key, "POST", f"{path}/result", json={"status": "succeeded"}))[0] == 404


async def test_a_command_survives_a_restart_of_every_service(stack: Stack) -> None:
    """Sent, then every service restarted: the TV still gets it; reported, then every service
    restarted again: the result is still recorded."""
    tenant = await stack.tenant()
    token = tenant["token"]
    screen, registered = await stack.paired_device(token)
    key = registered["apiKey"]
    status, sent, _ = await stack.call(
        "POST",
        f"/v1/screens/{screen['id']}/commands",
        token=token,
        json={"type": "display_power", "args": {"on": False}},
    )
    assert status == 202, sent
    for service in SERVICES:
        await restart(stack, service)

    async def listed() -> list[Any] | None:
        status, body, _ = await tv_call(stack, key, "GET", "/v1/device/commands")
        return body["items"] if status == 200 and body["items"] else None

    items = await stack.eventually(listed, timeout=10)
    assert [(item["id"], item["type"], item["args"]) for item in items] == [
        (sent["id"], "display_power", {"on": False})
    ]
    status, body, _ = await tv_call(
        stack,
        key,
        "POST",
        f"/v1/device/commands/{sent['id']}/result",
        json={"status": "failed", "message": "no CEC"},
    )
    assert status == 202, body
    for service in SERVICES:
        await restart(stack, service)

    async def failed() -> bool:
        return await command_status(stack, token, screen["id"], sent["id"]) == "failed"

    await stack.eventually(failed, timeout=10)
    status, body, _ = await stack.call(
        "GET", f"/v1/screens/{screen['id']}/commands/{sent['id']}", token=token
    )
    assert body["message"] == "no CEC", body

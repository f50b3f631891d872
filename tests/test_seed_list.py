"""NATS_URL as a seed list: with a server that does not answer among them, every service still
connects to the one that does, is ready and takes heartbeats, in the process and as its own process."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import aiohttp
import msgspec
import pytest

from shared.environment import to_env
from shared.settings import Settings
from tests.stack import spawn, until_ready

SERVICES = ("registry", "provisioning", "device-gateway", "heartbeat")


@pytest.fixture
def dead_server() -> Iterator[str]:
    """A port bound but not listening: a connection there is refused for as long as the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"nats://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def settings(settings: Settings, dead_server: str) -> Settings:
    return msgspec.structs.replace(settings, nats_url=(dead_server, *settings.nats_url))


async def accepted_heartbeat(stack, key: str) -> bool:
    status, body, _ = await stack.call(
        "POST", "/v1/device/heartbeat", token=key, json={"uptimeSeconds": 60, "appVersion": "1.0.0"}
    )
    assert status in (202, 401), body  # 401: the key has not reached the gateway yet
    return status == 202


async def test_every_service_connects_through_a_seed_list_with_a_dead_server_first(stack, tmp_path):
    assert len(stack.settings.nats_url) == 2
    for service in SERVICES:
        async with aiohttp.ClientSession(stack.url(service)) as http, http.get("/readyz?verbose") as response:
            body = await response.json()
            assert response.status == 200 and body["dependencies"]["nats"]["up"] is True, (service, body)
    tenant = await stack.tenant()
    _, registered = await stack.paired_device(tenant["token"])
    await stack.eventually(lambda: accepted_heartbeat(stack, registered["apiKey"]))

    # The same list as the variable a deployment sets, read by a process of its own.
    await stack.stop_service("device-gateway")
    log = tmp_path / "device-gateway.log"
    assert to_env(stack.settings)["NATS_URL"].count(",") == 1
    process = spawn("device-gateway", stack.settings, log)
    try:
        await until_ready(stack, process, log, "device-gateway")
        await stack.eventually(lambda: accepted_heartbeat(stack, registered["apiKey"]), timeout=10)
    finally:
        process.kill()
        process.wait()

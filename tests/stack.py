"""The four services and the entry point, in this process, on free ports, against real servers.

Tests talk HTTP to the entry point exactly as a user would; helpers walk the common steps.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from devstack import entrypoint
from devstack.services import NotReady, wait_ready
from services.device_gateway.app import create_app as create_gateway
from services.heartbeat.app import create_app as create_heartbeat
from services.provisioning.app import create_app as create_provisioning
from services.registry.app import create_app as create_registry
from shared import bus
from shared.bus_access import SETUP_USER
from shared.environment import environment, to_env
from shared.settings import DEFAULT_PORTS, Settings

SERVICES = {
    "registry": create_registry,
    "provisioning": create_provisioning,
    "device-gateway": create_gateway,
    "heartbeat": create_heartbeat,
}

DEVICE_INFO = {
    "manufacturer": "Sony",
    "model": "BRAVIA-55",
    "osVersion": "Android 12",
    "appVersion": "1.0.0",
    "macAddress": "00:11:22:33:44:55",
    "ipAddress": "192.168.1.100",
    "deviceName": "Lobby Screen",
    "locationHint": "Front desk",
}


def bound_sockets() -> dict[str, socket.socket]:
    """A bound socket per service and the entry point: their ports are ours until the stack
    listens on them (choosing a free port number and binding it later would race other runs)."""
    sockets = {}
    for name in DEFAULT_PORTS:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sockets[name] = sock
    return sockets


class Stack:
    def __init__(self, settings: Settings, sockets: dict[str, socket.socket] | None = None) -> None:
        self.settings = settings
        self._sockets = dict(sockets or {})
        self.runners: dict[str, web.AppRunner] = {}
        self.base_url = f"http://127.0.0.1:{settings.ports['entrypoint']}"
        self.http: aiohttp.ClientSession

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.settings.ports[service]}"

    async def __aenter__(self) -> Stack:
        await make_topology(self.settings)
        for name in SERVICES:
            await self.start_service(name)
        runner = web.AppRunner(
            entrypoint.create_app(
                {name: self.url(name) for name in SERVICES}, entrypoint.BodyLimits.of(self.settings)
            ),
            handler_cancellation=entrypoint.HANDLER_CANCELLATION,
        )
        await runner.setup()
        await self._site(runner, "entrypoint", self.settings).start()
        self.runners["entrypoint"] = runner
        self.http = aiohttp.ClientSession(self.base_url)
        for name in SERVICES:
            await self.wait_ready(name)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.http.close()
        # The entry point first: its idle upstream connections would hold up the services' shutdown.
        for name in reversed(list(self.runners)):
            await self.stop_service(name)

    async def start_service(self, name: str, settings: Settings | None = None) -> web.AppRunner:
        settings = settings or self.settings
        runner = web.AppRunner(SERVICES[name](settings), access_log=None)
        await runner.setup()
        await self._site(runner, name, settings).start()
        self.runners[name] = runner
        return runner

    def _site(self, runner: web.AppRunner, name: str, settings: Settings) -> web.BaseSite:
        sock = self._sockets.pop(name, None)
        if sock is not None:
            return web.SockSite(runner, sock)
        return web.TCPSite(runner, "127.0.0.1", settings.ports[name], reuse_address=True)

    async def stop_service(self, name: str) -> None:
        await self.runners.pop(name).cleanup()

    async def wait_ready(self, name: str) -> None:
        await wait_ready({name: self.url(name)}, within=20)

    # ---- the steps of the flow ----------------------------------------------------------------

    async def call(
        self, method: str, path: str, *, token: str | None = None, json: Any = None, **kwargs: Any
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        headers = kwargs.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, path, json=json, headers=headers, **kwargs) as response:
            body = (
                await response.json()
                if response.content_type == "application/json"
                else await response.read()
            )
            return response.status, body, response

    async def tenant(self, name: str = "Acme Retail") -> dict[str, Any]:
        """A new tenant with an access token: ``{"id", "token", "client": {...}}``."""
        status, tenant, _ = await self.call(
            "POST", "/v1/tenants", token=self.settings.operator_token, json={"name": name}
        )
        assert status == 201, tenant
        client = tenant["client"]
        status, token, _ = await self.client_credentials(client["clientId"], client["clientSecret"])
        assert status == 200, token
        return {**tenant, "token": token["access_token"]}

    async def client_credentials(
        self, client_id: str, client_secret: str, *, basic: bool = False
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        """``POST /oauth/token`` (client credentials grant), secrets in the form or HTTP Basic."""
        if basic:
            return await self.call(
                "POST",
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                headers={"Authorization": aiohttp.BasicAuth(client_id, client_secret).encode()},
            )
        return await self.call(
            "POST",
            "/oauth/token",
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret},
        )

    async def screen(self, token: str, name: str = "Lobby") -> dict[str, Any]:
        status, venue, _ = await self.call("POST", "/v1/venues", token=token, json={"name": "HQ"})
        assert status == 201, venue
        status, screen, _ = await self.call(
            "POST", "/v1/screens", token=token, json={"venueId": venue["id"], "name": name}
        )
        assert status == 201, screen
        return screen

    async def code(self, token: str, screen_id: str) -> dict[str, Any]:
        status, code, _ = await self.call(
            "POST", "/v1/devices/provisioning-codes", token=token, json={"screenId": screen_id}
        )
        assert status == 201, code
        return code

    async def register(self, pairing_code: str, **device_info: Any) -> tuple[int, Any]:
        status, body, _ = await self.call(
            "POST",
            "/devices/register",
            json={"pairingCode": pairing_code, "deviceInfo": {**DEVICE_INFO, **device_info}},
        )
        return status, body

    async def paired_device(self, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """A screen and the registration of a TV on it: ``(screen, registered)``."""
        screen = await self.screen(token)
        code = await self.code(token, screen["id"])
        status, registered = await self.register(code["code"])
        assert status == 201, registered
        return screen, registered

    async def eventually(self, check: Any, *, timeout: float = 5, interval: float = 0.02) -> Any:
        """Await ``check()`` until it returns a truthy value; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            result = await check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
            await asyncio.sleep(interval)


async def make_topology(settings: Settings) -> None:
    """The streams and buckets, as the setup step makes them (services may not)."""
    nc = await bus.connect(settings, SETUP_USER)
    try:
        await bus.ensure_topology(
            nc.jetstream(),
            settings.nats_replicas,
            token_ttl_seconds=settings.token_ttl_seconds,
            heartbeat_stream_hours=settings.heartbeat_stream_hours,
        )
    finally:
        await nc.close()


def new_id() -> str:
    return str(uuid.uuid4())


async def raw_exchange(port: int, request: bytes) -> tuple[int, bytes, bytes]:
    """``request`` as bytes in one write (what no client library would send, or send so), and the
    answer: status, body, head. The answer is read by its Content-Length, not to the connection's
    end: the server may linger to drain what was sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = next(
            int(header.split(b":")[1])
            for header in head.split(b"\r\n")
            if header.lower().startswith(b"content-length:")
        )
        body = await asyncio.wait_for(reader.readexactly(length), 10)
    finally:
        writer.close()
    return int(head.split()[1]), body, head


def spawn(service: str, settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """``service`` as its own process with ``settings`` (its port among them), logging to ``log``."""
    # At info level whatever the stack's settings say: tests read the process's log for its steps.
    overrides = environment(Settings, host="127.0.0.1", log_format="json", log_level="info")
    env = {**os.environ, **to_env(settings), **overrides}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services", service], env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def until_ready(
    stack: Stack, process: subprocess.Popen[bytes], log: Path, service: str = "provisioning"
) -> None:
    try:
        await wait_ready({service: stack.url(service)}, [process], within=30)
    except NotReady as error:
        tail = (await asyncio.to_thread(log.read_text))[-3000:]
        raise AssertionError(f"{error}\n{tail}") from None

"""A tenant's fleet made through the public API, as an operator and TVs would make it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")

DEVICE_INFO = {
    "manufacturer": "Bench",
    "model": "TV",
    "osVersion": "1",
    "appVersion": "1",
    "macAddress": "00:11:22:33:44:55",
    "ipAddress": "10.0.0.1",
    "deviceName": "TV",
}


@dataclass(frozen=True)
class Device:
    key: str
    device_id: str
    screen_id: str


class Admin:
    """One tenant's admin, calling registry and provisioning directly (no entry point in between)."""

    def __init__(self, http: aiohttp.ClientSession, urls: dict[str, str]) -> None:
        self.http = http
        self.urls = urls
        self.headers: dict[str, str] = {}
        self.venue_id = ""

    async def sign_up(self, operator_token: str) -> None:
        tenant = await self._call(
            "POST",
            "registry",
            "/v1/tenants",
            201,
            json={"name": "Bench"},
            headers={"Authorization": f"Bearer {operator_token}"},
        )
        client = tenant["client"]
        form = {
            "grant_type": "client_credentials",
            "client_id": client["clientId"],
            "client_secret": client["clientSecret"],
        }
        token = await self._call("POST", "registry", "/oauth/token", 200, data=form)
        self.headers = {"Authorization": f"Bearer {token['access_token']}"}
        venue = await self._call(
            "POST", "registry", "/v1/venues", 201, json={"name": "HQ"}, headers=self.headers
        )
        self.venue_id = venue["id"]

    async def screen_with_code(self, name: str) -> tuple[str, str]:
        screen = await self._call(
            "POST",
            "registry",
            "/v1/screens",
            201,
            json={"venueId": self.venue_id, "name": name},
            headers=self.headers,
        )
        code = await self._call(
            "POST",
            "provisioning",
            "/v1/devices/provisioning-codes",
            201,
            json={"screenId": screen["id"]},
            headers=self.headers,
        )
        return screen["id"], code["code"]

    async def register(self, code: str) -> dict[str, Any]:
        """What the TV does: no credential, just the code."""
        return await self._call(
            "POST",
            "provisioning",
            "/devices/register",
            201,
            json={"pairingCode": code, "deviceInfo": DEVICE_INFO},
        )

    async def revoke(self, device_id: str) -> None:
        await self._call(
            "POST",
            "provisioning",
            f"/v1/devices/{device_id}/revoke",
            200,
            json={"reason": "bench"},
            headers=self.headers,
        )

    async def _call(self, method: str, service: str, path: str, status: int, **kwargs: Any) -> dict[str, Any]:
        async with self.http.request(method, self.urls[service] + path, **kwargs) as response:
            body = await response.json()
            if response.status != status:
                raise RuntimeError(f"{method} {path}: {response.status} {body}")
            return body


async def pair_devices(admin: Admin, count: int, concurrency: int) -> list[Device]:
    async def pair(index: int) -> Device:
        screen_id, code = await admin.screen_with_code(f"Screen {index}")
        registered = await admin.register(code)
        return Device(registered["apiKey"], registered["deviceId"], screen_id)

    return await bounded(concurrency, [partial(pair, i) for i in range(count)])


async def new_codes(admin: Admin, count: int, concurrency: int) -> list[str]:
    """Pairing codes for ``count`` new screens."""
    made = await bounded(concurrency, [partial(admin.screen_with_code, f"R{i}") for i in range(count)])
    return [code for _, code in made]


async def registration_latencies(
    admin: Admin, codes: list[str], concurrency: int
) -> tuple[list[float], float]:
    """Milliseconds per registration with ``concurrency`` TVs registering at once, and the seconds
    they took in all."""

    async def timed(code: str) -> float:
        started = time.perf_counter()
        await admin.register(code)
        return (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    latencies = await bounded(concurrency, [partial(timed, code) for code in codes])
    return latencies, time.perf_counter() - started


async def bounded(concurrency: int, calls: list[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run ``calls`` with at most ``concurrency`` in flight; results in order."""
    slots = asyncio.Semaphore(concurrency)

    async def run(call: Callable[[], Awaitable[T]]) -> T:
        async with slots:
            return await call()

    return await asyncio.gather(*(run(call) for call in calls))

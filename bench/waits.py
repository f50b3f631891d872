"""Figure 8 of ``make bench``: TVs waiting (``Prefer: wait=60``) on one gateway process.

The TVs' device keys and screens are put straight into the ``device-keys`` and ``screen-content``
buckets (as provisioning and registry write them); each TV is one keep-alive HTTP/1.1 connection
of a raw asyncio protocol (an aiohttp client per TV would cost the bench more than the gateway).
Measured: the gateway's memory per waiting TV, the time from a change put into ``screen-content``
to the answer of the TV waiting on it (one screen at a time, then every screen at once), and the
gateway's 304 polls per second with and without the waiting TVs.

    python -m bench --only 8 [--waiting 10000]
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import secrets
import subprocess
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import msgspec
from prometheus_client.parser import text_string_to_metric_families

from bench.load import cpu_seconds, rss_bytes, wrk
from devstack.services import stop
from shared import bus
from shared.bus_access import SETUP_USER
from shared.events import ScreenConfig
from shared.projections import (
    DEVICE_KEYS_BUCKET,
    SCREEN_CONTENT_BUCKET,
    DeviceKeyEntry,
    ScreenContent,
    device_key_digest,
    device_key_name,
    kv_subject,
)
from shared.settings import Settings

WAIT = 60  # what the TVs ask: DEVICE_WAIT_MAX_SECONDS' default
PATH = "/v1/device/config"  # a tenant-wide change is a config change


class Gateways(Protocol):
    """What the bench lends this figure: its settings, a gateway process and its arguments."""

    settings: Settings

    async def start_gateway(self, workers: int = 1) -> tuple[subprocess.Popen[bytes], str]: ...


def raise_file_limit(wanted: int) -> int:
    """The soft limit of open files up to the hard one (a gateway started now inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return min(wanted, hard)


class TV(asyncio.Protocol):
    """One TV: asks for its config, then waits for the next with If-None-Match and Prefer, again
    and again on one connection; after a 200 within a second, after 429 or 503 in one to two."""

    def __init__(self, key: str, host: str, fleet: Fleet | None) -> None:
        self.head = (
            f"GET {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nPrefer: wait={WAIT}\r\n"
        ).encode()
        self.fleet = fleet
        self.etag = b""
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.answered: asyncio.Future[float] | None = None  # set by whoever waits for a change

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.ask()

    def ask(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        condition = b"If-None-Match: " + self.etag + b"\r\n" if self.etag else b""
        self.transport.write(self.head + condition + b"\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buffer[:end].split(b"\r\n")
            headers = dict(line.split(b": ", 1) for line in lines[1:] if b": " in line)
            headers = {name.lower(): value for name, value in headers.items()}
            length = int(headers.get(b"content-length", b"0"))
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.on_answer(int(lines[0].split(b" ", 2)[1]), headers.get(b"etag", self.etag))

    def on_answer(self, status: int, etag: bytes) -> None:
        at = time.perf_counter()
        if self.fleet is None:
            return
        self.fleet.statuses[status] = self.fleet.statuses.get(status, 0) + 1
        if status == 200:
            self.etag = etag
            if self.answered is not None and not self.answered.done():
                self.answered.set_result(at)
        # As docs/tv-app.md asks: after a change, some jitter before the next wait (a tenant-wide
        # change must not bring the whole fleet back in one instant); after a 304 at once.
        if status in (429, 503):
            asyncio.get_running_loop().call_later(1 + random.random(), self.ask)
        elif status == 200:
            asyncio.get_running_loop().call_later(random.random(), self.ask)
        else:
            self.ask()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.fleet is not None:
            self.fleet.lost += 1


class Fleet:
    """The waiting TVs, their screens, and what the gateway answered them."""

    def __init__(self, count: int) -> None:
        self.tenant = uuid.uuid4()
        self.keys = ["dak_" + secrets.token_urlsafe(32) for _ in range(count)]
        self.screens = [uuid.uuid4() for _ in range(count)]
        self.tvs: list[TV] = []
        self.statuses: dict[int, int] = {}
        self.lost = 0
        self.version = 0

    def disconnect(self) -> None:
        """Close every TV's connection; none asks again."""
        for tv in self.tvs:
            tv.fleet = None  # closed by us: not a connection lost
            if tv.transport is not None:
                tv.transport.close()
        self.tvs = []

    def content(self, index: int) -> bytes:
        """The screen's content with this round's config: every round is a change."""
        config = ScreenConfig(sync_interval_minutes=1 + self.version % 1000)
        return msgspec.json.encode(
            ScreenContent(
                screen_id=self.screens[index],
                tenant_id=self.tenant,
                playlist_version=1,
                items=[],
                config=config,
            )
        )

    async def put(self, settings: Settings, screens: range | list[int], *, keys: bool = False) -> float:
        """Put the screens' content (and with ``keys`` their TVs' keys) into the buckets; the
        ``perf_counter`` from just before the first put."""
        nc = await bus.connect(settings, SETUP_USER)
        try:
            self.version += 1
            started = time.perf_counter()
            for index in screens:
                if keys:
                    entry = DeviceKeyEntry(
                        device_id=uuid.uuid4(),
                        screen_id=self.screens[index],
                        tenant_id=self.tenant,
                        status="active",
                    )
                    name = device_key_name(device_key_digest(self.keys[index]))
                    await nc.publish(kv_subject(DEVICE_KEYS_BUCKET, name), msgspec.json.encode(entry))
                await nc.publish(
                    kv_subject(SCREEN_CONTENT_BUCKET, str(self.screens[index])), self.content(index)
                )
            await nc.flush(timeout=60)
            return started
        finally:
            await nc.close()


async def waiting_figures(bench: Gateways, keys_file: Path, *, count: int, seconds: int) -> dict[str, Any]:
    count = raise_file_limit(count + 2000) - 2000  # the gateway's and ours, besides the TVs'
    fleet = Fleet(count)
    await fleet.put(bench.settings, range(count), keys=True)
    await asyncio.sleep(1)  # JetStream has stored them before the gateway loads the buckets
    gateway, url = await bench.start_gateway()
    figures: dict[str, Any] = {"waiting_tvs": count, "wait_s": WAIT}
    figures["polls_without"] = _poll_figures(
        wrk(url + "/v1/device/playlist", keys_file, server_pid=gateway.pid, seconds=seconds)
    )
    rss_before = rss_bytes(gateway.pid)
    figures["connect_s"], figures["held"] = await _connect(fleet, url)
    rss_after = rss_bytes(gateway.pid)
    figures["rss_before_mb"] = round(rss_before / 2**20, 1)
    figures["rss_after_mb"] = round(rss_after / 2**20, 1)
    figures["bytes_per_waiting_tv"] = round((rss_after - rss_before) / count)
    figures["polls_with"] = _poll_figures(
        wrk(url + "/v1/device/playlist", keys_file, server_pid=gateway.pid, seconds=seconds)
    )
    figures["one_screen"] = await _one_screen(bench.settings, fleet, samples=200)
    figures["every_screen"] = await _every_screen(bench.settings, fleet, gateway.pid, url)
    # A rollout's SIGTERM with every TV waiting: each is answered at once, the drain does not wait.
    async with aiohttp.ClientSession() as http:
        await _until_held(http, url, count)
    figures["connections_lost"] = fleet.lost  # before the stop, which closes every connection
    started = time.perf_counter()
    await asyncio.to_thread(stop, gateway)
    figures["stop_with_waiting_s"] = round(time.perf_counter() - started, 2)
    fleet.disconnect()
    workers = os.cpu_count() or 1
    if workers > 1:  # as deployed: a worker per core, each holding its share of the TVs
        gateway, url = await bench.start_gateway(workers)
        await _connect(fleet, url)
        figures["every_screen_all_cores"] = {
            "workers": workers,
            **await _every_screen(bench.settings, fleet, gateway.pid, url),
        }
        fleet.disconnect()
        stop(gateway)
    figures["statuses"] = {str(status): n for status, n in sorted(fleet.statuses.items())}
    return figures


async def _connect(fleet: Fleet, url: str) -> tuple[float, int]:
    """Every TV connected and waiting: the seconds it took, and how many the gateway holds."""
    host, port = url.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    for first in range(0, len(fleet.keys), 100):  # a few at a time: the listen backlog is 128
        connections = [
            loop.create_connection(partial(TV, key, f"{host}:{port}", fleet), host, int(port))
            for key in fleet.keys[first : first + 100]
        ]
        fleet.tvs += [protocol for _, protocol in await asyncio.gather(*connections)]
    async with aiohttp.ClientSession() as http:
        held = await _until_held(http, url, len(fleet.keys))
    return round(time.perf_counter() - started, 1), held


async def _until_held(http: aiohttp.ClientSession, url: str, count: int) -> int:
    """Until the gateway's gauge counts ``count`` waiting polls (it is set every 5 s), at most 60 s."""
    deadline = time.monotonic() + 60
    held = 0
    while time.monotonic() < deadline:
        async with http.get(url + "/metrics") as response:
            text = await response.text()
        for family in text_string_to_metric_families(text):
            if family.name == "gateway_waiting_requests":
                held = int(sum(sample.value for sample in family.samples))
        if held >= count:
            break
        await asyncio.sleep(1)
    return held


async def _one_screen(settings: Settings, fleet: Fleet, *, samples: int) -> dict[str, Any]:
    """One screen's change at a time: from just before its put to its TV's answer."""
    latencies = []
    nc = await bus.connect(settings, SETUP_USER)
    try:
        for index in random.sample(range(len(fleet.tvs)), samples):
            tv = fleet.tvs[index]
            tv.answered = asyncio.get_running_loop().create_future()
            fleet.version += 1
            started = time.perf_counter()
            await nc.publish(
                kv_subject(SCREEN_CONTENT_BUCKET, str(fleet.screens[index])), fleet.content(index)
            )
            async with asyncio.timeout(10):
                latencies.append((await tv.answered - started) * 1000)
            await asyncio.sleep(0.01)  # the TV asks again before the next sample
    finally:
        await nc.close()
    return percentiles(latencies)


async def _every_screen(settings: Settings, fleet: Fleet, gateway: int, url: str) -> dict[str, Any]:
    """Every screen's config changed at once (a tenant-wide change): from just before the first put
    to each TV's answer; and the gateway's CPU meanwhile."""
    async with aiohttp.ClientSession() as http:  # all waiting (some were told 429 before)
        held = await _until_held(http, url, len(fleet.tvs))
    loop = asyncio.get_running_loop()
    for tv in fleet.tvs:
        tv.answered = loop.create_future()
    cpu, shed = cpu_seconds(gateway), fleet.statuses.get(429, 0)
    started = await fleet.put(settings, range(len(fleet.tvs)))
    put_s = time.perf_counter() - started
    answered = [tv.answered for tv in fleet.tvs if tv.answered is not None]
    done, pending = await asyncio.wait(answered, timeout=30)
    latencies = [(future.result() - started) * 1000 for future in done]
    return {
        "held": held,
        "puts_s": round(put_s, 3),
        "unanswered": len(pending),
        "gateway_cpu_s": round(cpu_seconds(gateway) - cpu, 2),
        "told_429": fleet.statuses.get(429, 0) - shed,
        **percentiles(latencies),
    }


def _poll_figures(load: Any) -> dict[str, Any]:
    return {
        "rate": round(load.rate),
        "p99_ms": load.p99_ms,
        "failed": load.failed,
        "server_cores": round(load.server_cores, 2),
    }


def percentiles(latencies_ms: list[float]) -> dict[str, Any]:
    ordered = sorted(latencies_ms)
    if not ordered:
        return {"count": 0}
    return {
        "count": len(ordered),
        "p50_ms": round(ordered[len(ordered) // 2], 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max_ms": round(ordered[-1], 2),
    }


def table_rows(figures: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The rows of ``make bench``'s table for figure 8."""
    w = figures
    one, every = w["one_screen"], w["every_screen"]
    without, with_ = w["polls_without"], w["polls_with"]
    return [
        (
            "8. gateway memory per waiting TV",
            f"{w['bytes_per_waiting_tv']} B",
            f"{w['held']} of {w['waiting_tvs']} held by one process; RSS {w['rss_before_mb']} ->"
            f" {w['rss_after_mb']} MiB; connected in {w['connect_s']} s; SIGTERM to exit"
            f" {w['stop_with_waiting_s']} s",
        ),
        (
            "8. one screen's change -> its TV answered, p50 / p99",
            f"{one['p50_ms']:.1f} / {one['p99_ms']:.1f} ms",
            f"n={one['count']}, max {one['max_ms']:.1f} ms, among {w['held']} waiting",
        ),
        (
            "8. every screen changed -> all answered, p50 / p99",
            f"{every['p50_ms']:.0f} / {every['p99_ms']:.0f} ms",
            f"n={every['count']}, unanswered {every['unanswered']}, max {every['max_ms']:.0f} ms;"
            f" gateway CPU {every['gateway_cpu_s']} s, told 429 {every['told_429']}",
        ),
        *(
            [
                (
                    f"8. same, {every['workers']} workers, p50 / p99",
                    f"{every['p50_ms']:.0f} / {every['p99_ms']:.0f} ms",
                    f"n={every['count']}, unanswered {every['unanswered']}, max {every['max_ms']:.0f} ms;"
                    f" gateway CPU {every['gateway_cpu_s']} s, told 429 {every['told_429']}",
                )
                for every in [w["every_screen_all_cores"]]
            ]
            if "every_screen_all_cores" in w
            else []
        ),
        (
            "8. 304 polls/s without / with the waiting TVs",
            f"{without['rate']} / {with_['rate']}",
            f"p99 {without['p99_ms']:.1f} / {with_['p99_ms']:.1f} ms; failed {without['failed']} /"
            f" {with_['failed']}; answers to the TVs {w['statuses']},"
            f" connections lost {w['connections_lost']}",
        ),
    ]

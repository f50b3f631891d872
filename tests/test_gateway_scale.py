"""The device gateway under scale: workers sharing a port, load shedding, and start-up while loading.

Subprocess tests run ``python -m services.device_gateway`` exactly as a container does, against the
same real PostgreSQL and nats-server as the in-process stack that pairs and revokes the devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.__main__ import bulk_keys
from services.device_gateway.devices import PROJECTIONS
from services.device_gateway.projections import DeviceKey, pack_key_entry
from shared.bus import NC
from shared.projections import DEVICE_KEYS_BUCKET, DeviceKeyEntry
from shared.settings import Settings
from tests.stack import Stack

ROOT = Path(__file__).resolve().parent.parent
PLAYLIST = "/v1/device/playlist"
HEARTBEAT = "/v1/device/heartbeat"
REFUSED = "refused"


# ---- helpers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn_gateway(settings: Settings, port: int, *, workers: int, log: Path) -> subprocess.Popen[bytes]:
    """The gateway as its own process (group), on ``port``, logging JSON to ``log``."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "NATS_URL": ",".join(settings.nats_url),
        "NATS_PASSWORD": settings.nats_password,
        "DEVICE_GATEWAY_PORT": str(port),
        "HOST": "127.0.0.1",
        "WORKERS": str(workers),
        "TOKEN_VERIFY_KEYS": ",".join(settings.token_verify_keys),
        "LOG_FORMAT": "json",
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services", "device-gateway"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and the workers it started (its own session, so its own group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def alive(pid: int) -> bool:
    """The process still exists (a zombie not yet reaped included)."""
    return Path(f"/proc/{pid}").exists()


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended while we looked
            continue
        fields = text.rpartition(")")[2].split()  # after "pid (comm)": state, ppid, ...
        if int(fields[1]) == pid:
            found.append(int(text.split(" ", 1)[0]))
    return sorted(found)


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


async def fetch(
    http: aiohttp.ClientSession, method: str, url: str, key: str | None = None, json: Any = None
) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with http.request(method, url, headers=headers, json=json) as response:
        body = await response.json() if response.content_type == "application/json" else await response.read()
        return response.status, body, response.headers


async def status_is(call: Any, expected: int) -> bool:
    """For ``stack.eventually``: whether the awaited ``(status, ...)`` call answered ``expected``."""
    return (await call)[0] == expected


async def outcome(http: aiohttp.ClientSession, url: str, key: str) -> int | str:
    """A playlist poll's status, or ``"refused"`` when nothing listens on the port."""
    try:
        status, _, _ = await fetch(http, "GET", url + PLAYLIST, key)
        return status
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, ConnectionRefusedError):
            return REFUSED
        raise


async def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            assert process.poll() is None, f"the gateway exited ({process.returncode}):\n{tail(log)}"
            try:
                async with http.get(url + "/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            assert time.monotonic() < deadline, f"the gateway is not ready after {timeout}s:\n{tail(log)}"
            await asyncio.sleep(0.05)


def fresh_connections() -> aiohttp.ClientSession:
    """Every request on a new connection, so SO_REUSEPORT spreads them over the workers."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


def worker_of(headers: Any) -> str:
    # A generated request id starts with a prefix drawn once per process (shared/http.py).
    return headers["X-Request-ID"][:12]


def playlist_requests_counted(metrics_text: str) -> Counter[str]:
    counted: Counter[str] = Counter()
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "http_requests":
            for sample in family.samples:
                if sample.name == "http_requests_total" and sample.labels["route"] == PLAYLIST:
                    counted[sample.labels["status"]] += int(sample.value)
    return counted


async def block_the_loop(stop: asyncio.Event) -> None:
    """The services share the test's event loop: holding it makes every one of them lag."""
    while not stop.is_set():
        time.sleep(0.2)  # noqa: ASYNC251 - blocking the loop is the point
        await asyncio.sleep(0.01)


# ---- tests --------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_workers_share_one_port_each_enforce_a_revoke_and_stop_cleanly(stack, tmp_path):
    """Two workers serve one port, both reject a revoked key, /metrics sums them, SIGTERM ends all."""
    tenant = await stack.tenant()
    _, registered = await stack.paired_device(tenant["token"])
    key, device_id = registered["apiKey"], registered["deviceId"]
    port, log = free_port(), tmp_path / "gateway.log"
    url = f"http://127.0.0.1:{port}"
    supervisor = spawn_gateway(stack.settings, port, workers=2, log=log)
    sent: Counter[str] = Counter()  # playlist requests we made, by status
    try:
        await wait_ready(url, supervisor, log)
        workers = children_of(supervisor.pid)
        assert len(workers) == 2, workers

        async with fresh_connections() as http:

            async def poll() -> tuple[int, Any, Any]:
                status, body, headers = await fetch(http, "GET", url + PLAYLIST, key)
                sent[str(status)] += 1
                return status, body, headers

            served_by: set[str] = set()

            async def both_workers_serve() -> bool:
                status, body, headers = await poll()
                if status == 200:
                    assert body["screenId"] == registered["screenId"]
                    served_by.add(worker_of(headers))
                return len(served_by) == 2

            await stack.eventually(both_workers_serve, timeout=20)

            status, body, _ = await stack.call(
                "POST", f"/v1/devices/{device_id}/revoke", token=tenant["token"], json={"reason": "test"}
            )
            assert status == 200, body

            async def forty_revoked() -> set[str] | None:
                rejected_by = set()
                for _ in range(40):
                    status, body, headers = await poll()
                    if status != 401 or body["error"] != "device_revoked":
                        return None
                    rejected_by.add(worker_of(headers))
                return rejected_by

            rejected_by = await stack.eventually(forty_revoked, timeout=5)
            assert rejected_by == served_by  # 40 fresh connections reached both workers

            async def all_counted() -> bool:
                # Each worker adds its tallied requests to the shared metrics within a second
                # (shared/request_metrics.py); the one scraped adds its own at once.
                async with http.get(url + "/metrics") as response:
                    assert response.status == 200
                    return playlist_requests_counted(await response.text()) == sent

            await stack.eventually(all_counted, timeout=5, interval=0.2)
        assert sent["401"] >= 40

        supervisor.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(supervisor.wait, 20) == 0, tail(log)
        assert not [pid for pid in workers if alive(pid)], tail(log)
        # The supervisor does not report its workers' exit status while stopping; a worker that
        # failed to stop cleanly would have left a traceback or an error line.
        text = log.read_text()
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert "Traceback" not in text and not [line for line in lines if line["level"] == "error"], tail(log)
    finally:
        kill_group(supervisor)


async def test_a_lagging_event_loop_sheds_device_requests(settings, sockets):
    """Past gateway_max_lag_ms the gateway answers 429 with a spread Retry-After, and recovers."""
    async with Stack(msgspec.structs.replace(settings, gateway_max_lag_ms=50), sockets) as stack:
        tenant = await stack.tenant()
        _, registered = await stack.paired_device(tenant["token"])
        key = registered["apiKey"]

        async def status_of(method: str, path: str, expected: int, **kwargs: Any) -> Any:
            status, body, response = await stack.call(method, path, token=key, **kwargs)
            return (body, response.headers) if status == expected else None

        await stack.eventually(lambda: status_of("GET", PLAYLIST, 200))

        stop = asyncio.Event()
        blocker = asyncio.create_task(block_the_loop(stop))
        try:
            body, headers = await stack.eventually(lambda: status_of("GET", PLAYLIST, 429), timeout=10)
            assert body["error"] == "rate_limited"
            assert headers["Retry-After"].isdigit() and 5 <= int(headers["Retry-After"]) <= 15
            body, _ = await stack.eventually(lambda: status_of("POST", HEARTBEAT, 429, json={}), timeout=10)
            assert body["error"] == "rate_limited"
        finally:
            stop.set()
            await blocker

        await stack.eventually(lambda: status_of("GET", PLAYLIST, 200), timeout=10)
        await stack.eventually(lambda: status_of("POST", HEARTBEAT, 202, json={}), timeout=10)


async def test_a_publish_backlog_sheds_reports(settings, sockets, nats_server):
    """With gateway_max_pending_reports=1 and the bus away, a report past the backlog is shed (429)."""
    async with Stack(msgspec.structs.replace(settings, gateway_max_pending_reports=1), sockets) as stack:
        tenant = await stack.tenant()
        _, registered = await stack.paired_device(tenant["token"])
        url = stack.url("device-gateway") + HEARTBEAT
        gateway_nats = stack.runners["device-gateway"].app[NC]

        async with aiohttp.ClientSession() as http:

            async def heartbeat(delay: float = 0) -> tuple[int, Any, Any]:
                await asyncio.sleep(delay)
                return await fetch(http, "POST", url, registered["apiKey"], json={})

            async def accepted() -> bool:
                return (await heartbeat())[0] == 202

            async def disconnected() -> bool:
                return not gateway_nats.is_connected

            await stack.eventually(accepted)
            nats_server.stop()
            try:
                await stack.eventually(disconnected)
                # The second starts a moment later, while the first waits (2 s) for its ack.
                first, second = await asyncio.gather(heartbeat(), heartbeat(delay=0.3))
                assert (first[0], first[1]["error"], first[2]["Retry-After"]) == (503, "unavailable", "5")
                assert (second[0], second[1]["error"]) == (429, "rate_limited")
                assert 5 <= int(second[2]["Retry-After"]) <= 15
            finally:
                # The same port: every client reconnects, and the stack can drain them as it stops.
                nats_server.start()
                for name in ("registry", "provisioning", "device-gateway", "heartbeat"):
                    await stack.wait_ready(name)
            await stack.eventually(accepted, timeout=10)


async def test_no_false_401_while_the_projections_load(stack):
    """Before the buckets are loaded an unknown key gets 503 + Retry-After, a known one is served."""
    tenant = await stack.tenant()
    _, registered = await stack.paired_device(tenant["token"])
    unknown = "dak_" + uuid.uuid4().hex

    async def playlist(key: str) -> tuple[int, Any, Any]:
        status, body, response = await stack.call("GET", PLAYLIST, token=key)
        return status, body, response.headers

    await stack.eventually(lambda: status_is(playlist(registered["apiKey"]), 200))
    projections = stack.runners["device-gateway"].app[PROJECTIONS]
    projections.ready = False
    try:
        status, body, headers = await playlist(unknown)
        assert (status, body["error"]) == (503, "unavailable")
        assert int(headers["Retry-After"]) >= 1
        status, body, _ = await playlist(registered["apiKey"])
        assert status == 200 and body["screenId"] == registered["screenId"]
    finally:
        projections.ready = True
    status, body, headers = await playlist(unknown)
    assert (status, body["error"]) == (401, "unauthorized")
    assert headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.timeout(240)
async def test_the_port_opens_only_once_the_keys_are_loaded(stack, settings, tmp_path):
    """A gateway starting on a large bucket refuses connections while loading, never answers 401:
    its first answer comes after it logged the keys loaded."""
    await bulk_keys(settings, first=0, count=150_000)
    # Paired after the bulk keys, so its key comes last in the load: a port open too early would
    # answer this key 503 (or 401) before it reached the projection.
    tenant = await stack.tenant()
    _, registered = await stack.paired_device(tenant["token"])
    key = registered["apiKey"]
    await stack.eventually(lambda: status_is(stack.call("GET", PLAYLIST, token=key), 200), timeout=60)

    port, log = free_port(), tmp_path / "gateway.log"
    url = f"http://127.0.0.1:{port}"
    # (wall clock when the outcome came back, as the log's timestamps are; outcome). Not when the
    # request was sent: under load the connect may happen well after that, when the port is open.
    outcomes: list[tuple[float, int | str]] = []
    gateway = spawn_gateway(settings, port, workers=1, log=log)
    try:
        deadline = time.monotonic() + 120
        async with fresh_connections() as http:
            while not outcomes or outcomes[-1][1] != 200:
                assert gateway.poll() is None, f"the gateway exited ({gateway.returncode}):\n{tail(log)}"
                assert time.monotonic() < deadline, (
                    f"not serving after 120 s: {Counter(o for _, o in outcomes)}\n{tail(log)}"
                )
                result = await outcome(http, url, key)
                outcomes.append((time.time(), result))
                await asyncio.sleep(0.005)
            for _ in range(5):
                result = await outcome(http, url, key)
                outcomes.append((time.time(), result))
    finally:
        kill_group(gateway)

    seen = Counter(result for _, result in outcomes)
    assert set(seen) == {REFUSED, 200}, seen  # never a 401, nor a 503 "starting"
    assert [result for _, result in outcomes[-6:]] == [200] * 6
    loaded = [
        datetime.fromisoformat(line["timestamp"]).timestamp()
        for line in map(json.loads, filter(lambda text: text.startswith("{"), log.read_text().splitlines()))
        if line.get("event") == "projection_loaded" and line.get("bucket") == DEVICE_KEYS_BUCKET
    ]
    assert loaded, f"the gateway never logged its keys loaded:\n{tail(log)}"
    first_answer = next(t for t, result in outcomes if result == 200)
    assert first_answer >= loaded[0], (first_answer, loaded[0])
    assert outcomes[0][1] == REFUSED  # it was asked before it could answer


@pytest.mark.parametrize("status", ["active", "revoked"])
def test_a_packed_key_entry_round_trips(status):
    """pack_key_entry keeps the device, screen and tenant ids and the revoked flag in its 49 bytes."""
    entry = DeviceKeyEntry(
        device_id=uuid.uuid4(), screen_id=uuid.uuid4(), tenant_id=uuid.uuid4(), status=status
    )
    packed = pack_key_entry(entry)
    device = DeviceKey(packed)
    assert len(packed) == 49
    ids = (entry.device_id, entry.screen_id, entry.tenant_id)
    assert (device.device_id, device.screen_id, device.tenant_id) == ids
    assert device.revoked is (status == "revoked")
    assert device.screen == entry.screen_id.bytes


@pytest.mark.timeout(120)
async def test_a_dead_worker_is_replaced_and_workers_die_with_their_supervisor(stack, tmp_path):
    """A worker killed by the kernel is restarted; a supervisor killed by the kernel takes its
    workers with it, so none keeps the port of a pod that is gone."""
    port, log = free_port(), tmp_path / "gateway.log"
    url = f"http://127.0.0.1:{port}"
    gateway = spawn_gateway(stack.settings, port, workers=2, log=log)
    try:
        await wait_ready(url, gateway, log)
        first = children_of(gateway.pid)
        assert len(first) == 2, tail(log)
        os.kill(first[0], signal.SIGKILL)

        async def replaced() -> list[int]:
            now = children_of(gateway.pid)
            return now if len(now) == 2 and first[0] not in now else []

        workers = await stack.eventually(replaced, timeout=30, interval=0.1)
        assert first[1] in workers, "the healthy worker was left alone"
        await wait_ready(url, gateway, log)
        assert "worker_died" in log.read_text()

        os.kill(gateway.pid, signal.SIGKILL)
        gateway.wait()

        async def all_gone() -> bool:
            return not any(alive(pid) for pid in workers)

        await stack.eventually(all_gone, timeout=15, interval=0.1)
    finally:
        kill_group(gateway)

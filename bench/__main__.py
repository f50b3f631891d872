"""``make bench``: the real stack on this machine, a fleet made through the public API, and the
figures docs/performance.md shows, printed as a table and written as JSON.

Every throughput figure is a ratio against a bare aiohttp handler measured in the same run, with
the same load generator (wrk) and settings: absolute numbers drift on a shared machine.

    python -m bench [--devices 2000] [--seconds 5] [--rounds 3] [--keys 100000,1000000] [--out FILE]
                    [--waiting 10000] [--scale 100000] [--only 1,2,3,4,5,6,7,8,9]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec

from bench.fleet import Admin, Device, bounded, new_codes, pair_devices, registration_latencies
from bench.load import Load, cpu_seconds, own_cpu, require_wrk, rss_bytes, wrk
from bench.scale import consumed, scale_figures, stream_end
from bench.scale import table_rows as scale_rows
from bench.waits import table_rows as waiting_rows
from bench.waits import waiting_figures
from devstack.infra import free_port
from devstack.services import ROOT, Processes, stop, wait_ready
from shared import bus
from shared.auth import generate_signing_key
from shared.bus_access import SETUP_USER
from shared.environment import environment
from shared.events import Heartbeat, heartbeat_subject
from shared.projections import (
    DEVICE_KEYS_BUCKET,
    DeviceKeyEntry,
    device_key_digest,
    device_key_name,
    kv_stream,
    kv_subject,
)
from shared.settings import DEFAULTS, Settings, port_field

DATA = ROOT / ".data" / "bench"


@contextlib.contextmanager
def profiled(directory: Path | None, name: str, pid: int) -> Iterator[None]:
    """With ``--profile DIR``: py-spy samples ``pid`` (and its workers) for the block's duration."""
    if directory is None:
        yield
        return
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    sampler = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--nonblocking",
            "--rate",
            "500",
            "--format",
            "raw",
            "--output",
            str(directory / f"{name}.txt"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        sampler.send_signal(signal.SIGINT)
        sampler.wait(30)


class Bench:
    def __init__(self, args: argparse.Namespace, processes: Processes, env: dict[str, str]) -> None:
        self.args = args
        self.processes = processes
        self.env = env
        self.settings = Settings.from_env(env)
        self.ports = {name: free_port() for name in ("registry", "provisioning", "heartbeat")}
        self.urls = {name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()}
        self.services: dict[str, subprocess.Popen[bytes]] = {}
        self.figures: dict[str, Any] = {"machine": machine()}

    # ---- processes --------------------------------------------------------------------------------

    async def start_services(self) -> None:
        for name in self.ports:
            # Every heartbeat written (presence and history), the most the heartbeat service can be
            # asked to store: figures 3 and 7 count each one stored and check each screen's presence.
            self.start_service(name, **({"presence_write_seconds": 0} if name == "heartbeat" else {}))
        await wait_ready(self.urls, list(self.services.values()))

    def start_service(self, name: str, **settings: Any) -> None:
        env = {
            **self.env,
            **environment(
                Settings,
                registry_url=self.urls["registry"],
                **{port_field(name): self.ports[name]},
                **settings,
            ),
        }
        self.services[name] = self.processes.start(name, env, DATA / f"{name}.log")

    async def restart_service(self, name: str, **settings: Any) -> None:
        stop(self.services[name])
        self.start_service(name, **settings)
        await wait_ready({name: self.urls[name]}, [self.services[name]])

    async def start_gateway(self, workers: int = 1) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        env = {**self.env, **environment(Settings, device_gateway_port=port, workers=workers)}
        process = self.processes.start("device-gateway", env, DATA / "device-gateway.log")
        url = f"http://127.0.0.1:{port}"
        await wait_ready({"device-gateway": url}, [process], within=600)
        return process, url

    async def start_bare(self, workers: int = 1) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        process = self.processes.start(
            [sys.executable, "-m", "bench.bare", str(port), str(workers)], self.env, DATA / "bare.log"
        )
        url = f"http://127.0.0.1:{port}"
        await wait_ready({"bare": url}, [process], within=15, path="/")
        return process, url

    # ---- the figures ------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        args, only = self.args, self.args.only
        await self.start_services()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as http:
            admin = Admin(http, self.urls)
            await admin.sign_up(self.settings.operator_token)
            print(f"pairing {args.devices} + {args.revokes} TVs through the API ...", flush=True)
            devices = await pair_devices(admin, args.devices + args.revokes, concurrency=50)
            polling, revoked = devices[: args.devices], devices[args.devices :]
            gateway, gateway_url = await self.start_gateway()
            keys_file = await self.keys_file(http, gateway_url, polling)
            if 1 in only:
                print("1. polls, one process ...", flush=True)
                self.figures["poll_one_process"] = await self.compare_polls(
                    gateway, gateway_url, keys_file, 1
                )
            if 3 in only:
                print("3. heartbeats ...", flush=True)
                self.figures["heartbeats"] = await self.heartbeats(gateway, gateway_url, keys_file, polling)
            if 4 in only:
                print("4. revoke -> rejected ...", flush=True)
                self.figures["revoke"] = await self.revoke_latency(http, admin, gateway_url, revoked)
            stop(gateway)
            if 8 in only:
                print(f"8. {args.waiting} waiting TVs ...", flush=True)
                self.figures["waits"] = await waiting_figures(
                    self, keys_file, count=args.waiting, seconds=args.seconds
                )
            if 2 in only:
                workers = os.cpu_count() or 1
                print(f"2. polls, {workers} workers ...", flush=True)
                gateway, gateway_url = await self.start_gateway(workers)
                self.figures["poll_all_cores"] = await self.compare_polls(
                    gateway, gateway_url, keys_file, workers
                )
                stop(gateway)
            if 7 in only:
                print("7. heartbeat service alone ...", flush=True)
                self.figures["heartbeat_service"] = await self.heartbeat_service(polling, args.heartbeats)
            if 5 in only:
                print("5. registrations ...", flush=True)
                codes = await new_codes(admin, args.registrations, concurrency=50)
                provisioning = self.services["provisioning"].pid
                cpu_before = cpu_seconds(provisioning), postgres_cpu()
                with profiled(args.profile, "registration", provisioning):
                    latencies, seconds = await registration_latencies(admin, codes, concurrency=50)
                self.figures["registration"] = {
                    "concurrency": 50,
                    "per_second": round(len(latencies) / seconds),
                    "provisioning_cores": round((cpu_seconds(provisioning) - cpu_before[0]) / seconds, 2),
                    "postgres_cores": round((postgres_cpu() - cpu_before[1]) / seconds, 2),
                    **percentiles(latencies),
                }
        if 6 in only:
            print("6. memory ...", flush=True)
            self.figures["memory"] = await self.memory()
        if 9 in only:
            print(f"9. scale: {args.scale:,} screens ...", flush=True)
            # The heartbeat service as deployed: presence and history written as they coalesce.
            await self.restart_service("heartbeat", presence_write_seconds=DEFAULTS["presence_write_seconds"])
            self.figures["scale"] = await scale_figures(self, args.scale)
        return self.figures

    async def keys_file(self, http: aiohttp.ClientSession, gateway_url: str, devices: list[Device]) -> Path:
        """``key etag`` per device, for wrk; waits until the gateway knows every device."""

        async def etag(device: Device) -> str:
            headers = {"Authorization": f"Bearer {device.key}"}
            while True:
                async with http.get(gateway_url + "/v1/device/playlist", headers=headers) as response:
                    if response.status == 200:
                        return response.headers["ETag"]
                await asyncio.sleep(0.05)

        etags = await bounded(50, [partial(etag, d) for d in devices])
        path = DATA / "keys.txt"
        path.write_text("".join(f"{d.key} {tag}\n" for d, tag in zip(devices, etags, strict=True)))
        return path

    async def compare_polls(
        self, gateway: subprocess.Popen[bytes], gateway_url: str, keys_file: Path, workers: int
    ) -> dict[str, Any]:
        """304 polls of the gateway against the bare handler, alternating, ``rounds`` times each."""
        bare, bare_url = await self.start_bare(workers)
        options = dict(seconds=self.args.seconds, connections=64, threads=workers)
        runs: dict[str, list[Load]] = {"gateway": [], "bare": []}
        for _ in range(self.args.rounds):
            runs["bare"].append(
                wrk(bare_url + "/v1/device/playlist", keys_file, server_pid=bare.pid, **options)
            )
            with profiled(self.args.profile, f"poll-{workers}", gateway.pid):
                runs["gateway"].append(
                    wrk(gateway_url + "/v1/device/playlist", keys_file, server_pid=gateway.pid, **options)
                )
        stop(bare)
        figures: dict[str, Any] = {name: median_load(loads) for name, loads in runs.items()}
        figures["workers"] = workers
        # Each gateway run is compared with the bare run just before it, then the median taken:
        # the machine's speed drifts between rounds more than within one.
        ratios = [g.rate / b.rate for g, b in zip(runs["gateway"], runs["bare"], strict=True)]
        figures["ratios"] = [round(ratio, 3) for ratio in ratios]
        figures["ratio"] = round(statistics.median(ratios), 3)
        return figures

    async def heartbeats(
        self, gateway: subprocess.Popen[bytes], gateway_url: str, keys_file: Path, devices: list[Device]
    ) -> dict[str, Any]:
        """Heartbeats from every TV for a while: how many got 202, how many reached the history, and
        whether presence reflects each screen's newest one once the heartbeat service caught up."""
        nc = await bus.connect(self.settings, SETUP_USER)
        js = nc.jetstream()
        connection = await asyncpg.connect(self.settings.database_url)
        # Counted where they end up, the history: the stream also holds presence events.
        stored_before = await connection.fetchval("SELECT count(*) FROM heartbeat.heartbeats")
        started = time.monotonic()
        # Each heartbeat run follows a poll run of the same length: the gateway's CPU per heartbeat
        # over its CPU per poll, round by round (the machine's speed drifts between rounds).
        beats: list[Load] = []
        costs: list[float] = []
        # Profiled side by side, a file for each round of each: the two costs are what is compared.
        for round_ in range(1, self.args.heartbeat_rounds + 1):
            with profiled(self.args.profile, f"heartbeats-polls-{round_}", gateway.pid):
                poll = wrk(
                    gateway_url + "/v1/device/playlist",
                    keys_file,
                    server_pid=gateway.pid,
                    seconds=self.args.seconds,
                )
            with profiled(self.args.profile, f"heartbeats-{round_}", gateway.pid):
                beats.append(
                    wrk(
                        gateway_url + "/v1/device/heartbeat",
                        keys_file,
                        server_pid=gateway.pid,
                        method="POST",
                        body='{"uptimeSeconds": 60, "appVersion": "1.0.0"}',
                        seconds=self.args.seconds,
                    )
                )
            costs.append(beats[-1].server_cpu_us / poll.server_cpu_us)
        load = sorted(beats, key=lambda beat: beat.rate)[len(beats) // 2]
        accepted = sum(beat.requests - beat.failed for beat in beats)
        await consumed(js, timeout=120)
        drained = time.monotonic() - started
        newest = {}
        for device in devices:
            message = await js.get_last_msg("HEARTBEATS", f"heartbeat.*.{device.screen_id}")
            if message.data is None:
                raise RuntimeError(f"the last heartbeat of screen {device.screen_id} has no body")
            newest[device.screen_id] = msgspec.json.decode(message.data)["receivedAt"]
        await nc.close()
        stored = await connection.fetchval("SELECT count(*) FROM heartbeat.heartbeats") - stored_before
        rows = await connection.fetch("SELECT screen_id::text, last_heartbeat FROM heartbeat.presence")
        await connection.close()
        presence = {row["screen_id"]: json.loads(row["last_heartbeat"])["receivedAt"] for row in rows}
        stale = sum(1 for screen, received in newest.items() if presence.get(screen) != received)
        return {
            "accepted": accepted,
            "stored": stored,
            "lost": max(0, accepted - stored),
            "rate": round(load.rate),
            "p99_ms": load.p99_ms,
            "gateway_cores": round(load.server_cores, 2),
            "gateway_cpu_us_per_heartbeat": round(load.server_cpu_us, 1),
            "cost_vs_poll": round(statistics.median(costs), 2),
            "cost_vs_poll_rounds": [round(cost, 2) for cost in costs],
            "ingested_per_second": round(stored / drained),
            "screens_with_stale_presence": stale,
        }

    async def heartbeat_service(self, devices: list[Device], count: int) -> dict[str, Any]:
        """Heartbeats published straight into ``HEARTBEATS`` (no gateway in front), as fast as
        NATS takes them: the rate at which the heartbeat service stores them, and none lost."""
        connection = await asyncpg.connect(self.settings.database_url)
        stored_before = await connection.fetchval("SELECT count(*) FROM heartbeat.heartbeats")
        nc = await bus.connect(self.settings, SETUP_USER)
        js = nc.jetstream()
        tenant = await connection.fetchval("SELECT tenant_id FROM heartbeat.screens LIMIT 1")
        encoder = msgspec.json.Encoder()
        base = datetime.now(UTC)
        end = await stream_end(js)
        started = time.monotonic()
        for index in range(count):
            device = devices[index % len(devices)]
            heartbeat = Heartbeat(
                tenant_id=tenant,
                screen_id=uuid.UUID(device.screen_id),
                device_id=uuid.UUID(device.device_id),
                received_at=base + timedelta(microseconds=index),
                uptime_seconds=index,
            )
            await nc.publish(
                heartbeat_subject(heartbeat.tenant_id, heartbeat.screen_id), encoder.encode(heartbeat)
            )
            if index % 5000 == 0:
                await nc.flush()
        await nc.flush()
        await consumed(js, timeout=300, reaching=end + count)
        seconds = time.monotonic() - started
        stored = await connection.fetchval("SELECT count(*) FROM heartbeat.heartbeats") - stored_before
        await connection.close()
        await nc.close()
        return {
            "published": count,
            "stored": stored,
            "lost": count - stored,
            "per_second": round(stored / seconds),
        }

    async def revoke_latency(
        self, http: aiohttp.ClientSession, admin: Admin, gateway_url: str, devices: list[Device]
    ) -> dict[str, Any]:
        """From sending the revoke to the moment both gateway processes reject the key."""
        _, second_url = await self.start_gateway()
        gateways = [gateway_url, second_url]

        async def status(url: str, device: Device) -> int:
            headers = {"Authorization": f"Bearer {device.key}"}
            async with http.get(url + "/v1/device/config", headers=headers) as response:
                await response.read()
                return response.status

        async def rejected_after(url: str, device: Device, started: float) -> float:
            while await status(url, device) != 401:  # noqa: ASYNC110 - polls the gateway over HTTP
                await asyncio.sleep(0.0005)
            return (time.perf_counter() - started) * 1000

        latencies = []
        for device in devices:
            for url in gateways:  # both know the device before it is revoked
                while await status(url, device) != 200:  # noqa: ASYNC110 - polls the gateway over HTTP
                    await asyncio.sleep(0.01)
            started = time.perf_counter()
            revoke = asyncio.create_task(admin.revoke(device.device_id))
            seen = await asyncio.gather(*(rejected_after(url, device, started) for url in gateways))
            await revoke
            latencies.append(max(seen))
        return {"gateway_processes": len(gateways), **percentiles(latencies)}

    async def memory(self) -> dict[str, Any]:
        """Gateway RSS once loaded, with the fleet's keys alone and then with bulk keys added to the
        ``device-keys`` bucket (entries shaped exactly as provisioning writes them)."""
        figures: dict[str, Any] = {}
        gateway, _ = await self.start_gateway()
        base = rss_bytes(gateway.pid)
        stop(gateway)
        figures["base_rss_mb"] = round(base / 2**20, 1)
        loaded = 0
        for target in self.args.keys:
            await bulk_keys(self.settings, first=loaded, count=target - loaded)
            loaded = target
            started = time.monotonic()
            gateway, _ = await self.start_gateway()
            load_seconds = time.monotonic() - started
            rss = rss_bytes(gateway.pid)
            stop(gateway)
            figures[f"{target}_keys"] = {
                "rss_mb": round(rss / 2**20, 1),
                "bytes_per_key": round((rss - base) / target),
                "start_to_ready_s": round(load_seconds, 1),
            }
        return figures


async def bulk_keys(settings: Settings, *, first: int, count: int) -> None:
    """Put ``count`` device-key entries straight into the bucket (a KV put is a publish to
    ``$KV.<bucket>.<key>``), then wait until JetStream holds them all."""
    nc = await bus.connect(settings, SETUP_USER)
    js = nc.jetstream()
    stream = kv_stream(DEVICE_KEYS_BUCKET)
    before = (await js.stream_info(stream)).state.messages
    encoder = msgspec.json.Encoder()
    tenant = uuid.uuid4()
    for index in range(first, first + count):
        name = device_key_name(device_key_digest(f"bench-{index}"))
        entry = DeviceKeyEntry(
            device_id=uuid.uuid4(), screen_id=uuid.uuid4(), tenant_id=tenant, status="active"
        )
        await nc.publish(kv_subject(DEVICE_KEYS_BUCKET, name), encoder.encode(entry))
        if index % 20_000 == 0:
            await nc.flush(timeout=60)
    await nc.flush(timeout=60)
    deadline = time.monotonic() + 120
    while (await js.stream_info(stream)).state.messages < before + count:
        if time.monotonic() > deadline:
            raise RuntimeError("JetStream did not store every bulk key")
        await asyncio.sleep(0.2)
    await nc.close()


def postgres_cpu() -> float:
    """CPU of every PostgreSQL process on this machine (the bench's server and its backends)."""
    total = 0.0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            if comm.read_text().strip() == "postgres":
                total += own_cpu(int(comm.parent.name))
    return total


def median_load(loads: list[Load]) -> dict[str, Any]:
    middle = sorted(loads, key=lambda load: load.rate)[len(loads) // 2]
    return {
        "rate": round(middle.rate),
        "rates": [round(load.rate) for load in loads],
        "p50_ms": middle.p50_ms,
        "p99_ms": middle.p99_ms,
        "failed": sum(load.failed for load in loads),
        "server_cores": round(middle.server_cores, 2),
        "wrk_cores": round(middle.wrk_cores, 2),
    }


def percentiles(latencies_ms: list[float]) -> dict[str, Any]:
    ordered = sorted(latencies_ms)
    return {
        "count": len(ordered),
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max_ms": round(ordered[-1], 2),
    }


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    wrk_version = subprocess.run([require_wrk(), "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "python": sys.version.split()[0],
        "load_generator": wrk_version.strip(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def print_table(figures: dict[str, Any]) -> None:
    m = figures["machine"]
    print(
        f"\nmachine: {m['cores']} cores, {m['cpu']}, {m['memory_gb']} GiB; Python {m['python']};"
        f" {m['load_generator']}"
    )
    print(f"{'figure':<52} {'value':>14}  notes")
    rows = []
    polls = (("poll_one_process", "1. 304 polls, one process"), ("poll_all_cores", "2. 304 polls, all cores"))
    for key, title in polls:
        poll = figures.get(key)
        if poll:
            g, b = poll["gateway"], poll["bare"]
            spread = f"{min(poll['ratios']):.2f}-{max(poll['ratios']):.2f}"
            rows.append(
                (
                    f"{title} ({poll['workers']} worker(s)): gateway / bare",
                    f"{poll['ratio']:.2f}",
                    f"rounds {spread}; {g['rate']}/s vs {b['rate']}/s;"
                    f" p99 {g['p99_ms']:.1f} vs {b['p99_ms']:.1f} ms; "
                    f"server {g['server_cores']} vs {b['server_cores']} cores, wrk {g['wrk_cores']}; "
                    f"failed {g['failed']}",
                )
            )
    hb = figures.get("heartbeats")
    if hb:
        rows.append(
            (
                "3. heartbeats: accepted (202) / lost",
                f"{hb['accepted']} / {hb['lost']}",
                f"{hb['rate']}/s in (gateway {hb['gateway_cores']} cores), stored {hb['stored']},"
                f" service ingested {hb['ingested_per_second']}/s,"
                f" stale presence {hb['screens_with_stale_presence']}",
            )
        )
        costs = hb["cost_vs_poll_rounds"]
        rows.append(
            (
                "3b. gateway CPU per heartbeat / per poll",
                f"{hb['cost_vs_poll']:.2f}",
                f"rounds {min(costs):.2f}-{max(costs):.2f}; {hb['gateway_cpu_us_per_heartbeat']} us"
                " per heartbeat (median round)",
            )
        )
    rv = figures.get("revoke")
    if rv:
        rows.append(
            (
                f"4. revoke -> rejected on {rv['gateway_processes']} processes, p50 / p99",
                f"{rv['p50_ms']:.1f} / {rv['p99_ms']:.1f} ms",
                f"n={rv['count']}, max {rv['max_ms']:.1f} ms",
            )
        )
    hs = figures.get("heartbeat_service")
    if hs:
        rows.append(
            (
                "7. heartbeat service alone: stored per second",
                f"{hs['per_second']}/s",
                f"{hs['stored']} of {hs['published']} published straight to HEARTBEATS stored, "
                f"lost {hs['lost']}",
            )
        )
    rg = figures.get("registration")
    if rg:
        rows.append(
            (
                f"5. registration at {rg['concurrency']} concurrent, p50 / p99",
                f"{rg['p50_ms']:.1f} / {rg['p99_ms']:.1f} ms",
                f"n={rg['count']}, max {rg['max_ms']:.1f} ms, {rg['per_second']}/s; CPU: provisioning"
                f" {rg['provisioning_cores']}, postgres {rg['postgres_cores']} cores",
            )
        )
    mem = figures.get("memory")
    if mem:
        for key, value in mem.items():
            if key.endswith("_keys"):
                rows.append(
                    (
                        f"6. gateway RSS, {key.replace('_', ' ')} loaded: bytes per key",
                        f"{value['bytes_per_key']}",
                        f"RSS {value['rss_mb']} MiB (base {mem['base_rss_mb']}),"
                        f" ready in {value['start_to_ready_s']} s",
                    )
                )
    if figures.get("waits"):
        rows += waiting_rows(figures["waits"])
    if figures.get("scale"):
        rows += scale_rows(figures["scale"])
    for title, value, notes in rows:
        print(f"{title:<52} {value:>14}  {notes}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=2000, help="TVs paired through the API that poll")
    parser.add_argument("--revokes", type=int, default=200, help="TVs revoked one by one for figure 4")
    parser.add_argument("--registrations", type=int, default=1000, help="registrations timed for figure 5")
    parser.add_argument("--seconds", type=int, default=3, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=7, help="wrk runs per side; the median counts")
    parser.add_argument("--keys", default="100000,1000000", help="bucket sizes for the memory figure")
    parser.add_argument("--heartbeats", type=int, default=50_000, help="heartbeats for figure 7")
    parser.add_argument(
        "--heartbeat-rounds",
        type=int,
        default=3,
        help="poll and heartbeat runs for figure 3 (3b: the median)",
    )
    parser.add_argument("--waiting", type=int, default=10_000, help="TVs waiting at once for figure 8")
    parser.add_argument("--scale", type=int, default=100_000, help="screens loaded for figure 9")
    parser.add_argument("--only", default="1,2,3,4,5,6,7,8,9", help="which figures to measure, e.g. 1,5")
    parser.add_argument(
        "--profile", type=Path, help="write py-spy samples of the gateway and provisioning here"
    )
    parser.add_argument("--out", type=Path, default=DATA / "results.json")
    args = parser.parse_args()
    args.keys = [int(part) for part in args.keys.split(",") if part]
    args.only = {int(part) for part in args.only.split(",") if part}
    require_wrk()
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    env = {
        **os.environ,
        **environment(
            Settings,
            operator_token="op_" + secrets.token_urlsafe(24),
            token_signing_key=generate_signing_key(),
            log_format="json",
        ),
        "PYTHONUNBUFFERED": "1",
    }
    with Processes() as processes:
        processes.start_servers(env, DATA)
        figures = asyncio.run(Bench(args, processes, env).run())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print_table(figures)
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()

"""wrk as the load generator, with the CPU both sides used, to show which side was the limit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).with_name("load.lua")
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    failed: int  # status other than 2xx/3xx, or a socket error
    wrk_cores: float  # CPU the load generator used, in cores
    server_cores: float  # CPU the server's processes used, in cores
    server_cpu_us: float = 0.0  # CPU the server's processes used per request, in microseconds

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("make bench needs wrk: apt-get install wrk (Debian/Ubuntu) or brew install wrk")
    return found


def wrk(
    url: str,
    keys_file: Path,
    *,
    server_pid: int,
    method: str = "GET",
    body: str = "",
    seconds: int = 5,
    connections: int = 64,
    threads: int = 1,
) -> Load:
    command = [
        require_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(LUA),
        url,
        "--",
        str(keys_file),
        method,
        body,
    ]
    server_before, wrk_before = cpu_seconds(server_pid), _reaped_children_cpu()
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = process.communicate()
    elapsed = time.monotonic() - started
    server_cpu = cpu_seconds(server_pid) - server_before
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({process.returncode}): {err.decode()}{out.decode()}")
    summary = json.loads(lines[-1])
    wrk_cpu = _reaped_children_cpu() - wrk_before  # wrk is the only child reaped meanwhile
    return Load(
        requests=summary["requests"],
        seconds=summary["duration_us"] / 1e6,
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        failed=summary["non_2xx_3xx"] + summary["socket_errors"],
        wrk_cores=wrk_cpu / elapsed,
        server_cores=server_cpu / elapsed,
        server_cpu_us=server_cpu * 1e6 / max(1, summary["requests"]),
    )


def _reaped_children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and all its descendants (a server's worker processes)."""
    return sum(own_cpu(p) for p in [pid, *descendants(pid)])


def own_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")

"""The capacity plan's table (docs/capacity.md) from a ``make bench`` results file: per-operation
costs measured on this machine, multiplied out for fleets of 10k to 10M screens at the defaults.

    python -m bench.capacity [RESULTS.json ...] [--screens 10000,100000,1000000,10000000]

Several results files are merged, a later one's parts replacing an earlier one's (the scale part
at 1M from one run, the gateway's figures from another).

A figure the results file lacks (a part not run) falls back to the one docs/performance.md shows,
and the table says which came from where.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.settings import ROOT
from shared.settings import DEFAULTS

# The settings' defaults that size the plan.
MAX_WAITING: int = DEFAULTS["gateway_max_waiting"]
RETENTION_DAYS: float = DEFAULTS["heartbeat_retention_hours"] / 24

# The defaults the plan is sized for: every screen's TV waits on its playlist, config and
# commands at once (docs/tv-app.md), each wait ending after WAIT_S without a change, and sends a
# heartbeat every interval.
WAITS_PER_TV = 3
WAIT_S = 55
HEARTBEAT_EVERY_S = 60
MINUTES_PER_DAY = 24 * 60
HEARTBEATS_STREAM_DAYS: float = DEFAULTS["heartbeat_stream_hours"] / 24
NATS_REPLICAS = 3  # production (docs/operations.md, NATS_REPLICAS)
CORES_PER_GATEWAY_WORKER = 1.0


@dataclass(frozen=True)
class Costs:
    """What one operation costs, and where the figure came from."""

    poll_us: float  # gateway CPU per 304 answer
    gateway_heartbeat_us: float  # gateway CPU per heartbeat accepted
    service_heartbeat_us: float  # heartbeat service CPU per heartbeat stored
    postgres_heartbeat_us: float  # PostgreSQL CPU per heartbeat stored
    registration_ms: float  # provisioning + PostgreSQL CPU per registration
    key_bytes: float  # gateway memory per device key (every replica holds every key)
    content_bytes: float  # gateway memory per screen content (every replica)
    wait_bytes: float  # gateway memory per waiting request
    gateway_base_mb: float
    rows_per_heartbeat: float  # database rows written per heartbeat, steady state
    wal_per_heartbeat: float
    screen_bytes: float  # database bytes per screen outside the history
    history_bytes_per_day: float  # database bytes of history per screen and day
    history_rows_per_day: float  # history rows per screen and day
    prune_us_per_row: float  # dropping the history's ranges and the VACUUM after, per row
    nats_entry_bytes: float  # KV bytes per screen (key + content), per replica
    nats_heartbeat_bytes: float  # HEARTBEATS stream bytes per heartbeat, per replica
    sources: dict[str, str]


# docs/performance.md's figures, for the parts a results file does not hold.
PUBLISHED = {
    "poll_us": (58, "figure 3b: 58 µs of gateway CPU per 304 poll"),
    "gateway_heartbeat_us": (97, "figure 3b: 97 µs of gateway CPU per heartbeat"),
    "registration_ms": (1e3 * (0.61 + 0.62) / 331, "figure 5: 331/s at 0.61 + 0.62 cores"),
    "wait_bytes": (14.8 * 1000, "figure 8a: 14.8 KB per waiting request"),
}


def costs(results: dict[str, Any]) -> Costs:
    scale = results["scale"]
    sources: dict[str, str] = {}
    found: dict[str, float] = {}
    poll = results.get("poll_one_process")
    if poll:
        found["poll_us"] = 1e6 * poll["gateway"]["server_cores"] / poll["gateway"]["rate"]
    heartbeats = results.get("heartbeats")
    if heartbeats:
        found["gateway_heartbeat_us"] = 1e6 * heartbeats["gateway_cores"] / heartbeats["rate"]
    registration = results.get("registration")
    if registration:
        cores = registration["provisioning_cores"] + registration["postgres_cores"]
        found["registration_ms"] = 1e3 * cores / registration["per_second"]
    waits = results.get("waits")
    if waits:
        found["wait_bytes"] = waits["bytes_per_waiting_tv"]
    for name, (value, source) in PUBLISHED.items():
        if name not in found:
            found[name] = value
            sources[name] = source
    gateway, history, steady, ingestion = (
        scale["gateway"],
        scale["history"],
        scale["steady"],
        scale["ingestion"],
    )
    return Costs(
        poll_us=found["poll_us"],
        gateway_heartbeat_us=found["gateway_heartbeat_us"],
        service_heartbeat_us=ingestion["service_cpu_us_per_heartbeat"] or 0,
        postgres_heartbeat_us=ingestion["postgres_cpu_us_per_heartbeat"],
        registration_ms=found["registration_ms"],
        key_bytes=gateway["bytes_per_key"],
        content_bytes=gateway["bytes_per_content"],
        wait_bytes=found["wait_bytes"],
        gateway_base_mb=gateway["base_rss_mb"],
        rows_per_heartbeat=steady["rows_per_heartbeat"],
        wal_per_heartbeat=steady["wal_bytes_per_heartbeat"],
        screen_bytes=sum(scale["database_bytes_per_screen"].values()),
        history_bytes_per_day=history["bytes_per_screen_day"],
        history_rows_per_day=history["rows_per_screen_day"],
        prune_us_per_row=history["prune_us_per_row"] + history["vacuum_us_per_row"],
        nats_entry_bytes=gateway["nats_bytes_per_key"] + gateway["nats_bytes_per_content"],
        nats_heartbeat_bytes=history["nats_bytes_per_heartbeat"],
        sources=sources,
    )


def plan(c: Costs, screens: int) -> dict[str, str]:
    heartbeats = screens / HEARTBEAT_EVERY_S
    answers = screens * WAITS_PER_TV / WAIT_S
    waiting = screens * WAITS_PER_TV
    gateway_cores = (answers * c.poll_us + heartbeats * c.gateway_heartbeat_us) / 1e6
    workers = max(
        math.ceil(gateway_cores / CORES_PER_GATEWAY_WORKER),
        math.ceil(waiting / MAX_WAITING),
        2,
    )
    projection_mb = screens * (c.key_bytes + c.content_bytes) / 2**20
    worker_mb = c.gateway_base_mb + projection_mb + min(waiting / workers, MAX_WAITING) * c.wait_bytes / 2**20
    history_gb = screens * c.history_bytes_per_day * RETENTION_DAYS / 1e9
    rows_per_day = screens * c.history_rows_per_day
    nats_gb = (
        screens * c.nats_entry_bytes
        + screens * MINUTES_PER_DAY * HEARTBEATS_STREAM_DAYS * c.nats_heartbeat_bytes
    ) / 1e9
    return {
        "heartbeats per second": f"{heartbeats:,.0f}",
        "gateway answers (304 after a wait) per second": f"{answers:,.0f}",
        "gateway cores (polls + heartbeats)": f"{gateway_cores:,.1f}",
        "gateway workers (for the cores, or waits / GATEWAY_MAX_WAITING)": f"{workers:,}",
        "gateway memory per worker": f"{worker_mb / 1024:,.1f} GiB",
        "of it the projections (every worker holds every screen)": f"{projection_mb / 1024:,.2f} GiB",
        "heartbeat service cores": f"{heartbeats * c.service_heartbeat_us / 1e6:,.1f}",
        "PostgreSQL cores for heartbeats": f"{heartbeats * c.postgres_heartbeat_us / 1e6:,.1f}",
        "PostgreSQL rows written per second": f"{heartbeats * c.rows_per_heartbeat:,.0f}",
        "WAL per second": f"{heartbeats * c.wal_per_heartbeat / 2**20:,.1f} MiB",
        "database: screens, devices, presence": f"{screens * c.screen_bytes / 1e9:,.1f} GB",
        f"database: history ({RETENTION_DAYS:g} days)": f"{history_gb:,.0f} GB",
        "pruning: core-seconds a day (DROP of ranges + VACUUM)": (
            f"{rows_per_day * c.prune_us_per_row / 1e6:,.0f}"
        ),
        f"NATS storage per replica (x {NATS_REPLICAS} replicas)": f"{nats_gb:,.1f} GB",
    }


def markdown(c: Costs, fleets: list[int]) -> str:
    plans = [plan(c, screens) for screens in fleets]
    lines = [
        "| | " + " | ".join(f"{screens:,} screens" for screens in fleets) + " |",
        "| --- |" + " --- |" * len(fleets),
    ]
    for row in plans[0]:
        lines.append(f"| {row} | " + " | ".join(p[row] for p in plans) + " |")
    lines += ["", *(f"- {name}: from {source}" for name, source in c.sources.items())]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="*", default=[ROOT / ".data" / "bench" / "results.json"])
    parser.add_argument("--screens", default="10000,100000,1000000,10000000")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for path in args.results:
        results |= json.loads(path.read_text())
    if "scale" not in results:
        raise SystemExit("no scale part in the results: make bench BENCH_ARGS='--only 9'")
    c = costs(results)
    print(json.dumps({k: round(v, 2) for k, v in vars(c).items() if isinstance(v, float | int)}, indent=1))
    print(markdown(c, [int(n) for n in args.screens.split(",")]))


if __name__ == "__main__":
    main()

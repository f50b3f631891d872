"""The scale part of ``make bench`` (figure 9) at a tiny fleet against the real stack: the loader's
rows and entries are ones the services serve, and each measured component answers with figures
that fit the fleet it was given."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from bench.capacity import RETENTION_DAYS, Costs, plan
from bench.scale import scale_figures
from devstack.services import Processes, wait_ready
from shared.environment import environment, to_env
from shared.settings import Settings
from tests.stack import Stack

SCREENS = 200


class Gateways:
    """The in-process stack's services, and gateways as processes (their RSS is what is measured)."""

    def __init__(self, stack: Stack, processes: Processes, logs: Path) -> None:
        self.settings = stack.settings
        self.urls = {name: stack.url(name) for name in ("registry", "provisioning", "heartbeat")}
        self.services: dict[str, subprocess.Popen[bytes]] = {}  # in this process
        self.processes = processes
        self.logs = logs

    async def start_gateway(self, workers: int = 1) -> tuple[subprocess.Popen[bytes], str]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {
            **os.environ,
            **to_env(self.settings),
            **environment(Settings, device_gateway_port=port, workers=workers),
        }
        process = self.processes.start("device-gateway", env, self.logs / "device-gateway.log")
        url = f"http://127.0.0.1:{port}"
        await wait_ready({"device-gateway": url}, [process], within=60)
        return process, url


async def test_scale_part_at_a_tiny_fleet(stack: Stack, tmp_path: Path) -> None:
    with Processes() as processes:
        figures = await scale_figures(
            Gateways(stack, processes, tmp_path),
            SCREENS,
            heartbeats=SCREENS,
            stream_seconds=1,
            history_screens=2,
            stats_delay=0.5,
        )

    assert all(size > 0 for size in figures["database_bytes_per_screen"].values())
    assert set(figures["database_bytes_per_screen"]) == {"registry", "provisioning", "heartbeat"}
    gateway = figures["gateway"]
    # A content (six playlist items) is a bigger entry than a key; the RSS of separate processes
    # is too noisy at 200 screens to compare.
    assert gateway["nats_bytes_per_content"] > gateway["nats_bytes_per_key"] > 100
    assert gateway["ready_s"] > 0

    api = figures["api"]
    assert api["fleet_status"]["body"] == {"screens": SCREENS, "online": SCREENS, "offline": 0, "unknown": 0}
    assert [api[f"screens_{page}_page"]["items"] for page in ("first", "middle", "last")] == [50, 50, 49]

    detector = figures["detector"]
    assert detector["idle"]["transitions"] == 0
    assert detector["overdue"]["transitions"] == SCREENS  # every screen overdue, a batch holds them all
    assert detector["overdue"]["written"] >= 2 * SCREENS  # made overdue, then offline

    assert figures["ingestion"]["heartbeats"] == SCREENS
    assert figures["ingestion"]["per_second"] > 0
    # (PostgreSQL's CPU per heartbeat is not checked: 200 heartbeats may take less than one clock
    # tick of its processes' CPU time, and read 0.)
    steady = figures["steady"]
    assert steady["heartbeats"] == steady["rate"] * 1 == SCREENS // 60
    # (Its WAL per heartbeat is not checked for sign: net of the idle rate, and 3 heartbeats write
    # less WAL than a checkpoint or autovacuum in the idle window adds; it read -54,476 once.)
    assert isinstance(steady["wal_bytes_per_heartbeat"], int)

    history = figures["history"]
    # A day of one a minute, plus at most the one of the ingestion and the one of the stream.
    assert 1440 <= history["rows_per_screen_day"] <= 1442
    assert 100 < history["bytes_per_row"] < 5000
    assert history["pruned_rows"] >= 2 * 1440 + SCREENS
    assert history["retention_gb_at_1m"] > history["retention_gb_at_n"] > 0


def test_capacity_plan_multiplies_the_costs_out() -> None:
    c = Costs(
        poll_us=100,
        gateway_heartbeat_us=100,
        service_heartbeat_us=50,
        postgres_heartbeat_us=50,
        registration_ms=4,
        key_bytes=200,
        content_bytes=1000,
        wait_bytes=15_000,
        gateway_base_mb=50,
        rows_per_heartbeat=2,
        wal_per_heartbeat=3000,
        screen_bytes=4000,
        history_bytes_per_day=1e6,
        history_rows_per_day=1440,
        prune_us_per_row=1.5,
        nats_entry_bytes=1500,
        nats_heartbeat_bytes=500,
        sources={},
    )
    million = plan(c, 1_000_000)
    assert million["heartbeats per second"] == "16,667"  # one a minute
    assert million["gateway answers (304 after a wait) per second"] == "54,545"  # 3 waits of 55 s
    # 3M waiting requests, 20,000 a worker (GATEWAY_MAX_WAITING's default): the waits decide.
    assert million["gateway workers (for the cores, or waits / GATEWAY_MAX_WAITING)"] == "150"
    # A megabyte a screen a day, kept for the default retention.
    history = million[f"database: history ({RETENTION_DAYS:g} days)"]
    assert history == f"{1_000_000 * RETENTION_DAYS / 1000:,.0f} GB"
    assert million["PostgreSQL rows written per second"] == "33,333"
    assert plan(c, 10_000)["gateway workers (for the cores, or waits / GATEWAY_MAX_WAITING)"] == "2"

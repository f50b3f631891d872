"""The command line of every service: ``python -m services.<name> [serve|migrate]``.

With ``WORKERS`` > 1 the process supervises that many copies of itself, each serving the same
port with ``SO_REUSEPORT`` (the kernel spreads connections over them) and each with its own NATS
connection and projections. Their metrics are summed through prometheus_client's multiprocess
mode, so any worker's ``/metrics`` answers for the whole pod.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import structlog
import uvloop
from aiohttp import web
from prometheus_client import multiprocess

from shared import db
from shared.logging import configure
from shared.settings import Settings

log = structlog.get_logger()

WORKER = "SIGNAGE_WORKER"  # set in a supervised worker's environment: its index


def main(
    service: str,
    create_app: Callable[[Settings], web.Application],
    *,
    schema: str | None = None,
    migrations: tuple[Path, ...] = (),
) -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else "serve"
    settings = Settings.from_env()
    configure(service=service, log_format=settings.log_format, level=settings.log_level)
    if command == "migrate":
        if schema is not None:
            applied = asyncio.run(db.migrate(settings.database_url, schema, *migrations))
            log.info("migrated", schema=schema, applied=applied)
        return
    if command != "serve":
        raise SystemExit(f"usage: python -m services.{service.replace('-', '_')} [serve|migrate]")
    if settings.workers > 1 and WORKER not in os.environ:
        raise SystemExit(supervise(settings.workers))
    serve(service, create_app, settings)


def serve(service: str, create_app: Callable[[Settings], web.Application], settings: Settings) -> None:
    uvloop.install()
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.ports[service],
        reuse_port=WORKER in os.environ,
        access_log=None,  # each route logs one line per request, with its request id
        print=None,
        shutdown_timeout=10,
    )


def supervise(workers: int) -> int:
    """Run ``workers`` copies of this command; restart one that dies; on SIGTERM or SIGINT pass
    SIGTERM on and wait for all of them (each drains its requests)."""
    metrics_dir = tempfile.mkdtemp(prefix="prometheus-")
    running: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def start(index: int) -> None:
        env = {**os.environ, WORKER: str(index), "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        running[subprocess.Popen([sys.executable, *sys.orig_argv[1:]], env=env).pid] = index

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in running:
            os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(workers):
        start(index)
    log.info("workers_started", workers=workers, pids=list(running))
    try:
        while running:
            pid, status = os.wait()
            index = running.pop(pid, None)
            if index is None or stopping:
                continue
            # Its counters stay (they are totals); its live gauges go.
            multiprocess.mark_process_dead(pid, metrics_dir)
            log.error("worker_died", worker=index, pid=pid, status=os.waitstatus_to_exitcode(status))
            time.sleep(1)  # a worker that dies at start must not make us spin
            if not stopping:
                start(index)
        return 0
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)

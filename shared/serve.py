"""How a service process runs (``python -m services NAME``).

With ``WORKERS`` > 1 the process supervises that many copies of itself, each serving the same
port with ``SO_REUSEPORT`` (the kernel spreads connections over them) and each with its own NATS
connection and projections. Their metrics are summed through prometheus_client's multiprocess
mode, so any worker's ``/metrics`` answers for the whole pod.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import structlog
import uvloop
from aiohttp import web
from prometheus_client import multiprocess

from shared.app_keys import IN_FLIGHT
from shared.settings import Settings

log = structlog.get_logger()

WORKER = "SIGNAGE_WORKER"  # set in a supervised worker's environment: its index


def main(service: str, create_app: Callable[[Settings], web.Application], settings: Settings) -> None:
    """Serve ``service``: in this process, or with ``WORKERS`` > 1 as the supervisor of that many."""
    if settings.workers > 1 and WORKER not in os.environ:
        raise SystemExit(supervise(settings.workers))
    serve(service, create_app, settings)


# How long a stopping service waits for the requests in flight, then for their answers to be
# written; a rollout's grace period (deploy/base: 45 s after a 10 s preStop delay) covers both.
DRAIN_SECONDS = 10


def serve(service: str, create_app: Callable[[Settings], web.Application], settings: Settings) -> None:
    uvloop.run(_serve(create_app(settings), settings.host, settings.ports[service]))


async def _serve(app: web.Application, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT, then stop as a rollout needs: the port closes (new
    connections go to other replicas), event streams end, the requests in flight are answered,
    then background work stops (a consumer finishes its batch in hand, ``shared.tasks.finished``)
    and the connections to PostgreSQL and NATS close. A stop while starting (waiting for
    migrations, a gateway loading a million keys) gives the start up at once."""
    runner = DrainingRunner(app, access_log=None, handle_signals=False, shutdown_timeout=DRAIN_SECONDS)
    stop = asyncio.Event()
    main = asyncio.current_task()
    assert main is not None

    def on_signal() -> None:
        stop.set()
        if runner.server is None:  # still starting: give the start up
            main.cancel()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    try:
        try:
            await runner.setup()
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
            log.info("stopped_while_starting")
            return
        await web.TCPSite(runner, host, port, reuse_port=WORKER in os.environ).start()
        await stop.wait()
        await runner.drain(DRAIN_SECONDS)
    finally:
        await runner.cleanup()


class DrainingRunner(web.AppRunner):
    """aiohttp's runner, with the wait for requests in flight before the connections close.

    aiohttp's own stop closes every connection first and then waits for the handlers; a closed
    connection ignores what still arrives on it, so a request whose body was still on its way
    could never complete and was cancelled at the timeout (its client saw the connection drop).
    """

    _shutdown_sent = False

    async def drain(self, seconds: float) -> None:
        in_flight = self.app[IN_FLIGHT]
        in_flight.stopping = True
        for site in list(self.sites):
            await site.stop()
        await super().shutdown()  # on_shutdown: event streams end now, not after the wait
        self._shutdown_sent = True
        log.info("draining", in_flight=in_flight.count)
        left = await in_flight.wait(seconds)
        if left:
            log.warning("drain_timed_out", in_flight=left, seconds=seconds)

    async def shutdown(self) -> None:
        if not self._shutdown_sent:  # cleanup() sends on_shutdown; drain() did already
            await super().shutdown()


def supervise(workers: int) -> int:
    """Run ``workers`` copies of this command; restart one that dies; on SIGTERM or SIGINT pass
    SIGTERM on and wait for all of them (each drains its requests)."""
    metrics_dir = tempfile.mkdtemp(prefix="prometheus-")
    # pid -> worker index and its Popen, kept referenced: a dropped Popen is reaped by subprocess's
    # own clean-up, which would take the exit status our os.wait() below is waiting for.
    running: dict[int, tuple[int, subprocess.Popen[bytes]]] = {}
    stopping = False
    failed_at_stop = 0

    def start(index: int) -> None:
        env = {**os.environ, WORKER: str(index), "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        worker = subprocess.Popen([sys.executable, *sys.orig_argv[1:]], env=env, preexec_fn=_die_with_parent)
        running[worker.pid] = index, worker

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
            if pid not in running:
                continue
            index, _ = running.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if stopping:
                if code != 0:
                    log.error("worker_stopped_badly", worker=index, pid=pid, status=code)
                    failed_at_stop += 1
                continue
            # Its counters stay (they are totals); its live gauges go.
            multiprocess.mark_process_dead(pid, metrics_dir)
            log.error("worker_died", worker=index, pid=pid, status=code)
            time.sleep(1)  # a worker that dies at start must not make us spin
            if not stopping:
                start(index)
        return 1 if failed_at_stop else 0
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _die_with_parent() -> None:
    """In a worker, before it starts: the kernel sends it SIGTERM if the supervisor dies (even by
    SIGKILL), so no worker outlives its pod's main process holding the port."""
    if sys.platform == "linux":
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

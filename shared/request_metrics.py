"""Every request's count and latency in the metrics, tallied in plain numbers per route and added
to prometheus_client's counter and histogram at most a second later (and before every scrape).

prometheus_client takes a lock and walks the buckets on every ``inc`` and ``observe``: on the
gateway's poll that was a few per cent of the request's CPU. A tally is a dict entry and a list
slot; what is scraped (names, labels, buckets) is what :func:`instrumented` always exported.
"""

from __future__ import annotations

import asyncio
import bisect
from typing import Any

import prometheus_client

REQUESTS = prometheus_client.Counter(
    "http_requests_total", "HTTP requests answered", ["service", "method", "route", "status"]
)
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
LATENCY = prometheus_client.Histogram(
    "http_request_duration_seconds", "Time to answer an HTTP request", ["service", "route"], buckets=_BUCKETS
)
FLUSH_SECONDS = 1.0

_unflushed: list[RouteTally] = []  # the tallies holding requests not yet in the metrics
_flush_timer: asyncio.TimerHandle | None = None
_flush_loop: asyncio.AbstractEventLoop | None = None


class RouteTally:
    """One route's requests since the last flush: counts by status, latencies by bucket."""

    __slots__ = ("_counters", "_histogram", "_labels", "dirty", "seconds", "slots", "statuses")

    def __init__(self, service: str, method: str, route: str) -> None:
        self._labels = (service, method, route)
        self._counters: dict[int, Any] = {}
        self._histogram = LATENCY.labels(service, route)
        self.statuses: dict[int, int] = {}
        self.slots = [0] * (len(_BUCKETS) + 1)  # the last one: +Inf
        self.seconds = 0.0
        self.dirty = False

    def record(self, status: int, elapsed: float) -> None:
        statuses = self.statuses
        statuses[status] = statuses.get(status, 0) + 1
        # bisect_left: the first bucket whose bound is >= elapsed, as Prometheus' "le" asks.
        self.slots[bisect.bisect_left(_BUCKETS, elapsed)] += 1
        self.seconds += elapsed
        if not self.dirty:
            self.dirty = True
            _unflushed.append(self)
            _schedule_flush()

    def flush(self) -> None:
        for status, count in self.statuses.items():
            counter = self._counters.get(status)
            if counter is None:
                counter = self._counters[status] = REQUESTS.labels(*self._labels, str(status))
            counter.inc(count)
        # prometheus_client has no public way to add n observations to a bucket: its own
        # per-bucket values (tests/test_gateway_paths.py checks the scraped result).
        histogram = self._histogram
        for slot, count in enumerate(self.slots):
            if count:
                histogram._buckets[slot].inc(count)  # noqa: SLF001
        histogram._sum.inc(self.seconds)  # noqa: SLF001
        self.statuses = {}
        self.slots = [0] * len(self.slots)
        self.seconds = 0.0
        self.dirty = False


def flush() -> None:
    """Add every tally to the metrics (before a scrape; every second by itself)."""
    global _flush_timer
    if _flush_timer is not None:
        _flush_timer.cancel()
        _flush_timer = None
    while _unflushed:
        _unflushed.pop().flush()


def _schedule_flush() -> None:
    global _flush_timer, _flush_loop
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop running (a handler called directly): at once
        flush()
        return
    # A timer of a loop that has ended (tests run one loop after another) never fires: replaced.
    if _flush_timer is None or _flush_timer.cancelled() or _flush_loop is not loop:
        _flush_timer, _flush_loop = loop.call_later(FLUSH_SECONDS, flush), loop

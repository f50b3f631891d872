"""Load shedding: when a worker is overloaded it answers 429 at once instead of queueing.

Two signals, both cheap to read on every request:
- event-loop lag: a timer that wakes late means every request waits that long too; past
  ``max_lag`` the worker sheds all device requests until the lag is back under it;
- reports waiting for a JetStream ack: past ``max_pending`` (the bus is slow or away) new
  heartbeats and events are refused rather than piling up in memory.
The TVs back off for ``Retry-After`` plus their own jitter (the device contract), which is what
takes the load away; answering 429 keeps latency bounded for the requests that are admitted.
"""

from __future__ import annotations

import asyncio
import random

import prometheus_client
import structlog
from aiohttp import web

from shared.errors import RateLimited

log = structlog.get_logger()

SHED = prometheus_client.Counter(
    "gateway_shed_requests_total",
    "Device requests answered 429 because the worker was overloaded",
    ["reason"],
)
_TICK = 0.05  # seconds between lag measurements


class Admission:
    def __init__(self, *, max_lag_ms: int, max_pending: int) -> None:
        self.max_lag = max_lag_ms / 1000
        self.max_pending = max_pending
        self.lagging = False
        self.pending = 0  # reports published and not yet acked

    def admit(self) -> None:
        """Every device request: refuse when the worker is lagging."""
        if self.lagging:
            SHED.labels("lag").inc()
            raise _too_busy()

    def admit_report(self) -> None:
        """A heartbeat or events report: also refuse when too many wait for the bus."""
        self.admit()
        if self.pending >= self.max_pending:
            SHED.labels("publish_backlog").inc()
            raise _too_busy()

    async def measure_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + _TICK
            await asyncio.sleep(_TICK)
            lag = loop.time() - expected
            if (lag > self.max_lag) != self.lagging:
                self.lagging = not self.lagging
                log.warning("overloaded" if self.lagging else "recovered", lag_ms=round(lag * 1000))


def _too_busy() -> RateLimited:
    # Spread the retries: a whole fleet told "retry in 5 s" comes back as one wave.
    return RateLimited(
        "the gateway is overloaded; retry after the delay, with jitter", retry_after=random.randint(5, 15)
    )


ADMISSION = web.AppKey("ADMISSION", Admission)

"""Load shedding: when a worker is overloaded it answers 429 at once instead of queueing.

Two signals, both cheap to read on every request:
- event-loop lag: a timer that wakes late means every request waits that long too; past
  ``max_lag`` the worker sheds all device requests until the lag is back under it;
- reports waiting for a JetStream ack: past ``max_pending`` (the bus is slow or away) new
  heartbeats and events are refused rather than piling up in memory.
- file downloads a device has in progress: past ``max_downloads_per_device`` its next one is
  refused, so one TV (or one stolen key) cannot hold the worker's connections to the store.
A poll that asks to wait for a change it has not got (If-None-Match holds, ``Prefer: wait``) is
not shed: held, it costs memory and no CPU until its content changes; and the waiting polls are
not in any of the figures above (an idle connection does not make the loop lag).
The TVs back off for ``Retry-After`` plus their own jitter (the device contract), which is what
takes the load away; answering 429 keeps latency bounded for the requests that are admitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Iterator

import nats.errors
import prometheus_client
import structlog
from aiohttp import web

from services.device_gateway.acks import Acks, NotStored
from shared.errors import RateLimited, Unavailable

log = structlog.get_logger()

SHED = prometheus_client.Counter(
    "gateway_shed_requests_total",
    "Device requests answered 429 because the worker was overloaded",
    ["reason"],
)
_TICK = 0.05  # seconds between lag measurements


class Admission:
    def __init__(self, *, max_lag_ms: int, max_pending: int, max_downloads_per_device: int) -> None:
        self.max_lag = max_lag_ms / 1000
        self.max_pending = max_pending
        self.max_downloads = max_downloads_per_device
        self.lagging = False
        self.pending = 0  # reports published and not yet acked
        self.downloads: dict[uuid.UUID, int] = {}  # device -> downloads in progress in this worker

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

    @contextlib.contextmanager
    def download(self, device_id: uuid.UUID) -> Iterator[None]:
        """A file download, held while its body is sent: refused beyond the device's share."""
        held = self.downloads.get(device_id, 0)
        if held >= self.max_downloads:
            SHED.labels("downloads_per_device").inc()
            raise RateLimited(
                f"this device already downloads {held} files; retry when one has finished", retry_after=5
            )
        self.downloads[device_id] = held + 1
        try:
            yield
        finally:
            left = self.downloads[device_id] - 1
            if left:
                self.downloads[device_id] = left
            else:
                del self.downloads[device_id]

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
# Reports on their way into JetStream, their acks awaited on one inbox (services.device_gateway.acks).
ACKS = web.AppKey("ACKS", Acks)


async def publish_report(
    app: web.Application,
    subject: str,
    payload: bytes,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 2,
) -> None:
    """Store a TV's report in JetStream, counted in the reports waiting for their ack (which
    :meth:`Admission.admit_report` bounds). Concurrent requests share one connection, so their
    acks are pipelined: many publishes in flight, each request waiting only for its own ack."""
    admission = app[ADMISSION]
    admission.pending += 1
    try:
        await app[ACKS].store(subject, payload, headers=headers, timeout=timeout)
    except (nats.errors.Error, TimeoutError, NotStored) as exc:
        log.warning("publish_failed", subject=subject, error=str(exc))
        raise Unavailable("could not store the report; retry with backoff", retry_after=5) from None
    finally:
        admission.pending -= 1

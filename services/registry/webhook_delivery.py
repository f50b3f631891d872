"""The webhook dispatcher: sends due deliveries, signed, each endpoint with its own bounded share of
the process's requests, and settles each attempt (delivered, retried later, failed, or the
endpoint turned off); and the delivery log's upkeep (metrics, pruning).

Every registry replica runs one. They share the work through the database: a claim leases a due
delivery for the attempt's longest life (see ``queries.webhook_deliveries``), so a replica that
dies mid-attempt leaves it to another after the lease (delivery is at least once; receivers
de-duplicate by ``webhook-id``). A dispatcher wakes on ``NOTIFY registry_webhooks`` (new
deliveries), when an attempt ends (its endpoint may take another), and at the next retry due, at
most a second apart: a notification lost while reconnecting costs that second.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import prometheus_client
import structlog
from aiohttp import web

from services.registry.queries import webhook_deliveries
from services.registry.queries.webhook_deliveries import DueDelivery
from services.registry.webhook_addresses import (
    AddressRefused,
    GuardedResolver,
    address_allowed,
    literal_address,
)
from services.registry.webhook_signing import signature_header
from shared import outbox, trace_context
from shared.app_keys import SETTINGS
from shared.db import POOL, Connection, pooled
from shared.events import WebhookDisabled
from shared.settings import Settings
from shared.tasks import background, stop

log = structlog.get_logger()

USER_AGENT = "signage-backend-webhooks/1"
# A claim's lease is the request's timeout and this: time to settle the attempt once it ended.
LEASE_MARGIN_SECONDS = 5.0
# Requests in flight in one process, over all endpoints (each endpoint has its own share too).
MAX_IN_FLIGHT = 200
# The longest a dispatcher sleeps between two looks for due deliveries.
MAX_WAIT_SECONDS = 1.0
MIN_WAIT_SECONDS = 0.01
# How much of a receiver's answer is read (and dropped): we need its status, not its body.
ANSWER_READ_BYTES = 4096
ERROR_CHARS = 300
BACKOFF_FACTOR = 6
JITTER = 0.2  # each wait is its nominal length ±20%
# At a stop, how long attempts in flight may take to end before they are cut off (a cut attempt
# is sent again once its lease lapses).
FINISH_SECONDS = 5.0
LISTEN_CHECK_SECONDS = 5.0
SAMPLE_SECONDS = 5.0
PRUNE_SECONDS = 60.0
PRUNE_BATCH = 1000
_DATABASE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

DELIVERIES = prometheus_client.Counter(
    "webhook_deliveries_total",
    "Webhook attempts by outcome (delivered, retried, gone: the receiver answered 410), and"
    " deliveries given up (failed: retry window spent, or their endpoint turned off)",
    ["outcome"],
)
RETRY_BACKLOG = prometheus_client.Gauge(
    "webhook_retry_backlog",
    "Pending webhook deliveries that failed at least once",
    multiprocess_mode="max",
)
OLDEST_UNDELIVERED = prometheus_client.Gauge(
    "webhook_oldest_undelivered_age_seconds",
    "Age of the oldest pending webhook delivery (0 when none)",
    multiprocess_mode="max",
)


def retry_delay(
    attempts: int, *, first: float, cap: float, uniform: Callable[[], float] = random.random
) -> float:
    """The wait after a delivery's ``attempts``-th failed attempt: ``first``, then about six times
    longer each time, ±20% (so deliveries that failed together do not come back together), at
    most ``cap``."""
    nominal = first * BACKOFF_FACTOR ** min(attempts - 1, 40)
    return min(cap, nominal * (1 - JITTER + 2 * JITTER * uniform()))


class Dispatcher:
    def __init__(self, pool: asyncpg.Pool, settings: Settings, session: aiohttp.ClientSession) -> None:
        self._pool = pool
        self._settings = settings
        self._session = session
        self._wake = asyncio.Event()
        self._in_flight: dict[uuid.UUID, int] = {}
        self._attempts: set[asyncio.Task[None]] = set()
        # Successes are recorded together, a transaction (one commit) for all that came meanwhile:
        # one each would hold a pooled connection per answer and wait on a commit each.
        self._delivered: list[tuple[DueDelivery, int]] = []
        self._delivered_came = asyncio.Event()

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen(), name="registry-webhook-listener")
        recorder = asyncio.create_task(self._record_successes(), name="registry-webhook-successes")
        try:
            while True:
                self._wake.clear()
                wait = MAX_WAIT_SECONDS
                try:
                    wait = await self._dispatch_due()
                except _DATABASE_ERRORS as exc:
                    log.warning("webhook_claim_failed", error=str(exc))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
        finally:
            await stop(listener)
            await stop(recorder)

    async def _dispatch_due(self) -> float:
        """Claim what is due and may be sent now and start its attempts; returns how long to wait
        for the next retry due (at most MAX_WAIT_SECONDS)."""
        settings = self._settings
        free = MAX_IN_FLIGHT - sum(self._in_flight.values())
        async with pooled(self._pool) as conn:
            claimed: list[DueDelivery] = []
            if free > 0:
                claimed = await webhook_deliveries.claim_due(
                    conn,
                    self._in_flight,
                    per_endpoint=settings.webhook_concurrency_per_endpoint,
                    limit=free,
                    lease_seconds=settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS,
                )
            next_due = await webhook_deliveries.seconds_to_next_due(conn)
        for delivery in claimed:
            self._in_flight[delivery.endpoint_id] = self._in_flight.get(delivery.endpoint_id, 0) + 1
            task = asyncio.create_task(self._attempt(delivery))
            self._attempts.add(task)
            task.add_done_callback(self._attempts.discard)
        if next_due is None:
            return MAX_WAIT_SECONDS
        return min(MAX_WAIT_SECONDS, max(MIN_WAIT_SECONDS, next_due))

    async def _attempt(self, delivery: DueDelivery) -> None:
        try:
            status, error = await self._send(delivery)
            if status is not None and 200 <= status < 300:
                self._delivered.append((delivery, status))
                self._delivered_came.set()
            else:
                await self._settle_failure(delivery, status, error)
        except _DATABASE_ERRORS as exc:
            # Sent or not, the lease lapses and the delivery is claimed again: at least once.
            log.warning("webhook_settle_failed", delivery_id=str(delivery.id), error=str(exc))
        finally:
            left = self._in_flight.pop(delivery.endpoint_id) - 1
            if left:
                self._in_flight[delivery.endpoint_id] = left
            self._wake.set()  # the endpoint may take its next one

    async def _send(self, delivery: DueDelivery) -> tuple[int | None, str | None]:
        """One request: the receiver's status, or what kept it from answering."""
        host = urlsplit(delivery.url).hostname or ""
        address = literal_address(host)
        allow_private = self._settings.webhook_allow_private_addresses
        if address is not None and not allow_private and not address_allowed(address):
            return None, f"refused: {host} is an address webhooks may not reach"
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(
                delivery.secrets, delivery.message_id, timestamp, delivery.payload
            ),
        }
        if delivery.traceparent:
            # Each attempt a new span, a child of the event's: the receiver's trace joins ours.
            headers.update(trace_context.child_of(delivery.traceparent, delivery.tracestate).headers())
        try:
            async with self._session.post(
                delivery.url, data=delivery.payload.encode(), headers=headers, allow_redirects=False
            ) as response:
                await response.content.read(ANSWER_READ_BYTES)
                return response.status, None
        except TimeoutError:
            return None, f"no answer within {self._settings.webhook_timeout_seconds:g} s"
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressRefused):
                return None, f"refused: {exc.os_error}"[:ERROR_CHARS]
            return None, f"cannot connect: {exc.os_error or exc}"[:ERROR_CHARS]
        except aiohttp.ClientError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]

    async def _record_successes(self) -> None:
        while True:
            await self._delivered_came.wait()
            await self._flush_successes()

    async def _flush_successes(self) -> None:
        self._delivered_came.clear()
        delivered, self._delivered = self._delivered, []
        if not delivered:
            return
        try:
            async with pooled(self._pool) as conn, conn.transaction():
                DELIVERIES.labels("delivered").inc(await webhook_deliveries.record_delivered(conn, delivered))
        except _DATABASE_ERRORS as exc:
            # Their leases lapse and they are sent again: at least once.
            log.warning("webhook_settle_failed", deliveries=len(delivered), error=str(exc))

    async def _settle_failure(self, delivery: DueDelivery, status: int | None, error: str | None) -> None:
        """Record a failed attempt. Locks the endpoint's row before its deliveries', in every path,
        so that settling and turning an endpoint off never wait on each other in a circle."""
        settings = self._settings
        retry_for = settings.webhook_retry_for_hours * 3600
        async with pooled(self._pool) as conn, conn.transaction():
            if status == 410:
                turned_off = await webhook_deliveries.turn_off_endpoint(conn, delivery.endpoint_id, "gone")
                state = await webhook_deliveries.record_failure(
                    conn,
                    delivery,
                    status_code=status,
                    error="the receiver answered 410 Gone",
                    retry_in_seconds=None,
                    retry_for_seconds=retry_for,
                )
                if state is not None:
                    DELIVERIES.labels("gone").inc()
                if turned_off:
                    await self._turned_off(conn, delivery, "gone")
                return
            failing_too_long = await webhook_deliveries.endpoint_failing_too_long(
                conn, delivery.endpoint_id, settings.webhook_disable_after_hours * 3600
            )
            state = await webhook_deliveries.record_failure(
                conn,
                delivery,
                status_code=status,
                error=error or f"the receiver answered {status}",
                retry_in_seconds=retry_delay(
                    delivery.attempts + 1,
                    first=settings.webhook_retry_first_seconds,
                    cap=settings.webhook_retry_max_interval_seconds,
                ),
                retry_for_seconds=retry_for,
            )
            if failing_too_long and await webhook_deliveries.turn_off_endpoint(
                conn, delivery.endpoint_id, "failing"
            ):
                await self._turned_off(conn, delivery, "failing")
            elif state is not None:
                DELIVERIES.labels("retried" if state == "pending" else "failed").inc()

    async def _turned_off(
        self, conn: Connection, delivery: DueDelivery, reason: Literal["gone", "failing"]
    ) -> None:
        """The system turned the endpoint off: its pending deliveries fail, and the tenant hears of it."""
        failed = await webhook_deliveries.fail_pending(conn, delivery.endpoint_id)
        DELIVERIES.labels("failed").inc(failed)
        await outbox.add_event(
            conn,
            WebhookDisabled(tenant_id=delivery.tenant_id, webhook_id=delivery.endpoint_id, reason=reason),
        )
        log.warning("webhook_disabled", webhook_id=str(delivery.endpoint_id), reason=reason)

    async def _listen(self) -> None:
        """Wake on every commit of new deliveries, on a connection of its own (a pooled one would
        carry the LISTEN back to the pool)."""
        while True:
            try:
                conn = await asyncpg.connect(self._settings.database_url, timeout=2)
                try:
                    await conn.add_listener(webhook_deliveries.CHANNEL, lambda *_: self._wake.set())
                    self._wake.set()  # what was queued while nobody listened
                    while True:
                        await asyncio.sleep(LISTEN_CHECK_SECONDS)
                        await conn.execute("SELECT 1")  # a connection gone raises here
                finally:
                    with contextlib.suppress(*_DATABASE_ERRORS):
                        await conn.close(timeout=2)
            except _DATABASE_ERRORS as exc:
                log.warning("webhook_listener_reconnecting", error=str(exc))
                await asyncio.sleep(1)

    async def finish(self, seconds: float) -> None:
        """At a stop: let attempts in flight end (at most ``seconds``), then cut the rest off."""
        if self._attempts:
            await asyncio.wait(set(self._attempts), timeout=seconds)
        for task in set(self._attempts):
            await stop(task)
        await self._flush_successes()


async def dispatcher_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # Every connection goes through the guard, so a name that resolves to a private address now
    # (DNS rebinding) is refused at connect time; no cookies kept between receivers, no proxy
    # from the environment.
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(allow_private=settings.webhook_allow_private_addresses), limit=MAX_IN_FLIGHT
    )
    async with aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        timeout=aiohttp.ClientTimeout(total=settings.webhook_timeout_seconds),
        headers={"User-Agent": USER_AGENT},
    ) as session:
        dispatcher = Dispatcher(app[POOL], settings, session)
        running = background("registry-webhook-dispatcher", lambda _: dispatcher.run())
        async with contextlib.asynccontextmanager(running)(app):
            yield
        await dispatcher.finish(FINISH_SECONDS)


async def upkeep(app: web.Application) -> None:
    """Every SAMPLE_SECONDS, the backlog's gauges; every PRUNE_SECONDS, settled deliveries past
    the log's retention go, a batch at a time. Safe on every replica at once."""
    settings = app[SETTINGS]
    loop = asyncio.get_running_loop()
    pruned_at = -PRUNE_SECONDS
    while True:
        try:
            async with pooled(app[POOL]) as conn:
                backlog = await webhook_deliveries.backlog(conn)
                RETRY_BACKLOG.set(backlog.retrying)
                OLDEST_UNDELIVERED.set(backlog.oldest_age_seconds)
                if loop.time() - pruned_at >= PRUNE_SECONDS:
                    pruned_at = loop.time()
                    while (
                        await webhook_deliveries.prune_settled(
                            conn, settings.webhook_log_retention_days, PRUNE_BATCH
                        )
                        == PRUNE_BATCH
                    ):
                        pass
        except _DATABASE_ERRORS as exc:
            log.warning("webhook_upkeep_failed", error=str(exc))
        await asyncio.sleep(SAMPLE_SECONDS)


upkeep_ctx = background("registry-webhook-upkeep", upkeep)

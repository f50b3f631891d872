"""Transactional outbox: handlers write messages in their own transaction; a relay publishes them.

Each service's schema has an ``outbox`` table (see its first migration). A row is either a domain
event, a KV put (a KV put is a JetStream publish to ``$KV.<bucket>.<key>``) or a KV purge (the
same subject with a purge marker's headers), so events and projections share one ordered,
de-duplicated path to NATS, and nothing is lost while NATS is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import msgspec
import prometheus_client
import structlog
from aiohttp import web
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.kv import KV_OP, KV_PURGE, MSG_ROLLUP_SUBJECT

from shared import trace_context
from shared.app_keys import SETTINGS
from shared.bus import JS
from shared.db import Connection
from shared.events import Event, subject_of
from shared.logging import log_context_value
from shared.projections import kv_subject
from shared.tasks import background

log = structlog.get_logger()

_encoder = msgspec.json.Encoder()
BATCH = 500
# Notifications are the trigger; this is only the safety net should one ever be missed.
IDLE_RECHECK_SECONDS = 5.0
# How long a purge marker stays in its bucket before the server drops it (a per-message TTL): a
# watcher that resumes after a longer outage misses the purge and keeps the entry until it restarts.
# Meanwhile the marker is the key's only trace, so the bucket shrinks to its live keys.
PURGE_MARKER_SECONDS = 24 * 3600
# At shutdown, how long the active relay may take to publish what is committed.
FLUSH_SECONDS = 5.0


async def add_event(conn: Connection, event: Event) -> None:
    """Queue ``event`` in the caller's transaction.

    Order matters for KV puts: write (and so lock) the row the message describes before calling
    this, so that two transactions touching the same entity queue their messages in commit order.
    """
    await _add(conn, event.event_id, subject_of(event), _encoder.encode(event))


async def put_kv(conn: Connection, bucket: str, key: str, value: msgspec.Struct) -> None:
    """Queue a KV put in the caller's transaction (same ordering rule as :func:`add_event`)."""
    await _add(conn, uuid.uuid4(), kv_subject(bucket, key), _encoder.encode(value))


async def purge_kv(conn: Connection, bucket: str, key: str) -> None:
    """Queue the removal of a KV entry with all its values in the caller's transaction (same
    ordering rule as :func:`add_event`): watchers see it as deleted; its marker ages out after
    PURGE_MARKER_SECONDS, leaving nothing of the key in the bucket."""
    await _add(conn, uuid.uuid4(), kv_subject(bucket, key), b"", kv_operation=KV_PURGE)


async def _add(
    conn: Connection, message_id: uuid.UUID, subject: str, payload: bytes, *, kv_operation: str | None = None
) -> None:
    # The message is a child of the span that queued it (a request's, an event's), none from a
    # background task.
    span = trace_context.current()
    await conn.execute(
        "INSERT INTO outbox (id, subject, payload, request_id, traceparent, tracestate, kv_operation)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        message_id,
        subject,
        payload,
        log_context_value("request_id"),
        span and span.traceparent,
        span and span.tracestate,
        kv_operation,
    )


OUTBOX_LAG = prometheus_client.Gauge(
    "outbox_relay_lag_seconds",
    "Age of the oldest row in the last batch the relay published (0 when idle)",
    ["schema"],
    multiprocess_mode="max",
)
OUTBOX_PUBLISHED = prometheus_client.Counter(
    "outbox_published_total", "Outbox rows published and acknowledged by JetStream", ["schema"]
)
OUTBOX_BACKLOG = prometheus_client.Gauge(
    "outbox_backlog_batch",
    "Rows the relay found waiting at its last look (at most one batch)",
    ["schema"],
    multiprocess_mode="max",
)


class Relay:
    """Publishes a schema's outbox to JetStream, woken by NOTIFY on commit.

    One relay per schema is active at a time (a session advisory lock on its own connection), so
    messages leave in commit order; the other replicas' relays stand by and take over when the
    holder's connection ends. A row is deleted only after JetStream acknowledged it; a crash in
    between republishes it with the same ``Nats-Msg-Id``, which JetStream drops as a duplicate.
    """

    def __init__(self, dsn: str, schema: str, js: JetStreamContext) -> None:
        self._dsn = dsn
        self._schema = schema
        self._js = js
        self._wake = asyncio.Event()
        self._active = False
        self._passes = 0  # publishing passes started
        self._emptied = 0  # the last pass that left nothing behind
        # Set when a pass leaves the outbox empty or the relay stops being the active one: what a
        # flush waits for.
        self._progress = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                await self._run_connected()
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("outbox_relay_reconnecting", schema=self._schema, error=str(exc))
                await asyncio.sleep(1)

    async def _run_connected(self) -> None:
        conn = await asyncpg.connect(self._dsn, server_settings={"search_path": self._schema})
        try:
            await conn.add_listener(f"{self._schema}_outbox", lambda *_: self._wake.set())
            while not await conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1))", f"outbox:{self._schema}"
            ):
                await self._sleep(IDLE_RECHECK_SECONDS)
            log.info("outbox_relay_active", schema=self._schema)
            self._active = True
            while True:
                self._wake.clear()
                self._passes += 1
                current = self._passes
                if not await self._publish_batch(conn):
                    self._emptied = current
                    self._progress.set()
                    await self._sleep(IDLE_RECHECK_SECONDS)
        finally:
            self._active = False
            self._progress.set()
            await conn.close(timeout=2)

    async def flush(self, seconds: float) -> None:
        """At shutdown, when this relay is the active one: wait (at most ``seconds``) for a pass
        that starts now and leaves the outbox empty, so that what the last requests committed
        leaves now — not when another replica takes over or this one starts again."""
        if not self._active:
            return
        wanted = self._passes + 1
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while self._emptied < wanted and self._active:
                    self._progress.clear()
                    await self._progress.wait()

    async def _sleep(self, seconds: float) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation (see tasks.stop).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _publish_batch(self, conn: Connection) -> bool:
        """Publish the oldest rows; True when more are waiting (a full batch, or a retry due)."""
        rows = await conn.fetch(
            "SELECT seq, id, subject, payload, request_id, traceparent, tracestate, kv_operation,"
            " extract(epoch FROM now() - created_at) AS age FROM outbox ORDER BY seq LIMIT $1",
            BATCH,
        )
        OUTBOX_BACKLOG.labels(self._schema).set(len(rows))
        OUTBOX_LAG.labels(self._schema).set(float(rows[0]["age"]) if rows else 0)
        sent: list[int] = []
        try:
            for wave in _waves(rows):
                acks = await asyncio.gather(*(self._publish(row) for row in wave), return_exceptions=True)
                sent.extend(
                    row["seq"]
                    for row, ack in zip(wave, acks, strict=True)
                    if not isinstance(ack, BaseException)
                )
                failures = [ack for ack in acks if isinstance(ack, BaseException)]
                if failures:
                    log.warning("outbox_publish_failed", schema=self._schema, error=str(failures[0]))
                    await asyncio.sleep(0.5)
                    return True
        finally:
            if sent:
                await conn.execute("DELETE FROM outbox WHERE seq = ANY($1::bigint[])", sent)
                OUTBOX_PUBLISHED.labels(self._schema).inc(len(sent))
        return len(rows) == BATCH

    async def _publish(self, row: asyncpg.Record) -> None:
        headers = {"Nats-Msg-Id": str(row["id"])}
        if row["request_id"]:
            headers["X-Request-ID"] = row["request_id"]
        if row["traceparent"]:
            headers["traceparent"] = row["traceparent"]
            if row["tracestate"]:
                headers["tracestate"] = row["tracestate"]
        if row["kv_operation"] == KV_PURGE:
            # What nats-py's KeyValue.purge sends: the rollup drops the key's earlier values.
            headers |= {
                KV_OP: KV_PURGE,
                Header.ROLLUP.value: MSG_ROLLUP_SUBJECT,
                Header.MSG_TTL.value: str(PURGE_MARKER_SECONDS),
            }
        await self._js.publish(row["subject"], row["payload"], headers=headers, timeout=5)


def _waves(rows: list[asyncpg.Record]) -> list[list[asyncpg.Record]]:
    """Split rows into waves: rows of a wave are published concurrently, waves one after another.

    No KV key appears twice in a wave, so when some publishes of a wave fail and are retried later,
    no key can receive an older value after a newer one. Events need no such care: their readers
    order them by the version they carry.
    """
    waves: list[list[asyncpg.Record]] = []
    depth: dict[str, int] = {}
    for row in rows:
        subject = row["subject"]
        level = 0
        if subject.startswith("$KV."):
            level = depth.get(subject, -1) + 1
            depth[subject] = level
        while len(waves) <= level:
            waves.append([])
        waves[level].append(row)
    return waves


def relay_ctx(schema: str) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        relay = Relay(app[SETTINGS].database_url, schema, app[JS])
        running = background(f"outbox-relay-{schema}", lambda _: relay.run())
        async with contextlib.asynccontextmanager(running)(app):
            yield
            await relay.flush(FLUSH_SECONDS)

    return ctx

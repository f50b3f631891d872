"""What the heartbeat service reads and watches: heartbeats (→ presence), registry's screen events
(→ the heartbeat interval of each screen), and the clock (→ screens gone offline)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import asyncpg
import msgspec
import prometheus_client
import structlog
from aiohttp import web
from nats.aio.msg import Msg

from services.heartbeat import history, queries
from shared import outbox
from shared.app_keys import SETTINGS
from shared.bus import JS, EventHandler, consumer_ctx
from shared.db import POOL
from shared.events import (
    AnyEvent,
    PresenceChanged,
    ScreenConfigChanged,
    ScreenCreated,
    heartbeat_decoder,
    subject_of_type,
)
from shared.pull import durable_config, pull_batches
from shared.tasks import finished

log = structlog.get_logger()

BATCH_SIZE = prometheus_client.Histogram(
    "heartbeat_batch_size", "Heartbeats written per batch", buckets=(1, 10, 50, 100, 250, 500)
)
TRANSITIONS = prometheus_client.Counter(
    "presence_transitions_total", "Screens that went online or offline", ["presence"]
)

WRITTEN = prometheus_client.Counter(
    "presence_rows_written_total", "Heartbeats written to presence (the others reach only the watch)"
)

DURABLE = "heartbeat-presence"
BATCH = 500
_PRESENCE_SUBJECT = subject_of_type(PresenceChanged)
_OVERDUE_BATCH = 1000


async def record_presence(app: web.Application) -> None:
    """One durable pull consumer shared by every replica: each batch goes to one of them."""
    config = durable_config(DURABLE, "heartbeat.*.*", max_ack_pending=20_000)
    async with contextlib.aclosing(pull_batches(app[JS], "HEARTBEATS", config, BATCH)) as batches:
        async for messages in batches:
            await finished(_record(app, messages))


async def _record(app: web.Application, messages: list[Msg]) -> None:
    """Store a batch and the presence changes it causes in one transaction; ack only after it."""
    heartbeats, good, ours = [], [], []
    for message in messages:
        if message.subject == _PRESENCE_SUBJECT:  # our own events share the stream's subjects
            ours.append(message)
            continue
        try:
            heartbeats.append(heartbeat_decoder.decode(message.data))
            good.append(message)
        except msgspec.DecodeError:
            log.error("heartbeat_undecodable", subject=message.subject)
            await message.term()
    await asyncio.gather(*(message.ack() for message in ours))
    if not good:
        return
    settings = app[SETTINGS]
    try:
        await history.ensure_partitions(
            app[POOL],
            app[history.KNOWN_PARTITIONS],
            (h.received_at for h in history.retained(heartbeats, settings.heartbeat_retention_hours)),
        )
        async with app[POOL].acquire() as conn, conn.transaction():
            transitions, written = await queries.record_heartbeats(
                conn, heartbeats, settings.offline_after_intervals, settings.presence_write_seconds
            )
            # The history keeps what presence wrote; with no coalescing, every heartbeat.
            kept = heartbeats if settings.presence_write_seconds == 0 else written
            await history.store_heartbeats(conn, kept, settings.heartbeat_retention_hours)
            for transition in transitions:
                await outbox.add_event(conn, transition.event())
    except Exception:
        log.exception("presence_write_failed", batch=len(good))
        # A range another replica dropped (or never made) is looked for again on the retry.
        app[history.KNOWN_PARTITIONS].clear()
        await asyncio.gather(*(message.nak(delay=1) for message in good))
        return
    await asyncio.gather(*(message.ack() for message in good))
    BATCH_SIZE.observe(len(good))
    WRITTEN.inc(len(written))
    for transition in transitions:
        TRANSITIONS.labels(transition.presence).inc()
        log.info("presence_changed", screen_id=str(transition.screen_id), presence=transition.presence)


async def mark_offline(app: web.Application) -> None:
    """Every ``presence_check_seconds``: screens past their stored deadline go offline. Safe on
    every replica at once (see :func:`queries.mark_overdue_offline`). The stored deadline is the
    backstop (deadline + PRESENCE_WRITE_SECONDS); the watch finds a stopped screen on time."""
    settings = app[SETTINGS]
    while True:
        await asyncio.sleep(settings.presence_check_seconds)
        while True:
            async with app[POOL].acquire() as conn, conn.transaction():
                transitions = await queries.mark_overdue_offline(conn, _OVERDUE_BATCH)
                for transition in transitions:
                    await outbox.add_event(conn, transition.event())
            for transition in transitions:
                TRANSITIONS.labels("offline").inc()
                log.info("presence_changed", screen_id=str(transition.screen_id), presence="offline")
            if len(transitions) < _OVERDUE_BATCH:
                break


def screens_handler(app: web.Application) -> EventHandler:
    async def handle(event: AnyEvent) -> None:
        match event:
            case ScreenCreated() | ScreenConfigChanged():
                async with app[POOL].acquire() as conn, conn.transaction():
                    settings = app[SETTINGS]
                    await queries.upsert_screen(
                        conn, event, settings.offline_after_intervals, settings.presence_write_seconds
                    )

    return handle


screens_ctx = consumer_ctx(
    "heartbeat-screens",
    ["registry.screen.created", "registry.screen.config_changed"],
    screens_handler,
)


async def prune_history(app: web.Application) -> None:
    """Every minute: the history's next ranges are created ahead and the ranges past
    HEARTBEAT_RETENTION_HOURS dropped whole. Safe on every replica (a range goes once)."""
    retention = app[SETTINGS].heartbeat_retention_hours
    while True:
        now = datetime.now(UTC)
        try:
            await history.ensure_partitions(app[POOL], app[history.KNOWN_PARTITIONS], history.ahead(now))
            async with app[POOL].acquire() as conn, conn.transaction():
                dropped = await history.drop_expired(conn, app[history.KNOWN_PARTITIONS], retention, now)
        except asyncpg.LockNotAvailableError:
            # A long reader held the history: the ranges wait for the next pass, ingestion did not.
            log.warning("heartbeat_history_lock_busy")
            dropped = []
        if dropped:
            log.info("heartbeat_history_dropped", partitions=dropped)
        await asyncio.sleep(60)

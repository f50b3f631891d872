"""The heartbeat history's SQL: ranges of six hours created ahead and dropped whole once past
HEARTBEAT_RETENTION_HOURS, rows stored once, a screen's page read oldest first.

Functions take a connection, but for :func:`ensure_partitions`, which runs its own short
transaction (creating a range locks the table, so never inside a batch's transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
from aiohttp import web

from shared.db import Connection
from shared.events import Heartbeat

PARTITION = timedelta(hours=6)
# Created ahead of the clock, so a batch finds its range (and a clock a little ahead too).
_AHEAD = 2
# The table from before partitioning, read until its newest row is past the retention.
_BEFORE = "heartbeats_before_partitions"
# What a row's report leaves out: its columns and the screen's tenant say it.
_IMPLIED = ("tenantId", "screenId", "receivedAt")
# Creating or dropping a range locks the whole history: behind a long reader, give up and try
# again (the next batch, the next pass) rather than queue every insert and read behind the lock.
_DDL_LOCK_TIMEOUT = "2s"
_CLOCK_MARGIN = timedelta(minutes=10)


class Partition(msgspec.Struct, frozen=True):
    name: str
    starts_at: datetime


def partition_start(at: datetime) -> datetime:
    """The start of the range holding ``at`` (ranges start at 00, 06, 12 and 18 UTC)."""
    at = at.astimezone(UTC)
    return at.replace(hour=at.hour - at.hour % 6, minute=0, second=0, microsecond=0)


# The ranges this app made sure of: a batch asks the database only about a new one.
KNOWN_PARTITIONS = web.AppKey("known_partitions", set[datetime])


async def ensure_partitions(pool: asyncpg.Pool, known: set[datetime], times: Iterable[datetime]) -> None:
    """Create the ranges holding ``times`` if missing, each in a short transaction of its own;
    replicas creating one at once wait on a lock, and the second finds it there."""
    for start in sorted({partition_start(at) for at in times} - known):
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{_DDL_LOCK_TIMEOUT}'")
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('heartbeat:partitions'))")
            await conn.execute("SELECT create_heartbeat_partition($1)", start)
        known.add(start)


def ahead(now: datetime) -> list[datetime]:
    """The current range and the next ones the maintenance creates ahead."""
    start = partition_start(now)
    return [start + PARTITION * n for n in range(_AHEAD + 1)]


async def drop_expired(
    conn: Connection, known: set[datetime], retention_hours: float, now: datetime
) -> list[str]:
    """Drop every range whose end is past the retention (and the table from before
    partitioning once its newest row is); returns the names dropped. Call inside a transaction:
    replicas pruning at once take turns, and the second finds nothing left to drop."""
    await conn.execute(f"SET LOCAL lock_timeout = '{_DDL_LOCK_TIMEOUT}'")
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('heartbeat:partitions'))")
    # A replica whose clock is behind still stores rows a little past the retention by ours.
    cutoff = now - timedelta(hours=retention_hours) - _CLOCK_MARGIN
    rows = await conn.fetch("SELECT name, starts_at FROM heartbeat_partitions ORDER BY starts_at")
    expired = [Partition(r["name"], r["starts_at"]) for r in rows if r["starts_at"] + PARTITION <= cutoff]
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", _BEFORE):
        newest = await conn.fetchval(f"SELECT max(received_at) FROM {_BEFORE}")
        if newest is None or newest <= cutoff:
            expired.append(Partition(_BEFORE, cutoff))
    for partition in expired:
        known.discard(partition.starts_at)
        await conn.execute("SELECT drop_heartbeat_table($1)", partition.name)
    return [partition.name for partition in expired]


def retained(heartbeats: list[Heartbeat], retention_hours: float) -> list[Heartbeat]:
    """The heartbeats still within the retention: one past it (a very late redelivery) is not
    stored, nor is its range made again."""
    cutoff = datetime.now(UTC) - timedelta(hours=retention_hours)
    return [h for h in heartbeats if h.received_at > cutoff]


async def store_heartbeats(conn: Connection, heartbeats: list[Heartbeat], retention_hours: float) -> None:
    """Add heartbeats to the history; one already stored (a redelivery) is skipped, one already
    past the retention is not stored. Their ranges must exist (:func:`ensure_partitions`)."""
    kept = retained(heartbeats, retention_hours)
    if not kept:
        return
    await conn.execute(
        "INSERT INTO heartbeats (screen_id, received_at, report)"
        " SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::jsonb[])"
        " ON CONFLICT DO NOTHING",
        [h.screen_id for h in kept],
        [h.received_at for h in kept],
        [stored_report(h) for h in kept],
    )


def stored_report(heartbeat: Heartbeat) -> dict[str, object]:
    """What a history row keeps of a heartbeat: the report without the ids the row says."""
    report = msgspec.to_builtins(heartbeat)
    for key in _IMPLIED:
        report.pop(key, None)
    return report


async def heartbeat_history(
    conn: Connection,
    tenant_id: uuid.UUID,
    screen_id: uuid.UUID,
    *,
    since: datetime | None,
    limit: int,
    retention_hours: float,
) -> list[Heartbeat]:
    """The screen's heartbeats after ``since`` and within the retention, oldest first (a range is
    dropped up to six hours after its rows passed the retention; they are not shown meanwhile)."""
    sources = ["heartbeats"]
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", _BEFORE):
        sources.append(_BEFORE)
    union = " UNION ALL ".join(
        f"(SELECT received_at, report FROM {table} WHERE screen_id = $1"
        " AND received_at > greatest($2::timestamptz, now() - make_interval(secs => $4::float8 * 3600))"
        " ORDER BY received_at LIMIT $3)"
        for table in sources
    )
    rows = await conn.fetch(
        f"SELECT received_at, report FROM ({union}) AS h ORDER BY received_at LIMIT $3",
        screen_id,
        since,  # greatest() passes over a NULL
        limit,
        retention_hours,
    )
    return [
        msgspec.convert(
            {**row["report"], "tenantId": str(tenant_id), "screenId": str(screen_id)}
            | {"receivedAt": row["received_at"]},
            Heartbeat,
        )
        for row in rows
    ]

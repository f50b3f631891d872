"""The heartbeat service's storage at depth, before and after the counters and the partitions.

    python -m bench.heartbeat_storage [--screens 1000000] [--sample 2000]

On a PostgreSQL of its own (started here, durable like production), two copies of the heartbeat
schema: ``before`` (migrations up to the unpartitioned history) and ``after`` (all of them).
Each gets ``--screens`` screens of one tenant (and 1,000 of others) with presence rows, then:

- fleet status: the old query (a count over the tenant's screens) against the counters;
- a batch of 500 transitions with the counters' triggers;
- the history: one day of heartbeats a minute of ``--sample`` screens, stored as each design
  stores it (``before``: every heartbeat, whole; ``after``: one per PRESENCE_WRITE_SECONDS,
  and every heartbeat for comparison), in bytes per screen per day with indexes;
- pruning that day: ``DELETE`` in batches of 10,000 against dropping its ranges (time and WAL).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from devstack.infra import Postgres
from services.heartbeat import history
from services.heartbeat.app import MIGRATIONS
from shared import db
from shared.events import Heartbeat
from shared.settings import DEFAULTS

SCAN = (
    "SELECT count(*), count(*) FILTER (WHERE p.status = 'online'),"
    " count(*) FILTER (WHERE p.status = 'offline')"
    " FROM screens s LEFT JOIN presence p ON p.screen_id = s.id WHERE s.tenant_id = $1"
)
COUNTERS = (
    "SELECT coalesce(sum(screens), 0)::bigint, coalesce(sum(online), 0)::bigint,"
    " coalesce(sum(offline), 0)::bigint FROM fleet_counts WHERE tenant_id = $1"
)
DAY = datetime(2026, 11, 20, tzinfo=UTC)
Figures = dict[str, Any]


def heartbeat(tenant: uuid.UUID, screen: uuid.UUID, minute: int) -> Heartbeat:
    """A TV's report as the field sends it: uptime, version, storage, temperature, what plays."""
    return Heartbeat(
        tenant_id=tenant,
        screen_id=screen,
        device_id=uuid.uuid4(),
        received_at=DAY + timedelta(minutes=minute),
        uptime_seconds=86_400 + minute * 60,
        app_version="2.14.3",
        free_storage_mb=12034.5 - minute * 0.25,
        temperature_c=41.5 + (minute % 7) * 0.5,
        playing="spring-promo-1080p.mp4",
    )


async def median_ms(conn: asyncpg.Connection, query: str, *args: object, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await conn.fetch(query, *args)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def fleet(conn: asyncpg.Connection, tenant: uuid.UUID, screens: int, counters: bool) -> Figures:
    started = time.perf_counter()
    await conn.execute(
        "INSERT INTO screens (id, tenant_id, version)"
        " SELECT gen_random_uuid(), $1, 1 FROM generate_series(1, $2)",
        tenant,
        screens,
    )
    await conn.execute(
        "INSERT INTO screens (id, tenant_id, version)"
        " SELECT gen_random_uuid(), gen_random_uuid(), 1 FROM generate_series(1, 1000)"
    )
    # 98 % heard from, 95 % of those online.
    await conn.execute(
        "INSERT INTO presence (screen_id, tenant_id, device_id, last_seen_at, last_heartbeat, status,"
        " offline_after, presence_seq)"
        " SELECT id, tenant_id, id, now(), '{}', CASE WHEN random() < 0.95 THEN 'online' ELSE 'offline' END,"
        " now() + interval '3 minutes', 1 FROM screens WHERE random() < 0.98"
    )
    figures: Figures = {"load s": round(time.perf_counter() - started, 1)}
    await conn.execute("VACUUM ANALYZE")
    figures["fleet status, scan ms"] = round(await median_ms(conn, SCAN, tenant, runs=7), 1)
    if counters:
        figures["fleet status, counters ms"] = round(await median_ms(conn, COUNTERS, tenant, runs=51), 3)
        scanned, counted = await conn.fetchrow(SCAN, tenant), await conn.fetchrow(COUNTERS, tenant)
        assert scanned is not None and counted is not None
        figures["counters equal the scan"] = tuple(scanned.values()) == tuple(counted.values())
        started = time.perf_counter()
        await conn.execute(
            "UPDATE presence SET status = 'offline', presence_seq = presence_seq + 1 WHERE screen_id IN"
            " (SELECT screen_id FROM presence WHERE status = 'online' AND tenant_id = $1 LIMIT 500)",
            tenant,
        )
        figures["500 transitions, counters kept, ms"] = round((time.perf_counter() - started) * 1000, 1)
    return figures


async def wal_mb(conn: asyncpg.Connection, since: str) -> float:
    return round(
        await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::float8", since)
        / 1e6,
        2,
    )


async def history_before(conn: asyncpg.Connection, tenant: uuid.UUID, screens: list[uuid.UUID]) -> Figures:
    for hour in range(24):
        rows = [
            (screen, h.received_at, tenant, msgspec.json.encode(h).decode())
            for minute in range(hour * 60, hour * 60 + 60)
            for screen in screens
            for h in [heartbeat(tenant, screen, minute)]
        ]
        await conn.copy_records_to_table(
            "heartbeats", records=rows, columns=["screen_id", "received_at", "tenant_id", "report"]
        )
    await conn.execute("VACUUM ANALYZE heartbeats")
    size = await conn.fetchval("SELECT pg_total_relation_size('heartbeats')")
    figures: Figures = {
        "history bytes a row": round(size / (len(screens) * 1440)),
        "history bytes a screen a day": round(size / len(screens)),
    }
    since = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
    started = time.perf_counter()
    deleted = 10_000
    while deleted == 10_000:  # as the service pruned: batches that keep each transaction short
        status = await conn.execute(
            "DELETE FROM heartbeats WHERE ctid = ANY (ARRAY(SELECT ctid FROM heartbeats"
            " WHERE received_at < $1 LIMIT 10000))",
            DAY + timedelta(days=1),
        )
        deleted = int(status.split()[-1])
    figures["prune the day s"] = round(time.perf_counter() - started, 2)
    figures["prune the day, WAL MB"] = await wal_mb(conn, since)
    figures["bytes left after the prune (before vacuum)"] = await conn.fetchval(
        "SELECT pg_total_relation_size('heartbeats')"
    )
    return figures


async def history_after(
    pool: asyncpg.Pool, conn: asyncpg.Connection, tenant: uuid.UUID, screens: list[uuid.UUID]
) -> Figures:
    known: set[datetime] = set()
    await history.ensure_partitions(pool, known, [DAY + timedelta(hours=h) for h in range(0, 24, 6)])
    every = round(DEFAULTS["presence_write_seconds"] / 60)
    figures: Figures = {}
    for label, step in ((f"one a screen per {every} min", every), ("every heartbeat", 1)):
        await conn.execute("TRUNCATE heartbeats")
        for start in range(0, 24 * 60, 6 * 60):
            range_start = DAY + timedelta(minutes=start)
            rows = [
                (screen, h.received_at, msgspec.json.encode(history.stored_report(h)).decode())
                for minute in range(start, start + 6 * 60, step)
                for screen in screens
                for h in [heartbeat(tenant, screen, minute)]
            ]
            await conn.copy_records_to_table(
                f"heartbeats_p{range_start:%Y%m%d_%H}",
                records=rows,
                columns=["screen_id", "received_at", "report"],
            )
        await conn.execute("VACUUM ANALYZE heartbeats")
        size = await conn.fetchval(
            "SELECT sum(pg_total_relation_size(name::regclass))::bigint FROM heartbeat_partitions"
        )
        rows_stored = await conn.fetchval("SELECT count(*) FROM heartbeats")
        figures[f"history ({label}) bytes a row"] = round(size / rows_stored)
        figures[f"history ({label}) bytes a screen a day"] = round(size / len(screens))
    since = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
    started = time.perf_counter()
    async with conn.transaction():
        await history.drop_expired(conn, known, 24, DAY + timedelta(days=2))
    figures["prune the day (drop its ranges) s"] = round(time.perf_counter() - started, 3)
    figures["prune the day, WAL MB"] = await wal_mb(conn, since)
    return figures


async def run(args: argparse.Namespace, root: Path) -> dict[str, Figures]:
    server = Postgres(root / "data", durable=True).start()
    try:
        admin = await asyncpg.connect(server.dsn)
        await admin.execute("CREATE DATABASE storage")
        await admin.close()
        dsn = server.dsn.rpartition("/")[0] + "/storage"
        before = root / "before"
        before.mkdir()
        for path in sorted(MIGRATIONS[1].glob("*.sql")):
            if path.stem < "004":  # the counters and the partitions came with 004 and 005
                shutil.copy(path, before / path.name)
        await db.migrate(dsn, "before", MIGRATIONS[0], before)
        await db.migrate(dsn, "after", *MIGRATIONS)
        tenant = uuid.uuid4()
        sample = [uuid.uuid4() for _ in range(args.sample)]
        figures: dict[str, Figures] = {}
        for schema in ("before", "after"):
            # Plain connections: COPY wants the server's own jsonb input, not the pool's codec.
            conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
            try:
                figures[schema] = await fleet(conn, tenant, args.screens, counters=schema == "after")
                if schema == "before":
                    figures[schema] |= await history_before(conn, tenant, sample)
                else:
                    pool = await db.create_pool(dsn, schema, min_size=1, max_size=1)
                    try:
                        figures[schema] |= await history_after(pool, conn, tenant, sample)
                    finally:
                        await pool.close()
            finally:
                await conn.close()
        return figures
    finally:
        server.stop("fast")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--screens", type=int, default=1_000_000, help="screens of the measured tenant")
    parser.add_argument("--sample", type=int, default=2000, help="screens whose day of history is stored")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="heartbeat-storage-"))
    try:
        figures = asyncio.run(run(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for schema, values in figures.items():
        print(schema)
        for name, value in values.items():
            print(f"  {name}: {value}")


if __name__ == "__main__":
    main()

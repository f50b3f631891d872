"""The heartbeat service's storage at fleet scale: fleet counters kept with the transitions, the
history's ranges created and dropped whole, and presence written far less than once a heartbeat.

The database-level tests call the service's queries on a migrated database (no bus): time moves
through the heartbeats' own ``receivedAt`` and an explicit ``now``.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
import pytest_asyncio
from aiohttp import web

from services.heartbeat import history, queries
from services.heartbeat.app import MIGRATIONS
from shared import bus, db
from shared.bus_access import SETUP_USER
from shared.events import (
    Heartbeat,
    PresenceChanged,
    ScreenConfig,
    ScreenConfigChanged,
    ScreenCreated,
    heartbeat_subject,
)
from shared.settings import Settings
from tests.stack import SERVICES, Stack

HEARTBEAT = "/v1/device/heartbeat"

INTERVALS = 3.0  # OFFLINE_AFTER_INTERVALS


@pytest_asyncio.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(database, "heartbeat", min_size=4, max_size=8)
    yield pool
    await pool.close()


def beat(tenant: uuid.UUID, screen: uuid.UUID, at: datetime, **report: Any) -> Heartbeat:
    return Heartbeat(tenant_id=tenant, screen_id=screen, device_id=screen, received_at=at, **report)


def created(tenant: uuid.UUID, screen: uuid.UUID, version: int = 1, interval: int = 1) -> ScreenCreated:
    config = ScreenConfig(heartbeat_interval_minutes=interval)
    return ScreenCreated(tenant_id=tenant, screen_id=screen, venue_id=tenant, version=version, config=config)


async def counted(conn: asyncpg.Connection) -> dict[uuid.UUID, tuple[int, int, int]]:
    rows = await conn.fetch(
        "SELECT tenant_id, sum(screens) AS screens, sum(online) AS online, sum(offline) AS offline"
        " FROM fleet_counts GROUP BY tenant_id"
    )
    return {r["tenant_id"]: (r["screens"], r["online"], r["offline"]) for r in rows if r["screens"]}


async def recounted(conn: asyncpg.Connection) -> dict[uuid.UUID, tuple[int, int, int]]:
    """The scan fleet status used to be."""
    rows = await conn.fetch(
        "SELECT s.tenant_id, count(*) AS screens, count(*) FILTER (WHERE p.status = 'online') AS online,"
        " count(*) FILTER (WHERE p.status = 'offline') AS offline"
        " FROM screens s LEFT JOIN presence p ON p.screen_id = s.id GROUP BY s.tenant_id"
    )
    return {r["tenant_id"]: (r["screens"], r["online"], r["offline"]) for r in rows}


async def in_transaction(pool: asyncpg.Pool, work: Any) -> Any:
    async with pool.acquire() as conn, conn.transaction():
        return await work(conn)


@pytest.mark.parametrize("seed", [19, 20, 21, 22])
async def test_fleet_counters_match_a_recount_after_a_random_history(pool, seed):
    rng = random.Random(seed)
    tenants = [uuid.uuid4() for _ in range(3)]
    screens = {uuid.uuid4(): rng.choice(tenants) for _ in range(60)}
    versions: dict[uuid.UUID, int] = {}
    delivered: list[Any] = []  # what was applied once, to be applied again (redeliveries)
    now = datetime.now(UTC)

    async def screen_event(screen: uuid.UUID) -> None:
        versions[screen] = versions.get(screen, 0) + 1
        event: ScreenCreated | ScreenConfigChanged = (
            created(screens[screen], screen, versions[screen])
            if versions[screen] == 1
            else ScreenConfigChanged(
                tenant_id=screens[screen],
                screen_id=screen,
                version=versions[screen],
                config=ScreenConfig(heartbeat_interval_minutes=rng.choice([1, 5])),
            )
        )
        delivered.append(event)
        await in_transaction(pool, lambda c: queries.upsert_screen(c, event, INTERVALS, 60))

    quiet = list(screens)[:5]  # created, never heard from: unknown
    clock = iter(range(1, 1_000_000))

    async def heartbeats() -> None:
        # Most fresh (newer than any before), some late enough to be past their deadline, some of
        # screens not known yet.
        batch = [
            beat(screens[s], s, now + timedelta(seconds=next(clock)))
            if rng.random() < 0.8
            else beat(screens[s], s, now - timedelta(minutes=30, seconds=rng.random()))
            for s in rng.sample(list(screens)[5:], 12)
        ]
        delivered.append(batch)
        await in_transaction(
            pool, lambda c: queries.record_heartbeats(c, batch, INTERVALS, rng.choice([0, 60]))
        )

    async def detectors() -> None:
        # Time passes for some screens (as tests move it: their stored times go back an hour),
        # then both detectors look: the stored deadline's and the watch's.
        aged = rng.sample(list(screens), 10)
        await in_transaction(
            pool,
            lambda c: c.execute(
                "UPDATE presence SET last_seen_at = last_seen_at - interval '1 hour',"
                " offline_after = offline_after - interval '1 hour' WHERE screen_id IN"
                " (SELECT screen_id FROM presence WHERE screen_id = ANY($1::uuid[]) ORDER BY 1 FOR UPDATE)",
                aged,
            ),
        )
        await in_transaction(pool, lambda c: queries.mark_overdue_offline(c, 4))
        seen = [now - timedelta(minutes=rng.choice([1, 10, 100])) for _ in aged]
        await in_transaction(pool, lambda c: queries.mark_stopped_offline(c, aged, seen, seen, INTERVALS))

    async def redeliver() -> None:
        if not delivered:
            return
        again = rng.choice(delivered)
        if isinstance(again, list):
            await in_transaction(pool, lambda c: queries.record_heartbeats(c, again, INTERVALS, 0))
        else:
            await in_transaction(pool, lambda c: queries.upsert_screen(c, again, INTERVALS, 60))

    steps: list[Callable[[], Awaitable[None]]] = [
        lambda: screen_event(rng.choice(list(screens))),
        heartbeats,
        detectors,
        redeliver,
    ]
    for _ in range(40):
        # Several transactions at once, as replicas run them: a screen's creation races its first
        # heartbeat on another connection.
        work = [rng.choice(steps)() for _ in range(4)]
        fresh = rng.choice(list(screens))
        if fresh not in versions:
            work.append(screen_event(fresh))
        if fresh not in versions and fresh not in quiet:
            one = [beat(screens[fresh], fresh, now + timedelta(seconds=next(clock)))]
            work.append(
                in_transaction(pool, lambda c, one=one: queries.record_heartbeats(c, one, INTERVALS, 0))
            )
        await asyncio.gather(*work)

    async with pool.acquire() as conn:
        expected = await recounted(conn)
        assert await counted(conn) == expected
        # The random walk reached every kind of state.
        assert sum(v[0] for v in expected.values()) > 30
        assert all(sum(v[i] for v in expected.values()) > 0 for i in (1, 2)), expected
        assert sum(v[0] - v[1] - v[2] for v in expected.values()) > 0, expected
        for tenant in tenants:
            status = await queries.fleet_status(conn, tenant)
            screens_, online, offline = expected.get(tenant, (0, 0, 0))
            assert (status.screens, status.online, status.offline) == (screens_, online, offline)
            assert status.unknown == screens_ - online - offline


async def test_a_screen_and_its_first_heartbeat_at_once_are_counted_once(pool):
    tenant = uuid.uuid4()
    now = datetime.now(UTC)
    for _ in range(30):
        screen = uuid.uuid4()
        hb = [beat(tenant, screen, now)]
        await asyncio.gather(
            in_transaction(
                pool, lambda c, s=screen: queries.upsert_screen(c, created(tenant, s), INTERVALS, 0)
            ),
            in_transaction(pool, lambda c, hb=hb: queries.record_heartbeats(c, hb, INTERVALS, 0)),
        )
    async with pool.acquire() as conn:
        assert await counted(conn) == await recounted(conn) == {tenant: (30, 30, 0)}


async def test_a_fleets_first_heartbeats_racing_its_screens_events_are_counted_once(pool):
    """A batch of more than 64 screens not known yet locks the screens table rather than each
    screen, while registry's events arrive one screen at a time (the screens consumer)."""
    tenant = uuid.uuid4()
    now = datetime.now(UTC)
    for _ in range(5):
        screens = [uuid.uuid4() for _ in range(100)]
        batch = [beat(tenant, screen, now) for screen in screens]
        events = [
            in_transaction(
                pool, lambda c, s=screen: queries.upsert_screen(c, created(tenant, s), INTERVALS, 0)
            )
            for screen in screens
        ]
        await asyncio.gather(
            *events[:50],
            in_transaction(pool, lambda c, batch=batch: queries.record_heartbeats(c, batch, INTERVALS, 0)),
            *events[50:],
        )
    async with pool.acquire() as conn:
        assert await counted(conn) == await recounted(conn) == {tenant: (500, 500, 0)}


async def test_an_online_screen_is_written_once_per_presence_write_seconds(pool):
    """Sixty heartbeats a minute apart: the first (a transition) and one per 20 minutes after."""
    tenant, screen = uuid.uuid4(), uuid.uuid4()
    start = datetime.now(UTC)
    await in_transaction(pool, lambda c: queries.upsert_screen(c, created(tenant, screen), INTERVALS, 1200))
    written = []
    for minute in range(61):
        hb = [beat(tenant, screen, start + timedelta(minutes=minute), uptime_seconds=minute)]
        transitions, rows = await in_transaction(
            pool, lambda c, hb=hb: queries.record_heartbeats(c, hb, INTERVALS, 1200)
        )
        assert len(transitions) == (1 if minute == 0 else 0)
        written += [h.uptime_seconds for h in rows]
    assert written == [0, 20, 40, 60]
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT last_seen_at, offline_after FROM presence WHERE screen_id = $1", screen
        )
    # The stored deadline is the backstop: three intervals and the write period past the last write.
    assert row["last_seen_at"] == start + timedelta(minutes=60)
    assert row["offline_after"] == start + timedelta(minutes=63, seconds=1200)


async def test_a_changed_interval_never_makes_a_stored_deadline_pass_early(pool):
    """A shorter interval leaves the stored deadline (the TV may keep to its old one until it learns
    of it): counted from a row last written long ago, it would have passed at once. A longer one
    moves it on."""
    tenant, quiet, recent = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    for screen, minutes_ago in ((quiet, 50), (recent, 10)):
        every_twenty = created(tenant, screen, interval=20)
        await in_transaction(pool, lambda c, e=every_twenty: queries.upsert_screen(c, e, INTERVALS, 1500))
        hb = [beat(tenant, screen, now - timedelta(minutes=minutes_ago))]
        await in_transaction(pool, lambda c, hb=hb: queries.record_heartbeats(c, hb, INTERVALS, 1500))
        every_minute = ScreenConfigChanged(
            tenant_id=tenant, screen_id=screen, version=2, config=ScreenConfig(heartbeat_interval_minutes=1)
        )
        await in_transaction(pool, lambda c, e=every_minute: queries.upsert_screen(c, e, INTERVALS, 1500))

    async def deadlines() -> dict[uuid.UUID, datetime]:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT screen_id, offline_after FROM presence WHERE screen_id = ANY($1::uuid[])",
                [quiet, recent],
            )
        return {row["screen_id"]: row["offline_after"] for row in rows}

    # Three 20-minute intervals and the write period after each last heartbeat, as before.
    assert await deadlines() == {
        quiet: now + timedelta(minutes=-50 + 60 + 25),
        recent: now + timedelta(minutes=-10 + 60 + 25),
    }
    assert await in_transaction(pool, lambda c: queries.mark_overdue_offline(c, 1000)) == []
    every_hour = ScreenConfigChanged(
        tenant_id=tenant, screen_id=recent, version=3, config=ScreenConfig(heartbeat_interval_minutes=60)
    )
    await in_transaction(pool, lambda c: queries.upsert_screen(c, every_hour, INTERVALS, 1500))
    assert (await deadlines())[recent] == now + timedelta(minutes=-10 + 180 + 25)


async def test_history_ranges_are_created_ahead_and_dropped_whole(pool):
    known: set[datetime] = set()
    tenant, screen = uuid.uuid4(), uuid.uuid4()
    now = datetime(2026, 11, 26, 21, 30, tzinfo=UTC)
    # Pretend ``now`` for the ranges; rows go in at real times relative to it.
    times = [now - timedelta(hours=h) for h in (30, 20, 7, 1)] + [now]
    await history.ensure_partitions(pool, known, times + history.ahead(now))
    async with pool.acquire() as conn:
        names = [
            r["name"] for r in await conn.fetch("SELECT name FROM heartbeat_partitions ORDER BY starts_at")
        ]
        assert names == [
            "heartbeats_p20261125_12",
            "heartbeats_p20261126_00",
            "heartbeats_p20261126_12",
            "heartbeats_p20261126_18",
            "heartbeats_p20261127_00",
            "heartbeats_p20261127_06",
        ]
        batch = [beat(tenant, screen, at, uptime_seconds=i) for i, at in enumerate(times)]
        await history.store_heartbeats(conn, batch, retention_hours=24 * 365)
        await history.store_heartbeats(conn, batch, retention_hours=24 * 365)  # a redelivery
        assert await conn.fetchval("SELECT count(*) FROM heartbeats") == 5

        dropped = await history.drop_expired(conn, known, retention_hours=24, now=now)
        # [12:00, 18:00) of the 25th ended before the cutoff (21:30 on the 25th); the range
        # holding the cutoff stays until it has passed whole. The empty table from before
        # partitioning goes too.
        assert dropped == ["heartbeats_p20261125_12", "heartbeats_before_partitions"]
        assert await conn.fetchval("SELECT count(*) FROM heartbeats") == 4
        assert await conn.fetchval("SELECT to_regclass('heartbeats_p20261125_12')") is None
        assert await history.drop_expired(conn, known, retention_hours=24, now=now) == []
    assert datetime(2026, 11, 25, 12, tzinfo=UTC) not in known


async def test_pruning_drops_only_the_historys_own_ranges(pool):
    """Another child of the history (an operator's DEFAULT partition) neither stops pruning nor is
    dropped by it, and the drop refuses a table that is not the history's."""
    now = datetime.now(UTC)
    known: set[datetime] = set()
    await history.ensure_partitions(pool, known, [now - timedelta(days=3), now])
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE heartbeats_default PARTITION OF heartbeats DEFAULT")
        async with conn.transaction():
            dropped = await history.drop_expired(conn, known, retention_hours=24, now=now)
        expired = f"heartbeats_p{history.partition_start(now - timedelta(days=3)):%Y%m%d_%H}"
        assert dropped == [expired, "heartbeats_before_partitions"], dropped
        assert await conn.fetchval("SELECT to_regclass('heartbeats_default') IS NOT NULL")
        with pytest.raises(asyncpg.RaiseError, match="not a table of the heartbeat history"):
            await conn.execute("SELECT drop_heartbeat_table('screens')")
        assert await conn.fetchval("SELECT to_regclass('screens') IS NOT NULL")


async def test_the_history_reads_the_table_from_before_partitioning_until_it_expires(pool):
    tenant, screen = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    known: set[datetime] = set()
    await history.ensure_partitions(pool, known, [now])
    async with pool.acquire() as conn:
        old = beat(tenant, screen, now - timedelta(hours=2), uptime_seconds=1, app_version="1.0")
        await conn.execute(
            "INSERT INTO heartbeats_before_partitions (screen_id, received_at, tenant_id, report)"
            " VALUES ($1, $2, $3, $4)",
            screen,
            old.received_at,
            tenant,
            msgspec.to_builtins(old),
        )
        new = beat(tenant, screen, now, uptime_seconds=2, temperature_c=41.5)
        await history.store_heartbeats(conn, [new], retention_hours=72)
        page = await history.heartbeat_history(conn, tenant, screen, since=None, limit=10, retention_hours=72)
        assert page == [old, new]
        assert await history.heartbeat_history(
            conn, tenant, screen, since=old.received_at, limit=10, retention_hours=72
        ) == [new]
        # Kept while its newest row is within the retention; dropped whole after.
        assert await history.drop_expired(conn, known, retention_hours=72, now=now) == []
        assert await history.drop_expired(conn, known, retention_hours=1, now=now) == [
            "heartbeats_before_partitions"
        ]
        page = await history.heartbeat_history(conn, tenant, screen, since=None, limit=10, retention_hours=72)
        assert page == [new]


# ---- the running service -----------------------------------------------------------------------


async def database_writes(conn: asyncpg.Connection) -> int:
    """Rows the heartbeat service inserted, updated or deleted so far. A backend reports its
    counts some time after its transaction (when idle, within PostgreSQL's PGSTAT_IDLE_INTERVAL,
    10 s, longer when busy), so this waits until the history's reported inserts equal the rows
    there (the presence writes share those transactions, hence their report) and the outbox's
    reported deletes its inserts (its relay deletes what it published, on its own connection)."""
    settled = (
        "SELECT (SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables"
        "   WHERE schemaname = 'heartbeat' AND relname LIKE 'heartbeats_p%')"
        "   = (SELECT count(*) FROM heartbeat.heartbeats)"
        " AND (SELECT n_tup_ins = n_tup_del FROM pg_stat_user_tables"
        "   WHERE schemaname = 'heartbeat' AND relname = 'outbox')"
    )
    deadline = asyncio.get_running_loop().time() + 60
    while not await conn.fetchval(settled):
        assert asyncio.get_running_loop().time() < deadline, "the server's counts did not catch up"
        await asyncio.sleep(0.5)
    return await conn.fetchval(
        "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint FROM pg_stat_user_tables"
        " WHERE schemaname = 'heartbeat'"
    )


async def test_steady_state_costs_at_most_a_tenth_of_a_write_per_heartbeat(settings, sockets):
    """Forty rounds of heartbeats a minute apart (their receivedAt says so) after the first."""
    coalescing = msgspec.structs.replace(settings, presence_write_seconds=1200)
    tenant, screens = uuid.uuid4(), [uuid.uuid4() for _ in range(25)]
    start = datetime.now(UTC)
    async with Stack(coalescing, sockets) as stack:
        conn = await asyncpg.connect(stack.settings.database_url)
        nc = await bus.connect(stack.settings, SETUP_USER)
        js = nc.jetstream()
        try:
            await conn.execute(
                "INSERT INTO heartbeat.screens (id, tenant_id, version) SELECT unnest($1::uuid[]), $2, 1",
                screens,
                tenant,
            )

            async def round_of(minute: int) -> None:
                for screen in screens:
                    heartbeat = beat(tenant, screen, start + timedelta(minutes=minute), uptime_seconds=minute)
                    await js.publish(heartbeat_subject(tenant, screen), msgspec.json.encode(heartbeat))

            async def all_read() -> bool:
                info = await js.consumer_info("HEARTBEATS", "heartbeat-presence")
                unsent = await conn.fetchval("SELECT count(*) FROM heartbeat.outbox")
                return info.num_pending == 0 and info.num_ack_pending == 0 and unsent == 0

            await round_of(0)
            online = "SELECT count(*) FROM heartbeat.presence WHERE status = 'online'"
            await stack.eventually(lambda: conn.fetchval(online), timeout=10)
            await stack.eventually(all_read, timeout=10)
            before = await database_writes(conn)
            for minute in range(1, 41):
                # Each round read before the next, as a minute apart they would be: a batch holding
                # a screen's minutes 20 to 22 at once keeps only its newest.
                await round_of(minute)
                await stack.eventually(all_read, timeout=20)
            writes = await database_writes(conn) - before

            # A write a screen at minutes 20 and 40: the presence row and the history's row.
            per_table = await conn.fetch(
                "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables"
                " WHERE schemaname = 'heartbeat' AND n_tup_ins + n_tup_upd + n_tup_del > 0"
            )
            assert writes / (40 * len(screens)) <= 0.1, (writes, [tuple(r) for r in per_table])
            assert writes == 2 * 2 * len(screens), writes
            uptimes = await conn.fetch(
                "SELECT (report->>'uptimeSeconds')::int AS uptime, count(*) FROM heartbeat.heartbeats"
                " GROUP BY 1 ORDER BY 1"
            )
            assert [(r["uptime"], r["count"]) for r in uptimes] == [(0, 25), (20, 25), (40, 25)]
            assert await conn.fetchval(online) == len(screens)
            status = await fleet_status_of(conn, tenant)
            assert status == {"screens": 25, "online": 25, "offline": 0, "unknown": 0}
        finally:
            await nc.close()
            await conn.close()


async def fleet_status_of(conn: asyncpg.Connection, tenant: uuid.UUID) -> dict[str, int]:
    row = await conn.fetchrow(
        "SELECT sum(screens)::int AS screens, sum(online)::int AS online, sum(offline)::int AS offline"
        " FROM heartbeat.fleet_counts WHERE tenant_id = $1",
        tenant,
    )
    assert row is not None
    screens, online, offline = row["screens"], row["online"], row["offline"]
    return {"screens": screens, "online": online, "offline": offline, "unknown": screens - online - offline}


def quick(settings: Settings) -> Settings:
    """A deadline of 1.2 s (a 1-minute interval times 0.02), checked every 0.2 s; presence written
    every 10 minutes at most."""
    return msgspec.structs.replace(
        settings, offline_after_intervals=0.02, presence_check_seconds=0.2, presence_write_seconds=600
    )


async def screen_sending(stack: Stack) -> tuple[dict[str, Any], str, Callable[[], Awaitable[bool]]]:
    """A tenant, its paired screen's presence path, and one heartbeat of that screen (true if 202)."""
    tenant = await stack.tenant()
    screen, registered = await stack.paired_device(tenant["token"])

    async def sent() -> bool:
        status, _, _ = await stack.call("POST", HEARTBEAT, token=registered["apiKey"], json={})
        return status == 202

    return tenant, f"/v1/screens/{screen['id']}/presence", sent


async def test_a_screen_that_stops_goes_offline_within_its_deadline_though_rarely_written(settings, sockets):
    """Deadline 1.2 s (a 1-minute interval times 0.02), checked every 0.2 s; presence written every
    10 minutes at most: the watch tells when the screen stopped, to the heartbeat."""
    async with Stack(quick(settings), sockets) as stack:
        tenant, path, sent = await screen_sending(stack)

        await stack.eventually(sent)
        first = await stack.eventually(lambda: online_presence(stack, tenant["token"], path))
        # Three deadlines' worth of heartbeats: online all along, the row never written again.
        for _ in range(12):
            assert await sent()
            await asyncio.sleep(0.3)
            status, body, _ = await stack.call("GET", path, token=tenant["token"])
            assert status == 200 and body["presence"] == "online", body
            assert body["lastSeenAt"] == first["lastSeenAt"]
        last_sent = datetime.now(UTC)

        async def offline() -> dict[str, Any] | None:
            status, body, _ = await stack.call("GET", path, token=tenant["token"])
            return body if status == 200 and body["presence"] == "offline" else None

        gone = await stack.eventually(offline, timeout=10, interval=0.05)
        took = (datetime.now(UTC) - last_sent).total_seconds()
        assert took < 1.2 + 0.2 + 1.0, took  # deadline, a check period, and the watch's margins
        # Announced as last seen at the last heartbeat, not at the last write.
        last_seen = datetime.fromisoformat(gone["lastSeenAt"])
        assert abs((last_seen - last_sent).total_seconds()) < 0.5, (last_seen, last_sent)


async def online_presence(stack: Stack, token: str, path: str) -> dict[str, Any] | None:
    status, body, _ = await stack.call("GET", path, token=token)
    return body if status == 200 and body["presence"] == "online" else None


async def test_migrating_a_populated_service_counts_its_fleet_and_keeps_its_history(postgres, tmp_path):
    """The counters start from the rows there (screens, presence), and the history from before
    partitioning stays readable through the API's query."""
    name = "t_" + uuid.uuid4().hex[:16]
    admin = await asyncpg.connect(postgres)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    dsn = postgres.rpartition("/")[0] + "/" + name
    try:
        before = tmp_path / "before"
        before.mkdir()
        for path in sorted(MIGRATIONS[1].glob("*.sql")):
            if path.stem < "004":
                (before / path.name).write_text(path.read_text())
        await db.migrate(dsn, "heartbeat", MIGRATIONS[0], before)
        tenant, screens = uuid.uuid4(), [uuid.uuid4() for _ in range(5)]
        now = datetime.now(UTC)
        conn = await asyncpg.connect(dsn, server_settings={"search_path": "heartbeat"})
        try:
            await conn.execute(
                "INSERT INTO screens (id, tenant_id, version) SELECT unnest($1::uuid[]), $2, 1",
                screens,
                tenant,
            )
            for screen, status in zip(screens[:3], ["online", "online", "offline"], strict=True):
                await conn.execute(
                    "INSERT INTO presence (screen_id, tenant_id, device_id, last_seen_at, last_heartbeat,"
                    " status, offline_after) VALUES ($1, $2, $1, $3, '{}', $4, $3)",
                    screen,
                    tenant,
                    now,
                    status,
                )
            old = beat(tenant, screens[0], now - timedelta(minutes=5), uptime_seconds=7)
            await conn.execute(
                "INSERT INTO heartbeats (screen_id, received_at, tenant_id, report) VALUES ($1, $2, $3, $4)",
                old.screen_id,
                old.received_at,
                tenant,
                msgspec.json.encode(old).decode(),
            )
        finally:
            await conn.close()

        await db.migrate(dsn, "heartbeat", *MIGRATIONS)
        pool = await db.create_pool(dsn, "heartbeat", min_size=1, max_size=2)
        try:
            async with pool.acquire() as pooled:
                fleet = await queries.fleet_status(pooled, tenant)
                assert (fleet.screens, fleet.online, fleet.offline, fleet.unknown) == (5, 2, 1, 2)
                page = await history.heartbeat_history(
                    pooled, tenant, screens[0], since=None, limit=10, retention_hours=72
                )
                assert page == [old]
        finally:
            await pool.close()
    finally:
        admin = await asyncpg.connect(postgres)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def test_a_restarted_service_still_finds_a_screen_that_stopped_meanwhile(settings, sockets):
    """Its watch starts with no memory: it takes the online screens as heard at its start, so one
    that stopped while no replica ran is found a deadline later, not at the backstop."""
    async with Stack(quick(settings), sockets) as stack:
        tenant, path, sent = await screen_sending(stack)

        await stack.stop_service("heartbeat")
        await stack.eventually(sent)
        await stack.start_service("heartbeat")
        await stack.wait_ready("heartbeat")
        await stack.eventually(lambda: online_presence(stack, tenant["token"], path))
        await stack.stop_service("heartbeat")  # stopped before its deadline passed...
        await asyncio.sleep(2)  # ... which passes while no replica runs
        await stack.start_service("heartbeat")
        await stack.wait_ready("heartbeat")
        restarted = datetime.now(UTC)

        async def offline() -> bool:
            status, body, _ = await stack.call("GET", path, token=tenant["token"])
            return status == 200 and body["presence"] == "offline"

        await stack.eventually(offline, timeout=10, interval=0.05)
        took = (datetime.now(UTC) - restarted).total_seconds()
        assert took < 1.2 + 0.2 + 1.0, took
        # Last seen when it last sent, not when the watch that found it started.
        _, body, _ = await stack.call("GET", path, token=tenant["token"])
        last_seen = datetime.fromisoformat(body["lastSeenAt"])
        assert last_seen == datetime.fromisoformat(body["lastHeartbeat"]["receivedAt"]) < restarted, body


async def test_two_replicas_announce_a_stopped_screen_offline_once(settings, sockets):
    """Both replicas' watches see the screen stop. A watch passes over a screen whose row is
    offline already, and the update checks the status again under the row lock: one announcement
    (with both checks removed, the second replica announces it again)."""
    fast = quick(settings)
    async with Stack(fast, sockets) as stack:
        second = web.AppRunner(SERVICES["heartbeat"](fast), access_log=None)
        await second.setup()  # a replica with its own watch and detector, and no port of its own
        nc = await bus.connect(settings, SETUP_USER)
        changes: list[PresenceChanged] = []

        async def keep(message: Any) -> None:
            changes.append(msgspec.json.decode(message.data, type=PresenceChanged))

        try:
            await nc.jetstream().subscribe(
                "heartbeat.presence.changed", stream="HEARTBEATS", ordered_consumer=True, cb=keep
            )
            tenant, path, sent = await screen_sending(stack)
            await stack.eventually(sent)
            await stack.eventually(lambda: online_presence(stack, tenant["token"], path))
            for _ in range(4):  # a few more, heard by both watches
                assert await sent()
                await asyncio.sleep(0.3)
            screen_id = path.split("/")[3]

            def announced() -> list[str]:
                return [c.presence for c in changes if str(c.screen_id) == screen_id]

            async def offline_announced() -> bool:
                return "offline" in announced()

            await stack.eventually(offline_announced, timeout=10, interval=0.05)
            await asyncio.sleep(1)  # five more checks by each replica, and their relays
            assert announced() == ["online", "offline"]
        finally:
            await nc.close()
            await second.cleanup()

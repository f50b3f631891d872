"""Figure 9 of ``make bench``: how each component's cost grows with the fleet.

One tenant signed up through the API, then N screens with their venues, active devices and keys
loaded straight into the services' tables and the gateway's buckets (:mod:`bench.scale_load`), and
measured at that size:

- the gateway's memory per device key and per screen content (six-item playlists), and the time a
  gateway process takes from start to ready with all of them (cold load);
- ``GET /v1/fleet/status`` and ``GET /v1/screens`` at its first page and deep pages, at N;
- the offline detector's pass (time, rows read and written) with nothing overdue and with a
  batch overdue, rolled back;
- heartbeats stored per second with N presence rows, and in a paced stream (each screen once a
  minute, as at steady state) the database rows written, commits and WAL per heartbeat;
- a day of heartbeats (one a minute) for a sample of screens: bytes of history per screen per day,
  extrapolated to the retention and to a million screens; then the cost of pruning them.

    python -m bench --devices 0 --revokes 0 --only 9 --scale 100000
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import asyncpg
import msgspec

from bench.fleet import Admin
from bench.load import cpu_seconds, rss_bytes
from bench.scale_load import ScaleFleet, keep_online, load_rows, put_contents, put_keys, sample
from devstack.services import stop
from services.heartbeat import history as heartbeat_history
from services.heartbeat import queries as heartbeat_queries
from services.heartbeat.consumers import DURABLE as HEARTBEAT_CONSUMER
from shared import bus, outbox
from shared.bus_access import SETUP_USER
from shared.events import heartbeat_subject
from shared.pagination import Cursor
from shared.settings import Settings

ONLINE_FOR = timedelta(hours=6)
MINUTES_PER_DAY = 24 * 60
MILLION = 1_000_000
DETECTOR_BATCH = 1000  # what the service's detector takes per transaction


class Services(Protocol):
    """What the bench lends this figure: settings, the services' URLs, a gateway process."""

    settings: Settings
    urls: dict[str, str]
    services: dict[str, subprocess.Popen[bytes]]  # those run as processes, by name

    async def start_gateway(self, workers: int = 1) -> tuple[subprocess.Popen[bytes], str]: ...


async def scale_figures(
    bench: Services,
    count: int,
    *,
    heartbeats: int = 50_000,
    stream_seconds: float = 20,
    stream_rate: int = 2000,
    history_screens: int = 200,
    stats_delay: float = 11.0,
) -> dict[str, Any]:
    """The figures at ``count`` screens. ``stats_delay``: how long to wait for the services'
    database sessions to report their table statistics (a session reports when it goes idle, but
    at most once a second, else 10 s later), which the rows and commits per heartbeat count."""
    settings = bench.settings
    figures: dict[str, Any] = {"screens": count}
    async with aiohttp.ClientSession() as http:
        admin = Admin(http, bench.urls)
        await admin.sign_up(settings.operator_token)
        conn = await asyncpg.connect(settings.database_url)
        try:
            tenant = await conn.fetchval(
                "SELECT tenant_id FROM registry.venues WHERE id = $1", uuid.UUID(admin.venue_id)
            )
            fleet = ScaleFleet.make(tenant, count)
            sizes = await schema_sizes(conn)
            started = time.monotonic()
            figures["load_seconds"] = await load_rows(settings.database_url, fleet, online_for=ONLINE_FOR)
            figures["load_seconds"]["all"] = round(time.monotonic() - started, 1)
            grown = await schema_sizes(conn)
            figures["database_bytes_per_screen"] = {
                schema: round((grown[schema] - sizes.get(schema, 0)) / count) for schema in grown
            }
            figures["gateway"] = await gateway_memory(bench, fleet)
            figures["api"] = await api_latencies(http, bench.urls, admin.headers, fleet)
            figures["detector"] = await detector_passes(conn, fleet)
            service = bench.services.get("heartbeat")
            figures["ingestion"] = await ingestion(
                settings, conn, fleet, min(heartbeats, count), None if service is None else service.pid
            )
            figures["steady"] = await steady_writes(
                settings,
                conn,
                fleet,
                rate=min(stream_rate, max(1, count // 60)),
                seconds=stream_seconds,
                stats_delay=stats_delay,
            )
            await keep_online(conn, fleet.tenant_id, ONLINE_FOR)
            figures["history"] = await history(settings, conn, fleet, history_screens)
        finally:
            await conn.close()
    return figures


# ---- what is measured in the database, isolated here for the tables to change ---------------------


async def history_bytes(conn: asyncpg.Connection) -> int:
    """Bytes of the heartbeat history's ranges with their indexes (what a day of it adds, without
    the presence rows and outbox events the same heartbeats write)."""
    return await conn.fetchval(
        "SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0)::bigint FROM pg_inherits i"
        " WHERE i.inhparent = 'heartbeat.heartbeats'::regclass"
    )


async def schema_sizes(conn: asyncpg.Connection) -> dict[str, int]:
    """Bytes of each service's tables with their indexes and TOAST (partitions included)."""
    rows = await conn.fetch(
        "SELECT n.nspname AS schema, sum(pg_total_relation_size(c.oid))::bigint AS bytes"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'm') AND n.nspname IN ('registry', 'provisioning', 'heartbeat')"
        " GROUP BY n.nspname"
    )
    return {row["schema"]: row["bytes"] for row in rows}


class Writes(msgspec.Struct, frozen=True):
    rows: int  # rows inserted, updated or deleted in every service's tables
    heartbeat_rows: int  # of them, the heartbeat service's
    commits: int
    wal: int  # bytes of WAL written since the cluster began

    def since(self, before: Writes) -> dict[str, int]:
        return {
            "rows": self.rows - before.rows,
            "heartbeat_rows": self.heartbeat_rows - before.heartbeat_rows,
            "commits": self.commits - before.commits,
            "wal_bytes": self.wal - before.wal,
        }


async def writes(conn: asyncpg.Connection) -> Writes:
    row = await conn.fetchrow(
        "SELECT (SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)"
        "   FROM pg_stat_user_tables)::bigint,"
        " (SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables"
        "   WHERE schemaname = 'heartbeat')::bigint,"
        " (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"
    )
    assert row is not None
    return Writes(*row)


async def detector(conn: asyncpg.Connection) -> int:
    """One pass of the offline detector as the service makes it: transitions and their events."""
    transitions = await heartbeat_queries.mark_overdue_offline(conn, DETECTOR_BATCH)
    for transition in transitions:
        await outbox.add_event(conn, transition.event())
    return len(transitions)


async def make_overdue(conn: asyncpg.Connection, screen_ids: list[uuid.UUID]) -> None:
    await conn.execute(
        "UPDATE presence SET offline_after = now() - interval '1 second' WHERE screen_id = ANY($1::uuid[])",
        screen_ids,
    )


async def age_presence(conn: asyncpg.Connection, screen_ids: list[uuid.UUID], write_seconds: float) -> None:
    """Each screen's row last written as in the steady state, whole intervals ago (one to
    PRESENCE_WRITE_SECONDS' worth, evenly): its next heartbeat is the one due to be written with a
    chance of one in (PRESENCE_WRITE_SECONDS / interval). The loaded rows were all written just now."""
    await conn.execute(
        "UPDATE heartbeat.presence p SET last_seen_at = now() - make_interval(mins =>"
        "   1 + floor(random() * greatest(1, $2::float8 / 60 / s.heartbeat_interval_minutes))::int"
        "   * s.heartbeat_interval_minutes)"
        " FROM unnest($1::uuid[]) AS u(id) JOIN heartbeat.screens s ON s.id = u.id"
        " WHERE p.screen_id = u.id",
        screen_ids,
        write_seconds,
    )


async def history_rows(conn: asyncpg.Connection, screen_ids: list[uuid.UUID]) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM heartbeat.heartbeats WHERE screen_id = ANY($1::uuid[])", screen_ids
    )


async def prune_all(conn: asyncpg.Connection, newest: datetime) -> int:
    """The service's pruning with a retention of nothing: every range that holds a heartbeat stored
    up to ``newest`` is dropped whole, the current one too (the bench stores nothing after this)."""
    await conn.execute("SET search_path = heartbeat")
    pruned = await conn.fetchval("SELECT count(*) FROM heartbeats")
    await heartbeat_history.drop_expired(conn, set(), 0.0, newest + 2 * heartbeat_history.PARTITION)
    await conn.execute("RESET search_path")
    return pruned


async def vacuum_history(conn: asyncpg.Connection) -> None:
    """What autovacuum does after pruning (next to nothing since the ranges are dropped whole)."""
    await conn.execute("VACUUM heartbeat.heartbeats")


# ---- the gateway ------------------------------------------------------------------------------------


async def gateway_memory(bench: Services, fleet: ScaleFleet) -> dict[str, Any]:
    """RSS and start-to-ready of a new gateway process: with the buckets as they were, then with the
    fleet's keys added, then with its screens' contents added."""

    async def cold() -> tuple[int, float]:
        started = time.monotonic()
        process, _ = await bench.start_gateway()
        ready = time.monotonic() - started
        rss = rss_bytes(process.pid)
        stop(process)
        return rss, ready

    base, base_ready = await cold()
    keys = await put_keys(bench.settings, fleet)
    with_keys, keys_ready = await cold()
    contents = await put_contents(bench.settings, fleet)
    with_contents, contents_ready = await cold()
    return {
        "base_rss_mb": round(base / 2**20, 1),
        "base_ready_s": round(base_ready, 1),
        "rss_mb": round(with_contents / 2**20, 1),
        "bytes_per_key": round((with_keys - base) / fleet.count),
        "bytes_per_content": round((with_contents - with_keys) / fleet.count),
        "keys_ready_s": round(keys_ready, 1),
        "ready_s": round(contents_ready, 1),
        "nats_bytes_per_key": round(keys["stream_bytes"] / fleet.count),
        "nats_bytes_per_content": round(contents["stream_bytes"] / fleet.count),
    }


# ---- the admin API ----------------------------------------------------------------------------------


async def api_latencies(
    http: aiohttp.ClientSession,
    urls: dict[str, str],
    headers: dict[str, str],
    fleet: ScaleFleet,
    calls: int = 20,
) -> dict[str, Any]:
    """Fleet status, and screen listing at its first page, its middle and its last page."""

    async def timed(url: str) -> tuple[list[float], Any]:
        latencies, body = [], None
        for attempt in range(calls + 2):  # the first two warm the connection and the caches
            started = time.perf_counter()
            async with http.get(url, headers=headers) as response:
                body = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"GET {url}: {response.status} {body}")
            if attempt >= 2:
                latencies.append((time.perf_counter() - started) * 1000)
        return latencies, body

    def at(index: int) -> str:
        cursor = Cursor(fleet.created_at[index], fleet.screen_ids[index]).encode()
        return f"{urls['registry']}/v1/screens?limit=50&cursor={cursor}"

    figures: dict[str, Any] = {}
    latencies, status = await timed(urls["heartbeat"] + "/v1/fleet/status")
    figures["fleet_status"] = {**summary(latencies), "body": status}
    pages = {"first": f"{urls['registry']}/v1/screens?limit=50", "middle": at(fleet.count // 2)}
    pages["last"] = at(max(0, fleet.count - 50))
    for name, url in pages.items():
        latencies, page = await timed(url)
        figures[f"screens_{name}_page"] = {**summary(latencies), "items": len(page["items"])}
    return figures


def summary(latencies_ms: list[float]) -> dict[str, Any]:
    ordered = sorted(latencies_ms)
    return {
        "count": len(ordered),
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
    }


# ---- the heartbeat service ------------------------------------------------------------------------


async def detector_passes(conn: asyncpg.Connection, fleet: ScaleFleet, rounds: int = 5) -> dict[str, Any]:
    """The detector's pass with none overdue (every pass at steady state) and with a batch
    overdue, each in a transaction rolled back: time, and rows read and written by it."""
    overdue = [fleet.screen_ids[n] for n in sample(fleet.count, DETECTOR_BATCH, seed=9)]
    figures: dict[str, Any] = {}
    for name, late in (("idle", []), ("overdue", overdue)):
        seconds, touched = [], {}
        for _ in range(rounds):
            transaction = conn.transaction()
            await transaction.start()
            try:
                await conn.execute("SET LOCAL search_path = heartbeat")
                if late:
                    await make_overdue(conn, late)
                before = await _xact_rows(conn)
                started = time.perf_counter()
                transitions = await detector(conn)
                seconds.append(time.perf_counter() - started)
                after = await _xact_rows(conn)
                touched = {key: after[key] - before[key] for key in after} | {"transitions": transitions}
            finally:
                await transaction.rollback()
        figures[name] = {"ms": round(statistics.median(seconds) * 1000, 2), **touched}
    return figures


async def _xact_rows(conn: asyncpg.Connection) -> dict[str, int]:
    """Rows this transaction read and wrote in the heartbeat service's tables so far."""
    row = await conn.fetchrow(
        "SELECT coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0)), 0)::bigint AS read,"
        " coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint AS written"
        " FROM pg_stat_xact_user_tables WHERE schemaname = 'heartbeat'"
    )
    assert row is not None
    return dict(row)


async def _publish(nc: Any, fleet: ScaleFleet, indexes: list[int], received_at: list[datetime]) -> None:
    encoder = msgspec.json.Encoder()
    for number, (index, at) in enumerate(zip(indexes, received_at, strict=True)):
        heartbeat = fleet.heartbeat(index, at)
        await nc.publish(heartbeat_subject(fleet.tenant_id, heartbeat.screen_id), encoder.encode(heartbeat))
        if number % 5000 == 4999:
            await nc.flush(timeout=60)
    await nc.flush(timeout=60)


async def stream_end(js: Any) -> int:
    """The sequence of the newest message in ``HEARTBEATS``."""
    return (await js.stream_info("HEARTBEATS")).state.last_seq


async def consumed(js: Any, *, timeout: float, reaching: int = 0) -> None:
    """Until ``HEARTBEATS`` holds messages up to sequence ``reaching`` (plain publishes are stored
    a moment after the server took them: without this, a consumer with nothing pending yet looks
    done) and the heartbeat service has received and acked everything in it."""
    deadline = time.monotonic() + timeout
    while True:
        stored = await stream_end(js) >= reaching  # before the consumer's counts, which follow it
        info = await js.consumer_info("HEARTBEATS", HEARTBEAT_CONSUMER)
        if stored and info.num_pending == 0 and info.num_ack_pending == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"heartbeat consumer did not catch up: {info}")
        await asyncio.sleep(0.05)


async def postmaster(conn: asyncpg.Connection) -> int:
    """The PostgreSQL server's main process: its descendants are every session and worker."""
    return parent_of(await conn.fetchval("SELECT pg_backend_pid()"))


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def ingestion(
    settings: Settings, conn: asyncpg.Connection, fleet: ScaleFleet, count: int, service: int | None
) -> dict[str, Any]:
    """``count`` heartbeats of as many screens, published as fast as NATS takes them: how fast the
    heartbeat service stores them with the fleet's presence rows in its table, and the CPU it and
    PostgreSQL spent per heartbeat (the service's only when it runs as a process here)."""
    nc = await bus.connect(settings, SETUP_USER)
    server = await postmaster(conn)
    try:
        js = nc.jetstream()
        await consumed(js, timeout=120)
        indexes = sample(fleet.count, count, seed=7)
        now = datetime.now(UTC)
        postgres_before = cpu_seconds(server)
        service_before = cpu_seconds(service) if service else 0.0
        started = time.monotonic()
        end = await stream_end(js)
        await _publish(nc, fleet, indexes, [now] * len(indexes))
        await consumed(js, timeout=600, reaching=end + len(indexes))
        seconds = time.monotonic() - started
        postgres = cpu_seconds(server) - postgres_before
        service_cpu = cpu_seconds(service) - service_before if service else None
    finally:
        await nc.close()
    return {
        "heartbeats": count,
        "per_second": round(count / seconds),
        "postgres_cpu_us_per_heartbeat": round(postgres * 1e6 / count),
        "service_cpu_us_per_heartbeat": None if service_cpu is None else round(service_cpu * 1e6 / count),
    }


async def steady_writes(
    settings: Settings,
    conn: asyncpg.Connection,
    fleet: ScaleFleet,
    *,
    rate: int,
    seconds: float,
    stats_delay: float,
) -> dict[str, Any]:
    """Heartbeats at ``rate`` a second for ``seconds``, each of another screen that was online and
    is heard again in time (steady state): database writes, commits and WAL per heartbeat, less
    what the database wrote meanwhile without them (measured over a quiet window just before)."""
    nc = await bus.connect(settings, SETUP_USER)
    try:
        js = nc.jetstream()
        await consumed(js, timeout=300)
        screens = sample(fleet.count, int(rate * seconds), seed=3)
        await age_presence(conn, [fleet.screen_ids[n] for n in screens], settings.presence_write_seconds)
        history_before = await history_rows(conn, [fleet.screen_ids[n] for n in screens])
        await asyncio.sleep(stats_delay)
        quiet = await writes(conn)
        await asyncio.sleep(stats_delay)
        before = await writes(conn)
        idle = before.since(quiet)
        end = await stream_end(js)
        started, sent, tick = time.monotonic(), 0, 0.1
        while sent < len(screens):
            due = min(len(screens), int((time.monotonic() - started + tick) * rate))
            if due > sent:
                await _publish(nc, fleet, screens[sent:due], [datetime.now(UTC)] * (due - sent))
                sent = due
            await asyncio.sleep(tick)
        await consumed(js, timeout=300, reaching=end + sent)
        elapsed = time.monotonic() - started
        await asyncio.sleep(stats_delay)
        delta = (await writes(conn)).since(before)
        history_added = await history_rows(conn, [fleet.screen_ids[n] for n in screens]) - history_before
    finally:
        await nc.close()
    window = elapsed + stats_delay
    net = {key: delta[key] - idle[key] * window / stats_delay for key in delta}
    return {
        "heartbeats": sent,
        "rate": rate,
        "seconds": round(elapsed, 1),
        "idle_per_second": {key: round(value / stats_delay, 1) for key, value in idle.items()},
        "rows_per_heartbeat": round(net["rows"] / sent, 3),
        "heartbeat_rows_per_heartbeat": round(net["heartbeat_rows"] / sent, 3),
        "history_rows_per_heartbeat": round(history_added / sent, 3),
        "commits_per_heartbeat": round(net["commits"] / sent, 3),
        "wal_bytes_per_heartbeat": round(net["wal_bytes"] / sent),
    }


async def history(
    settings: Settings, conn: asyncpg.Connection, fleet: ScaleFleet, screens: int
) -> dict[str, Any]:
    """A day of heartbeats, one a minute, for ``screens`` screens of the fleet through the heartbeat
    service: what its tables and the ``HEARTBEATS`` stream grow by per screen and day; then the
    pruning of everything stored (time and WAL per row).

    The day is the coming one, stamped ahead of the clock: the screens were heard just now, and
    the service writes what comes after that (a day stamped in the past would be older than their
    rows, and change nothing)."""
    indexes = sample(fleet.count, screens, seed=5)
    start = datetime.now(UTC) + timedelta(minutes=1)
    order = [(minute, index) for minute in range(MINUTES_PER_DAY) for index in indexes]
    nc = await bus.connect(settings, SETUP_USER)
    try:
        js = nc.jetstream()
        await consumed(js, timeout=300)
        size = await history_bytes(conn)
        stream = (await js.stream_info("HEARTBEATS")).state
        started = time.monotonic()
        await _publish(
            nc, fleet, [index for _, index in order], [start + timedelta(minutes=m) for m, _ in order]
        )
        await consumed(js, timeout=900, reaching=stream.last_seq + len(order))
        seconds = time.monotonic() - started
        grown = await history_bytes(conn) - size
        stream_grown = (await js.stream_info("HEARTBEATS")).state
    finally:
        await nc.close()
    rows = await history_rows(conn, [fleet.screen_ids[n] for n in indexes])
    lsn = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
    started = time.monotonic()
    pruned = await prune_all(conn, start + timedelta(days=1))
    prune_seconds = time.monotonic() - started
    wal = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint") - lsn
    started = time.monotonic()
    await vacuum_history(conn)
    vacuum_seconds = time.monotonic() - started
    vacuum_wal = (
        await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint") - lsn - wal
    )
    retention_days = settings.heartbeat_retention_hours / 24
    per_screen_day = grown / len(indexes)
    return {
        "screens": len(indexes),
        "heartbeats": len(order),
        "stored_per_second": round(len(order) / seconds),
        "rows_per_screen_day": round(rows / len(indexes)),
        "bytes_per_screen_day": round(per_screen_day),
        "bytes_per_row": round(grown / max(1, rows)),
        "nats_bytes_per_heartbeat": round(
            (stream_grown.bytes - stream.bytes) / max(1, stream_grown.messages - stream.messages)
        ),
        "retention_days": retention_days,
        "retention_gb_at_n": round(per_screen_day * fleet.count * retention_days / 1e9, 1),
        "retention_gb_at_1m": round(per_screen_day * MILLION * retention_days / 1e9, 1),
        "pruned_rows": pruned,
        "prune_seconds": round(prune_seconds, 3),
        "prune_wal_bytes": wal,
        "vacuum_seconds": round(vacuum_seconds, 3),
        "prune_us_per_row": round(prune_seconds * 1e6 / max(1, pruned), 1),
        "prune_wal_bytes_per_row": round(wal / max(1, pruned)),
        "vacuum_us_per_row": round(vacuum_seconds * 1e6 / max(1, pruned), 1),
        "vacuum_wal_bytes_per_row": round(vacuum_wal / max(1, pruned)),
    }


# ---- the table ---------------------------------------------------------------------------------------


def table_rows(f: dict[str, Any]) -> list[tuple[str, str, str]]:
    n = f["screens"]
    g, api, d, i, s, h = f["gateway"], f["api"], f["detector"], f["ingestion"], f["steady"], f["history"]
    fs = api["fleet_status"]
    load = f["load_seconds"]
    per_screen = f["database_bytes_per_screen"]
    return [
        (
            f"9. scale: {n:,} screens loaded (SQL + KV)",
            f"{load['all']} s",
            "database bytes per screen: " + ", ".join(f"{k} {v}" for k, v in sorted(per_screen.items())),
        ),
        (
            "9a. gateway RSS per key / per screen content",
            f"{g['bytes_per_key']} / {g['bytes_per_content']} B",
            f"RSS {g['base_rss_mb']} -> {g['rss_mb']} MiB; NATS {g['nats_bytes_per_key']}"
            f" / {g['nats_bytes_per_content']} B per entry",
        ),
        (
            "9b. gateway cold start to ready (keys + contents)",
            f"{g['ready_s']} s",
            f"keys alone {g['keys_ready_s']} s, empty-ish {g['base_ready_s']} s",
        ),
        (
            "9c. GET /v1/fleet/status, p50 / p99",
            f"{fs['p50_ms']:.1f} / {fs['p99_ms']:.1f} ms",
            f"target < 10 ms at 1M; n={fs['count']}; {fs['body']}",
        ),
        (
            "9d. GET /v1/screens first / middle / last page, p50",
            " / ".join(f"{api[f'screens_{p}_page']['p50_ms']:.1f}" for p in ("first", "middle", "last"))
            + " ms",
            "p99 "
            + " / ".join(f"{api[f'screens_{p}_page']['p99_ms']:.1f}" for p in ("first", "middle", "last")),
        ),
        (
            "9e. offline detector pass: none / 1000 overdue",
            f"{d['idle']['ms']:.1f} / {d['overdue']['ms']:.1f} ms",
            f"rows read/written {d['idle']['read']}/{d['idle']['written']} and"
            f" {d['overdue']['read']}/{d['overdue']['written']} ({d['overdue']['transitions']} transitions)",
        ),
        (
            f"9f. heartbeats stored per second with {n:,} presence rows",
            f"{i['per_second']}/s",
            f"{i['heartbeats']} heartbeats of as many screens, straight into HEARTBEATS; CPU per heartbeat:"
            f" service {i['service_cpu_us_per_heartbeat']} us,"
            f" postgres {i['postgres_cpu_us_per_heartbeat']} us",
        ),
        (
            "9g. database rows written per heartbeat (steady)",
            f"{s['rows_per_heartbeat']}",
            f"target <= 0.1; history rows {s['history_rows_per_heartbeat']},"
            f" commits {s['commits_per_heartbeat']}, WAL {s['wal_bytes_per_heartbeat']} B"
            f" per heartbeat; {s['heartbeats']} at {s['rate']}/s",
        ),
        (
            "9h. history bytes per screen per day",
            f"{h['bytes_per_screen_day']:,}",
            f"{h['rows_per_screen_day']} rows of {h['bytes_per_row']} B;"
            f" extrapolated x {h['retention_days']:g} days: "
            f"{h['retention_gb_at_n']} GB at N, {h['retention_gb_at_1m']} GB at 1M (target <= 100 GB);"
            f" NATS {h['nats_bytes_per_heartbeat']} B per heartbeat",
        ),
        (
            "9i. pruning the history: DROP of whole ranges",
            f"{h['prune_seconds']} s",
            f"{h['pruned_rows']} rows, {h['prune_us_per_row']} us each; WAL {h['prune_wal_bytes']} B in all;"
            f" VACUUM after: {h['vacuum_seconds']} s (target: no row-by-row pruning)",
        ),
    ]

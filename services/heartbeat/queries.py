"""The heartbeat service's presence and fleet SQL (the history's is in history.py). Functions take a
connection; the caller owns the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

import msgspec

from services.heartbeat.models import FleetStatus, ScreenPresence
from shared.db import Connection
from shared.events import Heartbeat, PresenceChanged, ScreenConfigChanged, ScreenCreated


class Transition(msgspec.Struct, frozen=True):
    screen_id: uuid.UUID
    tenant_id: uuid.UUID
    presence: Literal["online", "offline"]
    last_seen_at: datetime
    presence_seq: int

    def event(self) -> PresenceChanged:
        return PresenceChanged(
            tenant_id=self.tenant_id,
            screen_id=self.screen_id,
            presence=self.presence,
            last_seen_at=self.last_seen_at,
            presence_seq=self.presence_seq,
        )


# ---- the copy of registry's screens -----------------------------------------------------------


async def upsert_screen(
    conn: Connection,
    event: ScreenCreated | ScreenConfigChanged,
    offline_after_intervals: float,
    write_seconds: float,
) -> bool:
    """Apply a screen event (older versions change nothing). A longer heartbeat interval moves
    the screen's stored deadline on at once; a shorter one leaves it: the TV may still keep to its
    old interval until it learns of the new one (it polls its config), and the row's next write
    counts the new one from that heartbeat."""
    # Locks in the order every writer of presence takes them (the presence row, then the fleet
    # counters' lock on the screen, see migration 004), so no two of them wait on each other.
    await conn.execute("SELECT 1 FROM presence WHERE screen_id = $1 FOR UPDATE", event.screen_id)
    status = await conn.execute(
        "INSERT INTO screens (id, tenant_id, version, heartbeat_interval_minutes) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version,"
        " heartbeat_interval_minutes = EXCLUDED.heartbeat_interval_minutes"
        " WHERE screens.version < EXCLUDED.version",
        event.screen_id,
        event.tenant_id,
        event.version,
        event.config.heartbeat_interval_minutes,
    )
    applied = status.endswith(" 1")
    if applied:
        await conn.execute(
            "UPDATE presence SET offline_after = greatest(offline_after,"
            "   last_seen_at + make_interval(secs => $2::float8 * 60 * $3 + $4::float8))"
            " WHERE screen_id = $1",
            event.screen_id,
            offline_after_intervals,
            event.config.heartbeat_interval_minutes,
            write_seconds,
        )
    return applied


# ---- heartbeats and presence ------------------------------------------------------------------


async def record_heartbeats(
    conn: Connection, heartbeats: list[Heartbeat], offline_after_intervals: float, write_seconds: float
) -> tuple[list[Transition], list[Heartbeat]]:
    """Keep the newest heartbeat of each screen and return the screens whose presence changed,
    with the heartbeats written.

    A screen's row is written when it is new, when the heartbeat brings it online, or when its
    stored heartbeat is ``write_seconds`` old; any other heartbeat of an online screen only
    reaches the watch (:mod:`services.heartbeat.watch`), which tells when it stops. The row's
    ``offline_after`` is the screen's deadline plus ``write_seconds``: the detector's backstop,
    which a living screen's next write always moves on before it passes.

    Older heartbeats than the stored one change nothing, so a redelivered batch is harmless; a
    heartbeat already past its screen's deadline (a late redelivery) does not make the screen
    online. Call inside a transaction: the rows written stay locked until the transitions are
    in the outbox.
    """
    newest: dict[uuid.UUID, Heartbeat] = {}
    for heartbeat in heartbeats:
        current = newest.get(heartbeat.screen_id)
        if current is None or current.received_at < heartbeat.received_at:
            newest[heartbeat.screen_id] = heartbeat
    stored = {
        row["screen_id"]: row
        for row in await conn.fetch(
            "SELECT screen_id, status, last_seen_at FROM presence WHERE screen_id = ANY($1::uuid[])",
            list(newest),
        )
    }
    write_after = timedelta(seconds=write_seconds)
    # In the screens' order, as every writer locks presence rows: no two wait on each other.
    rows = [
        h
        for _, h in sorted(newest.items())
        if (row := stored.get(h.screen_id)) is None
        or row["status"] != "online"
        or row["last_seen_at"] <= h.received_at - write_after
    ]
    if not rows:
        return [], []
    screen_ids = [h.screen_id for h in rows]
    before = {
        row["screen_id"]: row["status"]
        for row in await conn.fetch(
            "SELECT screen_id, status FROM presence WHERE screen_id = ANY($1::uuid[])"
            " ORDER BY screen_id FOR UPDATE",
            screen_ids,
        )
    }
    after = await conn.fetch(
        "WITH batch AS ("
        "  SELECT b.*,"
        "    b.seen_at + make_interval(secs => $6::float8 * 60 * coalesce(s.heartbeat_interval_minutes, 1))"
        "    AS deadline"
        "  FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[], $5::jsonb[])"
        "    AS b(screen_id, tenant_id, device_id, seen_at, report)"
        "  LEFT JOIN screens s ON s.id = b.screen_id"
        ")"
        " INSERT INTO presence AS p (screen_id, tenant_id, device_id, last_seen_at, last_heartbeat, status,"
        "   offline_after, presence_seq)"
        " SELECT screen_id, tenant_id, device_id, seen_at, report,"
        "   CASE WHEN deadline > now() THEN 'online' ELSE 'offline' END,"
        "   deadline + make_interval(secs => $7::float8), 1"
        " FROM batch"
        " ON CONFLICT (screen_id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id,"
        "   device_id = EXCLUDED.device_id, last_seen_at = EXCLUDED.last_seen_at,"
        "   last_heartbeat = EXCLUDED.last_heartbeat, offline_after = EXCLUDED.offline_after,"
        "   status = CASE WHEN EXCLUDED.status = 'online' THEN 'online' ELSE p.status END,"
        "   presence_seq = p.presence_seq"
        "     + (p.status <> CASE WHEN EXCLUDED.status = 'online' THEN 'online' ELSE p.status END)::int"
        " WHERE p.last_seen_at < EXCLUDED.last_seen_at"
        " RETURNING screen_id, tenant_id, status, last_seen_at, presence_seq",
        screen_ids,
        [h.tenant_id for h in rows],
        [h.device_id for h in rows],
        [h.received_at for h in rows],
        [msgspec.to_builtins(h) for h in rows],
        offline_after_intervals,
        write_seconds,
    )
    written = {row["screen_id"] for row in after}
    transitions = [
        Transition(
            row["screen_id"], row["tenant_id"], row["status"], row["last_seen_at"], row["presence_seq"]
        )
        for row in after
        if before.get(row["screen_id"]) != row["status"]
    ]
    return transitions, [h for h in rows if h.screen_id in written]


async def tenant_has_screen(conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID) -> bool:
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM screens WHERE id = $1 AND tenant_id = $2)", screen_id, tenant_id
    )


async def mark_overdue_offline(conn: Connection, limit: int) -> list[Transition]:
    """Screens online past their deadline go offline, at most ``limit`` of them. Rows another
    replica is handling are skipped, and the status is checked again under the row lock, so two
    replicas never both announce one transition."""
    rows = await conn.fetch(
        "UPDATE presence SET status = 'offline', presence_seq = presence_seq + 1"
        " WHERE screen_id IN (SELECT screen_id FROM presence"
        "   WHERE status = 'online' AND offline_after <= now()"
        "   ORDER BY offline_after LIMIT $1 FOR UPDATE SKIP LOCKED)"
        " AND status = 'online'"
        " RETURNING screen_id, tenant_id, last_seen_at, presence_seq",
        limit,
    )
    return [
        Transition(row["screen_id"], row["tenant_id"], "offline", row["last_seen_at"], row["presence_seq"])
        for row in rows
    ]


# ---- the watch's questions (services.heartbeat.watch) -----------------------------------------


class Watched(msgspec.Struct, frozen=True):
    screen_id: uuid.UUID
    status: Literal["online", "offline"] | None  # None: its first heartbeat is not written yet
    last_seen_at: datetime | None
    interval_minutes: int


async def watched(conn: Connection, screen_ids: list[uuid.UUID]) -> list[Watched]:
    rows = await conn.fetch(
        "SELECT c.id, p.status, p.last_seen_at, coalesce(s.heartbeat_interval_minutes, 1) AS interval"
        " FROM unnest($1::uuid[]) AS c(id)"
        " LEFT JOIN presence p ON p.screen_id = c.id LEFT JOIN screens s ON s.id = c.id",
        screen_ids,
    )
    return [Watched(r["id"], r["status"], r["last_seen_at"], r["interval"]) for r in rows]


async def online_screens(conn: Connection) -> list[Watched]:
    """Every online screen: what a starting watch assumes alive until it hears otherwise."""
    rows = await conn.fetch(
        "SELECT p.screen_id, p.last_seen_at, coalesce(s.heartbeat_interval_minutes, 1) AS interval"
        " FROM presence p LEFT JOIN screens s ON s.id = p.screen_id WHERE p.status = 'online'"
    )
    return [Watched(r["screen_id"], "online", r["last_seen_at"], r["interval"]) for r in rows]


async def mark_stopped_offline(
    conn: Connection,
    screen_ids: list[uuid.UUID],
    heard: list[datetime],
    seen: Sequence[datetime | None],
    offline_after_intervals: float,
) -> list[Transition]:
    """Screens last heard on the bus at ``heard`` and past their deadline from then go offline,
    last seen at ``seen`` (None: a time the watch only assumed, the row's own stays). As in
    :func:`mark_overdue_offline`, rows another replica holds are skipped and the status is
    checked again under the lock; a screen whose row holds a newer heartbeat stays."""
    rows = await conn.fetch(
        "UPDATE presence p SET status = 'offline', presence_seq = p.presence_seq + 1,"
        "   last_seen_at = greatest(p.last_seen_at, c.seen)"
        " FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[]) AS c(screen_id, heard, seen)"
        " LEFT JOIN screens s ON s.id = c.screen_id"
        " WHERE p.screen_id = c.screen_id AND p.status = 'online' AND p.last_seen_at <= c.heard"
        "   AND c.heard + make_interval(secs => $4::float8 * 60 * coalesce(s.heartbeat_interval_minutes, 1))"
        "     <= now()"
        "   AND p.screen_id IN (SELECT screen_id FROM presence WHERE screen_id = ANY($1::uuid[])"
        "     AND status = 'online' ORDER BY screen_id FOR UPDATE SKIP LOCKED)"
        " RETURNING p.screen_id, p.tenant_id, p.last_seen_at, p.presence_seq",
        screen_ids,
        heard,
        seen,
        offline_after_intervals,
    )
    return [
        Transition(row["screen_id"], row["tenant_id"], "offline", row["last_seen_at"], row["presence_seq"])
        for row in rows
    ]


# ---- what admins read -------------------------------------------------------------------------


async def fleet_status(conn: Connection, tenant_id: uuid.UUID) -> FleetStatus:
    """From the tenant's counters (kept by triggers with every screen and transition), not a scan."""
    row = await conn.fetchrow(
        "SELECT coalesce(sum(screens), 0)::bigint AS screens, coalesce(sum(online), 0)::bigint AS online,"
        " coalesce(sum(offline), 0)::bigint AS offline FROM fleet_counts WHERE tenant_id = $1",
        tenant_id,
    )
    assert row is not None  # an aggregate without GROUP BY: always one row
    return FleetStatus(
        screens=row["screens"],
        online=row["online"],
        offline=row["offline"],
        unknown=row["screens"] - row["online"] - row["offline"],
    )


async def screen_presence(
    conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID
) -> ScreenPresence | None:
    """None when the screen is not the tenant's (or not heard of yet)."""
    row = await conn.fetchrow(
        "SELECT s.id, p.status, p.last_seen_at, p.last_heartbeat FROM screens s"
        " LEFT JOIN presence p ON p.screen_id = s.id WHERE s.id = $1 AND s.tenant_id = $2",
        screen_id,
        tenant_id,
    )
    if row is None:
        return None
    return ScreenPresence(
        screen_id=row["id"],
        presence=row["status"] or "unknown",
        last_seen_at=row["last_seen_at"],
        last_heartbeat=msgspec.convert(row["last_heartbeat"], Heartbeat) if row["last_heartbeat"] else None,
    )

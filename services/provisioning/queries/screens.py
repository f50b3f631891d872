"""Provisioning's copy of registry's screens: applied from screen events, read and locked by every
binding flow (a screen in provisioning is one with no active device)."""

from __future__ import annotations

import uuid

import asyncpg
import msgspec

from shared.db import Connection
from shared.events import CachePolicy, ScreenConfig, ScreenConfigChanged, ScreenCreated


class ScreenCopy(msgspec.Struct, frozen=True):
    id: uuid.UUID
    tenant_id: uuid.UUID
    config: ScreenConfig


_SCREEN_COLUMNS = """id, tenant_id, sync_interval_minutes, heartbeat_interval_minutes, cache_max_size_gb,
    cache_retention_days"""


def _screen(row: asyncpg.Record) -> ScreenCopy:
    return ScreenCopy(
        id=row["id"],
        tenant_id=row["tenant_id"],
        config=ScreenConfig(
            sync_interval_minutes=row["sync_interval_minutes"],
            heartbeat_interval_minutes=row["heartbeat_interval_minutes"],
            cache_policy=CachePolicy(
                max_size_gb=row["cache_max_size_gb"], retention_days=row["cache_retention_days"]
            ),
        ),
    )


async def upsert_screen(conn: Connection, event: ScreenCreated | ScreenConfigChanged) -> bool:
    """Apply a screen event; older versions than the stored one (redeliveries) change nothing."""
    config = event.config
    status = await conn.execute(
        "INSERT INTO screens (id, tenant_id, version, sync_interval_minutes, heartbeat_interval_minutes,"
        " cache_max_size_gb, cache_retention_days) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version,"
        " sync_interval_minutes = EXCLUDED.sync_interval_minutes,"
        " heartbeat_interval_minutes = EXCLUDED.heartbeat_interval_minutes,"
        " cache_max_size_gb = EXCLUDED.cache_max_size_gb,"
        " cache_retention_days = EXCLUDED.cache_retention_days"
        " WHERE screens.version < EXCLUDED.version",
        event.screen_id,
        event.tenant_id,
        event.version,
        config.sync_interval_minutes,
        config.heartbeat_interval_minutes,
        config.cache_policy.max_size_gb,
        config.cache_policy.retention_days,
    )
    return status.endswith(" 1")


async def insert_screen_seen_at_registry(
    conn: Connection, screen_id: uuid.UUID, tenant_id: uuid.UUID
) -> None:
    """A screen registry knows but whose event has not arrived: version 0, so the event wins."""
    await conn.execute(
        "INSERT INTO screens (id, tenant_id, version) VALUES ($1, $2, 0) ON CONFLICT (id) DO NOTHING",
        screen_id,
        tenant_id,
    )


async def screen_exists(conn: Connection, screen_id: uuid.UUID, tenant_id: uuid.UUID) -> bool:
    exists: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM screens WHERE id = $1 AND tenant_id = $2)", screen_id, tenant_id
    )
    return exists


async def lock_screen(
    conn: Connection, screen_id: uuid.UUID, *, tenant_id: uuid.UUID | None = None
) -> ScreenCopy | None:
    row = await conn.fetchrow(
        f"SELECT {_SCREEN_COLUMNS} FROM screens WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)"
        " FOR UPDATE",
        screen_id,
        tenant_id,
    )
    return _screen(row) if row else None


async def lock_screen_of(conn: Connection, screen_of: str, key: object) -> ScreenCopy | None:
    """The screen that a code, token, serial or authorization (``screen_of``: a query of its
    screen_id by $1) leads to, locked. Every flow locks the screen before that row: one lock
    order, so concurrent flows on one screen cannot deadlock."""
    row = await conn.fetchrow(
        f"SELECT {_SCREEN_COLUMNS} FROM screens WHERE id = ({screen_of}) FOR UPDATE", key
    )
    return _screen(row) if row else None


async def screen_has_active_device(conn: Connection, screen_id: uuid.UUID) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM devices WHERE screen_id = $1 AND status = 'active')", screen_id
    )
    return found

"""A screen's config (sync and heartbeat intervals, cache policy): columns of its row, read, locked
for a change and stored with the screen's version bumped."""

from __future__ import annotations

import uuid

import asyncpg

from services.registry.queries import rows
from shared.db import Connection
from shared.events import CachePolicy, ScreenConfig

CONFIG_COLUMNS = """sync_interval_minutes, heartbeat_interval_minutes, cache_max_size_gb,
    cache_retention_days"""


def config_of(row: asyncpg.Record) -> ScreenConfig:
    """The ``CONFIG_COLUMNS`` of a row as a ScreenConfig."""
    return ScreenConfig(
        sync_interval_minutes=row["sync_interval_minutes"],
        heartbeat_interval_minutes=row["heartbeat_interval_minutes"],
        cache_policy=CachePolicy(
            max_size_gb=row["cache_max_size_gb"], retention_days=row["cache_retention_days"]
        ),
    )


async def get_screen_config(conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID) -> ScreenConfig:
    row = await conn.fetchrow(
        f"SELECT {CONFIG_COLUMNS} FROM screens WHERE id = $1 AND tenant_id = $2", screen_id, tenant_id
    )
    return config_of(rows.found(row, "no such screen"))


async def lock_screen_config(conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID) -> ScreenConfig:
    """The config of a screen whose row stays locked until the transaction ends."""
    row = await conn.fetchrow(
        f"SELECT {CONFIG_COLUMNS} FROM screens WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
        screen_id,
        tenant_id,
    )
    return config_of(rows.found(row, "no such screen"))


async def update_screen_config(conn: Connection, screen_id: uuid.UUID, config: ScreenConfig) -> int:
    """Store ``config``; returns the screen's new version."""
    return await conn.fetchval(
        "UPDATE screens SET sync_interval_minutes = $2, heartbeat_interval_minutes = $3,"
        " cache_max_size_gb = $4, cache_retention_days = $5, version = version + 1, updated_at = now()"
        " WHERE id = $1 RETURNING version",
        screen_id,
        config.sync_interval_minutes,
        config.heartbeat_interval_minutes,
        config.cache_policy.max_size_gb,
        config.cache_policy.retention_days,
    )

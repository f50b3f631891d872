"""Venues: where a tenant's screens hang, with their opening hours and alert delay."""

from __future__ import annotations

import uuid

import asyncpg
import msgspec

from services.registry.models import NewVenue, OpeningPeriod, Venue
from services.registry.queries import rows
from shared.db import Connection
from shared.pagination import Cursor

_VENUE_COLUMNS = """id, tenant_id, name, timezone, address, opening_hours, offline_alert_after_minutes,
    created_at, updated_at"""


def opening_hours_of(value: object) -> list[OpeningPeriod] | None:
    """The ``opening_hours`` column (JSON, as stored from a validated request) as Structs."""
    return msgspec.convert(value, list[OpeningPeriod] | None)


def _venue(row: asyncpg.Record) -> Venue:
    return Venue(**{**row, "opening_hours": opening_hours_of(row["opening_hours"])})


async def insert_venue(conn: Connection, tenant_id: uuid.UUID, venue: NewVenue) -> Venue:
    row = await conn.fetchrow(
        "INSERT INTO venues (id, tenant_id, name, timezone, address, opening_hours,"
        f" offline_alert_after_minutes) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_VENUE_COLUMNS}",
        uuid.uuid4(),
        tenant_id,
        venue.name,
        venue.timezone,
        venue.address,
        venue.opening_hours,
        venue.offline_alert_after_minutes,
    )
    assert row is not None  # an INSERT … RETURNING: always its row
    return _venue(row)


async def get_venue(
    conn: Connection, tenant_id: uuid.UUID, venue_id: uuid.UUID, *, lock: bool = False
) -> Venue:
    """The venue; with ``lock``, its row stays locked until the transaction ends (``FOR NO KEY
    UPDATE``: new screens may still name the venue meanwhile)."""
    row = await conn.fetchrow(
        f"SELECT {_VENUE_COLUMNS} FROM venues WHERE id = $1 AND tenant_id = $2"
        + (" FOR NO KEY UPDATE" if lock else ""),
        venue_id,
        tenant_id,
    )
    return _venue(rows.found(row, "no such venue"))


async def update_venue(conn: Connection, venue: Venue) -> Venue:
    """Store the changeable fields of ``venue`` (locked by the caller)."""
    row = await conn.fetchrow(
        "UPDATE venues SET name = $2, timezone = $3, address = $4, opening_hours = $5,"
        f" offline_alert_after_minutes = $6, updated_at = now() WHERE id = $1 RETURNING {_VENUE_COLUMNS}",
        venue.id,
        venue.name,
        venue.timezone,
        venue.address,
        venue.opening_hours,
        venue.offline_alert_after_minutes,
    )
    assert row is not None  # locked since it was read
    return _venue(row)


async def list_venues(
    conn: Connection, tenant_id: uuid.UUID, *, after: Cursor | None, limit: int
) -> list[Venue]:
    found = await conn.fetch(
        f"SELECT {_VENUE_COLUMNS} FROM venues WHERE tenant_id = $1"
        " AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))"
        " ORDER BY created_at, id LIMIT $4",
        tenant_id,
        after.created_at if after else None,
        after.id if after else None,
        limit,
    )
    return [_venue(row) for row in found]

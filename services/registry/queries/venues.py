"""Venues: where a tenant's screens hang."""

from __future__ import annotations

import uuid

from services.registry.models import NewVenue, Venue
from services.registry.queries import rows
from shared.db import Connection
from shared.pagination import Cursor

_VENUE_COLUMNS = "id, tenant_id, name, timezone, address, created_at, updated_at"


async def insert_venue(conn: Connection, tenant_id: uuid.UUID, venue: NewVenue) -> Venue:
    row = await conn.fetchrow(
        f"INSERT INTO venues (id, tenant_id, name, timezone, address) VALUES ($1, $2, $3, $4, $5)"
        f" RETURNING {_VENUE_COLUMNS}",
        uuid.uuid4(),
        tenant_id,
        venue.name,
        venue.timezone,
        venue.address,
    )
    assert row is not None  # an INSERT … RETURNING: always its row
    return Venue(**row)


async def get_venue(conn: Connection, tenant_id: uuid.UUID, venue_id: uuid.UUID) -> Venue:
    row = await conn.fetchrow(
        f"SELECT {_VENUE_COLUMNS} FROM venues WHERE id = $1 AND tenant_id = $2", venue_id, tenant_id
    )
    return Venue(**rows.found(row, "no such venue"))


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
    return [Venue(**row) for row in found]

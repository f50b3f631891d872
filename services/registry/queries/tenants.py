"""Tenants: the one row a tenant is (its first API client is the clients' SQL)."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from shared.db import Connection


class NewTenantRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    name: str
    created_at: datetime


async def insert_tenant(conn: Connection, name: str) -> NewTenantRow:
    row = await conn.fetchrow(
        "INSERT INTO tenants (id, name) VALUES ($1, $2) RETURNING id, name, created_at",
        uuid.uuid4(),
        name,
    )
    assert row is not None  # an INSERT … RETURNING: always its row
    return NewTenantRow(**row)

"""Tenants: the one row a tenant is (its first API client is the clients' SQL)."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from services.registry.models import Tenant
from shared.db import Connection
from shared.pagination import Cursor


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


async def tenant_exists(conn: Connection, tenant_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)", tenant_id))


async def list_tenants(conn: Connection, *, after: Cursor | None, limit: int) -> list[Tenant]:
    found = await conn.fetch(
        "SELECT id, name, created_at FROM tenants"
        " WHERE ($1::timestamptz IS NULL OR (created_at, id) > ($1, $2))"
        " ORDER BY created_at, id LIMIT $3",
        after.created_at if after else None,
        after.id if after else None,
        limit,
    )
    return [Tenant(**row) for row in found]

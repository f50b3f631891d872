"""The admin audit trail: a row for every change to a tenant's data, listed newest first."""

from __future__ import annotations

import uuid

from services.registry.models import AdminAuditEntry
from shared.db import Connection


async def add_audit(
    conn: Connection,
    tenant_id: uuid.UUID,
    *,
    actor: str,
    action: str,
    resource_id: object,
    client_address: str | None,
) -> None:
    await conn.execute(
        "INSERT INTO admin_audit (tenant_id, actor, action, resource_id, client_address)"
        " VALUES ($1, $2, $3, $4, $5)",
        tenant_id,
        actor,
        action,
        str(resource_id),
        client_address,
    )


async def list_audit(
    conn: Connection, tenant_id: uuid.UUID, *, before: int | None, limit: int
) -> list[AdminAuditEntry]:
    """Newest first, older than ``before``."""
    rows = await conn.fetch(
        "SELECT id, at, actor, action, resource_id, client_address FROM admin_audit"
        " WHERE tenant_id = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        tenant_id,
        before,
        limit,
    )
    return [AdminAuditEntry(**row) for row in rows]

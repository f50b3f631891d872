"""The binding audit trail: every bind, unbind and recovery, who did it, how and from where."""

from __future__ import annotations

import uuid

from services.provisioning.models import AuditEntry, Device
from shared.db import Connection

_AUDIT_COLUMNS = "id, at, device_id, screen_id, action, method, actor, client_address, reason"


async def add_audit(
    conn: Connection,
    device: Device,
    *,
    action: str,
    method: str,
    actor: str,
    client_address: str | None,
    reason: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO binding_audit (tenant_id, device_id, screen_id, action, method, actor, client_address,"
        " reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        device.tenant_id,
        device.id,
        device.screen_id,
        action,
        method,
        actor,
        client_address,
        reason,
    )


async def audit_trail(conn: Connection, tenant_id: uuid.UUID, device_id: uuid.UUID) -> list[AuditEntry]:
    rows = await conn.fetch(
        f"SELECT {_AUDIT_COLUMNS} FROM binding_audit WHERE tenant_id = $1 AND device_id = $2 ORDER BY id",
        tenant_id,
        device_id,
    )
    return [AuditEntry(**row) for row in rows]


async def tenant_audit_trail(
    conn: Connection, tenant_id: uuid.UUID, *, before: int | None, limit: int
) -> list[AuditEntry]:
    """The tenant's binds, unbinds and recoveries, newest first, older than ``before``."""
    rows = await conn.fetch(
        f"SELECT {_AUDIT_COLUMNS} FROM binding_audit"
        " WHERE tenant_id = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        tenant_id,
        before,
        limit,
    )
    return [AuditEntry(**row) for row in rows]

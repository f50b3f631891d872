"""Provisioning tokens: single use, short-lived, stored only as a hash; the device that presents
one is bound to the token's screen."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from services.provisioning.queries.screens import ScreenCopy, lock_screen_of
from shared.db import Connection


class TokenState(msgspec.Struct, frozen=True):
    used: bool
    expired: bool


async def insert_token(
    conn: Connection,
    *,
    token_hash: bytes,
    tenant_id: uuid.UUID,
    screen_id: uuid.UUID,
    created_by: str,
    ttl_seconds: int,
) -> datetime:
    """Returns when the token expires."""
    expires_at: datetime = await conn.fetchval(
        "INSERT INTO provisioning_tokens (token_hash, tenant_id, screen_id, created_by, expires_at)"
        " VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING expires_at",
        token_hash,
        tenant_id,
        screen_id,
        created_by,
        ttl_seconds,
    )
    return expires_at


async def lock_token_screen(conn: Connection, token_hash: bytes) -> ScreenCopy | None:
    return await lock_screen_of(
        conn, "SELECT screen_id FROM provisioning_tokens WHERE token_hash = $1", token_hash
    )


async def lock_token(conn: Connection, token_hash: bytes) -> TokenState | None:
    """The token, locked: its single use is decided under this lock."""
    row = await conn.fetchrow(
        "SELECT used_at IS NOT NULL AS used, expires_at <= now() AS expired FROM provisioning_tokens"
        " WHERE token_hash = $1 FOR UPDATE",
        token_hash,
    )
    return TokenState(**row) if row else None


async def mark_token_used(conn: Connection, token_hash: bytes, device_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE provisioning_tokens SET used_at = now(), device_id = $2 WHERE token_hash = $1",
        token_hash,
        device_id,
    )

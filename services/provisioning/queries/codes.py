"""Pairing codes: drawn for a screen in provisioning, read off the TV and typed in by a person,
traded once for a device key."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime

import msgspec

from services.provisioning.models import CodeStatus
from services.provisioning.queries.screens import ScreenCopy, lock_screen_of
from shared.db import Connection
from shared.errors import NotFound

# No look-alikes (0/O, 1/I/L): people read these off a TV screen and type them with a remote.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


class IssuedCode(msgspec.Struct, frozen=True):
    code: str
    expires_at: datetime


class LockedCode(msgspec.Struct, frozen=True):
    code: str
    tenant_id: uuid.UUID
    screen_id: uuid.UUID
    status: str
    expired: bool


async def supersede_pending_codes(conn: Connection, screen_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE provisioning_codes SET status = 'superseded' WHERE screen_id = $1 AND status = 'pending'",
        screen_id,
    )


async def insert_code(
    conn: Connection, *, tenant_id: uuid.UUID, screen_id: uuid.UUID, ttl_seconds: int
) -> IssuedCode:
    """A new pending code; a collision with any stored code (1 in 8.5e11 per code) draws again."""
    while True:
        row = await conn.fetchrow(
            "INSERT INTO provisioning_codes (code, tenant_id, screen_id, status, expires_at)"
            " VALUES ($1, $2, $3, 'pending', now() + make_interval(secs => $4))"
            " ON CONFLICT (code) DO NOTHING RETURNING code, expires_at",
            new_code(),
            tenant_id,
            screen_id,
            ttl_seconds,
        )
        if row is not None:
            return IssuedCode(**row)


async def lock_code_screen(conn: Connection, code: str) -> ScreenCopy | None:
    return await lock_screen_of(conn, "SELECT screen_id FROM provisioning_codes WHERE code = $1", code)


async def lock_code(conn: Connection, code: str) -> LockedCode:
    row = await conn.fetchrow(
        "SELECT code, tenant_id, screen_id, status, expires_at <= now() AS expired"
        " FROM provisioning_codes WHERE code = $1 FOR UPDATE",
        code,
    )
    if row is None:
        raise NotFound("no such pairing code")
    return LockedCode(**row)


async def get_code_status(conn: Connection, tenant_id: uuid.UUID, code: str) -> CodeStatus:
    row = await conn.fetchrow(
        "SELECT code, CASE WHEN status = 'pending' AND expires_at <= now() THEN 'expired'"
        " ELSE status END AS status, screen_id, device_id, expires_at, bound_at"
        " FROM provisioning_codes WHERE code = $1 AND tenant_id = $2",
        code,
        tenant_id,
    )
    if row is None:
        raise NotFound("no such provisioning code")
    return CodeStatus(**row)

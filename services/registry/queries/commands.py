"""Remote commands: sent by admins, listed and read per screen, and closed by the TV's reports, an
admin's cancel or their expiry.

Every change that opens or closes a command locks the screen's row first (``lock_screen``) and
then reads the open set for the screen's ``device-commands`` entry: changes of one screen queue
their entries in commit order, and the lock order (screen, then its commands) is the same for
admins, the TV's reports and the expiry sweep."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from services.registry.command_models import OPEN_STATUSES, Command, CommandStatus
from services.registry.queries import rows
from shared.db import Connection
from shared.pagination import Cursor
from shared.projections import OpenCommand

_COLUMNS = """id, screen_id, type, args, status, created_at, expires_at, delivered_at, completed_at,
    result_message, result_data, created_by"""
_OPEN = list(OPEN_STATUSES)


def _command(row: asyncpg.Record) -> Command:
    values = dict(row)
    return Command(
        **{name: value for name, value in values.items() if not name.startswith("result_")},
        message=values["result_message"],
        data=values["result_data"],
    )


async def lock_screen(conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID) -> None:
    """Lock the tenant's screen until the transaction ends; NotFound for another tenant's."""
    row = await conn.fetchrow(
        "SELECT id FROM screens WHERE id = $1 AND tenant_id = $2 FOR UPDATE", screen_id, tenant_id
    )
    rows.found(row, "no such screen")


async def get_screen_id(conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID) -> uuid.UUID:
    """The screen's id if the screen is the tenant's; NotFound otherwise."""
    row = await conn.fetchrow("SELECT id FROM screens WHERE id = $1 AND tenant_id = $2", screen_id, tenant_id)
    return rows.found(row, "no such screen")["id"]


async def count_open(conn: Connection, screen_id: uuid.UUID) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM commands WHERE screen_id = $1 AND status = ANY($2)", screen_id, _OPEN
    )


async def insert_command(
    conn: Connection,
    tenant_id: uuid.UUID,
    screen_id: uuid.UUID,
    *,
    command_type: str,
    args: dict[str, Any],
    ttl_seconds: int,
    created_by: str,
) -> Command:
    row = await conn.fetchrow(
        "INSERT INTO commands (id, tenant_id, screen_id, type, args, expires_at, created_by)"
        " VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), $7)"
        f" RETURNING {_COLUMNS}",
        uuid.uuid4(),
        tenant_id,
        screen_id,
        command_type,
        args,
        float(ttl_seconds),
        created_by,
    )
    assert row is not None  # an INSERT … RETURNING: always its row
    return _command(row)


async def get_command(
    conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID, command_id: uuid.UUID, *, lock: bool = False
) -> Command:
    """One of the screen's commands (NotFound for any other), its row locked with ``lock``."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM commands WHERE id = $1 AND tenant_id = $2 AND screen_id = $3"
        + (" FOR UPDATE" if lock else ""),
        command_id,
        tenant_id,
        screen_id,
    )
    return _command(rows.found(row, "no such command"))


async def list_commands(
    conn: Connection,
    tenant_id: uuid.UUID,
    screen_id: uuid.UUID,
    *,
    status: str | None,
    after: Cursor | None,
    limit: int,
) -> list[Command]:
    found = await conn.fetch(
        f"SELECT {_COLUMNS} FROM commands WHERE screen_id = $1 AND tenant_id = $2"
        " AND ($3::text IS NULL OR status = $3)"
        " AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5))"
        " ORDER BY created_at, id LIMIT $6",
        screen_id,
        tenant_id,
        status,
        after.created_at if after else None,
        after.id if after else None,
        limit,
    )
    return [_command(row) for row in found]


async def open_commands(conn: Connection, screen_id: uuid.UUID) -> list[OpenCommand]:
    """The screen's open commands, oldest first: its ``device-commands`` entry's items."""
    found = await conn.fetch(
        "SELECT id, type, args, expires_at FROM commands WHERE screen_id = $1 AND status = ANY($2)"
        " ORDER BY created_at, id",
        screen_id,
        _OPEN,
    )
    return [OpenCommand(**row) for row in found]


async def close_command(
    conn: Connection,
    command_id: uuid.UUID,
    status: CommandStatus,
    *,
    message: str | None = None,
    data: dict[str, Any] | None = None,
) -> Command | None:
    """Close an open command with ``status`` (and the TV's result); None when it was closed
    already (a report or a cancel coming second changes nothing)."""
    row = await conn.fetchrow(
        "UPDATE commands SET status = $2::text, completed_at = now(), result_message = $3, result_data = $4,"
        # A result is word that the TV had the command, whether or not its delivery was reported.
        " delivered_at = CASE WHEN $2::text IN ('succeeded', 'failed')"
        " THEN coalesce(delivered_at, now()) ELSE delivered_at END"
        f" WHERE id = $1 AND status = ANY($5) RETURNING {_COLUMNS}",
        command_id,
        status,
        message,
        data,
        _OPEN,
    )
    return None if row is None else _command(row)


async def mark_delivered(
    conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID, command_id: uuid.UUID, at: datetime
) -> Command | None:
    """pending → delivered; None for any other command or status (delivery is at least once: a
    second report of it changes nothing)."""
    row = await conn.fetchrow(
        "UPDATE commands SET status = 'delivered', delivered_at = $4"
        " WHERE id = $1 AND tenant_id = $2 AND screen_id = $3 AND status = 'pending'"
        f" RETURNING {_COLUMNS}",
        command_id,
        tenant_id,
        screen_id,
        at,
    )
    return None if row is None else _command(row)


async def lock_screens_with_expired(conn: Connection, limit: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(tenant id, screen id) of up to ``limit`` screens with open commands past their expiry,
    their rows locked; screens another transaction holds are skipped (another replica's sweep,
    an admin's change: the next sweep finds them), so every replica may sweep at once."""
    found = await conn.fetch(
        "SELECT tenant_id, id FROM screens WHERE id IN ("
        "  SELECT screen_id FROM commands WHERE status = ANY($1) AND expires_at <= now()"
        "  ORDER BY expires_at LIMIT $2"
        ") FOR UPDATE SKIP LOCKED",
        _OPEN,
        limit,
    )
    return [(row["tenant_id"], row["id"]) for row in found]


async def expire_commands(conn: Connection, screen_id: uuid.UUID) -> list[Command]:
    """Close the screen's open commands past their expiry as ``expired`` (its row is locked)."""
    found = await conn.fetch(
        "UPDATE commands SET status = 'expired', completed_at = now()"
        f" WHERE screen_id = $1 AND status = ANY($2) AND expires_at <= now() RETURNING {_COLUMNS}",
        screen_id,
        _OPEN,
    )
    return [_command(row) for row in found]

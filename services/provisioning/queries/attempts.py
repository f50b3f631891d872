"""Budgets of attempts, per flow, caller and fixed time window."""

from __future__ import annotations

from datetime import datetime

from shared.db import Connection

_WINDOW = "to_timestamp(floor(extract(epoch FROM now()) / $3) * $3)"


async def reserve(conn: Connection, flow: str, who: str, window_seconds: int, limit: int) -> datetime | None:
    """Take a slot of ``who``'s budget for ``flow`` in the current window: the window's start, or
    None when its ``limit`` slots are taken. One statement: the row lock of ``ON CONFLICT`` orders
    concurrent reservations, so no more than ``limit`` ever succeed."""
    window_start: datetime | None = await conn.fetchval(
        "INSERT INTO attempt_budgets (flow, who, window_start, used)"
        f" VALUES ($1, $2, {_WINDOW}, 1)"
        " ON CONFLICT (flow, who, window_start) DO UPDATE SET used = attempt_budgets.used + 1"
        " WHERE attempt_budgets.used < $4"
        " RETURNING window_start",
        flow,
        who,
        window_seconds,
        limit,
    )
    return window_start


async def give_back(conn: Connection, flow: str, who: str, window_start: datetime) -> None:
    """Return a slot taken by ``reserve`` (the attempt succeeded, or failed in a way not counted)."""
    await conn.execute(
        "UPDATE attempt_budgets SET used = used - 1"
        " WHERE flow = $1 AND who = $2 AND window_start = $3 AND used > 0",
        flow,
        who,
        window_start,
    )


async def failures(conn: Connection, flow: str, who: str, window_seconds: int) -> int:
    used: int | None = await conn.fetchval(
        f"SELECT used FROM attempt_budgets WHERE flow = $1 AND who = $2 AND window_start = {_WINDOW}",
        flow,
        who,
        window_seconds,
    )
    return used or 0


async def add_failure(conn: Connection, flow: str, who: str, window_seconds: int) -> None:
    await conn.execute(
        "INSERT INTO attempt_budgets (flow, who, window_start, used)"
        f" VALUES ($1, $2, {_WINDOW}, 1)"
        " ON CONFLICT (flow, who, window_start) DO UPDATE SET used = attempt_budgets.used + 1",
        flow,
        who,
        window_seconds,
    )

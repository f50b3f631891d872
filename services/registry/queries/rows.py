"""What registry's queries make of PostgreSQL's answers, written once: a row that must be there
(else the resource does not exist: a 404), and whether a conditional update changed a row."""

from __future__ import annotations

import asyncpg

from shared.errors import NotFound


def found(row: asyncpg.Record | None, missing: str) -> asyncpg.Record:
    """``row``, or NotFound with the message ``missing``."""
    if row is None:
        raise NotFound(missing)
    return row


def applied(status: str) -> bool:
    """Whether an UPDATE's command tag (``UPDATE <count>``) says it changed its one row: an event
    older than what the row holds changes nothing."""
    return status.endswith(" 1")

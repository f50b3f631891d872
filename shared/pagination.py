"""Keyset pagination: an opaque cursor holds the (created_at, id) of the last item of a page."""

from __future__ import annotations

import base64
import re
import uuid
from datetime import datetime

import msgspec
from aiohttp import web

from shared.errors import BadRequest, ErrorDetail

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


class Cursor(msgspec.Struct, frozen=True, array_like=True):
    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        return base64.urlsafe_b64encode(msgspec.json.encode(self)).rstrip(b"=").decode()


_decoder = msgspec.json.Decoder(Cursor)


def page_limit(request: web.Request) -> int:
    """``limit`` from the query string (1 to MAX_LIMIT); anything else is a 400 naming it."""
    raw_limit = request.query.get("limit", str(DEFAULT_LIMIT))
    if not re.fullmatch(r"[0-9]{1,4}", raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise BadRequest(
            f"limit must be an integer from 1 to {MAX_LIMIT}",
            details=[ErrorDetail("limit", "range")],
        )
    return int(raw_limit)


def page_params(request: web.Request) -> tuple[Cursor | None, int]:
    """``cursor`` and ``limit`` from the query string; bad values are a 400 naming the parameter."""
    limit = page_limit(request)
    raw_cursor = request.query.get("cursor")
    if not raw_cursor:
        return None, limit
    try:
        cursor = _decoder.decode(base64.urlsafe_b64decode(raw_cursor + "=" * (-len(raw_cursor) % 4)))
    except (ValueError, msgspec.DecodeError):
        raise BadRequest(
            "cursor is not one this API returned", details=[ErrorDetail("cursor", "invalid")]
        ) from None
    return cursor, limit


def next_cursor(items: list, limit: int, *, sorted_by: str = "created_at") -> str | None:
    """The cursor after a full page (items sorted by ``sorted_by`` and ``id``); None on the last."""
    if len(items) < limit:
        return None
    last = items[-1]
    return Cursor(getattr(last, sorted_by), last.id).encode()


def uuid_query(request: web.Request, name: str) -> uuid.UUID | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a UUID", details=[ErrorDetail(name, "format")]) from None


def datetime_query(request: web.Request, name: str) -> datetime | None:
    """An RFC 3339 time with its offset (``2026-11-23T10:00:00Z``); anything else is a 400."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = msgspec.convert(raw, datetime)
    except msgspec.ValidationError:
        value = None
    if value is None or value.tzinfo is None:
        raise BadRequest(
            f"{name} must be an RFC 3339 time with an offset, like 2026-11-23T10:00:00Z",
            details=[ErrorDetail(name, "format")],
        )
    return value


def choice_query(request: web.Request, name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise BadRequest(f"{name} must be one of {', '.join(choices)}", details=[ErrorDetail(name, "enum")])
    return raw


def next_before(entries: list, limit: int) -> int | None:
    """The ``nextBefore`` of an audit page (newest first): the last entry's id when the page is
    full, None on the last page."""
    return entries[-1].id if len(entries) == limit else None


def before_query(request: web.Request) -> int | None:
    """``?before=``: the ``nextBefore`` of an audit page (an entry's sequence number), or None."""
    raw = request.query.get("before")
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,18}", raw):  # not str.isdigit: "²" is a digit to it, not to int()
        raise BadRequest("before is the nextBefore of a page", details=[ErrorDetail("before", "format")])
    return int(raw)

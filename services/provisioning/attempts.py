"""Attempts with something that could be guessed (a pairing code, a provisioning token, a recovery
secret, a serial number, a user code, a claim code): each failed attempt counts against whoever
makes it — a TV's address, or a tenant for its admins' decisions — and too many in a window get
429 before anything is looked at."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import msgspec
from aiohttp import web

from services.provisioning import queries
from shared.db import POOL
from shared.errors import NotFound, RateLimited, ServiceError
from shared.web import SETTINGS, client_address, read_json

# The counter of all TVs' failures together (no client address looks like this).
EVERYONE = "*"

B = TypeVar("B")
R = TypeVar("R")


async def counted_attempt(
    request: web.Request,
    decoder: msgspec.json.Decoder[B],
    attempt: Callable[[asyncpg.Connection, B, str], Awaitable[R]],
) -> R:
    """A TV's call: ``attempt(conn, body, client_address)``; any ServiceError it raises (or a
    malformed body) counts as a failure of the caller's address."""
    address = client_address(request, request.app[SETTINGS].trusted_proxies)
    # The body is read before a connection is taken: a slow client must not hold one.
    body: B | ServiceError
    try:
        body = await read_json(request, decoder)
    except ServiceError as exc:
        body = exc

    async def attempt_body(conn: asyncpg.Connection) -> R:
        if isinstance(body, ServiceError):
            raise body
        return await attempt(conn, body, address)

    return await counted(request, address, attempt_body, failures=(ServiceError,), everyone=True)


async def counted(
    request: web.Request,
    who: str,
    attempt: Callable[[asyncpg.Connection], Awaitable[R]],
    *,
    failures: tuple[type[ServiceError], ...] = (NotFound,),
    everyone: bool = False,
) -> R:
    """``attempt(conn)``, refused with 429 while ``who`` has too many failures in the window (or,
    with ``everyone``, all callers together have); the ``failures`` it raises count."""
    settings = request.app[SETTINGS]
    window = settings.register_failure_window_seconds
    async with request.app[POOL].acquire() as conn:
        failed, remaining = await queries.failures_in_window(conn, who, window)
        if failed >= settings.register_failures_per_window:
            raise RateLimited("too many failed attempts; wait", retry_after=remaining)
        if everyone:
            failed, remaining = await queries.failures_in_window(conn, EVERYONE, window)
            if failed >= settings.register_failures_global_per_window:
                raise RateLimited("too many failed attempts from everywhere; wait", retry_after=remaining)
        try:
            return await attempt(conn)
        except failures:
            await queries.record_failure(conn, who, window)
            if everyone:
                await queries.record_failure(conn, EVERYONE, window)
            raise

"""Calls by TVs that prove themselves with something that could be guessed (a pairing code, a
provisioning token, a recovery secret, a serial number, a user code): each failed attempt counts
against the caller's address, and too many in a window get 429 before anything is looked at."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import msgspec
from aiohttp import web

from services.provisioning import queries
from shared.db import POOL
from shared.errors import RateLimited, ServiceError
from shared.web import SETTINGS, client_address, read_json

B = TypeVar("B")
R = TypeVar("R")


async def counted_attempt(
    request: web.Request,
    decoder: msgspec.json.Decoder[B],
    attempt: Callable[[asyncpg.Connection, B, str], Awaitable[R]],
) -> R:
    """``attempt(conn, body, client_address)``; a ServiceError it raises (or a malformed body)
    counts as a failure of the caller's address."""
    settings = request.app[SETTINGS]
    address = client_address(request, settings.trusted_proxies)
    # The body is read before a connection is taken: a slow client must not hold one.
    body: B | ServiceError
    try:
        body = await read_json(request, decoder)
    except ServiceError as exc:
        body = exc
    async with request.app[POOL].acquire() as conn:
        failures, remaining = await queries.failures_in_window(
            conn, address, settings.register_failure_window_seconds
        )
        if failures >= settings.register_failures_per_window:
            raise RateLimited("too many failed attempts from this address", retry_after=remaining)
        try:
            if isinstance(body, ServiceError):
                raise body
            return await attempt(conn, body, address)
        except ServiceError:
            await queries.record_failure(conn, address, settings.register_failure_window_seconds)
            raise

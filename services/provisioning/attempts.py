"""Attempts with something that could be guessed (a pairing code, a provisioning token, a recovery
secret, a serial number, a user code, a claim code): each failed attempt counts against whoever
makes it — a TV's address, or a tenant for its admins' decisions — and too many in a window get
429 before anything is looked at.

A flow runs its attempt inside ``limited`` (an admin's decision) or ``by_tv`` (a TV's call)::

    async with attempts.by_tv(request, _registration) as (conn, body, address):
        async with conn.transaction():
            ...  # a ServiceError raised here counts as a failure of ``address``
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Generic, NamedTuple, TypeVar

import msgspec
from aiohttp import web

from services.provisioning import queries
from shared.app_keys import SETTINGS
from shared.db import POOL, Connection
from shared.errors import NotFound, RateLimited, ServiceError
from shared.http import client_address, read_json

# The counter of all TVs' failures together (no client address looks like this).
EVERYONE = "*"

B = TypeVar("B")


def of_tenant(tenant_id: uuid.UUID) -> str:
    """Whom an admin's failed decision counts against: the tenant, whichever client called."""
    return f"tenant:{tenant_id}"


@asynccontextmanager
async def limited(
    request: web.Request,
    who: str,
    *,
    failures: tuple[type[ServiceError], ...] = (NotFound,),
    everyone: bool = False,
) -> AsyncIterator[Connection]:
    """A connection for one attempt, refused with 429 while ``who`` has too many failures in the
    window (or, with ``everyone``, all callers together have); any of ``failures`` that leaves the
    block counts against ``who`` (and everyone)."""
    settings = request.app[SETTINGS]
    window = settings.register_failure_window_seconds
    async with request.app[POOL].acquire() as conn:
        failed, remaining = await queries.attempts.failures_in_window(conn, who, window)
        if failed >= settings.register_failures_per_window:
            raise RateLimited("too many failed attempts; wait", retry_after=remaining)
        if everyone:
            failed, remaining = await queries.attempts.failures_in_window(conn, EVERYONE, window)
            if failed >= settings.register_failures_global_per_window:
                raise RateLimited("too many failed attempts from everywhere; wait", retry_after=remaining)
        try:
            yield conn
        except failures:
            await queries.attempts.record_failure(conn, who, window)
            if everyone:
                await queries.attempts.record_failure(conn, EVERYONE, window)
            raise


class TvAttempt(NamedTuple, Generic[B]):
    conn: Connection
    body: B
    address: str


@asynccontextmanager
async def by_tv(request: web.Request, decoder: msgspec.json.Decoder[B]) -> AsyncIterator[TvAttempt[B]]:
    """A TV's attempt: its body, its address and a connection, ``limited`` by its address and by
    everyone's failures. Any ServiceError that leaves the block — a malformed body too — counts
    as a failure of the address."""
    address = client_address(request, request.app[SETTINGS].trusted_proxies)
    # The body is read before a connection is taken: a slow client must not hold one. Its error
    # waits until the window is checked (a caller over the limit gets 429 whatever it sends).
    malformed: ServiceError | None = None
    try:
        body = await read_json(request, decoder)
    except ServiceError as exc:
        malformed = exc
    async with limited(request, address, failures=(ServiceError,), everyone=True) as conn:
        if malformed is not None:
            raise malformed
        yield TvAttempt(conn, body, address)

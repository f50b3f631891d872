"""Attempts with a proof (a pairing code, a serial, a user code, a claim code, a provisioning token,
a recovery secret): each flow has its own budget per caller — a TV's address (an IPv6 address by its
/64), or a tenant for its admins' decisions — and a caller whose budget is spent gets 429 before
anything is looked at.

The slot is taken before the attempt, in one statement (so concurrent guesses cannot overrun the
budget) and given back when the attempt succeeds: what stays spent is failures. For a guessable
proof a TV presents, all callers' failures together are counted too; above that global count the
flow is under pressure and each address's budget shrinks, but an address's first attempt in a
window is always looked at, so a genuine TV with a valid proof still gets in while a botnet does.

A flow runs its attempt inside ``limited`` (an admin's decision) or ``by_tv`` (a TV's call)::

    async with attempts.by_tv(request, attempts.PAIRING_CODE, _registration) as (conn, body, address):
        async with conn.transaction():
            ...  # a ServiceError raised here counts as a failure of ``address``
"""

from __future__ import annotations

import ipaddress
import time
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

# The counter of all callers' failures of a flow together (no caller's key looks like this).
EVERYONE = "*"

B = TypeVar("B")


class Flow(NamedTuple):
    """One budget: its name, and whether everyone's failures together put it under pressure (a
    guessable proof a TV presents; not a 256-bit secret, which no number of guesses finds)."""

    name: str
    everyone: bool


PAIRING_CODE = Flow("pairing_code", everyone=True)
SERIAL = Flow("serial", everyone=True)
PROVISIONING_TOKEN = Flow("provisioning_token", everyone=False)
RECOVERY_SECRET = Flow("recovery_secret", everyone=False)
# An admin's, counted per tenant: lookups, approvals and denials of user codes share one budget.
USER_CODE = Flow("user_code", everyone=False)
CLAIM_CODE = Flow("claim_code", everyone=False)
# A TV's requests for device-first pairing: each one is stored until it expires, so every one takes
# a slot (``spend``), and none is given back.
DEVICE_AUTHORIZATION_START = Flow("device_authorization_start", everyone=False)


def of_tenant(tenant_id: uuid.UUID) -> str:
    """Whom an admin's failed decision counts against: the tenant, whichever client called."""
    return f"tenant:{tenant_id}"


def of_address(address: str) -> str:
    """Whom a TV's attempt counts against: its IPv4 address, or its IPv6 address's /64 (one
    subscriber holds a whole /64, so each of its addresses is no new caller)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _retry_after(window: int) -> int:
    return window - int(time.time()) % window


async def spend(request: web.Request, conn: Connection, flow: Flow, who: str, limit: int) -> None:
    """Take one slot of ``who``'s budget for ``flow`` (``limit`` a window) for good, or 429."""
    window = request.app[SETTINGS].register_failure_window_seconds
    if await queries.attempts.reserve(conn, flow.name, who, window, limit) is None:
        raise RateLimited("too many attempts; wait", retry_after=_retry_after(window))


@asynccontextmanager
async def limited(
    request: web.Request,
    flow: Flow,
    who: str,
    *,
    failures: tuple[type[ServiceError], ...] = (NotFound,),
) -> AsyncIterator[Connection]:
    """A connection for one attempt of ``flow`` by ``who``, refused with 429 while its budget is
    spent; any of ``failures`` that leaves the block keeps the slot spent (and, for a flow counted
    for everyone, adds to everyone's failures); anything else that leaves it gives the slot back."""
    settings = request.app[SETTINGS]
    window = settings.register_failure_window_seconds
    async with request.app[POOL].acquire() as conn:
        limit = settings.register_failures_per_window
        if flow.everyone and await queries.attempts.failures(conn, flow.name, EVERYONE, window) >= (
            settings.register_failures_global_per_window
        ):
            limit = min(limit, settings.register_failures_under_pressure)
        # Its own statement, before the attempt's transaction: the row is locked for an instant,
        # not for the whole attempt, and no two attempts can take the last slot.
        window_start = await queries.attempts.reserve(conn, flow.name, who, window, limit)
        if window_start is None:
            raise RateLimited("too many failed attempts; wait", retry_after=_retry_after(window))
        try:
            yield conn
        except failures:
            if flow.everyone:
                await queries.attempts.add_failure(conn, flow.name, EVERYONE, window)
            raise
        except ServiceError:
            await queries.attempts.give_back(conn, flow.name, who, window_start)
            raise
        await queries.attempts.give_back(conn, flow.name, who, window_start)


class TvAttempt(NamedTuple, Generic[B]):
    conn: Connection
    body: B
    address: str


@asynccontextmanager
async def by_tv(
    request: web.Request, flow: Flow, decoder: msgspec.json.Decoder[B]
) -> AsyncIterator[TvAttempt[B]]:
    """A TV's attempt: its body, its address and a connection, ``limited`` by its address. Any
    ServiceError that leaves the block — a malformed body too: it cannot be told from a guess —
    counts as a failure."""
    address = client_address(request, request.app[SETTINGS].trusted_proxies)
    # The body is read before a connection is taken: a slow client must not hold one. Its error
    # waits until the budget is checked (a caller over the limit gets 429 whatever it sends).
    malformed: ServiceError | None = None
    try:
        body = await read_json(request, decoder)
    except ServiceError as exc:
        malformed = exc
    async with limited(request, flow, of_address(address), failures=(ServiceError,)) as conn:
        if malformed is not None:
            raise malformed
        yield TvAttempt(conn, body, address)

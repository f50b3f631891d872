"""Which failures of a request mean a dependency is away (a 503 to retry) and which are ours (a 500),
on real exception instances: what the clients raise, not what we expect them to."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import asyncpg
import nats.errors
import nats.js.errors
import pytest

from shared import db
from shared.dependencies import DatabaseUnreachable, unavailable


def raised(action: Callable[[], object]) -> BaseException:
    try:
        action()
    except BaseException as exc:  # noqa: BLE001 - whatever it raises is the subject
        return exc
    raise AssertionError("nothing raised")


def refused() -> None:
    with socket.socket() as unused:  # a port nobody listens on: bound, never listening
        unused.bind(("127.0.0.1", 0))
        with socket.create_connection(unused.getsockname(), timeout=1):
            pass


@pytest.mark.parametrize(
    ("exc", "dependency"),
    [
        # js.publish with no stream to answer (a leader election): the bus, not a bug.
        (nats.js.errors.NoStreamResponseError(), "nats"),
        (nats.errors.TimeoutError(), "nats"),  # an OSError too: NATS is named first
        (nats.errors.NoRespondersError(), "nats"),
        (DatabaseUnreachable("connection refused"), "postgres"),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), "postgres"),
        # What the next query meets on an idle session a stopping server ended.
        (
            asyncpg.exceptions.InternalClientError(
                'cannot switch to state 12; protocol is in the "failed" state'
            ),
            "postgres",
        ),
        (raised(refused), ""),
        (ConnectionResetError(104, "Connection reset by peer"), ""),
        (raised(lambda: socket.getaddrinfo("no-such-host.invalid", 80)), ""),
    ],
)
def test_a_dependency_away_is_a_503(exc: BaseException, dependency: str) -> None:
    away = unavailable(exc)
    assert away is not None, exc
    name, response = away
    assert name == dependency
    assert response.status == 503


@pytest.mark.parametrize(
    "exc",
    [
        raised(lambda: Path("/no/such/file").read_bytes()),
        PermissionError(13, "Permission denied"),
        TimeoutError(),  # one of our own deadlines
        asyncpg.exceptions.ProtocolError("invalid array dimensions"),
        asyncpg.exceptions.OutdatedSchemaCacheError("cached statement plan is invalid"),
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        ),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        ValueError("a bug"),
    ],
)
def test_our_own_failure_stays_a_500(exc: BaseException) -> None:
    assert unavailable(exc) is None


CONNECT_TIMEOUT = db.CONNECT_TIMEOUT_SECONDS + 1


async def test_a_full_pool_is_not_the_database_away(database: str) -> None:
    """Every connection of the pool busy (load) leaves the probe's answer as prompt as ever: it
    asks on a connection of its own; and a probe cut off mid-query starts afresh."""
    pool = await db.create_pool(database, "public", min_size=1, max_size=1)
    probe = db.DatabaseProbe(database, "public")
    try:
        async with pool.acquire():  # the only connection, held by a request
            async with asyncio.timeout(1):
                await probe()
        stuck = asyncio.ensure_future(probe())
        await asyncio.sleep(0)
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await probe()
    finally:
        probe.close()
        await pool.close()

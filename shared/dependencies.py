"""The shared dependencies of a service (PostgreSQL, NATS): whether each answers, and since when.

Not readiness. A replica is ready when it can answer its own routes; PostgreSQL or NATS away is
shared by every replica, and taking them all out of the load balancer at once would turn a
503 with ``Retry-After`` (what a request that needs the missing part gets, see
``shared.http.error_response``) into connection errors for everyone, polls answered from memory
included. So each dependency is probed here, in the background, for the metrics (alerts) and for
the verbose health document (``GET /readyz?verbose``), and for nothing else.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import aiohttp
import asyncpg
import msgspec
import nats.errors
import nats.js.errors
import prometheus_client
import structlog
from aiohttp import web

from shared import errors

log = structlog.get_logger()

# Each worker process probes for itself: the pod's figure is its worst worker's view.
DEPENDENCY_UP = prometheus_client.Gauge(
    "dependency_up",
    "1 while the dependency answers this service's probe, 0 while it does not",
    ["dependency"],
    multiprocess_mode="livemin",
)
DEPENDENCY_CHANGED = prometheus_client.Gauge(
    "dependency_state_changed_timestamp_seconds",
    "When dependency_up last changed (Unix time)",
    ["dependency"],
    multiprocess_mode="livemax",
)

# How often each dependency is asked, and how long it has to answer before it counts as away.
PROBE_INTERVAL_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 2.0

# Raises (or runs past PROBE_TIMEOUT_SECONDS) when the dependency does not answer.
Probe = Callable[[], Awaitable[object]]


class DependencyState(msgspec.Struct, frozen=True):
    up: bool
    since: datetime
    error: str | None = None  # the last failed probe's error while down


class Dependencies:
    """The probed dependencies of one worker process, by name (``postgres``, ``nats``)."""

    def __init__(self) -> None:
        self._probes: dict[str, Probe] = {}
        self._connected: dict[str, Callable[[], bool]] = {}
        self._running: dict[str, asyncio.Future[object]] = {}
        self.states: dict[str, DependencyState] = {}

    def watch(self, name: str, probe: Probe, *, connected: Callable[[], bool] | None = None) -> None:
        """Probe ``name`` from now on; it answered just now (the service connected to it).
        ``connected``, when the client knows at no cost that its connection is down, lets
        :meth:`require` refuse a request at once rather than after the client's timeout."""
        self._probes[name] = probe
        if connected is not None:
            self._connected[name] = connected
        self._record(name, up=True, error=None)

    def forget(self, name: str) -> None:
        """Stop probing ``name``: the service is closing its connection (a stop, not an outage)."""
        self._probes.pop(name, None)
        self._connected.pop(name, None)
        self.states.pop(name, None)
        running = self._running.pop(name, None)
        if running is not None:
            running.cancel()

    def require(self, names: tuple[str, ...]) -> None:
        """Raise a 503 when one of ``names`` is known to be away right now. nats-py holds a
        request made while it reconnects until the request's timeout (5 s for JetStream's API);
        the caller had better hear at once that it should come back in a few seconds."""
        for name in names:
            connected = self._connected.get(name)
            if connected is not None and not connected():
                raise errors.Unavailable(_MESSAGES[name], retry_after=RETRY_AFTER_SECONDS)

    async def probe(self) -> None:
        """Ask every dependency once, all at a time."""
        await asyncio.gather(*(self._probe_one(name, probe) for name, probe in list(self._probes.items())))

    async def run(self) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(PROBE_INTERVAL_SECONDS)

    async def _probe_one(self, name: str, probe: Probe) -> None:
        # A probe cut off by a timeout may not end when cancelled: asyncpg releasing a connection
        # to a frozen or unreachable server waits for the query's cancellation, without limit. So
        # the probe runs on its own, is judged after the timeout whether or not it ended, and is
        # not asked again while it is still stuck.
        running = self._running.get(name)
        if running is None or running.done():
            running = self._running[name] = asyncio.ensure_future(probe())
            running.add_done_callback(_retrieved)
        done, _ = await asyncio.wait([running], timeout=PROBE_TIMEOUT_SECONDS)
        if name not in self._probes:  # forgotten while the probe ran
            return
        if not done:
            running.cancel()
            self._record(name, up=False, error=f"no answer within {PROBE_TIMEOUT_SECONDS:g} s")
        elif running.cancelled():  # the stuck probe of an earlier round, ended by its cancel
            self._record(name, up=False, error=f"no answer within {PROBE_TIMEOUT_SECONDS:g} s")
        elif (exc := running.exception()) is not None:
            self._record(name, up=False, error=f"{type(exc).__name__}: {exc}".rstrip(": "))
        else:
            self._record(name, up=True, error=None)

    def _record(self, name: str, *, up: bool, error: str | None) -> None:
        before = self.states.get(name)
        if before is not None and before.up == up:
            if error != before.error:  # still down, for another reason: keep since
                self.states[name] = DependencyState(up=up, since=before.since, error=error)
            return
        now = time.time()
        self.states[name] = DependencyState(up=up, since=datetime.fromtimestamp(now, UTC), error=error)
        DEPENDENCY_UP.labels(name).set(1 if up else 0)
        DEPENDENCY_CHANGED.labels(name).set(now)
        if before is not None:  # a change, not the first answer
            if up:
                log.info(
                    "dependency_up", dependency=name, down_seconds=round(now - before.since.timestamp(), 1)
                )
            else:
                log.warning("dependency_down", dependency=name, error=error)


def _retrieved(probe: asyncio.Future[object]) -> None:
    """A probe that ends after it was given up on is not reported as a never-retrieved error."""
    if not probe.cancelled():
        probe.exception()


DEPENDENCIES = web.AppKey("DEPENDENCIES", Dependencies)


class DatabaseUnreachable(ConnectionError):
    """A new connection to PostgreSQL failed: refused, timed out, its name not resolved."""


# Long enough for a restart or a failover to be over, short enough that a retry finds it back.
RETRY_AFTER_SECONDS = 3
_MESSAGES = {
    "nats": "the message bus is not reachable; retry shortly",
    "postgres": "the database is not reachable; retry shortly",
    # Before a connection there is no telling which server refused: still not a bug of ours.
    "": "a service this one needs is not reachable; retry shortly",
}
# How each dependency's absence surfaces in a request: the connection lost or refused, the server
# stopping, starting or full; for NATS also a request that timed out or found no responder while
# the client reconnects, or JetStream without a leader (a publish then finds no stream to answer).
# NATS first: its timeout is an OSError. Nothing broader: an error of ours stays a 500.
_AWAY: tuple[tuple[str, tuple[type[BaseException], ...]], ...] = (
    (
        "nats",
        (
            nats.errors.ConnectionClosedError,
            nats.errors.ConnectionDrainingError,
            nats.errors.ConnectionReconnectingError,
            nats.errors.NoServersError,
            nats.errors.NoRespondersError,
            nats.errors.OutboundBufferLimitError,
            nats.errors.StaleConnectionError,
            nats.errors.TimeoutError,
            nats.js.errors.NoStreamResponseError,
            nats.js.errors.ServiceUnavailableError,
        ),
    ),
    (
        "postgres",
        (
            DatabaseUnreachable,
            asyncpg.PostgresConnectionError,
            asyncpg.exceptions.OperatorInterventionError,
            asyncpg.exceptions.TooManyConnectionsError,
        ),
    ),
    # A connection refused, reset or cut, a name not resolved: not a file missing or a timeout.
    ("", (ConnectionError, aiohttp.ClientOSError, socket.gaierror)),
)


def _session_ended_by_server(exc: BaseException) -> bool:
    """A server shutting down ends idle sessions with an error nobody asked for: asyncpg's protocol
    goes to its "failed" state, and the next query on such a connection meets that state. The
    same class (not its subclasses, ProtocolError and the like) also says "another operation is in
    progress", a bug of ours: told apart by the state named."""
    failed = 'protocol is in the "failed" state'
    return type(exc) is asyncpg.exceptions.InternalClientError and failed in str(exc)


def unavailable(exc: BaseException) -> tuple[str, errors.Unavailable] | None:
    """When ``exc`` means a dependency is away: its name ("" when it cannot be told) and the 503
    to answer; None when ``exc`` is a failure of ours."""
    for name, kinds in _AWAY:
        if isinstance(exc, kinds) or (name == "postgres" and _session_ended_by_server(exc)):
            return name, errors.Unavailable(_MESSAGES[name], retry_after=RETRY_AFTER_SECONDS)
    return None

"""HTTP plumbing every service shares: middlewares, JSON in and out, health, readiness, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import os
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import asyncpg
import msgspec
import prometheus_client
import structlog
from aiohttp import web
from prometheus_client import multiprocess

from shared import errors
from shared.logging import new_log_context
from shared.settings import Settings

log = structlog.get_logger()

SETTINGS = web.AppKey("SETTINGS", Settings)
SERVICE = web.AppKey("SERVICE", str)
# Named checks that /readyz runs; each returns True when its dependency answers.
READINESS = web.AppKey("READINESS", dict[str, Callable[[], Awaitable[bool]]])


class InFlight:
    """The requests a service is handling, so that a stopping service can wait for them to be
    answered (``shared.serve``); once it is stopping, answers ask the client to close the
    connection, and its next request goes to another replica."""

    def __init__(self) -> None:
        self.count = 0
        self.stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if not self.count:
            self._idle.set()

    async def wait(self, seconds: float) -> int:
        """Wait until no request is in flight, at most ``seconds``; the number still in flight."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        return self.count


IN_FLIGHT = web.AppKey("IN_FLIGHT", InFlight)

REQUESTS = prometheus_client.Counter(
    "http_requests_total", "HTTP requests answered", ["service", "method", "route", "status"]
)
LATENCY = prometheus_client.Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["service", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

_encoder = msgspec.json.Encoder()
T = TypeVar("T")
# A \u0000 escape not itself escaped (an odd number of backslashes before the u).
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def base_app(service: str, settings: Settings) -> web.Application:
    """An application with the settings and health routes in place; routes are added with
    :func:`add_routes`, which wraps each in :func:`instrumented`. No aiohttp middlewares: they
    cost every request of the gateway's poll path a chain of calls (see docs/architecture.md)."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[SERVICE] = service
    app[READINESS] = {}
    app[IN_FLIGHT] = InFlight()
    add_routes(
        app,
        [
            ("GET", "/healthz", healthz, True),
            ("GET", "/readyz", readyz, True),
            ("GET", "/metrics", metrics, True),
        ],
    )
    return app


def add_routes(app: web.Application, routes: list[tuple[str, str, Handler, bool]]) -> None:
    """Add ``(method, path, handler, quiet)`` routes, each wrapped in :func:`instrumented`."""
    for method, path, handler, quiet in routes:
        wrapped = instrumented(app, method, path, handler, quiet=quiet)
        if method == "GET":
            app.router.add_get(path, wrapped)  # and HEAD, as HTTP asks of a GET
        else:
            app.router.add_route(method, path, wrapped)


def finish_routes(app: web.Application) -> None:
    """Answer every path no route matched with our 404 or 405 shape (call after the last route)."""
    app.router.add_route("*", "/{path:.*}", instrumented(app, "*", "unmatched", unmatched))


async def unmatched(request: web.Request) -> web.StreamResponse:
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        raise errors.MethodNotAllowed(
            f"{request.method} is not allowed here", headers={"Allow": ",".join(sorted(allowed))}
        )
    raise errors.NotFound("no such path")


_REQUEST_IDS = itertools.count(1)
_REQUEST_ID_PREFIX = secrets.token_hex(6)  # per process, so ids from all replicas stay distinct


def instrumented(
    app: web.Application, method: str, route: str, handler: Handler, *, quiet: bool = False
) -> Handler:
    """``handler`` with what every request gets: a request id on its log lines and its response,
    errors in our JSON shape, a count and a latency in the metrics, and one log line — except for
    ``quiet`` routes (the TVs' polls, probes) whose successes are counted, not logged."""
    service, in_flight = app[SERVICE], app[IN_FLIGHT]  # looked up once, not per request
    counted: dict[int, Any] = {}  # status -> its counter, so the hot path skips labels()
    latency = LATENCY.labels(service, route)

    async def handle(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = request.headers.get("X-Request-ID") or f"{_REQUEST_ID_PREFIX}{next(_REQUEST_IDS):x}"
        new_log_context(request_id=request_id)
        in_flight.enter()
        try:
            response = await handler(request)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a response in our shape
            response = error_response(request, exc)
        finally:
            in_flight.leave()
        if not response.prepared:  # a stream sent its headers already
            response.headers["X-Request-ID"] = request_id
            if in_flight.stopping:
                response.force_close()
        elapsed = time.perf_counter() - started
        status = response.status
        counter = counted.get(status)
        if counter is None:
            counter = counted[status] = REQUESTS.labels(service, method, route, str(status))
        counter.inc()
        latency.observe(elapsed)
        if not quiet or status >= 400:
            log.info(
                "request",
                method=request.method,
                path=request.path,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
        return response

    return handle


# A connection refused or lost, the server shutting down or not yet accepting: not our bug.
DATABASE_UNREACHABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)


def error_response(request: web.Request, exc: Exception) -> web.Response:
    if isinstance(exc, errors.ServiceError):
        return json_response(exc.body(), status=exc.status, headers=exc.headers)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        error = errors.PayloadTooLarge(f"body is larger than {request.app[SETTINGS].max_body_bytes} bytes")
        return json_response(error.body(), status=error.status)
    if isinstance(exc, DATABASE_UNREACHABLE):
        # PostgreSQL restarting or failing over: nothing was applied (the transaction did not
        # commit); the caller may retry, and /readyz says the same meanwhile.
        log.warning("database_unreachable", error=repr(exc))
        error = errors.Unavailable("the database is not reachable; retry shortly", retry_after=5)
        return json_response(error.body(), status=error.status, headers=error.headers)
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        body = errors.ErrorBody(error=exc.reason.lower().replace(" ", "_"), message=exc.reason)
        return json_response(body, status=exc.status)
    log.error("unhandled_error", exc_info=exc)
    body = errors.ErrorBody(error="internal", message="internal error; see the service log")
    return json_response(body, status=500)


def oauth_error(status: int, error: str, description: str, *, basic: bool = False) -> web.Response:
    """An OAuth 2.0 error (RFC 6749 §5.2, RFC 8628 §3.5, RFC 7591 §3.2.2) in our one shape, with
    ``error_description`` too, for stock OAuth clients."""
    body = {"error": error, "message": description, "error_description": description}
    headers = {"Cache-Control": "no-store"}
    if basic:
        headers["WWW-Authenticate"] = 'Basic realm="oauth"'
    return json_response(body, status=status, headers=headers)


# A client session for calls to the other services (a service asks another rarely, never per poll).
HTTP = web.AppKey("HTTP", aiohttp.ClientSession)


async def http_client_ctx(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        app[HTTP] = session
        yield


def json_response(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=_encoder.encode(body), status=status, headers=headers, content_type="application/json"
    )


async def read_json(request: web.Request, decoder: msgspec.json.Decoder[T]) -> T:
    """Decode the body with a prebuilt decoder; every way it can be wrong becomes a clear 4xx."""
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise errors.UnsupportedMediaType("send the body as application/json")
    raw = await request.read()  # aiohttp raises 413 past client_max_size; errors_as_json shapes it
    try:
        body = decoder.decode(raw)
    except msgspec.ValidationError:
        raise errors.invalid_body(decoder.type, raw) from None
    except msgspec.DecodeError as exc:
        raise errors.BadRequest(f"body is not valid JSON: {exc}") from None
    if _NUL_ESCAPE.search(raw):
        raise errors.nul_characters(msgspec.json.decode(raw))
    return body


async def read_limited(request: web.Request, limit: int, setting: str) -> bytes:
    """The whole body of a non-JSON upload (a file, a CSV), refused with 413 past ``limit``."""
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise errors.PayloadTooLarge(f"the body is at most {limit} bytes ({setting})")
        chunks.append(chunk)
    return b"".join(chunks)


def client_address(request: web.Request, trusted: tuple[Any, ...]) -> str:
    """The caller's address; X-Forwarded-For counts only when it comes from a trusted proxy."""
    peer = request.remote or ""
    if not trusted:
        return peer
    forwarded = [
        hop.strip() for header in request.headers.getall("X-Forwarded-For", []) for hop in header.split(",")
    ]
    hops = [peer, *reversed(forwarded)]
    # Walk from the nearest hop outwards; the first address that is not our proxy is the client.
    for hop in hops:
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return hop
        if not any(address in network for network in trusted):
            return hop
    return hops[-1]


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = {}
    for name, check in request.app[READINESS].items():
        try:
            checks[name] = await check()
        except Exception:  # a failing check means "not ready", never a 500
            checks[name] = False
    ready = all(checks.values())
    return json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks}, status=200 if ready else 503
    )


async def metrics(request: web.Request) -> web.Response:
    registry = prometheus_client.REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # one of several workers: answer for all of them
        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return web.Response(
        body=prometheus_client.generate_latest(registry),
        headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST},
    )


def uuid_param(request: web.Request, name: str = "id") -> uuid.UUID:
    """A path parameter that must be a UUID; anything else is a 404 (no such resource)."""
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise errors.NotFound(f"no such {name}") from None


def background(
    name: str, run: Callable[[web.Application], Awaitable[None]]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that runs ``run(app)`` as a task for the app's lifetime, then cancels it.

    ``run`` is meant to run forever: if it fails, the failure is logged and ``run`` starts again
    after a second. A task that died silently once stopped a consumer for good while its service
    kept reporting ready."""

    async def supervised(app: web.Application) -> None:
        while True:
            try:
                await run(app)
                log.error("background_task_ended", task=name)
            except Exception:
                log.exception("background_task_failed", task=name)
            await asyncio.sleep(1)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(supervised(app), name=name)
        yield
        await stop(task)

    return ctx


# How long a unit of background work may go on once its service is stopping (see ``finished``).
FINISH_SECONDS = 10


async def finished(work: Awaitable[T]) -> T:
    """Await ``work`` to its end, even when the caller is cancelled meanwhile (its service is
    stopping): then for at most FINISH_SECONDS more, and the cancellation goes on after it.

    For units of background work that are cheaper to finish than to redo: a batch of messages
    cut off before its ack comes back only after the consumer's ack wait (30 s), to whichever
    replica is left."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        deadline = asyncio.get_running_loop().time() + FINISH_SECONDS
        while not task.done() and (left := deadline - asyncio.get_running_loop().time()) > 0:
            with contextlib.suppress(asyncio.CancelledError):  # stop() cancels again meanwhile
                await asyncio.wait([task], timeout=left)
        if not task.done():
            log.warning("unfinished_at_stop", seconds=FINISH_SECONDS)
            task.cancel()
        elif not task.cancelled() and task.exception() is not None:
            log.error("failed_at_stop", error=repr(task.exception()))
        raise


async def stop(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended.

    One cancel is not always enough on Python 3.11: ``asyncio.wait_for`` (nats-py waits with it in
    every fetch) returns a result that arrives together with the cancellation and swallows the
    cancellation (CPython gh-86296, fixed in 3.12). The task then simply goes on, and a shutdown
    that awaited it hung for good — seen in CI. So cancel again until it ends."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=1)
    if not task.cancelled() and task.exception() is not None:
        log.error("task_failed_at_stop", task=task.get_name(), error=repr(task.exception()))

"""HTTP plumbing every service shares: middlewares, JSON in and out, health, readiness, metrics."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import prometheus_client
import structlog
from aiohttp import web

from shared import errors
from shared.settings import Settings

log = structlog.get_logger()

SETTINGS = web.AppKey("SETTINGS", Settings)
SERVICE = web.AppKey("SERVICE", str)
# Named checks that /readyz runs; each returns True when its dependency answers.
READINESS = web.AppKey("READINESS", dict[str, Callable[[], Awaitable[bool]]])

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


def base_app(service: str, settings: Settings) -> web.Application:
    """An application with the shared middlewares, settings and health routes in place."""
    app = web.Application(
        middlewares=[request_context, errors_as_json],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[SERVICE] = service
    app[READINESS] = {}
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics),
        ]
    )
    return app


def json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
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
        raise errors.invalid_body(decoder.type, msgspec.json.decode(raw)) from None
    except msgspec.DecodeError as exc:
        raise errors.BadRequest(f"body is not valid JSON: {exc}") from None
    if _NUL_ESCAPE.search(raw):
        raise errors.nul_characters(msgspec.json.decode(raw))
    return body


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


@web.middleware
async def request_context(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Bind a request id to every log line of this request, echo it, and count the request."""
    started = time.perf_counter()
    request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        service=request.app[SERVICE], request_id=request_id, method=request.method, path=request.path
    )
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-ID"] = request_id
        return response
    finally:
        elapsed = time.perf_counter() - started
        route = _route_name(request)
        service = request.app[SERVICE]
        REQUESTS.labels(service, request.method, route, str(status)).inc()
        LATENCY.labels(service, route).observe(elapsed)
        log.info("request", status=status, duration_ms=round(elapsed * 1000, 2))


def _route_name(request: web.Request) -> str:
    # The route template, not the path: ids in metric labels would grow without bound.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.ServiceError as exc:
        return json_response(exc.body(), status=exc.status, headers=exc.headers)
    except web.HTTPRequestEntityTooLarge:
        exc = errors.PayloadTooLarge(
            f"body is larger than {request.app[SETTINGS].max_body_bytes} bytes"
        )
        return json_response(exc.body(), status=exc.status)
    except web.HTTPNotFound:
        return json_response(errors.NotFound("no such path").body(), status=404)
    except web.HTTPMethodNotAllowed as exc:
        error = errors.MethodNotAllowed(f"{request.method} is not allowed here")
        return json_response(
            error.body(), status=405, headers={"Allow": ",".join(sorted(exc.allowed_methods))}
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_response(
            errors.ErrorBody(error=exc.reason.lower().replace(" ", "_"), message=exc.reason),
            status=exc.status,
        )
    except Exception:
        log.exception("unhandled_error")
        return json_response(
            errors.ErrorBody(error="internal", message="internal error; see the service log"),
            status=500,
        )


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
    return web.Response(
        body=prometheus_client.generate_latest(),
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
    """A cleanup context that runs ``run(app)`` as a task for the app's lifetime, then cancels it."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run(app), name=name)
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return ctx

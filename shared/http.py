"""The HTTP edge every service shares: routes wrapped with what every request gets, errors in our
one shape, bodies and parameters decoded (JSON, OAuth forms, uploads, path ids) and responses
encoded, and the caller's address behind a trusted proxy."""

from __future__ import annotations

import base64
import ipaddress
import itertools
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import structlog
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from shared import dependencies, errors, trace_context
from shared.app_keys import IN_FLIGHT, SERVICE, SETTINGS
from shared.logging import log_context_value, new_log_context
from shared.request_metrics import RouteTally

log = structlog.get_logger()

_encoder = msgspec.json.Encoder()
T = TypeVar("T")
# A \u0000 escape not itself escaped (an odd number of backslashes before the u).
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(
    app: web.Application,
    routes: list[tuple[str, str, Handler, bool]],
    *,
    needs: dict[tuple[str, str], tuple[str, ...]] | None = None,
) -> None:
    """Add ``(method, path, handler, quiet)`` routes, each wrapped in :func:`instrumented`;
    ``needs`` names the dependencies (``nats``) a route cannot answer without, by method and path."""
    for method, path, handler, quiet in routes:
        needed = (needs or {}).get((method, path), ())
        wrapped = instrumented(app, method, path, handler, quiet=quiet, needs=needed)
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
# A caller's own request id is kept when it is a plain token: it goes into every log line and back
# into a header, so nothing a client sends there can forge log fields or break the response.
_CALLERS_REQUEST_ID = re.compile(r"[!#-~]{1,128}")


def instrumented(
    app: web.Application,
    method: str,
    route: str,
    handler: Handler,
    *,
    quiet: bool = False,
    needs: tuple[str, ...] = (),
) -> Handler:
    """``handler`` with what every request gets: a request id and a span of its trace (W3C Trace
    Context, see :mod:`shared.trace_context`) on its log lines and its response,
    errors in our JSON shape, a count and a latency in the metrics, and one log line — except for
    ``quiet`` routes (the TVs' polls, probes) whose successes are counted, not logged. A route
    that ``needs`` a dependency answers 503 at once while it is known to be away."""
    service, in_flight = app[SERVICE], app[IN_FLIGHT]  # looked up once, not per request
    if needs:
        handler = _needing(app[dependencies.DEPENDENCIES], needs, handler)
    tally = RouteTally(service, method, route)

    async def handle(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = request.headers.get("X-Request-ID")
        if not request_id or not _CALLERS_REQUEST_ID.fullmatch(request_id):  # no regex on a poll
            request_id = f"{_REQUEST_ID_PREFIX}{next(_REQUEST_IDS):x}"
        span = trace_context.start_request(request.headers)
        new_log_context(request_id=request_id, trace_id=span.trace_id, span_id=span.span_id)
        in_flight.enter()
        try:
            response = await handler(request)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a response in our shape
            response = error_response(request, exc)
        finally:
            in_flight.leave()
        if not response.prepared:  # a stream sent its headers already
            response.headers["X-Request-ID"] = request_id
            response.headers["traceparent"] = span.traceparent
            if in_flight.stopping:
                response.force_close()
        elapsed = time.perf_counter() - started
        status = response.status
        tally.record(status, elapsed)
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


def response_ids() -> dict[str, str]:
    """The request's id and our span's ``traceparent``, as the headers of a response whose handler
    sends them itself (a stream, a download: prepared before :func:`instrumented` sees it)."""
    span = trace_context.current()
    ids = {"X-Request-ID": log_context_value("request_id") or ""}
    if span is not None:
        ids["traceparent"] = span.traceparent
    return ids


def _needing(known: dependencies.Dependencies, needs: tuple[str, ...], handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        known.require(needs)
        return await handler(request)

    return guarded


def error_response(request: web.Request, exc: Exception) -> web.Response:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        exc = errors.PayloadTooLarge(f"body is larger than {request.app[SETTINGS].max_body_bytes} bytes")
    elif (away := dependencies.unavailable(exc)) is not None:
        # PostgreSQL or NATS restarting or failing over: nothing was applied (a transaction did
        # not commit, a publish was not acked); the caller may retry, here or on another replica.
        log.warning("dependency_unreachable", dependency=away[0] or None, error=repr(exc))
        exc = away[1]
    if isinstance(exc, errors.ServiceError):
        return json_response(exc.body(), status=exc.status, headers=exc.headers)
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        body = errors.ErrorBody(error=exc.reason.lower().replace(" ", "_"), message=exc.reason)
        return json_response(body, status=exc.status)
    log.error("unhandled_error", exc_info=exc)
    body = errors.ErrorBody(error="internal", message="internal error; see the service log")
    return json_response(body, status=500)


def json_response(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=_encoder.encode(body), status=status, headers=headers, content_type="application/json"
    )


# RFC 9111 §5.2.2.5: an answer no cache (nor a browser's history) keeps.
NO_STORE = {"Cache-Control": "no-store"}


def secret_response(body: Any, *, status: int = 200) -> web.Response:
    """An answer that carries a credential (a key, a secret, a token, a one-time code): shown to
    its caller once, and stored by nobody on the way."""
    return json_response(body, status=status, headers=NO_STORE)


async def read_json(request: web.Request, decoder: msgspec.json.Decoder[T]) -> T:
    """Decode the body with a prebuilt decoder; every way it can be wrong becomes a clear 4xx."""
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise errors.UnsupportedMediaType("send the body as application/json")
    raw = _arrived_body(request)
    if raw is None:
        raw = await request.read()  # aiohttp raises 413 past client_max_size; error_response shapes it
    try:
        body = decoder.decode(raw)
    except msgspec.ValidationError:
        raise errors.invalid_body(decoder.type, raw) from None
    except msgspec.DecodeError as exc:
        raise errors.BadRequest(f"body is not valid JSON: {exc}") from None
    except RecursionError:  # free-form JSON (an event's data) nested thousands of levels deep
        raise errors.BadRequest("the body is nested too deeply") from None
    if b"\\u0000" in raw and _NUL_ESCAPE.search(raw):
        raise errors.nul_characters(msgspec.json.decode(raw))
    return body


def _arrived_body(request: web.Request) -> bytes | None:
    """The body if it has all arrived (a TV's report, whole in one read of its connection), taken
    from the buffer without aiohttp's awaited reads: a few µs of a heartbeat's cost."""
    content = request.content
    if not content.is_eof():
        return None
    raw = content.read_nowait()
    if len(raw) > request.client_max_size:  # as aiohttp's own read would
        raise web.HTTPRequestEntityTooLarge(max_size=request.client_max_size, actual_size=len(raw))
    return raw


# The parameters that name an OAuth client (RFC 6749 §2.3.1).
CLIENT_CREDENTIALS = ("client_id", "client_secret")


async def read_form(request: web.Request) -> MultiDictProxy[str]:
    """An OAuth 2.0 form body (``application/x-www-form-urlencoded``); a wrong media type is an
    ``invalid_request``. A name or value holding NUL is refused here, once (PostgreSQL text cannot
    hold it): in a client's credentials it names no client, so ``invalid_client`` (401, with the
    Basic challenge for a caller that sent an Authorization header, RFC 6749 §5.2); anywhere else
    ``invalid_request``."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise errors.OAuthError(400, "invalid_request", "send an application/x-www-form-urlencoded body")
    form = MultiDict(
        (name, value) for name, value in (await request.post()).items() if isinstance(value, str)
    )
    holding_nul = {name for name, value in form.items() if "\x00" in name or "\x00" in value}
    if holding_nul & set(CLIENT_CREDENTIALS):
        challenge = bool(request.headers.get("Authorization"))
        raise errors.OAuthError(401, "invalid_client", "unknown client or wrong secret", basic=challenge)
    if holding_nul:
        raise errors.OAuthError(400, "invalid_request", "parameters must not contain NUL characters")
    return MultiDictProxy(form)


def basic_credentials(request: web.Request) -> tuple[str, str] | None:
    """The ``(user, password)`` of HTTP Basic authentication (RFC 7617), None without it; malformed
    credentials, or credentials holding NUL (which name nobody), are an OAuth ``invalid_client``."""
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode()
    except ValueError:  # not base64 (or not even ASCII), or not UTF-8 once decoded
        decoded = None
    if decoded is None or "\x00" in decoded:
        raise errors.OAuthError(401, "invalid_client", "malformed HTTP Basic credentials", basic=True)
    user, _, password = decoded.partition(":")
    return user, password


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


def uuid_param(request: web.Request, name: str = "id") -> uuid.UUID:
    """A path parameter that must be a UUID; anything else is a 404 (no such resource)."""
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise errors.NotFound(f"no such {name}") from None


def text_param(request: web.Request, name: str, resource: str) -> str:
    """A path parameter naming a ``resource`` by text; one holding NUL (PostgreSQL text cannot
    hold it) names none: a 404, like any other unknown name."""
    value = request.match_info[name]
    if "\x00" in value:
        raise errors.NotFound(f"no such {resource}")
    return value

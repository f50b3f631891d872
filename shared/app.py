"""The application every service starts from, and what a service may add to it: a client for
calls to the other services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace

import aiohttp
from aiohttp import web

from shared import trace_context
from shared.app_keys import IN_FLIGHT, READINESS, SERVICE, SETTINGS, InFlight
from shared.dependencies import DEPENDENCIES, Dependencies
from shared.health import healthz, metrics, readyz
from shared.http import add_routes
from shared.settings import Settings
from shared.tasks import background


def base_app(service: str, settings: Settings) -> web.Application:
    """An application with the settings and health routes in place; routes are added with
    :func:`shared.http.add_routes`, which wraps each in :func:`shared.http.instrumented`. No aiohttp
    middlewares: they cost every request of the gateway's poll path a chain of calls (see
    docs/architecture.md)."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[SERVICE] = service
    app[READINESS] = {}
    app[IN_FLIGHT] = InFlight()
    app[DEPENDENCIES] = Dependencies()  # PostgreSQL and NATS add themselves once connected
    app.cleanup_ctx.append(background("probe-dependencies", lambda app: app[DEPENDENCIES].run()))
    add_routes(
        app,
        [
            ("GET", "/healthz", healthz, True),
            ("GET", "/readyz", readyz, True),
            ("GET", "/metrics", metrics, True),
        ],
    )
    return app


# A client session for calls to the other services (a service asks another rarely, never per poll).
HTTP = web.AppKey("HTTP", aiohttp.ClientSession)


async def http_client_ctx(app: web.Application) -> AsyncIterator[None]:
    tracing = aiohttp.TraceConfig()
    tracing.on_request_start.append(_continue_trace)
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=5), trace_configs=[tracing]
    ) as session:
        app[HTTP] = session
        yield


async def _continue_trace(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestStartParams
) -> None:
    """A call to another service is part of the request that makes it: it carries the request's
    span (traceparent), so the other service's log lines join the same trace."""
    for name, value in trace_context.headers().items():
        params.headers.setdefault(name, value)

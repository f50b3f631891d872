"""TEMPORARY re-exports of the names this module used to hold, for provisioning only; it goes once
provisioning imports from their homes (``shared.app_keys``, ``shared.app``, ``shared.http``,
``shared.health``, ``shared.tasks``). Nothing else may import it."""

from __future__ import annotations

from aiohttp import web

from shared.app import HTTP, base_app, http_client_ctx
from shared.app_keys import IN_FLIGHT, READINESS, SERVICE, SETTINGS, InFlight
from shared.health import healthz, metrics, readyz
from shared.http import (
    DATABASE_UNREACHABLE,
    LATENCY,
    REQUESTS,
    Handler,
    add_routes,
    client_address,
    error_response,
    finish_routes,
    instrumented,
    json_response,
    read_json,
    read_limited,
    unmatched,
    uuid_param,
)
from shared.tasks import FINISH_SECONDS, background, finished, stop

__all__ = [
    "DATABASE_UNREACHABLE",
    "FINISH_SECONDS",
    "HTTP",
    "IN_FLIGHT",
    "LATENCY",
    "READINESS",
    "REQUESTS",
    "SERVICE",
    "SETTINGS",
    "Handler",
    "InFlight",
    "add_routes",
    "background",
    "base_app",
    "client_address",
    "error_response",
    "finish_routes",
    "finished",
    "healthz",
    "http_client_ctx",
    "instrumented",
    "json_response",
    "metrics",
    "oauth_error",
    "read_json",
    "read_limited",
    "readyz",
    "stop",
    "unmatched",
    "uuid_param",
]


def oauth_error(status: int, error: str, description: str, *, basic: bool = False) -> web.Response:
    """An OAuth 2.0 error (RFC 6749 §5.2, RFC 8628 §3.5, RFC 7591 §3.2.2) in our one shape, with
    ``error_description`` too, for stock OAuth clients. (Raise ``shared.errors.OAuthError`` instead.)"""
    body = {"error": error, "message": description, "error_description": description}
    headers = {"Cache-Control": "no-store"}
    if basic:
        headers["WWW-Authenticate"] = 'Basic realm="oauth"'
    return json_response(body, status=status, headers=headers)

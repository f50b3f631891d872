"""Heartbeat: reads TVs' heartbeats from the bus and keeps their presence."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.heartbeat.consumers import record_presence
from shared import bus, db
from shared.auth import VERIFIER, TokenVerifier
from services.heartbeat.routes import OPERATIONS
from shared.openapi import add_operations
from shared.settings import Settings
from shared.web import background, base_app

SCHEMA = "heartbeat"
MIGRATIONS = (Path(__file__).parent / "migrations",)


def create_app(settings: Settings) -> web.Application:
    app = base_app("heartbeat", settings)
    app[VERIFIER] = TokenVerifier(settings)
    app.cleanup_ctx.append(db.pool_ctx(SCHEMA))
    app.cleanup_ctx.append(bus.jetstream_ctx)
    app.cleanup_ctx.append(background("heartbeat-presence", record_presence))
    add_operations(app, "Signage heartbeat", OPERATIONS)
    return app

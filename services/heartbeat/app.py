"""Heartbeat: reads TVs' heartbeats from the bus, keeps their presence, announces online/offline."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.heartbeat.consumers import mark_offline, prune_history, record_presence, screens_ctx
from services.heartbeat.history import KNOWN_PARTITIONS
from services.heartbeat.routes import OPERATIONS
from services.heartbeat.stream import STREAM_QUEUES, close_streams
from services.heartbeat.watch import watch_presence
from shared import bus, db, outbox
from shared.app import base_app
from shared.auth import VERIFIER, TokenVerifier
from shared.openapi import add_operations
from shared.revocations import revocations_ctx
from shared.settings import Settings
from shared.tasks import background

SCHEMA = "heartbeat"
MIGRATIONS = (db.OUTBOX_MIGRATIONS, Path(__file__).parent / "migrations")


def create_app(settings: Settings) -> web.Application:
    app = base_app("heartbeat", settings)
    app[VERIFIER] = TokenVerifier(settings)
    app.cleanup_ctx.append(db.pool_ctx(SCHEMA, MIGRATIONS))
    app.cleanup_ctx.append(bus.jetstream_ctx)
    app.cleanup_ctx.append(revocations_ctx)
    app.cleanup_ctx.append(outbox.relay_ctx(SCHEMA))
    app.cleanup_ctx.append(screens_ctx)
    app.cleanup_ctx.append(background("heartbeat-presence", record_presence))
    app.cleanup_ctx.append(background("mark-offline", mark_offline))
    app.cleanup_ctx.append(background("presence-watch", watch_presence))
    app.cleanup_ctx.append(background("prune-heartbeats", prune_history))
    app[STREAM_QUEUES] = {}
    app[KNOWN_PARTITIONS] = set()
    app.on_shutdown.append(close_streams)
    add_operations(app, "Signage heartbeat", OPERATIONS)
    return app

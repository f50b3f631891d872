"""Registry: tenants, API clients and access tokens, venues, screens, playlists, screen config,
files for devices, remote commands, the admin audit trail, offline alerts, webhooks (their
endpoints and the delivery of every event to them)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.registry.alerts import alerts_ctx
from services.registry.command_lifecycle import expiry_ctx, reports_ctx
from services.registry.commands import screenshots_ctx
from services.registry.consumers import binding_ctx, presence_ctx
from services.registry.routes import OPERATIONS
from services.registry.webhook_delivery import dispatcher_ctx, upkeep_ctx
from services.registry.webhook_fanout import fanout_ctx
from services.registry.webhooks import resolver_ctx
from shared import bus, db, outbox
from shared.app import base_app, http_client_ctx
from shared.auth import ISSUER, VERIFIER, TokenIssuer, TokenVerifier
from shared.openapi import add_operations
from shared.revocations import revocations_ctx
from shared.settings import Settings

SCHEMA = "registry"
MIGRATIONS = (db.OUTBOX_MIGRATIONS, Path(__file__).parent / "migrations")


def create_app(settings: Settings) -> web.Application:
    app = base_app("registry", settings)
    app[ISSUER] = TokenIssuer(settings)
    app[VERIFIER] = TokenVerifier(settings)
    app.cleanup_ctx.append(db.pool_ctx(SCHEMA, MIGRATIONS))
    app.cleanup_ctx.append(bus.jetstream_ctx)
    app.cleanup_ctx.append(screenshots_ctx)
    app.cleanup_ctx.append(revocations_ctx)
    app.cleanup_ctx.append(outbox.relay_ctx(SCHEMA))
    app.cleanup_ctx.append(binding_ctx)
    app.cleanup_ctx.append(presence_ctx)
    app.cleanup_ctx.append(alerts_ctx)
    app.cleanup_ctx.append(reports_ctx)
    app.cleanup_ctx.append(expiry_ctx)
    app.cleanup_ctx.append(http_client_ctx)
    app.cleanup_ctx.append(resolver_ctx)
    app.cleanup_ctx.append(fanout_ctx)
    app.cleanup_ctx.append(dispatcher_ctx)
    app.cleanup_ctx.append(upkeep_ctx)
    add_operations(app, "Signage registry", OPERATIONS)
    return app

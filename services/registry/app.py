"""Registry: tenants, API clients and access tokens, venues, screens, playlists, screen config,
files for devices, remote commands, the admin audit trail, offline alerts, webhooks (their
endpoints and the delivery of every event to them)."""

from __future__ import annotations

from pathlib import Path

import msgspec
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
from shared.api_docs import docs_routes
from shared.app import base_app, http_client_ctx
from shared.auth import ISSUER, VERIFIER, TokenIssuer, TokenVerifier
from shared.http import add_routes
from shared.openapi import add_operations
from shared.revocations import revocations_ctx
from shared.settings import Settings

SCHEMA = "registry"
MIGRATIONS = (db.OUTBOX_MIGRATIONS, Path(__file__).parent / "migrations")
# The whole API's OpenAPI document, generated from every service's operations (services/
# api_document.py): in a cluster /openapi.json and /docs are routed here. Read from the file, as
# importing the other services' routes would register their metrics in this process.
API_DOCUMENT = Path(__file__).with_name("api_document.json")


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
    add_routes(app, [("GET", path, handler, False) for path, handler in docs_routes()])
    whole_api = msgspec.json.encode(msgspec.json.decode(API_DOCUMENT.read_bytes()))
    add_operations(app, "Signage registry", OPERATIONS, served_document=whole_api)
    return app

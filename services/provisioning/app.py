"""Provisioning: binds devices to screens and ends those bindings; holds devices and their keys
(as hashes).

Each way of binding is a feature — a handlers module and its SQL in ``queries/`` of the same name:
``codes`` (pairing codes), ``tokens``, ``serials``, ``claims``, ``device_authorization`` and
``recovery``; ``devices`` is the admins' view (list, revoke, audit). What they share is the core:
``screens`` (the screen copy, a free screen locked), ``attempts`` (the rate limit on guessable
proofs) and ``binding`` (the one place every bind and unbind goes through).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog
from aiohttp import web

from services.provisioning import device_authorization, queries
from services.provisioning.consumers import screens_ctx
from services.provisioning.routes import OPERATIONS
from shared import bus, db, outbox
from shared.app import base_app, http_client_ctx
from shared.app_keys import SETTINGS
from shared.auth import VERIFIER, TokenVerifier
from shared.db import POOL
from shared.http import add_routes
from shared.openapi import add_operations
from shared.routing import DEVICE_TOKEN_PATH
from shared.settings import Settings
from shared.tasks import background

log = structlog.get_logger()

SCHEMA = "provisioning"
MIGRATIONS = (db.OUTBOX_MIGRATIONS, Path(__file__).parent / "migrations")


def create_app(settings: Settings) -> web.Application:
    app = base_app("provisioning", settings)
    app[VERIFIER] = TokenVerifier(settings)
    app.cleanup_ctx.append(db.pool_ctx(SCHEMA, MIGRATIONS))
    app.cleanup_ctx.append(bus.jetstream_ctx)
    app.cleanup_ctx.append(outbox.relay_ctx(SCHEMA))
    app.cleanup_ctx.append(screens_ctx)
    app.cleanup_ctx.append(http_client_ctx)
    app.cleanup_ctx.append(background("prune-registration-failures", prune_registration_failures))
    # Not public (no route of the Ingress leads here): registry's /oauth/token passes the
    # device-code grant on to it, so the token endpoint stays one URL (RFC 8414 metadata).
    add_routes(app, [("POST", DEVICE_TOKEN_PATH, device_authorization.poll, True)])
    add_operations(app, "Signage provisioning", OPERATIONS)
    return app


async def prune_registration_failures(app: web.Application) -> None:
    """Forget failure counts of windows long past; the table stays as small as the attack."""
    window = app[SETTINGS].register_failure_window_seconds
    while True:
        await asyncio.sleep(window)
        try:
            async with app[POOL].acquire() as conn:
                await queries.attempts.prune_failures(conn, older_than_seconds=2 * window)
        except Exception as exc:  # noqa: BLE001 - the next round tries again; pruning is housekeeping
            log.warning("prune_failed", error=str(exc))

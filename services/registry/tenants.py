"""Tenants: the operator creates one, and with it its first API client (the credentials are
shown once; the tenant's admins register further clients themselves)."""

from __future__ import annotations

import uuid

import msgspec
import structlog
from aiohttp import web

from services.registry import audit, queries
from services.registry.models import ClientCredentials, NewTenant, TenantCreated
from shared.auth import new_secret, require_operator, secret_hash
from shared.db import POOL
from shared.http import read_json, secret_response

log = structlog.get_logger()

_new_tenant = msgspec.json.Decoder(NewTenant)


async def create_tenant(request: web.Request) -> web.Response:
    require_operator(request)
    body = await read_json(request, _new_tenant)
    client_id = "cli_" + uuid.uuid4().hex
    client_secret = new_secret("cs_")
    async with request.app[POOL].acquire() as conn, conn.transaction():
        tenant = await queries.tenants.insert_tenant(conn, body.name)
        await queries.clients.insert_client(
            conn, client_id=client_id, tenant_id=tenant.id, secret_hash=secret_hash(client_secret)
        )
        await audit.record(request, conn, tenant.id, audit.OPERATOR, "tenant.created", tenant.id)
    log.info("tenant_created", tenant_id=str(tenant.id), client_id=client_id)
    return secret_response(
        TenantCreated(
            id=tenant.id,
            name=tenant.name,
            created_at=tenant.created_at,
            client=ClientCredentials(client_id=client_id, client_secret=client_secret),
        ),
        status=201,
    )

"""Tenants: the operator creates one, and with it its first API client (the credentials are
shown once; the tenant's admins register further clients themselves). The operator lists them,
and issues a tenant a new ``admin`` client when it has lost its own (revoked, or its secret
forgotten): no tenant is ever locked out of itself."""

from __future__ import annotations

import uuid

import msgspec
import structlog
from aiohttp import web

from services.registry import audit, queries
from services.registry.models import ClientCredentials, NewTenant, TenantCreated, TenantPage
from shared.auth import new_secret, require_operator, secret_hash
from shared.db import POOL
from shared.errors import NotFound
from shared.http import json_response, read_json, secret_response, uuid_param
from shared.pagination import next_cursor, page_params

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


async def list_tenants(request: web.Request) -> web.Response:
    require_operator(request)
    after, limit = page_params(request)
    async with request.app[POOL].acquire() as conn:
        tenants = await queries.tenants.list_tenants(conn, after=after, limit=limit)
    return json_response(TenantPage(items=tenants, next_cursor=next_cursor(tenants, limit)))


async def issue_client(request: web.Request) -> web.Response:
    """A new ``admin`` client for the tenant, registered by the operator; its secret shown once."""
    require_operator(request)
    tenant_id = uuid_param(request)
    client_id = "cli_" + uuid.uuid4().hex
    client_secret = new_secret("cs_")
    async with request.app[POOL].acquire() as conn, conn.transaction():
        if not await queries.tenants.tenant_exists(conn, tenant_id):
            raise NotFound("no such tenant")
        await queries.clients.insert_client(
            conn, client_id=client_id, tenant_id=tenant_id, secret_hash=secret_hash(client_secret)
        )
        await audit.record(request, conn, tenant_id, audit.OPERATOR, "client.registered", client_id)
    log.info("client_issued", tenant_id=str(tenant_id), client_id=client_id)
    return secret_response(ClientCredentials(client_id=client_id, client_secret=client_secret), status=201)

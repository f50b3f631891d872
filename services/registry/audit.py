"""The admin audit trail: every change to a tenant's data, with who made it, when and from where,
written in the change's own transaction and listed per tenant (``GET /v1/audit``).

Part of the service's core: every feature that changes data calls ``record``."""

from __future__ import annotations

import uuid

from aiohttp import web

from services.registry import queries
from services.registry.models import AdminAuditPage
from shared.app_keys import SETTINGS
from shared.auth import tenant_of
from shared.db import POOL, Connection
from shared.http import client_address, json_response
from shared.pagination import before_query, next_before, page_limit

OPERATOR = "operator"


async def record(
    request: web.Request,
    conn: Connection,
    tenant_id: uuid.UUID,
    who: str,
    action: str,
    resource_id: object,
) -> None:
    await queries.audit.add_audit(
        conn,
        tenant_id,
        actor=who,
        action=action,
        resource_id=resource_id,
        client_address=client_address(request, request.app[SETTINGS].trusted_proxies),
    )


async def list_audit(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    limit = page_limit(request)
    before = before_query(request)
    async with request.app[POOL].acquire() as conn:
        entries = await queries.audit.list_audit(conn, tenant_id, before=before, limit=limit)
    return json_response(AdminAuditPage(items=entries, next_before=next_before(entries, limit)))

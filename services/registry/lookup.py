"""What every ``GET …/{id}`` of registry does: read one of the caller's tenant's resources by the
path's id and answer with it (401 without an access token; 404 for an unknown id or another
tenant's, which the query's tenant condition makes the same)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from shared.auth import tenant_of
from shared.db import POOL, Connection
from shared.http import json_response, uuid_param

# A query reading one resource of a tenant by id: (conn, tenant_id, id), raising NotFound.
TenantRead = Callable[[Connection, uuid.UUID, uuid.UUID], Awaitable[msgspec.Struct]]


async def by_path_id(request: web.Request, read: TenantRead) -> web.Response:
    tenant_id = tenant_of(request)
    async with request.app[POOL].acquire() as conn:
        found = await read(conn, tenant_id, uuid_param(request))
    return json_response(found)

"""Files devices download by name (content download: firmware, media).

A tenant admin puts a file under a name, for all of its screens or only some; devices fetch it
from the gateway (``GET /v1/device/content/{name}``, with ETags and ranges), each seeing only
its tenant's files meant for its screen. Files live in a JetStream object store (replicated like
the streams), with what the gateway needs to decide kept beside each (``DeviceFileMeta``)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec
import nats.js.errors
import structlog
from aiohttp import web
from nats.js import api

from services.registry import audit, queries
from services.registry.models import DeviceFile, DeviceFileList
from shared.app_keys import SETTINGS
from shared.auth import principal_of, tenant_of
from shared.bus import FILES
from shared.db import POOL
from shared.errors import BadRequest, ErrorDetail, NotFound
from shared.http import json_response, read_limited
from shared.projections import (
    DeviceFileMeta,
    device_file_etag,
    device_file_meta,
    device_file_object,
    is_device_file_name,
)

log = structlog.get_logger()


def file_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not is_device_file_name(name):
        raise BadRequest(
            "a file name is 1-200 of A-Z a-z 0-9 . _ - (not starting with . _ -)",
            details=[ErrorDetail("name", "pattern")],
        )
    return name


async def put_file(request: web.Request) -> web.Response:
    """The body is the file, stored as sent (its Content-Type kept; never empty); ``?screenId=``
    (repeatable) limits it to those screens."""
    principal = principal_of(request)
    tenant_id = principal.tenant_id
    name = file_name(request)
    screen_ids = _screen_ids(request)
    if screen_ids:
        async with request.app[POOL].acquire() as conn:
            if not await queries.screens.screens_of_tenant(conn, tenant_id, screen_ids):
                raise NotFound("no such screen")
    data = await read_limited(request, request.app[SETTINGS].max_file_bytes, "MAX_FILE_BYTES")
    if not data:  # most likely a client that lost its file on the way, not a wish to store nothing
        raise BadRequest(
            "the body is empty: send the file's bytes as the body",
            details=[ErrorDetail("", "required")],
        )
    meta = DeviceFileMeta(
        content_type=request.content_type or "application/octet-stream", screen_ids=screen_ids
    )
    store = request.app[FILES]
    info = await store.put(
        device_file_object(tenant_id, name),
        data,
        meta=api.ObjectMeta(description=msgspec.json.encode(meta).decode()),
    )
    async with request.app[POOL].acquire() as conn:
        await audit.record(request, conn, tenant_id, principal.actor, "file.stored", name)
    log.info("device_file_stored", name=name, size=info.size)
    return json_response(_view(name, info, meta))


def _screen_ids(request: web.Request) -> tuple[uuid.UUID, ...]:
    try:
        return tuple(dict.fromkeys(uuid.UUID(raw) for raw in request.query.getall("screenId", [])))
    except ValueError:
        raise BadRequest("screenId must be a UUID", details=[ErrorDetail("screenId", "format")]) from None


def _view(name: str, info: api.ObjectInfo, meta: DeviceFileMeta) -> DeviceFile:
    return DeviceFile(
        name=name,
        size=info.size or 0,
        etag=device_file_etag(info.digest),
        content_type=meta.content_type,
        screen_ids=list(meta.screen_ids),
        # The store's mtime is an RFC 3339 string (any offset, up to nanoseconds): ours is UTC "Z".
        updated_at=msgspec.convert(info.mtime, datetime).astimezone(UTC) if info.mtime else None,
    )


async def list_files(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    store = request.app[FILES]
    prefix = f"{tenant_id}/"
    try:
        objects = await store.list()
    except nats.js.errors.NotFoundError:  # an empty store says so
        objects = []
    files = [
        _view(info.name.removeprefix(prefix), info, device_file_meta(info.description))
        for info in objects
        if info.name.startswith(prefix) and not info.deleted
    ]
    return json_response(DeviceFileList(items=sorted(files, key=lambda f: f.name)))


async def delete_file(request: web.Request) -> web.Response:
    principal = principal_of(request)
    tenant_id = principal.tenant_id
    name = file_name(request)
    store = request.app[FILES]
    try:
        await store.delete(device_file_object(tenant_id, name))
    except (
        nats.js.errors.ObjectNotFoundError,
        nats.js.errors.ObjectDeletedError,
        nats.js.errors.NotFoundError,
    ):
        raise NotFound("no such file") from None
    async with request.app[POOL].acquire() as conn:
        await audit.record(request, conn, tenant_id, principal.actor, "file.deleted", name)
    log.info("device_file_deleted", name=name)
    return web.Response(status=204)

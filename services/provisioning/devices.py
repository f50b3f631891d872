"""Devices as a tenant's admins manage them: list, read, revoke, and their audit trails; and a TV
signing itself out with its own key."""

from __future__ import annotations

import msgspec
import structlog
from aiohttp import web

from services.provisioning import binding, queries
from services.provisioning.models import AuditPage, AuditTrail, DevicePage, Revocation, Revoked
from shared.app_keys import SETTINGS
from shared.auth import bearer_token, principal_of, tenant_of
from shared.db import POOL
from shared.errors import Conflict, DeviceRevoked, Unauthorized
from shared.events import DEVICE_LOGOUT_REASON
from shared.http import client_address, json_response, read_json, uuid_param
from shared.pagination import (
    before_query,
    choice_query,
    next_before,
    next_cursor,
    page_limit,
    page_params,
    uuid_query,
)
from shared.projections import device_key_digest

log = structlog.get_logger()

_revocation = msgspec.json.Decoder(Revocation)


async def list_devices(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    after, limit = page_params(request)
    screen_id = uuid_query(request, "screenId")
    status = choice_query(request, "status", ("active", "suspended"))
    async with request.app[POOL].acquire() as conn:
        devices = await queries.devices.list_devices(
            conn, tenant_id, screen_id=screen_id, status=status, after=after, limit=limit
        )
    return json_response(
        DevicePage(items=devices, next_cursor=next_cursor(devices, limit, sorted_by="registered_at"))
    )


async def get_device(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    async with request.app[POOL].acquire() as conn:
        device = await queries.devices.get_device(conn, tenant_id, uuid_param(request))
    return json_response(device)


async def revoke_device(request: web.Request) -> web.Response:
    """Suspend a device: its keys stop working on every gateway; its screen can be paired again."""
    principal = principal_of(request)
    device_id = uuid_param(request)
    body = await read_json(request, _revocation) if request.body_exists else Revocation()
    address = client_address(request, request.app[SETTINGS].trusted_proxies)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        device = await queries.devices.lock_device(conn, principal.tenant_id, device_id)
        if device.status != "active":
            raise Conflict("the device is already suspended")
        await queries.screens.lock_screen(conn, device.screen_id)
        revoked_at = await binding.unbind(
            conn, device, reason=body.reason, method="revoke", actor=principal.actor, client_address=address
        )
    log.info("device_revoked", device_id=str(device_id), screen_id=str(device.screen_id))
    return json_response(
        Revoked(
            id=device_id,
            status="suspended",
            screen_id=device.screen_id,
            revoked_at=revoked_at,
            reason=body.reason,
        )
    )


async def logout_device(request: web.Request) -> web.Response:
    """A TV signs itself out with its own key: unbound as by a revoke, reason ``device_logout``."""
    token = bearer_token(request)
    if not token.startswith("dak_"):
        raise Unauthorized("send Authorization: Bearer <device key>")
    address = client_address(request, request.app[SETTINGS].trusted_proxies)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        found = await queries.devices.lock_device_by_key(conn, device_key_digest(token))
        if found is None:
            raise Unauthorized("unknown device key")
        device, key_active = found
        if not key_active or device.status != "active":
            raise DeviceRevoked("this device key was revoked; pair the screen again")
        await queries.screens.lock_screen(conn, device.screen_id)
        revoked_at = await binding.unbind(
            conn,
            device,
            reason=DEVICE_LOGOUT_REASON,
            method="logout",
            actor=binding.device_actor(device.id),
            client_address=address,
        )
    log.info("device_logged_out", device_id=str(device.id), screen_id=str(device.screen_id))
    return json_response(
        Revoked(
            id=device.id,
            status="suspended",
            screen_id=device.screen_id,
            revoked_at=revoked_at,
            reason=DEVICE_LOGOUT_REASON,
        )
    )


async def device_audit(request: web.Request) -> web.Response:
    """Every bind, unbind and recovery of a device: who, how, when and from where."""
    tenant_id = tenant_of(request)
    device_id = uuid_param(request)
    async with request.app[POOL].acquire() as conn:
        await queries.devices.get_device(conn, tenant_id, device_id)  # another tenant's device is 404
        entries = await queries.audit.audit_trail(conn, tenant_id, device_id)
    return json_response(AuditTrail(items=entries))


async def tenant_audit(request: web.Request) -> web.Response:
    """Every bind, unbind and recovery of the tenant's devices, newest first."""
    tenant_id = tenant_of(request)
    limit = page_limit(request)
    before = before_query(request)
    async with request.app[POOL].acquire() as conn:
        entries = await queries.audit.tenant_audit_trail(conn, tenant_id, before=before, limit=limit)
    return json_response(AuditPage(items=entries, next_before=next_before(entries, limit)))

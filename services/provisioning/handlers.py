"""Provisioning's HTTP handlers of screen-first binding (pairing codes): codes, registration, devices,
revoke, a device's logout and audit trail. The other ways of binding have a module each."""

from __future__ import annotations

import re
import uuid

import aiohttp
import asyncpg
import msgspec
import structlog
from aiohttp import web

from services.provisioning import binding, queries
from services.provisioning.attempts import counted_attempt
from services.provisioning.models import (
    PAIRING_CODE_PATTERN,
    AuditPage,
    AuditTrail,
    CodeCreated,
    DevicePage,
    NewCode,
    Registered,
    Registration,
    Revocation,
    Revoked,
)
from shared.auth import Principal, bearer_token, principal_of, secret_hash, tenant_of
from shared.db import POOL
from shared.errors import (
    BadRequest,
    CodeExpired,
    Conflict,
    DeviceRevoked,
    ErrorDetail,
    NotFound,
    Unauthorized,
)
from shared.pagination import (
    before_query,
    choice_query,
    next_before,
    next_cursor,
    page_limit,
    page_params,
    uuid_query,
)
from shared.web import HTTP, SETTINGS, client_address, json_response, read_json, uuid_param

log = structlog.get_logger()

_new_code_body = msgspec.json.Decoder(NewCode)
_registration = msgspec.json.Decoder(Registration)
_revocation = msgspec.json.Decoder(Revocation)
_code_pattern = re.compile(PAIRING_CODE_PATTERN)
# The revoke reason of a device that signed itself out (API: POST /v1/device/logout).
LOGOUT_REASON = "device_logout"


# ---- provisioning codes -----------------------------------------------------------------------


async def create_code(request: web.Request) -> web.Response:
    """A pairing code for a screen in provisioning; it supersedes the screen's pending code."""
    tenant_id = tenant_of(request)
    body = await read_json(request, _new_code_body)
    await known_screen(request, tenant_id, body.screen_id)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        screen = await queries.lock_screen(conn, body.screen_id, tenant_id=tenant_id)
        if screen is None:
            raise NotFound("no such screen")
        if await queries.screen_has_active_device(conn, screen.id):
            raise Conflict("the screen is not in provisioning: revoke its device first")
        await queries.supersede_pending_codes(conn, screen.id)
        code = await queries.insert_code(
            conn, tenant_id=tenant_id, screen_id=screen.id, ttl_seconds=request.app[SETTINGS].code_ttl_seconds
        )
    log.info("provisioning_code_created", screen_id=str(body.screen_id))
    return json_response(
        CodeCreated(
            code=code["code"],
            screen_id=body.screen_id,
            tenant_id=tenant_id,
            status="pending",
            expires_at=code["expires_at"],
        ),
        status=201,
    )


async def known_screen(request: web.Request, tenant_id: uuid.UUID, screen_id: uuid.UUID) -> None:
    """404 unless the tenant has this screen: in our copy of screens, or — created a moment ago,
    its event not here yet — at registry."""
    async with request.app[POOL].acquire() as conn:
        if await queries.screen_exists(conn, screen_id, tenant_id):
            return
    if not await _learn_screen_from_registry(request, screen_id, tenant_id):
        raise NotFound("no such screen")


async def _learn_screen_from_registry(
    request: web.Request, screen_id: uuid.UUID, tenant_id: uuid.UUID
) -> bool:
    """Ask registry about a screen our event copy lacks (created a moment ago).

    Registry answers with the caller's own access token, so tenant isolation is registry's as for
    any admin call. The event, when it lands, brings the screen's config (our copy has version 0).
    """
    url = f"{request.app[SETTINGS].registry_url}/v1/screens/{screen_id}"
    headers = {"Authorization": request.headers["Authorization"]}
    try:
        async with request.app[HTTP].get(url, headers=headers) as response:
            if response.status != 200:
                return False
    except (aiohttp.ClientError, TimeoutError):
        log.warning("registry_unreachable", screen_id=str(screen_id))
        return False
    async with request.app[POOL].acquire() as conn:
        await queries.insert_screen_seen_at_registry(conn, screen_id, tenant_id)
    return True


async def get_code_status(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    code = request.match_info["code"]
    if not _code_pattern.match(code):
        raise BadRequest("code must be 8 characters A-Z or 0-9", details=[ErrorDetail("code", "pattern")])
    async with request.app[POOL].acquire() as conn:
        status = await queries.get_code_status(conn, tenant_id, code)
    return json_response(status)


# ---- registration -----------------------------------------------------------------------------


async def register_device(request: web.Request) -> web.Response:
    """A TV trades a pairing code for its device key; the whole bind is one transaction."""
    registered = await counted_attempt(request, _registration, _register)
    log.info(
        "device_registered",
        device_id=str(registered.device_id),
        screen_id=str(registered.screen_id),
        tenant_id=str(registered.tenant_id),
    )
    return json_response(registered, status=201)


async def _register(conn: asyncpg.Connection, body: Registration, address: str) -> Registered:
    async with conn.transaction():
        screen = await queries.lock_code_screen(conn, body.pairing_code)
        if screen is None:
            raise NotFound("no such pairing code")
        code = await queries.lock_code(conn, body.pairing_code)
        if code.status == "superseded":
            raise CodeExpired("this code was superseded by a newer one; use the newest code")
        if code.status != "pending":
            raise Conflict("this code was already used")
        if code.expired:
            raise CodeExpired("this code expired; generate a new one")
        return await binding.bind(
            conn,
            screen,
            body.device_info,
            method="code",
            actor="device",
            client_address=address,
            code=code.code,
        )


# ---- devices ----------------------------------------------------------------------------------


async def list_devices(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    after, limit = page_params(request)
    screen_id = uuid_query(request, "screenId")
    status = choice_query(request, "status", ("active", "suspended"))
    async with request.app[POOL].acquire() as conn:
        devices = await queries.list_devices(
            conn, tenant_id, screen_id=screen_id, status=status, after=after, limit=limit
        )
    return json_response(
        DevicePage(items=devices, next_cursor=next_cursor(devices, limit, sorted_by="registered_at"))
    )


async def get_device(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    async with request.app[POOL].acquire() as conn:
        device = await queries.get_device(conn, tenant_id, uuid_param(request))
    return json_response(device)


async def revoke_device(request: web.Request) -> web.Response:
    """Suspend a device: its keys stop working on every gateway; its screen can be paired again."""
    principal = principal_of(request)
    device_id = uuid_param(request)
    body = await read_json(request, _revocation) if request.body_exists else Revocation()
    address = client_address(request, request.app[SETTINGS].trusted_proxies)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        device = await queries.lock_device(conn, principal.tenant_id, device_id)
        if device.status != "active":
            raise Conflict("the device is already suspended")
        await queries.lock_screen(conn, device.screen_id)
        revoked_at = await binding.unbind(
            conn,
            device,
            reason=body.reason,
            method="revoke",
            actor=client_actor(principal),
            client_address=address,
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


async def device_audit(request: web.Request) -> web.Response:
    """Every bind, unbind and recovery of a device: who, how, when and from where."""
    tenant_id = tenant_of(request)
    device_id = uuid_param(request)
    async with request.app[POOL].acquire() as conn:
        await queries.get_device(conn, tenant_id, device_id)  # another tenant's device is 404
        entries = await queries.audit_trail(conn, tenant_id, device_id)
    return json_response(AuditTrail(items=entries))


async def tenant_audit(request: web.Request) -> web.Response:
    """Every bind, unbind and recovery of the tenant's devices, newest first."""
    tenant_id = tenant_of(request)
    limit = page_limit(request)
    before = before_query(request)
    async with request.app[POOL].acquire() as conn:
        entries = await queries.tenant_audit_trail(conn, tenant_id, before=before, limit=limit)
    return json_response(AuditPage(items=entries, next_before=next_before(entries, limit)))


def client_actor(principal: Principal) -> str:
    """The audit trail's name for a tenant admin: the API client that called."""
    return f"client:{principal.client_id}"


async def logout_device(request: web.Request) -> web.Response:
    """A TV signs itself out with its own key: unbound as by a revoke, reason ``device_logout``."""
    token = bearer_token(request)
    if not token.startswith("dak_"):
        raise Unauthorized("send Authorization: Bearer <device key>")
    address = client_address(request, request.app[SETTINGS].trusted_proxies)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        found = await queries.lock_device_by_key(conn, secret_hash(token))
        if found is None:
            raise Unauthorized("unknown device key")
        device, key_active = found
        if not key_active or device.status != "active":
            raise DeviceRevoked("this device key was revoked; pair the screen again")
        await queries.lock_screen(conn, device.screen_id)
        revoked_at = await binding.unbind(
            conn,
            device,
            reason=LOGOUT_REASON,
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
            reason=LOGOUT_REASON,
        )
    )

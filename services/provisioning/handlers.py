"""Provisioning's HTTP handlers: codes, device registration, devices and revoke."""

from __future__ import annotations

import re
import uuid

import aiohttp
import asyncpg
import msgspec
import structlog
from aiohttp import web

from services.provisioning import queries
from services.provisioning.models import (
    PAIRING_CODE_PATTERN,
    CodeCreated,
    DevicePage,
    NewCode,
    Registered,
    Registration,
    Revocation,
    Revoked,
)
from shared import outbox
from shared.auth import new_secret, secret_hash, tenant_of
from shared.db import POOL
from shared.errors import BadRequest, CodeExpired, Conflict, ErrorDetail, NotFound, RateLimited, ServiceError
from shared.events import DeviceBound, DeviceRevoked
from shared.pagination import choice_query, next_cursor, page_params, uuid_query
from shared.projections import DEVICE_KEYS_BUCKET, DeviceKeyEntry
from shared.web import SETTINGS, client_address, json_response, read_json, uuid_param

log = structlog.get_logger()

HTTP = web.AppKey("HTTP", aiohttp.ClientSession)

_new_code_body = msgspec.json.Decoder(NewCode)
_registration = msgspec.json.Decoder(Registration)
_revocation = msgspec.json.Decoder(Revocation)
_code_pattern = re.compile(PAIRING_CODE_PATTERN)


# ---- provisioning codes -----------------------------------------------------------------------


async def create_code(request: web.Request) -> web.Response:
    """A pairing code for a screen in provisioning; it supersedes the screen's pending code."""
    tenant_id = tenant_of(request)
    body = await read_json(request, _new_code_body)
    code = await _new_code(request, tenant_id, body.screen_id)
    if code is None and await _learn_screen_from_registry(request, body.screen_id, tenant_id):
        code = await _new_code(request, tenant_id, body.screen_id)
    if code is None:
        raise NotFound("no such screen")
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


async def _new_code(
    request: web.Request, tenant_id: uuid.UUID, screen_id: uuid.UUID
) -> asyncpg.Record | None:
    """None when our copy of screens does not know the screen (yet)."""
    async with request.app[POOL].acquire() as conn, conn.transaction():
        screen = await queries.lock_screen(conn, screen_id, tenant_id=tenant_id)
        if screen is None:
            return None
        if await queries.screen_has_active_device(conn, screen.id):
            raise Conflict("the screen is not in provisioning: revoke its device first")
        await queries.supersede_pending_codes(conn, screen.id)
        return await queries.insert_code(
            conn,
            tenant_id=tenant_id,
            screen_id=screen.id,
            ttl_seconds=request.app[SETTINGS].code_ttl_seconds,
        )


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
        raise BadRequest(
            "code must be 8 characters A-Z or 0-9", details=[ErrorDetail("code", "pattern")]
        )
    async with request.app[POOL].acquire() as conn:
        status = await queries.get_code_status(conn, tenant_id, code)
    return json_response(status)


# ---- registration -----------------------------------------------------------------------------


async def register_device(request: web.Request) -> web.Response:
    """A TV trades a pairing code for its device key; the whole bind is one transaction."""
    settings = request.app[SETTINGS]
    address = client_address(request, settings.trusted_proxies)
    # The body is read before a connection is taken: a slow client must not hold one.
    body: Registration | ServiceError
    try:
        body = await read_json(request, _registration)
    except ServiceError as exc:
        body = exc
    async with request.app[POOL].acquire() as conn:
        failures, remaining = await queries.failures_in_window(
            conn, address, settings.register_failure_window_seconds
        )
        if failures >= settings.register_failures_per_window:
            raise RateLimited("too many failed registrations from this address", retry_after=remaining)
        try:
            if isinstance(body, ServiceError):
                raise body  # a malformed registration counts as a failed one
            registered = await _bind(conn, body, address)
        except ServiceError:
            await queries.record_failure(conn, address, settings.register_failure_window_seconds)
            raise
    log.info(
        "device_registered",
        device_id=str(registered.device_id),
        screen_id=str(registered.screen_id),
        tenant_id=str(registered.tenant_id),
    )
    return json_response(registered, status=201)


async def _bind(conn: asyncpg.Connection, body: Registration, address: str) -> Registered:
    api_key = new_secret("dak_")
    key_hash = secret_hash(api_key)
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
        device, binding_seq = await queries.bind_device(
            conn,
            code=code.code,
            tenant_id=code.tenant_id,
            screen_id=screen.id,
            key_hash=key_hash,
            device_info=body.device_info,
            registered_from=address,
        )
        await outbox.put_kv(
            conn,
            DEVICE_KEYS_BUCKET,
            key_hash.hex(),
            DeviceKeyEntry(
                device_id=device.id, screen_id=screen.id, tenant_id=code.tenant_id, status="active"
            ),
        )
        await outbox.add_event(
            conn,
            DeviceBound(
                tenant_id=code.tenant_id,
                device_id=device.id,
                screen_id=screen.id,
                binding_seq=binding_seq,
                bound_at=device.registered_at,
            ),
        )
    return Registered(
        device_id=device.id,
        screen_id=screen.id,
        api_key=api_key,
        tenant_id=code.tenant_id,
        config=screen.config,
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
    tenant_id = tenant_of(request)
    device_id = uuid_param(request)
    body = await read_json(request, _revocation) if request.body_exists else Revocation()
    async with request.app[POOL].acquire() as conn, conn.transaction():
        device = await queries.lock_device(conn, tenant_id, device_id)
        if device.status != "active":
            raise Conflict("the device is already suspended")
        await queries.lock_screen(conn, device.screen_id)
        revoked_at = await queries.suspend_device(conn, device_id, body.reason)
        for key_hash in await queries.revoke_keys(conn, device_id):
            await outbox.put_kv(
                conn,
                DEVICE_KEYS_BUCKET,
                key_hash.hex(),
                DeviceKeyEntry(
                    device_id=device_id, screen_id=device.screen_id, tenant_id=tenant_id, status="revoked"
                ),
            )
        binding_seq = await queries.next_binding_seq(conn, device.screen_id)
        await outbox.add_event(
            conn,
            DeviceRevoked(
                tenant_id=tenant_id,
                device_id=device_id,
                screen_id=device.screen_id,
                binding_seq=binding_seq,
                reason=body.reason,
                revoked_at=revoked_at,
            ),
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

"""Pre-provisioned devices and claim mode.

The installation's operator makes device identities ahead — an id and a ``dak_`` key each, shown
once, for factory flashing. Such a device belongs to no tenant. When it is set up, it turns its
claim mode on for a bounded time with its own key and id (another id is refused:
``MATCHING_DEVICE_ONLY``) and shows the claim code it got; a tenant admin claims it onto a screen
with that code. The device is then bound as every device is, with the id and key it was flashed
with: its next poll works.
"""

from __future__ import annotations

import uuid

import msgspec
import structlog
from aiohttp import web

from services.provisioning import attempts, binding, queries
from services.provisioning.models import (
    Claim,
    ClaimMode,
    ClaimModeRequest,
    FactoryDevice,
    FactoryDevices,
    NewFactoryDevices,
)
from services.provisioning.queries.codes import new_code
from services.provisioning.screens import known_screen, lock_free_screen
from shared.app_keys import SETTINGS
from shared.auth import bearer_token, new_secret, principal_of, require_operator, secret_hash
from shared.db import POOL
from shared.errors import Conflict, Forbidden, NotFound, ServiceError, Unauthorized
from shared.http import client_address, json_response, read_json, secret_response
from shared.projections import device_key_digest

log = structlog.get_logger()

_new_factory_devices = msgspec.json.Decoder(NewFactoryDevices)
_claim_mode = msgspec.json.Decoder(ClaimModeRequest)
_claim = msgspec.json.Decoder(Claim)


async def create_factory_devices(request: web.Request) -> web.Response:
    """Operator only: ids and keys for devices that are not made yet."""
    require_operator(request)
    body = await read_json(request, _new_factory_devices)
    made = [FactoryDevice(device_id=uuid.uuid4(), api_key=new_secret("dak_")) for _ in range(body.count)]
    async with request.app[POOL].acquire() as conn:
        await queries.claims.insert_factory_devices(
            conn, [(d.device_id, device_key_digest(d.api_key)) for d in made]
        )
    log.info("factory_devices_created", count=body.count)
    return secret_response(FactoryDevices(items=made), status=201)


async def open_claim_mode(request: web.Request) -> web.Response:
    """The device, with its own key, asks to be claimable for a while."""
    key = bearer_token(request)
    if not key.startswith("dak_"):
        raise Unauthorized("send Authorization: Bearer <device key>")
    # The body is read before a connection is taken; its errors wait until the key is known
    # (an unknown key is 401 whatever it sends).
    body: ClaimModeRequest | ServiceError
    try:
        body = await read_json(request, _claim_mode)
    except ServiceError as exc:
        body = exc
    address = client_address(request, request.app[SETTINGS].trusted_proxies)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        device = await queries.claims.lock_factory_device_by_key(conn, device_key_digest(key))
        if device is None:
            raise Unauthorized("unknown device key (claim mode is for pre-provisioned devices)")
        if isinstance(body, ServiceError):
            raise body
        if body.device_id != device.id:
            raise Forbidden("a device can open claim mode only for itself", reason="MATCHING_DEVICE_ONLY")
        if device.claimed:
            raise Conflict("this device was claimed already")
        while True:  # a claim code is drawn as a pairing code is: one alphabet to read off a TV
            code = new_code()
            expires_at = await queries.claims.open_claim_mode(
                conn,
                device.id,
                code_hash=secret_hash(code),
                seconds=body.duration_seconds,
                device_info=body.device_info,
                requested_from=address,
            )
            if expires_at is not None:
                break
    log.info("claim_mode_opened", device_id=str(device.id), seconds=body.duration_seconds)
    return secret_response(ClaimMode(claim_code=code, claim_expiration_time=expires_at))


async def claim_device(request: web.Request) -> web.Response:
    """A tenant admin claims a device in claim mode onto a screen. Claim codes are guessable:
    failed claims count against the tenant."""
    principal = principal_of(request)
    body = await read_json(request, _claim)
    await known_screen(request, principal.tenant_id, body.screen_id)
    async with (
        attempts.limited(request, attempts.CLAIM_CODE, attempts.of_tenant(principal.tenant_id)) as conn,
        conn.transaction(),
    ):
        screen = await lock_free_screen(conn, principal.tenant_id, body.screen_id)
        factory = await queries.claims.lock_factory_device_by_claim(conn, secret_hash(body.claim_code))
        if factory is None or factory.claimed:
            raise NotFound("no device is in claim mode with this code (it may have expired)")
        device = await binding.bind_claimed(
            conn,
            screen,
            factory.device_info,
            device_id=factory.id,
            key_hash=factory.key_hash,
            actor=principal.actor,
            client_address=factory.claim_requested_from,
        )
        await queries.claims.mark_claimed(conn, factory.id)
    log.info("device_claimed", device_id=str(device.id), screen_id=str(device.screen_id))
    return json_response(device, status=201)

"""Factory-reset recovery, with a proof: a TV that reported a ``hardwareId`` at its bind got a
recovery secret; with both it gets a fresh key for the same device and screen.

A hardware id alone never does: it is printed on the box and guessable. The two ways back are
this secret, or a new pairing code (or provisioning token) for the screen the hardware was bound
to, which returns the same ``deviceId`` (``binding.bind``).

Each recovery answers with a new recovery secret and the one presented dies: a secret copied off a
TV works once at most, and replaying it later can no longer take the device's key away."""

from __future__ import annotations

import msgspec
import structlog
from aiohttp import web

from services.provisioning import attempts, binding, queries
from services.provisioning.models import Recovery, Registered
from shared.auth import new_secret, secret_hash
from shared.errors import Unauthorized
from shared.http import secret_response

log = structlog.get_logger()

_recovery = msgspec.json.Decoder(Recovery)


async def recover_device(request: web.Request) -> web.Response:
    async with (
        attempts.by_tv(request, attempts.RECOVERY_SECRET, _recovery) as (conn, body, address),
        conn.transaction(),
    ):
        device = await queries.recovery.lock_device_by_recovery_secret(
            conn, secret_hash(body.recovery_secret), body.hardware_id
        )
        # One answer for every failure: which part was wrong is not the caller's to learn.
        if device is None or device.status != "active":
            raise Unauthorized("unknown hardware id or recovery secret, or the device was revoked")
        screen = await queries.screens.lock_screen(conn, device.screen_id)
        assert screen is not None  # a device's screen row is never deleted
        api_key = await binding.replace_key(conn, device, client_address=address)
        recovery_secret = new_secret("drs_")
        await queries.recovery.replace_recovery_secret(conn, device.id, secret_hash(recovery_secret))
    log.info("device_recovered", device_id=str(device.id), screen_id=str(device.screen_id))
    return secret_response(
        Registered(
            device_id=device.id,
            screen_id=device.screen_id,
            api_key=api_key,
            tenant_id=device.tenant_id,
            config=screen.config,
            recovery_secret=recovery_secret,
        )
    )

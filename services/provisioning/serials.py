"""Serial numbers registered ahead.

A tenant uploads the serial numbers of the devices it bought, each for one of its screens (JSON or
CSV, in bulk; uploading the same list again changes nothing). Enabling a serial opens its
activation window; a device presents its serial inside the window and gets its id and ``dak_``
key, bound to that screen. Once: presenting an activated serial again is refused and raises an
alert (``provisioning.alert.activation_repeated`` on the bus), since one serial is one device.
After the window closes the serial must be enabled again. Serials belong to the tenant and point
at a screen (not at a vendor's model), so activation binds as every flow does."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import re
import uuid

import msgspec
import prometheus_client
import structlog
from aiohttp import web

from services.provisioning import attempts, binding, queries
from services.provisioning.models import (
    SERIAL_PATTERN,
    Activation,
    Enablement,
    SerialPage,
    SerialsUploaded,
    SerialUpload,
)
from services.provisioning.queries.serials import LockedSerial, SerialOwner
from services.provisioning.screens import known_screen
from shared import errors, outbox
from shared.auth import tenant_of
from shared.db import POOL, Connection
from shared.errors import BadRequest, CodeExpired, Conflict, ErrorDetail, NotFound
from shared.events import ActivationRepeated
from shared.http import json_response, read_json, read_limited
from shared.pagination import choice_query, page_limit

log = structlog.get_logger()

ALERTS = prometheus_client.Counter(
    "provisioning_alerts_total", "Alerts raised by provisioning (also events on the bus)", ["kind"]
)

_upload = msgspec.json.Decoder(SerialUpload)
_enablement = msgspec.json.Decoder(Enablement)
_activation = msgspec.json.Decoder(Activation)
_serial_pattern = re.compile(SERIAL_PATTERN)
MAX_CSV_BYTES = 1024 * 1024  # ~25,000 lines; the JSON body's limit is MAX_BODY_BYTES


async def upload_serials(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    upload = await _read_upload(request)
    rows = {row.serial: row.screen_id for row in upload.serials}
    if len(rows) != len(upload.serials):
        raise BadRequest("a serial is listed twice", details=[ErrorDetail("serials", "duplicate")])
    for screen_id in set(rows.values()):
        await known_screen(request, tenant_id, screen_id)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        refused = [
            ErrorDetail(f"serials[{list(rows).index(owner.serial)}].serial", problem)
            for owner in await queries.serials.lock_serials(conn, list(rows))
            if (problem := _refusal(owner, tenant_id, rows[owner.serial])) is not None
        ]
        if refused:
            raise Conflict("some serials cannot be registered (see details)", details=refused)
        created, updated = await queries.serials.upsert_serials(conn, tenant_id, list(rows.items()))
    log.info("serials_uploaded", created=created, updated=updated)
    return json_response(
        SerialsUploaded(created=created, updated=updated, unchanged=len(rows) - created - updated)
    )


def _refusal(owner: SerialOwner, tenant_id: uuid.UUID, screen_id: uuid.UUID) -> str | None:
    if owner.tenant_id != tenant_id:
        return "registered_elsewhere"
    if owner.activated and owner.screen_id != screen_id:
        return "activated"  # its device is bound to the old screen: revoke it, don't move the serial
    return None


async def _read_upload(request: web.Request) -> SerialUpload:
    """JSON ``{"serials": [{"serial", "screenId"}]}``, or CSV lines ``serial,screenId`` (a header
    line naming them is allowed)."""
    if request.content_type != "text/csv":
        return await read_json(request, _upload)
    raw = await read_limited(request, MAX_CSV_BYTES, "a CSV upload's limit")
    try:
        lines = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadRequest(f"not UTF-8 CSV: {exc}") from None
    lines = [line for line in lines if any(cell.strip() for cell in line)]
    if lines and [cell.strip() for cell in lines[0]] == ["serial", "screenId"]:
        lines = lines[1:]
    # A line of one cell lacks its screenId (the decoder names it); cells past the second are ignored.
    data = {
        "serials": [
            dict(zip(("serial", "screenId"), (cell.strip() for cell in line), strict=False)) for line in lines
        ]
    }
    try:
        return msgspec.convert(data, SerialUpload)
    except msgspec.ValidationError:
        raise errors.invalid_body(SerialUpload, data) from None


async def list_serials(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    limit = page_limit(request)
    status = choice_query(request, "status", ("registered", "enabled", "expired", "activated"))
    after = _cursor(request)
    async with request.app[POOL].acquire() as conn:
        serials = await queries.serials.list_serials(conn, tenant_id, status=status, after=after, limit=limit)
    next_cursor = (
        base64.urlsafe_b64encode(serials[-1].serial.encode()).decode().rstrip("=")
        if len(serials) == limit
        else None
    )
    return json_response(SerialPage(items=serials, next_cursor=next_cursor))


def _cursor(request: web.Request) -> str | None:
    raw = request.query.get("cursor")
    if not raw:
        return None
    try:
        serial = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        serial = ""
    if not _serial_pattern.match(serial):  # a cursor we made holds a serial (never NUL, found by fuzzing)
        raise BadRequest("cursor is not one this API returned", details=[ErrorDetail("cursor", "invalid")])
    return serial


async def enable_serial(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    serial = request.match_info["serial"]
    body = await read_json(request, _enablement) if request.body_exists else Enablement()
    if not _serial_pattern.match(serial):  # no such serial can be stored (nor NUL reach PostgreSQL)
        raise NotFound("no such serial")
    async with request.app[POOL].acquire() as conn:
        enabled = await queries.serials.enable_serial(conn, tenant_id, serial, body.window_minutes)
        if enabled is None:
            if await queries.serials.get_serial(conn, tenant_id, serial) is not None:
                raise Conflict("this serial was activated already")
            raise NotFound("no such serial")
    log.info("serial_enabled", serial=serial, minutes=body.window_minutes)
    return json_response(enabled)


async def activate_device(request: web.Request) -> web.Response:
    """The device presents its serial inside the window and gets its key."""
    async with attempts.by_tv(request, _activation) as (conn, body, address):
        async with conn.transaction():
            screen = await queries.serials.lock_serial_screen(conn, body.serial)
            serial = await queries.serials.lock_serial(conn, body.serial)
            if screen is None or serial is None:
                raise NotFound("no such serial")
            if serial.status == "registered":
                raise Conflict("this serial is not enabled for activation")
            if serial.status == "expired":
                raise CodeExpired("the activation window of this serial closed; it must be enabled again")
            if serial.status == "enabled":
                if await queries.screens.screen_has_active_device(conn, screen.id):
                    raise Conflict("the serial's screen already has an active device")
                registered = await binding.bind(
                    conn, screen, body.device_info, method="serial", actor=None, client_address=address
                )
                await queries.serials.mark_serial_activated(conn, body.serial, registered.device_id)
        if serial.status == "activated":
            await _alert_repeated(conn, serial, address)
            raise Conflict("this serial was activated already")
    log.info("device_activated", device_id=str(registered.device_id), screen_id=str(registered.screen_id))
    return json_response(registered, status=201)


async def _alert_repeated(conn: Connection, serial: LockedSerial, address: str) -> None:
    """A second activation of one serial: its owner hears of it (committed apart from the refusal)."""
    async with conn.transaction():
        await outbox.add_event(
            conn,
            ActivationRepeated(
                tenant_id=serial.tenant_id,
                serial=serial.serial,
                screen_id=serial.screen_id,
                device_id=serial.device_id,
                client_address=address,
            ),
        )
    ALERTS.labels("activation_repeated").inc()
    log.warning("serial_activation_repeated", serial=serial.serial, client_address=address)

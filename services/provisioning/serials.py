"""Serial numbers registered ahead.

Serials are assigned, not claimed. The operator (the vendor, who knows which devices went to
whom) assigns each serial to a tenant (JSON or CSV, in bulk; the same list again changes nothing);
a serial belongs to one tenant, and only an explicit move (``move=true``) gives it to another, as
long as no device activated it. The tenant maps the serials assigned to it to its screens; any
other serial is unknown to it. Enabling a serial opens its activation window; a device presents
its serial inside the window and gets its id and ``dak_`` key, bound to that screen. Once:
presenting an activated serial again is refused and raises an alert
(``provisioning.alert.activation_repeated`` on the bus), since one serial is one device. After
the window closes the serial must be enabled again. To a device, a serial that is unknown, only
assigned, not enabled or out of its window looks the same: activation tells nothing about which
serials exist."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import re
import uuid
from typing import Any, TypeVar

import msgspec
import prometheus_client
import structlog
from aiohttp import web

from services.provisioning import attempts, binding, queries
from services.provisioning.models import (
    SERIAL_PATTERN,
    SERIAL_STATUSES,
    Activation,
    Enablement,
    SerialAssignments,
    SerialPage,
    SerialsAssigned,
    SerialsUploaded,
    SerialUpload,
)
from services.provisioning.queries.serials import LockedSerial, MappedSerial
from services.provisioning.screens import known_screen
from shared import errors, outbox
from shared.auth import require_operator, tenant_of
from shared.db import POOL, Connection
from shared.errors import BadRequest, Conflict, ErrorDetail, NotFound
from shared.events import ActivationRepeated
from shared.http import json_response, read_json, read_limited, secret_response
from shared.pagination import choice_query, page_limit

log = structlog.get_logger()

ALERTS = prometheus_client.Counter(
    "provisioning_alerts_total", "Alerts raised by provisioning (also events on the bus)", ["kind"]
)

_assignments = msgspec.json.Decoder(SerialAssignments)
_upload = msgspec.json.Decoder(SerialUpload)
_enablement = msgspec.json.Decoder(Enablement)
_activation = msgspec.json.Decoder(Activation)
_serial_pattern = re.compile(SERIAL_PATTERN)
MAX_CSV_BYTES = 1024 * 1024  # ~25,000 lines; the JSON body's limit is MAX_BODY_BYTES

# What a device hears for every serial it may not activate now, whether the serial exists or not.
NOT_ACTIVATABLE = "no serial open for activation matches (unknown, not enabled, or its window closed)"

U = TypeVar("U", SerialAssignments, SerialUpload)


async def assign_serials(request: web.Request) -> web.Response:
    """Operator only: assign serials to tenants; ``move=true`` moves those of another tenant."""
    require_operator(request)
    move = choice_query(request, "move", ("true", "false")) == "true"
    body = await _read_rows(request, _assignments, SerialAssignments, "tenantId")
    rows = {row.serial: row.tenant_id for row in body.serials}
    _refuse_duplicates(rows, body.serials)
    index = {serial: i for i, serial in enumerate(rows)}
    async with request.app[POOL].acquire() as conn, conn.transaction():
        assigned, moved = await queries.serials.assign_serials(conn, list(rows.items()), move=move)
        refused = [
            ErrorDetail(
                f"serials[{index[owner.serial]}].serial",
                "activated" if owner.activated and move else "assigned_elsewhere",
            )
            for owner in await queries.serials.assigned_elsewhere(conn, list(rows.items()))
        ]
        if refused:  # the transaction rolls back: nothing of the batch is assigned
            raise Conflict(
                "some serials are assigned to another tenant (move=true moves those no device "
                "activated; see details)",
                details=refused,
            )
    log.info("serials_assigned", assigned=assigned, moved=moved)
    return json_response(
        SerialsAssigned(assigned=assigned, moved=moved, unchanged=len(rows) - assigned - moved)
    )


async def upload_serials(request: web.Request) -> web.Response:
    """The tenant maps serials assigned to it to its screens."""
    tenant_id = tenant_of(request)
    upload = await _read_rows(request, _upload, SerialUpload, "screenId")
    rows = {row.serial: row.screen_id for row in upload.serials}
    _refuse_duplicates(rows, upload.serials)
    for screen_id in set(rows.values()):
        await known_screen(request, tenant_id, screen_id)
    index = {serial: i for i, serial in enumerate(rows)}
    async with request.app[POOL].acquire() as conn, conn.transaction():
        found = {
            row.serial: row for row in await queries.serials.lock_tenant_serials(conn, tenant_id, list(rows))
        }
        unknown = [serial for serial in rows if serial not in found]
        if unknown:  # another tenant's serial is as unknown as one never assigned
            raise NotFound(
                f"no such serial: {unknown[0]}",
                details=[ErrorDetail(f"serials[{index[serial]}].serial", "unknown") for serial in unknown],
            )
        refused = [
            ErrorDetail(f"serials[{index[serial]}].serial", "activated")
            for serial, mapped in found.items()
            if _moves_activated(mapped, rows[serial])
        ]
        if refused:
            raise Conflict("some serials cannot be mapped (see details)", details=refused)
        changed = await queries.serials.map_serials(conn, tenant_id, list(rows.items()))
    created = sum(1 for mapped in found.values() if mapped.screen_id is None)
    updated = changed - created
    log.info("serials_uploaded", created=created, updated=updated)
    return json_response(
        SerialsUploaded(created=created, updated=updated, unchanged=len(rows) - created - updated)
    )


def _moves_activated(mapped: MappedSerial, screen_id: uuid.UUID) -> bool:
    """Its device is bound to the old screen: revoke it, don't move the serial."""
    return mapped.activated and mapped.screen_id != screen_id


def _refuse_duplicates(rows: dict[str, Any], listed: list[Any]) -> None:
    if len(rows) != len(listed):
        raise BadRequest("a serial is listed twice", details=[ErrorDetail("serials", "duplicate")])


async def _read_rows(
    request: web.Request, decoder: msgspec.json.Decoder[U], type_: type[U], column: str
) -> U:
    """JSON ``{"serials": [{"serial", column}]}``, or CSV lines ``serial,column`` (a header line
    naming them is allowed)."""
    if request.content_type != "text/csv":
        return await read_json(request, decoder)
    raw = await read_limited(request, MAX_CSV_BYTES, "a CSV upload's limit")
    try:
        lines = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadRequest(f"not UTF-8 CSV: {exc}") from None
    lines = [line for line in lines if any(cell.strip() for cell in line)]
    if lines and [cell.strip() for cell in lines[0]] == ["serial", column]:
        lines = lines[1:]
    # A line of one cell lacks its second column (the decoder names it); cells past it are ignored.
    data = {
        "serials": [
            dict(zip(("serial", column), (cell.strip() for cell in line), strict=False)) for line in lines
        ]
    }
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError:
        raise errors.invalid_body(type_, data) from None


async def list_serials(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    limit = page_limit(request)
    status = choice_query(request, "status", SERIAL_STATUSES)
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
            found = await queries.serials.get_serial(conn, tenant_id, serial)
            if found is None:
                raise NotFound("no such serial")
            if found.status == "assigned":
                raise Conflict("this serial is not mapped to a screen yet: upload it with one first")
            raise Conflict("this serial was activated already")
    log.info("serial_enabled", serial=serial, minutes=body.window_minutes)
    return json_response(enabled)


async def activate_device(request: web.Request) -> web.Response:
    """The device presents its serial inside the window and gets its key."""
    async with attempts.by_tv(request, attempts.SERIAL, _activation) as (conn, body, address):
        async with conn.transaction():
            screen = await queries.serials.lock_serial_screen(conn, body.serial)
            serial = await queries.serials.lock_serial(conn, body.serial)
            if serial is None or serial.status != "activated":  # an activated one: refused below
                if (
                    screen is None
                    or serial is None
                    or serial.status != "enabled"
                    # moved (and mapped again) between the two locks: the screen is not its own
                    or (serial.screen_id, serial.tenant_id) != (screen.id, screen.tenant_id)
                ):
                    raise NotFound(NOT_ACTIVATABLE)
                if await queries.screens.screen_has_active_device(conn, screen.id):
                    # Answered as any serial that cannot be activated: a different answer would
                    # tell a guesser that this serial exists and is enabled.
                    raise NotFound(NOT_ACTIVATABLE)
                registered = await binding.bind(
                    conn, screen, body.device_info, method="serial", actor=None, client_address=address
                )
                await queries.serials.mark_serial_activated(conn, body.serial, registered.device_id)
        if serial is not None and serial.status == "activated":
            # Kept apart from the answer above: only the device that carries an activated serial
            # knows it, and each such try alerts the serial's tenant (the guesses are limited).
            await _alert_repeated(conn, serial, address)
            raise Conflict("this serial was activated already")
    log.info("device_activated", device_id=str(registered.device_id), screen_id=str(registered.screen_id))
    return secret_response(registered, status=201)


async def _alert_repeated(conn: Connection, serial: LockedSerial, address: str) -> None:
    """A second activation of one serial: its owner hears of it (committed apart from the refusal)."""
    assert serial.screen_id is not None  # the table's check: an activated serial has its screen
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

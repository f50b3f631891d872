"""A remote command's steps: pending (sent) → delivered (the TV was handed it) → succeeded or failed
(its report), or expired (its time to live passed while open) or cancelled (an admin), from
pending or delivered. Each step is an event (``registry.command.*``) and an entry in the audit
trail; a step that opens or closes a command rewrites the screen's ``device-commands`` entry (its
open commands), which is how the gateway learns of them.

The core of the commands feature: the admin's handlers, the consumer of the TV's reports and the
expiry sweep (both here) all step a command through ``record_step`` and ``publish_open``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog
from aiohttp import web

from services.registry import queries
from services.registry.command_models import OPEN_STATUSES, Command
from shared import outbox
from shared.bus import consumer_ctx
from shared.db import POOL, Connection
from shared.errors import NotFound
from shared.events import (
    CommandCancelled,
    CommandCreated,
    CommandDelivered,
    CommandEvent,
    CommandExpired,
    CommandFailed,
    CommandReported,
    CommandSucceeded,
)
from shared.projections import DEVICE_COMMANDS_BUCKET, ScreenCommands
from shared.tasks import background

log = structlog.get_logger()

# The audit trail's actor for what no one did: a command's expiry.
SYSTEM = "system"
# The most of a TV's result kept (the gateway refuses more at its edge; this holds whatever comes).
MAX_MESSAGE_CHARS = 1000
MAX_DATA_BYTES = 16 * 1024
REPORTS_DURABLE = "registry-command-reports"
REPORTS_SUBJECT = "device_commands.*.*"
# How often each replica looks for open commands past their expiry (an indexed look, mostly empty).
EXPIRY_CHECK_SECONDS = 1.0
_EXPIRY_BATCH = 100

_report_decoder = msgspec.json.Decoder(CommandReported)


def device_actor(device_id: uuid.UUID) -> str:
    return f"device:{device_id}"


async def publish_open(conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID) -> None:
    """Queue the screen's ``device-commands`` entry as it now stands in this transaction (the
    caller locked the screen's row first, so entries of one screen leave in commit order)."""
    items = await queries.commands.open_commands(conn, screen_id)
    entry = ScreenCommands(screen_id=screen_id, tenant_id=tenant_id, items=items)
    await outbox.put_kv(conn, DEVICE_COMMANDS_BUCKET, str(screen_id), entry)


async def record_step(
    conn: Connection, tenant_id: uuid.UUID, command: Command, *, actor: str, client_address: str | None
) -> None:
    """The event and the audit entry of the step that left ``command`` in its status."""
    action = "created" if command.status == "pending" else command.status
    await queries.audit.add_audit(
        conn,
        tenant_id,
        actor=actor,
        action=f"command.{action}",
        resource_id=command.id,
        client_address=client_address,
    )
    await outbox.add_event(conn, _event(tenant_id, command))


def _event(tenant_id: uuid.UUID, command: Command) -> CommandEvent:
    of: dict[str, Any] = {
        "tenant_id": tenant_id,
        "screen_id": command.screen_id,
        "command_id": command.id,
        "command_type": command.type,
    }
    match command.status:
        case "pending":
            return CommandCreated(**of, expires_at=command.expires_at)
        case "delivered":
            return CommandDelivered(**of)
        case "succeeded":
            return CommandSucceeded(**of, message=command.message)
        case "failed":
            return CommandFailed(**of, message=command.message)
        case "expired":
            return CommandExpired(**of)
        case "cancelled":
            return CommandCancelled(**of)


# ---- the TV's reports (the gateway publishes them on device_commands.<tenant>.<screen>) --------


async def apply_report(conn: Connection, report: CommandReported) -> bool:
    """Apply a TV's report to its command, in the caller's transaction; False when it changes
    nothing: a command closed already, or none of that id on the screen and tenant the report
    names (reports come at least once, and in any order)."""
    actor = device_actor(report.device_id)
    if report.status == "delivered":  # the open set stays as it is: no entry to rewrite
        command = await queries.commands.mark_delivered(
            conn, report.tenant_id, report.screen_id, report.command_id, report.reported_at
        )
        if command is not None:
            await record_step(conn, report.tenant_id, command, actor=actor, client_address=None)
        return command is not None
    try:
        await queries.commands.lock_screen(conn, report.tenant_id, report.screen_id)
        command = await queries.commands.get_command(
            conn, report.tenant_id, report.screen_id, report.command_id, lock=True
        )
    except NotFound:
        return False
    if command.status not in OPEN_STATUSES:
        return False
    closed = await queries.commands.close_command(
        conn, command.id, report.status, message=_kept_message(report.message), data=_kept_data(report)
    )
    assert closed is not None  # open, and locked since
    await record_step(conn, report.tenant_id, closed, actor=actor, client_address=None)
    await publish_open(conn, report.tenant_id, report.screen_id)
    return True


def _kept_message(message: str | None) -> str | None:
    # PostgreSQL text holds no NUL.
    return None if message is None else message[:MAX_MESSAGE_CHARS].replace("\x00", "")


def _kept_data(report: CommandReported) -> dict | None:
    if report.data is None:
        return None
    encoded = msgspec.json.encode(report.data)
    # jsonb holds no \u0000 either; what does not fit is dropped rather than blocking the stream.
    if len(encoded) > MAX_DATA_BYTES or b"\\u0000" in encoded:
        log.warning("command_result_data_dropped", command_id=str(report.command_id), size=len(encoded))
        return None
    return report.data


def reports_handler(app: web.Application) -> Callable[[CommandReported], Awaitable[None]]:
    """Apply a TV's report in one transaction (applying it twice changes nothing)."""

    async def handle(report: CommandReported) -> None:
        async with app[POOL].acquire() as conn, conn.transaction():
            applied = await apply_report(conn, report)
        log.info(
            "command_report_applied", command_id=str(report.command_id), status=report.status, applied=applied
        )

    return handle


# One durable consumer of the TVs' reports shared by every replica.
reports_ctx = consumer_ctx(
    REPORTS_DURABLE, [REPORTS_SUBJECT], reports_handler, stream="DEVICE_EVENTS", decoder=_report_decoder
)


# ---- expiry ------------------------------------------------------------------------------------


async def expire_overdue(app: web.Application) -> None:
    """Every EXPIRY_CHECK_SECONDS: open commands past their expiry close as ``expired``. Safe on
    every replica at once (see ``queries.commands.lock_screens_with_expired``)."""
    while True:
        await asyncio.sleep(EXPIRY_CHECK_SECONDS)
        while await _expire_batch(app) == _EXPIRY_BATCH:
            pass


async def _expire_batch(app: web.Application) -> int:
    expired: list[Command] = []
    async with app[POOL].acquire() as conn, conn.transaction():
        screens = await queries.commands.lock_screens_with_expired(conn, _EXPIRY_BATCH)
        for tenant_id, screen_id in screens:
            for command in await queries.commands.expire_commands(conn, screen_id):
                await record_step(conn, tenant_id, command, actor=SYSTEM, client_address=None)
                expired.append(command)
            await publish_open(conn, tenant_id, screen_id)
    for command in expired:
        log.info("command_expired", command_id=str(command.id), screen_id=str(command.screen_id))
    return len(screens)


expiry_ctx = background("registry-command-expiry", expire_overdue)

"""Remote commands, the TV's side: it asks for its screen's open commands (waiting for one with
``Prefer: wait=N``), uploads a screenshot when asked for one, and reports each result.

Everything is answered from the gateway's projection of the ``device-commands`` bucket
(``commands_projection.py``); what the TV says goes to registry as ``CommandReported`` on the bus:
``delivered`` once this worker has handed a command out, then ``succeeded`` or ``failed`` when the
TV posts its result. Registry closes the command and rewrites the bucket; until then the command
stays open, and the TV may be handed it again: it de-duplicates by id.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Annotated, Any, Literal

import msgspec
import nats.errors
import structlog
from aiohttp import web
from msgspec import Meta

from services.device_gateway.admission import ADMISSION, publish_report
from services.device_gateway.commands_projection import COMMANDS, commands_key
from services.device_gateway.devices import authenticate, etag_matches
from services.device_gateway.models import Accepted
from services.device_gateway.projections import DeviceKey
from services.device_gateway.screenshots import store_screenshot
from services.device_gateway.waits import DEVICE, hold
from shared import trace_context
from shared.app_keys import SETTINGS
from shared.bus import JS
from shared.clock import utcnow
from shared.errors import (
    BadRequest,
    Conflict,
    ErrorDetail,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    UnsupportedMediaType,
)
from shared.events import CommandReported, device_commands_subject
from shared.http import json_response, read_json, read_limited
from shared.projections import OpenCommand, screenshot_object

log = structlog.get_logger()

# A result's free-form data, encoded: enough for a diagnostic report, not a log file.
MAX_RESULT_DATA_BYTES = 16 * 1024
# How long the report that a command was handed out may take; past it, the TV gets its commands
# anyway and the next poll reports again.
DELIVERED_TIMEOUT_SECONDS = 2
# The first bytes of each image type a TV may upload, by the Content-Type it declares.
IMAGE_MAGIC = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}

_encoder = msgspec.json.Encoder()
_ACCEPTED = Accepted()


class CommandList(msgspec.Struct, frozen=True):
    items: list[OpenCommand]


class ResultBody(msgspec.Struct, kw_only=True):
    status: Literal["succeeded", "failed"]
    message: Annotated[str, Meta(max_length=1000)] | None = None
    data: dict[str, Any] | None = None


_result_body = msgspec.json.Decoder(ResultBody)


def list_etag(items: list[OpenCommand]) -> str:
    """A strong validator of a command list: its commands' ids, in order (a command's fields never
    change; the set does, as commands open and close)."""
    return '"' + hashlib.blake2b(b"".join(item.id.bytes for item in items), digest_size=12).hexdigest() + '"'


async def get_commands(request: web.Request) -> web.StreamResponse:
    """The screen's open commands not past their expiry, oldest first, with an ETag.

    With ``Prefer: wait=N`` a request that would learn nothing new is held: one whose
    ``If-None-Match`` still matches (held until the open set changes: 200; or 304 after N s), and
    one without it while none is open (held until one opens: 200; or 200 with no items after N s).
    """
    device = authenticate(request)
    commands = request.app[COMMANDS]
    if_none_match = request.headers.get("If-None-Match")
    handed: list[OpenCommand] = []  # what a 200 lists: reported delivered once it is made

    def current() -> list[OpenCommand]:
        return commands.due(device.screen_id, device.tenant_id, utcnow())

    def known(items: list[OpenCommand]) -> bool:
        """Whether the TV has this list already: nothing to answer yet."""
        if if_none_match is not None:
            return etag_matches(if_none_match, list_etag(items))
        return not items

    def answer(items: list[OpenCommand]) -> web.Response:
        headers = {"ETag": list_etag(items), "Cache-Control": "no-store"}
        if if_none_match is not None and etag_matches(if_none_match, headers["ETag"]):
            return web.Response(status=304, headers=headers)
        handed[:] = items
        return json_response(CommandList(items=items), headers=headers)

    def again() -> web.Response | None:
        nonlocal device
        device = authenticate(request)  # a revoke while waiting: 401 at once
        items = current()
        return None if known(items) else answer(items)

    items = current()
    if not known(items):
        request.app[ADMISSION].admit()
        response: web.StreamResponse = answer(items)
    else:
        keys = (commands_key(device.screen_id), (DEVICE, device.device))
        response = await hold(request, keys, lambda: answer(current()), again)
    if request.method == "GET":  # a HEAD hands nothing out
        _report_delivered(request.app, device, handed)
    return response


def _report_delivered(app: web.Application, device: DeviceKey, items: list[OpenCommand]) -> None:
    """Queue ``delivered`` for the commands this worker has not reported yet: sent by
    :func:`send_delivery_reports`, off the answer's path (a poll waits on no network). A report
    that does not fit or fails is made again at a later poll: the command stays listed."""
    commands = app[COMMANDS]
    for item in items:
        if item.id in commands.reported:
            continue
        try:
            commands.deliveries.put_nowait((device, item.id))
        except asyncio.QueueFull:
            return
        commands.reported.add(item.id)  # a concurrent poll of the same TV queues nothing


async def send_delivery_reports(app: web.Application) -> None:
    commands = app[COMMANDS]
    while True:
        device, command_id = await commands.deliveries.get()
        try:
            await _publish(app, device, command_id, "delivered", timeout=DELIVERED_TIMEOUT_SECONDS)
        except Unavailable:
            commands.reported.discard(command_id)


async def post_result(request: web.Request) -> web.Response:
    """202 once JetStream has stored the TV's result; 404 for a command that is not open (unknown,
    another screen's, or closed already: a result repeated after registry closed the command)."""
    request.app[ADMISSION].admit_report()
    device = authenticate(request)
    command_id = _command_id(request)
    body = await read_json(request, _result_body)
    if body.data is not None and len(_encoder.encode(body.data)) > MAX_RESULT_DATA_BYTES:
        raise BadRequest(
            f"data must be at most {MAX_RESULT_DATA_BYTES} bytes of JSON",
            details=[ErrorDetail("data", "length")],
        )
    _open_command(request, device, command_id)
    await _publish(request.app, device, command_id, body.status, message=body.message, data=body.data)
    return json_response(_ACCEPTED, status=202)


async def put_screenshot(request: web.Request) -> web.Response:
    """204 once the object store holds the image: only for an open ``screenshot`` command of the
    device's screen, once (a repeat is 409: nothing a TV sends again and again fills the store),
    and one upload of a device at a time, as its downloads (each holds its body in memory)."""
    admission = request.app[ADMISSION]
    admission.admit_report()
    device = authenticate(request)
    command = _open_command(request, device, _command_id(request))
    if command.type != "screenshot":
        raise Conflict(f"this is a {command.type} command; only a screenshot command takes an image")
    uploaded = request.app[COMMANDS].uploaded
    if command.id in uploaded:
        raise Conflict("this command's screenshot is stored already; post its result")
    with admission.download(device.device_id):
        await _store_screenshot(request, device, command)
    uploaded.add(command.id)
    return web.Response(status=204)


async def _store_screenshot(request: web.Request, device: DeviceKey, command: OpenCommand) -> None:
    magic = IMAGE_MAGIC.get(request.content_type)
    if magic is None:
        raise UnsupportedMediaType("send the screenshot as image/png or image/jpeg")
    limit = request.app[SETTINGS].max_screenshot_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the body is at most {limit} bytes (MAX_SCREENSHOT_BYTES)")
    data = await read_limited(request, limit, "MAX_SCREENSHOT_BYTES")
    if not data.startswith(magic):
        raise BadRequest(
            f"the body is not a {request.content_type} image", details=[ErrorDetail("", "format")]
        )
    try:
        await store_screenshot(
            request.app[JS], screenshot_object(device.tenant_id, command.id), data, request.content_type
        )
    except (nats.errors.Error, TimeoutError) as exc:
        log.warning("screenshot_not_stored", command_id=str(command.id), error=repr(exc))
        raise Unavailable("could not store the screenshot; retry with backoff", retry_after=5) from None
    log.info("screenshot_stored", command_id=str(command.id), size=len(data))


def _command_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["commandId"])
    except ValueError:
        raise NotFound("no such command") from None


def _open_command(request: web.Request, device: DeviceKey, command_id: uuid.UUID) -> OpenCommand:
    command = request.app[COMMANDS].find(device.screen_id, device.tenant_id, command_id)
    if command is None:
        raise NotFound("no such open command for this screen; it may have been carried out or have expired")
    return command


async def _publish(
    app: web.Application,
    device: DeviceKey,
    command_id: uuid.UUID,
    status: Literal["delivered", "succeeded", "failed"],
    *,
    message: str | None = None,
    data: dict[str, Any] | None = None,
    timeout: float = 2,
) -> None:
    """Publish the TV's report and wait for JetStream's ack. The message id makes the same report
    of several workers, or of a TV's retry, one message within the stream's duplicate window."""
    report = CommandReported(
        tenant_id=device.tenant_id,
        screen_id=device.screen_id,
        device_id=device.device_id,
        command_id=command_id,
        status=status,
        reported_at=utcnow(),
        message=message,
        data=data,
    )
    await publish_report(
        app,
        device_commands_subject(device.tenant_id, device.screen_id),
        _encoder.encode(report),
        headers={"Nats-Msg-Id": f"{command_id}:{status}", **trace_context.headers()},
        timeout=timeout,
    )

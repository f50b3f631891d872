"""The device runtime API: TVs poll playlist and config and report heartbeats and events.

A poll whose If-None-Match still holds may ask to wait (``Prefer: wait=N``): it is held until the
content changes or N seconds pass (:mod:`services.device_gateway.waits`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import msgspec
import structlog
from aiohttp import web

from services.device_gateway.admission import ADMISSION, publish_report
from services.device_gateway.devices import PROJECTIONS, authenticate, etag_matches
from services.device_gateway.models import Accepted, EventsBody, HeartbeatBody
from services.device_gateway.projections import DeviceKey, Projections, ScreenView
from services.device_gateway.waits import CONTENT, DEVICE, hold
from shared import trace_context
from shared.clock import utcnow
from shared.direct_routes import DirectAnswer
from shared.errors import Unavailable
from shared.events import DeviceEventsReported, Heartbeat, device_events_subject, heartbeat_subject
from shared.http import read_json

log = structlog.get_logger()

_heartbeat_body = msgspec.json.Decoder(HeartbeatBody)
_events_body = msgspec.json.Decoder(EventsBody)
_encoder = msgspec.json.Encoder()
_ACCEPTED = _encoder.encode(Accepted())


def _screen(request: web.Request, device: DeviceKey) -> ScreenView:
    return _screen_of(request.app[PROJECTIONS], device)


def _screen_of(projections: Projections, device: DeviceKey) -> ScreenView:
    view = projections.screens.get(device.screen)
    if view is None:  # the screen's content entry has not reached this replica yet
        raise Unavailable("the screen's content is not available yet; retry shortly", retry_after=2)
    return view


def _full(body: bytes, etag: str) -> web.StreamResponse:
    return DirectAnswer(200, {"ETag": etag, "Cache-Control": "private, no-cache"}, body)


def _not_modified(etag: str) -> web.StreamResponse:
    return DirectAnswer(304, {"ETag": etag, "Cache-Control": "private, no-cache"})


def _accepted() -> web.StreamResponse:
    return DirectAnswer(202, {}, _ACCEPTED)


# What a poll reads of a screen's view: its body and ETag.
Part = Callable[[ScreenView], tuple[bytes, str]]


def _playlist(view: ScreenView) -> tuple[bytes, str]:
    return view.playlist_body, view.playlist_etag


def _config(view: ScreenView) -> tuple[bytes, str]:
    return view.config_body, view.config_etag


async def get_config(request: web.Request) -> web.StreamResponse:
    # The app's parts looked up once: a poll is the gateway's hottest path.
    app = request.app
    projections = app[PROJECTIONS]
    device = authenticate(request, projections)
    view = _screen_of(projections, device)
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and etag_matches(if_none_match, view.config_etag):
        if "Prefer" in request.headers:  # admitted even while lagging: see _held
            return await _held(request, device, view.config_etag, _config)
        app[ADMISSION].admit()
        return _not_modified(view.config_etag)
    app[ADMISSION].admit()
    return _full(view.config_body, view.config_etag)


async def get_playlist(request: web.Request) -> web.StreamResponse:
    app = request.app
    projections = app[PROJECTIONS]
    device = authenticate(request, projections)
    view = _screen_of(projections, device)
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and etag_matches(if_none_match, view.playlist_etag):
        if "Prefer" in request.headers:
            return await _held(request, device, view.playlist_etag, _playlist)
        app[ADMISSION].admit()
        return _not_modified(view.playlist_etag)
    app[ADMISSION].admit()
    return _full(view.playlist_body, view.playlist_etag)


def _held(request: web.Request, device: DeviceKey, etag: str, part: Part) -> Awaitable[web.StreamResponse]:
    """The 304 held (``Prefer: wait=N``) until the content changes (200) or N seconds pass; a
    plain function returning the awaitable: one frame fewer held per waiting TV.

    Not shed while the worker lags: a held poll costs no CPU until its content changes, less than
    refusing it (a 429 and its log line), and a tenant-wide change would otherwise turn the whole
    fleet's next wait into 429s, each coming back as a plain poll later (GATEWAY_MAX_WAITING
    bounds what is held)."""
    keys = ((CONTENT, device.screen), (DEVICE, device.device))
    return hold(request, keys, partial(_not_modified, etag), partial(_again, request, etag, part))


def _again(request: web.Request, etag: str, part: Part) -> web.StreamResponse | None:
    """A woken poll: the new content, or None while its ETag still holds."""
    current = authenticate(request)  # revoked meanwhile: 401 device_revoked, at once
    body, new_etag = part(_screen(request, current))
    return None if new_etag == etag else _full(body, new_etag)


async def post_heartbeat(request: web.Request) -> web.StreamResponse:
    """202 once JetStream has stored the heartbeat (an ack from the stream, not just a send)."""
    request.app[ADMISSION].admit_report()
    device = authenticate(request)
    body = await read_json(request, _heartbeat_body) if request.body_exists else HeartbeatBody()
    tenant_id, screen_id, device_id = device.id_texts()
    # The ids go in as the text msgspec would write for their UUIDs: a Struct's fields are not
    # checked when it is made, and the message is the same bytes (tests/test_gateway_paths.py).
    heartbeat = Heartbeat(
        tenant_id=tenant_id,  # type: ignore[arg-type]
        screen_id=screen_id,  # type: ignore[arg-type]
        device_id=device_id,  # type: ignore[arg-type]
        received_at=utcnow(),
        uptime_seconds=body.uptime_seconds,
        app_version=body.app_version,
        free_storage_mb=body.free_storage_mb,
        temperature_c=body.temperature_c,
        playing=body.playing,
    )
    await publish_report(request.app, heartbeat_subject(tenant_id, screen_id), _encoder.encode(heartbeat))
    return _accepted()


async def post_events(request: web.Request) -> web.StreamResponse:
    request.app[ADMISSION].admit_report()
    device = authenticate(request)
    body = await read_json(request, _events_body)
    report = DeviceEventsReported(
        tenant_id=device.tenant_id,
        screen_id=device.screen_id,
        device_id=device.device_id,
        received_at=utcnow(),
        events=body.events,
    )
    await publish_report(
        request.app,
        device_events_subject(device.tenant_id, device.screen_id),
        _encoder.encode(report),
        headers=trace_context.headers(),
    )
    return _accepted()

"""The gateway's operations: the routes it serves and its OpenAPI document, from one list."""

from services.device_gateway import commands, files
from services.device_gateway import handlers as h
from services.device_gateway.models import Accepted, EventsBody, HeartbeatBody
from services.device_gateway.projections import PlaylistBody
from shared.events import ScreenConfig
from shared.openapi import Operation, Param

_PREFER_WAIT = Param(
    "Prefer", {"type": "string"}, "wait=N (RFC 7240): hold the answer up to N s until one is open", "header"
)
_IF_NONE_MATCH = (Param("If-None-Match", {"type": "string"}, "the ETag of the copy the TV holds", "header"),)
_WAITING = (
    *_IF_NONE_MATCH,
    Param(
        "Prefer",
        {"type": "string"},
        "wait=N (RFC 7240): while If-None-Match holds, answer when the content changes or after N"
        " seconds (capped; Preference-Applied says the N applied)",
        "header",
    ),
)

OPERATIONS = [
    Operation(
        "GET",
        "/v1/device/config",
        h.get_config,
        "The screen's config (ETag; 304 when unchanged; Prefer: wait=N to wait for a change)",
        "device",
        responses={200: ScreenConfig, 304: None},
        errors=(401, 429, 503),
        params=_WAITING,
        quiet=True,
        tag="Device runtime",
        description=(
            "With `If-None-Match` still matching and `Prefer: wait=N`, the answer is held until the "
            "config changes (200 at once) or N seconds pass (304); `Preference-Applied` says the N "
            "applied."
        ),
    ),
    Operation(
        "GET",
        "/v1/device/playlist",
        h.get_playlist,
        "The screen's playlist (ETag; 304 when unchanged; Prefer: wait=N to wait for a change)",
        "device",
        responses={200: PlaylistBody, 304: None},
        errors=(401, 429, 503),
        params=_WAITING,
        quiet=True,
        tag="Device runtime",
        description=(
            "With `If-None-Match` still matching and `Prefer: wait=N`, the answer is held until the "
            "playlist changes (200 at once) or N seconds pass (304); `Preference-Applied` says the N "
            "applied."
        ),
    ),
    Operation(
        "POST",
        "/v1/device/heartbeat",
        h.post_heartbeat,
        "Report that the TV is alive",
        "device",
        HeartbeatBody,
        responses={202: Accepted},
        errors=(400, 401, 413, 415, 429, 503),
        quiet=True,
        tag="Device runtime",
    ),
    Operation(
        "POST",
        "/v1/device/events",
        h.post_events,
        "Report proof of play and errors (≤ 500)",
        "device",
        EventsBody,
        responses={202: Accepted},
        errors=(400, 401, 413, 415, 429, 503),
        quiet=True,
        tag="Device runtime",
        description="202 once JetStream has stored them; at most 500 a call.",
    ),
    Operation(
        "GET",
        "/v1/device/content/{name}",
        files.get_file,
        "A file for this device by name (ETag; If-None-Match → 304; Range: one byte range → 206)",
        "device",
        responses={200: "*/*", 206: "*/*", 304: None, 416: None},  # as the file was stored
        errors=(401, 404, 429, 503),
        params=(
            *_IF_NONE_MATCH,
            Param("Range", {"type": "string"}, "bytes=first-last", "header"),
            Param("If-Range", {"type": "string"}, "the ETag the range belongs to", "header"),
        ),
        tag="Files for devices",
        needs=("nats",),
        description=(
            "The file's bytes with the media type it was stored with and `X-Content-Type-Options: "
            "nosniff`; 404 for a file not meant for this device's screen."
        ),
    ),
    Operation(
        "GET",
        "/v1/device/commands",
        commands.get_commands,
        "The screen's open commands, oldest first (Prefer: wait=N holds until one is open)",
        "device",
        responses={200: commands.CommandList},
        errors=(401, 429, 503),
        params=(_PREFER_WAIT,),
        quiet=True,
        tag="Device runtime",
    ),
    Operation(
        "POST",
        "/v1/device/commands/{commandId}/result",
        commands.post_result,
        "Report the result of an open command",
        "device",
        commands.ResultBody,
        responses={202: Accepted},
        errors=(400, 401, 404, 413, 415, 429, 503),
        quiet=True,
        tag="Device runtime",
    ),
    Operation(
        "PUT",
        "/v1/device/commands/{commandId}/screenshot",
        commands.put_screenshot,
        "Upload the image an open screenshot command asked for (image/png or image/jpeg)",
        "device",
        {"type": "string", "format": "binary"},
        ("image/png", "image/jpeg"),
        responses={204: None},
        errors=(400, 401, 404, 409, 413, 415, 429, 503),
        tag="Device runtime",
        needs=("nats",),
    ),
]

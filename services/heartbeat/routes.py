"""The heartbeat service's operations: the routes it serves and its OpenAPI document, from one list."""

from services.heartbeat import handlers as h
from services.heartbeat.models import FleetStatus, HeartbeatPage, ScreenPresence
from services.heartbeat.stream import stream_heartbeats
from shared.openapi import Operation, Param

_HISTORY = (
    Param("since", {"type": "string", "format": "date-time"}, "only heartbeats received after this time"),
    Param("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
)

OPERATIONS = [
    Operation(
        "GET",
        "/v1/fleet/status",
        h.get_fleet_status,
        "How many of the tenant's screens are online, offline and not heard from yet",
        "admin",
        responses={200: FleetStatus},
        errors=(401,),
        tag="Fleet monitoring",
        scope="fleet:read",
        description="Counts of the tenant's screens by presence, from their heartbeats.",
    ),
    Operation(
        "GET",
        "/v1/screens/{id}/presence",
        h.get_screen_presence,
        "A screen's presence, when it was last seen and its last heartbeat",
        "admin",
        responses={200: ScreenPresence},
        errors=(401, 404),
        tag="Fleet monitoring",
        scope="fleet:read",
        description=(
            "online, offline or unknown; when the screen was last seen and what its last heartbeat said."
        ),
    ),
    Operation(
        "GET",
        "/v1/screens/{id}/heartbeats",
        h.get_heartbeats,
        "A screen's heartbeats, oldest first, as long as they are kept (HEARTBEAT_RETENTION_HOURS)",
        "admin",
        responses={200: HeartbeatPage},
        errors=(400, 401, 404),
        params=_HISTORY,
        tag="Fleet monitoring",
        scope="fleet:read",
    ),
    Operation(
        "GET",
        "/v1/heartbeats/stream",
        stream_heartbeats,
        "Server-sent events of the tenant's heartbeats (event: heartbeat) and presence changes"
        " (event: presence); the id is the event's place in the stream: reconnect with"
        " Last-Event-ID to resume",
        "admin",
        responses={200: "text/event-stream"},
        errors=(400, 401, 429, 503),
        params=(Param("Last-Event-ID", {"type": "string"}, "resume after this event", "header"),),
        tag="Fleet monitoring",
        scope="fleet:read",
        needs=("nats",),
        description=(
            "A tenant holds a limited number of streams at once (SSE_STREAMS_PER_TENANT); one more is 429"
            " with Retry-After."
        ),
    ),
]

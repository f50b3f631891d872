"""What TVs send the gateway; limits are the validation (msgspec checks them)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from shared.events import DeviceEvent


class HeartbeatBody(msgspec.Struct, kw_only=True, rename="camel"):
    uptime_seconds: Annotated[int, Meta(ge=0)] | None = None
    app_version: Annotated[str, Meta(max_length=50)] | None = None
    free_storage_mb: Annotated[float, Meta(ge=0)] | None = msgspec.field(default=None, name="freeStorageMB")
    temperature_c: Annotated[float, Meta(ge=-100, le=200)] | None = msgspec.field(
        default=None, name="temperatureC"
    )
    playing: Annotated[str, Meta(max_length=2048)] | None = None


class EventsBody(msgspec.Struct, kw_only=True):
    events: Annotated[list[DeviceEvent], Meta(min_length=1, max_length=500)]


class Accepted(msgspec.Struct):
    status: str = "accepted"

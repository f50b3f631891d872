"""What the heartbeat service's API answers (the routes' OpenAPI schemas come from these)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import msgspec

from shared.events import Heartbeat


class FleetStatus(msgspec.Struct, frozen=True):
    screens: int
    online: int
    offline: int
    unknown: int


class ScreenPresence(msgspec.Struct, frozen=True, rename="camel"):
    screen_id: uuid.UUID
    presence: Literal["unknown", "online", "offline"]
    last_seen_at: datetime | None
    last_heartbeat: Heartbeat | None


class HeartbeatPage(msgspec.Struct, frozen=True, rename="camel"):
    items: list[Heartbeat]
    # Pass as ``since`` for the next page; null after the last.
    next_since: datetime | None

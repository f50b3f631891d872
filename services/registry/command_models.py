"""Registry's remote-command bodies (a module of their own, beside ``models``): the types, their
arguments, the statuses a command goes through."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from msgspec import Meta

from services.registry.models import Body

CommandType = Literal["reload", "reboot", "screenshot", "identify", "clear_cache", "display_power"]
CommandStatus = Literal["pending", "delivered", "succeeded", "failed", "expired", "cancelled"]
# Open: the TV has still to carry it out (and the screen's device-commands entry lists it).
OPEN_STATUSES: tuple[CommandStatus, ...] = ("pending", "delivered")
COMMAND_STATUSES: tuple[CommandStatus, ...] = (*OPEN_STATUSES, "succeeded", "failed", "expired", "cancelled")
DEFAULT_COMMAND_TTL_SECONDS = 3600
MAX_COMMAND_TTL_SECONDS = 7 * 24 * 3600


class NoArgs(Body):
    """reload, reboot, screenshot, clear_cache: nothing to say."""


class IdentifyArgs(Body):
    """identify: show the screen's name for this long."""

    seconds: Annotated[int, Meta(ge=1, le=300)] = 10


class DisplayPowerArgs(Body):
    on: bool


COMMAND_ARGS: dict[str, type[Body]] = {
    "reload": NoArgs,
    "reboot": NoArgs,
    "screenshot": NoArgs,
    "identify": IdentifyArgs,
    "clear_cache": NoArgs,
    "display_power": DisplayPowerArgs,
}


class NewCommand(Body):
    type: CommandType
    # Checked against the type's own (COMMAND_ARGS) once the type is known.
    args: (
        Annotated[
            dict[str, Any],
            Meta(
                max_length=20,
                description='identify: {"seconds": 1-300, default 10}; display_power: {"on": true|false}'
                " (required); the others: none",
            ),
        ]
        | None
    ) = None
    ttl_seconds: Annotated[int, Meta(ge=1, le=MAX_COMMAND_TTL_SECONDS)] = DEFAULT_COMMAND_TTL_SECONDS


class Command(Body):
    id: uuid.UUID
    screen_id: uuid.UUID
    type: CommandType
    args: dict[str, Any]
    status: CommandStatus
    created_at: datetime
    expires_at: datetime
    delivered_at: datetime | None
    completed_at: datetime | None
    # What the TV reported with its result (succeeded or failed).
    message: str | None
    data: dict[str, Any] | None
    created_by: str


class CommandPage(Body):
    items: list[Command]
    next_cursor: str | None

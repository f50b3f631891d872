"""Every message that crosses the bus, defined once: domain events, heartbeats, device reports.

Domain events travel on the ``EVENTS`` stream; an event's ``type`` tag is also its subject
(``<service>.<entity>.<verb>``). Readers ignore fields they do not know, so producers may add
fields; a change that breaks readers bumps ``v``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from shared.clock import utcnow

# Past 2**53 a float's whole numbers are no longer exact anyway, and msgspec cannot encode an int
# past 2**64: such values stay floats.
_EXACT_INTEGERS = 2**53


def whole_numbers_as_ints(struct: msgspec.Struct, *fields: str) -> None:
    """Each of ``fields`` that holds a whole number made an int, for ``__post_init__``: a field typed
    float (a fraction is accepted) answers ``10``, as the contract shows, not ``10.0``, which a TV
    app's typed decoder expecting an integer refuses. Whatever the value came from: a request, a
    ``double precision`` column, the bus."""
    for name in fields:
        value = getattr(struct, name)
        if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_INTEGERS:
            msgspec.structs.force_setattr(struct, name, int(value))


class CachePolicy(msgspec.Struct, frozen=True, kw_only=True):
    max_size_gb: Annotated[float, msgspec.Meta(gt=0, le=100_000)] = msgspec.field(
        default=10, name="maxSizeGB"
    )
    retention_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = msgspec.field(
        default=7, name="retentionDays"
    )

    def __post_init__(self) -> None:
        whole_numbers_as_ints(self, "max_size_gb")


class ScreenConfig(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What a TV is told about how to behave; defaults are the contract's (docs/api.md)."""

    sync_interval_minutes: int = 5
    heartbeat_interval_minutes: int = 1
    cache_policy: CachePolicy = CachePolicy()


# Subclasses repeat ``frozen=True``: msgspec inherits it anyway, but type checkers read each class
# as a dataclass of its own and would take a subclass for a mutable one.
class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", rename="camel"):
    v: int = 1
    event_id: uuid.UUID = msgspec.field(default_factory=uuid.uuid4)
    occurred_at: datetime = msgspec.field(default_factory=utcnow)
    tenant_id: uuid.UUID


class ScreenCreated(Event, frozen=True, tag="registry.screen.created"):
    screen_id: uuid.UUID
    venue_id: uuid.UUID
    # Increases with every change of the screen; readers keep the newest and drop stale redeliveries.
    version: int
    config: ScreenConfig


class ScreenConfigChanged(Event, frozen=True, tag="registry.screen.config_changed"):
    screen_id: uuid.UUID
    version: int
    config: ScreenConfig


class DeviceBound(Event, frozen=True, tag="provisioning.device.bound"):
    device_id: uuid.UUID
    screen_id: uuid.UUID
    # Counts binds and unbinds of the screen, so a late redelivery never undoes a newer change.
    binding_seq: int
    bound_at: datetime


# A DeviceRevoked's reason when the TV signed itself out (logout) rather than being revoked.
DEVICE_LOGOUT_REASON = "device_logout"


class DeviceRevoked(Event, frozen=True, tag="provisioning.device.revoked"):
    device_id: uuid.UUID
    screen_id: uuid.UUID
    binding_seq: int
    reason: str | None
    revoked_at: datetime


class ActivationRepeated(Event, frozen=True, tag="provisioning.alert.activation_repeated"):
    """Alert: a serial that was activated already was presented again (a cloned or stolen serial,
    or a device reset without its key). The activation was refused."""

    serial: str
    screen_id: uuid.UUID
    device_id: uuid.UUID | None
    client_address: str


class PresenceChanged(Event, frozen=True, tag="heartbeat.presence.changed"):
    """A screen went online or offline (heartbeat service). Its subject matches the ``HEARTBEATS``
    stream's ``heartbeat.*.*``, and streams may not overlap, so it travels on ``HEARTBEATS``."""

    screen_id: uuid.UUID
    presence: Literal["online", "offline"]
    last_seen_at: datetime
    # Counts the screen's transitions, so a late redelivery never undoes a newer one.
    presence_seq: int


class CommandEvent(Event, frozen=True):
    """A remote command's step (registry): each status change of a command is one of these."""

    screen_id: uuid.UUID
    command_id: uuid.UUID
    command_type: str


class CommandCreated(CommandEvent, frozen=True, tag="registry.command.created"):
    expires_at: datetime


class CommandDelivered(CommandEvent, frozen=True, tag="registry.command.delivered"):
    """The TV was handed the command (it may be handed it again: delivery is at least once)."""


class CommandSucceeded(CommandEvent, frozen=True, tag="registry.command.succeeded"):
    message: str | None = None


class CommandFailed(CommandEvent, frozen=True, tag="registry.command.failed"):
    message: str | None = None


class CommandExpired(CommandEvent, frozen=True, tag="registry.command.expired"):
    """Its time to live passed before the TV reported a result."""


class CommandCancelled(CommandEvent, frozen=True, tag="registry.command.cancelled"):
    pass


class AlertEvent(Event, frozen=True):
    """An alert about a venue's screens (registry): presence as an operator wants to hear of it,
    after the screen's alert delay and only within its venue's opening hours."""

    venue_id: uuid.UUID


class ScreenOfflineAlert(AlertEvent, frozen=True, tag="registry.alert.screen_offline"):
    """A paired screen has been offline for its alert delay, within its venue's opening hours."""

    screen_id: uuid.UUID
    screen_name: str
    # When the heartbeat service last heard of it (it went offline after that).
    last_seen_at: datetime | None
    offline_alert_after_minutes: int


class ScreenOnlineAlert(AlertEvent, frozen=True, tag="registry.alert.screen_online"):
    """A screen alerted as offline (on its own or in a venue incident) is back."""

    screen_id: uuid.UUID
    screen_name: str
    last_seen_at: datetime | None
    # The venue incident it was folded into, if it was.
    incident_id: uuid.UUID | None = None


class VenueOfflineAlert(AlertEvent, frozen=True, tag="registry.alert.venue_offline"):
    """Most of a venue's paired screens went offline within a short window: one incident rather
    than an alert per screen. The screens' own offline alerts are folded into it."""

    incident_id: uuid.UUID
    venue_name: str
    screen_ids: list[uuid.UUID]
    # Paired screens of the venue when the incident opened.
    screens_total: int


class VenueOnlineAlert(AlertEvent, frozen=True, tag="registry.alert.venue_online"):
    """Every screen of a venue incident is back (or unpaired): the incident is closed."""

    incident_id: uuid.UUID
    venue_name: str


class WebhookDisabled(Event, frozen=True, tag="registry.webhook.disabled"):
    """A webhook endpoint was turned off by the system: its receiver answered 410 Gone, or it has
    failed every delivery for days."""

    webhook_id: uuid.UUID
    reason: Literal["gone", "failing"]


AnyEvent = (
    ScreenCreated
    | ScreenConfigChanged
    | DeviceBound
    | DeviceRevoked
    | PresenceChanged
    | ActivationRepeated
    | CommandCreated
    | CommandDelivered
    | CommandSucceeded
    | CommandFailed
    | CommandExpired
    | CommandCancelled
    | ScreenOfflineAlert
    | ScreenOnlineAlert
    | VenueOfflineAlert
    | VenueOnlineAlert
    | WebhookDisabled
)

event_decoder = msgspec.json.Decoder(AnyEvent)


def subject_of_type(event_type: type[Event]) -> str:
    """The subject events of ``event_type`` travel on: their ``type`` tag."""
    tag = event_type.__struct_config__.tag
    if not isinstance(tag, str):
        raise TypeError(f"{event_type.__name__} has no string tag, so no subject")
    return tag


def subject_of(event: Event) -> str:
    return subject_of_type(type(event))


# ---- device runtime messages (not domain events: high volume, on their own streams) -----------


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A TV's heartbeat as the gateway publishes it on ``heartbeat.<tenantId>.<screenId>``."""

    v: int = 1
    tenant_id: uuid.UUID
    screen_id: uuid.UUID
    device_id: uuid.UUID
    received_at: datetime
    uptime_seconds: int | None = None
    app_version: str | None = None
    free_storage_mb: float | None = msgspec.field(default=None, name="freeStorageMB")
    temperature_c: float | None = msgspec.field(default=None, name="temperatureC")
    playing: str | None = None

    def __post_init__(self) -> None:
        whole_numbers_as_ints(self, "free_storage_mb", "temperature_c")


heartbeat_decoder = msgspec.json.Decoder(Heartbeat)


def heartbeat_subject(tenant_id: uuid.UUID | str, screen_id: uuid.UUID | str) -> str:
    return f"heartbeat.{tenant_id}.{screen_id}"


class DeviceEvent(msgspec.Struct, frozen=True, kw_only=True):
    type: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    at: Annotated[datetime, msgspec.Meta(tz=True)]  # RFC 3339: with an offset
    data: dict[str, Any] | None = None


class DeviceEventsReported(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A batch of proof-of-play and error events from one TV, on ``device_events.<tenantId>.<screenId>``."""

    v: int = 1
    tenant_id: uuid.UUID
    screen_id: uuid.UUID
    device_id: uuid.UUID
    received_at: datetime
    events: list[DeviceEvent]


def device_events_subject(tenant_id: uuid.UUID | str, screen_id: uuid.UUID | str) -> str:
    return f"device_events.{tenant_id}.{screen_id}"


class CommandReported(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A TV's word on one of its commands, as the gateway publishes it on
    ``device_commands.<tenantId>.<screenId>``: it was handed the command (``delivered``), or it
    carried it out (``succeeded``, ``failed``). Registry applies it to the command once (a report
    on a command already closed changes nothing)."""

    v: int = 1
    tenant_id: uuid.UUID
    screen_id: uuid.UUID
    device_id: uuid.UUID
    command_id: uuid.UUID
    status: Literal["delivered", "succeeded", "failed"]
    reported_at: datetime
    message: str | None = None
    data: dict[str, Any] | None = None


def device_commands_subject(tenant_id: uuid.UUID | str, screen_id: uuid.UUID | str) -> str:
    return f"device_commands.{tenant_id}.{screen_id}"

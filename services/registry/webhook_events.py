"""The webhook event types a tenant subscribes to, the bus events each one comes from, and the body
(Standard Webhooks: ``{"type", "timestamp", "data"}``) a delivery carries."""

from __future__ import annotations

from typing import Any

import msgspec

from shared.events import (
    DEVICE_LOGOUT_REASON,
    ActivationRepeated,
    CommandExpired,
    CommandFailed,
    CommandSucceeded,
    DeviceBound,
    DeviceRevoked,
    Event,
    ScreenOfflineAlert,
    ScreenOnlineAlert,
    VenueOfflineAlert,
    VenueOnlineAlert,
    WebhookDisabled,
    subject_of_type,
)

WEBHOOK_EVENT_TYPES: tuple[str, ...] = (
    "device.bound",
    "device.revoked",
    "device.logout",
    "screen.online",
    "screen.offline",
    "venue.offline",
    "venue.online",
    "provisioning.activation_repeated",
    "command.succeeded",
    "command.failed",
    "command.expired",
    "webhook.disabled",
)

# Bus event → webhook type. A revoke is ``device.revoked`` unless the TV signed itself out.
_TYPES: dict[type[Event], str] = {
    DeviceBound: "device.bound",
    DeviceRevoked: "device.revoked",
    ScreenOfflineAlert: "screen.offline",
    ScreenOnlineAlert: "screen.online",
    VenueOfflineAlert: "venue.offline",
    VenueOnlineAlert: "venue.online",
    ActivationRepeated: "provisioning.activation_repeated",
    CommandSucceeded: "command.succeeded",
    CommandFailed: "command.failed",
    CommandExpired: "command.expired",
    WebhookDisabled: "webhook.disabled",
}

# What the fan-out consumer reads from the bus: exactly the events that become webhooks.
SOURCE_SUBJECTS = [subject_of_type(event_type) for event_type in _TYPES]

# The event's envelope, which the body's "type" and "timestamp" replace or a receiver has as the
# webhook-id header.
_ENVELOPE = ("v", "eventId", "type")

_encoder = msgspec.json.Encoder()


def webhook_type(event: Event) -> str | None:
    """The webhook type ``event`` is delivered as; None for events no webhook carries."""
    if isinstance(event, DeviceRevoked) and event.reason == DEVICE_LOGOUT_REASON:
        return "device.logout"
    return _TYPES.get(type(event))


def webhook_body(event: Event, event_type: str) -> str:
    """The body of every delivery of ``event``: its fields in camelCase, but for the envelope.

    Events carry no key and no secret (a device's key never leaves provisioning's hash; a
    webhook's secret never leaves its row), so none can reach a receiver from here."""
    data: dict[str, Any] = msgspec.to_builtins(event)
    for name in _ENVELOPE:
        data.pop(name, None)
    body = {"type": event_type, "timestamp": data["occurredAt"], "data": data}
    return _encoder.encode(body).decode()

"""The webhook event catalogue: the event types an endpoint may subscribe to, named once."""

from __future__ import annotations

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

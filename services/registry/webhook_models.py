"""The webhook management API's request and response bodies; their limits are the validation."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from services.registry.models import Body
from services.registry.webhook_events import WEBHOOK_EVENT_TYPES
from shared.validation import FieldInvalid

# An enum in the API document, from the one catalogue the delivery side reads too.
WebhookEventType = Literal[WEBHOOK_EVENT_TYPES]  # type: ignore[valid-type]  # built from the catalogue's tuple
WebhookUrl = Annotated[str, Meta(min_length=1, max_length=2048)]
WebhookEvents = Annotated[list[WebhookEventType], Meta(min_length=1, max_length=len(WEBHOOK_EVENT_TYPES))]
Description = Annotated[str, Meta(max_length=500)]
DisabledReason = Literal["gone", "failing"]
DeliveryState = Literal["pending", "delivered", "failed"]
DELIVERY_STATES: tuple[DeliveryState, ...] = ("pending", "delivered", "failed")


def _unique(events: list[str]) -> None:
    if len(set(events)) != len(events):
        raise FieldInvalid("events", "must name each event type once")


class NewWebhook(Body):
    url: WebhookUrl
    events: WebhookEvents
    description: Description | None = None

    def __post_init__(self) -> None:
        _unique(self.events)


class WebhookPatch(Body):
    """Only the fields sent change; ``description: null`` clears it."""

    url: WebhookUrl | UnsetType = UNSET
    events: WebhookEvents | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET
    # true also clears why the system turned it off (and the failing streak it counted)
    enabled: bool | UnsetType = UNSET

    def __post_init__(self) -> None:
        if self.events is not UNSET:
            _unique(self.events)


class Webhook(Body):
    id: uuid.UUID
    url: str
    events: list[WebhookEventType]
    description: str | None
    enabled: bool
    # Why the system turned it off: "gone" (the receiver answered 410) or "failing" (no delivery
    # succeeded for days); null while enabled or when an admin turned it off.
    disabled_reason: DisabledReason | None
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(Webhook):
    """At registration and at a rotation only: the signing secret (``whsec_`` + base64 key)."""

    secret: str


class WebhookSecretRotated(WebhookWithSecret):
    # Until then the secret replaced signs every delivery too (a second v1 signature).
    previous_secret_expires_at: datetime


class WebhookPage(Body):
    items: list[Webhook]
    next_cursor: str | None


class WebhookDelivery(Body):
    id: uuid.UUID
    # The webhook-id header: the same on every attempt, for the receiver to de-duplicate by.
    event_id: str
    event_type: str
    state: DeliveryState
    attempts: int
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None


class WebhookDeliveryDetail(WebhookDelivery):
    # The body as sent and signed: {"type", "timestamp", "data"}.
    payload: msgspec.Raw


class WebhookDeliveryPage(Body):
    items: list[WebhookDelivery]
    next_cursor: str | None

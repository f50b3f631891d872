"""Registry's request and response bodies; their limits are the validation (msgspec checks them)."""

from __future__ import annotations

import uuid
import zoneinfo
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from services.registry.opening_hours import OpeningHours, OpeningPeriod
from shared.events import ScreenConfig
from shared.projections import PlaylistItem
from shared.validation import FieldInvalid

_TIMEZONES = frozenset(zoneinfo.available_timezones())

Name = Annotated[str, Meta(min_length=1, max_length=200)]


class Body(msgspec.Struct, kw_only=True, rename="camel"):
    """camelCase on the wire; unknown fields are ignored (clients may be newer than we are)."""


class NewTenant(Body):
    name: Name


class ClientCredentials(Body):
    client_id: str
    client_secret: str


class TenantCreated(Body):
    id: uuid.UUID
    name: str
    created_at: datetime
    client: ClientCredentials


class Tenant(Body):
    id: uuid.UUID
    name: str
    created_at: datetime


class TenantPage(Body):
    items: list[Tenant]
    next_cursor: str | None


class TokenResponse(msgspec.Struct, kw_only=True):
    """RFC 6749 §5.1: snake_case by the RFC, unlike the rest of the API."""

    access_token: str
    token_type: str
    expires_in: int
    scope: str


AlertDelay = Annotated[int, Meta(ge=0, le=2880, description="minutes offline before an alert (48 h at most)")]
Timezone = Annotated[str, Meta(max_length=64)]
_TIMEZONE_MUST = "must be an IANA time zone, like Europe/Berlin"


class Patch(Body):
    """A PATCH body: the fields sent are changed, the others left as they are."""

    def changes(self) -> dict[str, Any]:
        return {name: value for name in self.__struct_fields__ if (value := getattr(self, name)) is not UNSET}


class NewVenue(Body):
    name: Name
    timezone: Timezone | None = None
    address: Annotated[str, Meta(max_length=500)] | None = None
    opening_hours: OpeningHours | None = None
    offline_alert_after_minutes: AlertDelay | None = None

    def __post_init__(self) -> None:
        if self.timezone is not None and self.timezone not in _TIMEZONES:
            raise FieldInvalid("timezone", _TIMEZONE_MUST)


class VenuePatch(Patch):
    """The fields to change; ``null`` clears one that may be empty."""

    name: Name | UnsetType = UNSET
    timezone: Timezone | UnsetType | None = UNSET
    address: Annotated[str, Meta(max_length=500)] | UnsetType | None = UNSET
    opening_hours: OpeningHours | UnsetType | None = UNSET
    offline_alert_after_minutes: AlertDelay | UnsetType | None = UNSET

    def __post_init__(self) -> None:
        if isinstance(self.timezone, str) and self.timezone not in _TIMEZONES:
            raise FieldInvalid("timezone", _TIMEZONE_MUST)


class Venue(Body):
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    timezone: str | None
    address: str | None
    opening_hours: list[OpeningPeriod] | None
    offline_alert_after_minutes: int | None
    created_at: datetime
    updated_at: datetime


class VenuePage(Body):
    items: list[Venue]
    next_cursor: str | None


class NewScreen(Body):
    venue_id: uuid.UUID
    name: Name
    orientation: Literal["landscape", "portrait"] | None = None
    resolution: (
        Annotated[
            str,
            Meta(
                pattern=r"^[1-9][0-9]{1,4}x[1-9][0-9]{1,4}(?!\n)$",
                description="WIDTHxHEIGHT in pixels, like 1920x1080",
            ),
        ]
        | None
    ) = None
    offline_alert_after_minutes: AlertDelay | None = None


class ScreenPatch(Patch):
    name: Name | UnsetType = UNSET
    # null clears the screen's own delay: the venue's applies again
    offline_alert_after_minutes: AlertDelay | UnsetType | None = UNSET


ScreenState = Literal["provisioning", "active"]
Presence = Literal["unknown", "online", "offline"]


class Screen(Body):
    id: uuid.UUID
    tenant_id: uuid.UUID
    venue_id: uuid.UUID
    name: str
    orientation: str | None
    resolution: str | None
    state: ScreenState
    device_id: uuid.UUID | None
    presence: Presence
    last_seen_at: datetime | None
    offline_alert_after_minutes: int | None
    created_at: datetime
    updated_at: datetime


class ScreenPage(Body):
    items: list[Screen]
    next_cursor: str | None


class NewPlaylist(Body):
    items: Annotated[list[PlaylistItem], Meta(max_length=1000)]


class Playlist(Body):
    screen_id: uuid.UUID
    version: int
    items: list[PlaylistItem]
    updated_at: datetime | None


class CachePolicyPatch(msgspec.Struct, kw_only=True):
    max_size_gb: Annotated[float, Meta(gt=0, le=100_000)] | UnsetType = msgspec.field(
        default=UNSET, name="maxSizeGB"
    )
    retention_days: Annotated[int, Meta(ge=1, le=3650)] | UnsetType = msgspec.field(
        default=UNSET, name="retentionDays"
    )


class ConfigPatch(Body):
    sync_interval_minutes: Annotated[int, Meta(ge=1, le=1440)] | UnsetType = UNSET
    heartbeat_interval_minutes: Annotated[int, Meta(ge=1, le=1440)] | UnsetType = UNSET
    cache_policy: CachePolicyPatch | UnsetType = UNSET

    def applied_to(self, config: ScreenConfig) -> ScreenConfig:
        cache = config.cache_policy
        if self.cache_policy is not UNSET:
            cache = msgspec.structs.replace(
                cache,
                **{
                    name: value
                    for name in ("max_size_gb", "retention_days")
                    if (value := getattr(self.cache_policy, name)) is not UNSET
                },
            )
        changes = {
            name: value
            for name in ("sync_interval_minutes", "heartbeat_interval_minutes")
            if (value := getattr(self, name)) is not UNSET
        }
        return msgspec.structs.replace(config, cache_policy=cache, **changes)


class AuthorizationServerMetadata(msgspec.Struct, kw_only=True, omit_defaults=True):
    """RFC 8414 §2, OAuth's own field names."""

    issuer: str
    token_endpoint: str
    device_authorization_endpoint: str
    grant_types_supported: list[str]
    token_endpoint_auth_methods_supported: list[str]
    scopes_supported: list[str]
    response_types_supported: list[str]
    service_documentation: str
    jwks_uri: str
    registration_endpoint: str | None = None


# ---- API clients: dynamic registration (RFC 7591, OAuth's names) and the tenant's view ----------


class NewInitialAccessToken(Body):
    ttl_seconds: Annotated[int, Meta(ge=60, le=7 * 24 * 3600)] = 3600


class InitialAccessToken(Body):
    """Shown once; good for one registration at POST /oauth/register until it expires."""

    token: str
    expires_at: datetime


class ClientMetadata(msgspec.Struct, kw_only=True):
    """RFC 7591 §2. What this server has no use for (redirect URIs aside) is ignored, as §2 allows."""

    client_name: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    grant_types: list[str] = msgspec.field(default_factory=lambda: ["client_credentials"])
    token_endpoint_auth_method: str = "client_secret_basic"
    # Space-separated; omitted: those of the access token that issued the initial access token.
    scope: str | None = None
    redirect_uris: list[str] = msgspec.field(default_factory=list)


class ClientRegistered(msgspec.Struct, kw_only=True, omit_defaults=True):
    """RFC 7591 §3.2.1."""

    client_id: str
    client_secret: str
    client_id_issued_at: int
    client_secret_expires_at: int  # 0: never
    grant_types: list[str]
    token_endpoint_auth_method: str
    scope: str
    client_name: str | None = None


class ApiClient(Body):
    client_id: str
    client_name: str | None
    created_at: datetime
    secret_expires_at: datetime | None
    revoked_at: datetime | None
    registered_by: str
    scope: str  # space-separated: the most its access tokens may carry


class ClientList(Body):
    items: list[ApiClient]


class DeviceFile(Body):
    name: str
    size: int
    etag: str
    content_type: str
    # Empty: every screen of the tenant may fetch it.
    screen_ids: list[uuid.UUID]
    updated_at: datetime | None


class DeviceFileList(Body):
    items: list[DeviceFile]


AdminAction = Literal[
    "tenant.created",
    "venue.created",
    "venue.changed",
    "screen.created",
    "screen.changed",
    "playlist.replaced",
    "config.changed",
    "client.registered",
    "client.revoked",
    "initial_access_token.issued",
    "file.stored",
    "file.deleted",
    "command.created",
    "command.delivered",
    "command.succeeded",
    "command.failed",
    "command.expired",
    "command.cancelled",
    "webhook.created",
    "webhook.changed",
    "webhook.deleted",
    "webhook.secret_rotated",
    "webhook.pinged",
    "webhook.delivery_retried",
]


class AdminAuditEntry(Body):
    id: int
    at: datetime
    # "operator", or "client:<clientId>": the API client whose access token made the change; for a
    # command's steps also "device:<deviceId>" (the TV's report) and "system" (its expiry).
    actor: str
    action: AdminAction
    # The id (or name, for files) of what changed.
    resource_id: str
    client_address: str | None


class AdminAuditPage(Body):
    items: list[AdminAuditEntry]
    # Pass as ``before`` for the next (older) page; null on the last.
    next_before: int | None

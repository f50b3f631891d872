"""Provisioning's request and response bodies; their limits are the validation (msgspec checks them)."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import datetime
from typing import Annotated, Literal, get_args

import msgspec
from msgspec import Meta

from shared.events import ScreenConfig
from shared.validation import FieldInvalid

# `$` alone would also match before a trailing newline; (?!\n) refuses that (and stays valid
# ECMAScript, as JSON Schema patterns must).
PAIRING_CODE_PATTERN = r"^[A-Z0-9]{8}(?!\n)$"
# Either separator, but one kind throughout (the backreference): 00:11:22:33:44:55 or 00-11-...
MAC_PATTERN = r"^[0-9A-Fa-f]{2}([:-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}(?!\n)$"
# What a pattern means, in words: the API document shows it, and a refused value is told it.
PairingCode = Annotated[str, Meta(pattern=PAIRING_CODE_PATTERN, description="8 characters A-Z or 0-9")]
MacAddress = Annotated[
    str,
    Meta(
        pattern=MAC_PATTERN,
        description="a MAC address: six pairs of hex digits, all separated by ':' or all by '-', "
        "like 00:1A:2B:3C:4D:5E",
    ),
]

Text = Annotated[str, Meta(min_length=1, max_length=100)]
Label = Annotated[str, Meta(max_length=200)]
CodeStatusName = Literal["pending", "bound", "expired", "superseded", "revoked"]
DeviceStatus = Literal["active", "suspended"]


class Body(msgspec.Struct, kw_only=True, rename="camel"):
    """camelCase on the wire; unknown fields are ignored (TV apps may be newer than we are)."""


class NewCode(Body):
    screen_id: uuid.UUID


class CodeCreated(Body):
    code: str
    screen_id: uuid.UUID
    tenant_id: uuid.UUID
    status: CodeStatusName
    expires_at: datetime


class CodeStatus(Body):
    code: str
    status: CodeStatusName
    screen_id: uuid.UUID
    device_id: uuid.UUID | None
    expires_at: datetime
    bound_at: datetime | None


class ReportedDeviceInfo(Body):
    """What a TV said it is, each part optional: device-first pairing asks only for the client id
    (RFC 8628 §3.1), so a device paired that way may have said little or nothing. What it did say
    is held to the limits of ``DeviceInfo``."""

    manufacturer: Text | None = None
    model: Text | None = None
    os_version: Text | None = None
    app_version: Text | None = None
    mac_address: MacAddress | None = None
    ip_address: Annotated[str, Meta(max_length=45)] | None = None
    device_name: Label | None = None
    location_hint: Label | None = None
    # Stable across factory resets (serial, board id): what recovery recognises the TV by.
    hardware_id: Text | None = None

    def __post_init__(self) -> None:
        if self.ip_address is None:
            return
        try:
            ipaddress.ip_address(self.ip_address)
        except ValueError:
            raise FieldInvalid("ip_address", "must be an IPv4 or IPv6 address") from None


class DeviceInfo(ReportedDeviceInfo):
    """The description a TV must give where it pairs with a code, a token, a serial or a claim."""

    manufacturer: Text
    model: Text
    os_version: Text
    app_version: Text
    mac_address: MacAddress
    ip_address: Annotated[str, Meta(max_length=45)]


class Registration(Body):
    pairing_code: PairingCode
    device_info: DeviceInfo


class Registered(Body, omit_defaults=True):
    device_id: uuid.UUID
    screen_id: uuid.UUID
    api_key: str
    tenant_id: uuid.UUID
    config: ScreenConfig
    # Only for a TV that reported a hardwareId: shown once; keep it apart from the app's data.
    recovery_secret: str | None = None


# A secret we issued: its prefix, then 32 random bytes in url-safe base64.
def _secret_pattern(prefix: str) -> str:
    return rf"^{prefix}[A-Za-z0-9_-]{{43}}(?!\n)$"


def _secret(prefix: str, what: str) -> Meta:
    return Meta(
        pattern=_secret_pattern(prefix),
        description=f"{what} as issued: {prefix} and 43 characters A-Z, a-z, 0-9, '-' or '_'",
    )


class Recovery(Body):
    hardware_id: Text
    recovery_secret: Annotated[str, _secret("drs_", "the recovery secret")]


class NewProvisioningToken(Body):
    screen_id: uuid.UUID
    ttl_seconds: Annotated[int, Meta(ge=60, le=3600)] = 600


class ProvisioningTokenCreated(Body):
    token: str
    screen_id: uuid.UUID
    tenant_id: uuid.UUID
    expires_at: datetime


class TokenProvisioning(Body):
    provisioning_token: Annotated[str, _secret("dpt_", "a provisioning token")]
    device_info: DeviceInfo


class Device(Body):
    id: uuid.UUID
    tenant_id: uuid.UUID
    screen_id: uuid.UUID
    status: DeviceStatus
    # A device paired device-first may have described itself in part, or not at all.
    device_info: ReportedDeviceInfo
    registered_at: datetime
    revoked_at: datetime | None
    revoke_reason: str | None


class DevicePage(Body):
    items: list[Device]
    next_cursor: str | None


class Revocation(Body):
    reason: Annotated[str, Meta(max_length=500)] | None = None


class Revoked(Body):
    id: uuid.UUID
    status: DeviceStatus
    screen_id: uuid.UUID
    revoked_at: datetime
    reason: str | None


AuditAction = Literal["bound", "unbound", "recovered"]
# How a device got bound or unbound: one name per flow (docs/flows.md).
BindingMethod = Literal[
    "code", "recovery", "provisioning_token", "serial", "claim", "device_authorization", "revoke", "logout"
]


class AuditEntry(Body):
    id: int  # the entry's sequence number in the tenant's trail
    at: datetime
    device_id: uuid.UUID
    screen_id: uuid.UUID
    action: AuditAction
    method: BindingMethod
    # "client:<clientId>" (a tenant admin), "device:<deviceId>" (the TV itself: with its key, or
    # proving itself with a code, token, serial or recovery secret), "operator".
    actor: str
    client_address: str | None
    reason: str | None


class AuditPage(Body):
    items: list[AuditEntry]
    # Pass as ``before`` for the next (older) page; null on the last.
    next_before: int | None


class AuditTrail(Body):
    items: list[AuditEntry]


# ---- device-first pairing (RFC 8628): OAuth's own field names on the OAuth endpoints ------------


class DeviceAuthorizationStarted(msgspec.Struct, kw_only=True):
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


class DeviceTokenResponse(msgspec.Struct, kw_only=True):
    """RFC 6749 §5.1's token response; the access token is the device key (``dak_``)."""

    access_token: str
    token_type: str
    device_id: uuid.UUID = msgspec.field(name="deviceId")
    screen_id: uuid.UUID = msgspec.field(name="screenId")
    tenant_id: uuid.UUID = msgspec.field(name="tenantId")
    config: ScreenConfig


DeviceAuthorizationStatus = Literal["pending", "approved", "denied", "delivered", "expired"]


class DeviceAuthorization(Body):
    """What an admin sees before approving: where the TV asked from (the address this service saw,
    behind the trusted proxies), and whatever it said it is (any part may be null: RFC 8628 asks a
    TV for nothing but the client id, and what it says is its own claim anyway)."""

    user_code: str
    status: DeviceAuthorizationStatus
    device_info: ReportedDeviceInfo
    requested_from: str | None
    created_at: datetime
    expires_at: datetime
    screen_id: uuid.UUID | None


class Approval(Body):
    screen_id: uuid.UUID


# ---- pre-provisioned devices and claim mode -----------------------------------------------------

ClaimCode = PairingCode  # a claim code has a pairing code's shape


class NewFactoryDevices(Body):
    count: Annotated[int, Meta(ge=1, le=1000)]


class FactoryDevice(Body):
    device_id: uuid.UUID
    api_key: str


class FactoryDevices(Body):
    """Ids and keys to flash into devices: shown once."""

    items: list[FactoryDevice]


class ClaimModeRequest(Body):
    device_id: uuid.UUID
    device_info: DeviceInfo
    duration_seconds: Annotated[int, Meta(ge=30, le=900)] = 300


class ClaimMode(Body):
    claim_code: str
    claim_expiration_time: datetime


class Claim(Body):
    claim_code: ClaimCode
    screen_id: uuid.UUID


# ---- serial numbers registered ahead ------------------------------------------------------------

SERIAL_PATTERN = r"^[A-Za-z0-9._:-]{1,100}(?!\n)$"  # no "/": serials are addressed in paths
SerialNumber = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=100,
        pattern=SERIAL_PATTERN,
        description="1 to 100 characters A-Z, a-z, 0-9, '.', '_', ':' or '-' (no '/')",
    ),
]
# assigned (by the operator, not mapped to a screen yet) → registered (mapped, never enabled) →
# enabled (window open) → expired (window closed: enable again) → activated (a device used it: once)
SerialStatus = Literal["assigned", "registered", "enabled", "expired", "activated"]
SERIAL_STATUSES: tuple[str, ...] = get_args(SerialStatus)


class SerialAssignment(Body):
    serial: SerialNumber
    tenant_id: uuid.UUID


class SerialAssignments(Body):
    """The operator's assignment of serials to tenants (the vendor knows whose devices they are)."""

    serials: Annotated[list[SerialAssignment], Meta(min_length=1, max_length=10_000)]


class SerialsAssigned(Body):
    assigned: int  # new serials
    moved: int  # from another tenant (with move=true)
    unchanged: int  # assigned to that tenant already


class SerialRow(Body):
    serial: SerialNumber
    screen_id: uuid.UUID


class SerialUpload(Body):
    serials: Annotated[list[SerialRow], Meta(min_length=1, max_length=10_000)]


class SerialsUploaded(Body):
    created: int  # mapped to a screen for the first time
    updated: int  # mapped to another screen
    unchanged: int


class Serial(Body):
    serial: str
    screen_id: uuid.UUID | None  # None while only assigned
    status: SerialStatus
    created_at: datetime
    enabled_until: datetime | None
    activated_at: datetime | None
    device_id: uuid.UUID | None


class SerialPage(Body):
    items: list[Serial]
    next_cursor: str | None


class Enablement(Body):
    window_minutes: Annotated[int, Meta(ge=1, le=7 * 24 * 60)] = 60


class Activation(Body):
    serial: SerialNumber
    device_info: DeviceInfo

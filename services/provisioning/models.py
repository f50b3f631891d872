"""Provisioning's request and response bodies; their limits are the validation (msgspec checks them)."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from shared.events import ScreenConfig

# `$` alone would also match before a trailing newline; (?!\n) refuses that (and stays valid
# ECMAScript, as JSON Schema patterns must).
PAIRING_CODE_PATTERN = r"^[A-Z0-9]{8}(?!\n)$"
# Either separator, but one kind throughout (the backreference): 00:11:22:33:44:55 or 00-11-...
MAC_PATTERN = r"^[0-9A-Fa-f]{2}([:-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}(?!\n)$"

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


class DeviceInfo(Body):
    manufacturer: Text
    model: Text
    os_version: Text
    app_version: Text
    mac_address: Annotated[str, Meta(pattern=MAC_PATTERN)]
    ip_address: Annotated[str, Meta(max_length=45)]
    device_name: Label | None = None
    location_hint: Label | None = None

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.ip_address)
        except ValueError:
            raise ValueError("`ipAddress` must be a valid IPv4 or IPv6 address") from None


class Registration(Body):
    pairing_code: Annotated[str, Meta(pattern=PAIRING_CODE_PATTERN)]
    device_info: DeviceInfo


class Registered(Body):
    device_id: uuid.UUID
    screen_id: uuid.UUID
    api_key: str
    tenant_id: uuid.UUID
    config: ScreenConfig


class Device(Body):
    id: uuid.UUID
    tenant_id: uuid.UUID
    screen_id: uuid.UUID
    status: DeviceStatus
    device_info: DeviceInfo
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

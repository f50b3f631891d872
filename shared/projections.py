"""KV buckets that the gateway serves polls from, the revoked clients every admin API refuses, and
the values in them (owners write, the services that need them read).

A value is written by its owner's outbox relay in the same order as the database changes, so the
bucket always converges to Postgres; the bucket can be rebuilt from Postgres at any time.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from shared.events import ScreenConfig, whole_numbers_as_ints

DEVICE_KEYS_BUCKET = "device-keys"
SCREEN_CONTENT_BUCKET = "screen-content"
# API clients revoked within an access token's lifetime: every service with an admin API holds them.
REVOKED_CLIENTS_BUCKET = "revoked-clients"
# Files devices download by name (GET /v1/device/content/{name}): a JetStream object store.
DEVICE_FILES_BUCKET = "device-files"
# What each screen's TV has still to carry out (the remote commands of admins).
DEVICE_COMMANDS_BUCKET = "device-commands"
# Screenshots TVs took on command, until their admins read them: an object store, entries aging out.
SCREENSHOTS_BUCKET = "screenshots"


class DeviceKeyEntry(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``device-keys``: sha256(key) hex → who the key belongs to. Revoked keys stay, marked, so the
    gateway can tell a TV "revoked, pair again" (401 ``device_revoked``) rather than "unknown",
    until provisioning purges them after REVOKED_KEY_RETENTION_HOURS."""

    v: int = 1
    device_id: uuid.UUID
    screen_id: uuid.UUID
    tenant_id: uuid.UUID
    status: Literal["active", "revoked"]


class RevokedClient(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``revoked-clients``: client id → until when an access token it got before its revocation
    could still live (its revocation time plus the tokens' lifetime); past that, the entry says
    nothing a token's own expiry does not, and it is dropped."""

    v: int = 1
    tenant_id: uuid.UUID
    revoked_at: datetime
    until: datetime


class PlaylistItem(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    type: Literal["image", "video", "web"]
    url: Annotated[
        str,
        msgspec.Meta(
            max_length=2048,
            pattern=r"^https?://[^\s]+(?!\n)$",
            description="an http:// or https:// URL without spaces",
        ),
    ]
    duration_seconds: Annotated[float, msgspec.Meta(gt=0, le=86400)]

    def __post_init__(self) -> None:
        whole_numbers_as_ints(self, "duration_seconds")


class ScreenContent(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``screen-content``: screen id → what its TV shows and how it behaves."""

    v: int = 1
    screen_id: uuid.UUID
    tenant_id: uuid.UUID
    playlist_version: int
    items: list[PlaylistItem]
    config: ScreenConfig


def device_key_digest(api_key: str) -> bytes:
    """What is stored of a ``dak_`` key (never the key): its SHA-256, as provisioning keeps it and
    the gateway looks it up. A key holding what no key holds (undecodable header bytes) still hashes,
    to a digest no key has."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).digest()


def device_key_name(digest: bytes) -> str:
    """The key's entry name in ``device-keys``: its digest in hex."""
    return digest.hex()


def device_key_digest_of(name: str) -> bytes:
    """The digest an entry of ``device-keys`` is named by (the inverse of :func:`device_key_name`);
    ValueError for a name that is not one."""
    return bytes.fromhex(name)


class OpenCommand(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A command a TV is to carry out, as the TV gets it (``GET /v1/device/commands``)."""

    id: uuid.UUID
    type: str
    args: dict[str, Any]
    expires_at: datetime


class ScreenCommands(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``device-commands``: screen id → its open commands (pending, or delivered and not yet
    reported), oldest first. Registry rewrites the entry whenever one opens or closes (created;
    succeeded, failed, expired or cancelled); an entry without items is a screen with none. The
    gateway leaves out those past ``expires_at`` before the registry's sweep has closed them."""

    v: int = 1
    screen_id: uuid.UUID
    tenant_id: uuid.UUID
    items: list[OpenCommand]


def screenshot_object(tenant_id: uuid.UUID, command_id: uuid.UUID) -> str:
    """A screenshot's name in its store: the tenant's, by the command that asked for it."""
    return f"{tenant_id}/{command_id}"


def kv_stream(bucket: str) -> str:
    """The JetStream stream that holds ``bucket``'s entries (a KV bucket is a stream underneath)."""
    return f"KV_{bucket}"


def kv_prefix(bucket: str) -> str:
    """What the subject of every entry of ``bucket`` starts with; the entry's name follows it."""
    return f"$KV.{bucket}."


def kv_subject(bucket: str, key: str) -> str:
    # A KV put is a JetStream publish to this subject, which lets the outbox relay write KV entries
    # exactly like events: in order, with Nats-Msg-Id de-duplication.
    return kv_prefix(bucket) + key


class DeviceFileMeta(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Kept with each file in the object store (its description): what the gateway needs to serve
    it and to decide who may. An empty ``screen_ids`` is every screen of the tenant."""

    content_type: str
    screen_ids: tuple[uuid.UUID, ...] = ()


# The name a file is stored and downloaded under: 1-200 of A-Z a-z 0-9 . _ -, not starting with . _ -
DEVICE_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def is_device_file_name(name: str) -> bool:
    return DEVICE_FILE_NAME.fullmatch(name) is not None


def device_file_object(tenant_id: uuid.UUID, name: str) -> str:
    """The object's name in the store: files are the tenant's, by name."""
    return f"{tenant_id}/{name}"


def device_file_etag(digest: str | None) -> str:
    """A strong validator from the object store's SHA-256 of the content (``SHA-256=<base64>``)."""
    return '"' + (digest or "").removeprefix("SHA-256=") + '"'


def device_file_meta(description: str | None) -> DeviceFileMeta:
    if not description:
        return DeviceFileMeta(content_type="application/octet-stream")
    return msgspec.json.decode(description, type=DeviceFileMeta)

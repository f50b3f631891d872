"""The gateway's in-memory view of the ``device-keys`` and ``screen-content`` buckets.

Every worker watches both buckets and answers polls from these dicts alone: no database and no
network on the poll path. Bodies and ETags are encoded once, when content changes, not per poll.

Applying a change wakes the polls held on it (:mod:`services.device_gateway.waits`): a screen's
new content answers its TV's waiting poll, a device's revoked or deleted key answers its waiting
polls 401.

A replica holds every key of the fleet, so a key's entry is one packed ``bytes`` (device, screen
and tenant ids, status: 49 bytes) under its 32-byte digest: about 200 bytes per key with the dict's
share, where a Struct of three UUID objects took over 650 (``make bench`` measures it).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import msgspec
import structlog
from nats.aio.client import Client as NATS

from services.device_gateway.waits import CONTENT, DEVICE, Waits
from shared.kv_watch import watch_bucket
from shared.projections import (
    DEVICE_KEYS_BUCKET,
    SCREEN_CONTENT_BUCKET,
    DeviceKeyEntry,
    PlaylistItem,
    ScreenContent,
    device_key_digest,
    device_key_digest_of,
)

log = structlog.get_logger()

_key_entry = msgspec.json.Decoder(DeviceKeyEntry)
_content = msgspec.json.Decoder(ScreenContent)
_encoder = msgspec.json.Encoder()


_ACTIVE, _REVOKED = b"\x01", b"\x00"


def pack_key_entry(entry: DeviceKeyEntry) -> bytes:
    status = _ACTIVE if entry.status == "active" else _REVOKED
    return entry.device_id.bytes + entry.screen_id.bytes + entry.tenant_id.bytes + status


class DeviceKey:
    """The owner of a device key, read from its packed entry when a request presents the key."""

    __slots__ = ("_packed",)

    def __init__(self, packed: bytes) -> None:
        self._packed = packed

    @property
    def revoked(self) -> bool:
        return self._packed[48:] != _ACTIVE

    @property
    def device(self) -> bytes:
        """The device id's 16 bytes: what its waiting polls are woken by."""
        return self._packed[:16]

    @property
    def screen(self) -> bytes:
        """The screen id's 16 bytes: the key of :attr:`Projections.screens`."""
        return self._packed[16:32]

    @property
    def device_id(self) -> uuid.UUID:
        return uuid.UUID(bytes=self._packed[:16])

    @property
    def screen_id(self) -> uuid.UUID:
        return uuid.UUID(bytes=self._packed[16:32])

    @property
    def tenant_id(self) -> uuid.UUID:
        return uuid.UUID(bytes=self._packed[32:48])

    def id_texts(self) -> tuple[str, str, str]:
        """The tenant, screen and device ids as ``str(uuid.UUID(...))`` writes them, made from one
        hex string: a heartbeat needs their text, and three ``UUID`` objects (made in Python) and
        their conversions were a tenth of its CPU."""
        h = self._packed[:48].hex()
        return (
            f"{h[64:72]}-{h[72:76]}-{h[76:80]}-{h[80:84]}-{h[84:96]}",
            f"{h[32:40]}-{h[40:44]}-{h[44:48]}-{h[48:52]}-{h[52:64]}",
            f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}",
        )


class ScreenView(msgspec.Struct, frozen=True, gc=False):
    playlist_body: bytes
    playlist_etag: str
    config_body: bytes
    config_etag: str


class PlaylistBody(msgspec.Struct, rename="camel"):
    screen_id: uuid.UUID
    version: int
    items: list[PlaylistItem]


def _etag(body: bytes) -> str:
    # Derived from the bytes served, so equal content always has one ETag on every replica.
    return '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


def screen_view(content: ScreenContent) -> ScreenView:
    playlist = _encoder.encode(
        PlaylistBody(screen_id=content.screen_id, version=content.playlist_version, items=content.items)
    )
    config = _encoder.encode(content.config)
    return ScreenView(
        playlist_body=playlist,
        playlist_etag=_etag(playlist),
        config_body=config,
        config_etag=_etag(config),
    )


class Projections:
    def __init__(self, waits: Waits | None = None) -> None:
        # Without the app's Waits (a projection alone, in a test) nobody waits to be woken.
        self.waits = waits if waits is not None else Waits(limit=0, max_seconds=0)
        self.keys: dict[bytes, bytes] = {}  # device_key_digest(key) -> pack_key_entry(...)
        self.screens: dict[bytes, ScreenView] = {}  # screen id's bytes -> its view
        self.ready = False  # both buckets loaded
        self._loaded = {DEVICE_KEYS_BUCKET: asyncio.Event(), SCREEN_CONTENT_BUCKET: asyncio.Event()}

    async def wait_ready(self) -> None:
        await asyncio.gather(*(event.wait() for event in self._loaded.values()))

    def lookup(self, api_key: str) -> DeviceKey | None:
        packed = self.keys.get(device_key_digest(api_key))
        return None if packed is None else DeviceKey(packed)

    def apply_key(self, key: str, value: bytes | None) -> None:
        digest = device_key_digest_of(key)
        if value is None:
            old = self.keys.pop(digest, None)
        else:
            old = self.keys.get(digest)
            self.keys[digest] = packed = pack_key_entry(_key_entry.decode(value))
            if old == packed:
                return
        if old is not None:  # revoked, deleted or rebound: the device's waiting polls look again
            self.waits.wake((DEVICE, old[:16]))

    def apply_content(self, key: str, value: bytes | None) -> None:
        screen = uuid.UUID(key).bytes
        if value is None:
            self.screens.pop(screen, None)
        else:
            self.screens[screen] = screen_view(_content.decode(value))
        self.waits.wake((CONTENT, screen))

    async def watch(self, nc: NATS, bucket: str) -> None:
        """Follow ``bucket`` forever: first its current values (then ready), then every change."""
        apply = self.apply_key if bucket == DEVICE_KEYS_BUCKET else self.apply_content
        await watch_bucket(nc, bucket, apply, lambda: self._mark_loaded(bucket))

    def _mark_loaded(self, bucket: str) -> None:
        self._loaded[bucket].set()
        self.ready = all(event.is_set() for event in self._loaded.values())
        log.info("projection_loaded", bucket=bucket, keys=len(self.keys), screens=len(self.screens))

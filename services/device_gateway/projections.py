"""The gateway's in-memory view of the ``device-keys`` and ``screen-content`` buckets.

Every worker watches both buckets and answers polls from these dicts alone: no database and no
network on the poll path. Bodies and ETags are encoded once, when content changes, not per poll.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import msgspec
import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE

from shared.projections import (
    DEVICE_KEYS_BUCKET,
    SCREEN_CONTENT_BUCKET,
    DeviceKeyEntry,
    PlaylistItem,
    ScreenContent,
)

log = structlog.get_logger()

_key_entry = msgspec.json.Decoder(DeviceKeyEntry)
_content = msgspec.json.Decoder(ScreenContent)
_encoder = msgspec.json.Encoder()


class DeviceKey(msgspec.Struct, frozen=True, gc=False):
    device_id: uuid.UUID
    screen_id: uuid.UUID
    tenant_id: uuid.UUID
    revoked: bool


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
    def __init__(self) -> None:
        self.keys: dict[bytes, DeviceKey] = {}
        self.screens: dict[uuid.UUID, ScreenView] = {}
        self._loaded = {DEVICE_KEYS_BUCKET: asyncio.Event(), SCREEN_CONTENT_BUCKET: asyncio.Event()}

    @property
    def ready(self) -> bool:
        return all(event.is_set() for event in self._loaded.values())

    async def wait_ready(self) -> None:
        await asyncio.gather(*(event.wait() for event in self._loaded.values()))

    def lookup(self, api_key: str) -> DeviceKey | None:
        return self.keys.get(hashlib.sha256(api_key.encode()).digest())

    def apply_key(self, key: str, value: bytes | None) -> None:
        digest = bytes.fromhex(key)
        if value is None:
            self.keys.pop(digest, None)
            return
        entry = _key_entry.decode(value)
        self.keys[digest] = DeviceKey(
            device_id=entry.device_id,
            screen_id=entry.screen_id,
            tenant_id=entry.tenant_id,
            revoked=entry.status != "active",
        )

    def apply_content(self, key: str, value: bytes | None) -> None:
        screen_id = uuid.UUID(key)
        if value is None:
            self.screens.pop(screen_id, None)
            return
        self.screens[screen_id] = screen_view(_content.decode(value))

    async def watch(self, js: JetStreamContext, bucket: str) -> None:
        """Follow ``bucket`` forever: first its current values (then ready), then every change."""
        apply = self.apply_key if bucket == DEVICE_KEYS_BUCKET else self.apply_content
        while True:
            try:
                kv = await js.key_value(bucket)
                watcher = await kv.watchall()
                async for entry in watcher:
                    if entry is None:  # the marker after the initial values
                        self._loaded[bucket].set()
                        log.info("projection_loaded", bucket=bucket, keys=len(self.keys), screens=len(self.screens))
                        continue
                    try:
                        deleted = entry.operation in (KV_DEL, KV_PURGE)
                        apply(entry.key, None if deleted else entry.value)
                    except (ValueError, msgspec.DecodeError) as exc:
                        log.error("projection_entry_undecodable", bucket=bucket, key=entry.key, error=str(exc))
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                log.warning("projection_watch_restarting", bucket=bucket, error=str(exc))
                await asyncio.sleep(1)

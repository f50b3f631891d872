"""The gateway's in-memory view of the ``device-keys`` and ``screen-content`` buckets.

Every worker watches both buckets and answers polls from these dicts alone: no database and no
network on the poll path. Bodies and ETags are encoded once, when content changes, not per poll.

A replica holds every key of the fleet, so a key's entry is one packed ``bytes`` (device, screen
and tenant ids, status: 49 bytes) under its 32-byte digest: about 200 bytes per key with the dict's
share, where a Struct of three UUID objects took over 650 (``make bench`` measures it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid

import msgspec
import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KV_DEL, KV_PURGE

from shared.projections import (
    DEVICE_KEYS_BUCKET,
    SCREEN_CONTENT_BUCKET,
    DeviceKeyEntry,
    PlaylistItem,
    ScreenContent,
    device_key_digest,
    device_key_digest_of,
    kv_prefix,
    kv_stream,
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
            self.keys.pop(digest, None)
        else:
            self.keys[digest] = pack_key_entry(_key_entry.decode(value))

    def apply_content(self, key: str, value: bytes | None) -> None:
        screen = uuid.UUID(key).bytes
        if value is None:
            self.screens.pop(screen, None)
        else:
            self.screens[screen] = screen_view(_content.decode(value))

    async def watch(self, js: JetStreamContext, bucket: str) -> None:
        """Follow ``bucket`` forever: first its current values (then ready), then every change.

        Our own ordered consumer rather than nats-py's ``KeyValue.watchall``: that one queues every
        entry without bound, so loading a million keys held them all in memory at once, and the
        garbage left the heap fragmented (RSS per key more than twice the entries' size). Applying
        each message in the subscription's callback lets JetStream's flow control pace the load.
        """
        apply = self.apply_key if bucket == DEVICE_KEYS_BUCKET else self.apply_content
        prefix = kv_prefix(bucket)
        loaded = self._loaded[bucket]

        async def on_message(message: Msg) -> None:
            headers = message.headers or {}
            deleted = headers.get("KV-Operation") in (KV_DEL, KV_PURGE) or "Nats-Marker-Reason" in headers
            key = message.subject[len(prefix) :]
            try:
                apply(key, None if deleted else message.data)
            except (ValueError, msgspec.DecodeError) as exc:
                log.error("projection_entry_undecodable", bucket=bucket, key=key, error=str(exc))
            if not loaded.is_set() and message.metadata.num_pending == 0:
                self._mark_loaded(bucket)

        while True:
            subscription = None
            try:
                subscription = await js.subscribe(
                    prefix + ">",
                    stream=kv_stream(bucket),
                    cb=on_message,
                    ordered_consumer=True,
                    deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
                )
                info = await subscription.consumer_info()
                # The server always reports ``delivered``; were it absent, nothing was delivered yet.
                delivered = info.delivered.consumer_seq if info.delivered is not None else 0
                if info.num_pending == 0 and delivered == 0:  # an empty bucket
                    self._mark_loaded(bucket)
                await asyncio.Future()  # the callback does the work until we are cancelled
            except (TimeoutError, nats.errors.Error) as exc:
                log.warning("projection_watch_restarting", bucket=bucket, error=str(exc))
                await asyncio.sleep(1)
            finally:
                if subscription is not None:
                    with contextlib.suppress(nats.errors.Error):
                        await subscription.unsubscribe()

    def _mark_loaded(self, bucket: str) -> None:
        self._loaded[bucket].set()
        self.ready = all(event.is_set() for event in self._loaded.values())
        log.info("projection_loaded", bucket=bucket, keys=len(self.keys), screens=len(self.screens))

"""The scale part's fleet, loaded straight into the services' tables and the gateway's buckets.

What the API would leave behind once every event was delivered: registry's venues and screens
(active, bound, with a playlist), provisioning's copy of the screens, its devices and their keys'
hashes, the heartbeat service's copy of the screens and a presence row per screen (online, last
heard within the minute), and the ``device-keys`` and ``screen-content`` entries the outbox
relays would have put. Bulk: binary COPY for the rows, core NATS publishes for the KV puts (a KV
put is a publish to ``$KV.<bucket>.<key>``).

Each table's rows are made by one small function below: when a service's tables change, that
function is the one to adapt.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from shared import bus
from shared.bus_access import SETUP_USER
from shared.events import Heartbeat, ScreenConfig
from shared.projections import (
    DEVICE_KEYS_BUCKET,
    SCREEN_CONTENT_BUCKET,
    DeviceKeyEntry,
    PlaylistItem,
    ScreenContent,
    device_key_digest,
    device_key_name,
    kv_stream,
    kv_subject,
)
from shared.settings import Settings

SCREENS_PER_VENUE = 10
# A TV's device info as a registration stores it.
DEVICE_INFO = {
    "manufacturer": "Sony",
    "model": "BRAVIA-55",
    "osVersion": "Android 12",
    "appVersion": "2.3.1",
    "macAddress": "00:11:22:33:44:55",
    "ipAddress": "192.168.1.100",
    "deviceName": "Lobby Screen",
    "locationHint": "Front desk",
}


@dataclass
class ScaleFleet:
    """``count`` screens of one tenant, each with its venue, its active device and that device's
    key; ``created_at`` increases with the index (the order screen listings page in)."""

    tenant_id: uuid.UUID
    count: int
    venue_ids: list[uuid.UUID] = field(default_factory=list)
    screen_ids: list[uuid.UUID] = field(default_factory=list)
    device_ids: list[uuid.UUID] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    created_at: list[datetime] = field(default_factory=list)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def make(cls, tenant_id: uuid.UUID, count: int) -> ScaleFleet:
        fleet = cls(tenant_id, count)
        run = uuid.uuid4().hex[:8]
        fleet.venue_ids = [uuid.uuid4() for _ in range(max(1, count // SCREENS_PER_VENUE))]
        fleet.screen_ids = [uuid.uuid4() for _ in range(count)]
        fleet.device_ids = [uuid.uuid4() for _ in range(count)]
        fleet.keys = [f"dak_scale{run}{index:010d}" for index in range(count)]
        start = fleet.now - timedelta(days=30)
        fleet.created_at = [start + timedelta(milliseconds=index) for index in range(count)]
        return fleet

    def venue_of(self, index: int) -> uuid.UUID:
        return self.venue_ids[index % len(self.venue_ids)]

    def last_seen(self, index: int) -> datetime:
        """Heard from within the last minute (every screen reports once a minute)."""
        return self.now - timedelta(milliseconds=(index * 7919) % 60_000)

    def heartbeat(self, index: int, received_at: datetime) -> Heartbeat:
        """What a TV following docs/tv-app.md reports, as the gateway publishes it."""
        return Heartbeat(
            tenant_id=self.tenant_id,
            screen_id=self.screen_ids[index],
            device_id=self.device_ids[index],
            received_at=received_at,
            uptime_seconds=86_400 + index % 100_000,
            app_version="2.3.1",
            free_storage_mb=10_240.5,
            temperature_c=41.5,
            playing=playlist(self.tenant_id, index)[index % 6].url,
        )


def playlist(tenant_id: uuid.UUID, index: int) -> list[PlaylistItem]:
    """Six items as a venue's loop has them: images and videos on a CDN, one web page."""
    base = f"https://cdn.example-signage.com/tenants/{tenant_id}/media"
    return [
        PlaylistItem(type="image", url=f"{base}/welcome-{index % 97}.png", duration_seconds=10),
        PlaylistItem(type="video", url=f"{base}/promo-autumn-{index % 13}.mp4", duration_seconds=30),
        PlaylistItem(type="image", url=f"{base}/menu-breakfast.jpg", duration_seconds=15),
        PlaylistItem(type="video", url=f"{base}/brand-loop-2026.mp4", duration_seconds=45),
        PlaylistItem(
            type="web", url="https://status.example-signage.com/board?venue=lobby", duration_seconds=20
        ),
        PlaylistItem(type="image", url=f"{base}/opening-hours.png", duration_seconds=10),
    ]


# ---- the rows, table by table ---------------------------------------------------------------------


async def _copy(
    conn: asyncpg.Connection, schema: str, table: str, columns: list[str], rows: Iterable[tuple]
) -> None:
    await conn.copy_records_to_table(table, schema_name=schema, columns=columns, records=rows)


async def registry_rows(conn: asyncpg.Connection, fleet: ScaleFleet) -> None:
    """Venues and screens (the tenant itself was signed up through the API)."""
    await _copy(
        conn,
        "registry",
        "venues",
        ["id", "tenant_id", "name", "timezone", "created_at", "updated_at"],
        (
            (venue, fleet.tenant_id, f"Venue {n}", "Europe/Berlin", fleet.now, fleet.now)
            for n, venue in enumerate(fleet.venue_ids)
        ),
    )
    encode = msgspec.json.encode

    def screens() -> Iterator[tuple]:
        for n in range(fleet.count):
            at = fleet.created_at[n]
            items = encode(playlist(fleet.tenant_id, n)).decode()
            yield (
                fleet.screen_ids[n], fleet.tenant_id, fleet.venue_of(n), f"Screen {n}", "active",
                fleet.device_ids[n], 1, "online", fleet.last_seen(n), 3, 1, items, at, at, at, 1,
            )  # fmt: skip

    await _copy(
        conn,
        "registry",
        "screens",
        [
            "id", "tenant_id", "venue_id", "name", "state", "device_id", "binding_seq", "presence",
            "last_seen_at", "version", "playlist_version", "playlist_items", "playlist_updated_at",
            "created_at", "updated_at", "presence_seq",
        ],
        screens(),
    )  # fmt: skip


async def provisioning_rows(conn: asyncpg.Connection, fleet: ScaleFleet) -> None:
    """Provisioning's copy of the screens, one active device per screen, and its key's hash."""
    await _copy(
        conn,
        "provisioning",
        "screens",
        ["id", "tenant_id", "version", "binding_seq"],
        ((screen, fleet.tenant_id, 3, 1) for screen in fleet.screen_ids),
    )
    info = msgspec.json.encode(DEVICE_INFO).decode()
    await _copy(
        conn,
        "provisioning",
        "devices",
        ["id", "tenant_id", "screen_id", "status", "device_info", "registered_from", "registered_at"],
        (
            (fleet.device_ids[n], fleet.tenant_id, fleet.screen_ids[n], "active", info, "192.168.1.100",
             fleet.created_at[n])
            for n in range(fleet.count)
        ),
    )  # fmt: skip
    await _copy(
        conn,
        "provisioning",
        "device_keys",
        ["key_hash", "device_id", "created_at"],
        (
            (device_key_digest(fleet.keys[n]), fleet.device_ids[n], fleet.created_at[n])
            for n in range(fleet.count)
        ),
    )


async def heartbeat_rows(conn: asyncpg.Connection, fleet: ScaleFleet, *, online_for: timedelta) -> None:
    """The heartbeat service's copy of the screens and their presence: online, last heard within
    the minute. The deadline is ``online_for`` away rather than three intervals: the bench's fleet
    sends no heartbeats between measurements and must not go offline meanwhile."""
    await _copy(
        conn,
        "heartbeat",
        "screens",
        ["id", "tenant_id", "version", "heartbeat_interval_minutes"],
        ((screen, fleet.tenant_id, 3, 1) for screen in fleet.screen_ids),
    )
    encoder = msgspec.json.Encoder()

    def presence() -> Iterator[tuple]:
        for n in range(fleet.count):
            seen = fleet.last_seen(n)
            report = encoder.encode(fleet.heartbeat(n, seen)).decode()
            yield (
                fleet.screen_ids[n], fleet.tenant_id, fleet.device_ids[n], seen, report, "online",
                fleet.now + online_for, 1,
            )  # fmt: skip

    await _copy(
        conn,
        "heartbeat",
        "presence",
        [
            "screen_id", "tenant_id", "device_id", "last_seen_at", "last_heartbeat", "status",
            "offline_after", "presence_seq",
        ],
        presence(),
    )  # fmt: skip


async def keep_online(conn: asyncpg.Connection, tenant_id: uuid.UUID, online_for: timedelta) -> None:
    """Moves the deadline of the tenant's online screens ``online_for`` ahead (after the bench's own
    heartbeats set three intervals), so the detector finds nothing overdue between measurements."""
    await conn.execute(
        "UPDATE heartbeat.presence SET offline_after = now() + $2::interval"
        " WHERE tenant_id = $1 AND status = 'online'",
        tenant_id,
        online_for,
    )


async def load_rows(dsn: str, fleet: ScaleFleet, *, online_for: timedelta) -> dict[str, float]:
    """Every table's rows in one transaction; seconds per service."""
    conn = await asyncpg.connect(dsn)
    seconds = {}
    try:
        async with conn.transaction():
            for name, load in (("registry", registry_rows), ("provisioning", provisioning_rows)):
                started = time.monotonic()
                await load(conn, fleet)
                seconds[name] = time.monotonic() - started
            started = time.monotonic()
            await heartbeat_rows(conn, fleet, online_for=online_for)
            seconds["heartbeat"] = time.monotonic() - started
        await conn.execute(
            "ANALYZE registry.screens, provisioning.devices, heartbeat.presence, heartbeat.screens"
        )
    finally:
        await conn.close()
    return {name: round(value, 1) for name, value in seconds.items()}


# ---- the buckets ---------------------------------------------------------------------------------


def key_entries(fleet: ScaleFleet) -> Iterator[tuple[str, bytes]]:
    """``device-keys``: each device's key, as provisioning's relay puts it."""
    encoder = msgspec.json.Encoder()
    for n in range(fleet.count):
        entry = DeviceKeyEntry(
            device_id=fleet.device_ids[n],
            screen_id=fleet.screen_ids[n],
            tenant_id=fleet.tenant_id,
            status="active",
        )
        yield device_key_name(device_key_digest(fleet.keys[n])), encoder.encode(entry)


def content_entries(fleet: ScaleFleet) -> Iterator[tuple[str, bytes]]:
    """``screen-content``: each screen's playlist and config, as registry's relay puts it."""
    encoder = msgspec.json.Encoder()
    for n in range(fleet.count):
        content = ScreenContent(
            screen_id=fleet.screen_ids[n],
            tenant_id=fleet.tenant_id,
            playlist_version=1,
            items=playlist(fleet.tenant_id, n),
            config=ScreenConfig(),
        )
        yield str(fleet.screen_ids[n]), encoder.encode(content)


async def put_entries(
    settings: Settings, bucket: str, entries: Iterable[tuple[str, bytes]]
) -> dict[str, Any]:
    """Publish the entries into ``bucket`` and wait until JetStream holds them all: how many, and
    the bytes the bucket's stream grew by."""
    nc = await bus.connect(settings, SETUP_USER)
    try:
        js = nc.jetstream()
        stream = kv_stream(bucket)
        before = (await js.stream_info(stream)).state
        count = 0
        for name, value in entries:
            await nc.publish(kv_subject(bucket, name), value)
            count += 1
            if count % 20_000 == 0:
                await nc.flush(timeout=60)
        await nc.flush(timeout=60)
        deadline = time.monotonic() + 300
        while True:
            state = (await js.stream_info(stream)).state
            if state.messages >= before.messages + count:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"JetStream stored {state.messages - before.messages} of {count} in {bucket}"
                )
            await asyncio.sleep(0.2)
        return {"entries": count, "stream_bytes": state.bytes - before.bytes}
    finally:
        await nc.close()


async def put_keys(settings: Settings, fleet: ScaleFleet) -> dict[str, Any]:
    return await put_entries(settings, DEVICE_KEYS_BUCKET, key_entries(fleet))


async def put_contents(settings: Settings, fleet: ScaleFleet) -> dict[str, Any]:
    return await put_entries(settings, SCREEN_CONTENT_BUCKET, content_entries(fleet))


def sample(count: int, size: int, seed: int = 19) -> list[int]:
    """``size`` screens of the fleet picked at random (spread over its whole index)."""
    return random.Random(seed).sample(range(count), min(size, count))

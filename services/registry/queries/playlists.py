"""A screen's playlist: its items, kept as JSON on the screen's row with a version of their own."""

from __future__ import annotations

import uuid

import asyncpg
import msgspec

from services.registry.models import Playlist
from services.registry.queries import rows
from shared.db import Connection
from shared.projections import PlaylistItem


def _playlist(row: asyncpg.Record) -> Playlist:
    return Playlist(
        screen_id=row["id"],
        version=row["playlist_version"],
        items=msgspec.convert(row["playlist_items"], list[PlaylistItem]),
        updated_at=row["playlist_updated_at"],
    )


async def get_playlist(conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID) -> Playlist:
    row = await conn.fetchrow(
        "SELECT id, playlist_version, playlist_items, playlist_updated_at FROM screens"
        " WHERE id = $1 AND tenant_id = $2",
        screen_id,
        tenant_id,
    )
    return _playlist(rows.found(row, "no such screen"))


async def replace_playlist(
    conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID, items: list[PlaylistItem]
) -> Playlist:
    row = await conn.fetchrow(
        "UPDATE screens SET playlist_items = $3, playlist_version = playlist_version + 1,"
        " playlist_updated_at = now(), updated_at = now()"
        " WHERE id = $1 AND tenant_id = $2"
        " RETURNING id, playlist_version, playlist_items, playlist_updated_at",
        screen_id,
        tenant_id,
        msgspec.to_builtins(items),
    )
    return _playlist(rows.found(row, "no such screen"))

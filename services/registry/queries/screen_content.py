"""What the gateway serves a screen: its playlist and config together, as the ``screen-content``
KV entry holds them."""

from __future__ import annotations

import uuid

import msgspec

from services.registry.queries import rows
from services.registry.queries.screen_config import CONFIG_COLUMNS, config_of
from shared.db import Connection
from shared.projections import PlaylistItem, ScreenContent


async def get_screen_content(conn: Connection, screen_id: uuid.UUID) -> ScreenContent:
    """What the gateway serves for a screen, as the ``screen-content`` KV entry holds it."""
    row = await conn.fetchrow(
        f"SELECT id, tenant_id, playlist_version, playlist_items, {CONFIG_COLUMNS}"
        " FROM screens WHERE id = $1",
        screen_id,
    )
    row = rows.found(row, "no such screen")
    return ScreenContent(
        screen_id=row["id"],
        tenant_id=row["tenant_id"],
        playlist_version=row["playlist_version"],
        items=msgspec.convert(row["playlist_items"], list[PlaylistItem]),
        config=config_of(row),
    )

"""What the admin API tests share: the ids of a list, the 401 a bad credential gets, the public half
of the key that signs access tokens, and content to change a screen with."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.auth import public_key_of
from tests.stack import Stack

PLAYLIST = {"items": [{"type": "image", "url": "https://cdn.example.com/a.png", "durationSeconds": 10}]}
CONFIG_PATCH = {"syncIntervalMinutes": 17, "cachePolicy": {"maxSizeGB": 3, "retentionDays": 2}}


def assert_unauthorized(status: int, body: Any, response: aiohttp.ClientResponse, what: str = "") -> None:
    assert status == 401, (what, status, body)
    assert body["error"] == "unauthorized", (what, body)
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer"), (what, dict(response.headers))


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def public_key(signing_key: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(b64url_decode(public_key_of(signing_key)))


async def screen_in(stack: Stack, token: str, venue_id: str, name: str) -> dict[str, Any]:
    status, screen, _ = await stack.call(
        "POST", "/v1/screens", token=token, json={"venueId": venue_id, "name": name}
    )
    assert status == 201, screen
    return screen


async def list_ids(stack: Stack, token: str, path: str) -> list[str]:
    """The ids of the first page of the list at ``path``."""
    status, page, _ = await stack.call("GET", path, token=token)
    assert status == 200, page
    return [item["id"] for item in page["items"]]

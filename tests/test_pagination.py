"""Lists page with a cursor (every item once, in creation order) and filter by venue and state."""

from __future__ import annotations

from typing import Any

from tests.admin_api import list_ids, screen_in
from tests.stack import Stack


async def _venue(stack: Stack, token: str, name: str = "HQ") -> dict[str, Any]:
    status, venue, _ = await stack.call("POST", "/v1/venues", token=token, json={"name": name})
    assert status == 201, venue
    return venue


async def _walk(stack: Stack, token: str, path: str, limit: int) -> list[list[str]]:
    """Every page of a list, following nextCursor until it is null; the ids of each page."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params = {"limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        separator = "&" if "?" in path else "?"
        query = "&".join(f"{k}={v}" for k, v in params.items())
        status, page, _ = await stack.call("GET", f"{path}{separator}{query}", token=token)
        assert status == 200, page
        pages.append([item["id"] for item in page["items"]])
        cursor = page["nextCursor"]
        if cursor is None:
            return pages
        assert len(pages) < 20, "nextCursor never became null"


async def test_screens_paginate_in_creation_order_and_filter(stack: Stack) -> None:
    tenant = await stack.tenant()
    token = tenant["token"]
    venue = await _venue(stack, token, "Mall")
    created = [(await screen_in(stack, token, venue["id"], f"Screen {n}"))["id"] for n in range(5)]

    pages = await _walk(stack, token, "/v1/screens", limit=2)
    assert [len(page) for page in pages] == [2, 2, 1]
    seen = [screen_id for page in pages for screen_id in page]
    assert seen == created  # every id exactly once, in creation order

    # A second venue: the venueId filter separates them, and pagination works under the filter.
    other_venue = await _venue(stack, token, "Airport")
    lone = (await screen_in(stack, token, other_venue["id"], "Gate 1"))["id"]
    assert [i for p in await _walk(stack, token, "/v1/screens", limit=2) for i in p] == [*created, lone]
    filtered = await _walk(stack, token, f"/v1/screens?venueId={venue['id']}", limit=2)
    assert [i for p in filtered for i in p] == created
    assert await list_ids(stack, token, f"/v1/screens?venueId={other_venue['id']}") == [lone]

    # Bind a device to the third screen: it alone becomes active.
    code = await stack.code(token, created[2])
    status, registered = await stack.register(code["code"])
    assert status == 201, registered

    async def active_ids() -> list[str]:
        return await list_ids(stack, token, "/v1/screens?state=active")

    assert await stack.eventually(active_ids) == [created[2]]
    assert await list_ids(stack, token, "/v1/screens?state=provisioning") == [
        created[0],
        created[1],
        created[3],
        created[4],
        lone,
    ]
    assert await list_ids(stack, token, f"/v1/screens?venueId={other_venue['id']}&state=active") == []
    assert await list_ids(stack, token, f"/v1/screens?venueId={venue['id']}&state=active") == [created[2]]
    provisioning = await _walk(stack, token, "/v1/screens?state=provisioning", limit=2)
    assert provisioning == [[created[0], created[1]], [created[3], created[4]], [lone]]
    status, screen, _ = await stack.call("GET", f"/v1/screens/{created[2]}", token=token)
    assert (screen["state"], screen["deviceId"]) == ("active", registered["deviceId"])

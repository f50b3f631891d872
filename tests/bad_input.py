"""What the bad-input tests (tests/test_bad_input_*.py) share. Each wants the exact status and the
one error shape of the HTTP contract (docs/api.md),

    {"error": <code>, "message": <str>, "details"?: [{"field", "problem"}]}

with ``details`` naming each bad field as a camelCase path ("deviceInfo.macAddress",
"items[0].type") and a problem ("required", "pattern", "length", "range", "enum", "type", "format",
"invalid"), as shared/validation.py names them.

Every test talks HTTP to the entry point, as a TV or an integration would. Messages say in words
what a field must be ("pairingCode must be 8 characters A-Z or 0-9").
"""

from __future__ import annotations

from typing import Any

import pytest_asyncio

from tests.stack import Stack

MIB = 1024 * 1024
# A JSON body just over the 1 MiB limit (max_body_bytes).
OVERSIZED = b'{"pad": "' + b"x" * MIB + b'"}'
MAX_ERROR_KEYS = {"error", "message", "details"}


# ---- helpers ----------------------------------------------------------------------------------


def assert_error(
    result: tuple[int, Any, Any],
    status: int,
    error: str,
    details: list[tuple[str, str]] | None = None,
    *,
    fields: list[str] | None = None,
    oauth: bool = False,
) -> None:
    """``result`` is ``stack.call(...)``'s answer; ``details`` None means the body has none.

    ``fields`` instead of ``details``: only the named fields are fixed, not their problem (for
    inputs whose problem name the contract leaves open).
    """
    actual_status, body, response = result
    assert actual_status == status, body
    assert response.content_type == "application/json", body
    assert isinstance(body, dict), body
    allowed = MAX_ERROR_KEYS | ({"error_description"} if oauth else set())
    assert set(body) <= allowed, body
    assert body["error"] == error, body
    assert isinstance(body["message"], str) and body["message"], body
    if oauth:  # RFC 6749 §5.2 clients read error_description; it says the same as message
        assert body["error_description"] == body["message"], body
    if fields is not None:
        assert sorted(d["field"] for d in body["details"]) == sorted(fields), body
    elif details is None:
        assert "details" not in body, body
    else:
        got = sorted((d["field"], d["problem"]) for d in body["details"])
        assert got == sorted(details), body
        assert all(set(d) == {"field", "problem"} for d in body["details"]), body


async def post_raw(
    stack: Stack,
    path: str,
    data: bytes | str,
    content_type: str = "application/json",
    *,
    method: str = "POST",
    token: str | None = None,
) -> tuple[int, Any, Any]:
    """Send ``data`` as it is, with the given Content-Type (malformed JSON, text, huge bodies)."""
    return await stack.call(method, path, token=token, data=data, headers={"Content-Type": content_type})


# ---- fixtures ---------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def token(stack: Stack) -> str:
    return (await stack.tenant())["token"]


@pytest_asyncio.fixture
async def screen(stack: Stack, token: str) -> dict[str, Any]:
    return await stack.screen(token)

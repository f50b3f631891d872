"""Bad input before any service's handler: unknown paths and methods at the entry point (the error
shape: tests/bad_input.py)."""

from __future__ import annotations

import pytest

# `name as name` below: the fixtures shared with the other bad-input modules, re-exported here, for
# pytest looks a fixture up by its name in the test's module.
from tests.bad_input import assert_error
from tests.bad_input import token as token

# =================================================================================================
# Unknown paths and methods
# =================================================================================================


@pytest.mark.parametrize("path", ["/nope", "/v1/nothing-here", "/v1/venues/x/y", "/v1/device/nope"])
async def test_unknown_path(stack, token, path):
    assert_error(await stack.call("GET", path, token=token), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/venues", {"GET", "HEAD", "POST"}),
        ("PUT", "/devices/register", {"POST"}),
        ("GET", "/v1/device/heartbeat", {"POST"}),
        ("DELETE", "/oauth/token", {"POST"}),
    ],
)
async def test_wrong_method(stack, token, method, path, allowed):
    result = await stack.call(method, path, token=token)
    assert_error(result, 405, "method_not_allowed")
    assert set(result[2].headers["Allow"].split(",")) == allowed


async def test_unknown_path_with_encoded_newline(stack):
    assert_error(await stack.call("GET", "/nope%0A"), 404, "not_found")

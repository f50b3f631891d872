"""Bad input at the registry: venues, screens, playlists, screen config, the lists' query parameters
and the OAuth token endpoint (the error shape: tests/bad_input.py)."""

from __future__ import annotations

import base64
import urllib.parse
from typing import Any

import msgspec
import pytest

# `name as name` below: the fixtures shared with the other bad-input modules, re-exported here, for
# pytest looks a fixture up by its name in the test's module.
from tests.bad_input import OVERSIZED, assert_error, post_raw
from tests.bad_input import screen as screen
from tests.bad_input import token as token
from tests.stack import new_id


def cursor_of(payload: Any) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(payload)).rstrip(b"=").decode()


# =================================================================================================
# POST /v1/venues
# =================================================================================================

VENUE_CASES = [
    ("missing-name", {}, [("name", "required")]),
    ("empty-name", {"name": ""}, [("name", "length")]),
    ("name-201-chars", {"name": "x" * 201}, [("name", "length")]),
    ("name-not-string", {"name": 5}, [("name", "type")]),
    ("bad-timezone", {"name": "HQ", "timezone": "Mars/Base"}, [("timezone", "format")]),
    ("timezone-65-chars", {"name": "HQ", "timezone": "x" * 65}, [("timezone", "length")]),
    ("address-501-chars", {"name": "HQ", "address": "x" * 501}, [("address", "length")]),
]


@pytest.mark.parametrize(("body", "details"), [c[1:] for c in VENUE_CASES], ids=[c[0] for c in VENUE_CASES])
async def test_venue_invalid_field(stack, token, body, details):
    result = await stack.call("POST", "/v1/venues", token=token, json=body)
    assert_error(result, 400, "invalid_request", details)


async def test_venue_messages_say_what_each_field_must_be(stack, token):
    body = {"name": "x" * 201, "timezone": "Mars/Base"}
    _, error, _ = await stack.call("POST", "/v1/venues", token=token, json=body)
    assert error["message"] == (
        "name must be 1 to 200 characters; timezone must be an IANA time zone, like Europe/Berlin"
    )


async def test_venue_accepts_valid_timezone(stack, token):
    status, body, _ = await stack.call(
        "POST", "/v1/venues", token=token, json={"name": "HQ", "timezone": "Europe/Berlin"}
    )
    assert status == 201, body
    assert body["timezone"] == "Europe/Berlin"


async def test_venue_not_json(stack, token):
    assert_error(
        await post_raw(stack, "/v1/venues", "name=HQ", "text/plain", token=token),
        415,
        "unsupported_media_type",
    )


async def test_venue_malformed_json(stack, token):
    assert_error(await post_raw(stack, "/v1/venues", b'{"name": "HQ"', token=token), 400, "invalid_request")


async def test_venue_body_over_1_mib(stack, token):
    assert_error(await post_raw(stack, "/v1/venues", OVERSIZED, token=token), 413, "payload_too_large")


async def test_venue_without_token(stack):
    assert_error(await stack.call("POST", "/v1/venues", json={"name": "HQ"}), 401, "unauthorized")


async def test_venue_rejects_nul_character(stack, token):
    result = await stack.call("POST", "/v1/venues", token=token, json={"name": "H\x00Q"})
    assert_error(result, 400, "invalid_request", fields=["name"])


# =================================================================================================
# POST /v1/screens
# =================================================================================================


async def test_screen_venue_id_not_a_uuid(stack, token):
    result = await stack.call("POST", "/v1/screens", token=token, json={"venueId": "nope", "name": "Lobby"})
    assert_error(result, 400, "invalid_request", [("venueId", "invalid")])
    assert result[1]["message"] == "venueId must be a UUID"


async def test_screen_missing_fields(stack, token):
    result = await stack.call("POST", "/v1/screens", token=token, json={})
    assert_error(result, 400, "invalid_request", [("venueId", "required"), ("name", "required")])


async def test_screen_unknown_venue(stack, token):
    result = await stack.call("POST", "/v1/screens", token=token, json={"venueId": new_id(), "name": "Lobby"})
    assert_error(result, 404, "not_found")


async def test_screen_venue_of_another_tenant(stack, token):
    other = (await stack.tenant("Other"))["token"]
    _, venue, _ = await stack.call("POST", "/v1/venues", token=other, json={"name": "Theirs"})
    result = await stack.call(
        "POST", "/v1/screens", token=token, json={"venueId": venue["id"], "name": "Lobby"}
    )
    assert_error(result, 404, "not_found")


@pytest.mark.parametrize(
    ("extra", "details"),
    [
        ({"orientation": "diagonal"}, [("orientation", "enum")]),
        ({"resolution": "big"}, [("resolution", "pattern")]),
        ({"resolution": "1920x"}, [("resolution", "pattern")]),
        ({"name": ""}, [("name", "length")]),
        (
            {"orientation": "diagonal", "resolution": "big"},
            [("orientation", "enum"), ("resolution", "pattern")],
        ),
    ],
    ids=["orientation-diagonal", "resolution-big", "resolution-no-height", "empty-name", "two-bad-fields"],
)
async def test_screen_invalid_field(stack, token, screen, extra, details):
    body = {"venueId": screen["venueId"], "name": "Lobby", **extra}
    result = await stack.call("POST", "/v1/screens", token=token, json=body)
    assert_error(result, 400, "invalid_request", details)


async def test_screen_not_json(stack, token):
    assert_error(
        await post_raw(stack, "/v1/screens", "x", "text/plain", token=token), 415, "unsupported_media_type"
    )


async def test_screen_rejects_resolution_with_trailing_newline(stack, token, screen):
    body = {"venueId": screen["venueId"], "name": "Lobby", "resolution": "1920x1080\n"}
    result = await stack.call("POST", "/v1/screens", token=token, json=body)
    assert_error(result, 400, "invalid_request", [("resolution", "pattern")])


async def test_screen_rejects_nul_character(stack, token, screen):
    body = {"venueId": screen["venueId"], "name": "Lob\x00by"}
    result = await stack.call("POST", "/v1/screens", token=token, json=body)
    assert_error(result, 400, "invalid_request", fields=["name"])


# =================================================================================================
# PUT /v1/screens/{id}/playlist
# =================================================================================================

ITEM = {"type": "image", "url": "https://cdn.example.com/a.png", "durationSeconds": 10}

PLAYLIST_CASES = [
    ("type-pdf", {"items": [{**ITEM, "type": "pdf"}]}, [("items[0].type", "enum")]),
    ("url-ftp", {"items": [{**ITEM, "url": "ftp://x"}]}, [("items[0].url", "pattern")]),
    ("url-2049-chars", {"items": [{**ITEM, "url": "https://x/" + "a" * 2039}]}, [("items[0].url", "length")]),
    ("duration-0", {"items": [{**ITEM, "durationSeconds": 0}]}, [("items[0].durationSeconds", "range")]),
    (
        "duration-over-a-day",
        {"items": [{**ITEM, "durationSeconds": 86401}]},
        [("items[0].durationSeconds", "range")],
    ),
    (
        "duration-string",
        {"items": [{**ITEM, "durationSeconds": "10"}]},
        [("items[0].durationSeconds", "type")],
    ),
    ("second-item-bad", {"items": [ITEM, {**ITEM, "type": "pdf"}]}, [("items[1].type", "enum")]),
    (
        "item-missing-url",
        {"items": [{"type": "image", "durationSeconds": 5}]},
        [("items[0].url", "required")],
    ),
    ("1001-items", {"items": [ITEM] * 1001}, [("items", "length")]),
    ("missing-items", {}, [("items", "required")]),
    ("items-not-list", {"items": ITEM}, [("items", "type")]),
]


@pytest.mark.parametrize(
    ("body", "details"), [c[1:] for c in PLAYLIST_CASES], ids=[c[0] for c in PLAYLIST_CASES]
)
async def test_playlist_invalid_field(stack, token, screen, body, details):
    result = await stack.call("PUT", f"/v1/screens/{screen['id']}/playlist", token=token, json=body)
    assert_error(result, 400, "invalid_request", details)


async def test_playlist_1000_items_accepted(stack, token, screen):
    status, body, _ = await stack.call(
        "PUT", f"/v1/screens/{screen['id']}/playlist", token=token, json={"items": [ITEM] * 1000}
    )
    assert status == 200, body
    assert len(body["items"]) == 1000


async def test_playlist_path_id_not_a_uuid(stack, token):
    result = await stack.call("PUT", "/v1/screens/not-a-uuid/playlist", token=token, json={"items": [ITEM]})
    assert_error(result, 404, "not_found")


async def test_playlist_unknown_screen(stack, token):
    result = await stack.call("PUT", f"/v1/screens/{new_id()}/playlist", token=token, json={"items": [ITEM]})
    assert_error(result, 404, "not_found")


async def test_playlist_not_json(stack, token, screen):
    result = await post_raw(
        stack, f"/v1/screens/{screen['id']}/playlist", "x", "text/plain", token=token, method="PUT"
    )
    assert_error(result, 415, "unsupported_media_type")


async def test_playlist_names_every_bad_item(stack, token, screen):
    body = {"items": [{**ITEM, "type": "pdf"}, {**ITEM, "url": "ftp://x"}, {**ITEM, "durationSeconds": 0}]}
    result = await stack.call("PUT", f"/v1/screens/{screen['id']}/playlist", token=token, json=body)
    assert_error(
        result,
        400,
        "invalid_request",
        [("items[0].type", "enum"), ("items[1].url", "pattern"), ("items[2].durationSeconds", "range")],
    )
    assert result[1]["message"] == (
        "items[0].type must be one of image, video, web; "
        "items[1].url must be an http:// or https:// URL without spaces; "
        "items[2].durationSeconds must be greater than 0 and at most 86400"
    )


async def test_playlist_rejects_url_with_trailing_newline(stack, token, screen):
    body = {"items": [{**ITEM, "url": "https://cdn.example.com/a.png\n"}]}
    result = await stack.call("PUT", f"/v1/screens/{screen['id']}/playlist", token=token, json=body)
    assert_error(result, 400, "invalid_request", [("items[0].url", "pattern")])


async def test_playlist_rejects_nul_character(stack, token, screen):
    body = {"items": [{**ITEM, "url": "https://cdn.example.com/\x00.png"}]}
    result = await stack.call("PUT", f"/v1/screens/{screen['id']}/playlist", token=token, json=body)
    assert_error(result, 400, "invalid_request", fields=["items[0].url"])


# =================================================================================================
# PATCH /v1/screens/{id}/config
# =================================================================================================

CONFIG_CASES = [
    ("sync-0", {"syncIntervalMinutes": 0}, [("syncIntervalMinutes", "range")]),
    ("sync-1441", {"syncIntervalMinutes": 1441}, [("syncIntervalMinutes", "range")]),
    ("sync-string", {"syncIntervalMinutes": "5"}, [("syncIntervalMinutes", "type")]),
    ("sync-float", {"syncIntervalMinutes": 5.5}, [("syncIntervalMinutes", "type")]),
    ("sync-huge", {"syncIntervalMinutes": 10**30}, [("syncIntervalMinutes", "range")]),
    ("heartbeat-0", {"heartbeatIntervalMinutes": 0}, [("heartbeatIntervalMinutes", "range")]),
    ("maxSizeGB-negative", {"cachePolicy": {"maxSizeGB": -1}}, [("cachePolicy.maxSizeGB", "range")]),
    ("maxSizeGB-0", {"cachePolicy": {"maxSizeGB": 0}}, [("cachePolicy.maxSizeGB", "range")]),
    ("retentionDays-0", {"cachePolicy": {"retentionDays": 0}}, [("cachePolicy.retentionDays", "range")]),
    ("cachePolicy-not-object", {"cachePolicy": 10}, [("cachePolicy", "type")]),
    (
        "two-bad-fields",
        {"syncIntervalMinutes": 0, "cachePolicy": {"maxSizeGB": -1}},
        [("syncIntervalMinutes", "range"), ("cachePolicy.maxSizeGB", "range")],
    ),
]


@pytest.mark.parametrize(("body", "details"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
async def test_config_invalid_field(stack, token, screen, body, details):
    result = await stack.call("PATCH", f"/v1/screens/{screen['id']}/config", token=token, json=body)
    assert_error(result, 400, "invalid_request", details)
    # Nothing changed: the defaults are still in place.
    status, config, _ = await stack.call("GET", f"/v1/screens/{screen['id']}/config", token=token)
    assert status == 200, config
    assert config == {
        "syncIntervalMinutes": 5,
        "heartbeatIntervalMinutes": 1,
        "cachePolicy": {"maxSizeGB": 10, "retentionDays": 7},
    }


async def test_config_path_id_not_a_uuid(stack, token):
    result = await stack.call(
        "PATCH", "/v1/screens/nope/config", token=token, json={"syncIntervalMinutes": 5}
    )
    assert_error(result, 404, "not_found")


async def test_config_unknown_screen(stack, token):
    result = await stack.call(
        "PATCH", f"/v1/screens/{new_id()}/config", token=token, json={"syncIntervalMinutes": 5}
    )
    assert_error(result, 404, "not_found")


async def test_config_malformed_json(stack, token, screen):
    result = await post_raw(
        stack, f"/v1/screens/{screen['id']}/config", b"{syncIntervalMinutes: 5}", token=token, method="PATCH"
    )
    assert_error(result, 400, "invalid_request")


async def test_config_not_json(stack, token, screen):
    result = await post_raw(
        stack, f"/v1/screens/{screen['id']}/config", "x", "text/plain", token=token, method="PATCH"
    )
    assert_error(result, 415, "unsupported_media_type")


# =================================================================================================
# GET /v1/screens, /v1/venues (query parameters)
# =================================================================================================

SCREEN_QUERY_CASES = [
    ("limit=0", [("limit", "range")]),
    ("limit=201", [("limit", "range")]),
    ("limit=abc", [("limit", "range")]),
    ("limit=-1", [("limit", "range")]),
    ("limit=1.5", [("limit", "range")]),
    ("cursor=garbage", [("cursor", "invalid")]),
    (f"cursor={cursor_of([1, 2])}", [("cursor", "invalid")]),
    ("state=bogus", [("state", "enum")]),
    ("venueId=nope", [("venueId", "format")]),
]


@pytest.mark.parametrize(("query", "details"), SCREEN_QUERY_CASES, ids=[c[0] for c in SCREEN_QUERY_CASES])
async def test_list_screens_bad_query(stack, token, query, details):
    result = await stack.call("GET", f"/v1/screens?{query}", token=token)
    assert_error(result, 400, "invalid_request", details)


async def test_list_screens_limit_superscript_digit(stack, token):
    result = await stack.call("GET", "/v1/screens?limit=%C2%B2", token=token)
    assert_error(result, 400, "invalid_request", [("limit", "range")])


@pytest.mark.parametrize(
    ("query", "details"),
    [("limit=0", [("limit", "range")]), ("cursor=garbage", [("cursor", "invalid")])],
    ids=["limit=0", "cursor=garbage"],
)
async def test_list_venues_bad_query(stack, token, query, details):
    assert_error(await stack.call("GET", f"/v1/venues?{query}", token=token), 400, "invalid_request", details)


# =================================================================================================
# POST /oauth/token
# =================================================================================================


async def test_token_missing_grant_type(stack):
    result = await stack.call("POST", "/oauth/token", data={"client_id": "cli_x", "client_secret": "cs_x"})
    assert_error(result, 400, "invalid_request", oauth=True)


async def test_token_password_grant(stack):
    result = await stack.call(
        "POST", "/oauth/token", data={"grant_type": "password", "username": "a", "password": "b"}
    )
    assert_error(result, 400, "unsupported_grant_type", oauth=True)


async def test_token_wrong_secret(stack):
    tenant = await stack.tenant()
    result = await stack.call(
        "POST",
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": tenant["client"]["clientId"],
            "client_secret": "cs_wrong",
        },
    )
    assert_error(result, 401, "invalid_client", oauth=True)


async def test_token_unknown_client(stack):
    result = await stack.call(
        "POST",
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "cli_nobody", "client_secret": "cs_x"},
    )
    assert_error(result, 401, "invalid_client", oauth=True)


async def test_token_malformed_basic_credentials(stack):
    result = await stack.call(
        "POST",
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic !!!not-base64!!!"},
    )
    assert_error(result, 401, "invalid_client", oauth=True)
    assert result[2].headers["WWW-Authenticate"] == 'Basic realm="oauth"'


async def test_token_json_body_instead_of_form(stack):
    tenant = await stack.tenant()
    result = await stack.call(
        "POST",
        "/oauth/token",
        json={
            "grant_type": "client_credentials",
            "client_id": tenant["client"]["clientId"],
            "client_secret": tenant["client"]["clientSecret"],
        },
    )
    assert_error(result, 400, "invalid_request", oauth=True)


async def test_token_client_id_with_nul_character(stack):
    result = await stack.call(
        "POST",
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "cli\x00x", "client_secret": "cs_x"},
    )
    assert_error(result, 401, "invalid_client", oauth=True)
    assert "WWW-Authenticate" not in result[2].headers  # no header was sent, so no challenge


async def test_token_client_secret_with_nul_character_after_a_basic_header(stack):
    """A NUL in a credential is an unknown client; a caller that sent an Authorization header is
    told how to authenticate (RFC 6749 §5.2)."""
    result = await stack.call(
        "POST",
        "/oauth/token",
        headers={"Authorization": "Basic " + base64.b64encode(b"cli_x:cs_x").decode()},
        data={"grant_type": "client_credentials", "client_secret": "cs\x00x"},
    )
    assert_error(result, 401, "invalid_client", oauth=True)
    assert result[2].headers["WWW-Authenticate"] == 'Basic realm="oauth"'


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "client_\x00credentials", "client_id": "cli_x", "client_secret": "cs_x"},
        {"grant_type": "client_credentials", "client_id": "cli_x", "client_secret": "cs_x", "scope": "a\x00"},
        {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": "ddc_\x00"},
        {"grant_type": "client_credentials", "x\x00": "y"},
    ],
)
async def test_token_other_parameters_with_nul_character(stack, form):
    # Encoded here: aiohttp's own form encoder refuses a parameter name holding NUL.
    body, form_type = urllib.parse.urlencode(form), {"Content-Type": "application/x-www-form-urlencoded"}
    result = await stack.call("POST", "/oauth/token", data=body, headers=form_type)
    assert_error(result, 400, "invalid_request", oauth=True)
    assert result[1]["message"] == "parameters must not contain NUL characters"


# =================================================================================================
# POST /v1/screens/{id}/commands and the commands' lists
# =================================================================================================

COMMAND_CASES = [
    ("missing-type", {}, [("type", "required")]),
    ("unknown-type", {"type": "self_destruct"}, [("type", "enum")]),
    ("type-not-string", {"type": 5}, [("type", "type")]),
    ("ttl-0", {"type": "reload", "ttlSeconds": 0}, [("ttlSeconds", "range")]),
    ("ttl-over-7-days", {"type": "reload", "ttlSeconds": 7 * 86400 + 1}, [("ttlSeconds", "range")]),
    ("ttl-string", {"type": "reload", "ttlSeconds": "60"}, [("ttlSeconds", "type")]),
    ("args-not-object", {"type": "identify", "args": [10]}, [("args", "type")]),
    ("args-21-entries", {"type": "reload", "args": {f"k{i}": i for i in range(21)}}, [("args", "length")]),
    ("identify-0-seconds", {"type": "identify", "args": {"seconds": 0}}, [("args.seconds", "range")]),
    ("identify-301-seconds", {"type": "identify", "args": {"seconds": 301}}, [("args.seconds", "range")]),
    ("identify-seconds-string", {"type": "identify", "args": {"seconds": "5"}}, [("args.seconds", "type")]),
    ("display-power-no-args", {"type": "display_power"}, [("args.on", "required")]),
    ("display-power-no-on", {"type": "display_power", "args": {}}, [("args.on", "required")]),
    ("display-power-on-string", {"type": "display_power", "args": {"on": "yes"}}, [("args.on", "type")]),
    ("display-power-on-1", {"type": "display_power", "args": {"on": 1}}, [("args.on", "type")]),
]


@pytest.mark.parametrize(
    ("body", "details"), [c[1:] for c in COMMAND_CASES], ids=[c[0] for c in COMMAND_CASES]
)
async def test_command_invalid_field(stack, token, screen, body, details):
    result = await stack.call("POST", f"/v1/screens/{screen['id']}/commands", token=token, json=body)
    assert_error(result, 400, "invalid_request", details)


async def test_command_messages_say_what_args_must_be(stack, token, screen):
    path = f"/v1/screens/{screen['id']}/commands"
    body = {"type": "identify", "args": {"seconds": 301}}
    _, error, _ = await stack.call("POST", path, token=token, json=body)
    assert error["message"] == "args.seconds must be at least 1 and at most 300"
    _, error, _ = await stack.call("POST", path, token=token, json={"type": "display_power"})
    assert error["message"] == "args.on is required"


async def test_command_ttl_bounds_accepted(stack, token, screen):
    for ttl in (1, 7 * 86400):
        status, body, _ = await stack.call(
            "POST",
            f"/v1/screens/{screen['id']}/commands",
            token=token,
            json={"type": "reload", "ttlSeconds": ttl},
        )
        assert status == 202, body


async def test_command_not_json(stack, token, screen):
    result = await post_raw(
        stack, f"/v1/screens/{screen['id']}/commands", "reload", "text/plain", token=token
    )
    assert_error(result, 415, "unsupported_media_type")


async def test_command_malformed_json(stack, token, screen):
    result = await post_raw(stack, f"/v1/screens/{screen['id']}/commands", b'{"type": ', token=token)
    assert_error(result, 400, "invalid_request")


async def test_command_args_with_nul_character(stack, token, screen):
    body = {"type": "identify", "args": {"seconds": 5, "note": "a\x00b"}}
    result = await stack.call("POST", f"/v1/screens/{screen['id']}/commands", token=token, json=body)
    assert_error(result, 400, "invalid_request", fields=["args.note"])


@pytest.mark.parametrize(
    "path",
    [
        "/v1/screens/not-a-uuid/commands",
        "/v1/screens/{unknown}/commands",
        "/v1/screens/{screen}/commands/not-a-uuid",
        "/v1/screens/{screen}/commands/{unknown}",
        "/v1/screens/{screen}/commands/{unknown}/screenshot",
    ],
    ids=["screen-not-uuid", "unknown-screen", "command-not-uuid", "unknown-command", "unknown-screenshot"],
)
async def test_command_unknown_ids(stack, token, screen, path):
    result = await stack.call("GET", path.format(screen=screen["id"], unknown=new_id()), token=token)
    assert_error(result, 404, "not_found")


async def test_command_send_to_unknown_screen(stack, token):
    result = await stack.call(
        "POST", f"/v1/screens/{new_id()}/commands", token=token, json={"type": "reload"}
    )
    assert_error(result, 404, "not_found")


@pytest.mark.parametrize(
    ("query", "details"),
    [
        ("status=done", [("status", "enum")]),
        ("limit=0", [("limit", "range")]),
        ("cursor=%21%21", [("cursor", "invalid")]),
    ],
    ids=["status-done", "limit-0", "cursor-garbage"],
)
async def test_command_list_bad_query(stack, token, screen, query, details):
    result = await stack.call("GET", f"/v1/screens/{screen['id']}/commands?{query}", token=token)
    assert_error(result, 400, "invalid_request", details)

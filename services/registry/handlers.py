"""Registry's HTTP handlers: decode, one transaction, encode."""

from __future__ import annotations

import hmac
import urllib.parse
import uuid

import aiohttp
import msgspec
import structlog
from aiohttp import web
from multidict import MultiDictProxy

from services.registry import audit, queries
from services.registry.models import (
    AuthorizationServerMetadata,
    ClientCredentials,
    ConfigPatch,
    NewPlaylist,
    NewScreen,
    NewTenant,
    NewVenue,
    ScreenPage,
    TenantCreated,
    TokenResponse,
    VenuePage,
)
from shared import outbox
from shared.app import HTTP
from shared.app_keys import SETTINGS
from shared.auth import (
    ADMIN_SCOPE,
    DEVICE_CODE_GRANT,
    ISSUER,
    new_secret,
    principal_of,
    require_operator,
    secret_hash,
    tenant_of,
)
from shared.db import POOL
from shared.errors import OAuthError
from shared.events import ScreenConfigChanged, ScreenCreated
from shared.http import basic_credentials, json_response, read_form, read_json, uuid_param
from shared.pagination import choice_query, next_cursor, page_params, uuid_query
from shared.projections import SCREEN_CONTENT_BUCKET
from shared.routing import DEVICE_TOKEN_PATH

log = structlog.get_logger()

_new_tenant = msgspec.json.Decoder(NewTenant)
_new_venue = msgspec.json.Decoder(NewVenue)
_new_screen = msgspec.json.Decoder(NewScreen)
_new_playlist = msgspec.json.Decoder(NewPlaylist)
_config_patch = msgspec.json.Decoder(ConfigPatch)


# ---- tenants and tokens -----------------------------------------------------------------------


async def create_tenant(request: web.Request) -> web.Response:
    require_operator(request)
    body = await read_json(request, _new_tenant)
    client_id = "cli_" + uuid.uuid4().hex
    client_secret = new_secret("cs_")
    async with request.app[POOL].acquire() as conn, conn.transaction():
        tenant = await queries.insert_tenant(conn, body.name)
        await queries.insert_client(
            conn, client_id=client_id, tenant_id=tenant.id, secret_hash=secret_hash(client_secret)
        )
        await audit.record(request, conn, tenant.id, audit.OPERATOR, "tenant.created", tenant.id)
    log.info("tenant_created", tenant_id=str(tenant.id), client_id=client_id)
    return json_response(
        TenantCreated(
            id=tenant.id,
            name=tenant.name,
            created_at=tenant.created_at,
            client=ClientCredentials(client_id=client_id, client_secret=client_secret),
        ),
        status=201,
    )


async def issue_token(request: web.Request) -> web.Response:
    """OAuth 2.0 client credentials grant (RFC 6749 §4.4), credentials in the form or HTTP Basic."""
    # Credentials holding NUL name no client (PostgreSQL text cannot hold it).
    form = await read_form(request, nul=(401, "invalid_client"))
    if form.get("grant_type") == DEVICE_CODE_GRANT:
        return await _pass_on_device_code_grant(request, form)
    if form.get("grant_type") != "client_credentials":
        if not form.get("grant_type"):
            raise OAuthError(400, "invalid_request", "grant_type is required")
        raise OAuthError(
            400, "unsupported_grant_type", f"the grants are client_credentials and {DEVICE_CODE_GRANT}"
        )
    # RFC 6749 §5.2: a client that tried to authenticate with a header is told how in the answer.
    authorized = bool(request.headers.get("Authorization"))
    if basic := basic_credentials(request):
        if form.get("client_id") or form.get("client_secret"):
            raise OAuthError(400, "invalid_request", "send client credentials one way, not two")
        client_id, client_secret = basic
    else:
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
    scope = form.get("scope") or ADMIN_SCOPE
    if scope.split() != [ADMIN_SCOPE]:
        raise OAuthError(400, "invalid_scope", f"the only scope is {ADMIN_SCOPE!r}")
    async with request.app[POOL].acquire() as conn:
        client = await queries.find_client(conn, client_id) if client_id else None
    if client is None or not hmac.compare_digest(client.secret_hash, secret_hash(client_secret)):
        raise OAuthError(401, "invalid_client", "unknown client or wrong secret", basic=authorized)
    if client.expired:
        raise OAuthError(401, "invalid_client", "the client secret expired; register again", basic=authorized)
    issuer = request.app[ISSUER]
    token = issuer.issue(tenant_id=client.tenant_id, client_id=client_id, scope=scope)
    return json_response(
        TokenResponse(access_token=token, token_type="Bearer", expires_in=issuer.ttl, scope=scope),
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


DEVICE_GRANT_PARAMETERS = ("grant_type", "device_code", "client_id")


async def _pass_on_device_code_grant(request: web.Request, form: MultiDictProxy[str]) -> web.Response:
    """A TV polling during device-first pairing: provisioning owns device codes and keys; this
    URL stays the one token endpoint of the metadata."""
    url = request.app[SETTINGS].provisioning_url + DEVICE_TOKEN_PATH
    try:
        # Only the grant's own parameters (RFC 8628 §3.4), encoded here: aiohttp's form encoder
        # refuses some names a client may send (control characters), which was a 500.
        grant = {name: form[name] for name in DEVICE_GRANT_PARAMETERS if name in form}
        body = urllib.parse.urlencode(grant)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        async with request.app[HTTP].post(url, data=body, headers=headers) as response:
            return web.Response(
                status=response.status,
                body=await response.read(),
                content_type=response.content_type,
                headers={"Cache-Control": "no-store"},
            )
    except (aiohttp.ClientError, TimeoutError):
        log.warning("provisioning_unreachable")
        raise OAuthError(503, "temporarily_unavailable", "try again shortly") from None


async def authorization_server_metadata(request: web.Request) -> web.Response:
    """RFC 8414: where stock OAuth clients find the endpoints, the grants and how clients
    authenticate."""
    base = request.app[SETTINGS].public_url
    return json_response(
        AuthorizationServerMetadata(
            issuer=base,
            token_endpoint=f"{base}/oauth/token",
            device_authorization_endpoint=f"{base}/oauth/device_authorization",
            registration_endpoint=f"{base}/oauth/register",
            grant_types_supported=["client_credentials", DEVICE_CODE_GRANT],
            token_endpoint_auth_methods_supported=["client_secret_basic", "client_secret_post", "none"],
            scopes_supported=[ADMIN_SCOPE],
            response_types_supported=[],
            service_documentation=f"{base}/openapi.json",
        )
    )


# ---- venues -----------------------------------------------------------------------------------


async def create_venue(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body = await read_json(request, _new_venue)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        venue = await queries.insert_venue(conn, principal.tenant_id, body)
        await audit.record(request, conn, principal.tenant_id, principal.actor, "venue.created", venue.id)
    return json_response(venue, status=201)


async def list_venues(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    after, limit = page_params(request)
    async with request.app[POOL].acquire() as conn:
        venues = await queries.list_venues(conn, tenant_id, after=after, limit=limit)
    return json_response(VenuePage(items=venues, next_cursor=next_cursor(venues, limit)))


async def get_venue(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    async with request.app[POOL].acquire() as conn:
        venue = await queries.get_venue(conn, tenant_id, uuid_param(request))
    return json_response(venue)


# ---- screens ----------------------------------------------------------------------------------


async def create_screen(request: web.Request) -> web.Response:
    principal = principal_of(request)
    tenant_id = principal.tenant_id
    body = await read_json(request, _new_screen)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        await queries.get_venue(conn, tenant_id, body.venue_id)
        screen = await queries.insert_screen(conn, tenant_id, body)
        await audit.record(request, conn, tenant_id, principal.actor, "screen.created", screen.id)
        content = await queries.get_screen_content(conn, screen.id)
        await outbox.add_event(
            conn,
            ScreenCreated(
                tenant_id=tenant_id,
                screen_id=screen.id,
                venue_id=screen.venue_id,
                version=1,  # a new row's version (the column's default)
                config=content.config,
            ),
        )
        await outbox.put_kv(conn, SCREEN_CONTENT_BUCKET, str(screen.id), content)
    log.info("screen_created", screen_id=str(screen.id))
    return json_response(screen, status=201)


async def list_screens(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    after, limit = page_params(request)
    venue_id = uuid_query(request, "venueId")
    state = choice_query(request, "state", ("provisioning", "active"))
    async with request.app[POOL].acquire() as conn:
        screens = await queries.list_screens(
            conn, tenant_id, venue_id=venue_id, state=state, after=after, limit=limit
        )
    return json_response(ScreenPage(items=screens, next_cursor=next_cursor(screens, limit)))


async def get_screen(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    async with request.app[POOL].acquire() as conn:
        screen = await queries.get_screen(conn, tenant_id, uuid_param(request))
    return json_response(screen)


async def get_playlist(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    async with request.app[POOL].acquire() as conn:
        playlist = await queries.get_playlist(conn, tenant_id, uuid_param(request))
    return json_response(playlist)


async def replace_playlist(request: web.Request) -> web.Response:
    principal = principal_of(request)
    tenant_id = principal.tenant_id
    screen_id = uuid_param(request)
    body = await read_json(request, _new_playlist)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        playlist = await queries.replace_playlist(conn, tenant_id, screen_id, body.items)
        await audit.record(request, conn, tenant_id, principal.actor, "playlist.replaced", screen_id)
        content = await queries.get_screen_content(conn, screen_id)
        await outbox.put_kv(conn, SCREEN_CONTENT_BUCKET, str(screen_id), content)
    log.info("playlist_replaced", screen_id=str(screen_id), version=playlist.version)
    return json_response(playlist)


async def get_config(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    async with request.app[POOL].acquire() as conn:
        config = await queries.get_screen_config(conn, tenant_id, uuid_param(request))
    return json_response(config)


async def update_config(request: web.Request) -> web.Response:
    principal = principal_of(request)
    tenant_id = principal.tenant_id
    screen_id = uuid_param(request)
    patch = await read_json(request, _config_patch)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        config = patch.applied_to(await queries.lock_screen_config(conn, tenant_id, screen_id))
        await audit.record(request, conn, tenant_id, principal.actor, "config.changed", screen_id)
        version = await queries.update_screen_config(conn, screen_id, config)
        await outbox.add_event(
            conn,
            ScreenConfigChanged(tenant_id=tenant_id, screen_id=screen_id, version=version, config=config),
        )
        content = await queries.get_screen_content(conn, screen_id)
        await outbox.put_kv(conn, SCREEN_CONTENT_BUCKET, str(screen_id), content)
    log.info("screen_config_changed", screen_id=str(screen_id), version=version)
    return json_response(config)

"""The OAuth 2.0 authorization server: the one token endpoint (client credentials, and the
device-code grant of device-first pairing passed on to provisioning), its metadata (RFC 8414) and
the JWK Set of the keys its access tokens verify with (RFC 7517)."""

from __future__ import annotations

import hmac
import urllib.parse

import aiohttp
import structlog
from aiohttp import web
from multidict import MultiDictProxy

from services.registry import queries
from services.registry.models import AuthorizationServerMetadata, TokenResponse
from shared.app import HTTP
from shared.app_keys import SETTINGS
from shared.auth import DEVICE_CODE_GRANT, ISSUER, SCOPES, VERIFIER, secret_hash, within
from shared.db import POOL
from shared.errors import OAuthError
from shared.http import basic_credentials, json_response, read_form
from shared.routing import DEVICE_TOKEN_PATH, JWKS_PATH

log = structlog.get_logger()


async def issue_token(request: web.Request) -> web.Response:
    """OAuth 2.0 client credentials grant (RFC 6749 §4.4), credentials in the form or HTTP Basic."""
    form = await read_form(request)
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
    # RFC 6749 §3.3: the token may be narrowed to some of the client's scopes; without a scope it
    # carries all of them. A scope nobody can have is refused before the client is even looked up.
    requested = form.get("scope")
    if requested and within(requested, " ".join(SCOPES)) is None:
        raise OAuthError(400, "invalid_scope", f"scope: space-separated, each one of {' '.join(SCOPES)}")
    async with request.app[POOL].acquire() as conn:
        client = await queries.clients.find_client(conn, client_id) if client_id else None
    if client is None or not hmac.compare_digest(client.secret_hash, secret_hash(client_secret)):
        raise OAuthError(401, "invalid_client", "unknown client or wrong secret", basic=authorized)
    if client.expired:
        raise OAuthError(401, "invalid_client", "the client secret expired; register again", basic=authorized)
    scope = within(requested or client.scope, client.scope)
    if scope is None:
        raise OAuthError(400, "invalid_scope", f"this client's scopes are {client.scope}")
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
            scopes_supported=list(SCOPES),
            response_types_supported=[],
            service_documentation=f"{base}/openapi.json",
            jwks_uri=base + JWKS_PATH,
        )
    )


# Short: a verifier that caches the set sees a rotation's new key within minutes (and one that
# meets an unknown kid may fetch again at once).
JWKS_CACHE_CONTROL = "public, max-age=300"


async def json_web_key_set(request: web.Request) -> web.Response:
    """RFC 7517: the public keys that verify our access tokens, the signing key's and the previous
    ones still accepted, so a third party verifies a token as our services do."""
    return json_response(request.app[VERIFIER].key_set, headers={"Cache-Control": JWKS_CACHE_CONTROL})

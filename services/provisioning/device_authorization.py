"""Device-first pairing (RFC 8628's device authorization grant).

The TV starts it: ``POST /oauth/device_authorization`` with the TV app's public client id (all
RFC 8628 §3.1 asks for) and, if it likes, what it is (the deviceInfo fields as form parameters,
each optional), and shows the user code and a QR code of ``verification_uri_complete``. A tenant
admin looks the code up (seeing the address the request came from, and whatever the TV said it
is: its own claim), then approves it for a screen or denies it. Meanwhile the TV polls the token
endpoint (registry's ``/oauth/token`` passes the device-code grant on to ``poll`` here); the first
poll after the approval binds the device, as a pairing code would, and answers with its ``dak_``
key as the access token. The key is made at that moment, so it is never stored but as a hash.
"""

from __future__ import annotations

import secrets
import uuid

import msgspec
import structlog
from aiohttp import web

from services.provisioning import attempts, binding, queries
from services.provisioning.models import (
    Approval,
    DeviceAuthorizationStarted,
    DeviceTokenResponse,
    Registered,
    ReportedDeviceInfo,
)
from services.provisioning.screens import known_screen, lock_free_screen
from shared.app_keys import SETTINGS
from shared.auth import DEVICE_CODE_GRANT, new_secret, principal_of, secret_hash
from shared.db import POOL
from shared.errors import (
    BadRequest,
    CodeExpired,
    Conflict,
    ErrorDetail,
    NotFound,
    OAuthError,
    RateLimited,
    invalid_body,
)
from shared.http import client_address, json_response, read_form, read_json

log = structlog.get_logger()

# RFC 8628 §6.1: consonants only (no words are spelt), no look-alikes; 20^8 ≈ 2.6e10 codes.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8

_approval = msgspec.json.Decoder(Approval)


def new_user_code() -> str:
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


def shown(user_code: str) -> str:
    """How the TV shows it: two groups of four, easier to read off a screen and type."""
    return f"{user_code[:4]}-{user_code[4:]}"


def normalized(raw: str) -> str:
    """What a person typed, as stored: dashes and spaces dropped, upper case."""
    return raw.replace("-", "").replace(" ", "").upper()


# ---- the TV -------------------------------------------------------------------------------------


async def start(request: web.Request) -> web.Response:
    """RFC 8628 §3.1-3.2: a device code for the TV, a user code for the person."""
    settings = request.app[SETTINGS]
    form = await read_form(request)
    client_id = form.get("client_id")
    if not client_id:
        raise OAuthError(400, "invalid_request", "client_id is required")
    if client_id != settings.device_client_id:
        raise OAuthError(401, "invalid_client", "unknown client")
    # Our extension parameters, each optional: what the TV says it is. Said, they are checked.
    fields = {name: value for name, value in form.items() if name not in ("client_id", "scope")}
    try:
        device_info = msgspec.convert(fields, ReportedDeviceInfo)
    except msgspec.ValidationError:
        problem = invalid_body(ReportedDeviceInfo, fields).message
        raise OAuthError(400, "invalid_request", f"the TV's description: {problem}") from None
    device_code = new_secret("ddc_")
    address = client_address(request, settings.trusted_proxies)
    async with request.app[POOL].acquire() as conn:
        try:  # every request is stored until it expires: each takes a slot of the address's budget
            await attempts.spend(
                request,
                conn,
                attempts.DEVICE_AUTHORIZATION_START,
                attempts.of_address(address),
                settings.device_authorizations_per_window,
            )
        except RateLimited as exc:  # RFC 8628 has no error for this: our 429, in the OAuth shape
            refused = OAuthError(429, "rate_limited", exc.message)
            refused.headers.update(exc.headers)
            raise refused from None
        user_code = await queries.device_authorization.insert_authorization(
            conn,
            device_code_hash=secret_hash(device_code),
            new_user_code=new_user_code,
            client_id=client_id,
            device_info=device_info,
            requested_from=address,
            ttl_seconds=settings.device_code_ttl_seconds,
            interval_seconds=settings.device_poll_interval_seconds,
        )
    uri = settings.verification_uri
    return json_response(
        DeviceAuthorizationStarted(
            device_code=device_code,
            user_code=shown(user_code),
            verification_uri=uri,
            verification_uri_complete=f"{uri}?user_code={shown(user_code)}",
            expires_in=settings.device_code_ttl_seconds,
            interval=settings.device_poll_interval_seconds,
        ),
        headers={"Cache-Control": "no-store"},
    )


async def poll(request: web.Request) -> web.Response:
    """RFC 8628 §3.4-3.5: the token endpoint's device-code grant (reached through registry's
    ``/oauth/token``, which owns that URL)."""
    form = await read_form(request)
    device_code = str(form.get("device_code") or "")
    if form.get("grant_type") != DEVICE_CODE_GRANT or not device_code:
        raise OAuthError(400, "invalid_request", "grant_type and device_code are required")
    if not form.get("client_id"):
        raise OAuthError(400, "invalid_request", "client_id is required (the TV app is a public client)")
    code_hash = secret_hash(device_code)
    registered: Registered | None = None
    async with request.app[POOL].acquire() as conn, conn.transaction():
        screen = await queries.device_authorization.lock_authorization_screen(conn, code_hash)
        state = await queries.device_authorization.lock_poll(conn, code_hash)
        if state is None or state.client_id != form["client_id"]:
            raise OAuthError(400, "invalid_grant", "unknown device code")
        if state.status == "delivered":
            raise OAuthError(400, "invalid_grant", "this device code was already used")
        if state.expired:
            raise OAuthError(400, "expired_token", "the device code expired; start again")
        if state.status == "denied":
            raise OAuthError(400, "access_denied", "the request was denied")
        if state.status == "approved" and screen is not None:
            assert state.decided_by is not None  # an approval names who decided
            if await queries.screens.screen_has_active_device(conn, screen.id):
                raise OAuthError(400, "access_denied", "the screen got another device meanwhile")
            registered = await binding.bind(
                conn,
                screen,
                state.device_info,
                method="device_authorization",
                actor=state.decided_by,
                client_address=state.requested_from,
            )
            await queries.device_authorization.mark_authorization_delivered(
                conn, code_hash, registered.device_id
            )
        else:  # pending, or approved since its screen was looked up (none locked): the next poll binds
            interval = await queries.device_authorization.record_poll(
                conn, code_hash, slow_down=state.too_soon
            )
    if registered is None:  # answered after the commit: the poll (and any slow-down) stays noted
        if state.too_soon:
            raise OAuthError(400, "slow_down", f"poll at most every {interval} s")
        raise OAuthError(400, "authorization_pending", "waiting for an admin to approve")
    log.info("device_authorized", device_id=str(registered.device_id), screen_id=str(registered.screen_id))
    return json_response(
        DeviceTokenResponse(
            access_token=registered.api_key,
            token_type="Bearer",
            device_id=registered.device_id,
            screen_id=registered.screen_id,
            tenant_id=registered.tenant_id,
            config=registered.config,
        ),
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


# ---- the admin ----------------------------------------------------------------------------------


async def show(request: web.Request) -> web.Response:
    """Where the TV asked from, and what it said it is: what the admin is about to approve."""
    principal = principal_of(request)
    user_code = _user_code(request)
    # A lookup is a guess as much as an approval is (a hit shows another tenant's waiting TV).
    async with attempts.limited(request, attempts.USER_CODE, attempts.of_tenant(principal.tenant_id)) as conn:
        found = await queries.device_authorization.find_authorization(conn, user_code, principal.tenant_id)
        if found is None:
            raise NotFound("no such user code")
    return json_response(found[0])


async def approve(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body = await read_json(request, _approval)
    await known_screen(request, principal.tenant_id, body.screen_id)
    return await _decide(request, "approved", body.screen_id)


async def deny(request: web.Request) -> web.Response:
    return await _decide(request, "denied", None)


async def _decide(request: web.Request, status: str, screen_id: uuid.UUID | None) -> web.Response:
    """Approve (for ``screen_id``) or deny a pending request. A user code is guessable: failed
    decisions count against the tenant, in the budget its lookups use."""
    principal = principal_of(request)
    user_code = _user_code(request)
    async with (
        attempts.limited(request, attempts.USER_CODE, attempts.of_tenant(principal.tenant_id)) as conn,
        conn.transaction(),
    ):
        if screen_id is not None:  # screens before authorizations: the lock order
            await lock_free_screen(conn, principal.tenant_id, screen_id)
        found = await queries.device_authorization.find_authorization(
            conn, user_code, principal.tenant_id, lock=True
        )
        if found is None:
            raise NotFound("no such user code")
        authorization, expired = found
        if expired:
            raise CodeExpired("this user code expired; the TV must start again")
        if authorization.status != "pending":
            raise Conflict(f"this request was already {authorization.status}")
        decided = await queries.device_authorization.decide_authorization(
            conn,
            user_code,
            status=status,
            tenant_id=principal.tenant_id,
            screen_id=screen_id,
            decided_by=principal.actor,
        )
    log.info("device_authorization_" + status, user_code=user_code)
    return json_response(decided)


def _user_code(request: web.Request) -> str:
    code = normalized(request.match_info["userCode"])
    if len(code) != USER_CODE_LENGTH or any(c not in USER_CODE_ALPHABET for c in code):
        raise BadRequest(
            "userCode is the 8 letters the TV shows (dashes and case do not matter)",
            details=[ErrorDetail("userCode", "pattern")],
        )
    return code

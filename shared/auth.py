"""Admin credentials: the operator token, and the signed access tokens every service verifies locally.

Access tokens are JWTs signed with Ed25519 by registry (the only holder of the private key); every
other service needs only the public keys, so no request costs a call to registry. Each token names
its key (``kid``), so a new key can sign while tokens of the previous one stay valid until expiry.
The same public keys are published as a JWK Set (registry's ``jwks_uri``) for third parties.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid

import jwt
import msgspec
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shared import errors
from shared.app_keys import SETTINGS
from shared.logging import bind_log_context
from shared.revocations import refuse_revoked
from shared.settings import Settings

ADMIN_SCOPE = "admin"
# What an access token may do, by part of the API; ``admin`` implies every one of them. Each admin
# operation declares the one it needs next to its route.
SCOPES: dict[str, str] = {
    ADMIN_SCOPE: "everything below",
    "screens:read": "read venues, screens, playlists, screen config and files",
    "screens:write": "change venues, screens, playlists, screen config and files",
    "devices:read": "read devices, their codes and serials, the TVs waiting for approval, and commands",
    "devices:write": "codes, provisioning tokens, serial mapping, revoking, approvals, claims and commands",
    "fleet:read": "presence, heartbeats, fleet status and the heartbeat stream",
    "audit:read": "the audit trails: the admin changes and the devices' events",
    "clients:write": "API clients and initial access tokens",
}
# Which scope each route needs, by (method, path template): filled by the routes' declarations.
OPERATION_SCOPES = web.AppKey("OPERATION_SCOPES", dict[tuple[str, str], str])
# RFC 8628: the grant a TV polls the token endpoint with during device-first pairing.
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def within(requested: str, allowed: str) -> str | None:
    """``requested`` (space-separated scopes) as a token's scope, if each is a known scope that
    ``allowed`` grants (``admin`` grants all); None otherwise."""
    granted = allowed.split()
    scopes = list(dict.fromkeys(requested.split()))
    if not scopes or not all(s in SCOPES and (s in granted or ADMIN_SCOPE in granted) for s in scopes):
        return None
    return " ".join(scopes)


class Principal(msgspec.Struct, frozen=True):
    tenant_id: uuid.UUID
    client_id: str
    scope: str

    def allows(self, scope: str) -> bool:
        granted = self.scope.split()
        return scope in granted or ADMIN_SCOPE in granted

    @property
    def actor(self) -> str:
        """Who did it, in the audit trails: the API client whose access token called."""
        return f"client:{self.client_id}"


def _b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def new_secret(prefix: str) -> str:
    """A credential shown once: a prefix that says what it is, then 32 random bytes."""
    return prefix + _b64encode(secrets.token_bytes(32))


def secret_hash(secret: str) -> bytes:
    """How credentials are stored and looked up: SHA-256 (they are random, so no salt is needed).
    Whatever a caller sends hashes, even text no credential holds (a header's undecodable bytes
    arrive as lone surrogates): it matches nothing, so the caller gets the answer of an unknown one."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def generate_signing_key() -> str:
    return _b64encode(Ed25519PrivateKey.generate().private_bytes_raw())


def public_key_of(signing_key: str) -> str:
    private = Ed25519PrivateKey.from_private_bytes(_b64decode(signing_key))
    return _b64encode(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def _kid(public_key: str) -> str:
    return hashlib.sha256(_b64decode(public_key)).hexdigest()[:16]


class Jwk(msgspec.Struct, frozen=True):
    """An Ed25519 public key as a JWK (RFC 7517, RFC 8037's key type OKP), under the ``kid`` our
    access tokens name it by."""

    kty: str
    crv: str
    x: str
    kid: str
    use: str
    alg: str


class JwkSet(msgspec.Struct, frozen=True):
    """RFC 7517 §5: what a third party needs to verify our access tokens, and nothing more."""

    keys: list[Jwk]


def jwk_of(public_key: str) -> Jwk:
    raw = _b64decode(public_key)  # x is unpadded base64url, however the setting was written
    return Jwk(kty="OKP", crv="Ed25519", x=_b64encode(raw), kid=_kid(public_key), use="sig", alg="EdDSA")


def verify_keys(settings: Settings) -> list[str]:
    """The public keys whose tokens are accepted: the signing key's own first (if this service
    holds it), then the previous ones of TOKEN_VERIFY_KEYS."""
    own = [public_key_of(settings.token_signing_key)] if settings.token_signing_key else []
    return list(dict.fromkeys([*own, *settings.token_verify_keys]))


class TokenIssuer:
    def __init__(self, settings: Settings) -> None:
        if not settings.token_signing_key:
            raise SystemExit("TOKEN_SIGNING_KEY is not set: registry cannot issue access tokens")
        self._key = Ed25519PrivateKey.from_private_bytes(_b64decode(settings.token_signing_key))
        self._kid = _kid(public_key_of(settings.token_signing_key))
        self._issuer = settings.token_issuer
        self.ttl = settings.token_ttl_seconds

    def issue(self, *, tenant_id: uuid.UUID, client_id: str, scope: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self._issuer,
            "sub": client_id,
            "tid": str(tenant_id),
            "scope": scope,
            "iat": now,
            "exp": now + self.ttl,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm="EdDSA", headers={"kid": self._kid})


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        public_keys = verify_keys(settings)
        self._keys: dict[str, Ed25519PublicKey] = {
            _kid(key): Ed25519PublicKey.from_public_bytes(_b64decode(key)) for key in public_keys
        }
        # Published as they are accepted (registry's jwks_uri): a third party trusts what we trust.
        self.key_set = JwkSet(keys=[jwk_of(key) for key in public_keys])
        self._issuer = settings.token_issuer

    def verify(self, token: str) -> Principal:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.get(kid) if isinstance(kid, str) else None
            if key is None:
                raise errors.Unauthorized("access token signed by an unknown key")
            claims = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                issuer=self._issuer,
                options={"require": ["exp", "iat", "tid", "sub"]},
            )
            return Principal(
                tenant_id=uuid.UUID(claims["tid"]), client_id=claims["sub"], scope=claims.get("scope", "")
            )
        except jwt.ExpiredSignatureError:
            raise errors.Unauthorized("access token expired") from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise errors.Unauthorized("invalid access token") from None


VERIFIER = web.AppKey("VERIFIER", TokenVerifier)
ISSUER = web.AppKey("ISSUER", TokenIssuer)


def bearer_token(request: web.Request) -> str:
    """The credential of ``Authorization: Bearer``. Every credential we issue is ASCII: one that is
    not names nobody (a 401), and never reaches an encoder that would fail on it."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthorized("send Authorization: Bearer <access token>")
    if not token.isascii():
        raise errors.Unauthorized("the credential is not one this service issued")
    return token.strip()


def tenant_of(request: web.Request) -> uuid.UUID:
    """The tenant whose admin makes this request; 401 without a valid access token."""
    return principal_of(request).tenant_id


def principal_of(request: web.Request) -> Principal:
    """The tenant admin (an API client) making this request; 401 without a valid access token."""
    token = bearer_token(request)
    if token.startswith("dak_"):
        raise errors.Unauthorized("a device key cannot call the admin API; use an access token")
    principal = request.app[VERIFIER].verify(token)
    refuse_revoked(request, principal.client_id)
    if not principal.allows(needed := _scope_needed(request)):
        raise errors.Forbidden(f"this call needs the scope {needed}")
    bind_log_context(tenant_id=str(principal.tenant_id))
    return principal


def _scope_needed(request: web.Request) -> str:
    """The scope the matched operation declares; a route that declares none needs ``admin``."""
    method = "GET" if request.method == "HEAD" else request.method
    path = request.match_info.route.resource.canonical if request.match_info.route.resource else ""
    return request.app.get(OPERATION_SCOPES, {}).get((method, path), ADMIN_SCOPE)


def require_operator(request: web.Request) -> None:
    expected = request.app[SETTINGS].operator_token
    token = bearer_token(request)
    if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        raise errors.Unauthorized("this call needs the operator token")

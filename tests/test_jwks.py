"""The keys that verify access tokens, published (RFC 7517 at the metadata's ``jwks_uri``): a third
party that knows nothing but the published JWK Set verifies a token the token endpoint issued, as
our services do, through a rotation of the signing key. The third party here is joserfc, the JOSE
library of the Authlib project, which never saw our code."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import pytest
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from shared.auth import generate_signing_key, public_key_of
from tests.stack import Stack
from tests.test_oauth_token import bound_sockets_again

# joserfc warns that RFC 9864 deprecates "EdDSA" for the fully specified "Ed25519"; our tokens say
# EdDSA (the algorithm every JWT library still knows), so the warning is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")


async def published_keys(stack: Stack) -> KeySet:
    """What a third party does: discovery (RFC 8414), then the JWK Set at ``jwks_uri``."""
    async with stack.http.get("/.well-known/oauth-authorization-server") as response:
        jwks_uri = (await response.json())["jwks_uri"]
    async with stack.http.get(jwks_uri) as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "public, max-age=300"
        return KeySet.import_key_set(await response.json())


def kid_of(token: str) -> str:
    kid: str = extract_compact(token.encode()).headers()["kid"]
    return kid


def verified(token: str, keys: KeySet, stack: Stack) -> dict[str, Any]:
    """The token's claims, once its signature, issuer and lifetime check out against ``keys``."""
    decoded = jwt.decode(token, keys, algorithms=["EdDSA"])
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": stack.settings.token_issuer},
        exp={"essential": True},
        tid={"essential": True},
    ).validate(decoded.claims)
    return decoded.claims


async def test_the_jwk_set_verifies_an_issued_access_token(stack: Stack) -> None:
    tenant = await stack.tenant()
    status, body, _ = await stack.call("GET", "/.well-known/jwks.json")
    assert status == 200, body
    (key,) = body["keys"]
    # An Ed25519 public key (RFC 8037), named as the tokens name it.
    assert key == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": public_key_of(stack.settings.token_signing_key),
        "kid": kid_of(tenant["token"]),
        "use": "sig",
        "alg": "EdDSA",
    }
    keys = await published_keys(stack)
    claims = verified(tenant["token"], keys, stack)
    assert (claims["tid"], claims["sub"]) == (tenant["id"], tenant["client"]["clientId"])
    # A token whose claims were changed after signing is refused.
    header, _, signature = tenant["token"].split(".")
    forged_claims = {**claims, "tid": "00000000-0000-0000-0000-000000000000"}
    tampered = ".".join(
        (
            header,
            base64.urlsafe_b64encode(msgspec.json.encode(forged_claims)).rstrip(b"=").decode(),
            signature,
        )
    )
    with pytest.raises(JoseError):
        verified(tampered, keys, stack)


async def test_after_a_rotation_both_keys_are_published_and_each_verifies_its_tokens(
    settings, sockets
) -> None:
    async with Stack(settings, sockets) as stack:
        old_token = (await stack.tenant())["token"]
        client = (await stack.tenant("Other Co"))["client"]
    rotated = msgspec.structs.replace(
        settings,
        token_signing_key=generate_signing_key(),
        token_verify_keys=(public_key_of(settings.token_signing_key),),
    )
    async with Stack(rotated, bound_sockets_again(settings)) as stack:
        status, issued, _ = await stack.client_credentials(client["clientId"], client["clientSecret"])
        assert status == 200, issued
        new_token = issued["access_token"]
        keys = await published_keys(stack)
        # The signing key first, then the previous one its tokens still verify with.
        assert [key.kid for key in keys.keys] == [kid_of(token) for token in (new_token, old_token)]
        for token in (new_token, old_token):
            verified(token, keys, stack)
    # Once the previous key is dropped it is no longer published: its tokens no longer verify.
    dropped = msgspec.structs.replace(rotated, token_verify_keys=())
    async with Stack(dropped, bound_sockets_again(settings)) as stack:
        keys = await published_keys(stack)
        assert len(keys.keys) == 1
        verified(new_token, keys, stack)
        with pytest.raises(JoseError):
            verified(old_token, keys, stack)

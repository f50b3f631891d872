"""What every device request of the gateway starts with: which device the key names (from this
gateway's projections, never a database), and whether the TV already has what it asks for."""

from __future__ import annotations

from aiohttp import web

from services.device_gateway.projections import DeviceKey, Projections
from shared.errors import DeviceRevoked, Unauthorized, Unavailable

PROJECTIONS = web.AppKey("PROJECTIONS", Projections)


def authenticate(request: web.Request, projections: Projections | None = None) -> DeviceKey:
    """The device whose key the request presents (``projections``: the app's, when the caller
    has them at hand already)."""
    scheme, _, api_key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not api_key.startswith("dak_"):
        raise Unauthorized("send Authorization: Bearer <dak_ device key>")
    if projections is None:
        projections = request.app[PROJECTIONS]
    device = projections.lookup(api_key)
    if device is None:
        if not projections.ready:  # a key we may not have loaded yet: never a false 401
            raise Unavailable("the gateway is starting; retry shortly", retry_after=2)
        raise Unauthorized("unknown device key")
    if device.revoked:
        raise DeviceRevoked("this device was revoked; show the pairing screen and pair again")
    return device


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 §13.1.2: weak comparison over a list of entity tags, or ``*``."""
    if if_none_match == etag:
        return True
    candidates = [candidate.strip() for candidate in if_none_match.split(",")]
    return "*" in candidates or any(c.removeprefix("W/") == etag for c in candidates)

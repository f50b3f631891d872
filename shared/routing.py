"""Which service answers which public path: the one table behind the local entry point (and,
compared by tests, the Kubernetes HTTPRoute and the ingress-nginx Ingress). First match wins."""

from __future__ import annotations

import re

ROUTES: list[tuple[str, str]] = [
    (r"^/v1/screens/[^/]+/(presence|heartbeats)$", "heartbeat"),
    (r"^/v1/(fleet|heartbeats)(/|$)", "heartbeat"),
    # Calls of a TV that change its binding go to provisioning; the gateway only serves it.
    (r"^/v1/device/(logout|claim-mode)$", "provisioning"),
    (r"^/v1/device(/|$)", "device-gateway"),
    (r"^/(v1/)?devices(/|$)", "provisioning"),
    (r"^/v1/serials$", "provisioning"),
    (r"^/v1/(tenants|venues|screens)(/|$)", "registry"),
    (r"^/v1/(clients|content|audit|webhooks)(/|$)", "registry"),
    (r"^/oauth/device_authorization$", "provisioning"),
    (r"^/oauth(/|$)", "registry"),
    (r"^/\.well-known/oauth-authorization-server$", "registry"),
    (r"^/\.well-known/jwks\.json$", "registry"),
    # The whole API document and the page that shows it (with its own files under /docs/).
    (r"^/openapi\.json$", "registry"),
    (r"^/docs(/|$)", "registry"),
]

# The JWK Set of the keys access tokens verify with: the metadata's jwks_uri.
JWKS_PATH = "/.well-known/jwks.json"

# Provisioning's own path for the device-code grant that registry's /oauth/token passes on; no
# public route leads to it.
DEVICE_TOKEN_PATH = "/internal/oauth/device-token"

_compiled = [(re.compile(pattern), service) for pattern, service in ROUTES]


def service_for(path: str) -> str | None:
    for pattern, service in _compiled:
        if pattern.match(path):
            return service
    return None

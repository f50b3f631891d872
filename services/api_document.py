"""The whole API's OpenAPI document: every service's operations in one.

The entry point builds it from the operation lists; registry, which serves it in a cluster (where
the Gateway routes ``/openapi.json`` and ``/docs`` to it), reads the copy generated into
``services/registry/api_document.json`` instead: importing the other services' route modules would
register their metrics in registry's process. ``python -m services openapi``
prints it; tests/test_api_docs.py keeps the copy current.
"""

from __future__ import annotations

from typing import Any

import msgspec

from services.device_gateway.routes import OPERATIONS as GATEWAY
from services.heartbeat.routes import OPERATIONS as HEARTBEAT
from services.provisioning.routes import OPERATIONS as PROVISIONING
from services.registry.routes import OPERATIONS as REGISTRY
from shared.openapi import document

TITLE = "Signage API"
OPERATIONS = REGISTRY + PROVISIONING + GATEWAY + HEARTBEAT


def whole_document() -> dict[str, Any]:
    return document(TITLE, OPERATIONS)


def rendered() -> bytes:
    """The document as ``services/registry/api_document.json`` holds it (and a command prints it)."""
    return msgspec.json.format(msgspec.json.encode(whole_document()), indent=2) + b"\n"

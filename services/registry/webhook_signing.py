"""Signing a webhook delivery as Standard Webhooks has it: HMAC-SHA256 of ``{id}.{timestamp}.{body}``
keyed by the secret's bytes (base64 after ``whsec_``), sent as ``v1,<base64>``, one per secret in
use, space-separated (the previous secret signs alongside during a rotation's grace period)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"


def secret_key(secret: str) -> bytes:
    """The HMAC key a ``whsec_`` secret stands for."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4))


def signature(secret: str, message_id: str, timestamp: int, body: str) -> str:
    signed = f"{message_id}.{timestamp}.{body}".encode()
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signature_header(secrets: Iterable[str], message_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header: a signature by each of ``secrets``."""
    return " ".join(signature(secret, message_id, timestamp, body) for secret in secrets)

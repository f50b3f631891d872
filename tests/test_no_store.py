"""Every answer that carries a key, a secret, a token or a one-time code says
``Cache-Control: no-store``: no cache on the way, nor a browser's history, keeps it."""

from __future__ import annotations

import typing
from typing import Any

import msgspec

from services.device_gateway.routes import OPERATIONS as GATEWAY
from services.heartbeat.routes import OPERATIONS as HEARTBEAT
from services.provisioning.routes import OPERATIONS as PROVISIONING
from services.registry.routes import OPERATIONS as REGISTRY
from tests.credentials import mint_every_credential
from tests.stack import Stack

# The fields an answer hands a credential out in.
CREDENTIAL_FIELDS = {
    "apiKey",
    "recoverySecret",
    "clientSecret",
    "client_secret",
    "token",
    "access_token",
    "device_code",
    "code",
    "claimCode",
}
# Answers that only echo a credential the caller sent in the path: nothing new to keep.
ECHOES = {"GET /v1/devices/provisioning-codes/{code}/status"}


def _field_names(hint: Any, seen: frozenset[type] = frozenset()) -> set[str]:
    if isinstance(hint, type) and issubclass(hint, msgspec.Struct) and hint not in seen:
        names = set()
        for item in msgspec.structs.fields(hint):
            names.add(item.encode_name)
            for inner in (item.type, *typing.get_args(item.type)):
                names |= _field_names(inner, seen | {hint})
        return names
    return {name for inner in typing.get_args(hint) for name in _field_names(inner, seen)}


def operations_handing_out_credentials() -> set[str]:
    return {
        f"{op.method} {op.path}"
        for op in REGISTRY + PROVISIONING + GATEWAY + HEARTBEAT
        for status, model in op.responses.items()
        if 200 <= status < 300 and _field_names(model) & CREDENTIAL_FIELDS
    } - ECHOES


def test_the_walk_knows_every_operation_that_hands_out_a_credential() -> None:
    found = operations_handing_out_credentials()
    # The finder does see them: a tenant's client secret, a device key, a nested factory key.
    assert {"POST /v1/tenants", "POST /devices/register", "POST /v1/devices/pre-provisioned"} <= found
    assert "GET /v1/screens" not in found


async def test_every_answer_with_a_credential_says_no_store(stack: Stack) -> None:
    minted = await mint_every_credential(stack)
    # A new operation that hands out a credential must join the walk (tests/credentials.py).
    assert operations_handing_out_credentials() <= set(minted.answers), (
        operations_handing_out_credentials() - set(minted.answers)
    )
    missing = {
        operation: headers.get("Cache-Control")
        for operation, headers in minted.answers.items()
        if "no-store" not in headers.get("Cache-Control", "")
    }
    assert missing == {}, missing

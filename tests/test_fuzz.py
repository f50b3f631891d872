"""Every endpoint of the API document, fuzzed by schemathesis against the running stack: no 5xx,
and every answer is one the document describes (status, content type, body schema, headers).

Requests carry valid credentials for their operation (a tenant's access token, a device key, the
operator token), so the generated bodies, paths and queries reach the handlers instead of
stopping at 401. Schemathesis calls are blocking, so they run in a thread while the stack's event
loop serves them."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import APIOperation
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Err
from schemathesis.errors import FailureGroup

from tests.stack import Stack

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
EXAMPLES_PER_OPERATION = 30
# An event stream never ends by itself (the fuzzer would wait on it); test_presence.py covers it.
NOT_FUZZED = {("GET", "/v1/heartbeats/stream")}


def fuzz(base_url: str, document: dict[str, Any], credentials: dict[str, str]) -> tuple[int, dict[str, str]]:
    """Requests made, and the first failure of each operation that failed."""
    schema = schemathesis.openapi.from_dict(document)
    failures: dict[str, str] = {}
    made = collections.Counter[str]()
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # the document describes an operation schemathesis cannot read
        operation = result.ok()
        if (operation.method.upper(), operation.path) in NOT_FUZZED:
            continue
        declared = document["paths"][operation.path][operation.method.lower()].get("security", [])
        token = next(
            (credentials[name] for option in declared for name in option if name in credentials), None
        )
        fuzz_operation(base_url, operation, token, made, failures)
    return sum(made.values()), failures


def fuzz_operation(
    base_url: str,
    operation: APIOperation,
    token: str | None,
    made: collections.Counter[str],
    failures: dict[str, str],
) -> None:
    """``EXAMPLES_PER_OPERATION`` requests to one operation: counted in ``made``, its first failure
    kept in ``failures``."""
    label = f"{operation.method.upper()} {operation.path}"

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,  # the same inputs every run: a failure in CI is one you can replay
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    @given(case=operation.as_strategy())
    def check(case: schemathesis.Case) -> None:
        if token is not None:
            case.headers["Authorization"] = f"Bearer {token}"
        response = case.call(base_url=base_url, timeout=10)
        made[label] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as exc:
            failures.setdefault(label, f"{response.status_code} {response.text[:300]} <- {exc}"[:2000])

    check()


@pytest.mark.timeout(600)
async def test_no_endpoint_answers_5xx_or_off_its_document(settings, sockets):
    # Generous failure limits: the fuzzer's wrong guesses must not turn every answer into 429.
    relaxed = msgspec.structs.replace(settings, register_failures_per_window=1_000_000)
    async with Stack(relaxed, sockets) as stack:
        tenant = await stack.tenant()
        _, polling = await stack.paired_device(tenant["token"])
        status, document, _ = await stack.call("GET", "/openapi.json")
        assert status == 200
        credentials = {
            "accessToken": tenant["token"],
            "operatorToken": stack.settings.operator_token,
            "deviceKey": polling["apiKey"],
        }
        made, failures = await asyncio.to_thread(fuzz, stack.base_url, document, credentials)
    operations = sum(len(methods) for methods in document["paths"].values()) - len(NOT_FUZZED)
    assert made >= operations * 5, made  # every operation was really exercised
    print(f"fuzzed {operations} operations with {made} requests")  # docs/reliability.md quotes it
    assert not failures, "\n\n".join(f"{label}: {text}" for label, text in sorted(failures.items()))

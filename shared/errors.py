"""The one error shape of every service (``{"error", "message", "details": [{"field", "problem"}]}``),
and the exceptions that produce it."""

from __future__ import annotations

import typing
from typing import Any

import msgspec

from shared import validation


class ErrorDetail(msgspec.Struct, frozen=True):
    field: str
    problem: str


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    error: str
    message: str
    details: list[ErrorDetail] = []
    # A machine-readable cause where clients act on it (claim mode: MATCHING_DEVICE_ONLY).
    reason: str | None = None


class ServiceError(Exception):
    """An expected failure that becomes a JSON error response; queries and handlers raise these."""

    status = 500
    code = "internal"

    def __init__(
        self,
        message: str,
        *,
        details: list[ErrorDetail] | None = None,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.headers = headers or {}
        self.reason = reason

    def body(self) -> ErrorBody:
        return ErrorBody(error=self.code, message=self.message, details=self.details, reason=self.reason)


class BadRequest(ServiceError):
    status, code = 400, "invalid_request"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str = "missing or invalid credentials") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class DeviceRevoked(ServiceError):
    status, code = 401, "device_revoked"


class Forbidden(ServiceError):
    status, code = 403, "forbidden"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class MethodNotAllowed(ServiceError):
    status, code = 405, "method_not_allowed"


class Conflict(ServiceError):
    status, code = 409, "conflict"


class CodeExpired(ServiceError):
    status, code = 410, "code_expired"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class RateLimited(ServiceError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})


class Unavailable(ServiceError):
    status, code = 503, "unavailable"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class OAuthErrorBody(ErrorBody, frozen=True, omit_defaults=True):
    error_description: str = ""


class OAuthError(ServiceError):
    """An OAuth 2.0 error (RFC 6749 §5.2, RFC 8628 §3.5, RFC 7591 §3.2.2): ``error`` is the RFC's
    code; the body is our one shape with ``error_description`` too, for stock OAuth clients."""

    def __init__(self, status: int, error: str, description: str, *, basic: bool = False) -> None:
        headers = {"Cache-Control": "no-store"}
        if basic:  # a client that authenticated with HTTP Basic is told how to retry (RFC 6749 §5.2)
            headers["WWW-Authenticate"] = 'Basic realm="oauth"'
        super().__init__(description, headers=headers)
        self.status, self.code = status, error

    def body(self) -> OAuthErrorBody:
        return OAuthErrorBody(error=self.code, message=self.message, error_description=self.message)


# ---- naming every bad field -------------------------------------------------------------------


def invalid_body(type_: Any, raw: bytes | Any) -> BadRequest:
    """A 400 naming every field of the body that does not fit ``type_``, each in words; ``raw`` is
    the body's JSON, or the value already decoded from it."""
    try:
        found = validation.problems(type_, validation.loads(raw) if isinstance(raw, bytes) else raw)
    except RecursionError:  # free-form JSON nested about as deep as the typed decoding allowed
        return BadRequest("the body is nested too deeply", details=[ErrorDetail(field="", problem="invalid")])
    if not found:  # msgspec refused what the walk does not model: still a clear 400, never a 500
        return BadRequest(
            "the body does not fit this endpoint; its schema is in the API document (/openapi.json)",
            details=[ErrorDetail(field="", problem="invalid")],
        )
    return BadRequest(
        "; ".join(problem.message for problem in found),
        details=[ErrorDetail(field=problem.field, problem=problem.problem) for problem in found],
    )


def nul_characters(raw: Any) -> BadRequest:
    """A 400 naming each string that holds NUL: JSON allows it, PostgreSQL text does not."""
    fields = list(dict.fromkeys(_nul_paths(raw, "")))
    return BadRequest(
        "; ".join(f"{field or 'body'} must not contain the NUL character (\\u0000)" for field in fields),
        details=[ErrorDetail(field, "format") for field in fields],
    )


def _nul_paths(value: Any, path: str) -> typing.Iterator[str]:
    if isinstance(value, str):
        if "\x00" in value:
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            key_path = f"{path}.{key}" if path else key
            if "\x00" in key:
                yield key_path
            yield from _nul_paths(item, key_path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_paths(item, f"{path}[{index}]")

"""The one error shape of every service (the HTTP contract: docs/api.md), and its exceptions."""

from __future__ import annotations

import re
import typing
from typing import Any

import msgspec


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
# msgspec stops at the first error. Clients fix a form faster when every bad field is named, so on
# the (rare) error path we walk the decoded JSON against the Struct and collect each problem.

_AT = re.compile(r"^(?P<text>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_MISSING = re.compile(r"missing required field `(?P<name>[^`]+)`")
_POST_INIT_FIELD = re.compile(r"^`(?P<name>[^`]+)` ")


def invalid_body(type_: type, raw: Any) -> BadRequest:
    """A 400 naming every field of ``raw`` (decoded JSON) that does not fit ``type_``."""
    details = _problems(type_, raw, "")
    if not details:  # cannot happen unless the walk disagrees with msgspec; still answer clearly
        details = [ErrorDetail(field="", problem="invalid")]
    message = "; ".join(f"{d.field or 'body'}: {text}" for d, text in details)
    return BadRequest(message, details=[d for d, _ in details])


def _problems(type_: Any, value: Any, path: str) -> list[tuple[ErrorDetail, str]]:
    inner = typing.get_args(type_)[0] if typing.get_origin(type_) is typing.Annotated else type_
    if typing.get_origin(inner) is list and isinstance(value, list):
        (item_type,) = typing.get_args(inner)
        found = [p for i, item in enumerate(value) for p in _problems(item_type, item, f"{path}[{i}]")]
        if found:
            return found
    if isinstance(type_, type) and issubclass(type_, msgspec.Struct) and isinstance(value, dict):
        found: list[tuple[ErrorDetail, str]] = []
        for field in msgspec.structs.fields(type_):
            name = field.encode_name
            field_path = f"{path}.{name}" if path else name
            if name not in value:
                if field.required:
                    found.append((ErrorDetail(field_path, "required"), "is required"))
                continue
            found.extend(_problems(field.type, value[name], field_path))
        if found:
            return found
    try:
        msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        return [_detail(str(exc), path)]
    return []


def _detail(error: str, base: str) -> tuple[ErrorDetail, str]:
    match = _AT.match(error)
    assert match is not None  # the pattern matches any string
    text, suffix = match["text"], match["path"] or ""
    field = (base + suffix).lstrip(".")
    if missing := _MISSING.search(text):
        return ErrorDetail(_join(field, missing["name"]), "required"), "is required"
    if named := _POST_INIT_FIELD.match(text):
        # our __post_init__ validators start their message with the field's name in backticks
        return ErrorDetail(_join(field, named["name"]), "format"), text[named.end() :]
    if "matching regex" in text:
        problem = "pattern"
    elif "of length" in text:
        problem = "length"
    elif re.search(r"[<>]=? ?-?\d", text):
        problem = "range"
    elif "Invalid enum value" in text:
        problem = "enum"
    elif text.startswith("Expected"):
        problem = "type"
    else:
        problem = "invalid"
    return ErrorDetail(field, problem), text


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def nul_characters(raw: Any) -> BadRequest:
    """A 400 naming each string that holds NUL: JSON allows it, PostgreSQL text does not."""
    fields = list(dict.fromkeys(_nul_paths(raw, "")))
    return BadRequest(
        "text must not contain NUL (\\u0000) characters",
        details=[ErrorDetail(field, "format") for field in fields],
    )


def _nul_paths(value: Any, path: str) -> typing.Iterator[str]:
    if isinstance(value, str):
        if "\x00" in value:
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            key_path = _join(path, key)
            if "\x00" in key:
                yield key_path
            yield from _nul_paths(item, key_path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_paths(item, f"{path}[{index}]")

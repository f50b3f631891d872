"""The walk that names every bad field of a body in words (shared/validation.py), over made-up
Structs and over every request body of the API (no stack): it agrees with msgspec on what is
refused, and its messages say what a field must be, never a library's regex or type name."""

from __future__ import annotations

import decimal
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import Meta
from msgspec import inspect as mi

from services.device_gateway.routes import OPERATIONS as GATEWAY
from services.heartbeat.routes import OPERATIONS as HEARTBEAT
from services.provisioning.routes import OPERATIONS as PROVISIONING
from services.registry.routes import OPERATIONS as REGISTRY
from shared import errors
from shared.validation import FieldInvalid, loads, problems

Code = Annotated[str, Meta(pattern=r"^[A-Z0-9]{8}(?!\n)$", description="8 characters A-Z or 0-9")]


class Item(msgspec.Struct, kw_only=True, rename="camel"):
    type: Literal["image", "video", "web"]
    url: Annotated[str, Meta(max_length=30, pattern=r"^https?://\S+$")]
    duration_seconds: Annotated[float, Meta(gt=0, le=86400)]


class Device(msgspec.Struct, kw_only=True, rename="camel"):
    model: Annotated[str, Meta(min_length=1, max_length=100)]
    ip_address: str
    name: Annotated[str, Meta(max_length=200)] | None = None

    def __post_init__(self) -> None:
        if self.ip_address.count(".") != 3:
            raise FieldInvalid("ip_address", "must be an IPv4 address")


class Body(msgspec.Struct, kw_only=True, rename="camel"):
    pairing_code: Code
    device_info: Device
    items: Annotated[list[Item], Meta(min_length=1, max_length=3)] = msgspec.field(
        default_factory=lambda: [Item(type="image", url="https://x/a.png", duration_seconds=5)]
    )
    orientation: Literal["landscape", "portrait"] | None = None
    count: Annotated[int, Meta(ge=1, le=1000)] = 1
    ratio: Annotated[float, Meta(ge=0, lt=1)] = 0
    venue_id: uuid.UUID | None = None
    at: Annotated[datetime, Meta(tz=True)] | None = None
    data: dict[str, Any] | None = None


class Window(msgspec.Struct):
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError("end must not come before start")


class Price(msgspec.Struct):
    amount: decimal.Decimal  # a type the walk does not model: msgspec alone judges it


VALID: dict[str, Any] = {
    "pairingCode": "ABCD1234",
    "deviceInfo": {"model": "X1", "ipAddress": "10.0.0.1"},
}


ITEM = {"type": "image", "url": "https://x", "durationSeconds": 5}


def named(type_: Any, value: Any) -> list[tuple[str, str, str]]:
    return [(p.field, p.problem, p.message) for p in problems(type_, value)]


def body(**changes: Any) -> dict[str, Any]:
    return {**VALID, **changes}


def device(**changes: Any) -> dict[str, Any]:
    return body(deviceInfo={**VALID["deviceInfo"], **changes})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            body(pairingCode="abcd1234"),
            ("pairingCode", "pattern", "pairingCode must be 8 characters A-Z or 0-9"),
        ),
        (
            body(pairingCode=12345678),
            ("pairingCode", "type", "pairingCode must be a string (8 characters A-Z or 0-9)"),
        ),
        ({"deviceInfo": VALID["deviceInfo"]}, ("pairingCode", "required", "pairingCode is required")),
        (device(model=""), ("deviceInfo.model", "length", "deviceInfo.model must be 1 to 100 characters")),
        (device(model=None), ("deviceInfo.model", "type", "deviceInfo.model must be a string")),
        (
            device(name="x" * 201),
            ("deviceInfo.name", "length", "deviceInfo.name must be at most 200 characters"),
        ),
        (device(name=5), ("deviceInfo.name", "type", "deviceInfo.name must be a string or null")),
        (
            device(ipAddress="10.0.1"),
            ("deviceInfo.ipAddress", "format", "deviceInfo.ipAddress must be an IPv4 address"),
        ),
        (body(deviceInfo="Sony"), ("deviceInfo", "type", "deviceInfo must be an object")),
        (body(items=[]), ("items", "length", "items must have 1 to 3 entries")),
        (body(items={}), ("items", "type", "items must be a list")),
        (
            body(items=[ITEM, {**ITEM, "type": "pdf"}]),
            ("items[1].type", "enum", "items[1].type must be one of image, video, web"),
        ),
        (
            body(items=[{"type": "image", "url": "ftp://x", "durationSeconds": 5}]),
            ("items[0].url", "pattern", "items[0].url is not in the expected form"),
        ),
        (
            body(items=[{"type": "web", "url": "https://x", "durationSeconds": 0}]),
            (
                "items[0].durationSeconds",
                "range",
                "items[0].durationSeconds must be greater than 0 and at most 86400",
            ),
        ),
        (
            body(items=[{"type": "web", "url": "https://x", "durationSeconds": "5"}]),
            ("items[0].durationSeconds", "type", "items[0].durationSeconds must be a number"),
        ),
        (
            body(orientation="diagonal"),
            ("orientation", "enum", "orientation must be one of landscape, portrait"),
        ),
        (
            body(orientation=1),
            ("orientation", "type", "orientation must be one of landscape, portrait or null"),
        ),
        (body(count=0), ("count", "range", "count must be at least 1 and at most 1000")),
        (body(count=10**30), ("count", "range", "count must be at least 1 and at most 1000")),
        (body(count=5.5), ("count", "type", "count must be an integer")),
        (body(count=True), ("count", "type", "count must be an integer")),
        (body(ratio=1), ("ratio", "range", "ratio must be at least 0 and less than 1")),
        (body(venueId="nope"), ("venueId", "invalid", "venueId must be a UUID")),
        (body(venueId=7), ("venueId", "type", "venueId must be a UUID or null")),
        (
            body(at="yesterday"),
            ("at", "invalid", "at must be an RFC 3339 time with an offset, like 2026-11-23T08:00:00Z"),
        ),
        (
            body(at="2026-11-23T08:00:00"),
            ("at", "format", "at must be an RFC 3339 time with an offset, like 2026-11-23T08:00:00Z"),
        ),
        (body(data="x"), ("data", "type", "data must be an object or null")),
        ([], ("", "type", "body must be an object")),
    ],
)
def test_one_bad_field_is_named_in_words(value: Any, expected: tuple[str, str, str]) -> None:
    assert named(Body, value) == [expected]
    with pytest.raises(msgspec.ValidationError):  # the walk names what msgspec refuses
        msgspec.convert(value, Body)


def test_every_bad_field_is_named_and_the_message_joins_them() -> None:
    value = device(model="", ipAddress="10.0.1")
    value.update(pairingCode="abc", count=0)
    error = errors.invalid_body(Body, value)
    assert (error.status, error.code) == (400, "invalid_request")
    assert [(d.field, d.problem) for d in error.details] == [
        ("pairingCode", "pattern"),
        ("deviceInfo.model", "length"),
        ("deviceInfo.ipAddress", "format"),  # a __post_init__ check, though model is bad too
        ("count", "range"),
    ]
    assert error.message == (
        "pairingCode must be 8 characters A-Z or 0-9; deviceInfo.model must be 1 to 100 characters; "
        "deviceInfo.ipAddress must be an IPv4 address; count must be at least 1 and at most 1000"
    )


def test_a_post_init_check_that_needs_a_bad_field_is_left_to_that_field() -> None:
    assert named(Body, device(ipAddress=5)) == [
        ("deviceInfo.ipAddress", "type", "deviceInfo.ipAddress must be a string")
    ]


def test_a_check_of_several_fields_keeps_its_own_words() -> None:
    assert named(Window, {"start": 5, "end": 1}) == [("", "invalid", "end must not come before start")]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (b'"ratio": 1e400', ("ratio", "range", "ratio must be at least 0 and less than 1")),
        (b'"data": {"a": [1, -1e400]}', ("data.a[1]", "range", "data.a[1] is too large a number")),
    ],
)
def test_a_number_too_large_for_a_float_is_named_not_a_decoding_error(
    extra: bytes, expected: tuple[str, str, str]
) -> None:
    raw = msgspec.json.encode(VALID)[:-1] + b", " + extra + b"}"
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(raw, type=Body)
    error = errors.invalid_body(Body, raw)
    assert [(d.field, d.problem, error.message) for d in error.details] == [expected]


@pytest.mark.parametrize(
    "value",
    [{"amount": "a lot"}, {"amount": "12.50"}],
    ids=["refused-by-msgspec-alone", "accepted-by-msgspec"],
)
def test_what_the_walk_cannot_name_is_still_a_clear_400(value: dict[str, str]) -> None:
    """The walk does not model decimals; a body it finds nothing wrong with answers in words."""
    error = errors.invalid_body(Price, value)
    assert (error.status, error.code) == (400, "invalid_request")
    assert [(d.field, d.problem) for d in error.details] == [("", "invalid")]
    assert "API document" in error.message and "Expected" not in error.message
    assert msgspec.json.decode(msgspec.json.encode(error.body())) == {
        "error": "invalid_request",
        "message": error.message,
        "details": [{"field": "", "problem": "invalid"}],
    }


def test_nul_characters_are_named_per_field() -> None:
    error = errors.nul_characters({"name": "a\x00b", "items": [{"url": "x"}, {"url": "\x00"}]})
    assert [(d.field, d.problem) for d in error.details] == [("name", "format"), ("items[1].url", "format")]
    assert error.message == (
        "name must not contain the NUL character (\\u0000); "
        "items[1].url must not contain the NUL character (\\u0000)"
    )


# ---- every request body of the API: the walk agrees with msgspec --------------------------------

REQUEST_BODIES = sorted(
    {
        op.body
        for op in (*REGISTRY, *PROVISIONING, *GATEWAY, *HEARTBEAT)
        if isinstance(op.body, type) and issubclass(op.body, msgspec.Struct)
    },
    key=lambda t: t.__name__,
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def near(t: mi.Type) -> st.SearchStrategy[Any]:
    """Values that mostly fit ``t``, each part sometimes replaced by any JSON: near misses."""
    return st.one_of(_fitting(t), JSON) if not isinstance(t, mi.StructType) else _fitting(t)


def _fitting(t: mi.Type) -> st.SearchStrategy[Any]:
    t = t.type if isinstance(t, mi.Metadata) else t
    if isinstance(t, mi.UnionType):
        return st.one_of([near(member) for member in t.types])
    if isinstance(t, mi.StrType):
        low, high = t.min_length or 0, t.max_length or 30
        sized = st.text(min_size=max(0, low - 1), max_size=min(high + 1, 40))
        return st.one_of(sized, st.from_regex(t.pattern)) if t.pattern else sized
    if isinstance(t, (mi.IntType, mi.FloatType)):
        edges = [b + d for b in (t.ge, t.gt, t.le, t.lt) if b is not None for d in (-1, 0, 1)]
        numbers = (
            st.integers() if isinstance(t, mi.IntType) else st.floats(allow_nan=False, allow_infinity=False)
        )
        return st.one_of(st.sampled_from(edges), numbers) if edges else numbers
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.UUIDType):
        return st.uuids().map(str)
    if isinstance(t, mi.DateTimeType):
        return st.sampled_from(["2026-11-23T08:00:00Z", "2026-11-23T08:00:00", "2026-13-40T08:00:00Z"])
    if isinstance(t, mi.ListType):
        return st.lists(near(t.item_type), min_size=max(0, (t.min_length or 0) - 1), max_size=3)
    if isinstance(t, mi.StructType):
        fields = {f.encode_name: near(f.type) for f in t.fields}
        return st.fixed_dictionaries({}, optional=fields)
    return JSON


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
@pytest.mark.parametrize("type_", REQUEST_BODIES, ids=lambda t: t.__name__)
def test_the_walk_refuses_exactly_what_msgspec_refuses(type_: type, data: st.DataObject) -> None:
    raw = msgspec.json.encode(data.draw(near(mi.type_info(type_))))
    try:
        msgspec.json.decode(raw, type=type_)
        refused = False
    except msgspec.ValidationError:
        refused = True
    found = problems(type_, loads(raw))
    assert bool(found) == refused, (raw, found)
    for jargon in ("Expected", "`", "regex", "(?!", "$."):
        assert not any(jargon in p.message for p in found), (raw, found)

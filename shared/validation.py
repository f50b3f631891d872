"""What is wrong with a request body, in words: every bad field named, each with what it must be.

msgspec stops at the first error and words it for programmers (a type name, a regex). On the
(rare) error path the decoded JSON is walked against the body's type as ``msgspec.inspect``
describes it, and each field's type and limits are checked here, so that every bad field is named
and its message says what the field must be, without reading the library's text. A pattern cannot
explain itself: a field with one says in its ``Meta(description=...)`` what it must be ("8
characters A-Z or 0-9"), which the API document shows as well.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import types
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import msgspec
from msgspec import inspect as mi


class FieldInvalid(ValueError):
    """Raised by a Struct's ``__post_init__`` for one field: ``name`` is the attribute, ``must`` says
    in words what it must be ("must be a valid IPv4 or IPv6 address")."""

    def __init__(self, name: str, must: str) -> None:
        super().__init__(f"{name} {must}")
        self.name, self.must = name, must


class Problem(NamedTuple):
    field: str  # the camelCase JSON path ("deviceInfo.macAddress", "items[0].url"); "" is the body
    problem: str  # required, type, pattern, length, range, enum, format or invalid
    message: str  # for people: "pairingCode must be 8 characters A-Z or 0-9"


# A number too large for a float (1e400) becomes infinity, a value to name, rather than an error of
# the decoding itself.
_loose = msgspec.json.Decoder(float_hook=float)


def loads(raw: bytes) -> Any:
    """JSON that is well formed but refused by a typed decoder, as plain values for ``problems``."""
    return _loose.decode(raw)


def problems(type_: Any, value: Any) -> list[Problem]:
    """Every way ``value`` (decoded JSON) does not fit ``type_``; empty if the walk finds none."""
    return list(_check(mi.type_info(type_), value, ""))


def _check(t: mi.Type, value: Any, path: str, description: str | None = None) -> Iterator[Problem]:
    if isinstance(t, mi.Metadata):
        description = (t.extra_json_schema or {}).get("description", description)
        t = t.type
    if isinstance(t, mi.UnionType):
        yield from _union(t, value, path, description)
    elif isinstance(t, mi.AnyType):
        yield from _huge_numbers(value, path)
    elif _kind_of(value) not in _kinds(t):
        must = _words(t) + (f" ({description})" if description else "")
        yield Problem(path, "type", f"{_name(path)} must be {must}")
    elif isinstance(t, mi.StrType):
        yield from _string(t, value, path, description)
    elif isinstance(t, (mi.IntType, mi.FloatType)):
        yield from _number(t, value, path)
    elif isinstance(t, (mi.LiteralType, mi.EnumType)):
        if value not in _choices(t):
            yield Problem(path, "enum", f"{_name(path)} must be {_words(t)}")
    elif isinstance(t, (mi.UUIDType, mi.DateTimeType, mi.DateType)):
        yield from _parsed(t, value, path)
    elif isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        yield from _length(t, value, path, "entry", "entries", "length", "have")
        for index, item in enumerate(value):
            yield from _check(t.item_type, item, f"{path}[{index}]")
    elif isinstance(t, mi.DictType):
        yield from _length(t, value, path, "entry", "entries", "length", "have")
        for key, item in value.items():
            yield from _check(t.value_type, item, _join(path, key))
    elif isinstance(t, mi.StructType) and not t.array_like:
        yield from _struct(t, value, path)
    # Other types (bool and null need nothing past their kind) are left to msgspec; the caller
    # answers for what the walk cannot name.


def _union(t: mi.UnionType, value: Any, path: str, description: str | None) -> Iterator[Problem]:
    kind = _kind_of(value)
    # msgspec allows one member per JSON kind, so the value's kind decides which member it is.
    fitting = [m for m in t.types if kind in _kinds(_bare(m))]
    if fitting:
        yield from _check(fitting[0], value, path, description)
        return
    must = " or ".join(_words(_bare(m)) for m in t.types)
    yield Problem(
        path, "type", f"{_name(path)} must be {must}" + (f" ({description})" if description else "")
    )


def _struct(t: mi.StructType, value: dict[str, Any], path: str) -> Iterator[Problem]:
    bad = False
    good: dict[str, Any] = {}  # attribute name -> the field's JSON value, for fields that fit
    for field in t.fields:
        where = _join(path, field.encode_name)
        if field.encode_name not in value:
            if field.required:
                bad = True
                yield Problem(where, "required", f"{where} is required")
            continue
        found = list(_check(field.type, value[field.encode_name], where))
        bad = bad or bool(found)
        yield from found
        if not found:
            good[field.name] = value[field.encode_name]
    names = {field.name: field.encode_name for field in t.fields}
    if not hasattr(t.cls, "__post_init__"):
        return
    if bad:
        yield from _post_init_of_good(t, good, path, names)
    else:
        yield from _post_init_of_whole(t.cls, value, path, names)


def _post_init_of_whole(
    cls: type[msgspec.Struct], value: dict[str, Any], path: str, names: dict[str, str]
) -> Iterator[Problem]:
    """Every field fits: what is left is the Struct's own ``__post_init__`` check."""
    try:
        msgspec.convert(value, cls)
    except msgspec.ValidationError as exc:
        cause = exc.__cause__
        if isinstance(cause, FieldInvalid):
            where = _join(path, names.get(cause.name, cause.name))
            yield Problem(where, "format", f"{where} {cause.must}")
        elif isinstance(cause, (ValueError, TypeError)):  # a check of several fields: our words
            yield Problem(path, "invalid", str(cause))
        # no cause: msgspec refused something the walk does not model; the caller answers


def _post_init_of_good(
    t: mi.StructType, good: dict[str, Any], path: str, names: dict[str, str]
) -> Iterator[Problem]:
    """Some fields are bad already: the ``__post_init__`` check still runs over the good ones (and
    the defaults of absent ones), so a bad ipAddress is named next to a bad manufacturer, not only
    once that one is fixed."""
    typed: dict[str, Any] = {}
    try:
        for field in t.fields:
            if field.name in good:
                typed[field.name] = msgspec.convert(good[field.name], _field_type(t.cls, field.name))
            elif field.default is not msgspec.NODEFAULT:
                typed[field.name] = field.default
            elif field.default_factory is not msgspec.NODEFAULT:
                typed[field.name] = field.default_factory()
        # The Struct's own check, run on a stand-in: the real Struct cannot be made from bad fields.
        t.cls.__post_init__(types.SimpleNamespace(**typed))  # type: ignore[attr-defined]  # not every Struct has one
    except FieldInvalid as exc:
        if exc.name in good:
            where = _join(path, names.get(exc.name, exc.name))
            yield Problem(where, "format", f"{where} {exc.must}")
    except Exception:  # noqa: BLE001 - the check needs a bad or missing field, which is named already
        return


def _field_type(cls: type[msgspec.Struct], name: str) -> Any:
    return next(f.type for f in msgspec.structs.fields(cls) if f.name == name)


def _string(t: mi.StrType, value: str, path: str, description: str | None) -> Iterator[Problem]:
    if _outside(len(value), t.min_length, t.max_length):
        yield from _length(t, value, path, "character", "characters", "length", "be")
    elif t.pattern is not None and not re.search(t.pattern, value):
        must = f"must be {description}" if description else "is not in the expected form"
        yield Problem(path, "pattern", f"{_name(path)} {must}")


def _number(t: mi.IntType | mi.FloatType, value: Any, path: str) -> Iterator[Problem]:
    number = _as_float(value) if isinstance(t, mi.FloatType) else value
    lower = upper = None
    if t.ge is not None:
        lower, low_ok = f"at least {_num(t.ge)}", number >= t.ge
    elif t.gt is not None:
        lower, low_ok = f"greater than {_num(t.gt)}", number > t.gt
    else:
        low_ok = True
    if t.le is not None:
        upper, high_ok = f"at most {_num(t.le)}", number <= t.le
    elif t.lt is not None:
        upper, high_ok = f"less than {_num(t.lt)}", number < t.lt
    else:
        high_ok = True
    multiple = t.multiple_of is None or (_finite(number) and number % t.multiple_of == 0)
    if low_ok and high_ok and multiple:
        # Within the limits, but past what a float holds (1e400 decodes as infinity).
        if isinstance(number, float) and math.isinf(number):
            yield Problem(path, "range", f"{_name(path)} is too large a number")
        return
    limits = [words for words in (lower, upper) if words]
    if t.multiple_of is not None:
        limits.append(f"a multiple of {_num(t.multiple_of)}")
    yield Problem(path, "range", f"{_name(path)} must be {' and '.join(limits)}")


def _parsed(t: mi.UUIDType | mi.DateTimeType | mi.DateType, value: str, path: str) -> Iterator[Problem]:
    python_type = {mi.UUIDType: uuid.UUID, mi.DateTimeType: dt.datetime, mi.DateType: dt.date}[type(t)]
    try:
        parsed: Any = msgspec.convert(value, python_type)
    except msgspec.ValidationError:
        yield Problem(path, "invalid", f"{_name(path)} must be {_words(t)}")
        return
    if isinstance(t, mi.DateTimeType) and t.tz is not None and (parsed.tzinfo is not None) != t.tz:
        yield Problem(path, "format", f"{_name(path)} must be {_words(t)}")


def _length(
    t: mi.StrType | mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType | mi.DictType,
    value: Any,
    path: str,
    one: str,
    many: str,
    problem: str,
    verb: str,
) -> Iterator[Problem]:
    low, high = t.min_length, t.max_length
    if not _outside(len(value), low, high):
        return
    unit = one if (high if high is not None else low) == 1 else many
    if low is not None and high is not None:
        count = f"exactly {low} {unit}" if low == high else f"{low} to {high} {unit}"
    elif high is not None:
        count = f"at most {high} {unit}"
    else:
        count = f"at least {low} {unit}"
    yield Problem(path, problem, f"{_name(path)} must {verb} {count}")


def _huge_numbers(value: Any, path: str) -> Iterator[Problem]:
    """Free-form JSON (``dict[str, Any]``) may hold any number a float can. Walked with a stack, not
    recursion: free-form JSON may nest as deep as msgspec allows."""
    stack = [(value, path)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, float) and math.isinf(value):
            yield Problem(path, "range", f"{_name(path)} is too large a number")
        elif isinstance(value, dict):
            stack.extend((item, _join(path, key)) for key, item in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{index}]") for index, item in reversed(list(enumerate(value))))


# ---- kinds of JSON value and how they are named --------------------------------------------------


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: True is an int to Python, not to JSON
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    return "array" if isinstance(value, list) else "other"


def _kinds(t: mi.Type) -> frozenset[str]:
    if isinstance(t, (mi.StrType, mi.UUIDType, mi.DateTimeType, mi.DateType)):
        return frozenset({"string"})
    if isinstance(t, (mi.LiteralType, mi.EnumType)):
        return frozenset(_kind_of(choice) for choice in _choices(t))
    if isinstance(t, mi.StructType) and t.array_like:
        return frozenset(_ALL_KINDS)  # not modelled: msgspec alone judges it
    kinds = {
        mi.IntType: {"integer"},
        mi.FloatType: {"integer", "number"},
        mi.BoolType: {"boolean"},
        mi.NoneType: {"null"},
        mi.StructType: {"object"},
        mi.DictType: {"object"},
        mi.ListType: {"array"},
        mi.SetType: {"array"},
        mi.FrozenSetType: {"array"},
        mi.VarTupleType: {"array"},
    }.get(type(t))
    # A type the walk does not model takes any kind here; msgspec has judged it already.
    return frozenset(kinds) if kinds is not None else frozenset(_ALL_KINDS)


_ALL_KINDS = ("null", "boolean", "integer", "number", "string", "object", "array", "other")


def _words(t: mi.Type) -> str:
    t = _bare(t)
    if isinstance(t, (mi.LiteralType, mi.EnumType)):
        return "one of " + ", ".join(str(choice) for choice in _choices(t))
    if isinstance(t, mi.DateTimeType):
        offset = {True: " with an offset", False: " without an offset", None: ""}[t.tz]
        return f"an RFC 3339 time{offset}, like 2026-11-23T08:00:00{'Z' if t.tz is not False else ''}"
    return {
        mi.StrType: "a string",
        mi.UUIDType: "a UUID",
        mi.DateType: "a date, like 2026-11-23",
        mi.IntType: "an integer",
        mi.FloatType: "a number",
        mi.BoolType: "true or false",
        mi.NoneType: "null",
        mi.StructType: "an object",
        mi.DictType: "an object",
        mi.ListType: "a list",
        mi.SetType: "a list",
        mi.FrozenSetType: "a list",
        mi.VarTupleType: "a list",
    }.get(type(t), "of another kind")


def _choices(t: mi.LiteralType | mi.EnumType) -> tuple[Any, ...]:
    if isinstance(t, mi.EnumType):
        return tuple(member.value for member in t.cls)
    return t.values


def _bare(t: mi.Type) -> mi.Type:
    return t.type if isinstance(t, mi.Metadata) else t


def _outside(size: int, low: int | None, high: int | None) -> bool:
    return (low is not None and size < low) or (high is not None and size > high)


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer past a float's range
        return math.copysign(math.inf, value)


def _finite(number: float) -> bool:
    return not isinstance(number, float) or math.isfinite(number)


def _num(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _name(path: str) -> str:
    return path or "body"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name

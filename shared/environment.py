"""How a settings Struct meets the environment: read and checked, handed to a child, listed for docs.

The Struct declares each setting once (``shared.settings``, ``devstack.settings``); everything
here works from its fields, so a new field is a new variable, checked, documented and passed on.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import typing
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
# A NATS seed list: the servers a client tries first, in order, before it learns the rest of the
# cluster from them. Read as every NATS client reads it, comma-separated; each one checked here so
# a typo is a message naming the variable, not a client error at connect time.
NatsServers = tuple[Annotated[str, Meta(pattern=r"^(nats|tls|ws|wss)://")], ...]
_NATS_SCHEMES = {"nats": "nats", "tls": "nats", "ws": "ws", "wss": "ws"}

S = TypeVar("S", bound=msgspec.Struct)
_TEMPLATE = re.compile(r"\{(\w+)\}")


class SettingsError(ValueError):
    """A variable the process cannot start with; the message names it and what it accepts."""


class _CaBundle:
    """Marks a setting (in its ``Annotated``) that names a CA bundle the process loads: checked when
    read, so a wrong one is this one line and not a traceback from the first connection."""


CA_BUNDLE = _CaBundle()


def resolve_templates(settings: msgspec.Struct) -> None:
    """Defaults naming other settings (``{registry_port}``) filled in; for ``__post_init__``."""
    for field in msgspec.structs.fields(settings):
        value = getattr(settings, field.name)
        if isinstance(value, str) and value == field.default and _TEMPLATE.search(value):
            resolved = _TEMPLATE.sub(lambda m: str(getattr(settings, m[1])), value)
            msgspec.structs.force_setattr(settings, field.name, resolved)


def env_name(field: str) -> str:
    return field.upper()


def check_env(cls: type[S], env: Mapping[str, str]) -> dict[str, Any]:
    """Every variable of ``cls`` that ``env`` sets, checked and converted; an empty one counts as unset."""
    values = {}
    for field in msgspec.structs.fields(cls):
        raw = env.get(env_name(field.name))
        if raw:
            values[field.name] = _convert(field.name, field.type, raw)
    return values


def from_env(cls: type[S], env: Mapping[str, str] = os.environ) -> S:
    """``cls`` from the variables of ``env``; a :class:`SettingsError` names the first wrong one."""
    values = check_env(cls, env)
    for field in msgspec.structs.fields(cls):
        if field.required and field.name not in values:
            raise SettingsError(f"{env_name(field.name)} must be set: {_meta(field.type).description}")
    return cls(**values)


def _convert(name: str, hint: Any, raw: str) -> Any:
    base = _base(hint)
    if typing.get_origin(hint) is Annotated and CA_BUNDLE in typing.get_args(hint)[1:]:
        return _ca_bundle(name, raw.strip())
    try:
        if base == Networks:
            return tuple(ipaddress.ip_network(part, strict=False) for part in _split(raw))
        if base == NatsServers:
            return _nats_servers(name, hint, raw)
        if typing.get_origin(base) is tuple:
            return msgspec.convert(_split(raw), hint, strict=False)
        if typing.get_origin(base) is Literal:  # LOG_LEVEL=INFO is as good as info
            return msgspec.convert(raw.strip().lower(), hint)
        return msgspec.convert(raw.strip(), hint, strict=False)
    except SettingsError:  # already says what is wrong, more precisely than below
        raise
    except (msgspec.ValidationError, ValueError):
        raise SettingsError(f"{env_name(name)} must be {_accepted(hint)}, got {raw!r}") from None


def _nats_servers(name: str, hint: Any, raw: str) -> tuple[str, ...]:
    """Each server as ``scheme://host:port``; a bare ``host[:port]`` means ``nats://`` as it does to
    the clients. Websocket and plain servers cannot be mixed in one list (the client refuses)."""
    servers = tuple(part if "://" in part else f"nats://{part}" for part in _split(raw))
    if not servers:
        raise ValueError("no server")
    for server in servers:
        if not _is_server_url(server):
            raise SettingsError(
                f"{env_name(name)} must be {_accepted(hint)}; {_redacted(server)!r} is not one"
            )
    if len({_NATS_SCHEMES[urlsplit(server).scheme] for server in servers}) > 1:
        raise SettingsError(
            f"{env_name(name)} cannot mix websocket (ws://, wss://) and nats:// or tls:// servers"
        )
    return servers


def _ca_bundle(name: str, path: str) -> str:
    try:
        ssl.create_default_context(cafile=path)
    except OSError as exc:  # missing, unreadable, or no certificate in it (ssl.SSLError)
        reason = exc.strerror or str(exc)
        raise SettingsError(
            f"{env_name(name)} must name a CA bundle (PEM) to read; {path!r}: {reason}"
        ) from None
    return path


def _is_server_url(url: str) -> bool:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        return False
    return (
        parts.scheme in _NATS_SCHEMES
        and bool(parts.hostname)
        and port != 0
        and not parts.path.strip("/")
        and not parts.query
    )


def _redacted(url: str) -> str:
    """``url`` without the password it may carry (``nats://user:secret@host``), for a message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _base(hint: Any) -> Any:
    """The type under any ``Annotated`` layers (``Port`` inside ``Annotated`` has two)."""
    while typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    return hint


def _meta(hint: Any) -> Meta:
    """The field's constraints and description, merged from its ``Annotated`` layers."""
    merged: dict[str, Any] = {}
    while typing.get_origin(hint) is Annotated:
        hint, *metas = typing.get_args(hint)
        for meta in metas:
            if isinstance(meta, Meta):
                for key in ("ge", "gt", "le", "min_length", "description"):
                    if getattr(meta, key) is not None:
                        merged.setdefault(key, getattr(meta, key))
    return Meta(**merged)


def _kind(hint: Any) -> str:
    base = _base(hint)
    if base is int:
        return "integer"
    if base is float:
        return "number"
    if base == Networks:
        return "networks"
    if base == NatsServers:
        return "URLs"
    if typing.get_origin(base) is tuple:
        return "list"
    if typing.get_origin(base) is Literal:
        return "choice"
    return "text"


def _bound(hint: Any) -> str:
    """The accepted range or values in words: ``1 to 64``, ``at least 0``, ``debug, info``."""
    base, meta = _base(hint), _meta(hint)
    if typing.get_origin(base) is Literal:
        return ", ".join(typing.get_args(base))
    if meta.ge is not None and meta.le is not None:
        return f"{meta.ge} to {meta.le}"
    words = [
        f"{word} {limit}"
        for word, limit in (("at least", meta.ge), ("greater than", meta.gt), ("at most", meta.le))
        if limit is not None
    ]
    if meta.min_length:
        words.append("not empty")
    return " and ".join(words)


_NOUNS = {
    "integer": "an integer",
    "number": "a number",
    "networks": "comma-separated networks such as 10.0.0.0/8",
    "URLs": "comma-separated NATS server URLs such as nats://a:4222,nats://b:4222",
    "list": "a comma-separated list",
    "text": "text",
}


def _accepted(hint: Any) -> str:
    """What a variable must be, for the error: ``an integer from 1 to 64``, ``one of json, console``."""
    kind, bound = _kind(hint), _bound(hint)
    if kind == "choice":
        return f"one of {bound}"
    if bound[:1].isdigit():
        return f"{_NOUNS[kind]} from {bound}"
    if bound == "not empty":
        return f"non-empty {kind}"
    if bound.startswith("at "):
        return f"{_NOUNS[kind]} of {bound}"
    return f"{_NOUNS[kind]} {bound}".rstrip()


class Row(msgspec.Struct, frozen=True):
    """One line of the settings table."""

    name: str
    kind: str
    default: str
    bound: str
    description: str


def rows(cls: type[msgspec.Struct]) -> Iterator[Row]:
    """The settings of ``cls`` as the docs show them; a default naming settings reads ``$NAME``."""
    for field in msgspec.structs.fields(cls):
        if field.required:
            default = "(required)"
        else:
            default = _render(field.default)
            default = _TEMPLATE.sub(lambda m: "$" + env_name(m[1]), default)
        yield Row(
            env_name(field.name),
            _kind(field.type),
            default,
            _bound(field.type),
            _meta(field.type).description or "",
        )


def markdown_table(*classes: type[msgspec.Struct]) -> str:
    lines = ["| variable | type | default | accepted | meaning |", "| --- | --- | --- | --- | --- |"]
    for cls in classes:
        for row in rows(cls):
            default = (
                f"`{row.default}`"
                if row.default and row.default != "(required)"
                else row.default or "(empty)"
            )
            lines.append(f"| `{row.name}` | {row.kind} | {default} | {row.bound} | {row.description} |")
    return "\n".join(lines) + "\n"


def _render(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def environment(cls: type[msgspec.Struct], **values: object) -> dict[str, str]:
    """The variables that give ``cls`` these field values: how a parent hands settings to a child
    process. An unknown field is a ``TypeError``, as it would be in ``cls(...)``."""
    known = set(cls.__struct_fields__)
    unknown = set(values) - known
    if unknown:
        raise TypeError(f"{cls.__name__} has no setting {', '.join(sorted(unknown))}")
    return {env_name(name): _render(value) for name, value in values.items()}


def to_env(settings: msgspec.Struct) -> dict[str, str]:
    """Every setting of ``settings`` as variables; ``from_env`` reads them back to an equal value."""
    return environment(type(settings), **msgspec.structs.asdict(settings))

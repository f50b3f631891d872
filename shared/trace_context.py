"""W3C Trace Context (https://www.w3.org/TR/trace-context/): the trace a request or an event
arrives in, the span this service opens for it, and the headers that carry that span onwards
(responses, events, webhooks), so a platform's traces continue through us instead of stopping.

We record no spans ourselves: our log lines, which carry ``trace_id`` and ``span_id``, are the
record. A trace we start is marked sampled (flags ``01``), as OpenTelemetry's default sampler marks
the traces it starts, so that a receiver downstream that follows its parent's decision keeps it;
a trace that came to us keeps the sampled flag it came with.
"""

from __future__ import annotations

import random
import re
from contextvars import ContextVar

import msgspec
from multidict import CIMultiDictProxy

# version-traceid-parentid-flags; a version above 00 may add fields after a dash, which we ignore.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_INVALID_TRACE_ID = "0" * 32
_INVALID_PARENT_ID = "0" * 16
# Flags of a trace we start: sampled (see the module's docstring).
NEW_TRACE_FLAGS = "01"
# What of a tracestate is passed on (the spec asks for at least 512 characters, 32 members at most).
TRACESTATE_CHARS = 512
TRACESTATE_MEMBERS = 32
_LONG_MEMBER = 128

# Ids need to be unique, not secret: the module's generator (reseeded in every forked worker) makes
# one in a fraction of a microsecond, where the operating system's randomness is a system call.
_bits = random.getrandbits


class Span(msgspec.Struct, frozen=True):
    """Our span: its trace, its own id, the flags it passes on, and the caller's tracestate.
    (A Struct: made in C, a fraction of what a NamedTuple costs on every poll.)"""

    trace_id: str
    span_id: str
    flags: str
    tracestate: str | None

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def headers(self) -> dict[str, str]:
        """The headers that make a message or a request a child of this span."""
        if self.tracestate:
            return {"traceparent": self.traceparent, "tracestate": self.tracestate}
        return {"traceparent": self.traceparent}


_CURRENT: ContextVar[Span | None] = ContextVar("trace_span", default=None)


def current() -> Span | None:
    """The span of the request or event being handled (None in a background task)."""
    return _CURRENT.get()


def headers() -> dict[str, str]:
    """The current span's headers for a message published directly (not through the outbox)."""
    span = _CURRENT.get()
    return span.headers() if span is not None else {}


def parse(traceparent: str) -> tuple[str, str, str] | None:
    """``(trace id, parent id, flags)`` of a valid ``traceparent``, None for anything else.

    Strict, as the spec asks: lowercase hex, no all-zero id, version ``ff`` forbidden, version
    ``00`` exactly four fields. A higher version is read by its first four fields (it may add
    more); of the flags only ``sampled`` is kept, the only one version 00 defines."""
    match = _TRACEPARENT.fullmatch(traceparent)
    if match is None:
        return None
    version, trace_id, parent_id, flags, more = match.groups()
    if version == "ff" or (version == "00" and more is not None):
        return None
    if trace_id == _INVALID_TRACE_ID or parent_id == _INVALID_PARENT_ID:
        return None
    return trace_id, parent_id, "01" if int(flags, 16) & 1 else "00"


def child_of(traceparent: str | None, tracestate: str | None = None) -> Span:
    """A new span whose parent is ``traceparent`` (its tracestate passed on), or, when that is
    absent or invalid, the root of a new trace (and the tracestate dropped: it belongs to a trace
    we could not read, and the spec forbids reading it then)."""
    parent = parse(traceparent) if traceparent else None
    if parent is None:
        return _root()
    return Span(parent[0], f"{_bits(64) or 1:016x}", parent[2], _passed_on(tracestate))


def _root() -> Span:
    """The first span of a new trace: both ids from one draw of 192 bits (a TV's every poll)."""
    ids = _bits(192).to_bytes(24, "big").hex()
    trace_id, span_id = ids[:32], ids[32:]
    if trace_id == _INVALID_TRACE_ID or span_id == _INVALID_PARENT_ID:  # all zeros: not an id
        return _root()
    return Span(trace_id, span_id, NEW_TRACE_FLAGS, None)


def start(traceparent: str | None, tracestate: str | None = None) -> Span:
    """Open the span of an event being applied (or a request): :func:`child_of`, made current."""
    span = child_of(traceparent, tracestate)
    _CURRENT.set(span)
    return span


def start_request(headers: CIMultiDictProxy[str]) -> Span:
    """Open the span of an HTTP request from its headers. Without a ``traceparent`` (a TV's poll)
    no other header is looked at; two of them make no valid one (the trace starts anew), and
    several ``tracestate`` headers are one list."""
    traceparent = headers.get("traceparent")
    if traceparent is None:
        span = _root()
        _CURRENT.set(span)
        return span
    if len(headers.getall("traceparent")) > 1:
        return start(None)
    return start(traceparent, ",".join(headers.getall("tracestate", ())))


def _passed_on(tracestate: str | None) -> str | None:
    """The caller's tracestate as we pass it on: as it came, unless it holds what no header may
    (anything but printable ASCII), has too many members, or is too long (then members longer than
    128 characters go first, then the last ones, as the spec's truncation asks)."""
    if not tracestate or not (tracestate.isascii() and tracestate.isprintable()):
        return None
    if tracestate.count(",") >= TRACESTATE_MEMBERS:  # more members than allowed: the spec lets us drop it
        return None
    if len(tracestate) <= TRACESTATE_CHARS:
        return tracestate
    members = [member.strip() for member in tracestate.split(",")]
    members = [member for member in members if member and len(member) <= _LONG_MEMBER]
    while members and len(",".join(members)) > TRACESTATE_CHARS:
        members.pop()
    return ",".join(members) or None

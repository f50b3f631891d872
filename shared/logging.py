"""structlog set-up: one JSON line per event in production, readable lines on a terminal."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

# What every log line of the current request (or event being applied) carries: one dict, set anew
# per request. Cheaper than clearing and re-binding structlog's contextvars on every request
# (a few microseconds a poll), and nothing leaks to the next request on a keep-alive connection.
_CONTEXT: ContextVar[dict[str, Any]] = ContextVar("log_context", default={})  # noqa: B039 - never mutated


def new_log_context(**values: Any) -> None:
    """Start the log context of a request or an event: replaces whatever the task had."""
    _CONTEXT.set(values)


def bind_log_context(**values: Any) -> None:
    """Add to the current request's log context (e.g. the tenant once the token is verified)."""
    _CONTEXT.set({**_CONTEXT.get(), **values})


def log_context_value(name: str) -> Any:
    return _CONTEXT.get().get(name)


def merge_log_context(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in _CONTEXT.get().items():
        event.setdefault(key, value)
    return event


def configure(*, service: str, log_format: str = "console", level: str = "info") -> None:
    """Run once in ``__main__``; context bound with ``bind_contextvars`` lands on every line."""
    renderer: structlog.typing.Processor
    if log_format == "json" or (log_format == "auto" and not sys.stderr.isatty()):
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            merge_log_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks if log_format == "json" else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # One write() per line (print() writes the line and its newline separately): workers of
        # one pod share its log stream, and their lines must not run into each other.
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)

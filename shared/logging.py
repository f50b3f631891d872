"""structlog set-up: one JSON line per event in production, readable lines on a terminal."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog
from structlog.tracebacks import ExceptionDictTransformer

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


# Tracebacks name their frames and lines, never their frames' locals: a local may hold the request's
# credential (an operator token, a client secret), and a log line is kept and read by many.
JSON_TRACEBACKS = structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))


def renderer_chain(log_format: str, *, tty: bool) -> list[structlog.typing.Processor]:
    """What turns an event with its ``exc_info`` into a line: a JSON object, or a readable line."""
    if log_format == "json" or (log_format == "auto" and not tty):
        return [JSON_TRACEBACKS, structlog.processors.JSONRenderer()]
    # ConsoleRenderer formats the exception itself; its default (rich's, when installed) shows locals.
    console = structlog.dev.ConsoleRenderer(colors=tty, exception_formatter=structlog.dev.plain_traceback)
    return [structlog.dev.set_exc_info, console]


def configure(*, service: str, log_format: str = "console", level: str = "info") -> None:
    """Run once in ``__main__``; context bound with ``bind_contextvars`` lands on every line."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            merge_log_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *renderer_chain(log_format, tty=sys.stderr.isatty()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # One write() per line (print() writes the line and its newline separately): workers of
        # one pod share its log stream, and their lines must not run into each other.
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)

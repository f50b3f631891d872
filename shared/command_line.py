"""What the project's command lines (``signage``, ``python -m devstack``) share: help, the version, and
the answer to a word they do not know, as every Unix tool gives them."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

# The distribution's name in pyproject.toml: its installed metadata carries the version.
DISTRIBUTION = "signage-backend"


def asks_for_help(argv: list[str]) -> bool:
    """``help`` as the command, or ``--help``/``-h`` anywhere (``signage setup --help`` too)."""
    return argv[:1] == ["help"] or any(word in ("--help", "-h") for word in argv)


def installed_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        # A source tree that was never installed has no metadata to read the version from.
        return "unknown"


def print_version() -> None:
    print(f"{DISTRIBUTION} {installed_version()}")


def print_usage(usage: str) -> None:
    """Asked for: on stdout, exit status 0."""
    print(usage, end="")


def unknown(word: str, *, command: bool = True) -> str:
    """What is wrong with ``word``: an option the command line does not know, or a command (or an
    argument after one, when ``command`` is false)."""
    if word.startswith("-"):
        return f"unknown option: {word}"
    return f"unknown command: {word}" if command else f"unexpected argument: {word}"


def usage_error(problem: str, usage: str) -> SystemExit:
    """The problem, then the usage, on stderr; the caller raises the answer: exit status 2, a usage
    error (as a bad setting is)."""
    print(f"{problem}\n\n{usage}", end="", file=sys.stderr)
    return SystemExit(2)

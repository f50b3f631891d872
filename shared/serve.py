"""The command line of every service: ``python -m services.<name> [serve|migrate]``."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import structlog
import uvloop
from aiohttp import web

from shared import db
from shared.logging import configure
from shared.settings import Settings

log = structlog.get_logger()


def main(
    service: str,
    create_app: Callable[[Settings], web.Application],
    *,
    schema: str | None = None,
    migrations: tuple[Path, ...] = (),
) -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else "serve"
    settings = Settings.from_env()
    configure(service=service, log_format=settings.log_format, level=settings.log_level)
    if command == "migrate":
        if schema is not None:
            applied = asyncio.run(db.migrate(settings.database_url, schema, *migrations))
            log.info("migrated", schema=schema, applied=applied)
        return
    if command != "serve":
        raise SystemExit(f"usage: python -m services.{service.replace('-', '_')} [serve|migrate]")
    uvloop.install()
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.ports[service],
        access_log=None,  # request_context logs one line per request, with its request id
        print=None,
        shutdown_timeout=10,
    )

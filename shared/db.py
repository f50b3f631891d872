"""The database pool of a service (bound to the service's own schema) and the migrations runner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import structlog
from aiohttp import web
from asyncpg.pool import PoolConnectionProxy

from shared.app_keys import SETTINGS
from shared.dependencies import DEPENDENCIES, DatabaseUnreachable

log = structlog.get_logger()

POOL = web.AppKey("POOL", asyncpg.Pool)
CONNECT_TIMEOUT_SECONDS = 2
# What queries run on: a connection of the pool (handlers, consumers) or one of its own (migrations).
Connection = asyncpg.Connection | PoolConnectionProxy


async def _connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    # A refused or timed-out connection is a bare OSError: name the database in it, so that a
    # request meeting it answers "the database is not reachable" (shared.dependencies.away).
    try:
        return await asyncpg.connect(*args, **kwargs)
    except OSError as exc:
        raise DatabaseUnreachable(str(exc) or type(exc).__name__) from exc


async def _init_connection(conn: Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: msgspec.json.encode(value).decode(),
        decoder=msgspec.json.decode,
        schema="pg_catalog",
    )


async def create_pool(dsn: str, schema: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    # search_path pins every unqualified name to the service's schema: no service reads another's.
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        # A new connection (the pool replaces each one PostgreSQL closed) gives up after this, so
        # a request meets an unreachable server as a prompt 503, not a wait of asyncpg's 60 s.
        timeout=CONNECT_TIMEOUT_SECONDS,
        connect=_connect,
        init=_init_connection,
        reset=_keep_session,
        server_settings={"search_path": schema, "application_name": schema},
    )


async def _keep_session(conn: Connection) -> None:
    """Released connections skip asyncpg's reset query (RESET ALL, UNLISTEN, advisory unlock): our
    pooled connections never change session state (LISTEN and advisory locks use their own
    connections), and the round trip cost every request one. asyncpg still rolls back an open
    transaction before calling this."""


@contextlib.asynccontextmanager
async def pooled(pool: asyncpg.Pool) -> AsyncIterator[Connection]:
    """A pooled connection that goes back to the pool only in a known state: one whose query met
    the database going away may still wait for the end of an answer that never comes, and the pool
    would hand it to a request next ("another operation is in progress"). For background work that
    runs every second and so meets every outage: after any failure the connection is closed
    instead (the pool opens another)."""
    async with pool.acquire() as conn:
        try:
            yield conn
        except Exception:
            conn.terminate()
            raise


class DatabaseProbe:
    """Whether PostgreSQL answers, asked on a connection of the probe's own: one taken from the
    pool would wait behind the requests whenever they fill it, and a full pool is load, not the
    database away (the alert flapped under load). Made again after any failure or cancellation:
    a connection cut off mid-query is not trusted."""

    def __init__(self, dsn: str, schema: str) -> None:
        self._dsn = dsn
        self._schema = schema
        self._conn: asyncpg.Connection | None = None

    async def __call__(self) -> None:
        if self._conn is None or self._conn.is_closed():
            self._conn = await _connect(
                self._dsn,
                timeout=CONNECT_TIMEOUT_SECONDS,
                server_settings={"application_name": f"{self._schema}-probe"},
            )
        try:
            await self._conn.fetchval("SELECT true")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()  # a probe ends without waiting on a server that may not answer


def pool_ctx(schema: str, migrations: tuple[Path, ...]) -> Callable[[web.Application], AsyncIterator[None]]:
    """The service's pool for the app's lifetime; the app starts only once ``migrations`` are all
    applied (a rollout may start new pods before the setup Job has migrated)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if not app[SETTINGS].database_url:
            raise SystemExit(f"missing setting: DATABASE_URL (the {schema} service keeps its data there)")
        app[POOL] = await create_pool(app[SETTINGS].database_url, schema)
        await wait_for_migrations(app[POOL], schema, migrations)

        probe = DatabaseProbe(app[SETTINGS].database_url, schema)
        app[DEPENDENCIES].watch("postgres", probe)
        yield
        app[DEPENDENCIES].forget("postgres")
        probe.close()
        # close() waits for every connection to come back, without limit; a shutdown must end.
        try:
            async with asyncio.timeout(10):
                await app[POOL].close()
        except TimeoutError:
            log.error("database_pool_close_timed_out", schema=schema)
            app[POOL].terminate()

    return ctx


OUTBOX_MIGRATIONS = Path(__file__).parent / "migrations"


def _versions(folders: tuple[Path, ...]) -> list[Path]:
    return sorted((path for folder in folders for path in folder.glob("*.sql")), key=lambda path: path.stem)


async def wait_for_migrations(pool: asyncpg.Pool, schema: str, folders: tuple[Path, ...]) -> None:
    """Return once every migration of ``folders`` is applied to ``schema``; log what is missing."""
    expected = {path.stem for path in _versions(folders)}
    waited = 0
    while True:
        try:
            applied = {row["version"] for row in await pool.fetch("SELECT version FROM schema_migrations")}
        except asyncpg.UndefinedTableError:  # not even the schema yet
            applied = set()
        if expected <= applied:
            return
        if waited % 15 == 0:
            log.warning("waiting_for_migrations", schema=schema, missing=sorted(expected - applied))
        await asyncio.sleep(1)
        waited += 1


async def migrate(dsn: str, schema: str, *folders: Path) -> list[str]:
    """Apply the numbered ``*.sql`` files of ``folders`` not yet applied to ``schema``, in order.

    Runs under an advisory lock, so many replicas (or a Kubernetes Job racing a developer) apply
    each file exactly once. Returns the versions applied by this call.
    """
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", f"migrations:{schema}")
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for path in _versions(folders):
            if path.stem in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.stem)
            applied.append(path.stem)
            log.info("migration_applied", schema=schema, version=path.stem)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", f"migrations:{schema}")
        await conn.close()


async def wait_for_database(dsn: str, *, timeout: float = 30) -> None:
    """Block until PostgreSQL accepts connections (a fresh cluster, a restarting pod)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=2)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
        else:
            await conn.close()
            return

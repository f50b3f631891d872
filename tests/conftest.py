"""Real PostgreSQL and real NATS for every test: one PostgreSQL cluster per session (a fresh database
per test, copied from a migrated template), one nats-server per test (it starts in milliseconds)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import msgspec
import pytest
import pytest_asyncio

from devstack.infra import NatsServer, Postgres
from devstack.nats_cluster import NatsCluster
from services.setup import MIGRATIONS
from shared import db
from shared.auth import generate_signing_key
from shared.settings import Settings, port_field
from tests.stack import Stack, bound_sockets

TEMPLATE = "signage_template"
SIGNING_KEY = generate_signing_key()
OPERATOR_TOKEN = "op_test_" + uuid.uuid4().hex


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server's admin DSN, with the template database migrated."""
    if os.environ.get("DATABASE_URL"):
        dsn = os.environ["DATABASE_URL"]
        server = None
    else:
        server = Postgres(tmp_path_factory.mktemp("postgres") / "data", durable=False).start()
        dsn = server.dsn
    asyncio.run(_create_template(dsn))
    yield dsn
    if server is not None:
        server.stop("immediate")


async def _create_template(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        await conn.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await conn.close()
    template_dsn = _with_database(dsn, TEMPLATE)
    for schema, folders in MIGRATIONS.items():
        await db.migrate(template_dsn, schema, *folders)


def _with_database(dsn: str, database: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{database}"


@contextlib.asynccontextmanager
async def new_database(postgres: str, *, template: str | None = TEMPLATE) -> AsyncIterator[str]:
    """A database of its own (a copy of the migrated template, or empty), dropped afterwards."""
    name = "t_" + uuid.uuid4().hex[:16]
    conn = await asyncpg.connect(postgres)
    try:
        await conn.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    finally:
        await conn.close()
    yield _with_database(postgres, name)
    await _drop_database(postgres, name)


async def _drop_database(postgres: str, name: str) -> None:
    # Ending the test's own sessions (FORCE) has once cost the dropping connection its life too,
    # seen under heavy load; the drop is asked again on a new connection rather than failing the
    # test's teardown.
    for attempt in range(3):
        try:
            conn = await asyncpg.connect(postgres)
            try:
                await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                return
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresConnectionError):  # a lost connection is one too
            if attempt == 2:
                raise
            await asyncio.sleep(0.5)


@pytest_asyncio.fixture
async def database(postgres: str) -> AsyncIterator[str]:
    async with new_database(postgres) as dsn:
        yield dsn


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
def sockets() -> Iterator[dict[str, socket.socket]]:
    sockets = bound_sockets()
    yield sockets
    for sock in sockets.values():
        sock.close()


@pytest.fixture
def settings(database: str, nats_server: NatsServer, sockets: dict[str, socket.socket]) -> Settings:
    ports = {port_field(name): sock.getsockname()[1] for name, sock in sockets.items()}
    # REGISTRY_URL and PROVISIONING_URL follow the ports; PUBLIC_URL names the address the
    # entry point listens on, not "localhost", which may resolve to ::1 first.
    return Settings(
        database_url=database,
        nats_url=(nats_server.url,),
        nats_password=nats_server.password,
        operator_token=OPERATOR_TOKEN,
        token_signing_key=SIGNING_KEY,
        host="127.0.0.1",
        public_url=f"http://127.0.0.1:{ports['entrypoint_port']}",
        log_format="console",
        log_level="warning",
        # The tests' webhook receivers listen on loopback, over plain http.
        webhook_allow_private_addresses=True,
        webhook_allow_http=True,
        # Tests count every accepted heartbeat in the history; coalescing has tests of its own.
        presence_write_seconds=0,
        **ports,
    )


@pytest_asyncio.fixture
async def stack(settings: Settings, sockets: dict[str, socket.socket]) -> AsyncIterator[Stack]:
    async with Stack(settings, sockets) as running:
        yield running


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three nats-servers clustered on loopback (n1…n3), each with a store of its own."""
    cluster = NatsCluster(tmp_path / "nats-cluster").start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_settings(settings: Settings, nats_cluster: NatsCluster) -> Settings:
    """The test's settings on the cluster: its seed list, and streams, buckets and the files'
    store at three replicas (the test's own single server stays idle)."""
    return msgspec.structs.replace(
        settings, nats_url=nats_cluster.urls, nats_password=nats_cluster.password, nats_replicas=3
    )


@pytest_asyncio.fixture
async def cluster_stack(
    cluster_settings: Settings, sockets: dict[str, socket.socket]
) -> AsyncIterator[Stack]:
    async with Stack(cluster_settings, sockets) as running:
        yield running

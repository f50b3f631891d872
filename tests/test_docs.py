"""The docs run as written: every ```sh block of README.md and docs/*.md, in order, one bash script
per document, against a fresh stack started the way ``make run`` starts it (``python -m devstack``).

Blocks that are not meant to run here (Kubernetes, tools ``make run`` does not install, commands
that never end) are marked ```sh no-run or ```console; docs/changing-the-code.md says so.
Besides the snippets: the settings table names every setting, docs/api.md every operation served,
relative links lead to files, and README.md stays a front page.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from devstack.infra import NatsServer, free_ports
from devstack.settings import LocalSettings
from shared.auth import generate_signing_key
from shared.environment import markdown_table
from shared.settings import Settings
from tests.conftest import OPERATOR_TOKEN, new_database

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# The env variables the stack reads for its ports; the snippets read the same ones.
PORT_VARIABLES = (
    "ENTRYPOINT_PORT",
    "REGISTRY_PORT",
    "PROVISIONING_PORT",
    "DEVICE_GATEWAY_PORT",
    "HEARTBEAT_PORT",
)

# What each document's run must show, besides exiting 0: the outputs its text promises.
EXPECTED: dict[str, list[str]] = {
    "README.md": [
        r'"state":"active"',
        r"HTTP/1\.1 304 Not Modified",
    ],
    "flows.md": [
        r"HTTP/1\.1 304 Not Modified",  # an unchanged poll
        r'"error":"device_revoked"',  # a revoked key, refused
        r'"recoverySecret":"drs_',  # a TV that reported its hardware id
        r'"error":"conflict","message":"this serial was activated already"',
        r'"reason":"MATCHING_DEVICE_ONLY"',
        r'"error":"authorization_pending"',
        r'"token_type":"Bearer"',
        r'"revokedAt":"20',  # an API client revoked
        r"(?m)^206$",  # a byte range of a file
        r"bytes 0-1023 as uploaded",
        r"event: heartbeat",
        r'"presence":"online"',
        r'"status":"cancelled"',  # a command cancelled
        r'"error":"conflict","message":"the command is cancelled already',
    ],
    "operations.md": [
        r"http_requests_total\{",
        r"scrape_configs:",
    ],
    "webhooks.md": [
        r'"secret":"whsec_',  # shown at registration
        r'"eventType":"webhook\.ping","state":"pending"',  # a ping queued
        r'"payload":\{"type":"webhook\.ping"',  # the body as sent
        r'"error":"conflict","message":"the delivery is pending already',
        r"(?m)^204$",  # an endpoint deleted
        r'"error":"not_found"',  # and its log with it
    ],
}


@dataclass(frozen=True)
class Block:
    line: int  # where the block opens, 1-based
    info: str  # the info string after the fence: "sh", "sh no-run", "console", ...
    text: str

    @property
    def runs(self) -> bool:
        return self.info == "sh"


_FENCE = re.compile(r"^```(.*)$")


def blocks(path: Path) -> list[Block]:
    found: list[Block] = []
    opened: tuple[int, str] | None = None
    lines: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fence = _FENCE.match(line)
        if opened is None and fence:
            opened, lines = (number, fence.group(1).strip()), []
        elif opened is not None and line.rstrip() == "```":
            found.append(Block(opened[0], opened[1], "\n".join(lines) + "\n"))
            opened = None
        elif opened is not None:
            lines.append(line)
    assert opened is None, f"{path.name}:{opened[0]}: a code block is never closed"
    return found


def script(path: Path) -> str:
    """The document's runnable blocks as one script; a marker before each names where it came from."""
    parts = ["set -euo pipefail\n"]
    for block in blocks(path):
        if block.runs:
            parts.append(f"echo '>>> {path.name}:{block.line}'\n{block.text}")
    return "".join(parts)


RUNNABLE = [path for path in DOCS if any(block.runs for block in blocks(path))]


def test_every_document_with_expectations_has_snippets() -> None:
    names = {path.name for path in RUNNABLE}
    assert set(EXPECTED) <= names, f"no runnable snippets in {set(EXPECTED) - names}"


# ---- a stack as `make run` starts it -----------------------------------------------------------


@dataclass
class DevStack:
    ports: dict[str, str]
    log: Path


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


class PortTaken(Exception):
    """Another process bound one of the free ports chosen between their choice and devstack's bind."""


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m devstack``, as ``make run`` runs it, logging to ``log``; up when it says so."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "devstack"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 90
    while "is up in" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            if "address already in use" in log.read_text().lower():
                raise PortTaken
            raise AssertionError(f"devstack did not come up:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C's signal, as a user stops it; its whole process group only if it hangs."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest_asyncio.fixture
async def devstack(postgres: str, nats: NatsServer, tmp_path: Path) -> AsyncIterator[DevStack]:
    """The stack on free ports, against this session's PostgreSQL (a fresh database) and a
    nats-server of its own."""
    log = tmp_path / "devstack.log"
    async with new_database(postgres) as database:
        # devstack binds its ports itself: free ones are chosen, and chosen again in the rare case
        # that another process took one meanwhile.
        for attempt in range(3):
            ports = dict(zip(PORT_VARIABLES, map(str, free_ports(len(PORT_VARIABLES))), strict=True))
            env = {
                **os.environ,
                **ports,
                "DATABASE_URL": database,
                "NATS_URL": nats.url,
                "NATS_PASSWORD": nats.password,
                "OPERATOR_TOKEN": OPERATOR_TOKEN,
                "TOKEN_SIGNING_KEY": generate_signing_key(),
                "HOST": "127.0.0.1",
                # The device-first snippet waits the interval the server asks for; 1 s keeps it short.
                "DEVICE_POLL_INTERVAL_SECONDS": "1",
                "LOG_FORMAT": "json",
            }
            try:
                process = await asyncio.to_thread(_start, env, log)
                break
            except PortTaken:
                if attempt == 2:
                    raise
        try:
            yield DevStack(ports, log)
        finally:
            await asyncio.to_thread(_stop, process)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", RUNNABLE, ids=[path.name for path in RUNNABLE])
def test_snippets_run_as_written(path: Path, devstack: DevStack, tmp_path: Path) -> None:
    home = tmp_path / "user"
    (home / ".data").mkdir(parents=True)
    (home / ".data" / "operator_token").write_text(OPERATOR_TOKEN + "\n")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        **devstack.ports,
    }
    result = subprocess.run(
        ["bash", "-c", script(path)], cwd=home, env=env, capture_output=True, text=True, timeout=240
    )
    markers = re.findall(r"^>>> (.+)$", result.stdout, re.M)
    where = markers[-1] if markers else path.name
    assert result.returncode == 0, (
        f"the block at {where} failed (exit {result.returncode})\n--- stderr:\n{result.stderr[-3000:]}"
        f"\n--- stdout:\n{result.stdout[-3000:]}\n--- devstack:\n{devstack.log.read_text()[-3000:]}"
    )
    for pattern in EXPECTED.get(path.name, []):
        assert re.search(pattern, result.stdout), f"{path.name}: no {pattern!r} in\n{result.stdout}"


# ---- what the docs claim about the code ---------------------------------------------------------


def test_settings_table_is_the_declaration() -> None:
    """The settings table is generated (``python -m devstack settings``) from the one declaration
    of every setting; the docs carry it verbatim, so a new or changed setting fails here until the
    table is generated again."""
    table = markdown_table(Settings, LocalSettings)
    assert table in (ROOT / "docs" / "operations.md").read_text(), (
        "docs/operations.md's settings table differs from the declaration; paste in the output of "
        "python -m devstack settings"
    )


def _operations() -> set[tuple[str, str]]:
    from services.device_gateway.routes import OPERATIONS as gateway
    from services.heartbeat.routes import OPERATIONS as heartbeat
    from services.provisioning.routes import OPERATIONS as provisioning
    from services.registry.routes import OPERATIONS as registry

    return {(op.method, op.path) for op in [*registry, *provisioning, *gateway, *heartbeat]}


def test_api_document_covers_every_operation() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    written = set(re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/[^` ?]*)", text))
    served = _operations()
    assert served - written == set(), "operations served but not in docs/api.md"
    assert (
        written
        - served
        - {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/openapi.json")}
        == set()
    ), "docs/api.md names operations not served"


def test_relative_links_lead_to_files() -> None:
    for path in [*DOCS, ROOT / "deploy" / "README.md"]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
            assert (path.parent / target).exists(), f"{path.relative_to(ROOT)} links to missing {target}"


def test_readme_is_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; the details belong in docs/"

"""``make run`` (``python -m devstack``) as an operator meets it: a start-up that cannot work fails
in one line with status 2, a second run on the same data is refused, a run killed outright leaves
nothing that stops the next one, and SIGTERM leaves nothing running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.infra import free_ports
from devstack.settings import ROOT

pytestmark = pytest.mark.timeout(240)

PORTS = (
    "ENTRYPOINT_PORT",
    "REGISTRY_PORT",
    "PROVISIONING_PORT",
    "DEVICE_GATEWAY_PORT",
    "HEARTBEAT_PORT",
    "POSTGRES_PORT",
    "NATS_PORT",
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL")}
    return {
        **environ,
        **dict(zip(PORTS, map(str, free_ports(len(PORTS))), strict=True)),
        "DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(ROOT),
    }


def make_run(env: dict[str, str]) -> subprocess.Popen[str]:
    """The run, its output (logs, banner and messages) in ``DATA_DIR``/../NAME.out: a pipe nobody
    reads would fill and stall the services that write to it."""
    out = Path(env["DATA_DIR"]).with_name(f"run-{time.monotonic_ns()}.out")
    with open(out, "w") as file:
        run = subprocess.Popen(
            [sys.executable, "-m", "devstack"],
            env=env,
            cwd=ROOT,
            stdout=file,
            stderr=subprocess.STDOUT,
            text=True,
        )
    OUTPUT[run] = out
    return run


OUTPUT: dict[subprocess.Popen[str], Path] = {}


def until_up(run: subprocess.Popen[str]) -> str:
    """The output up to the end of the banner, once the stack is up."""
    deadline = time.monotonic() + 120
    while "Ctrl-C stops everything" not in (text := OUTPUT[run].read_text()):
        if run.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"make run ended ({run.poll()}) or hung before it was up: {text[-2000:]}")
        time.sleep(0.2)
    return text


def processes_on(data: Path) -> list[str]:
    """Command lines of every process that names ``data`` (servers) or is a child left by a run."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(data) in cmdline:
                found.append(cmdline)
    return found


def stopped(run: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
    run.send_signal(sig)
    return run.wait(60), OUTPUT[run].read_text()


@pytest.fixture
def runs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for run in started:
        if run.poll() is None:
            stopped(run)


def test_a_busy_port_is_named_with_its_setting(env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", int(env["DEVICE_GATEWAY_PORT"])))
        busy.listen()
        result = subprocess.run(
            [sys.executable, "-m", "devstack"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
    port = env["DEVICE_GATEWAY_PORT"]
    assert result.returncode == 2
    assert f"port {port} (DEVICE_GATEWAY_PORT) is in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert not processes_on(Path(env["DATA_DIR"]))


def test_a_second_run_on_the_same_data_is_refused_and_the_first_goes_on(
    env: dict[str, str], runs: list[subprocess.Popen[str]]
) -> None:
    first = make_run(env)
    runs.append(first)
    banner = until_up(first)
    for name in PORTS:
        assert env[name] in banner, name
    other_ports = dict(zip(PORTS, map(str, free_ports(len(PORTS))), strict=True))
    second = subprocess.run(
        [sys.executable, "-m", "devstack"],
        env={**env, **other_ports},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2
    assert f"another make run is using DATA_DIR {env['DATA_DIR']}; stop it first" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.poll() is None
    assert any(
        "postgres" in line for line in processes_on(Path(env["DATA_DIR"]))
    )  # not stopped by the second


def test_a_killed_run_leaves_nothing_that_stops_the_next(
    env: dict[str, str], runs: list[subprocess.Popen[str]]
) -> None:
    data = Path(env["DATA_DIR"])
    killed = make_run(env)
    runs.append(killed)
    until_up(killed)
    killed.kill()
    killed.wait()
    deadline = time.monotonic() + 20
    # The children end with it; PostgreSQL, a daemon, is left for the next run to find.
    while (left := processes_on(data)) and any("postgres" not in line for line in left):
        assert time.monotonic() < deadline, left
        time.sleep(0.2)
    assert (data / "postgres" / "postmaster.pid").exists()

    again = make_run(env)
    runs.append(again)
    output = until_up(again)
    status, err = stopped(again)
    assert status == 0
    assert "stopped the PostgreSQL" in err
    assert "is up in" in output


def test_sigterm_leaves_nothing_running(env: dict[str, str], runs: list[subprocess.Popen[str]]) -> None:
    data = Path(env["DATA_DIR"])
    run = make_run(env)
    runs.append(run)
    until_up(run)
    status, err = stopped(run)
    assert status == 0, err
    assert "Traceback" not in err
    assert not processes_on(data)
    assert not (data / "postgres" / "postmaster.pid").exists()
    for name in PORTS:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", int(env[name])))  # free again

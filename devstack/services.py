"""Starting the services as processes, as ``make run``, ``make bench`` and ``make soak`` do."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp

from devstack.infra import NatsServer, Postgres
from services.setup import migrate

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("registry", "provisioning", "device-gateway", "heartbeat")


def spawn(service: str, env: dict[str, str], **popen: object) -> subprocess.Popen[bytes]:
    """``python -m services <service>`` with ``env``: the same command a container runs."""
    return subprocess.Popen([sys.executable, "-m", "services", service], env=env, cwd=ROOT, **popen)  # type: ignore[call-overload]


async def wait_ready(
    upstreams: dict[str, str], children: list[subprocess.Popen[bytes]], timeout: float = 60
) -> None:
    """Wait until every ``/readyz`` answers 200; fail fast when one of ``children`` exits."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        for service, url in upstreams.items():
            deadline = time.monotonic() + timeout
            while True:
                if any(child.poll() is not None for child in children):
                    raise SystemExit(f"a service exited during start-up (waiting for {service})")
                try:
                    async with session.get(url + "/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"{service} is not ready after {timeout:.0f} s; see its log above")
                await asyncio.sleep(0.2)


class Processes(ExitStack):
    """Child processes that end (SIGTERM, then SIGKILL) with the block, whatever happens."""

    def start(self, command: list[str] | str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        out = open(log, "ab")  # noqa: SIM115 - closed with the process
        if isinstance(command, str):
            process = spawn(command, env, stdout=out, stderr=subprocess.STDOUT)
        else:
            process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.callback(out.close)
        self.callback(stop, process)
        return process

    def start_servers(self, env: dict[str, str], data: Path) -> tuple[Postgres | None, NatsServer | None]:
        """PostgreSQL and nats-server under ``data`` unless ``env`` names them (then ``env`` gets
        their URLs), and every migration applied; the ones started here end with the block."""
        postgres = nats_server = None
        if not env.get("DATABASE_URL"):
            postgres = Postgres(data / "postgres").start()
            self.callback(postgres.stop)
            env["DATABASE_URL"] = postgres.dsn
        if not env.get("NATS_URL"):
            nats_server = NatsServer(data / "nats").start()
            self.callback(nats_server.stop)
            env["NATS_URL"] = nats_server.url
        asyncio.run(migrate(env["DATABASE_URL"]))
        return postgres, nats_server


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

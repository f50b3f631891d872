"""Starting the services as processes, as ``make run`` and ``make bench`` both do."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

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

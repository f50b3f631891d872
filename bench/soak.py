"""``make soak``: the fleet simulator (``make simulate``) for a long while against a stack of its own.

Starts PostgreSQL and nats-server under ``.data/soak/`` (or uses ``DATABASE_URL``/``NATS_URL``),
the four services and the entry point as processes on free ports, then lets a simulated fleet
live against them and judges the run: no errors but designed ones (429s, the 401s of revoked
keys), every accepted heartbeat stored, memory flat, the outbox and the consumers keeping up.

    make soak                                            # 2,000 TVs for 10 minutes
    make soak SOAK_ARGS="--tvs 5000 --seconds 1800"
    make soak SOAK_ARGS="--faults 60"                    # and a fault every minute

With ``--faults SECONDS`` it also breaks something every SECONDS, in turn: nats-server killed and
started again, the heartbeat service, provisioning and registry SIGKILLed and started again,
PostgreSQL stopped and started again (the last and the first only when the soak started them).
The bars stay the same: TVs may be told to come back later (429/503 with Retry-After), the
admin's steps may need tries again (counted), but no heartbeat may be lost.

Exit status 1 when a bar is missed. Services' logs: ``.data/soak/*.log``; the figures and every
sample: ``.data/soak/results.json``. ``tests/test_soak.py`` is its short variant in ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import os
import secrets
import shutil
import subprocess
import sys
import time

from bench.simulate import Report, add_arguments, print_report, simulate
from devstack.infra import NatsServer, Postgres, free_port, wait_for_port
from devstack.services import ROOT, SERVICES, Processes, wait_ready
from shared.auth import generate_signing_key

DATA = ROOT / ".data" / "soak"


class Faults:
    """Breaks a part of the running stack every ``every`` seconds, in turn, and brings it back."""

    def __init__(
        self,
        every: float,
        processes: Processes,
        env: dict[str, str],
        services: dict[str, subprocess.Popen[bytes]],
        urls: dict[str, str],
        postgres: Postgres | None,
        nats_server: NatsServer | None,
    ) -> None:
        self.every = every
        self.processes = processes
        self.env = env
        self.services = services
        self.urls = urls
        self.postgres = postgres
        self.nats_server = nats_server

    async def run(self, until: float, report: Report) -> None:
        faults = [
            *([self.restart_nats] if self.nats_server else []),
            lambda: self.kill("heartbeat"),
            lambda: self.kill("provisioning"),
            lambda: self.kill("registry"),
            *([self.restart_postgres] if self.postgres else []),
        ]
        for fault in itertools.cycle(faults):
            if time.monotonic() + self.every > until - 10:  # the last one ends before the run does
                return
            await asyncio.sleep(self.every)
            what = await fault()
            report.faults.append(what)
            print(f"  fault: {what}", flush=True)

    async def kill(self, name: str) -> str:
        self.services[name].kill()
        await asyncio.to_thread(self.services[name].wait)
        await asyncio.sleep(2)
        self.services[name] = self.processes.start(name, self.env, DATA / f"{name}.log")
        await wait_ready({name: self.urls[name]}, [self.services[name]])
        return f"{name} SIGKILLed"

    async def restart_nats(self) -> str:
        assert self.nats_server is not None
        await asyncio.to_thread(self.nats_server.kill)
        await asyncio.sleep(3)
        await asyncio.to_thread(self.nats_server.start)
        return "nats-server killed"

    async def restart_postgres(self) -> str:
        assert self.postgres is not None
        await asyncio.to_thread(self.postgres.stop, "fast")
        await asyncio.sleep(3)
        await asyncio.to_thread(self.postgres.start)
        return "PostgreSQL stopped"


def main() -> None:
    parser = argparse.ArgumentParser(prog="make soak", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument(
        "--faults", type=float, metavar="SECONDS", help="break a part of the stack this often"
    )
    parser.set_defaults(tvs=2000, seconds=600)
    args = parser.parse_args()
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    args.operator_token = "op_" + secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "OPERATOR_TOKEN": args.operator_token,
        "TOKEN_SIGNING_KEY": generate_signing_key(),
        "TRUSTED_PROXIES": "127.0.0.1/32",
        "LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }
    ports = {name: free_port() for name in SERVICES}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env.update({f"{name.upper().replace('-', '_')}_PORT": str(port) for name, port in ports.items()})
    env.update(REGISTRY_URL=urls["registry"], PROVISIONING_URL=urls["provisioning"])
    with Processes() as processes:
        postgres, nats_server = processes.start_servers(env, DATA)
        services = {name: processes.start(name, env, DATA / f"{name}.log") for name in SERVICES}
        entry_port = free_port()
        entrypoint = processes.start(
            [
                sys.executable,
                "-m",
                "devstack.entrypoint",
                str(entry_port),
                *(f"{n}={u}" for n, u in urls.items()),
            ],
            env,
            DATA / "entrypoint.log",
        )
        asyncio.run(wait_ready(urls, [*services.values(), entrypoint]))
        wait_for_port(entry_port)
        args.url = f"http://127.0.0.1:{entry_port}"
        args.services = [f"{name}={url}" for name, url in urls.items()]
        faults = (
            Faults(args.faults, processes, env, services, urls, postgres, nats_server)
            if args.faults
            else None
        )
        print(f"soak: {args.tvs} TVs for {args.seconds:.0f} s; logs in {DATA}", flush=True)
        report = asyncio.run(simulate(args, faults.run if faults else None))
    passed = print_report(report, args)
    results = {
        "arguments": {key: value for key, value in vars(args).items() if key != "operator_token"},
        "passed": passed,
        "answers": dict(report.answers),
        "errors": dict(report.errors),
        "heartbeats_accepted": sum(report.heartbeats_accepted.values()),
        "heartbeats_lost": report.lost,
        "revokes": report.revokes,
        "repairs": report.repairs,
        "faults": report.faults,
        "retries": dict(report.retries),
        "memory_growth": report.memory_growth(),
        "samples": [dataclasses.asdict(sample) for sample in report.samples],
    }
    (DATA / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()

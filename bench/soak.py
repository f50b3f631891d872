"""``make soak``: the fleet simulator (``make simulate``) for a long while against a stack of its own.

Starts PostgreSQL and nats-server under ``.data/soak/`` (or uses ``DATABASE_URL``/``NATS_URL``),
the four services and the entry point as processes on free ports, then lets a simulated fleet
live against them and judges the run: no errors but designed ones (429s, the 401s of revoked
keys), every accepted heartbeat stored, every remote command the admin sent (``--commands``, 200
by default) delivered to its TV and carried out, every webhook the run caused delivered to a
local receiver with a valid signature, memory flat, the outbox and the consumers keeping
up. A registry without remote commands (POST /v1/screens/{id}/commands answers 404) skips the
commands' part, and the report says so.

    make soak                                            # 2,000 TVs for 10 minutes, 200 commands
    make soak SOAK_ARGS="--tvs 5000 --seconds 1800"
    make soak SOAK_ARGS="--faults 60"                    # and a fault every minute
    make soak SOAK_ARGS="--cluster --faults 60"          # on three NATS nodes, R3, a node killed in turn

With ``--faults SECONDS`` it also breaks something every SECONDS, in turn: nats-server killed and
started again, the heartbeat service, provisioning and registry SIGKILLed and started again,
PostgreSQL stopped and started again (the last and the first only when the soak started them).
With ``--cluster`` NATS is three clustered nodes (streams and buckets at three replicas, the services
given the seed list), and the NATS fault SIGKILLs one node at a time, in turn.
The bars stay the same: TVs may be told to come back later (429/503 with Retry-After), the
admin's steps may need tries again (counted), but no heartbeat may be lost, no command, and no
webhook.

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
import sys
import time

from bench.simulate import Report, add_arguments, print_report, simulate
from devstack.infra import free_port
from devstack.nats_cluster import NatsCluster
from devstack.services import ROOT, Processes, Stack, wait_ready
from shared.auth import generate_signing_key
from shared.environment import environment
from shared.settings import DEFAULT_PORTS, Settings, port_field

DATA = ROOT / ".data" / "soak"


class Faults:
    """Breaks a part of the running stack every ``every`` seconds, in turn, and brings it back."""

    def __init__(
        self, every: float, processes: Processes, stack: Stack, cluster: NatsCluster | None = None
    ) -> None:
        self.every = every
        self.processes = processes
        self.stack = stack
        self.postgres = stack.postgres
        self.nats_server = stack.nats_server
        self.cluster = cluster
        self.nodes = itertools.cycle(range(NatsCluster.SIZE))

    async def run(self, until: float, report: Report) -> None:
        faults = [
            *([self.restart_nats] if self.nats_server else []),
            *([self.kill_nats_node] if self.cluster else []),
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
        services = self.stack.services
        services[name].kill()
        await asyncio.to_thread(services[name].wait)
        await asyncio.sleep(2)
        services[name] = self.processes.start(name, self.stack.env, DATA / f"{name}.log")
        await wait_ready({name: self.stack.urls[name]}, [services[name]])
        return f"{name} SIGKILLed"

    async def restart_nats(self) -> str:
        assert self.nats_server is not None
        await asyncio.to_thread(self.nats_server.kill)
        await asyncio.sleep(3)
        await asyncio.to_thread(self.nats_server.start)
        return "nats-server killed"

    async def kill_nats_node(self) -> str:
        assert self.cluster is not None
        node = next(self.nodes)
        await asyncio.to_thread(self.cluster.kill, node)
        await asyncio.sleep(3)
        await asyncio.to_thread(self.cluster.start, node)
        return f"NATS node {NatsCluster.NAMES[node]} killed"

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
    parser.add_argument(
        "--cluster", action="store_true", help="three clustered NATS nodes, streams and buckets at R3"
    )
    parser.set_defaults(tvs=2000, seconds=600, commands=200, wait=25)
    args = parser.parse_args()
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    args.operator_token = "op_" + secrets.token_urlsafe(24)
    env = {
        **os.environ,
        **environment(
            Settings,
            operator_token=args.operator_token,
            token_signing_key=generate_signing_key(),
            trusted_proxies="127.0.0.1/32",
            # The simulator's webhook receiver listens on loopback, over plain http.
            webhook_allow_private_addresses=True,
            webhook_allow_http=True,
            log_format="json",
            # Every accepted heartbeat kept in the history, so the run can count each one stored once.
            presence_write_seconds=0,
            **{port_field(name): free_port() for name in DEFAULT_PORTS},
        ),
        "PYTHONUNBUFFERED": "1",
    }
    with Processes() as processes:
        cluster = None
        if args.cluster and not env.get("NATS_URL"):
            cluster = NatsCluster(DATA / "nats-cluster")
            processes.callback(cluster.stop)  # even when the start is interrupted half-way
            cluster.start()
            env.update(
                environment(Settings, nats_url=cluster.urls, nats_password=cluster.password, nats_replicas=3)
            )
        stack = processes.start_stack(env, DATA, logs=DATA)
        args.url = stack.base_url
        args.services = [f"{name}={url}" for name, url in stack.urls.items()]
        faults = Faults(args.faults, processes, stack, cluster) if args.faults else None
        on = "a 3-node NATS cluster" if cluster else "one nats-server"
        print(f"soak: {args.tvs} TVs for {args.seconds:.0f} s on {on}; logs in {DATA}", flush=True)
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
        "commands_sent": len(report.commands_sent),
        "commands_skipped": report.commands_skipped,
        "commands_carried_out": report.commands_carried_out,
        "commands_missed": report.commands_missed,
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

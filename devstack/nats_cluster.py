"""Three nats-servers clustered on loopback: the bus of a deployment, for the tests and the soak."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from devstack.infra import BusUsers, ServerFailed, ends_with_parent, free_ports, nats_server_binary
from shared.bus_access import USERS, server_authorization


class NatsCluster(BusUsers):
    """Three nats-servers (``n1``…``n3``) clustered by routes on loopback, JetStream on each with a
    store of its own: a deployment's bus in miniature, for the tests and ``make soak --cluster``.

    Each node keeps its ports for its life, so a node stopped or killed comes back where the
    clients and the other nodes look for it, with its store as it left it.
    """

    NAMES = ("n1", "n2", "n3")
    SIZE = len(NAMES)

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = store_dir.resolve()
        ports = free_ports(3 * self.SIZE)
        self.ports = ports[: self.SIZE]  # clients
        self._route_ports = ports[self.SIZE : 2 * self.SIZE]
        self._monitor_ports = ports[2 * self.SIZE :]  # /healthz: is JetStream current on the node
        self._processes: list[subprocess.Popen[bytes] | None] = [None] * self.SIZE

    @property
    def urls(self) -> tuple[str, ...]:
        """The seed list, every node in it."""
        return tuple(f"nats://127.0.0.1:{port}" for port in self.ports)

    def start(self, node: int | None = None) -> NatsCluster:
        """Every node (``None``), or node ``node`` (0-based) on its same ports and store; returns
        once the nodes started answer for JetStream (a meta leader elected, streams current)."""
        nodes = range(self.SIZE) if node is None else [node]
        for i in nodes:
            self._start_process(i)
        for i in nodes:
            self._wait_healthy(i)
        return self

    def stop(self, node: int | None = None) -> None:
        """SIGTERM, as a rolling restart or a node's shutdown does; every node when ``None``."""
        for i in range(self.SIZE) if node is None else [node]:
            process = self._processes[i]
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            self._processes[i] = None

    def kill(self, node: int) -> None:
        """SIGKILL: the node dies with whatever it held, as a crashed machine does."""
        process = self._processes[node]
        if process is not None:
            process.kill()
            process.wait()
            self._processes[node] = None

    def index(self, name: str) -> int:
        """The node named ``name`` (as ``stream_info(...).cluster.leader`` says it)."""
        return self.NAMES.index(name)

    def _config(self, i: int) -> str:
        routes = ", ".join(f'"nats-route://127.0.0.1:{port}"' for port in self._route_ports)
        store = self.store_dir / self.NAMES[i]
        return (
            f"server_name: {self.NAMES[i]}\n"
            f"listen: 127.0.0.1:{self.ports[i]}\n"
            f"http: 127.0.0.1:{self._monitor_ports[i]}\n"
            f'jetstream {{ store_dir: "{store}" }}\n'
            f"cluster {{\n  name: signage\n  listen: 127.0.0.1:{self._route_ports[i]}\n"
            f"  routes: [{routes}]\n}}\n"
            f"authorization: {json.dumps(server_authorization(dict.fromkeys(USERS, self.password)))}\n"
        )

    def _start_process(self, i: int) -> None:
        store = self.store_dir / self.NAMES[i]
        store.mkdir(parents=True, exist_ok=True)
        config = store.with_suffix(".conf")
        self.write_server_config(config, self._config(i))
        self._processes[i] = subprocess.Popen(
            [nats_server_binary(), "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(store.with_suffix(".log"), "ab"),  # noqa: SIM115 - lives as long as the server
            preexec_fn=ends_with_parent,
        )

    def _wait_healthy(self, i: int, timeout: float = 30) -> None:
        url = f"http://127.0.0.1:{self._monitor_ports[i]}/healthz"
        deadline = time.monotonic() + timeout
        while True:
            process = self._processes[i]
            if process is None or process.poll() is not None:
                raise ServerFailed(f"nats-server {self.NAMES[i]} exited; see {self.store_dir}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.HTTPError):
                pass
            if time.monotonic() > deadline:
                raise ServerFailed(f"nats-server {self.NAMES[i]} not healthy after {timeout:.0f} s")
            time.sleep(0.05)

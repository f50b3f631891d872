"""``make run``: the whole stack on one machine, from nothing but Python (``python -m devstack``;
USAGE below lists its other commands).

Starts PostgreSQL and nats-server under ``DATA_DIR`` (``.data/``) when ``DATABASE_URL``/``NATS_URL``
are unset, applies migrations, starts the four services and the entry point (``ENTRYPOINT_PORT``,
8080) as ``make soak`` does, prints what to try. Ctrl-C or SIGTERM stops everything it started.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import msgspec

from devstack.infra import Postgres, ServerFailed
from devstack.preflight import CannotStart, check_ports, lock_data_dir, stop_left_over
from devstack.services import NotReady, Processes, Stack
from devstack.settings import LocalSettings
from shared.auth import generate_signing_key
from shared.bus_access import USERS, password_variable, server_authorization, server_config
from shared.command_line import asks_for_help, print_usage, print_version, unknown, usage_error
from shared.environment import SettingsError, check_env, env_name, environment, from_env, markdown_table
from shared.logging import configure
from shared.settings import Settings

USAGE = """\
usage: python -m devstack [COMMAND]   (make run)

  (none)        the whole stack on this machine: PostgreSQL and nats-server when DATABASE_URL and
                NATS_URL are unset, the four services and the entry point; Ctrl-C stops it
  settings      print every setting, the services' and the local stack's, as the docs' Markdown table
  nats-config [--helm]
                print the users and rights of a deployed nats-server (deploy/nats/compose.conf),
                each password read from the server's environment; with --helm, the same for
                config.merge of the NATS chart's values
  help          this text (also --help, -h)
  --version     the installed version
"""


def _persisted_secret(data: Path, name: str, make: Callable[[], str]) -> str:
    """A generated setting kept in the data folder, so tokens and keys survive a restart."""
    path = data / name
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGINT and SIGTERM unwind whatever is starting or running, so every process started ends."""
    _ignore_signals()
    raise KeyboardInterrupt


def _ignore_signals() -> None:
    """A second signal while the processes end would leave some of them behind."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def environment_of_the_stack(environ: dict[str, str], local: LocalSettings) -> dict[str, str]:
    """The services' environment: ours, over what a local stack wants by default."""
    data = local.data
    data.mkdir(parents=True, exist_ok=True)
    defaults = environment(
        Settings,
        log_format="console",
        # This machine only, unless HOST says otherwise: the operator token is in the welcome text
        # and every service trusts loopback (the containers' default stays every address).
        host="127.0.0.1",
        # The entry point forwards the caller's address in X-Forwarded-For; believe it from loopback.
        trusted_proxies="127.0.0.1/32,::1/128",
        # A developer's webhook receiver runs on this machine, over plain http.
        webhook_allow_private_addresses=True,
        webhook_allow_http=True,
        operator_token=_persisted_secret(data, "operator_token", lambda: "op_" + secrets.token_urlsafe(24)),
        token_signing_key=_persisted_secret(data, "token_signing_key", generate_signing_key),
    )
    return {**defaults, **environ, "PYTHONUNBUFFERED": "1"}


def deployed_nats_config() -> str:
    return server_config({user: "$" + password_variable(user) for user in USERS})


def helm_nats_authorization() -> str:
    """The same users as the NATS chart's ``config.merge`` takes them (a variable as ``<< $X >>``)."""
    import yaml  # noqa: PLC0415 - a maintainer's command: PyYAML comes with the dev extras only

    authorization = server_authorization({user: f"<< ${password_variable(user)} >>" for user in USERS})
    text = yaml.safe_dump({"authorization": authorization}, sort_keys=False, width=200)
    return "".join("    " + line for line in text.splitlines(keepends=True))


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> None:
    """``argv`` without the program's name; the console script passes nothing: the process's own
    arguments and environment."""
    args = sys.argv[1:] if argv is None else argv
    if asks_for_help(args):
        print_usage(USAGE)
        return
    match args:
        case []:
            run_the_stack(dict(os.environ) if environ is None else environ)
        case ["settings"]:
            print(markdown_table(Settings, LocalSettings), end="")
        case ["nats-config"]:
            print(deployed_nats_config(), end="")
        case ["nats-config", "--helm"]:
            print(helm_nats_authorization(), end="")
        case ["--version"]:
            print_version()
        case ["settings", word, *_] | ["nats-config", "--helm", word, *_] | ["nats-config", word, *_]:
            raise usage_error(unknown(word, command=False), USAGE)
        case [word, *_]:
            raise usage_error(unknown(word), USAGE)


def run_the_stack(environ: dict[str, str]) -> None:
    started = time.monotonic()
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        local = from_env(LocalSettings, environ)
        # Every variable that is set is checked before anything starts; the servers' URLs are
        # known once they run.
        check_env(Settings, environ)
    except SettingsError as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None
    try:
        # Held until we exit: a second run on the same data would stop this one's database.
        lock = lock_data_dir(local.data, "DATA_DIR")
        env = environment_of_the_stack(environ, local)
        _preflight(env, local)
    except CannotStart as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None
    configure(service="devstack", log_format=check_env(Settings, env)["log_format"])
    status = 0
    try:
        with lock, Processes() as processes:
            stack = processes.start_stack(env, local.data, local=local)
            _print_welcome(stack, time.monotonic() - started)
            while not (exited := stack.exited()):
                time.sleep(0.2)
            print(f"{', '.join(exited)} exited; stopping the stack.", file=sys.stderr)
            status = 1
            _ignore_signals()
    except KeyboardInterrupt:
        pass
    except NotReady as error:
        print(f"{error}; the stack stopped.", file=sys.stderr)
        status = 1
    except ServerFailed as error:
        print(f"{error.summary}; the stack stopped.", file=sys.stderr)
        status = 1
    print("stopped.", flush=True)
    raise SystemExit(status)


def _preflight(env: dict[str, str], local: LocalSettings) -> None:
    """A PostgreSQL left by a killed run stopped (this run holds the data's lock, so nobody else
    owns it), then every port this run would open checked free before anything starts."""
    values = check_env(Settings, env)
    host = values.get("host", "127.0.0.1")
    ports = {
        env_name(field.name): (host, values.get(field.name, field.default))
        for field in msgspec.structs.fields(Settings)
        if field.name.endswith("_port")
    }
    # PostgreSQL and nats-server listen on loopback whatever HOST says.
    if not env.get("DATABASE_URL"):
        if done := stop_left_over(Postgres(local.data / "postgres", port=local.postgres_port)):
            print(done, file=sys.stderr, flush=True)
        ports["POSTGRES_PORT"] = ("127.0.0.1", local.postgres_port)
    if not env.get("NATS_URL"):
        ports["NATS_PORT"] = ("127.0.0.1", local.nats_port)
    check_ports(ports)


def _nats_users(stack: Stack) -> str:
    """Where the local server's password is (one for every user; the rights differ)."""
    if stack.nats_server is None:
        return ""
    return f" (users: docs/operations.md; password in {stack.nats_server.password_file})"


def _print_welcome(stack: Stack, seconds: float) -> None:
    base = f"http://localhost:{stack.settings.ports['entrypoint']}"
    ports = ", ".join(f"{name} {port}" for name, port in stack.settings.ports.items() if name != "entrypoint")
    print(
        f"""
================================================================================
 Signage backend is up in {seconds:.1f} s: {base}
   OpenAPI:         {base}/openapi.json
   operator token:  {stack.settings.operator_token}
   database:        {stack.settings.database_url}
   nats:            {",".join(stack.settings.nats_url)}{_nats_users(stack)}
   services' ports: {ports}

 Try it (README.md walks the whole flow):
   export OP={stack.settings.operator_token}
   curl -s -X POST {base}/v1/tenants -H "Authorization: Bearer $OP" \\
        -H 'Content-Type: application/json' -d '{{"name": "Acme Retail"}}'
 Ctrl-C stops everything.
================================================================================
""",
        flush=True,
    )


if __name__ == "__main__":
    main()

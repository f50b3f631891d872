"""The command line of the project and of its container image: ``signage COMMAND``, the same as
``python -m services COMMAND`` (the image's entry point).

Settings come from the environment (``shared/settings.py`` declares them); a wrong one stops the
start with one line naming it, and exit status 2, as an unknown command or option does.
"""

from __future__ import annotations

import importlib
import sys

from shared import serve
from shared.auth import generate_signing_key, public_key_of
from shared.command_line import asks_for_help, print_usage, print_version, unknown, usage_error
from shared.environment import SettingsError, markdown_table
from shared.logging import configure
from shared.settings import Settings

# Imported only when chosen: each process registers its own service's metrics, no one else's.
SERVICES = {
    "registry": "services.registry.app",
    "provisioning": "services.provisioning.app",
    "device-gateway": "services.device_gateway.app",
    "heartbeat": "services.heartbeat.app",
}
OTHER_COMMANDS = ("setup", "signing-key", "settings", "openapi")


USAGE = """\
usage: signage COMMAND   (or: python -m services COMMAND)

  registry | provisioning | device-gateway | heartbeat
                serve that service on its port (WORKERS processes; SIGTERM drains and stops)
  setup         apply every schema's migrations, create NATS's streams and buckets; idempotent
  signing-key   print a new access-token signing key and its public key, as settings
  settings      print every setting (variable, type, default, accepted values) as a Markdown table
  openapi       print the whole API's OpenAPI document (JSON), as /openapi.json serves it
  help          this text (also --help, -h)
  --version     the installed version

Settings come from the environment (docs/operations.md lists them).
"""


def main(argv: list[str] | None = None) -> None:
    """``argv`` without the program's name; the console script passes nothing: the process's own."""
    args = sys.argv[1:] if argv is None else argv
    if asks_for_help(args):
        print_usage(USAGE)
        return
    match args:
        case [name] if name in SERVICES:
            settings = settings_or_exit()
            configure(service=name, log_format=settings.log_format, level=settings.log_level)
            serve.main(name, importlib.import_module(SERVICES[name]).create_app, settings)
        case ["setup"]:
            from services import setup  # noqa: PLC0415 - imports every service's migrations

            settings = settings_or_exit()
            configure(service="setup", log_format=settings.log_format, level=settings.log_level)
            setup.main(settings)
        case ["signing-key"]:
            key = generate_signing_key()
            print(f"TOKEN_SIGNING_KEY={key}\nTOKEN_VERIFY_KEYS={public_key_of(key)}")
        case ["settings"]:
            print(markdown_table(Settings), end="")
        case ["openapi"]:
            from services import api_document  # noqa: PLC0415 - imports every service's routes

            sys.stdout.buffer.write(api_document.rendered())
        case ["--version"]:
            print_version()
        case []:
            # A container started without a command fails rather than idles.
            raise usage_error("a command is needed", USAGE)
        case [command, word, *_] if command in SERVICES or command in OTHER_COMMANDS:
            raise usage_error(unknown(word, command=False), USAGE)
        case [word, *_]:
            raise usage_error(unknown(word), USAGE)


def settings_or_exit() -> Settings:
    """The settings, or one line on stderr and exit status 2 (a usage error, not a crash): an
    operator reads which variable is wrong, not a traceback."""
    try:
        return Settings.from_env()
    except SettingsError as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

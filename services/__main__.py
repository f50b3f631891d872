"""The command line of the project and of its container image: ``python -m services COMMAND``.

  registry | provisioning | device-gateway | heartbeat
                serve that service on its port (WORKERS processes; SIGTERM drains and stops)
  setup         apply every schema's migrations, create NATS's streams and buckets; idempotent
  signing-key   print a new access-token signing key and its public key, as settings

Settings come from the environment (README "Settings").
"""

from __future__ import annotations

import importlib
import sys

from shared import serve
from shared.auth import generate_signing_key, public_key_of
from shared.logging import configure
from shared.settings import Settings

# Imported only when chosen: each process registers its own service's metrics, no one else's.
SERVICES = {
    "registry": "services.registry.app",
    "provisioning": "services.provisioning.app",
    "device-gateway": "services.device_gateway.app",
    "heartbeat": "services.heartbeat.app",
}


def main(argv: list[str]) -> None:
    match argv:
        case [name] if name in SERVICES:
            settings = Settings.from_env()
            configure(service=name, log_format=settings.log_format, level=settings.log_level)
            serve.main(name, importlib.import_module(SERVICES[name]).create_app, settings)
        case ["setup"]:
            from services import setup  # noqa: PLC0415 - imports every service's migrations

            settings = Settings.from_env()
            configure(service="setup", log_format=settings.log_format, level=settings.log_level)
            setup.main(settings)
        case ["signing-key"]:
            key = generate_signing_key()
            print(f"TOKEN_SIGNING_KEY={key}\nTOKEN_VERIFY_KEYS={public_key_of(key)}")
        case _:
            raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

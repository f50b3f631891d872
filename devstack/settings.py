"""The settings of the local stack alone (``make run``), declared as the services' are."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from shared.settings import Port

ROOT = Path(__file__).resolve().parent.parent


class LocalSettings(msgspec.Struct, frozen=True, kw_only=True):
    postgres_port: Annotated[
        Port, Meta(description="the PostgreSQL that `make run` starts when DATABASE_URL is unset")
    ] = 55432
    nats_port: Annotated[
        Port, Meta(description="the nats-server that `make run` starts when NATS_URL is unset")
    ] = 54222
    data_dir: Annotated[
        str,
        Meta(
            min_length=1,
            description="where `make run` keeps PostgreSQL's and NATS's data and the generated operator"
            " token and signing key (relative to the repository)",
        ),
    ] = ".data"

    @property
    def data(self) -> Path:
        return ROOT / self.data_dir

"""Revoked API clients, as every service with an admin API holds them.

Access tokens are verified locally (see ``shared.auth``), so revoking a client at registry alone
would leave its tokens working until they expire. Registry puts each revocation into the
``revoked-clients`` bucket in the revoke's own transaction (through its outbox); every service
follows the bucket and refuses a token of a client in it. An entry matters only while a token
issued before the revocation could live: past its ``until`` it is dropped, so memory holds the
revocations of one token lifetime at most (the bucket forgets them by its own TTL).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import msgspec
import structlog
from aiohttp import web

from shared import errors
from shared.bus import NC
from shared.kv_watch import watch_bucket
from shared.projections import REVOKED_CLIENTS_BUCKET, RevokedClient
from shared.tasks import background

log = structlog.get_logger()

_entry = msgspec.json.Decoder(RevokedClient)
# While loading, how often to say what is awaited.
_LOAD_REPORT_SECONDS = 10


class RevokedClients:
    def __init__(self) -> None:
        self._until: dict[str, float] = {}  # client id -> epoch seconds its last token expires by
        self.loaded = asyncio.Event()

    def __len__(self) -> int:
        return len(self._until)

    def apply(self, client_id: str, value: bytes | None) -> None:
        if value is None:
            self._until.pop(client_id, None)
            return
        self._until[client_id] = _entry.decode(value).until.timestamp()
        self._forget_past(time.time())

    def held(self) -> list[str]:
        """The client ids held, for a watch that loads the bucket again to forget those gone."""
        return list(self._until)

    def revoked(self, client_id: str) -> bool:
        until = self._until.get(client_id)
        if until is None:
            return False
        if until <= time.time():  # every token it got has expired: they are refused as expired
            del self._until[client_id]
            return False
        return True

    def _forget_past(self, now: float) -> None:
        # On each new revocation: what the set holds stays within one token lifetime's worth.
        for client_id in [client for client, until in self._until.items() if until <= now]:
            del self._until[client_id]


REVOKED_CLIENTS = web.AppKey("REVOKED_CLIENTS", RevokedClients)


def refuse_revoked(request: web.Request, client_id: str) -> None:
    """401 when the access token's client was revoked after the token was issued."""
    if request.app[REVOKED_CLIENTS].revoked(client_id):
        raise errors.Unauthorized("this client was revoked")


async def revocations_ctx(app: web.Application) -> AsyncIterator[None]:
    """Follow ``revoked-clients`` for the app's lifetime. The port opens only once the bucket is
    loaded, so a fresh replica never honours a token its peers refuse (and, loaded once, the set
    stays: no readiness check of its own)."""
    revoked = app[REVOKED_CLIENTS] = RevokedClients()
    watching = background(
        f"watch-{REVOKED_CLIENTS_BUCKET}",
        lambda app: watch_bucket(
            app[NC], REVOKED_CLIENTS_BUCKET, revoked.apply, revoked.loaded.set, revoked.held
        ),
    )
    async with contextlib.asynccontextmanager(watching)(app):
        while not revoked.loaded.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_LOAD_REPORT_SECONDS):
                    await revoked.loaded.wait()
            if not revoked.loaded.is_set():
                log.info("waiting_for_bucket", bucket=REVOKED_CLIENTS_BUCKET)
        log.info("projection_loaded", bucket=REVOKED_CLIENTS_BUCKET, revoked_clients=len(revoked))
        yield

"""The fleet simulator's webhook receiver: it registers an endpoint for the simulated tenant,
verifies every delivery's signature with the Standard Webhooks library, and at the end says which
of the events the run caused never arrived.

Delivery is at least once, so a repeated ``webhook-id`` is counted, not judged. The events judged
are those the simulator knows it caused, matched by the id they name: a device bound (every
pairing and re-pairing), a device revoked, a command that succeeded.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from devstack.infra import free_port

# What each judged event type names, by which the run's own record finds it.
JUDGED = {"device.bound": "deviceId", "device.revoked": "deviceId", "command.succeeded": "commandId"}


@dataclass
class Deliveries:
    skipped: str = ""  # why no endpoint could be registered, when it could not
    received: dict[str, set[str]] = field(default_factory=lambda: collections.defaultdict(set))
    by_type: collections.Counter[str] = field(default_factory=collections.Counter)
    repeated: int = 0  # deliveries of a webhook-id already received (at least once allows them)
    bad_signatures: int = 0

    def missing(self, expected: dict[str, set[str]]) -> dict[str, int]:
        """Per judged type, how many expected events never arrived."""
        gaps = {kind: len(ids - self.received[kind]) for kind, ids in expected.items()}
        return {kind: count for kind, count in gaps.items() if count}


class Witness:
    """A local receiver on a free port, registered through the public API."""

    def __init__(self, http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
        self.http = http
        self.url = url
        self.headers = headers
        self.deliveries = Deliveries()
        self.seen: set[str] = set()
        self.verifier: Webhook | None = None
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.receive)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        async with self.http.post(
            f"{self.url}/v1/webhooks",
            json={"url": f"http://127.0.0.1:{port}/hook", "events": sorted(JUDGED)},
            headers=self.headers,
        ) as response:
            body = await response.json(content_type=None)
        if response.status == 201:
            self.verifier = Webhook(body["secret"])
        else:  # a registry without webhooks (404), or one that may not call this machine (400)
            self.deliveries.skipped = f"POST /v1/webhooks answered {response.status}: {body}"

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        assert self.verifier is not None  # registered before any event could be sent to it
        try:
            self.verifier.verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.deliveries.bad_signatures += 1
            return web.Response(status=400)
        message_id = request.headers["webhook-id"]
        if message_id in self.seen:
            self.deliveries.repeated += 1
            return web.Response(status=204)
        self.seen.add(message_id)
        event = json.loads(body)
        self.deliveries.by_type[event["type"]] += 1
        if (name := JUDGED.get(event["type"])) is not None:
            self.deliveries.received[event["type"]].add(event["data"][name])
        return web.Response(status=204)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

"""``make simulate``: a fleet of virtual TVs against a running stack, for a bounded time.

Each TV pairs through the public API (a screen, a code, a registration), then lives as a real one
does: polls its config and playlist with ETags, sends heartbeats, asks for its remote commands and
carries them out (a screenshot uploaded first, then the result; each command once, however often
it is listed), backs off with jitter on 429, and pairs again when its key is revoked (the
simulated admin revokes a few TVs as it goes, and with ``--commands N`` sends N commands to
random screens). At the end it waits for the heartbeat service to store what was accepted and for
registry to record every command succeeded, and prints what happened: answers by status, errors
(anything but 2xx, 304, designed 429s and the 401s of revoked keys), heartbeats accepted vs
stored, commands sent vs delivered and succeeded, webhooks caused vs received (a local receiver
subscribes to the tenant's webhooks and verifies each signature; ``--no-webhooks`` skips it), and —
sampled from the services' /metrics
during the run — their memory, the outbox lag and the consumers' backlog.

    PRESENCE_WRITE_SECONDS=0 make run          # in one terminal: every heartbeat in the history
    make simulate SIMULATE_ARGS="--tvs 2000 --seconds 120"

Exit status 1 when a bar is missed (an error, a lost heartbeat, a command not carried out, a
webhook never delivered or badly signed, memory grown more than
``--max-memory-growth``, outbox lag or consumer backlog over their ``--max-…``): usable as a
capacity check. ``make soak`` runs it on a stack of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.fleet import Admin, bounded
from bench.webhook_witness import Deliveries, Witness
from devstack.settings import LocalSettings
from shared.environment import from_env
from shared.settings import DEFAULT_PORTS

# Answers that tell a TV to come back later (Retry-After): designed, not errors.
BACK_OFF = (429, 503)
# What the simulated admin sends, in turn (the types that need no arguments, and a screenshot).
COMMAND_TYPES = ("reload", "screenshot", "clear_cache")
# The smallest PNG there is: a 1x1 pixel, what a simulated TV uploads for a screenshot command.
TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000b49444154789c6360000200000500017a5eab3f0000000049454e44ae426082"
)


def _designed(response: aiohttp.ClientResponse) -> bool:
    return response.status in BACK_OFF and "Retry-After" in response.headers


@dataclass
class Sample:
    """What the services' /metrics said at one moment of the run."""

    at: float  # seconds into the run
    memory: dict[str, float]  # resident MiB by service
    outbox_lag: float  # seconds: the oldest row waiting in any service's outbox
    consumer_pending: float  # messages: the largest backlog of any durable consumer


@dataclass
class Report:
    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    heartbeats_accepted: collections.Counter[str] = field(default_factory=collections.Counter)  # by screen
    stored: dict[str, int] = field(default_factory=dict)  # heartbeats in the history, by screen
    samples: list[Sample] = field(default_factory=list)
    retries: collections.Counter[str] = field(default_factory=collections.Counter)  # admin steps tried again
    faults: list[str] = field(default_factory=list)  # injected during the run (make soak --faults)
    repairs: int = 0
    revokes: int = 0
    commands_sent: dict[str, str] = field(default_factory=dict)  # command id -> its screen id
    commands_skipped: str = ""  # why the admin sent none, when it could not
    commands_carried_out: int = 0  # results the gateway accepted
    command_outcomes: dict[str, str] = field(default_factory=dict)  # command id -> its end status
    # Events the run caused, by webhook type: the ids they name (device or command ids).
    caused: dict[str, set[str]] = field(default_factory=lambda: collections.defaultdict(set))
    webhooks: Deliveries = field(default_factory=Deliveries)

    @property
    def commands_missed(self) -> list[str]:
        """Commands sent but not both delivered and succeeded by the end (registry's word)."""
        return [c for c in self.commands_sent if self.command_outcomes.get(c) != "succeeded, delivered"]

    def answer(self, what: str, status: int) -> None:
        self.answers[f"{what} {status}"] += 1

    @property
    def webhooks_missed(self) -> dict[str, int]:
        if self.webhooks.skipped:
            return {}
        succeeded = {c for c, outcome in self.command_outcomes.items() if outcome.startswith("succeeded")}
        return self.webhooks.missing({**self.caused, "command.succeeded": succeeded})

    @property
    def lost(self) -> int:
        return sum(n - min(self.stored.get(s, 0), n) for s, n in self.heartbeats_accepted.items())

    def memory_growth(self) -> dict[str, float]:
        """Resident memory at the end over that once warmed up (a fifth into the run), per service:
        1.0 is flat."""
        if len(self.samples) < 2:
            return {}
        warm = self.samples[len(self.samples) // 5]
        last = self.samples[-1]
        return {name: last.memory[name] / warm.memory[name] for name in last.memory if warm.memory.get(name)}

    def worst(self, what: str) -> float:
        return max((getattr(sample, what) for sample in self.samples), default=0.0)


@dataclass
class TV:
    screen_id: str
    key: str
    device_id: str
    etags: dict[str, str] = field(default_factory=dict)
    # Commands carried out and still listed: the TV de-duplicates by id, and forgets an id once
    # its command is no longer listed (closed), so this holds the open ones at most.
    done: set[str] = field(default_factory=set)


class Fleet:
    def __init__(self, http: aiohttp.ClientSession, url: str, admin: Admin, args: argparse.Namespace) -> None:
        self.http = http
        self.url = url
        self.admin = admin
        self.args = args
        self.report = Report()
        self.tvs: list[TV] = []

    async def pair(self, index: int) -> TV:
        screen_id, code = await self.admin.screen_with_code(f"Sim {index}")
        registered = await self.admin.register(code)
        self.report.caused["device.bound"].add(registered["deviceId"])
        return TV(screen_id, registered["apiKey"], registered["deviceId"])

    async def repair(self, tv: TV) -> None:
        """What a TV whose key was revoked does: shows its pairing screen; the admin gives a code."""

        async def pair_again() -> None:
            async with self.http.post(
                f"{self.url}/v1/devices/provisioning-codes",
                json={"screenId": tv.screen_id},
                headers=self.admin.headers,
            ) as response:
                code = await response.json()
            if response.status == 409:
                # The TV's last registration went through but a fault lost its answer: the screen
                # is bound to a key nobody holds. What an operator does: revoke that, pair again.
                await self.unbind(tv.screen_id)
                raise RuntimeError("the screen was bound to a key the TV never got")
            if response.status != 201:
                raise RuntimeError(f"provisioning code: {response.status} {code}")
            registered = await self.admin.register(code["code"])
            tv.key, tv.device_id, tv.etags = registered["apiKey"], registered["deviceId"], {}
            self.report.caused["device.bound"].add(tv.device_id)

        if await self.patiently("pair again", pair_again):
            self.report.repairs += 1

    async def patiently(self, what: str, step: Callable[[], Awaitable[None]]) -> bool:
        """An admin's step, tried again while a part of the stack is down (a console retries; with
        ``make soak --faults`` parts go down on purpose). Retries are counted, not errors; a step
        that cannot be done within ``--patience`` seconds is an error. True when the step was done."""
        deadline = time.monotonic() + self.args.patience
        while True:
            try:
                await step()
                return True
            except (TimeoutError, RuntimeError, aiohttp.ClientError) as exc:
                if time.monotonic() > deadline:
                    self.report.errors[f"{what}: {exc}"[:120]] += 1
                    return False
                self.report.retries[what] += 1
                await asyncio.sleep(1)

    async def live(self, tv: TV, until: float) -> None:
        await asyncio.sleep(random.uniform(0, self.args.poll_every))  # TVs do not start in step
        # With --wait, the playlist and the commands each have a request held at all times, as
        # docs/tv-app.md asks; the rounds poll the config and send heartbeats.
        waiting = (
            [self.keep_waiting(tv, what, until) for what in ("playlist", "commands")]
            if self.args.wait
            else []
        )
        rounds = ("config",) if self.args.wait else ("config", "playlist")
        await asyncio.gather(self.rounds(tv, until, rounds), *waiting)

    async def rounds(self, tv: TV, until: float, polled: tuple[str, ...]) -> None:
        while time.monotonic() < until:
            pause = self.args.poll_every * random.uniform(0.8, 1.2)
            for what in polled:
                status, retry_after = await self.poll(tv, what)
                if status == 401:
                    await self.repair(tv)
                    break
                if status in BACK_OFF:
                    pause = max(pause, retry_after * random.uniform(1, 1.5))
            else:
                for step in (self.heartbeat,) if self.args.wait else (self.heartbeat, self.carry_out):
                    status, retry_after = await step(tv)
                    if status in BACK_OFF:
                        pause = max(pause, retry_after * random.uniform(1, 1.5))
                        break
            await asyncio.sleep(pause)

    async def keep_waiting(self, tv: TV, what: str, until: float) -> None:
        """One request for ``what`` (the playlist, the commands) held at all times, answered by a
        change or the end of its wait; a moment's pause after a change, longer after an error."""
        while (left := until - time.monotonic()) > 1:
            wait = min(self.args.wait, int(left))
            if what == "commands":
                status, retry_after = await self.carry_out(tv, wait)
            else:
                status, retry_after = await self.poll(tv, what, wait)
            if status == 401:  # the rounds pair the TV again
                pause = self.args.poll_every
            elif status in BACK_OFF or status >= 500:
                pause = retry_after * random.uniform(1, 1.5)
            else:
                pause = random.uniform(0, 1)
            await asyncio.sleep(min(pause, max(0.0, until - time.monotonic())))

    async def poll(self, tv: TV, what: str, wait: int = 0) -> tuple[int, float]:
        headers = {"Authorization": f"Bearer {tv.key}"}
        if what in tv.etags:
            headers["If-None-Match"] = tv.etags[what]
        if wait:
            headers["Prefer"] = f"wait={wait}"
        timeout = aiohttp.ClientTimeout(total=wait + 30)
        async with self.http.get(
            f"{self.url}/v1/device/{what}", headers=headers, timeout=timeout
        ) as response:
            await response.read()
            self.report.answer(what, response.status)
            if response.status == 200:
                tv.etags[what] = response.headers["ETag"]
            elif response.status not in (304, 401) and not _designed(response):
                self.report.errors[f"{what} {response.status}"] += 1
            return response.status, float(response.headers.get("Retry-After", 1))

    async def heartbeat(self, tv: TV) -> tuple[int, float]:
        body = {"uptimeSeconds": int(time.monotonic()), "appVersion": "sim"}
        async with self.http.post(
            f"{self.url}/v1/device/heartbeat", json=body, headers={"Authorization": f"Bearer {tv.key}"}
        ) as response:
            await response.read()
            self.report.answer("heartbeat", response.status)
            if response.status == 202:
                self.report.heartbeats_accepted[tv.screen_id] += 1
            elif response.status != 401 and not _designed(response):
                self.report.errors[f"heartbeat {response.status}"] += 1
            return response.status, float(response.headers.get("Retry-After", 1))

    async def carry_out(self, tv: TV, wait: int = 0) -> tuple[int, float]:
        """Ask for the screen's open commands (held up to ``wait`` seconds until one opens) and
        carry out those not done yet; a 401 waits for the next round's polls, which pair again."""
        headers = {"Authorization": f"Bearer {tv.key}"}
        if wait:
            headers["Prefer"] = f"wait={wait}"
            if "commands" in tv.etags:  # held while the open set is the one the TV has
                headers["If-None-Match"] = tv.etags["commands"]
        timeout = aiohttp.ClientTimeout(total=wait + 30)
        async with self.http.get(
            f"{self.url}/v1/device/commands", headers=headers, timeout=timeout
        ) as response:
            self.report.answer("commands", response.status)
            if response.status == 200:
                tv.etags["commands"] = response.headers["ETag"]
            else:
                await response.read()
                if response.status not in (304, 401) and not _designed(response):
                    self.report.errors[f"commands {response.status}"] += 1
                return response.status, float(response.headers.get("Retry-After", 1))
            items = (await response.json())["items"]
        tv.done &= {item["id"] for item in items}
        for item in items:
            if item["id"] in tv.done:
                continue
            if item["type"] == "screenshot":
                status, retry_after = await self.report_command(tv, item["id"], "screenshot")
                if status not in (204, 409):  # 409: stored already (the result was what failed)
                    return status, retry_after
            status, retry_after = await self.report_command(tv, item["id"], "result")
            if status == 202:
                self.report.commands_carried_out += 1
            if status not in (202, 404):  # 404: closed meanwhile (expired, cancelled)
                return status, retry_after
            tv.done.add(item["id"])
        return 200, 0

    async def report_command(self, tv: TV, command_id: str, what: str) -> tuple[int, float]:
        """The screenshot (PUT) or the result (POST) of one command."""
        path = f"{self.url}/v1/device/commands/{command_id}/{what}"
        headers = {"Authorization": f"Bearer {tv.key}"}
        if what == "screenshot":
            request = self.http.put(path, data=TINY_PNG, headers={**headers, "Content-Type": "image/png"})
        else:
            request = self.http.post(path, json={"status": "succeeded", "message": "sim"}, headers=headers)
        async with request as response:
            await response.read()
            self.report.answer(what, response.status)
            if response.status not in (202, 204, 401, 404, 409) and not _designed(response):
                self.report.errors[f"{what} {response.status}"] += 1
            return response.status, float(response.headers.get("Retry-After", 1))

    async def send_commands(self, until: float) -> None:
        """The admin sends ``--commands`` commands to random screens over the first part of the run,
        leaving the rest for the TVs to carry out the last ones."""
        count = self.args.commands
        if count == 0:
            return
        # Each at its own time, not a gap after the last: slow answers must not push the last
        # commands past the TVs' life.
        start = time.monotonic()
        gap = (until - start) * 0.6 / count
        for index in range(count):
            await asyncio.sleep(max(0.0, start + (index + 1) * gap - time.monotonic()))
            kind = COMMAND_TYPES[index % len(COMMAND_TYPES)]
            await self.patiently("send command", partial(self.send_command, kind))
            if self.report.commands_skipped:
                return

    async def send_command(self, kind: str) -> None:
        screen_id = random.choice(self.tvs).screen_id
        async with self.http.post(
            f"{self.url}/v1/screens/{screen_id}/commands", json={"type": kind}, headers=self.admin.headers
        ) as response:
            body = await response.json(content_type=None)
            if response.status == 404:  # a registry without remote commands: nothing to judge
                self.report.commands_skipped = f"POST /v1/screens/{{id}}/commands answered 404: {body}"
                return
            if response.status != 202:
                raise RuntimeError(f"send command: {response.status} {body}")
            self.report.commands_sent[body["id"]] = screen_id

    async def command_outcome(self, command_id: str) -> str:
        """The command's status by registry, and whether it was delivered; "" while it cannot say."""
        screen_id = self.report.commands_sent[command_id]
        async with self.http.get(
            f"{self.url}/v1/screens/{screen_id}/commands/{command_id}", headers=self.admin.headers
        ) as response:
            if response.status != 200:
                return ""
            command = await response.json()
        return f"{command['status']}, {'delivered' if command.get('deliveredAt') else 'never delivered'}"

    async def revoke_some(self, until: float) -> None:
        """The admin revokes a share of the TVs over the run; they pair again by themselves."""
        count = int(len(self.tvs) * self.args.revoke_share)
        if count == 0:
            return
        gap = (until - time.monotonic()) / (count + 1)
        for tv in random.sample(self.tvs, count):
            await asyncio.sleep(gap)
            if await self.patiently("revoke", partial(self.revoke, tv)):
                self.report.revokes += 1

    async def revoke(self, tv: TV) -> None:
        await self.revoke_device(tv.device_id)

    async def revoke_device(self, device_id: str) -> None:
        async with self.http.post(
            f"{self.url}/v1/devices/{device_id}/revoke",
            json={"reason": "simulated"},
            headers=self.admin.headers,
        ) as response:
            await response.read()
            if response.status not in (200, 409):  # 409: an earlier try went through
                raise RuntimeError(f"revoke answered {response.status}")
        self.report.caused["device.revoked"].add(device_id)

    async def unbind(self, screen_id: str) -> None:
        """Revoke whatever device is active on the screen."""
        async with self.http.get(
            f"{self.url}/v1/devices",
            params={"screenId": screen_id, "status": "active"},
            headers=self.admin.headers,
        ) as response:
            page = await response.json()
            if response.status != 200:
                raise RuntimeError(f"devices: {response.status} {page}")
        for device in page["items"]:
            await self.revoke_device(device["id"])

    async def stored_heartbeats(self, screen_id: str) -> int:
        """Heartbeats in the screen's history; -1 while the heartbeat service cannot say (restarting)."""
        stored, since = 0, None
        while True:
            params = {"limit": "200", **({"since": since} if since else {})}
            async with self.http.get(
                f"{self.url}/v1/screens/{screen_id}/heartbeats", params=params, headers=self.admin.headers
            ) as response:
                if response.status != 200:
                    return -1
                page = await response.json()
            stored += len(page["items"])
            since = page.get("nextSince")
            if not since:
                return stored


async def sample(http: aiohttp.ClientSession, services: list[str], at: float) -> Sample:
    """Each service's memory, outbox lag and consumer backlogs, from its own /metrics.
    ``services``: base URLs, each optionally named (``registry=http://…``)."""
    memory: dict[str, float] = {}
    lag = pending = 0.0
    for service in services:
        name, _, url = service.rpartition("=")
        name = name or url
        try:
            async with http.get(url + "/metrics") as response:
                text = await response.text()
        except aiohttp.ClientError:
            continue
        for family in text_string_to_metric_families(text):
            values = [sample.value for sample in family.samples]
            if family.name == "process_resident_memory_bytes":
                memory[name] = sum(values) / 2**20
            elif family.name == "outbox_relay_lag_seconds":
                lag = max([lag, *values])
            elif family.name == "consumer_pending_messages":
                pending = max([pending, *values])
    return Sample(at, memory, lag, pending)


async def sampling(
    http: aiohttp.ClientSession, args: argparse.Namespace, report: Report, until: float
) -> None:
    started = time.monotonic()
    while True:
        report.samples.append(await sample(http, args.services, time.monotonic() - started))
        if time.monotonic() >= until:
            return
        await asyncio.sleep(min(args.sample_every, max(0.0, until - time.monotonic())))


def _open_files_for(wanted: int) -> None:
    """Raise this process's open-files limit toward ``wanted`` (each held request is a socket);
    a clear error when the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        raise SystemExit(
            f"--wait with these TVs needs {wanted} open files; the hard limit is {hard} (ulimit -Hn)"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def simulate(
    args: argparse.Namespace, during: Callable[[float, Report], Awaitable[None]] | None = None
) -> Report:
    """Pair the fleet, let it live for ``args.seconds`` (while ``during(until, report)`` runs, if
    given: ``make soak --faults``), then count what was stored."""
    # Held requests each keep a connection: two per TV with --wait, besides the pool for the rest.
    connector = aiohttp.TCPConnector(limit=args.connections + (2 * args.tvs if args.wait else 0))
    if args.wait:
        _open_files_for(4 * args.tvs + args.connections + 1000)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        urls = dict.fromkeys(("registry", "provisioning"), args.url)
        admin = Admin(http, urls)
        await admin.sign_up(args.operator_token)
        fleet = Fleet(http, args.url, admin, args)
        witness = Witness(http, args.url, admin.headers)
        fleet.report.webhooks = witness.deliveries
        if args.webhooks:
            await witness.start()
        print(f"pairing {args.tvs} TVs ...", flush=True)
        fleet.tvs = await bounded(20, [partial(fleet.pair, i) for i in range(args.tvs)])
        until = time.monotonic() + args.seconds
        print(f"living for {args.seconds} s ...", flush=True)
        await asyncio.gather(
            sampling(http, args, fleet.report, until),
            fleet.revoke_some(until),
            fleet.send_commands(until),
            *(fleet.live(tv, until) for tv in fleet.tvs),
            *([during(until, fleet.report)] if during else []),
        )
        print("waiting for the heartbeats to be stored ...", flush=True)
        accepted = fleet.report.heartbeats_accepted
        deadline = time.monotonic() + args.patience
        while True:
            counts = await bounded(20, [partial(fleet.stored_heartbeats, s) for s in accepted])
            stored = dict(zip(accepted, counts, strict=True))
            if all(stored[s] >= accepted[s] for s in accepted) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        fleet.report.stored = stored
        if fleet.report.commands_sent:
            print("waiting for the commands to be recorded succeeded ...", flush=True)
        sent = list(fleet.report.commands_sent)
        deadline = time.monotonic() + args.patience
        while sent:
            outcomes = await bounded(20, [partial(fleet.command_outcome, c) for c in sent])
            fleet.report.command_outcomes = dict(zip(sent, outcomes, strict=True))
            if not fleet.report.commands_missed or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        if witness.verifier is not None:
            print("waiting for the webhooks to be delivered ...", flush=True)
            deadline = time.monotonic() + args.patience
            while fleet.report.webhooks_missed:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(1)
        await witness.stop()
        return fleet.report


def print_report(report: Report, args: argparse.Namespace) -> bool:
    """Print what happened; True when the run meets the bars: no errors, nothing lost, memory
    flat, outbox and consumers keeping up."""
    seconds = args.seconds
    accepted = sum(report.heartbeats_accepted.values())
    print()
    for what, count in sorted(report.answers.items()):
        print(f"  {what:<20} {count:>9}  ({count / seconds:,.0f}/s)")
    print(f"  revoked {report.revokes}, paired again {report.repairs}")
    if report.faults:
        print(f"  faults injected: {', '.join(report.faults)}")
    if report.retries:
        print(f"  admin steps tried again: {dict(report.retries)}")
    print(f"  heartbeats accepted {accepted}, stored {accepted - report.lost}, lost {report.lost}")
    if report.commands_skipped:
        print(f"  commands: none sent ({report.commands_skipped})")
    elif args.commands:
        outcomes = collections.Counter(report.command_outcomes.values())
        print(
            f"  commands sent {len(report.commands_sent)}, results accepted {report.commands_carried_out},"
            f" at the end: {dict(outcomes)}"
        )
    hooks = report.webhooks
    if hooks.skipped:
        print(f"  webhooks: none received ({hooks.skipped})")
    elif hooks.by_type:
        print(
            f"  webhooks received {dict(hooks.by_type)}, repeated {hooks.repeated},"
            f" bad signatures {hooks.bad_signatures}, missed {report.webhooks_missed or 'none'}"
        )
    growth = report.memory_growth()
    for name, ratio in growth.items():
        series = [sample.memory[name] for sample in report.samples if name in sample.memory]
        print(
            f"  memory {name}: {series[0]:.0f} MiB at start, {max(series):.0f} peak, {series[-1]:.0f} at end"
            f" (x{ratio:.2f} since warm)"
        )
    lag, pending = report.worst("outbox_lag"), report.worst("consumer_pending")
    print(
        f"  outbox lag at most {lag:.2f} s, consumer backlog at most {pending:.0f} messages"
        f" ({len(report.samples)} samples)"
    )
    print(f"  errors: {dict(report.errors) or 'none'}")
    failures = []
    if report.errors:
        failures.append("errors")
    if report.lost:
        failures.append(f"{report.lost} heartbeats lost")
    if report.commands_missed:
        failures.append(f"{len(report.commands_missed)} commands not delivered and succeeded")
    if report.webhooks_missed:
        failures.append(f"webhooks never delivered: {report.webhooks_missed}")
    if hooks.bad_signatures:
        failures.append(f"{hooks.bad_signatures} webhooks with a bad signature")
    if args.commands and not report.commands_skipped and len(report.commands_sent) < args.commands:
        failures.append(f"{args.commands - len(report.commands_sent)} commands could not be sent")
    if any(ratio > args.max_memory_growth for ratio in growth.values()):
        failures.append(f"memory grew more than x{args.max_memory_growth}")
    if lag > args.max_outbox_lag:
        failures.append(f"outbox lag over {args.max_outbox_lag} s")
    if pending > args.max_consumer_backlog:
        failures.append(f"consumer backlog over {args.max_consumer_backlog}")
    print(f"  verdict: {'; '.join(failures) or 'pass'}")
    return not failures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The fleet's shape and the bars it must meet (``make simulate`` and ``make soak``)."""
    parser.add_argument("--tvs", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--poll-every", type=float, default=5, help="seconds between a TV's rounds")
    parser.add_argument(
        "--revoke-share", type=float, default=0.02, help="share of TVs revoked during the run"
    )
    parser.add_argument(
        "--commands", type=int, default=0, help="remote commands the admin sends during the run"
    )
    parser.add_argument(
        "--wait",
        type=int,
        default=0,
        help="seconds a TV's playlist and commands requests are held for a change (Prefer: wait);"
        " 0: plain polls",
    )
    parser.add_argument(
        "--webhooks",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a local receiver subscribes to the tenant's webhooks, and every event the run caused"
        " must reach it",
    )
    parser.add_argument(
        "--patience",
        type=float,
        default=120,
        help="seconds an admin step, or the wait at the end for what the run caused to be recorded, may take",
    )
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--sample-every", type=float, default=5, help="seconds between looks at /metrics")
    parser.add_argument("--max-memory-growth", type=float, default=1.2, help="end / warmed-up memory")
    parser.add_argument("--max-outbox-lag", type=float, default=5, help="seconds")
    parser.add_argument("--max-consumer-backlog", type=float, default=5000, help="messages")


def main() -> None:
    parser = argparse.ArgumentParser(prog="make simulate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("SIMULATE_URL", "http://localhost:8080"))
    parser.add_argument("--operator-token", default=os.environ.get("OPERATOR_TOKEN", ""))
    add_arguments(parser)
    parser.add_argument(
        "--services",
        nargs="*",
        default=[
            f"{name}=http://localhost:{port}" for name, port in DEFAULT_PORTS.items() if name != "entrypoint"
        ],
        help="services ([NAME=]URL) whose /metrics give their memory, outbox lag and consumer backlog",
    )
    args = parser.parse_args()
    if not args.operator_token:
        token_file = from_env(LocalSettings).data / "operator_token"
        args.operator_token = token_file.read_text().strip() if token_file.exists() else ""
    if not args.operator_token:
        raise SystemExit(
            "set OPERATOR_TOKEN (make run prints it and keeps it in its DATA_DIR, .data/operator_token)"
        )
    report = asyncio.run(simulate(args))
    sys.exit(0 if print_report(report, args) else 1)


if __name__ == "__main__":
    main()

"""``make simulate``: a fleet of virtual TVs against a running stack, for a bounded time.

Each TV pairs through the public API (a screen, a code, a registration), then lives as a real one
does: polls its config and playlist with ETags, sends heartbeats, backs off with jitter on 429,
and pairs again when its key is revoked (the simulated admin revokes a few TVs as it goes). At
the end it waits for the heartbeat service to store what was accepted and prints what happened:
answers by status, errors (anything but 2xx, 304, designed 429s and the 401s of revoked keys),
heartbeats accepted vs stored, and the services' memory at the start and the end.

    make run                                   # in one terminal
    make simulate SIMULATE_ARGS="--tvs 2000 --seconds 120"

Exit status 1 when there were errors or a heartbeat was lost: usable as a capacity check.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import sys
import time
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.fleet import Admin, bounded
from devstack.services import ROOT


@dataclass
class Report:
    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    heartbeats_accepted: collections.Counter[str] = field(default_factory=collections.Counter)  # by screen
    stored: dict[str, int] = field(default_factory=dict)  # heartbeats in the history, by screen
    memory: tuple[dict[str, float], dict[str, float]] = ({}, {})  # MiB by service, start and end
    repairs: int = 0
    revokes: int = 0

    def answer(self, what: str, status: int) -> None:
        self.answers[f"{what} {status}"] += 1


@dataclass
class TV:
    screen_id: str
    key: str
    device_id: str
    etags: dict[str, str] = field(default_factory=dict)


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
        return TV(screen_id, registered["apiKey"], registered["deviceId"])

    async def repair(self, tv: TV) -> None:
        """What a TV whose key was revoked does: shows its pairing screen; the admin gives a code."""
        code = await self.admin._call(
            "POST",
            "provisioning",
            "/v1/devices/provisioning-codes",
            201,
            json={"screenId": tv.screen_id},
            headers=self.admin.headers,
        )
        registered = await self.admin.register(code["code"])
        tv.key, tv.device_id, tv.etags = registered["apiKey"], registered["deviceId"], {}
        self.report.repairs += 1

    async def live(self, tv: TV, until: float) -> None:
        await asyncio.sleep(random.uniform(0, self.args.poll_every))  # TVs do not start in step
        while time.monotonic() < until:
            pause = self.args.poll_every * random.uniform(0.8, 1.2)
            for what in ("config", "playlist"):
                status, retry_after = await self.poll(tv, what)
                if status == 401:
                    await self.repair(tv)
                    break
                if status == 429:
                    pause = max(pause, retry_after * random.uniform(1, 1.5))
            else:
                status, retry_after = await self.heartbeat(tv)
                if status == 429:
                    pause = max(pause, retry_after * random.uniform(1, 1.5))
            await asyncio.sleep(pause)

    async def poll(self, tv: TV, what: str) -> tuple[int, float]:
        headers = {"Authorization": f"Bearer {tv.key}"}
        if what in tv.etags:
            headers["If-None-Match"] = tv.etags[what]
        async with self.http.get(f"{self.url}/v1/device/{what}", headers=headers) as response:
            await response.read()
            self.report.answer(what, response.status)
            if response.status == 200:
                tv.etags[what] = response.headers["ETag"]
            elif response.status not in (304, 401, 429):
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
            elif response.status not in (401, 429):
                self.report.errors[f"heartbeat {response.status}"] += 1
            return response.status, float(response.headers.get("Retry-After", 1))

    async def revoke_some(self, until: float) -> None:
        """The admin revokes a share of the TVs over the run; they pair again by themselves."""
        count = int(len(self.tvs) * self.args.revoke_share)
        if count == 0:
            return
        gap = (until - time.monotonic()) / (count + 1)
        for tv in random.sample(self.tvs, count):
            await asyncio.sleep(gap)
            await self.admin.revoke(tv.device_id)
            self.report.revokes += 1

    async def stored_heartbeats(self, screen_id: str) -> int:
        stored, since = 0, None
        while True:
            params = {"limit": "200", **({"since": since} if since else {})}
            async with self.http.get(
                f"{self.url}/v1/screens/{screen_id}/heartbeats", params=params, headers=self.admin.headers
            ) as response:
                page = await response.json()
            stored += len(page["items"])
            since = page.get("nextSince")
            if not since:
                return stored


async def memory(http: aiohttp.ClientSession, urls: list[str]) -> dict[str, float]:
    """Resident MiB of each service, from its own /metrics."""
    found = {}
    for url in urls:
        try:
            async with http.get(url + "/metrics") as response:
                text = await response.text()
        except aiohttp.ClientError:
            continue
        for family in text_string_to_metric_families(text):
            if family.name == "process_resident_memory_bytes":
                found[url] = sum(sample.value for sample in family.samples) / 2**20
    return found


async def simulate(args: argparse.Namespace) -> Report:
    connector = aiohttp.TCPConnector(limit=args.connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        urls = dict.fromkeys(("registry", "provisioning"), args.url)
        admin = Admin(http, urls)
        await admin.sign_up(args.operator_token)
        fleet = Fleet(http, args.url, admin, args)
        print(f"pairing {args.tvs} TVs ...", flush=True)
        fleet.tvs = await bounded(20, [lambda i=i: fleet.pair(i) for i in range(args.tvs)])
        rss_before = await memory(http, args.services)
        until = time.monotonic() + args.seconds
        print(f"living for {args.seconds} s ...", flush=True)
        await asyncio.gather(fleet.revoke_some(until), *(fleet.live(tv, until) for tv in fleet.tvs))
        print("waiting for the heartbeats to be stored ...", flush=True)
        accepted = fleet.report.heartbeats_accepted
        deadline = time.monotonic() + 60
        while True:
            stored = dict(
                zip(accepted, await bounded(20, [lambda s=s: fleet.stored_heartbeats(s) for s in accepted]))
            )
            if all(stored[s] >= accepted[s] for s in accepted) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        fleet.report.stored = stored
        fleet.report.memory = (rss_before, await memory(http, args.services))
        return fleet.report


def print_report(report: Report, seconds: float) -> bool:
    accepted = sum(report.heartbeats_accepted.values())
    stored = sum(min(report.stored.get(s, 0), n) for s, n in report.heartbeats_accepted.items())
    print()
    for what, count in sorted(report.answers.items()):
        print(f"  {what:<20} {count:>9}  ({count / seconds:,.0f}/s)")
    print(f"  revoked {report.revokes}, paired again {report.repairs}")
    print(f"  heartbeats accepted {accepted}, stored {stored}, lost {accepted - stored}")
    before, after = report.memory
    for url in after:
        print(f"  memory {url}: {before.get(url, 0):.0f} -> {after[url]:.0f} MiB")
    print(f"  errors: {dict(report.errors) or 'none'}")
    return not report.errors and accepted == stored


def main() -> None:
    parser = argparse.ArgumentParser(prog="make simulate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("SIMULATE_URL", "http://localhost:8080"))
    parser.add_argument("--operator-token", default=os.environ.get("OPERATOR_TOKEN", ""))
    parser.add_argument("--tvs", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--poll-every", type=float, default=5, help="seconds between a TV's rounds")
    parser.add_argument(
        "--revoke-share", type=float, default=0.02, help="share of TVs revoked during the run"
    )
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument(
        "--services",
        nargs="*",
        default=[f"http://localhost:{port}" for port in (8081, 8082, 8083, 8084)],
        help="service base URLs whose /metrics give their memory",
    )
    args = parser.parse_args()
    if not args.operator_token:
        token_file = ROOT / ".data" / "operator_token"
        args.operator_token = token_file.read_text().strip() if token_file.exists() else ""
    if not args.operator_token:
        raise SystemExit("set OPERATOR_TOKEN (make run prints it and keeps it in .data/operator_token)")
    report = asyncio.run(simulate(args))
    sys.exit(0 if print_report(report, args.seconds) else 1)


if __name__ == "__main__":
    main()

"""Guessing budgets that protect without locking out: taken atomically, one per flow, IPv6 by its
/64, never spent by the 256-bit secrets, and a botnet over the global count slows guessers without
turning away a TV that holds a valid code. Also the pruning of what callers can pile up."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import msgspec
import pytest

from services.provisioning.app import prune_once
from services.provisioning.attempts import of_address
from shared.db import create_pool
from shared.settings import Settings
from tests.binding import assert_error
from tests.stack import DEVICE_INFO, Stack
from tests.test_device_flow import DEVICE_FORM

# A day-long window: attempts a few seconds apart never straddle two windows (but at midnight UTC).
DAY = 86400
PROXY = (ipaddress.ip_network("127.0.0.0/8"),)


async def guess_code(stack: Stack, code: str = "ZZZZ2345", address: str | None = None) -> int:
    headers = {"X-Forwarded-For": address} if address else {}
    status, _, _ = await stack.call(
        "POST", "/devices/register", headers=headers, json={"pairingCode": code, "deviceInfo": DEVICE_INFO}
    )
    return status


async def guess_serial(stack: Stack) -> int:
    status, _, _ = await stack.call(
        "POST", "/devices/activate", json={"serial": "SN-NOBODY", "deviceInfo": DEVICE_INFO}
    )
    return status


async def replay_secret(stack: Stack, address: str | None = None) -> int:
    headers = {"X-Forwarded-For": address} if address else {}
    status, _, _ = await stack.call(
        "POST",
        "/devices/recover",
        headers=headers,
        json={"hardwareId": "HW", "recoverySecret": "drs_" + "F" * 43},
    )
    return status


async def present_token(stack: Stack, address: str | None = None) -> int:
    headers = {"X-Forwarded-For": address} if address else {}
    status, _, _ = await stack.call(
        "POST",
        "/devices/provision",
        headers=headers,
        json={"provisioningToken": "dpt_" + "F" * 43, "deviceInfo": DEVICE_INFO},
    )
    return status


def test_ipv6_addresses_are_one_caller_per_64_and_ipv4_per_address():
    assert of_address("2001:db8:1:2:aaaa::1") == of_address("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    assert of_address("2001:db8:1:3::1") != of_address("2001:db8:1:2::1")
    assert of_address("203.0.113.5") == "203.0.113.5" != of_address("203.0.113.6")
    assert of_address("::ffff:203.0.113.5") == "203.0.113.5"  # IPv4 through a dual-stack socket
    assert of_address("unix") == "unix"


class TestOneAddress:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return msgspec.structs.replace(
            settings, register_failures_per_window=10, register_failure_window_seconds=DAY
        )

    async def test_concurrent_guesses_never_exceed_the_budget(self, stack):
        statuses = await asyncio.gather(*(guess_code(stack) for _ in range(60)))
        assert sorted(statuses) == [404] * 10 + [429] * 50, statuses

    async def test_an_ipv6_address_shares_its_64s_budget(self, settings, sockets):
        proxied = msgspec.structs.replace(settings, trusted_proxies=PROXY)
        async with Stack(proxied, sockets) as stack:
            statuses = [await guess_code(stack, address=f"2001:db8:1:2::{i:x}") for i in range(11)]
            assert statuses == [404] * 10 + [429], statuses
            assert await guess_code(stack, address="2001:db8:1:3::1") == 404

    async def test_each_flow_has_its_own_budget(self, stack):
        assert [await guess_code(stack) for _ in range(11)] == [404] * 10 + [429]
        # The same address still activates serials, recovers, provisions with tokens...
        assert await guess_serial(stack) == 404
        assert await replay_secret(stack) == 401
        assert await present_token(stack) == 404
        # ...each up to its own budget.
        assert [await replay_secret(stack) for _ in range(10)] == [401] * 9 + [429]
        assert [await guess_serial(stack) for _ in range(10)] == [404] * 9 + [429]

    async def test_a_success_gives_its_slot_back(self, stack):
        tenant = await stack.tenant()
        for _ in range(9):
            assert await guess_code(stack) == 404
        for name in ("A", "B", "C"):  # each success leaves the one slot left free
            screen = await stack.screen(tenant["token"], name)
            code = (await stack.code(tenant["token"], screen["id"]))["code"]
            assert await guess_code(stack, code) == 201
        assert [await guess_code(stack) for _ in range(2)] == [404, 429]


class TestABotnet:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return msgspec.structs.replace(
            settings,
            register_failures_per_window=10,
            register_failures_global_per_window=20,
            register_failures_under_pressure=2,
            register_failure_window_seconds=DAY,
            trusted_proxies=PROXY,
        )

    async def test_the_botnet_is_slowed_and_a_tv_with_a_valid_code_still_registers(self, stack):
        tenant = await stack.tenant()
        screen = await stack.screen(tenant["token"])
        code = (await stack.code(tenant["token"], screen["id"]))["code"]
        bots = [f"198.51.100.{i}" for i in range(1, 31)]
        first = await asyncio.gather(*(guess_code(stack, address=bot) for bot in bots))
        assert first == [404] * 30, first
        # Everyone's failures are past 20: each bot has 2 a window now, not 10.
        second = [await guess_code(stack, address=bot) for bot in bots[:3]]
        third = [await guess_code(stack, address=bot) for bot in bots[:3]]
        assert (second, third) == ([404] * 3, [429] * 3)
        # A genuine TV, from its own address, with the code on its screen: in.
        assert await guess_code(stack, code, address="203.0.113.77") == 201

    async def test_secrets_never_put_a_flow_under_pressure(self, stack):
        bots = [f"198.51.100.{i}" for i in range(1, 31)]
        assert await asyncio.gather(*(replay_secret(stack, bot) for bot in bots)) == [401] * 30
        assert await asyncio.gather(*(present_token(stack, bot) for bot in bots)) == [404] * 30
        # No pressure on pairing codes: an address still has its 10 guesses.
        assert [await guess_code(stack, address="203.0.113.5") for _ in range(11)] == [404] * 10 + [429]


class TestATenant:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return msgspec.structs.replace(
            settings, register_failures_per_window=3, register_failure_window_seconds=DAY
        )

    async def test_user_code_lookups_share_the_approvals_budget_and_claims_have_their_own(self, stack):
        tenant = await stack.tenant()
        screen = await stack.screen(tenant["token"])
        path = "/v1/devices/device-authorizations/{}"
        looks = [
            (await stack.call("GET", path.format(guess), token=tenant["token"]))[0]
            for guess in ("BCDFBCDF", "BCDFBCDG", "BCDFBCDH")
        ]
        assert looks == [404, 404, 404], looks
        status, body, response = await stack.call(
            "POST",
            path.format("BCDFBCDJ") + "/approve",
            token=tenant["token"],
            json={"screenId": screen["id"]},
        )
        assert_error(status, body, 429, "rate_limited")
        assert int(response.headers["Retry-After"]) > 0
        status, body, _ = await stack.call("GET", path.format("BCDFBCDK"), token=tenant["token"])
        assert_error(status, body, 429, "rate_limited")
        # Claim codes are another flow: the tenant's claims are still looked at.
        status, body, _ = await stack.call(
            "POST",
            "/v1/devices/claims",
            token=tenant["token"],
            json={"claimCode": "ZZZZ2345", "screenId": screen["id"]},
        )
        assert_error(status, body, 404, "not_found")


class TestDeviceAuthorizationStarts:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return msgspec.structs.replace(
            settings,
            device_authorizations_per_window=3,
            register_failure_window_seconds=DAY,
            trusted_proxies=PROXY,
        )

    async def test_starts_are_limited_per_address(self, stack):
        async def start(address: str) -> tuple[int, Any, Any]:
            form = {"client_id": "signage-player", **DEVICE_FORM}
            async with stack.http.post(
                "/oauth/device_authorization", data=form, headers={"X-Forwarded-For": address}
            ) as response:
                return response.status, await response.json(), response.headers

        statuses = [(await start("2001:db8:9:9::1"))[0] for _ in range(3)]
        assert statuses == [200] * 3, statuses
        status, body, headers = await start("2001:db8:9:9::2")  # the same /64
        assert status == 429, body
        assert body["error"] == "rate_limited" and body["error_description"], body
        assert 1 <= int(headers["Retry-After"]) <= DAY and headers["Cache-Control"] == "no-store"
        assert (await start("203.0.113.9"))[0] == 200


class TestPruning:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        # A day's window: no budget row straddles a window's end during the test, and the service's
        # own pruning (once a window) does not run meanwhile.
        return msgspec.structs.replace(settings, register_failure_window_seconds=DAY)

    async def test_pruning_forgets_expired_rows_that_bound_nothing(self, stack):
        tenant = await stack.tenant()
        used_screen, free_screen = (
            await stack.screen(tenant["token"], "A"),
            await stack.screen(tenant["token"], "B"),
        )
        used = (await stack.code(tenant["token"], used_screen["id"]))["code"]
        assert await guess_code(stack, used) == 201
        unused = (await stack.code(tenant["token"], free_screen["id"]))["code"]
        form = {"client_id": "signage-player", **DEVICE_FORM}
        for _ in range(2):
            async with stack.http.post("/oauth/device_authorization", data=form) as response:
                assert response.status == 200
        assert await guess_code(stack) == 404  # a budget row

        pool = await create_pool(stack.settings.database_url, "provisioning", min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                # Nothing has expired yet: nothing goes but nothing is there to go.
                assert await prune_once(conn, DAY, 3600) == 0
                await conn.execute("UPDATE provisioning_codes SET expires_at = now() - interval '2 hours'")
                await conn.execute(
                    "UPDATE device_authorizations SET expires_at = now() - interval '2 hours'"
                    " WHERE user_code = (SELECT min(user_code) FROM device_authorizations)"
                )
                await conn.execute("UPDATE attempt_budgets SET window_start = now() - interval '2 days'")
                # The unused code, one request, and the budgets (pairing codes: the address's and
                # everyone's; the address's device authorization starts): what is left says which.
                assert await prune_once(conn, DAY, 3600) >= 5
                codes = await conn.fetch("SELECT code FROM provisioning_codes")
                assert [row["code"] for row in codes] == [used], (codes, unused)
                assert await conn.fetchval("SELECT count(*) FROM device_authorizations") == 1
                assert await conn.fetchval("SELECT count(*) FROM attempt_budgets") == 0
        finally:
            await pool.close()

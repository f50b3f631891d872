"""Failed registrations are limited per client address; X-Forwarded-For counts only from trusted proxies."""

from __future__ import annotations

import ipaddress

import msgspec
import pytest


async def fail_once(stack, forwarded_for: str) -> int:
    """One failed registration (unknown code) seen as coming from ``forwarded_for``'s client."""
    status, _, _ = await stack.call(
        "POST",
        "/devices/register",
        headers={"X-Forwarded-For": forwarded_for},
        json={"pairingCode": "ZZZZ2345", "deviceInfo": {}},
    )
    return status


class TestBehindATrustedProxy:
    @pytest.fixture
    def settings(self, settings):
        # The stack's entry point (loopback) is the proxy: it appends the peer it saw.
        return msgspec.structs.replace(
            settings,
            register_failures_per_window=2,
            trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),),
        )

    async def test_each_forwarded_client_has_its_own_budget(self, stack):
        assert [await fail_once(stack, "203.0.113.5") for _ in range(3)] == [400, 400, 429]
        assert await fail_once(stack, "198.51.100.7") == 400

    async def test_a_client_cannot_pick_a_fresh_address_by_prepending_hops(self, stack):
        # Only the hop our proxy appended is believed; what the client wrote before it is not.
        statuses = [await fail_once(stack, f"10.0.0.{i}, 203.0.113.9") for i in range(3)]
        assert statuses == [400, 400, 429]


class TestWithoutTrustedProxies:
    @pytest.fixture
    def settings(self, settings):
        return msgspec.structs.replace(settings, register_failures_per_window=2, trusted_proxies=())

    async def test_forwarded_for_is_ignored(self, stack):
        statuses = [await fail_once(stack, f"203.0.113.{i}") for i in range(3)]
        assert statuses == [400, 400, 429]


class TestManyAddresses:
    @pytest.fixture
    def settings(self, settings):
        return msgspec.structs.replace(
            settings,
            register_failures_per_window=100,
            register_failures_global_per_window=4,
            register_failures_under_pressure=1,
            trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),),
        )

    async def test_guessing_from_many_addresses_shrinks_every_address_budget(self, stack):
        # Each address's first attempt is looked at, pressure or not; past everyone's 4 failures
        # a second attempt of an address is refused, where 100 were allowed before.
        statuses = [await fail_once(stack, f"203.0.113.{i}") for i in range(6)]
        assert statuses == [400] * 6
        assert await fail_once(stack, "203.0.113.0") == 429
        # A recovery secret is no guessable code: its flow knows no pressure.
        status, body, _ = await stack.call(
            "POST",
            "/devices/recover",
            headers={"X-Forwarded-For": "198.51.100.1"},
            json={"hardwareId": "HW", "recoverySecret": "drs_" + "F" * 43},
        )
        assert status == 401, body

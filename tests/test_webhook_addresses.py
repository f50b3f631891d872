"""The webhook address guard (pure functions and the resolver; no stack needed)."""

from __future__ import annotations

import ipaddress

import pytest

from services.registry.webhook_addresses import (
    AddressRefused,
    GuardedResolver,
    address_allowed,
    host_problem,
    url_problem,
)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # the clouds' metadata service
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00:ec2::254",  # a cloud's IPv6 metadata service
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
    ],
)
def test_non_global_addresses_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::1111", "::ffff:93.184.215.14"])
def test_global_addresses_are_allowed(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("url", "allow_http", "problem"),
    [
        ("https://hooks.example.com/x", False, None),
        ("http://hooks.example.com/x", False, "must be an https URL"),
        ("http://hooks.example.com/x", True, None),
        ("ftp://hooks.example.com/x", True, "must be an http or https URL"),
        ("https:///x", False, "must name a host"),
        ("https://user:pw@hooks.example.com/", False, "must not carry a user name or password"),
        ("https://hooks.example.com:99999/", False, "must be an absolute http(s) URL"),
        ("https://hooks.example.com/#frag", False, "must not carry a fragment"),
    ],
)
def test_url_problems(url: str, allow_http: bool, problem: str | None) -> None:
    found = url_problem(url, allow_http=allow_http)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)


async def test_the_resolver_drops_what_webhooks_may_not_reach() -> None:
    guarded = GuardedResolver(allow_private=False)
    try:
        with pytest.raises(AddressRefused):
            await guarded.resolve("localhost", 443)
        assert await host_problem("https://localhost/hook", guarded) is not None
        assert await host_problem("https://127.0.0.1/hook", guarded) is not None
        assert await host_problem("https://[::ffff:169.254.169.254]/hook", guarded) is not None
        assert await host_problem("https://no-such-host.invalid/hook", guarded) == (
            "names a host that does not resolve"
        )
    finally:
        await guarded.close()


async def test_allowing_private_addresses_lets_loopback_through() -> None:
    allowing = GuardedResolver(allow_private=True)
    try:
        assert await allowing.resolve("localhost", 443)
        assert await host_problem("http://127.0.0.1:8080/hook", allowing) is None
    finally:
        await allowing.close()

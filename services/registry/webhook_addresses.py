"""Where a webhook may be sent: the guard against server-side request forgery.

A tenant names the URL and we make the request from inside the cluster, so a URL naming the
loopback, a private network, a link-local address (the clouds' metadata service at
169.254.169.254) or any other non-global address would let a tenant reach what only we can.
The guard runs twice: when the URL is registered (a clear 400) and at every connection, on the
very addresses the connection uses, so a name that resolves to a public address at registration
and to a private one later (DNS rebinding) is refused too.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(OSError):
    """The URL's host is, or resolves only to, addresses webhooks may not reach."""


def address_allowed(address: IpAddress) -> bool:
    # An IPv4 address written as IPv6 (::ffff:10.0.0.1) reaches the IPv4 host: judge that one.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def url_problem(url: str, *, allow_http: bool) -> str | None:
    """What is wrong with ``url`` as a webhook target, before any name is resolved; None if nothing."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "must be an absolute http(s) URL"
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        return "must be an https URL" if not allow_http else "must be an http or https URL"
    if not parts.hostname:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password (the signature authenticates us)"
    if parts.fragment:
        return "must not carry a fragment"
    if port == 0:
        return "must not name port 0"
    return None


def literal_address(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class GuardedResolver(AbstractResolver):
    """Resolves as usual, then keeps only addresses webhooks may reach.

    aiohttp connects to the addresses its resolver returns, so checking here checks the
    connection itself. (It does not ask the resolver about a literal IP host: the delivery checks
    those with ``literal_address`` and ``address_allowed`` before it sends.)
    """

    def __init__(self, *, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self.allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self.allow_private:
            return results
        allowed = [r for r in results if address_allowed(ipaddress.ip_address(r["host"]))]
        if not allowed:
            raise AddressRefused(f"{host} resolves only to addresses webhooks may not reach")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


async def host_problem(url: str, resolver: GuardedResolver) -> str | None:
    """At registration: None when the URL's host is an allowed address or resolves to one."""
    host = urlsplit(url).hostname or ""
    if (address := literal_address(host)) is not None:
        if resolver.allow_private or address_allowed(address):
            return None
        return "names an address webhooks may not reach (loopback, private, link-local or reserved)"
    try:
        await resolver.resolve(host, 443, socket.AF_UNSPEC)
    except AddressRefused:
        return "resolves only to addresses webhooks may not reach (loopback, private, link-local or reserved)"
    except OSError:
        return "names a host that does not resolve"
    return None

"""Outbound safety: which IP addresses this server may connect to.

A remote server name, its well-known and its SRV records are chosen by someone else, so
they can point at our own network (SSRF) or change between check and connect (DNS
rebinding). The policy here is applied to every address right before connecting:
:class:`PolicyResolver` filters what aiohttp resolves, :func:`policy_socket_factory`
refuses the socket for literal IPs (which aiohttp does not pass to a resolver).

Config keys follow Synapse: ``ip_range_blacklist`` (default below) with
``ip_range_whitelist`` exceptions. The unspecified addresses 0.0.0.0 and :: are always
refused: connecting to them reaches the local host.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Callable, Iterable, Sequence, Union

from aiohttp.abc import AbstractResolver, ResolveResult

__all__ = [
    "DEFAULT_IP_RANGE_BLACKLIST",
    "IPAddress",
    "IPNetwork",
    "BlockedAddressError",
    "IPRangePolicy",
    "PolicyResolver",
    "policy_socket_factory",
]

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: Synapse's default ``ip_range_blacklist``: loopback, private, link-local, CGNAT,
#: documentation, benchmarking, multicast, reserved, broadcast and unspecified ranges.
DEFAULT_IP_RANGE_BLACKLIST: tuple[str, ...] = (
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "0.0.0.0/8",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
    "::/128",
)

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d


class BlockedAddressError(OSError):
    """Every address for a destination is in a blocked range (an OSError, so that HTTP
    clients report it as a connection error)."""

    def __init__(self, host: str, addresses: Sequence[str]):
        self.host = host
        self.addresses = tuple(addresses)
        listed = ", ".join(self.addresses) or "none"
        super().__init__(f"refusing to connect to {host}: address(es) {listed} in a blocked IP range "
                         "(ip_range_blacklist)")


def _as_network(value: str | IPNetwork) -> IPNetwork:
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"not an IP range: {value!r}") from None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: mapped, NAT64, 6to4 or IPv4-compatible."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


class IPRangePolicy:
    """``blacklist`` minus ``whitelist``, applied to an address and the IPv4 it embeds.

    An IPv6 address that carries an IPv4 address (``::ffff:10.0.0.1``, NAT64
    ``64:ff9b::a00:1``, 6to4 ``2002:a00:1::``) is refused when either form is blocked.
    """

    def __init__(
        self,
        blacklist: Iterable[str | IPNetwork] = DEFAULT_IP_RANGE_BLACKLIST,
        whitelist: Iterable[str | IPNetwork] = (),
    ):
        self.blacklist = tuple(_as_network(n) for n in blacklist)
        self.whitelist = tuple(_as_network(n) for n in whitelist)

    def __repr__(self) -> str:
        return f"IPRangePolicy(blacklist={len(self.blacklist)} ranges, whitelist={[str(n) for n in self.whitelist]})"

    def _blocked(self, ip: IPAddress) -> bool:
        if ip.is_unspecified:
            return True
        if not any(ip.version == n.version and ip in n for n in self.blacklist):
            return False
        return not any(ip.version == n.version and ip in n for n in self.whitelist)

    def is_allowed(self, ip: str | IPAddress) -> bool:
        """Whether connecting to ``ip`` is allowed. Accepts strings, with an IPv6 scope id."""
        if isinstance(ip, str):
            try:
                ip = ipaddress.ip_address(ip)
            except ValueError:
                raise ValueError(f"not an IP address: {ip!r}") from None
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
            ip = ipaddress.IPv6Address(ip.compressed.split("%", 1)[0])
        if self._blocked(ip):
            return False
        if isinstance(ip, ipaddress.IPv6Address):
            v4 = _embedded_ipv4(ip)
            if v4 is not None and self._blocked(v4):
                return False
        return True

    def filter(self, addresses: Iterable[str]) -> list[str]:
        """The allowed addresses, order kept."""
        return [a for a in addresses if self.is_allowed(a)]


class PolicyResolver(AbstractResolver):
    """An aiohttp resolver that drops addresses the policy refuses.

    Wraps another aiohttp resolver (by default aiohttp's threaded ``getaddrinfo`` one;
    ``federation.net.resolver.DnsResolver`` for dnspython with configured nameservers).
    Raises BlockedAddressError when addresses were found but all are refused, so the
    request fails with a clear reason and no connection is attempted.
    """

    def __init__(self, policy: IPRangePolicy, inner: AbstractResolver | None = None):
        if inner is None:
            from aiohttp.resolver import ThreadedResolver

            inner = ThreadedResolver()
        self.policy = policy
        self.inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        allowed = [r for r in results if self.policy.is_allowed(r["host"])]
        if results and not allowed:
            raise BlockedAddressError(host, [r["host"] for r in results])
        return allowed

    async def close(self) -> None:
        await self.inner.close()


def policy_socket_factory(
    policy: IPRangePolicy,
) -> Callable[[tuple[Any, ...]], socket.socket]:
    """A ``socket_factory`` for ``aiohttp.TCPConnector`` (aiohttp >= 3.12) that refuses to
    create a socket towards a blocked address: the last check, at connect time, also for
    URLs with a literal IP, which aiohttp does not send through the resolver."""

    def factory(addr_info: tuple[Any, ...]) -> socket.socket:
        family, type_, proto, _canonname, sockaddr = addr_info
        if not policy.is_allowed(sockaddr[0]):
            raise BlockedAddressError(str(sockaddr[0]), [str(sockaddr[0])])
        return socket.socket(family=family, type=type_, proto=proto)

    return factory

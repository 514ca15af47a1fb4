"""Outbound IP range policy: Synapse's default blacklist, whitelist exceptions, IPv6 forms
of IPv4 addresses, and the aiohttp resolver / socket factory that apply it."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from federation.net.ip_ranges import (
    DEFAULT_IP_RANGE_BLACKLIST,
    BlockedAddressError,
    IPRangePolicy,
    PolicyResolver,
    policy_socket_factory,
)

DEFAULT = IPRangePolicy()


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1", "127.255.255.254", "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.255",
        "192.168.1.1", "100.64.0.1", "100.127.255.255", "192.0.0.8", "169.254.169.254", "192.88.99.1",
        "198.18.0.1", "198.19.255.255", "192.0.2.1", "198.51.100.7", "203.0.113.9", "224.0.0.1",
        "239.255.255.250", "0.0.0.0", "0.1.2.3", "240.0.0.1", "255.255.255.255",
        "::1", "::", "fe80::1", "febf::1", "fc00::1", "fd12:3456::1", "2001:db8::1", "ff02::1", "fec0::1",
        # IPv6 forms of blocked IPv4 addresses
        "::ffff:10.0.0.1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a00:1",
        "64:ff9b::192.168.1.1", "2002:a00:1::1", "2002:7f00:1::", "::127.0.0.1", "::10.0.0.1",
    ],
)
def test_default_blacklist_blocks(ip):
    assert DEFAULT.is_allowed(ip) is False
    assert DEFAULT.is_allowed(ipaddress.ip_address(ip)) is False


@pytest.mark.parametrize(
    "ip",
    ["8.8.8.8", "1.1.1.1", "172.15.255.255", "172.32.0.1", "100.63.255.255", "100.128.0.1",
     "198.17.255.255", "198.20.0.1", "11.0.0.1", "223.255.255.255",
     "2001:4860:4860::8888", "2a00:1450:4001::1", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"],
)
def test_default_blacklist_allows_public_addresses(ip):
    assert DEFAULT.is_allowed(ip) is True


def test_whitelist_makes_exceptions():
    policy = IPRangePolicy(whitelist=["127.0.0.1/32", "fd00::/8"])
    assert policy.is_allowed("127.0.0.1")
    assert not policy.is_allowed("127.0.0.2")
    assert policy.is_allowed("fd00::5")
    assert not policy.is_allowed("fc00::5")
    # The mapped form of a whitelisted IPv4 address is allowed too.
    assert policy.is_allowed("::ffff:127.0.0.1")
    assert not policy.is_allowed("::ffff:127.0.0.2")


def test_unspecified_addresses_are_always_blocked():
    open_policy = IPRangePolicy(blacklist=[], whitelist=["0.0.0.0/0", "::/0"])
    assert open_policy.is_allowed("10.0.0.1")
    assert not open_policy.is_allowed("0.0.0.0")
    assert not open_policy.is_allowed("::")
    assert not open_policy.is_allowed("::ffff:0.0.0.0")


def test_custom_blacklist_and_network_objects():
    policy = IPRangePolicy(blacklist=[ipaddress.ip_network("8.8.8.0/24"), "2001:4860::/32"])
    assert not policy.is_allowed("8.8.8.8")
    assert not policy.is_allowed("::ffff:8.8.8.8")
    assert not policy.is_allowed("2001:4860:4860::8888")
    assert policy.is_allowed("10.0.0.1")  # not in this custom list


def test_scope_id_is_ignored_for_matching():
    assert not DEFAULT.is_allowed("fe80::1%eth0")


def test_invalid_input_raises():
    with pytest.raises(ValueError, match="not an IP address"):
        DEFAULT.is_allowed("example.org")
    with pytest.raises(ValueError, match="not an IP range"):
        IPRangePolicy(blacklist=["10.0.0.0/33"])


def test_filter_keeps_order():
    assert DEFAULT.filter(["10.0.0.1", "8.8.8.8", "::1", "1.1.1.1"]) == ["8.8.8.8", "1.1.1.1"]


def test_config_default_is_this_list():
    import ipaddress

    from gateway.config import parse_config

    config = parse_config({"server_name": "example.com"})
    expected = {ipaddress.ip_network(n) for n in DEFAULT_IP_RANGE_BLACKLIST}
    assert set(config.federation.ip_range_blacklist) == expected
    assert set(config.federation.federation_ip_range_blacklist) == expected


class _FixedResolver:
    """An aiohttp-style resolver returning fixed addresses."""

    def __init__(self, addresses):
        self.addresses = addresses
        self.closed = False

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": a, "port": port, "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                 "proto": 0, "flags": 0} for a in self.addresses]

    async def close(self):
        self.closed = True


async def test_policy_resolver_filters_addresses():
    resolver = PolicyResolver(DEFAULT, _FixedResolver(["10.0.0.1", "8.8.8.8", "::ffff:192.168.0.1"]))
    results = await resolver.resolve("mixed.example", 8448)
    assert [r["host"] for r in results] == ["8.8.8.8"]
    assert results[0]["port"] == 8448


async def test_policy_resolver_refuses_when_everything_is_blocked():
    inner = _FixedResolver(["10.0.0.1", "192.168.1.1"])
    resolver = PolicyResolver(DEFAULT, inner)
    with pytest.raises(BlockedAddressError) as info:
        await resolver.resolve("internal.example", 443)
    assert isinstance(info.value, OSError)
    assert info.value.host == "internal.example"
    assert info.value.addresses == ("10.0.0.1", "192.168.1.1")
    assert "internal.example" in str(info.value) and "10.0.0.1" in str(info.value)
    await resolver.close()
    assert inner.closed


async def test_policy_resolver_passes_empty_answers_through():
    assert await PolicyResolver(DEFAULT, _FixedResolver([])).resolve("nothing.example") == []


def test_socket_factory_refuses_blocked_addresses():
    factory = policy_socket_factory(IPRangePolicy(whitelist=["127.0.0.1/32"]))
    with pytest.raises(BlockedAddressError, match="10.0.0.1"):
        factory((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("10.0.0.1", 443)))
    with pytest.raises(BlockedAddressError):
        factory((socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("::1", 443, 0, 0)))
    sock = factory((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 443)))
    try:
        assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
    finally:
        sock.close()

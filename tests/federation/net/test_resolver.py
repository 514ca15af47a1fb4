"""ServerResolver against real things on loopback: dnsmasq for DNS (A, AAAA, SRV) and
aiohttp HTTPS servers with certificates from a test CA for the well-known."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest
from aiohttp import web

from federation.net.ip_ranges import BlockedAddressError, IPRangePolicy
from federation.net.resolver import (
    DnsLookupError,
    DnsResolver,
    ResolutionError,
    ResolvedServer,
    ServerResolver,
    create_connector,
    parse_nameserver,
)
from federation.server_discovery import (
    WELL_KNOWN_DEFAULT_CACHE_SECONDS,
    WELL_KNOWN_FAILURE_CACHE_SECONDS,
    WELL_KNOWN_MAX_REDIRECTS,
    InvalidServerName,
    ServiceUnavailable,
)

from .conftest import server_ssl_context

WK = "/.well-known/matrix/server"

#: Names whose well-known is served by the test HTTPS server (all resolve to 127.0.0.1).
FRONT_NAMES = [
    "wkport.test", "wksrv.test", "legacy.test", "both.test", "plain.test", "dot.test", "multi.test",
    "cache.test", "badjson.test", "redirect.test", "big.test", "to-internal.test", "srv-internal.test",
    "to-literal.test", "delegated.test", "srvdeleg.test", "e2e.test", "mixed.test", "nodeleg.test",
]

DNS_RECORDS = [
    *(f"--host-record={name},127.0.0.1" for name in FRONT_NAMES),
    "--host-record=hostport.test,127.0.0.1,::1",
    "--host-record=target.test,127.0.0.2",
    "--host-record=t1.test,127.0.0.11",
    "--host-record=t2.test,127.0.0.12",
    "--host-record=t3.test,127.0.0.13",
    "--host-record=internal.test,192.168.1.1",
    "--host-record=ssrf-wk.test,10.0.0.1",
    "--host-record=mixed.test,10.0.0.1",
    "--host-record=rebind.test,127.0.0.2",
    "--srv-host=_matrix-fed._tcp.srvdeleg.test,target.test,7001",
    "--srv-host=_matrix._tcp.legacy.test,target.test,7002",
    "--srv-host=_matrix-fed._tcp.both.test,target.test,7003",
    "--srv-host=_matrix._tcp.both.test,target.test,7004",
    "--srv-host=_matrix-fed._tcp.dot.test",
    "--srv-host=_matrix._tcp.dot.test,target.test,7005",
    "--srv-host=_matrix-fed._tcp.multi.test,t1.test,8001,10,0",
    "--srv-host=_matrix-fed._tcp.multi.test,t2.test,8002,10,100",
    "--srv-host=_matrix-fed._tcp.multi.test,t3.test,8003,5,0",
    "--srv-host=_matrix-fed._tcp.multi.test,missing.test,8004,20,0",
    "--srv-host=_matrix-fed._tcp.srv-internal.test,internal.test,8448",
]

#: Loopback only for the addresses a test wants to reach; 10/8, 192.168/16... stay blocked.
LOOPBACK_POLICY = IPRangePolicy(whitelist=["127.0.0.0/8", "::1/128"])
STRICT_POLICY = IPRangePolicy(whitelist=["127.0.0.1/32"])


class Clock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def dns_server(dnsmasq_factory):
    return dnsmasq_factory(*DNS_RECORDS)


@pytest.fixture
async def wk_server(https_factory, test_ca):
    """The HTTPS server answering every front name's well-known (404 unless routed)."""
    return await https_factory(server_ssl_context(test_ca, *FRONT_NAMES))


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
async def make_resolver(dns_server, wk_server, client_ssl_context, clock):
    resolvers: list[ServerResolver] = []

    def make(policy: IPRangePolicy | None = LOOPBACK_POLICY, **kwargs) -> ServerResolver:
        kwargs.setdefault("well_known_port", wk_server.port)
        kwargs.setdefault("ssl_context", client_ssl_context)
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("well_known_timeout", 5.0)
        resolver = ServerResolver(nameservers=[dns_server.nameserver], ip_policy=policy, **kwargs)
        resolvers.append(resolver)
        return resolver

    yield make
    for resolver in resolvers:
        await resolver.close()


@pytest.fixture
def resolver(make_resolver):
    return make_resolver()


# -- step 1: IP literals ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name, candidate, host, tls, sni",
    [
        ("1.2.3.4", ("1.2.3.4", 8448), "1.2.3.4", "1.2.3.4", None),
        ("1.2.3.4:1234", ("1.2.3.4", 1234), "1.2.3.4:1234", "1.2.3.4", None),
        ("[2001:4860::1]", ("2001:4860::1", 8448), "[2001:4860::1]", "2001:4860::1", None),
        ("[2001:4860::1]:8000", ("2001:4860::1", 8000), "[2001:4860::1]:8000", "2001:4860::1", None),
    ],
)
async def test_ip_literal_is_used_directly(resolver, wk_server, name, candidate, host, tls, sni):
    resolved = await resolver.resolve(name)
    assert resolved.candidates == (candidate,)
    assert (resolved.host_header, resolved.tls_server_name, resolved.sni) == (host, tls, sni)
    assert resolved.delegated_name == name
    assert wk_server.requests == []  # no well-known for IP literals


async def test_ipv6_literal_url_has_brackets(resolver):
    resolved = await resolver.resolve("[2001:4860::1]:8000")
    assert resolved.url("/x") == "https://[2001:4860::1]:8000/x"


async def test_invalid_server_name_is_refused(resolver):
    with pytest.raises(InvalidServerName):
        await resolver.resolve("not a name")


# -- step 2: hostname with explicit port ------------------------------------------------


async def test_hostname_with_port_uses_a_and_aaaa(resolver, wk_server):
    resolved = await resolver.resolve("hostport.test:8888")
    assert set(resolved.candidates) == {("::1", 8888), ("127.0.0.1", 8888)}
    assert resolved.candidates[0] == ("::1", 8888)  # IPv6 first, interleaved
    assert resolved.host_header == "hostport.test:8888"
    assert resolved.tls_server_name == resolved.sni == "hostport.test"
    assert wk_server.requests == []


async def test_hostname_with_port_without_records_fails(resolver):
    with pytest.raises(DnsLookupError, match="nxdomain.test"):
        await resolver.resolve("nxdomain.test:8448")


# -- step 3: well-known delegation ------------------------------------------------------


async def test_well_known_with_port(resolver, wk_server):
    wk_server.json("wkport.test", WK, {"m.server": "delegated.test:9999"})
    resolved = await resolver.resolve("wkport.test")
    assert resolved.candidates == (("127.0.0.1", 9999),)
    assert resolved.host_header == "delegated.test:9999"
    assert resolved.tls_server_name == "delegated.test"
    assert resolved.delegated_name == "delegated.test:9999"
    assert resolved.server_name == "wkport.test"
    # The delegated name gets no second well-known lookup.
    assert wk_server.requests == [("wkport.test", WK)]


async def test_well_known_without_port_then_srv(resolver, wk_server):
    wk_server.json("wksrv.test", WK, {"m.server": "srvdeleg.test"})
    wk_server.json("srvdeleg.test", WK, {"m.server": "must-not-be-used.test"})
    resolved = await resolver.resolve("wksrv.test")
    assert resolved.candidates == (("127.0.0.2", 7001),)
    # Host and certificate name are the delegated name, never the SRV target.
    assert resolved.host_header == "srvdeleg.test"
    assert resolved.tls_server_name == "srvdeleg.test"
    assert wk_server.hits("srvdeleg.test") == 0


async def test_well_known_to_ip_literal(resolver, wk_server):
    wk_server.json("to-literal.test", WK, {"m.server": "[2001:4860::5]:8443"})
    resolved = await resolver.resolve("to-literal.test")
    assert resolved.candidates == (("2001:4860::5", 8443),)
    assert resolved.host_header == "[2001:4860::5]:8443"
    assert resolved.tls_server_name == "2001:4860::5" and resolved.sni is None


async def test_well_known_without_port_or_srv_uses_8448(resolver, wk_server):
    wk_server.json("nodeleg.test", WK, {"m.server": "plain.test"})
    resolved = await resolver.resolve("nodeleg.test")
    assert resolved.candidates == (("127.0.0.1", 8448),)
    assert resolved.host_header == "plain.test"


# -- steps 4-6: SRV and the 8448 fallback -----------------------------------------------


async def test_legacy_srv_when_no_matrix_fed(resolver, wk_server):
    resolved = await resolver.resolve("legacy.test")
    assert wk_server.requests == [("legacy.test", WK)]  # tried, 404
    assert resolved.candidates == (("127.0.0.2", 7002),)
    assert resolved.host_header == resolved.tls_server_name == "legacy.test"


async def test_matrix_fed_srv_wins_over_legacy(resolver):
    resolved = await resolver.resolve("both.test")
    assert resolved.candidates == (("127.0.0.2", 7003),)
    assert resolved.host_header == "both.test"


async def test_no_srv_falls_back_to_a_records_on_8448(resolver):
    resolved = await resolver.resolve("plain.test")
    assert resolved.candidates == (("127.0.0.1", 8448),)
    assert resolved.host_header == resolved.tls_server_name == "plain.test"


async def test_srv_dot_target_means_no_service(resolver):
    # The "." answer for _matrix-fed ends the search: the legacy record is not used.
    with pytest.raises(ServiceUnavailable):
        await resolver.resolve("dot.test")


async def test_srv_priority_and_weight_order(make_resolver):
    # t3 has the lowest priority; t1 (weight 0) and t2 (weight 100) share priority 10; the
    # target without address is skipped. random() = 0.0 picks the zero-weight record first.
    first = await make_resolver(random=lambda: 0.0).resolve("multi.test")
    assert first.candidates == (("127.0.0.13", 8003), ("127.0.0.11", 8001), ("127.0.0.12", 8002))
    # random() = 0.5 -> pick 50 of 0..100: t2 first in its priority.
    second = await make_resolver(random=lambda: 0.5).resolve("multi.test")
    assert second.candidates == (("127.0.0.13", 8003), ("127.0.0.12", 8002), ("127.0.0.11", 8001))
    assert second.host_header == "multi.test"


async def test_unknown_name_fails_with_dns_error(resolver):
    with pytest.raises(DnsLookupError):
        await resolver.resolve("nxdomain.test")


# -- well-known validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    "body, status",
    [
        (b"this is not json", 200),
        (b"[\"m.server\"]", 200),
        (b"{}", 200),
        (b'{"m.server": 8448}', 200),
        (b'{"m.server": "bad name!"}', 200),
        (b'{"m.server": "delegated.test:1"}', 404),
        (b'{"m.server": "delegated.test:1"}', 500),
    ],
)
async def test_invalid_well_known_is_treated_as_absent(resolver, wk_server, body, status):
    wk_server.raw("badjson.test", WK, body, status=status, headers={"Content-Type": "application/json"})
    resolved = await resolver.resolve("badjson.test")
    assert resolved.candidates == (("127.0.0.1", 8448),)
    assert resolved.host_header == "badjson.test"
    assert wk_server.hits("badjson.test") == 1
    entry = resolver.cached_well_known("badjson.test")
    assert entry is not None and entry.delegated is None


async def test_well_known_json_is_parsed_whatever_the_content_type(resolver, wk_server):
    wk_server.raw("badjson.test", WK, b'{"m.server": "delegated.test:4443"}', headers={"Content-Type": "text/plain"})
    assert (await resolver.resolve("badjson.test")).host_header == "delegated.test:4443"


def _redirect_chain(server, host: str, length: int, final: dict | None) -> None:
    for i in range(length):
        target = f"/hop{i + 1}" if i + 1 < length or final is not None else "/never"

        async def handler(_request, target=target):
            raise web.HTTPFound(target)

        server.route(host, WK if i == 0 else f"/hop{i}", handler)
    if final is not None:
        server.json(host, f"/hop{length}", final)


async def test_redirects_are_followed_up_to_the_limit(resolver, wk_server):
    _redirect_chain(wk_server, "redirect.test", WELL_KNOWN_MAX_REDIRECTS, {"m.server": "delegated.test:4000"})
    resolved = await resolver.resolve("redirect.test")
    assert resolved.host_header == "delegated.test:4000"
    assert wk_server.hits("redirect.test") == WELL_KNOWN_MAX_REDIRECTS + 1


async def test_too_many_redirects_means_no_well_known(resolver, wk_server):
    _redirect_chain(wk_server, "redirect.test", WELL_KNOWN_MAX_REDIRECTS + 1, {"m.server": "delegated.test:4000"})
    resolved = await resolver.resolve("redirect.test")
    assert resolved.host_header == "redirect.test"
    assert wk_server.hits("redirect.test") == WELL_KNOWN_MAX_REDIRECTS + 1
    assert ("redirect.test", f"/hop{WELL_KNOWN_MAX_REDIRECTS + 1}") not in wk_server.requests


async def test_redirect_loop_is_detected(resolver, wk_server):
    async def to_b(_request):
        raise web.HTTPFound("/b")

    async def to_wk(_request):
        raise web.HTTPMovedPermanently(WK)

    wk_server.route("redirect.test", WK, to_b)
    wk_server.route("redirect.test", "/b", to_wk)
    resolved = await resolver.resolve("redirect.test")
    assert resolved.host_header == "redirect.test"
    assert wk_server.hits("redirect.test") == 2


async def test_redirect_to_another_host_is_followed(resolver, wk_server):
    async def away(_request):
        raise web.HTTPTemporaryRedirect(f"https://e2e.test:{wk_server.port}/elsewhere")

    wk_server.route("redirect.test", WK, away)
    wk_server.json("e2e.test", "/elsewhere", {"m.server": "delegated.test:4001"})
    assert (await resolver.resolve("redirect.test")).host_header == "delegated.test:4001"


async def test_redirect_to_plain_http_is_refused(resolver, wk_server):
    async def insecure(_request):
        raise web.HTTPFound(f"http://e2e.test:{wk_server.port}/elsewhere")

    wk_server.route("redirect.test", WK, insecure)
    resolved = await resolver.resolve("redirect.test")
    assert resolved.host_header == "redirect.test"
    assert wk_server.hits("e2e.test") == 0


async def test_redirect_to_unparseable_location_is_refused(resolver, wk_server):
    async def broken(_request):
        return web.Response(status=302, headers={"Location": "https://[not-an-ip/x"})

    wk_server.route("redirect.test", WK, broken)
    assert (await resolver.resolve("redirect.test")).host_header == "redirect.test"
    assert resolver.cached_well_known("redirect.test").delegated is None


async def test_oversized_well_known_is_refused(resolver, wk_server):
    body = json.dumps({"m.server": "delegated.test:4002", "pad": "x" * 60_000}).encode()
    wk_server.raw("big.test", WK, body)
    assert (await resolver.resolve("big.test")).host_header == "big.test"


async def test_oversized_chunked_well_known_is_refused(resolver, wk_server):
    async def endless(request):
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b'{"m.server": "delegated.test:4003", "pad": "')
        for _ in range(20):  # 20 x 8 KiB > 50 KiB
            await resp.write(b"x" * 8192)
        await resp.write(b'"}')
        await resp.write_eof()
        return resp

    wk_server.route("big.test", WK, endless)
    assert (await resolver.resolve("big.test")).host_header == "big.test"


# -- TLS ---------------------------------------------------------------------------------


async def test_well_known_certificate_must_match(make_resolver, https_factory, test_ca):
    wrong_name = await https_factory(server_ssl_context(test_ca, "someone-else.test"))
    wrong_name.json("plain.test", WK, {"m.server": "delegated.test:4004"})
    resolved = await make_resolver(well_known_port=wrong_name.port).resolve("plain.test")
    assert resolved.host_header == "plain.test"  # the well-known was not trusted
    assert wrong_name.requests == []


async def test_well_known_certificate_must_chain_to_a_trusted_ca(make_resolver, https_factory, tmp_path):
    from tests.support.tls import TestCA

    untrusted = await https_factory(server_ssl_context(TestCA(tmp_path / "other-ca"), *FRONT_NAMES))
    untrusted.json("plain.test", WK, {"m.server": "delegated.test:4005"})
    resolved = await make_resolver(well_known_port=untrusted.port).resolve("plain.test")
    assert resolved.host_header == "plain.test"
    assert untrusted.requests == []


async def test_resolved_server_connects_with_host_header_and_sni(resolver, wk_server, client_ssl_context):
    """End to end: connect to the candidate IP with the delegated name as Host and SNI."""
    wk_server.json("e2e.test", WK, {"m.server": f"delegated.test:{wk_server.port}"})

    async def version(request):
        return web.json_response({"host": request.host, "server": {"name": "test"}})

    wk_server.route("delegated.test", "/_matrix/federation/v1/version", version)
    resolved = await resolver.resolve("e2e.test")
    assert resolved.candidates == (("127.0.0.1", wk_server.port),)
    connector = create_connector(policy=LOOPBACK_POLICY, ssl_context=client_ssl_context)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(
            resolved.url("/_matrix/federation/v1/version"),
            headers={"Host": resolved.host_header},
            server_hostname=resolved.sni,
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["host"] == f"delegated.test:{wk_server.port}"


# -- cache -------------------------------------------------------------------------------


async def test_well_known_cached_per_max_age_and_refreshed_before_expiry(resolver, wk_server, clock):
    wk_server.json("cache.test", WK, {"m.server": "delegated.test:5000"}, headers={"Cache-Control": "max-age=600"})
    assert (await resolver.resolve("cache.test")).host_header == "delegated.test:5000"
    clock.now += 400
    await resolver.resolve("cache.test")
    assert wk_server.hits("cache.test") == 1
    clock.now += 100  # 500 s: past the refresh point (80 % of 600), before expiry
    await resolver.resolve("cache.test")
    assert wk_server.hits("cache.test") == 2


async def test_well_known_cache_lifetime_has_a_minimum(resolver, wk_server, clock):
    wk_server.json("cache.test", WK, {"m.server": "delegated.test:5000"}, headers={"Cache-Control": "max-age=1"})
    await resolver.resolve("cache.test")
    clock.now += 200  # below 80 % of the 5 minute minimum
    await resolver.resolve("cache.test")
    assert wk_server.hits("cache.test") == 1


async def test_well_known_cache_default_and_expires(resolver, wk_server, clock):
    wk_server.json("cache.test", WK, {"m.server": "delegated.test:5000"})
    await resolver.resolve("cache.test")
    entry = resolver.cached_well_known("cache.test")
    assert entry.expires_at - entry.fetched_at == WELL_KNOWN_DEFAULT_CACHE_SECONDS
    clock.now = entry.refresh_at - 1
    await resolver.resolve("cache.test")
    assert wk_server.hits("cache.test") == 1


async def test_failures_are_cached_for_an_hour(resolver, wk_server, clock):
    await resolver.resolve("cache.test")  # 404
    wk_server.json("cache.test", WK, {"m.server": "delegated.test:5000"})
    clock.now += WELL_KNOWN_FAILURE_CACHE_SECONDS - 1
    assert (await resolver.resolve("cache.test")).host_header == "cache.test"
    assert wk_server.hits("cache.test") == 1
    clock.now += 2
    assert (await resolver.resolve("cache.test")).host_header == "delegated.test:5000"
    assert wk_server.hits("cache.test") == 2


async def test_stale_entry_served_when_refresh_fails(resolver, wk_server, clock):
    wk_server.json("cache.test", WK, {"m.server": "delegated.test:5000"}, headers={"Cache-Control": "max-age=600"})
    await resolver.resolve("cache.test")
    wk_server.raw("cache.test", WK, b"upstream down", status=503)
    clock.now += 700  # expired, refresh fails transiently: keep the old answer
    assert (await resolver.resolve("cache.test")).host_header == "delegated.test:5000"
    assert wk_server.hits("cache.test") == 2
    clock.now += 60  # within the 2 minute retry delay
    await resolver.resolve("cache.test")
    assert wk_server.hits("cache.test") == 2
    clock.now += 61
    assert (await resolver.resolve("cache.test")).host_header == "delegated.test:5000"
    assert wk_server.hits("cache.test") == 3
    # A definitive answer (404) ends the delegation.
    wk_server.raw("cache.test", WK, b"gone", status=404)
    clock.now += 241
    assert (await resolver.resolve("cache.test")).host_header == "cache.test"
    assert wk_server.hits("cache.test") == 4


async def test_concurrent_resolves_share_one_fetch(resolver, wk_server):
    async def slow(_request):
        await asyncio.sleep(0.05)
        return web.json_response({"m.server": "delegated.test:5001"})

    wk_server.route("cache.test", WK, slow)
    results = await asyncio.gather(*(resolver.resolve("cache.test") for _ in range(5)))
    assert {r.host_header for r in results} == {"delegated.test:5001"}
    assert wk_server.hits("cache.test") == 1


async def test_cache_is_bounded(make_resolver, wk_server):
    resolver = make_resolver(max_cache_entries=2)
    for name in ("plain.test", "cache.test", "big.test"):
        await resolver.resolve(name)
    assert resolver.cached_well_known("plain.test") is None
    assert resolver.cached_well_known("big.test") is not None


# -- outbound safety ---------------------------------------------------------------------


async def test_well_known_host_in_blocked_range_is_not_fetched(make_resolver):
    resolver = make_resolver(STRICT_POLICY)
    # ssrf-wk.test is 10.0.0.1: the well-known fetch is refused before connecting (it would
    # time out otherwise), and so is the 8448 fallback.
    with pytest.raises(BlockedAddressError) as info:
        await asyncio.wait_for(resolver.resolve("ssrf-wk.test"), 3)
    assert info.value.addresses == ("10.0.0.1",)
    assert "ssrf-wk.test" in str(info.value)


async def test_well_known_pointing_to_blocked_range_is_refused(make_resolver, wk_server):
    wk_server.json("to-internal.test", WK, {"m.server": "internal.test:8448"})
    with pytest.raises(BlockedAddressError, match="192.168.1.1"):
        await make_resolver(STRICT_POLICY).resolve("to-internal.test")
    wk_server.json("to-literal.test", WK, {"m.server": "10.0.0.1:8448"})
    with pytest.raises(BlockedAddressError, match="10.0.0.1"):
        await make_resolver(STRICT_POLICY).resolve("to-literal.test")


async def test_srv_pointing_to_blocked_range_is_refused(make_resolver):
    with pytest.raises(BlockedAddressError, match="192.168.1.1"):
        await make_resolver(STRICT_POLICY).resolve("srv-internal.test")


async def test_blocked_addresses_are_dropped_from_candidates(make_resolver):
    resolved = await make_resolver(STRICT_POLICY).resolve("mixed.test:8448")
    assert resolved.candidates == (("127.0.0.1", 8448),)


async def test_ip_literal_in_blocked_range_is_refused(make_resolver):
    with pytest.raises(BlockedAddressError):
        await make_resolver(STRICT_POLICY).resolve("192.168.1.1:8448")
    with pytest.raises(BlockedAddressError):
        await make_resolver(IPRangePolicy()).resolve("[::1]")


async def test_blocked_well_known_host_gets_no_connection(make_resolver, counting_listener_factory):
    """rebind.test is 127.0.0.2, where a listener counts connections: it must see none."""
    listener = await counting_listener_factory("127.0.0.2")
    resolver = make_resolver(STRICT_POLICY, well_known_port=listener.port)
    with pytest.raises(BlockedAddressError):
        await resolver.resolve("rebind.test")
    assert listener.connections == 0
    # Control: with 127.0.0.2 allowed, the same fetch does reach the listener.
    allowing = make_resolver(IPRangePolicy(whitelist=["127.0.0.0/8"]), well_known_port=listener.port)
    resolved = await allowing.resolve("rebind.test")
    assert resolved.candidates == (("127.0.0.2", 8448),)
    assert listener.connections == 1


async def test_connector_blocks_literal_ips_and_resolved_names(dns_server, counting_listener_factory):
    listener = await counting_listener_factory("127.0.0.2")
    dns_resolver = DnsResolver([dns_server.nameserver])
    connector = create_connector(policy=STRICT_POLICY, dns_resolver=dns_resolver)
    async with aiohttp.ClientSession(connector=connector) as session:
        for url in (f"http://127.0.0.2:{listener.port}/", f"http://rebind.test:{listener.port}/",
                    "http://internal.test/", "https://10.0.0.1/"):
            with pytest.raises(aiohttp.ClientConnectorError) as info:
                await session.get(url)
            assert isinstance(info.value.os_error, BlockedAddressError), url
    assert listener.connections == 0


async def test_connector_resolves_names_as_the_os_does_under_the_policy(counting_listener_factory):
    """Without a DnsResolver, a URL's name goes through getaddrinfo, so /etc/hosts counts
    (``localhost``, which DNS does not answer); the addresses it gives are still checked."""
    listener = await counting_listener_factory("127.0.0.1")
    async with aiohttp.ClientSession(connector=create_connector(policy=IPRangePolicy())) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as info:  # loopback: in the default blacklist
            await session.get(f"http://localhost:{listener.port}/")
        assert isinstance(info.value.os_error, BlockedAddressError)
    assert listener.connections == 0
    async with aiohttp.ClientSession(connector=create_connector(policy=STRICT_POLICY)) as session:
        with pytest.raises(aiohttp.ClientError):  # reached: the listener hangs up (POST: not retried)
            await session.post(f"http://localhost:{listener.port}/")
    assert listener.connections == 1


# -- DNS ---------------------------------------------------------------------------------


async def test_dns_resolver_as_aiohttp_resolver(dns_server):
    dns_resolver = DnsResolver([f"127.0.0.1:{dns_server.port}"])
    both = await dns_resolver.resolve("hostport.test", 443, socket.AF_UNSPEC)
    assert [(r["host"], r["family"]) for r in both] == [("::1", socket.AF_INET6), ("127.0.0.1", socket.AF_INET)]
    assert all(r["port"] == 443 and r["hostname"] == "hostport.test" for r in both)
    v4 = await dns_resolver.resolve("hostport.test", 443, socket.AF_INET)
    assert [r["host"] for r in v4] == ["127.0.0.1"]
    v6 = await dns_resolver.resolve("hostport.test", 443, socket.AF_INET6)
    assert [r["host"] for r in v6] == ["::1"]
    assert [r["host"] for r in await dns_resolver.resolve("10.1.2.3")] == ["10.1.2.3"]
    with pytest.raises(DnsLookupError):
        await dns_resolver.resolve("nxdomain.test", 443, socket.AF_UNSPEC)
    with pytest.raises(DnsLookupError):  # the name exists, but has no AAAA
        await dns_resolver.resolve("plain.test", 443, socket.AF_INET6)


async def test_dns_resolver_srv_records(dns_server):
    dns_resolver = DnsResolver([dns_server.nameserver])
    records = await dns_resolver.lookup_srv("_matrix-fed._tcp.multi.test")
    assert {(r.priority, r.weight, r.port, r.target) for r in records} == {
        (10, 0, 8001, "t1.test"), (10, 100, 8002, "t2.test"), (5, 0, 8003, "t3.test"), (20, 0, 8004, "missing.test"),
    }
    assert await dns_resolver.lookup_srv("_matrix-fed._tcp.plain.test") == []
    dot = await dns_resolver.lookup_srv("_matrix-fed._tcp.dot.test")
    assert [r.target for r in dot] == ["."]


async def test_srv_targets_without_addresses_fail(make_resolver, dnsmasq_factory):
    # A separate DNS server where the only SRV target does not resolve.
    dns2 = dnsmasq_factory("--host-record=lonely.test,127.0.0.1",
                           "--srv-host=_matrix-fed._tcp.lonely.test,nowhere.test,8448")
    resolver = ServerResolver(nameservers=[dns2.nameserver], ip_policy=LOOPBACK_POLICY, well_known_port=1)
    try:
        with pytest.raises(ResolutionError, match="lonely.test"):
            await resolver.resolve("lonely.test")
    finally:
        await resolver.close()


async def test_unreachable_dns_server_is_a_lookup_error(counting_listener_factory):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # a UDP port nobody answers on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        dns_resolver = DnsResolver([("127.0.0.1", port)], timeout=0.3)
        with pytest.raises(DnsLookupError, match="timed out"):
            await dns_resolver.lookup_addresses("plain.test")


@pytest.mark.parametrize(
    "value, expected",
    [("127.0.0.1:5353", ("127.0.0.1", 5353)), ("10.0.0.1", ("10.0.0.1", 53)), ("[::1]:5300", ("::1", 5300)),
     ("[::1]", ("::1", 53)), ("::1", ("::1", 53)), (("1.1.1.1", 53), ("1.1.1.1", 53))],
)
def test_parse_nameserver(value, expected):
    assert parse_nameserver(value) == expected


def test_parse_nameserver_rejects_names():
    with pytest.raises(ValueError):
        parse_nameserver("dns.example:53")


def test_resolved_server_sni_and_url():
    resolved = ResolvedServer("a.test", "b.test:1", (("10.0.0.1", 1), ("::1", 2)), "b.test:1", "b.test")
    assert resolved.sni == "b.test"
    assert resolved.url("/p") == "https://10.0.0.1:1/p"
    assert resolved.url("/p", ("::1", 2)) == "https://[::1]:2/p"


async def test_names_no_dns_can_hold_resolve_to_nothing():
    """A server name the grammar allows but DNS cannot hold (an empty or over-long label)
    has no records: resolving it fails like any unknown name, not with a DNS library error."""
    dns_resolver = DnsResolver([("127.0.0.1", 9)], timeout=0.5)
    for name in ("..", "a..b", "x" * 64 + ".test", ("y" * 60 + ".") * 5 + "test"):
        assert await dns_resolver.lookup_srv(f"_matrix-fed._tcp.{name}") == []
        with pytest.raises(DnsLookupError):
            await dns_resolver.lookup_addresses(name)

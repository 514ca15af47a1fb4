"""The tester asks every address of a name: a real DNS server (dnsmasq with a hosts file)
gives a name three loopback addresses (127.0.0.1-3), each serving its own
``.well-known`` (one never answers); and a ``.well-known`` that times out while SRV works."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from aiohttp import web

from federation.net.ip_ranges import IPRangePolicy
from federation.net.resolver import ServerResolver
from federation.net.tester import FederationTester
from federation.net.tester_tls import TesterTimeouts as Timeouts
from tests.conftest import free_port
from tests.support.fake_remote import signed_keys_handler
from tests.federation.net.conftest import start_dnsmasq, stop_dnsmasq
from tests.support.tls import TestCA

LOOPBACK = IPRangePolicy(whitelist=["127.0.0.0/8"])
FAST = Timeouts(connect=1.0, handshake=1.0, request=2.0)


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


def _tls(ca: TestCA, *names: str) -> ssl.SSLContext:
    cert = ca.issue(*names, filename="addr-" + "-".join(names))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert.cert_path), str(cert.key_path))
    return ctx


class Servers:
    """Servers started by one test, stopped at its end."""

    def __init__(self):
        self.runners: list[web.AppRunner] = []
        self.listeners: list[asyncio.base_events.Server] = []

    async def https(self, ctx: ssl.SSLContext, host: str, port: int, routes: dict) -> None:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_get(path, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self.runners.append(runner)
        await web.TCPSite(runner, host, port, ssl_context=ctx).start()

    async def silent(self, host: str, port: int) -> None:
        """Accepts connections and never answers."""
        self.listeners.append(await asyncio.start_server(lambda r, w: None, host, port))

    async def close(self) -> None:
        for listener in self.listeners:
            listener.close()
        for runner in self.runners:
            await runner.cleanup()


def _json(body: dict):
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(body, headers={"Cache-Control": "max-age=86400"})
    return handler


async def _run(ca: TestCA, server_name: str, dns) -> dict:
    ctx = ssl.create_default_context(cafile=str(ca.ca_path))
    async with ServerResolver(nameservers=[dns.nameserver], ip_policy=LOOPBACK, ssl_context=ctx,
                              well_known_port=_run.well_known_port, well_known_timeout=2.0) as resolver:
        return await FederationTester(resolver=resolver, ssl_context=ctx, ip_policy=LOOPBACK, timeouts=FAST).run(
            server_name)


async def test_every_address_answers_for_itself(ca, tmp_path):
    port, fed_port = free_port(), free_port()
    servers = Servers()
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 multi.test\n127.0.0.2 multi.test\n127.0.0.3 multi.test\n127.0.0.1 fed.test\n")
    dns = start_dnsmasq(f"--addn-hosts={hosts}")
    try:
        await servers.https(_tls(ca, "multi.test"), "127.0.0.1", port,
                            {"/.well-known/matrix/server": _json({"m.server": f"fed.test:{fed_port}"})})
        await servers.https(_tls(ca, "multi.test"), "127.0.0.2", port,
                            {"/.well-known/matrix/server": _json({"m.server": "elsewhere.test:443"})})
        await servers.silent("127.0.0.3", port)
        await servers.https(_tls(ca, "fed.test"), "127.0.0.1", fed_port,
                            {"/_matrix/key/v2/server": signed_keys_handler("multi.test")})
        _run.well_known_port = port
        report = await _run(ca, "multi.test", dns)
    finally:
        stop_dnsmasq(dns)
        await servers.close()
    per = report["WellKnownPerAddress"]
    assert set(per) == {f"127.0.0.{i}:{port}" for i in (1, 2, 3)}
    assert per[f"127.0.0.1:{port}"]["m.server"] == f"fed.test:{fed_port}" and per[f"127.0.0.1:{port}"]["Code"] == "ok"
    assert per[f"127.0.0.2:{port}"]["m.server"] == "elsewhere.test:443"
    silent = per[f"127.0.0.3:{port}"]
    # The listener accepts the TCP connection; the TLS handshake never completes.
    assert silent["Code"] == "timeout" and silent["Seconds"] >= FAST.connect and silent["m.server"] == ""
    assert silent["Error"] == "connecting (TCP and TLS) timed out after 1.0 s"
    main = report["WellKnownResult"]["m.server"]  # whichever address the resolver's fetch reached
    for entry in per.values():
        assert entry["Agrees"] == (entry["m.server"] == main if main else entry["Code"] == "timeout")
    (text,) = [t for t in report["Explanations"] if "answer /.well-known/matrix/server differently" in t]
    assert f"127.0.0.1:{port} delegate to fed.test:{fed_port}" in text
    assert f"127.0.0.3:{port} fail (connecting (TCP and TLS) timed out after 1.0 s)" in text


async def test_well_known_times_out_while_srv_works(ca, tmp_path):
    port, fed_port = free_port(), free_port()
    servers = Servers()
    dns = start_dnsmasq("--host-record=slow.test,127.0.0.1", "--host-record=fedhost.test,127.0.0.1",
                        f"--srv-host=_matrix-fed._tcp.slow.test,fedhost.test,{fed_port},10,5",
                        f"--srv-host=_matrix-fed._tcp.slow.test,ghost.test,{fed_port},20,5")
    try:
        await servers.silent("127.0.0.1", port)
        await servers.https(_tls(ca, "slow.test"), "127.0.0.1", fed_port,
                            {"/_matrix/key/v2/server": signed_keys_handler("slow.test")})
        _run.well_known_port = port
        report = await _run(ca, "slow.test", dns)
    finally:
        stop_dnsmasq(dns)
        await servers.close()
    assert report["WellKnownResult"]["error"]["Error"] == "timed out after 2.0s"
    assert report["WellKnownPerAddress"][f"127.0.0.1:{port}"]["Code"] == "timeout"
    assert report["FederationOK"] is True, report["Explanations"]
    assert any("timed out after 2.0s: other servers wait that long" in t and "which work here" in t
               for t in report["Explanations"]), report["Explanations"]
    hosts = report["DNSResult"]["Hosts"]
    assert hosts["fedhost.test"]["Addrs"] == ["127.0.0.1"] and hosts["fedhost.test"]["Error"] is None
    assert hosts["ghost.test"]["Error"]
    assert any("The SRV target ghost.test has no usable address" in t for t in report["Explanations"])
    assert list(report["ConnectionReports"]) == [f"127.0.0.1:{fed_port}"]


async def test_no_probe_reaches_a_blocked_range(ca, tmp_path):
    """The page must not become a scanner of private ranges: with only 127.0.0.1 allowed,
    nothing the tested server points at on 127.0.0.2 is ever connected to (an address of
    the name, a delegation, a client base URL, a redirect, the server name itself)."""
    policy = IPRangePolicy(whitelist=["127.0.0.1/32"])
    port, inner_port = free_port(), free_port()
    connections: list[int] = []

    async def count(reader, writer):
        connections.append(writer.get_extra_info("sockname")[1])
        writer.close()

    listeners = [await asyncio.start_server(count, "127.0.0.2", p) for p in (port, inner_port)]
    servers = Servers()
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 scan.test\n127.0.0.2 scan.test\n127.0.0.2 inner.test\n")
    dns = start_dnsmasq(f"--addn-hosts={hosts}")

    async def redirect(request):
        raise web.HTTPFound(f"http://inner.test:{inner_port}/support")

    try:
        await servers.https(_tls(ca, "scan.test"), "127.0.0.1", port, {
            "/.well-known/matrix/server": _json({"m.server": f"inner.test:{inner_port}"}),
            "/.well-known/matrix/client": _json({"m.homeserver": {"base_url": f"http://127.0.0.2:{inner_port}"}}),
            "/.well-known/matrix/support": redirect})
        ctx = ssl.create_default_context(cafile=str(ca.ca_path))
        async with ServerResolver(nameservers=[dns.nameserver], ip_policy=policy, ssl_context=ctx,
                                  well_known_port=port, well_known_timeout=2.0) as resolver:
            tester = FederationTester(resolver=resolver, ssl_context=ctx, ip_policy=policy, timeouts=FAST)
            report = await tester.run("scan.test")
            direct = await tester.run(f"127.0.0.2:{inner_port}")
    finally:
        stop_dnsmasq(dns)
        await servers.close()
        for listener in listeners:
            listener.close()
    assert connections == []
    assert report["WellKnownPerAddress"][f"127.0.0.2:{port}"]["Code"] == "blocked"
    assert report["WellKnownPerAddress"][f"127.0.0.1:{port}"]["m.server"] == f"inner.test:{inner_port}"
    assert "blocked IP range" in report["DNSResult"]["SRVError"]["Message"]
    assert report["ConnectionReports"] == {} and report["ConnectionErrors"] == {}
    assert "blocked IP range" in report["ClientWellKnown"]["Versions"]["Error"]
    assert "blocked IP range" in report["SupportWellKnown"]["Error"]
    assert "blocked IP range" in report["Login"]["Error"] and report["Login"]["legacy"] == []
    assert direct["ConnectionReports"] == {} and "blocked IP range" in direct["DNSResult"]["SRVError"]["Message"]

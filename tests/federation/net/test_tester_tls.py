"""The tester's TLS probe and diagnosis against servers broken on purpose, on loopback:
a missing intermediate, an unknown root, a wrong name, expired and not-yet-valid
certificates, SNI problems, plain HTTP on the TLS port, a port that drops packets, one
that accepts and never answers, one that refuses."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time

import pytest
from aiohttp import web

from federation.net.ip_ranges import IPRangePolicy
from federation.net.resolver import ServerResolver
from federation.net.tester import FederationTester
from federation.net.tester_tls import TesterTimeouts as Timeouts
from federation.net.tester_tls import TLSProber
from federation.tester_tls import diagnose_tls
from tests.conftest import free_port
from tests.support.tls import IssuedCert, TestCA

LOOPBACK = IPRangePolicy(whitelist=["127.0.0.0/8"])
FAST = Timeouts(connect=1.0, handshake=1.0, request=3.0)


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


def _context(cert: IssuedCert) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert.cert_path), str(cert.key_path))
    return ctx


async def _serve(ctx: ssl.SSLContext | None, app: web.Application | None = None) -> tuple[web.AppRunner, int]:
    app = app or web.Application()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    return runner, port


async def _probe(ca: TestCA, ctx: ssl.SSLContext | None, *, expected="127.0.0.1", sni=None) -> dict:
    runner, port = await _serve(ctx)
    try:
        prober = TLSProber(verify_context=ssl.create_default_context(cafile=str(ca.ca_path)), ip_policy=LOOPBACK,
                           timeouts=FAST)
        facts = await prober.probe("127.0.0.1", port, expected_name=expected, sni=sni)
    finally:
        await runner.cleanup()
    return diagnose_tls(facts, time.time()) | {"facts": facts}


async def test_valid_chain_through_an_intermediate(ca):
    inter = ca.intermediate("Test intermediate R1")
    result = await _probe(ca, _context(inter.issue("127.0.0.1", filename="full-chain")))
    assert result["Code"] == "ok", result
    assert [c["SubjectCommonName"] for c in result["facts"]["Chain"]] == [
        "127.0.0.1", "Test intermediate R1", "Gateway test CA"]
    assert "TLS works" in result["Words"]


async def test_missing_intermediate(ca):
    inter = ca.intermediate("Test intermediate R2")
    result = await _probe(ca, _context(inter.issue("127.0.0.1", filename="leaf-only", with_chain=False)))
    assert result["Code"] == "missing_intermediate", result
    assert "'Test intermediate R2'" in result["Words"] and "fullchain.pem" in result["Fix"]
    assert len(result["facts"]["Chain"]) == 1


async def test_unknown_root(ca, tmp_path):
    stranger = TestCA(tmp_path / "stranger", name="Somebody else's CA")
    result = await _probe(ca, _context(stranger.issue("127.0.0.1")))
    assert result["Code"] == "unknown_root", result
    assert "Somebody else's CA" in result["Words"]


async def test_name_mismatch_names_the_certificates_names(ca):
    result = await _probe(ca, _context(ca.issue("other.example.com", "www.other.example.com", filename="other")))
    assert result["Code"] == "name_mismatch", result
    assert "other.example.com, www.other.example.com" in result["Words"] and "not for 127.0.0.1" in result["Words"]
    assert "no SNI is sent" in result["Words"]  # an IP address: no SNI


async def test_expired_and_not_yet_valid(ca):
    expired = await _probe(ca, _context(ca.issue("127.0.0.1", valid_days=-2, not_before_days=30, filename="old")))
    assert expired["Code"] == "expired" and "expired on" in expired["Words"], expired
    assert expired["facts"]["VerifyCode"] == 10  # OpenSSL agrees
    future = await _probe(ca, _context(ca.issue("127.0.0.1", not_before_days=-3, valid_days=30, filename="new")))
    assert future["Code"] == "not_yet_valid" and "only valid from" in future["Words"], future


async def test_sni_rejected(ca):
    ctx = _context(ca.issue("sni.test", filename="sni-rejected"))
    ctx.sni_callback = lambda sock, name, _ctx: ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME if name else None
    result = await _probe(ca, ctx, expected="sni.test", sni="sni.test")
    assert result["Code"] == "sni_rejected", result
    assert "no site for sni.test" in result["Words"]


async def test_sni_picks_the_wrong_certificate(ca):
    default = _context(ca.issue("sni.test", filename="sni-default"))
    wrong = _context(ca.issue("stale.example.org", filename="sni-wrong"))

    def pick(sock, name, _ctx):
        if name:
            sock.context = wrong

    default.sni_callback = pick
    result = await _probe(ca, default, expected="sni.test", sni="sni.test")
    assert result["Code"] == "sni_wrong_certificate", result
    assert "stale.example.org" in result["Words"] and "without SNI" in result["Words"]


async def test_plain_http_on_the_tls_port(ca):
    result = await _probe(ca, None)
    assert result["Code"] == "plain_http", result
    assert "HTTP/1." in result["Words"]


async def test_dropping_accepting_refusing_and_blocked_ports(ca):
    prober = TLSProber(verify_context=ssl.create_default_context(), ip_policy=LOOPBACK, timeouts=FAST)
    # A full accept queue: the kernel drops further SYNs, as a filtering firewall does.
    dropping = socket.socket()
    dropping.bind(("127.0.0.1", 0))
    dropping.listen(0)
    filler = socket.create_connection(dropping.getsockname())
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    try:
        facts = await prober.probe("127.0.0.1", dropping.getsockname()[1], expected_name="127.0.0.1", sni=None)
        result = diagnose_tls(facts, time.time())
        assert result["Code"] == "connect_timeout" and "within 1.0 s" in result["Words"], result
        assert facts["Failure"]["Seconds"] >= 1.0
        facts = await prober.probe("127.0.0.1", silent.sockets[0].getsockname()[1], expected_name="127.0.0.1",
                                   sni=None)
        result = diagnose_tls(facts, time.time())
        assert result["Code"] == "handshake_timeout" and "never answers" in result["Words"], result
        facts = await prober.probe("127.0.0.1", free_port(), expected_name="127.0.0.1", sni=None)
        assert diagnose_tls(facts, time.time())["Code"] == "connection_refused"
        blocked = TLSProber(verify_context=ssl.create_default_context(), ip_policy=IPRangePolicy(), timeouts=FAST)
        facts = await blocked.probe("127.0.0.1", silent.sockets[0].getsockname()[1], expected_name="127.0.0.1",
                                    sni=None)
        assert diagnose_tls(facts, time.time())["Code"] == "blocked"
    finally:
        filler.close()
        dropping.close()
        silent.close()


async def test_report_carries_the_diagnosis(ca):
    """Through the whole tester: the diagnosis per address, the error with its duration,
    an explanation naming the problem."""
    dropping = socket.socket()
    dropping.bind(("127.0.0.1", 0))
    dropping.listen(0)
    filler = socket.create_connection(dropping.getsockname())
    inter = ca.intermediate("Test intermediate R3")
    runner, port = await _serve(_context(inter.issue("127.0.0.1", filename="report-leaf", with_chain=False)))
    try:
        ctx = ssl.create_default_context(cafile=str(ca.ca_path))
        async with ServerResolver(ip_policy=LOOPBACK, ssl_context=ctx) as resolver:
            tester = FederationTester(resolver=resolver, ssl_context=ctx, ip_policy=LOOPBACK, timeouts=FAST)
            filtered = await tester.run(f"127.0.0.1:{dropping.getsockname()[1]}")
            chainless = await tester.run(f"127.0.0.1:{port}")
    finally:
        filler.close()
        dropping.close()
        await runner.cleanup()
    (label, error), = filtered["ConnectionErrors"].items()
    assert error["Code"] == "connect_timeout" and error["Seconds"] >= 1.0
    assert filtered["TLSDiagnosis"][label]["Code"] == "connect_timeout"
    assert any("packets to this port are dropped" in t for t in filtered["Explanations"])
    assert chainless["TLSDiagnosis"][f"127.0.0.1:{port}"]["Code"] == "missing_intermediate"
    assert chainless["FederationOK"] is False
    assert any("without the intermediate certificate" in t for t in chainless["Explanations"])
    # The generic certificate sentence gives way to the diagnosis.
    assert not any("not valid for this server name (or not trusted)" in t for t in chainless["Explanations"])

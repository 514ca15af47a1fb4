"""The federation tester against real servers on loopback: ours, and deliberately broken
key servers (expired key, wrong signature, wrong server name, certificate for another name)."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time

import pytest
from aiohttp import web

from federation.net.ip_ranges import IPRangePolicy
from federation.net.resolver import ServerResolver
from federation.net.tester import FederationTester
from federation.signing import encode_verify_key, generate_signing_key, sign_json
from federation.tester_checks import check_server_keys
from tests.conftest import free_port
from tests.support.gateway_server import running_gateway
from tests.support.tls import TestCA, serve_tls

LOOPBACK = IPRangePolicy(whitelist=["127.0.0.0/8"])


@pytest.fixture
def ca(tmp_path):
    return TestCA(tmp_path / "ca")


async def run_tester(ca: TestCA, server_name: str, policy=LOOPBACK) -> dict:
    ctx = ssl.create_default_context(cafile=str(ca.ca_path))
    async with ServerResolver(ip_policy=policy, ssl_context=ctx) as resolver:
        return await FederationTester(resolver=resolver, ssl_context=ctx, ip_policy=policy).run(server_name)


async def test_our_server_passes(tmp_path, ca):
    async with running_gateway(tmp_path, ca) as gw:
        report = await run_tester(ca, gw.server_name)
    assert report["FederationOK"] is True, report["Explanations"]
    (addr, conn), = report["ConnectionReports"].items()
    assert addr == gw.server_name
    assert conn["Checks"]["AllChecksOK"] and conn["Cipher"]["Version"].startswith("TLS")
    assert conn["Certificates"][0]["IssuerCommonName"] == "Gateway test CA"
    assert report["Version"]["name"] == "Gateway"
    assert report["DNSResult"]["SRVSkipped"] is True
    assert report["Explanations"] == []


def _key_doc(server_name: str, *, valid_until: int | None = None, sign_as: str | None = None, tamper=False):
    key = generate_signing_key("t1")
    doc = {
        "server_name": server_name,
        "verify_keys": {key.key_id: {"key": encode_verify_key(key.verify_key)}},
        "old_verify_keys": {},
        "valid_until_ts": valid_until if valid_until is not None else int(time.time() * 1000) + 3_600_000,
    }
    signed = sign_json(doc, sign_as or server_name, key)
    if tamper:
        signed["valid_until_ts"] += 1
    return signed


async def _fake_key_server(ca: TestCA, cert_names: tuple[str, ...], make_doc) -> tuple[web.AppRunner, str]:
    port = free_port()
    server_name = f"127.0.0.1:{port}"

    async def keys(request):
        return web.json_response(make_doc(server_name))

    async def version(request):
        return web.json_response({"server": {"name": "Fake", "version": "1"}})

    app = web.Application()
    app.router.add_get("/_matrix/key/v2/server", keys)
    app.router.add_get("/_matrix/federation/v1/version", version)
    runner, _ = await serve_tls(app, ca, *cert_names, port=port)
    return runner, server_name


@pytest.mark.parametrize("make_doc, failed, explanation", [
    (lambda name: _key_doc(name, valid_until=1000), "FutureValidUntilTS", "valid_until_ts"),
    (lambda name: _key_doc(name, tamper=True), "AllEd25519ChecksOK", "not correctly signed"),
    (lambda name: _key_doc("matrix.example.com"), "MatchingServerName", "not '127.0.0.1"),
    (lambda name: {**_key_doc(name), "verify_keys": {}}, "HasEd25519Key", "no ed25519 key"),
])
async def test_broken_key_servers(ca, make_doc, failed, explanation):
    runner, server_name = await _fake_key_server(ca, ("127.0.0.1",), make_doc)
    try:
        report = await run_tester(ca, server_name)
    finally:
        await runner.cleanup()
    assert report["FederationOK"] is False
    (conn,) = report["ConnectionReports"].values()
    assert conn["Checks"][failed] is False
    assert conn["Checks"]["ValidCertificates"] is True
    assert any(explanation in text for text in report["Explanations"]), report["Explanations"]


async def test_certificate_for_another_name(ca):
    runner, server_name = await _fake_key_server(ca, ("other.example.com",), _key_doc)
    try:
        report = await run_tester(ca, server_name)
    finally:
        await runner.cleanup()
    (conn,) = report["ConnectionReports"].values()
    assert conn["Checks"]["ValidCertificates"] is False
    assert conn["Checks"]["MatchingServerName"] is True  # keys were still fetched and checked
    assert conn["Certificates"][0]["DNSNames"] == ["other.example.com"]
    assert report["FederationOK"] is False
    assert any("certificate" in text for text in report["Explanations"])


async def test_self_signed_certificate(tmp_path):
    trusted, other = TestCA(tmp_path / "trusted"), TestCA(tmp_path / "other")
    runner, server_name = await _fake_key_server(other, ("127.0.0.1",), _key_doc)
    try:
        report = await run_tester(trusted, server_name)
    finally:
        await runner.cleanup()
    (conn,) = report["ConnectionReports"].values()
    assert conn["Checks"]["ValidCertificates"] is False and conn["Errors"]


async def test_dead_port_and_blocked_range(ca):
    dead = f"127.0.0.1:{free_port()}"
    report = await run_tester(ca, dead)
    assert report["FederationOK"] is False
    assert list(report["ConnectionErrors"]) == [dead]
    # Without an explicit allowance, loopback is a blocked range: nothing is probed.
    report = await run_tester(ca, dead, policy=IPRangePolicy())
    assert report["FederationOK"] is False and report["ConnectionReports"] == {}
    assert report["DNSResult"]["SRVError"]


def test_check_server_keys_on_garbage():
    checks, keys, explanations = check_server_keys("not json", "a.example", 0, valid_certificates=True)
    assert checks["AllChecksOK"] is False and keys == {} and explanations


async def test_cli_json_and_text(tmp_path, ca):
    async with running_gateway(tmp_path, ca) as gw:
        args = [sys.executable, "-m", "gateway", "federation-test", gw.server_name, "--ca-file", str(ca.ca_path),
                "--allow-ip-range", "127.0.0.0/8", "--well-known-port", gw.server_name.rsplit(":", 1)[1]]
        proc = await asyncio.create_subprocess_exec(*args, "--json", stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        report = json.loads(out)
        assert report["FederationOK"] is True
        assert report["ClientWellKnown"]["OK"] is True and report["Outbound"]["CanReachUs"] is None
        assert report["TLSDiagnosis"][gw.server_name]["Code"] == "ok"
        proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert b"Federation: OK" in out and b"[x] ValidCertificates" in out
        assert b"  [ok] Federation: Other servers can reach" in out
        assert b"  [--] Reaching others: Not checked" in out
        assert b".well-known/matrix/client: ok, base URL http://127.0.0.1:" in out
        assert b"login: legacy m.login.password" in out
    dead = subprocess.run([sys.executable, "-m", "gateway", "federation-test", f"127.0.0.1:{free_port()}",
                           "--allow-ip-range", "127.0.0.0/8"], capture_output=True, text=True, timeout=60)
    assert dead.returncode == 2 and "FAILED" in dead.stdout and "Traceback" not in dead.stderr


async def test_bad_well_known_and_srv_to_dead_port(ca):
    """A broken .well-known is explained, SRV records are listed, an SRV pointing at a dead
    port is a connection error."""
    dead = free_port()
    report = await run_tester_with_dns(
        ca, "wk.test", lambda https: https.raw("wk.test", "/.well-known/matrix/server", b"{not json"),
        "--host-record=target.test,127.0.0.1", f"--srv-host=_matrix-fed._tcp.wk.test,target.test,{dead},10,5",
    )
    assert report["WellKnownResult"]["error"]
    assert any(".well-known/matrix/server is not usable" in t for t in report["Explanations"])
    assert report["DNSResult"]["SRVSkipped"] is False
    assert report["DNSResult"]["SRVRecords"] == [
        {"Service": "_matrix-fed._tcp", "Target": "target.test", "Port": dead, "Priority": 10, "Weight": 5}]
    assert list(report["ConnectionErrors"]) == [f"127.0.0.1:{dead}"]
    assert report["FederationOK"] is False


async def test_certificate_expiring_soon_is_reported(ca):
    port = free_port()
    cert = ca.issue("127.0.0.1", valid_days=3, filename=f"short-{port}")
    app = web.Application()

    async def keys(request):
        return web.json_response(_key_doc(f"127.0.0.1:{port}"))

    app.router.add_get("/_matrix/key/v2/server", keys)
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(cert.cert_path, cert.key_path)  # a short-lived certificate: not serve_tls's
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=sctx).start()
    try:
        report = await run_tester(ca, f"127.0.0.1:{port}")
    finally:
        await runner.cleanup()
    assert report["FederationOK"] is True  # a warning, not a failure
    assert any("expires in" in t for t in report["Explanations"])


async def test_clock_skew_is_reported(tmp_path, ca):
    async with running_gateway(tmp_path, ca) as gw:
        ctx = ssl.create_default_context(cafile=str(ca.ca_path))
        async with ServerResolver(ip_policy=LOOPBACK, ssl_context=ctx) as resolver:
            in_sync = await FederationTester(resolver=resolver, ssl_context=ctx, ip_policy=LOOPBACK).run(gw.server_name)
            # Pretend our own clock is ten minutes fast: the server then looks 600 s behind.
            fast = FederationTester(resolver=resolver, ssl_context=ctx, ip_policy=LOOPBACK,
                                    clock_ms=lambda: int(time.time() * 1000) + 600_000)
            skewed = await fast.run(gw.server_name)
    (conn,) = in_sync["ConnectionReports"].values()
    assert abs(conn["ClockSkewSeconds"]) < 5
    assert not any("clock" in t for t in in_sync["Explanations"])
    (conn,) = skewed["ConnectionReports"].values()
    assert conn["ClockSkewSeconds"] < -500
    assert any("seconds behind" in t for t in skewed["Explanations"])


async def test_well_known_that_may_not_be_cached(ca):
    report = await run_tester_with_dns(ca, "short.test", lambda https: https.json(
        "short.test", "/.well-known/matrix/server", {"m.server": f"127.0.0.1:{free_port()}"},
        headers={"Cache-Control": "no-store"}))
    assert report["WellKnownResult"]["m.server"].startswith("127.0.0.1:")
    assert report["DNSResult"]["SRVSkipped"] is True
    assert any("cached for 5 minutes or less" in t for t in report["Explanations"])


async def test_well_known_redirect_loop_is_explained(ca):
    async def redirect(request):
        raise web.HTTPFound("/.well-known/matrix/server")

    report = await run_tester_with_dns(
        ca, "loop.test", lambda https: https.route("loop.test", "/.well-known/matrix/server", redirect))
    assert "redirect" in report["WellKnownResult"]["error"]["Error"]
    assert any(".well-known/matrix/server is not usable" in t for t in report["Explanations"])
    assert report["FederationOK"] is False


async def run_tester_with_dns(ca: TestCA, host: str, serve_well_known, *dns_options: str) -> dict:
    """Run the tester on ``host`` with a real DNS server (dnsmasq: ``host`` -> 127.0.0.1, plus
    ``dns_options``) and an HTTPS server for ``host`` set up by ``serve_well_known(https)``."""
    from tests.federation.net.conftest import start_dnsmasq, start_https, stop_dnsmasq

    cert = ca.issue(host, filename=f"wk-{host}")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert.cert_path), str(cert.key_path))
    https, runner = await start_https(ctx)
    serve_well_known(https)
    dns_server = start_dnsmasq(f"--host-record={host},127.0.0.1", *dns_options)
    try:
        client_ctx = ssl.create_default_context(cafile=str(ca.ca_path))
        async with ServerResolver(nameservers=[dns_server.nameserver], ip_policy=LOOPBACK, ssl_context=client_ctx,
                                  well_known_port=https.port) as resolver:
            return await FederationTester(resolver=resolver, ssl_context=client_ctx, ip_policy=LOOPBACK).run(host)
    finally:
        stop_dnsmasq(dns_server)
        await runner.cleanup()

"""The tester's client side: our own server (with the OAuth 2.0 API on), and a server whose
client discovery is broken in the ways browsers and Element X notice."""

from __future__ import annotations

import ssl

import pytest
from aiohttp import web

from federation.net.ip_ranges import IPRangePolicy
from federation.net.resolver import ServerResolver
from federation.net.tester import FederationTester
from federation.net.tester_tls import TesterTimeouts as Timeouts
from tests.conftest import free_port
from tests.support.gateway_server import running_gateway
from tests.support.tls import TestCA

LOOPBACK = IPRangePolicy(whitelist=["127.0.0.0/8"])
FAST = Timeouts(connect=1.0, handshake=1.0, request=3.0)


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


async def run(ca: TestCA, server_name: str, well_known_port: int, policy=LOOPBACK) -> dict:
    ctx = ssl.create_default_context(cafile=str(ca.ca_path))
    async with ServerResolver(ip_policy=policy, ssl_context=ctx, well_known_port=well_known_port,
                              well_known_timeout=3.0) as resolver:
        return await FederationTester(resolver=resolver, ssl_context=ctx, ip_policy=policy, timeouts=FAST).run(
            server_name)


async def test_our_server_with_oauth(tmp_path, ca):
    extra = {"oauth": {"enabled": True}, "extra_well_known_client_content": {
        "org.matrix.msc4143.rtc_foci": [{"type": "livekit", "livekit_service_url": "https://rtc.example.org/jwt"}]}}
    async with running_gateway(tmp_path, ca, extra) as gw:
        fed_port = int(gw.server_name.rsplit(":", 1)[1])
        report = await run(ca, gw.server_name, fed_port)  # .well-known on the TLS listener
    client = report["ClientWellKnown"]
    assert client["Result"] == "ok" and client["OK"] is True, client
    assert client["BaseURL"] == gw.config.public_baseurl and client["BaseURLFrom"] == "well-known"
    assert client["CORS"]["OK"] and client["Versions"]["OK"] and client["Versions"]["CORS"]["OK"]
    assert "v1.11" in client["Versions"]["Versions"]
    assert client["Preflight"]["OK"], client["Preflight"]
    assert client["RTCTransports"] == [{"Key": "org.matrix.msc4143.rtc_foci", "type": "livekit",
                                        "livekit_service_url": "https://rtc.example.org/jwt"}]
    login = report["Login"]
    assert "m.login.password" in login["legacy"] and login["oauth"] is True
    assert login["Issuer"] == gw.config.public_baseurl
    assert "OAuth 2.0 API" in login["ElementX"]
    assert report["SupportWellKnown"]["Result"] == "absent"
    assert report["FederationOK"] is True, report["Explanations"]
    areas = {d["Area"]: d for d in report["Diagnosis"]}
    assert areas["Client discovery"]["OK"] is True and areas["Sign-in"]["OK"] is True
    assert areas["Support contacts"]["OK"] is None
    assert areas["Reaching others"]["OK"] is None and "only a running Gateway" in areas["Reaching others"]["Words"]


async def _serve(app: web.Application, ctx: ssl.SSLContext | None, host="127.0.0.1") -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, host, port, ssl_context=ctx).start()
    return runner, port


async def test_broken_client_side(ca):
    """No CORS on the well-known, a preflight that wildcards Authorization (browsers refuse
    that), an RTC transport without its URL, a support file with a contact without role,
    and only SSO to sign in: each named."""
    homeserver = web.Application()

    async def versions(request):
        return web.json_response({"versions": ["v1.11"]}, headers={"Access-Control-Allow-Origin": "*"})

    async def preflight(request):
        return web.Response(status=204, headers={"Access-Control-Allow-Origin": "*",
                                                 "Access-Control-Allow-Methods": "GET, POST",
                                                 "Access-Control-Allow-Headers": "*"})

    async def flows(request):
        return web.json_response({"flows": [{"type": "m.login.sso"}, {"type": "m.login.token"}]})

    homeserver.router.add_get("/_matrix/client/versions", versions)
    homeserver.router.add_route("OPTIONS", "/_matrix/client/v3/login", preflight)
    homeserver.router.add_get("/_matrix/client/v3/login", flows)
    hs_runner, hs_port = await _serve(homeserver, None)

    files = web.Application()

    async def client_file(request):
        return web.json_response({"m.homeserver": {"base_url": f"http://127.0.0.1:{hs_port}"},
                                  "org.matrix.msc4143.rtc_foci": [{"type": "livekit"}]})

    async def support_file(request):
        return web.json_response({"contacts": [{"email_address": "admin@example.org"}]})

    files.router.add_get("/.well-known/matrix/client", client_file)
    files.router.add_get("/.well-known/matrix/support", support_file)
    cert = ca.issue("127.0.0.1", filename="client-files")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert.cert_path), str(cert.key_path))
    files_runner, files_port = await _serve(files, ctx)
    try:
        report = await run(ca, f"127.0.0.1:{free_port()}", files_port)
    finally:
        await files_runner.cleanup()
        await hs_runner.cleanup()
    client = report["ClientWellKnown"]
    assert client["Result"] == "ok" and client["OK"] is False
    assert client["CORS"] == {"OK": False, "AllowOrigin": None, "Problem": "no Access-Control-Allow-Origin header"}
    assert client["Versions"]["OK"] is True
    assert client["Preflight"]["OK"] is False
    assert client["Preflight"]["Missing"] == ["Authorization in Access-Control-Allow-Headers"]
    problems = " ".join(client["Problems"])
    assert "Browser clients cannot read it" in problems and "livekit_service_url" in problems
    assert "preflight for the login POST fails" in problems
    assert report["Login"]["legacy"] == ["m.login.sso", "m.login.token"] and report["Login"]["oauth"] is False
    assert "Element X cannot sign in here" in report["Login"]["ElementX"]
    support = report["SupportWellKnown"]
    assert support["Result"] == "invalid" and support["Problems"] == ["contacts[0] has no role (m.role.admin or "
                                                                       "m.role.security)"]
    areas = {d["Area"]: d for d in report["Diagnosis"]}
    assert areas["Client discovery"]["OK"] is False and areas["Support contacts"]["OK"] is False


async def test_missing_well_known_falls_back_to_the_name(ca):
    files = web.Application()  # answers 404 everywhere
    cert = ca.issue("127.0.0.1", filename="no-files")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert.cert_path), str(cert.key_path))
    runner, port = await _serve(files, ctx)
    try:
        report = await run(ca, "127.0.0.1", port)
    finally:
        await runner.cleanup()
    client = report["ClientWellKnown"]
    assert client["Result"] == "IGNORE" and client["BaseURLFrom"] == "server name"
    assert client["Versions"]["OK"] is False and "HTTP 404" in client["Versions"]["Problem"]
    assert report["Login"]["legacy"] == [] and report["Login"]["oauth"] is False

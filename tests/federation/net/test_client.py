"""Outbound federation requests: exact encoded targets, certificate checks and the
verification whitelist, against loopback TLS servers."""

from __future__ import annotations

import ssl

import pytest
from aiohttp import web

from federation.net.client import FederationClient, FederationRequestError
from federation.net.ip_ranges import IPRangePolicy
from federation.net.resolver import ServerResolver
from federation.signing import generate_signing_key, parse_x_matrix_authorization
from tests.support.tls import TestCA, serve_tls

LOOPBACK = IPRangePolicy(whitelist=["127.0.0.0/8"])


@pytest.fixture
async def echo_server(tmp_path):
    """A TLS server (certificate from an untrusted CA) that echoes what it received."""
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"raw_path": request.raw_path, "host": request.host,
                                  "auth": request.headers.get("Authorization")})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner, port = await serve_tls(app, TestCA(tmp_path / "untrusted"), "127.0.0.1")
    yield f"127.0.0.1:{port}"
    await runner.cleanup()


async def _client(patterns=()) -> FederationClient:
    return FederationClient(server_name="us.test", signing_key=generate_signing_key("k"),
                            resolver=ServerResolver(ip_policy=LOOPBACK), ssl_context=ssl.create_default_context(),
                            ip_policy=LOOPBACK, no_verify_patterns=patterns)


async def test_untrusted_certificate_is_refused_unless_whitelisted(echo_server):
    strict = await _client()
    try:
        with pytest.raises(FederationRequestError):
            await strict.request("GET", echo_server, "/_matrix/federation/v1/version", signed=False)
    finally:
        await strict.close()
    lenient = await _client(("127.0.0.*",))
    try:
        answer = await lenient.request("GET", echo_server, "/_matrix/federation/v1/version", signed=False)
        assert answer["host"] == echo_server
    finally:
        await lenient.close()


async def test_signed_target_is_exactly_what_goes_on_the_wire(echo_server):
    client = await _client(("127.0.0.1",))
    try:
        path = "/_matrix/federation/v1/event/%24abc%2Fdef%2Bghi"  # a v3 event ID: $, / and + encoded
        answer = await client.request("GET", echo_server, path, query={"a": "b c"})
    finally:
        await client.close()
    assert answer["raw_path"] == path + "?a=b+c"
    auth = parse_x_matrix_authorization(answer["auth"])
    assert auth.origin == "us.test" and auth.destination == echo_server


@pytest.fixture
async def odd_server(tmp_path):
    """A TLS server with a big answer (with and without Content-Length), a slow one,
    an error and a non-JSON answer; it records the requests it got."""
    import asyncio

    seen: list[str] = []
    never = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        if request.path == "/big":
            return web.json_response({"x": "a" * 4096})
        if request.path == "/big-chunked":
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for _ in range(8):
                await resp.write(b" " * 1024)
            await resp.write(b"{}")
            await resp.write_eof()
            return resp
        if request.path == "/slow":
            await never.wait()
        if request.path == "/error":
            return web.json_response({"errcode": "M_FORBIDDEN", "error": "no"}, status=403)
        if request.path == "/html":
            return web.Response(text="<html>")
        if request.path == "/odd-json":  # what orjson refuses and the standard library takes
            return web.Response(text='{"big": 123456789012345678901234567890, "nan": NaN, "s": "\\u00e9"}',
                                content_type="application/json")
        if request.path == "/error-html":
            return web.Response(text="<html>" + "x" * 500, status=502)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner, port = await serve_tls(app, TestCA(tmp_path / "ca"), "127.0.0.1")
    yield f"127.0.0.1:{port}", seen
    never.set()  # let the slow handler finish, so the server stops at once
    await runner.cleanup()


async def test_limits_timeouts_and_errors(odd_server):
    server, seen = odd_server
    client = await _client(("127.0.0.1",))
    try:
        for path in ("/big", "/big-chunked"):
            with pytest.raises(FederationRequestError, match="response too large"):
                await client.request("GET", server, path, signed=False, max_response_bytes=1024)
        assert (await client.request("GET", server, "/big", signed=False))["x"] == "a" * 4096
        with pytest.raises(FederationRequestError, match="timed out"):
            await client.request("GET", server, "/slow", signed=False, timeout=0.3)
        with pytest.raises(FederationRequestError) as err:
            await client.request("GET", server, "/error", signed=False)
        assert err.value.status == 403 and err.value.body["errcode"] == "M_FORBIDDEN"
        with pytest.raises(FederationRequestError, match="not JSON"):
            await client.request("GET", server, "/html", signed=False)
        odd = await client.request("GET", server, "/odd-json", signed=False)
        assert odd["big"] == 123456789012345678901234567890 and odd["nan"] != odd["nan"] and odd["s"] == "\u00e9"
        with pytest.raises(FederationRequestError) as err:
            await client.request("GET", server, "/error-html", signed=False)
        assert err.value.status == 502 and err.value.body is None and "b'<html>xxx" in str(err.value)
    finally:
        await client.close()


async def test_blocked_addresses_are_never_contacted(odd_server):
    server, seen = odd_server
    blocked = IPRangePolicy(blacklist=["127.0.0.0/8"])
    client = FederationClient(server_name="us.test", signing_key=generate_signing_key("k"),
                              resolver=ServerResolver(ip_policy=blocked), ip_policy=blocked,
                              no_verify_patterns=("127.0.0.1",))
    try:
        with pytest.raises(FederationRequestError):
            await client.request("GET", server, "/ok", signed=False)
    finally:
        await client.close()
        await client.resolver.close()
    # federation_domain_whitelist: other servers are not contacted at all.
    client = FederationClient(server_name="us.test", signing_key=generate_signing_key("k"),
                              resolver=ServerResolver(ip_policy=LOOPBACK), ip_policy=LOOPBACK,
                              no_verify_patterns=("127.0.0.1",), domain_whitelist=frozenset({"friend.test"}))
    try:
        with pytest.raises(FederationRequestError, match="federation_domain_whitelist"):
            await client.request("GET", server, "/ok", signed=False)
    finally:
        await client.close()
        await client.resolver.close()
    assert seen == []

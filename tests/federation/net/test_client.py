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

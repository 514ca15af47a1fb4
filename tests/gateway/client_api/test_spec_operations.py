"""The spec's Client-Server operations we serve, walked over HTTP with a valid token.

A regression guard: an operation served once stays served. ``NOT_YET`` lists what is
missing today, each with the issue that owns it; an operation that starts to be served may
leave the list (the test prints which), one that stops being served fails the test.
"""

from __future__ import annotations

import aiohttp

from gateway.client_api import SUPPORTED_VERSIONS
from tests.support.gateway_server import running_gateway
from tests.support.spec_operations import walk
from tests.support.tls import TestCA

NOT_YET = {
    # The OAuth 2.0 API answers 404 M_UNRECOGNIZED while oauth.enabled is false (the default).
    ("GET", "/_matrix/client/v1/auth_metadata"),
    # Neither Synapse 1.163 serves these: support contacts (a file operators may provide),
    # login tokens for QR sign-in (MSC3882, off in Synapse), policy servers (MSC4284).
    ("GET", "/.well-known/matrix/support"),
    ("POST", "/_matrix/client/v1/login/get_token"),
    ("GET", "/.well-known/matrix/policy_server"),
}


async def test_served_operations_stay_served(tmp_path):
    ca = TestCA(tmp_path / "ca")
    extra = {"enable_registration": True, "enable_registration_without_verification": True,
             "url_preview_enabled": True, "url_preview_ip_range_blacklist": ["127.0.0.0/8"]}
    async with running_gateway(tmp_path, ca, extra) as gw:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{gw.client_url}/_matrix/client/v3/register", json={
                    "username": "walker", "password": "walker-password", "auth": {"type": "m.login.dummy"}}) as r:
                assert r.status == 200, await r.text()
        result = await walk(gw.client_url, "walker", "walker-password")
    assert len(result) > 150  # the walk found the spec's files
    missing = {(op.method, op.path) for op, served in result.items() if not served}
    assert missing - NOT_YET == set(), "served before, not any more"
    print(f"now served, may leave NOT_YET: {sorted(NOT_YET - missing)}")
    # /versions claims no spec version some of whose new operations we lack (but the
    # ones the spec makes optional: m.get_login_token is a capability, support
    # information a file operators may leave out).
    newest = max(tuple(map(int, v[1:].split("."))) for v in SUPPORTED_VERSIONS if v.startswith("v"))
    optional = {("POST", "/_matrix/client/v1/login/get_token"), ("GET", "/.well-known/matrix/support")}
    lacking = {(op.method, op.path, op.added_in) for op, served in result.items()
               if not served and op.added_in and tuple(map(int, op.added_in.split("."))) <= newest
               and (op.method, op.path) not in optional}
    assert lacking == set(), f"/versions advertises up to v{'.'.join(map(str, newest))}, which added these"
    print(f"served {len(result) - len(missing)} of {len(result)} Client-Server operations")

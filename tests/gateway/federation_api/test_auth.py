"""X-Matrix authentication of inbound federation requests (in-process; the remote's
keys come from a fake fetcher): good requests pass, forged or misdirected ones get 401
M_UNAUTHORIZED with a clear error, nothing crashes."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from federation.signing import build_x_matrix_authorization, generate_signing_key
from gateway.appkeys import HS
from gateway.federation_api.auth import ORIGIN, x_matrix_middleware
from gateway.http.middleware import error_middleware
from tests.gateway.client_api.conftest import client, config_overrides, hs, register  # noqa: F401
from tests.gateway.services.federation.test_keyring import FakeFetcher, keyring_with

REMOTE = "remote.test"
KEY = generate_signing_key("rk1")
OTHER = generate_signing_key("rk1")  # same key ID, different key: a forger's
PROFILE = "/_matrix/federation/v1/query/profile?user_id=%40alice%3Ahs.test"


@pytest.fixture
def fake(hs):
    fetcher = FakeFetcher(hs, {REMOTE: KEY})
    hs.keyring = keyring_with(hs, fetcher)
    return fetcher


def signed(method, target, content=None, *, origin=REMOTE, destination="hs.test", key=KEY):
    return build_x_matrix_authorization(method, target, origin, destination, content, key)


async def get(client, target, *headers):
    resp = await client.get(URL(target, encoded=True), headers=[("Authorization", h) for h in headers])
    return resp.status, await resp.json()


async def test_signed_request_passes_and_key_is_fetched_once(client, fake):
    await register(client, "alice")
    assert await get(client, PROFILE, signed("GET", PROFILE)) == (200, {"displayname": "alice"})
    assert await get(client, PROFILE, signed("GET", PROFILE)) == (200, {"displayname": "alice"})
    assert len(fake.asked) == 1 and fake.asked[0][0].server_name == REMOTE
    # Old servers leave destination out: accepted.
    without = signed("GET", PROFILE).replace('destination="hs.test",', "")
    assert "destination" not in without
    assert (await get(client, PROFILE, without))[0] == 200


async def test_public_and_unknown_paths_need_no_signature(client, fake):
    status, body = await get(client, "/_matrix/federation/v1/version")
    assert status == 200 and body["server"]["name"] == "Gateway"
    status, body = await get(client, "/_matrix/federation/v1/nonexistent")
    assert status == 404 and body["errcode"] == "M_UNRECOGNIZED"


REFUSED = [
    (None, "Missing X-Matrix Authorization header"),
    (signed("GET", PROFILE, key=OTHER), "Invalid X-Matrix signature"),
    (signed("GET", PROFILE.replace("alice", "bob")), "Invalid X-Matrix signature"),
    (signed("PUT", PROFILE), "Invalid X-Matrix signature"),
    (signed("GET", PROFILE, content={"a": 1}), "Invalid X-Matrix signature"),
    (signed("GET", PROFILE, destination="elsewhere.test"), "Request is for elsewhere.test, not hs.test"),
    (signed("GET", PROFILE, key=generate_signing_key("unknown")), "cannot get key ed25519:unknown of remote.test"),
    (signed("GET", PROFILE, origin="down.test"), "cannot get key ed25519:rk1 of down.test"),
]

#: Headers that cannot be read as X-Matrix at all: a bad request (400, as Synapse).
MALFORMED = [
    ("Bearer abc", "Authorization scheme is not X-Matrix"),
    ("X-Matrix", "no 'origin'"),
    ("X-Matrix garbage", "Malformed X-Matrix"),
    ('X-Matrix origin="remote.test",key="ed25519:rk1"', "no 'sig'"),
    ('X-Matrix origin="remote.test",key="rk1",sig="AAAA"', "not 'algorithm:version'"),
    ('X-Matrix origin="remote.test",key="ed25519:rk1",sig="!!notbase64"', "not valid base64"),
    ('X-Matrix origin="bad server/",key="ed25519:rk1",sig="AAAA"', "not a valid server name"),
    ('X-Matrix origin="remote.test,key="ed25519', "Malformed X-Matrix"),
    ("X-Matrix " + "a=" * 3000, "Malformed X-Matrix"),
    ("X-Matrix origin=\"remote.test\",key=\"ed25519:rk1\",sig=\"\u00e9\"", "Malformed X-Matrix"),
]


async def test_refused_with_401(client, fake):
    await register(client, "alice")
    for header, fragment in REFUSED:
        status, body = await get(client, PROFILE, *([header] if header else []))
        assert status == 401 and body["errcode"] == "M_UNAUTHORIZED", (header, body)
        assert fragment in body["error"], (header, body["error"])


async def test_malformed_headers_are_bad_requests(client, fake):
    await register(client, "alice")
    for header, fragment in MALFORMED + [('X-Matrix origin="localhost:http",key="ed25519:rk1",sig="AAAA"',
                                          "port 'http'")]:
        status, body = await get(client, PROFILE, header)
        assert status == 400 and body["errcode"] == "M_UNAUTHORIZED", (header, body)
        assert fragment in body["error"], (header, body["error"])
    # A malformed header beside a well-formed one that fails: the failure (401).
    status, body = await get(client, PROFILE, "X-Matrix junk", signed("GET", PROFILE, key=OTHER))
    assert status == 401


async def test_one_good_header_among_several_is_enough(client, fake):
    await register(client, "alice")
    bad = signed("GET", PROFILE, key=OTHER)
    assert (await get(client, PROFILE, "X-Matrix junk", bad, signed("GET", PROFILE)))[0] == 200


async def test_forged_key_id_is_not_refetched_in_a_storm(client, fake):
    header = signed("GET", PROFILE, key=generate_signing_key("nope"))
    for _ in range(10):
        assert (await get(client, PROFILE, header))[0] == 401
    assert len(fake.asked) == 1


@pytest.mark.parametrize("config_overrides", [{"federation_domain_whitelist": ["friend.test"]}])
async def test_federation_domain_whitelist(client, fake):
    status, body = await get(client, PROFILE, signed("GET", PROFILE))
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    assert fake.asked == []  # refused before any key fetch


async def test_body_and_encoded_path_are_signed(hs, fake):
    """A request with a JSON body, on a path with characters that HTTP libraries like to
    re-quote (v3 event IDs contain / and +): the signature covers exactly what was sent."""
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"origin": request[ORIGIN], "event": request.match_info["event_id"],
                                  "body": await request.json()})

    sub = web.Application(middlewares=[x_matrix_middleware])
    sub[HS] = hs
    sub.router.add_put("/v1/test/{event_id}", echo)
    app = web.Application(middlewares=[error_middleware])
    app.add_subapp("/_matrix/federation", sub)
    target = "/_matrix/federation/v1/test/%24abc%2Fdef%2Bghi%3D"
    content = {"pdus": [{"body": "héllo", "n": 1}]}
    async with TestClient(TestServer(app)) as c:
        headers = {"Authorization": signed("PUT", target, content), "Content-Type": "application/json"}
        resp = await c.put(URL(target, encoded=True), data=json.dumps(content), headers=headers)
        assert resp.status == 200 and await resp.json() == {"origin": REMOTE, "event": "$abc/def+ghi=", "body": content}
        # The same signature on a changed body, or on the decoded path, fails.
        resp = await c.put(URL(target, encoded=True), data=json.dumps({"pdus": []}), headers=headers)
        assert resp.status == 401
        decoded = "/_matrix/federation/v1/test/$abc%2Fdef+ghi="
        resp = await c.put(URL(decoded, encoded=True), data=json.dumps(content), headers=headers)
        assert resp.status == 401
        # Not JSON at all: a 400, not a crash.
        resp = await c.put(URL(target, encoded=True), data=b"{nope", headers=headers)
        assert resp.status == 400 and (await resp.json())["errcode"] == "M_NOT_JSON"

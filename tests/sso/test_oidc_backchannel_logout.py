"""OIDC Back-Channel Logout against the in-process fake IdP: the devices of the IdP session the
logout token names are logged out; every malformed or forged token is refused with 400 and
logs out nothing.

Spec: https://openid.net/specs/openid-connect-backchannel-1_0.html
"""

from __future__ import annotations

import time
import urllib.parse

import pytest
from aiohttp.test_utils import TestClient, TestServer
from joserfc import jwt
from joserfc.jwk import RSAKey

from gateway.app import build_listener_app
from gateway.config import parse_config
from gateway.server import HomeServer
from sso.oidc import BACKCHANNEL_LOGOUT_EVENT
from tests.sso.test_oidc_flow import KEY, callback, idp, start  # noqa: F401 - idp is a fixture

OTHER_KEY = RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256"})
LOGOUT = "/_synapse/client/oidc/backchannel_logout"


@pytest.fixture
async def client(tmp_path, idp):  # noqa: F811
    config = parse_config({
        "server_name": "hs.test", "public_baseurl": "https://hs.test/",
        "listeners": [{"port": 1, "resources": [{"names": ["client"]}]}],
        "database": {"name": "sqlite3", "args": {"database": str(tmp_path / "hs.db")}},
        "signing_key_path": str(tmp_path / "signing.key"),
        "oidc_providers": [{"idp_id": "fake", "issuer": idp.issuer, "client_id": "gateway", "client_secret": "s",
                            "skip_verification": True, "backchannel_logout_enabled": True,
                            "user_mapping_provider": {"config": {"localpart_template": "{{ user.login }}"}}}],
        "sso": {"client_whitelist": ["https://app.example/"]},
    }, config_path=str(tmp_path / "homeserver.yaml"))
    hs = await HomeServer.open(config)
    async with TestClient(TestServer(build_listener_app(hs, config.listeners[0]))) as c:
        c.hs = hs
        yield c
    await hs.close()


async def sso_login(client, idp, *, sub: str, login: str, sid: str | None) -> str:  # noqa: F811
    """A full OIDC login; returns the new device's access token."""
    state, nonce, cookie, _ = await start(client)
    claims = {"login": login} | ({"sid": sid} if sid else {})
    resp = await callback(client, state, idp.mint_code(nonce, sub=sub, **claims), cookie)
    assert resp.status == 302, await resp.text()
    token = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(resp.headers["Location"]).query))["loginToken"]
    login_resp = await client.post("/_matrix/client/v3/login", json={"type": "m.login.token", "token": token})
    assert login_resp.status == 200
    return (await login_resp.json())["access_token"]


async def whoami_status(client, access_token: str) -> int:
    resp = await client.get("/_matrix/client/v3/account/whoami", headers={"Authorization": f"Bearer {access_token}"})
    return resp.status


def logout_token(idp, key=KEY, header=None, **overrides) -> str:  # noqa: F811
    now = int(time.time())
    claims = {"iss": idp.issuer, "aud": "gateway", "iat": now, "exp": now + 120, "jti": f"j{now}{id(overrides)}",
              "events": {BACKCHANNEL_LOGOUT_EVENT: {}}, "sub": "u1", "sid": "sid-1"}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(header or {"alg": "RS256", "kid": "k1"}, claims, key)


async def post_logout(client, token: str):
    return await client.post(LOGOUT, data={"logout_token": token})


async def test_logout_token_logs_out_that_session_only(client, idp):  # noqa: F811
    first = await sso_login(client, idp, sub="u1", login="carol", sid="sid-1")
    second = await sso_login(client, idp, sub="u1", login="carol", sid="sid-2")
    other_user = await sso_login(client, idp, sub="u2", login="dave", sid="sid-1x")
    resp = await post_logout(client, logout_token(idp, sid="sid-1"))
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    assert await whoami_status(client, first) == 401
    assert await whoami_status(client, second) == 200
    assert await whoami_status(client, other_user) == 200
    # Again: nothing left to do, still fine.
    assert (await post_logout(client, logout_token(idp, sid="sid-1"))).status == 200


async def test_sub_only_logs_out_every_session_of_that_user(client, idp):  # noqa: F811
    a = await sso_login(client, idp, sub="u1", login="carol", sid="sid-a")
    b = await sso_login(client, idp, sub="u1", login="carol", sid="sid-b")
    other = await sso_login(client, idp, sub="u2", login="dave", sid="sid-c")
    assert (await post_logout(client, logout_token(idp, sid=None, sub="u1"))).status == 200
    assert [await whoami_status(client, t) for t in (a, b, other)] == [401, 401, 200]


async def test_sub_must_match_the_sessions_user(client, idp):  # noqa: F811
    carol = await sso_login(client, idp, sub="u1", login="carol", sid="sid-1")
    await sso_login(client, idp, sub="u2", login="dave", sid="sid-2")
    # A token for dave's sub naming carol's session: carol stays logged in.
    assert (await post_logout(client, logout_token(idp, sid="sid-1", sub="u2"))).status == 200
    assert await whoami_status(client, carol) == 200


@pytest.mark.parametrize("case", [
    "other key", "no events", "with nonce", "other audience", "other issuer", "expired", "no sid nor sub",
    "alg none", "not a jwt", "missing",
])
async def test_bad_logout_tokens_refused(client, idp, case):  # noqa: F811
    session = await sso_login(client, idp, sub="u1", login="carol", sid="sid-1")
    now = int(time.time())
    token = {
        "other key": lambda: logout_token(idp, key=OTHER_KEY),
        "no events": lambda: logout_token(idp, events={"something-else": {}}),
        "with nonce": lambda: logout_token(idp, nonce="n"),
        "other audience": lambda: logout_token(idp, aud="someone-else"),
        "other issuer": lambda: logout_token(idp, iss="https://evil.example"),
        "expired": lambda: logout_token(idp, iat=now - 3600, exp=now - 1800),
        "no sid nor sub": lambda: logout_token(idp, sid=None, sub=None),
        "alg none": lambda: _alg_none(idp),
        "not a jwt": lambda: "garbage",
        "missing": lambda: None,
    }[case]()
    resp = await client.post(LOGOUT, data={"logout_token": token} if token else {})
    assert resp.status == 400, await resp.text()
    body = await resp.json()
    assert body["error"] == "invalid_request" and body["error_description"]
    assert await whoami_status(client, session) == 200


def _alg_none(idp) -> str:  # noqa: F811
    import base64
    import json

    def part(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    now = int(time.time())
    return part({"alg": "none"}) + "." + part({"iss": idp.issuer, "aud": "gateway", "iat": now, "sid": "sid-1",
                                              "events": {BACKCHANNEL_LOGOUT_EVENT: {}}}) + "."

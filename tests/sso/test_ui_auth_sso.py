"""User-interactive auth through SSO (``m.login.sso``) against an in-process fake OIDC IdP,
on both database engines: the fallback page, the IdP round trip, the stage marked done in
the database, and every way it must fail (another user, replays, expiry).

Spec: https://spec.matrix.org/latest/client-server-api/#sso-during-user-interactive-authentication
"""

from __future__ import annotations

import re
import urllib.parse

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import build_listener_app
from gateway.config import parse_config
from gateway.passwords import hash_password
from gateway.server import HomeServer
from sso.handler import BROWSER_COOKIE

from .test_oidc_flow import FakeIdP, idp  # noqa: F401 - the fixture is used by name


@pytest.fixture
async def client(tmp_path, idp, database_config):  # noqa: F811
    config = parse_config({
        "server_name": "hs.test", "public_baseurl": "https://hs.test/",
        "listeners": [{"port": 1, "resources": [{"names": ["client"]}]}],
        "database": {"name": "sqlite3" if database_config.engine == "sqlite" else "psycopg2",
                     "args": database_config.args},
        "signing_key_path": str(tmp_path / "signing.key"),
        "oidc_providers": [{"idp_id": idp_id, "idp_name": idp_id.title(), "issuer": idp.issuer,
                            "client_id": "gateway", "client_secret": "s3cret", "skip_verification": True,
                            "user_mapping_provider": {"config": {
                                "localpart_template": "{{ user.preferred_username }}"}}}
                           for idp_id in ("fake", "other")],
        "sso": {"client_whitelist": ["https://app.example/"]},
    }, config_path=str(tmp_path / "homeserver.yaml"))
    hs = await HomeServer.open(config)
    async with TestClient(TestServer(build_listener_app(hs, config.listeners[0]))) as c:
        c.hs = hs
        yield c
    await hs.close()


def qs(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


async def sso_login(client, idp, sub: str, username: str) -> dict:
    """A whole OIDC login; returns the /login answer (access_token, device_id, user_id)."""
    resp = await client.get("/_matrix/client/v3/login/sso/redirect/oidc-fake",
                            params={"redirectUrl": "https://app.example/cb"}, allow_redirects=False)
    query = qs(resp.headers["Location"])
    cookie = resp.cookies[BROWSER_COOKIE].value
    resp = await client.get("/_synapse/client/oidc/callback",
                            params={"state": query["state"], "code": idp.mint_code(query["nonce"], sub=sub,
                                                                                   preferred_username=username)},
                            headers={"Cookie": f"{BROWSER_COOKIE}={cookie}"}, allow_redirects=False)
    assert resp.status == 302, await resp.text()
    login = await client.post("/_matrix/client/v3/login",
                              json={"type": "m.login.token", "token": qs(resp.headers["Location"])["loginToken"]})
    assert login.status == 200
    return await login.json()


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def start_uia(client, token: str, device_id: str) -> str:
    resp = await client.delete(f"/_matrix/client/v3/devices/{device_id}", headers=auth(token), json={})
    assert resp.status == 401
    body = await resp.json()
    assert body["flows"] == [{"stages": ["m.login.sso"]}]  # an SSO account has no password
    return body["session"]


async def through_idp(client, idp, session: str, sub: str, ver: str = "v3"):
    """The browser's part: fallback page -> its button -> IdP -> our callback."""
    page = await client.get(f"/_matrix/client/{ver}/auth/m.login.sso/fallback/web", params={"session": session})
    assert page.status == 200, await page.text()
    html = await page.text()
    assert "remove a device from your account" in html
    href = re.search(r'id="continue" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert qs(href) == {"session": session, "idp_id": "oidc-fake"}
    go = await client.get(href, allow_redirects=False)
    assert go.status == 302
    query = qs(go.headers["Location"])
    cookie = go.cookies[BROWSER_COOKIE].value
    code = idp.mint_code(query["nonce"], sub=sub)
    return await client.get("/_synapse/client/oidc/callback", params={"state": query["state"], "code": code},
                            headers={"Cookie": f"{BROWSER_COOKIE}={cookie}"}, allow_redirects=False)


async def test_delete_device_confirmed_through_sso(client, idp):
    alice = await sso_login(client, idp, "sub-alice", "alice")
    phone = await sso_login(client, idp, "sub-alice", "alice")
    session = await start_uia(client, alice["access_token"], phone["device_id"])

    # Retrying before the browser went through the IdP fails the stage.
    early = await client.delete(f"/_matrix/client/v3/devices/{phone['device_id']}", headers=auth(alice["access_token"]),
                                json={"auth": {"type": "m.login.sso", "session": session}})
    assert early.status == 401 and (await early.json())["errcode"] == "M_UNAUTHORIZED"

    done = await through_idp(client, idp, session, "sub-alice", ver="r0")
    assert done.status == 200
    html = await done.text()
    assert 'postMessage("authDone"' in html and "onAuthDone" in html
    stored = await client.hs.auth.store.get_uia_session(session)
    assert stored.completed == ("m.login.sso",)

    ok = await client.delete(f"/_matrix/client/v3/devices/{phone['device_id']}", headers=auth(alice["access_token"]),
                             json={"auth": {"type": "m.login.sso", "session": session}})
    assert ok.status == 200, await ok.text()
    assert (await client.get("/_matrix/client/v3/account/whoami", headers=auth(phone["access_token"]))).status == 401
    # The completed session is gone: it cannot authorise a second request.
    replay = await client.post("/_matrix/client/v3/delete_devices", headers=auth(alice["access_token"]),
                               json={"devices": [alice["device_id"]],
                                     "auth": {"type": "m.login.sso", "session": session}})
    assert replay.status == 400 and (await replay.json())["errcode"] == "M_UNKNOWN"
    assert (await client.get("/_matrix/client/v3/account/whoami", headers=auth(alice["access_token"]))).status == 200


async def test_other_user_at_the_idp_is_refused(client, idp):
    alice = await sso_login(client, idp, "sub-alice", "alice")
    await sso_login(client, idp, "sub-bob", "bob")
    session = await start_uia(client, alice["access_token"], alice["device_id"])
    resp = await through_idp(client, idp, session, "sub-bob")
    assert resp.status == 403
    assert "@alice:hs.test" in await resp.text()
    # An identity linked to nobody is refused the same way.
    resp = await through_idp(client, idp, session, "sub-stranger")
    assert resp.status == 403
    assert (await client.hs.auth.store.get_uia_session(session)).completed == ()
    retry = await client.delete(f"/_matrix/client/v3/devices/{alice['device_id']}",
                                headers=auth(alice["access_token"]),
                                json={"auth": {"type": "m.login.sso", "session": session}})
    assert retry.status == 401 and (await retry.json()).get("completed", []) == []


async def test_replayed_callback_and_expired_sessions_refused(client, idp):
    alice = await sso_login(client, idp, "sub-alice", "alice")
    session = await start_uia(client, alice["access_token"], alice["device_id"])

    page = await client.get("/_matrix/client/v3/auth/m.login.sso/fallback/web",
                            params={"session": session, "idp_id": "oidc-fake"}, allow_redirects=False)
    query = qs(page.headers["Location"])
    cookie = page.cookies[BROWSER_COOKIE].value
    code = idp.mint_code(query["nonce"], sub="sub-alice")
    params = {"state": query["state"], "code": code}
    headers = {"Cookie": f"{BROWSER_COOKIE}={cookie}"}
    # The callback is bound to the browser that opened the fallback page.
    other = await client.get("/_synapse/client/oidc/callback", params=params, allow_redirects=False)
    assert other.status == 400 and "mismatching_session" in await other.text()
    # It was not consumed by the foreign attempt; the right browser completes it once.
    assert (await client.get("/_synapse/client/oidc/callback", params=params, headers=headers)).status == 200
    replay = await client.get("/_synapse/client/oidc/callback", params=params, headers=headers)
    assert replay.status == 400 and "session_used" in await replay.text()

    # A UI-auth session older than its lifetime is refused everywhere.
    session2 = await start_uia(client, alice["access_token"], alice["device_id"])
    go = await client.get("/_matrix/client/v3/auth/m.login.sso/fallback/web",
                          params={"session": session2, "idp_id": "oidc-fake"}, allow_redirects=False)
    query = qs(go.headers["Location"])
    real_clock = client.hs.clock_ms
    client.hs.clock_ms = lambda: real_clock() + 25 * 3600 * 1000
    try:
        page = await client.get("/_matrix/client/v3/auth/m.login.sso/fallback/web", params={"session": session2})
        assert page.status == 400 and "unknown_session" in await page.text()
        late = await client.get("/_synapse/client/oidc/callback",
                                params={"state": query["state"], "code": idp.mint_code(query["nonce"], sub="sub-alice")},
                                headers={"Cookie": f"{BROWSER_COOKIE}={go.cookies[BROWSER_COOKIE].value}"})
        assert late.status == 400 and "unknown_session" in await late.text()
    finally:
        client.hs.clock_ms = real_clock
    assert (await client.hs.auth.store.get_uia_session(session2)).completed == ()


async def test_fallback_page_errors(client, idp):
    unknown = await client.get("/_matrix/client/v3/auth/m.login.sso/fallback/web", params={"session": "nope"})
    assert unknown.status == 400 and "unknown_session" in await unknown.text()
    missing = await client.get("/_matrix/client/v3/auth/m.login.sso/fallback/web")
    assert missing.status == 400 and "missing_session" in await missing.text()
    other_stage = await client.get("/_matrix/client/v3/auth/m.login.recaptcha/fallback/web", params={"session": "x"})
    assert other_stage.status == 404 and (await other_stage.json())["errcode"] == "M_UNRECOGNIZED"

    alice = await sso_login(client, idp, "sub-alice", "alice")
    session = await start_uia(client, alice["access_token"], alice["device_id"])
    wrong_idp = await client.get("/_matrix/client/v3/auth/m.login.sso/fallback/web",
                                 params={"session": session, "idp_id": "oidc-other"}, allow_redirects=False)
    # oidc-other is configured, but alice has no identity there.
    assert wrong_idp.status == 403 and "Location" not in wrong_idp.headers


async def test_flows_offered_per_account(client, idp):
    # A linked account that also has a password may use either.
    alice = await sso_login(client, idp, "sub-alice", "alice")
    await client.hs.auth.users.set_password_hash("@alice:hs.test", hash_password("pw-alice", 4))
    resp = await client.post("/_matrix/client/v3/account/password", headers=auth(alice["access_token"]),
                             json={"new_password": "new-pw"})
    assert resp.status == 401
    assert (await resp.json())["flows"] == [{"stages": ["m.login.password"]}, {"stages": ["m.login.sso"]}]

    # A password-only account is not offered SSO (it has no identity to confirm with)...
    await client.hs.auth.users.create_user("@pat:hs.test", password_hash=hash_password("pw-pat", 4),
                                           created_ts=client.hs.clock_ms())
    login = await client.post("/_matrix/client/v3/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "pat"}, "password": "pw-pat"})
    assert login.status == 200, await login.text()
    pat = await login.json()
    resp = await client.post("/_matrix/client/v3/account/deactivate", headers=auth(pat["access_token"]), json={})
    body = await resp.json()
    assert body["flows"] == [{"stages": ["m.login.password"]}]
    # ... and the fallback page refuses it.
    page = await client.get("/_matrix/client/v3/auth/m.login.sso/fallback/web", params={"session": body["session"]})
    assert page.status == 403 and "no_sso_identity" in await page.text()
    sso = await client.post("/_matrix/client/v3/account/deactivate", headers=auth(pat["access_token"]),
                            json={"auth": {"type": "m.login.sso", "session": body["session"]}})
    assert sso.status == 401 and (await sso.json())["errcode"] == "M_UNRECOGNIZED"


async def test_several_linked_idps_are_offered(client, idp):
    from gateway.storage.sso import SsoStore

    alice = await sso_login(client, idp, "sub-alice", "alice")
    store = SsoStore(client.hs.db)
    await store.link_external_id("oidc-other", "sub-alice-2", "@alice:hs.test")
    await store.link_external_id("oidc-gone", "x", "@alice:hs.test")  # no longer configured: not offered
    session = await start_uia(client, alice["access_token"], alice["device_id"])
    html = await (await client.get("/_matrix/client/v3/auth/m.login.sso/fallback/web",
                                   params={"session": session})).text()
    assert 'id="idp-oidc-fake"' in html and 'id="idp-oidc-other"' in html and "oidc-gone" not in html
    href = re.search(r'id="idp-oidc-other" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    go = await client.get(href, allow_redirects=False)
    query = qs(go.headers["Location"])
    # The identity must be alice's at the IdP she chose: her oidc-fake subject is no one at oidc-other.
    wrong = await client.get("/_synapse/client/oidc/callback",
                             params={"state": query["state"], "code": idp.mint_code(query["nonce"], sub="sub-alice")},
                             headers={"Cookie": f"{BROWSER_COOKIE}={go.cookies[BROWSER_COOKIE].value}"})
    assert wrong.status == 403

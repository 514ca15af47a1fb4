"""The OIDC login against an in-process fake IdP: the happy path and every way it must fail.

Covers: state from another browser, unknown state, nonce mismatch, replayed callback,
reused and expired login tokens, open redirects, JWT login over HTTP, the login flows.
"""

from __future__ import annotations

import secrets
import time
import urllib.parse

import jwt as pyjwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from joserfc.jwk import RSAKey

from gateway.app import build_listener_app
from gateway.config import parse_config
from gateway.server import HomeServer
from gateway.storage.profiles import ProfileStore
from sso.handler import BROWSER_COOKIE, USERNAME_MAPPING_COOKIE

KEY = RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256", "use": "sig"})
JWT_SECRET = "jwt-secret-of-at-least-thirty-two-bytes"


class FakeIdP:
    """Discovery, JWKS and a token endpoint; codes are minted by the test."""

    def __init__(self):
        self.codes: dict[str, dict] = {}
        self.token_requests: list[dict] = []
        self.issuer = ""
        self.published_issuer: str | None = None  # what discovery says, when not ``issuer``

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_post("/token", self.token)
        return app

    async def jwks(self, request):
        return web.json_response({"keys": [KEY.as_dict(private=False)]})

    async def discovery(self, request):
        return web.json_response({
            "issuer": self.published_issuer or self.issuer, "authorization_endpoint": f"{self.issuer}/auth",
            "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
            "code_challenge_methods_supported": ["S256"], "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code"], "subject_types_supported": ["public"],
        })

    async def token(self, request):
        form = dict(await request.post())
        self.token_requests.append({**form, "authorization": request.headers.get("Authorization")})
        claims = self.codes.pop(form.get("code"), None)
        if claims is None:
            return web.json_response({"error": "invalid_grant"}, status=400)
        from joserfc import jwt

        id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, KEY)
        return web.json_response({"access_token": "at", "token_type": "Bearer", "id_token": id_token})

    def mint_code(self, nonce: str, sub: str = "u1", **claims) -> str:
        now = int(time.time())
        code = secrets.token_hex(8)
        self.codes[code] = {"iss": self.issuer, "aud": "gateway", "sub": sub, "nonce": nonce, "iat": now,
                            "exp": now + 300, **claims}
        return code


@pytest.fixture
async def idp(request):
    """The fake IdP; parametrized indirectly with a suffix, its discovery document names
    ``issuer`` plus that suffix (set before the server first reads it)."""
    fake = FakeIdP()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.issuer = str(server.make_url("")).rstrip("/")
    if getattr(request, "param", None):
        fake.published_issuer = fake.issuer + request.param
    yield fake
    await server.close()


@pytest.fixture
def mapping_config() -> dict:
    return {"localpart_template": "{{ user.preferred_username }}", "display_name_template": "{{ user.name }}"}


@pytest.fixture
def oidc_overrides() -> dict:
    """Keys of the provider's entry that a test changes (by parametrizing this name)."""
    return {}


@pytest.fixture
async def client(tmp_path, idp, mapping_config, oidc_overrides):
    config = parse_config({
        "server_name": "hs.test", "public_baseurl": "https://hs.test/",
        "listeners": [{"port": 1, "resources": [{"names": ["client"]}]}],
        "database": {"name": "sqlite3", "args": {"database": str(tmp_path / "hs.db")}},
        "signing_key_path": str(tmp_path / "signing.key"),
        "oidc_providers": [{"idp_id": "fake", "idp_name": "Fake", "idp_brand": "fake", "issuer": idp.issuer,
                            "client_id": "gateway", "client_secret": "s3cret", "skip_verification": True,
                            "user_mapping_provider": {"config": mapping_config},
                            **{k: v(idp) if callable(v) else v for k, v in oidc_overrides.items()}}],
        "sso": {"client_whitelist": ["https://app.example/"]},
        "jwt_config": {"enabled": True, "secret": JWT_SECRET, "algorithm": "HS256", "display_name_claim": "name"},
    }, config_path=str(tmp_path / "homeserver.yaml"))
    hs = await HomeServer.open(config)
    async with TestClient(TestServer(build_listener_app(hs, config.listeners[0]))) as c:
        c.hs = hs
        yield c
    await hs.close()


async def start(client, redirect_url="https://app.example/cb?x=1", **params):
    """GET the SSO redirect; returns (state, nonce, browser cookie, authorization query)."""
    resp = await client.get("/_matrix/client/v3/login/sso/redirect",
                            params={"redirectUrl": redirect_url, **params}, allow_redirects=False)
    assert resp.status == 302, await resp.text()
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(resp.headers["Location"]).query))
    cookie = resp.cookies[BROWSER_COOKIE]
    assert cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "Lax"
    return query["state"], query["nonce"], cookie.value, query


async def callback(client, state, code, cookie):
    return await client.get("/_synapse/client/oidc/callback", params={"state": state, "code": code},
                            headers={"Cookie": f"{BROWSER_COOKIE}={cookie}"}, allow_redirects=False)


async def sso_login_response(client, idp, **claims) -> dict:
    """A whole OIDC login (redirect, callback, login token): the /login response."""
    state, nonce, cookie, _ = await start(client)
    resp = await callback(client, state, idp.mint_code(nonce, **claims), cookie)
    assert resp.status == 302, await resp.text()
    token = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(resp.headers["Location"]).query))["loginToken"]
    login = await client.post("/_matrix/client/v3/login", json={"type": "m.login.token", "token": token})
    assert login.status == 200, await login.text()
    return await login.json()


async def sso_login(client, idp, sub: str, **claims) -> str:
    """A whole OIDC login: the access token."""
    return (await sso_login_response(client, idp, sub=sub, **claims))["access_token"]


async def test_login_flows_advertise_sso_and_jwt(client):
    flows = (await (await client.get("/_matrix/client/v3/login")).json())["flows"]
    sso = next(f for f in flows if f["type"] == "m.login.sso")
    assert sso["identity_providers"] == [{"id": "oidc-fake", "name": "Fake", "brand": "fake"}]
    assert {"type": "org.matrix.login.jwt"} in flows


async def test_full_login_then_token_is_single_use(client, idp):
    state, nonce, cookie, query = await start(client)
    assert query["client_id"] == "gateway" and query["redirect_uri"] == "https://hs.test/_synapse/client/oidc/callback"
    assert query["code_challenge_method"] == "S256"
    resp = await callback(client, state, idp.mint_code(nonce, preferred_username="carol", name="Carol"), cookie)
    assert resp.status == 302, await resp.text()
    target = urllib.parse.urlsplit(resp.headers["Location"])
    assert target.netloc == "app.example"
    params = dict(urllib.parse.parse_qsl(target.query))
    assert params["x"] == "1"
    # PKCE verifier and client_secret_basic reached the token endpoint.
    assert idp.token_requests[-1]["code_verifier"] and idp.token_requests[-1]["authorization"].startswith("Basic ")

    body = {"type": "m.login.token", "token": params["loginToken"]}
    login = await client.post("/_matrix/client/v3/login", json=body)
    assert login.status == 200
    assert (await login.json())["user_id"] == "@carol:hs.test"
    again = await client.post("/_matrix/client/v3/login", json=body)
    assert again.status == 403 and (await again.json())["errcode"] == "M_FORBIDDEN"

    # The identity is linked: next time, same account even if the IdP's username changed.
    state, nonce, cookie, _ = await start(client)
    resp = await callback(client, state, idp.mint_code(nonce, preferred_username="carol2"), cookie)
    token = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(resp.headers["Location"]).query))["loginToken"]
    login = await client.post("/_matrix/client/v3/login", json={"type": "m.login.token", "token": token})
    assert (await login.json())["user_id"] == "@carol:hs.test"


async def test_expired_login_token_refused(client, idp):
    state, nonce, cookie, _ = await start(client)
    resp = await callback(client, state, idp.mint_code(nonce, preferred_username="dave"), cookie)
    token = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(resp.headers["Location"]).query))["loginToken"]
    real_clock = client.hs.clock_ms
    client.hs.clock_ms = lambda: real_clock() + 3 * 60 * 1000  # the token lives 2 minutes
    login = await client.post("/_matrix/client/v3/login", json={"type": "m.login.token", "token": token})
    assert login.status == 403


async def test_replayed_callback_refused(client, idp):
    state, nonce, cookie, _ = await start(client)
    code = idp.mint_code(nonce, preferred_username="erin")
    assert (await callback(client, state, code, cookie)).status == 302
    replay = await callback(client, state, code, cookie)
    assert replay.status == 400 and "Location" not in replay.headers
    assert "session_used" in await replay.text()


async def test_callback_from_another_browser_or_unknown_state_refused(client, idp):
    state, nonce, cookie, _ = await start(client)
    code = idp.mint_code(nonce, preferred_username="frank")
    other = await callback(client, state, code, "some-other-browser")
    assert other.status == 400 and "mismatching_session" in await other.text()
    unknown = await callback(client, "forged-state", code, cookie)
    assert unknown.status == 400 and "unknown_session" in await unknown.text()
    assert idp.token_requests == []  # nothing was exchanged for them


async def test_nonce_mismatch_refused(client, idp):
    state, nonce, cookie, _ = await start(client)
    resp = await callback(client, state, idp.mint_code("another-nonce", preferred_username="gina"), cookie)
    assert resp.status == 403 and "nonce" in await resp.text()
    assert await client.hs.auth.users.get_user("@gina:hs.test") is None


async def test_idp_error_shown(client):
    state, _, cookie, _ = await start(client)
    resp = await client.get("/_synapse/client/oidc/callback",
                            params={"state": state, "error": "access_denied"},
                            headers={"Cookie": f"{BROWSER_COOKIE}={cookie}"})
    assert resp.status == 403 and "declined" in await resp.text()


async def test_unlisted_client_is_asked_not_redirected(client, idp):
    state, nonce, cookie, _ = await start(client, "https://evil.example/steal")
    resp = await callback(client, state, idp.mint_code(nonce, preferred_username="hank"), cookie)
    assert resp.status == 200 and "Location" not in resp.headers
    html = await resp.text()
    assert "https://evil.example/steal" in html and "loginToken=" in html


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,x", "//evil.example/", "", "http:///x"])
async def test_dangerous_redirect_urls_refused(client, url):
    resp = await client.get("/_matrix/client/v3/login/sso/redirect", params={"redirectUrl": url},
                            allow_redirects=False)
    assert resp.status == 400 and "Location" not in resp.headers


async def test_localpart_collision_gets_a_suffix(client, idp):
    await client.hs.auth.users.create_user("@ivy:hs.test", password_hash=None, created_ts=0)
    state, nonce, cookie, _ = await start(client)
    resp = await callback(client, state, idp.mint_code(nonce, sub="other-ivy", preferred_username="ivy"), cookie)
    token = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(resp.headers["Location"]).query))["loginToken"]
    login = await client.post("/_matrix/client/v3/login", json={"type": "m.login.token", "token": token})
    assert (await login.json())["user_id"] == "@ivy1:hs.test"


@pytest.mark.parametrize("mapping_config", [{"display_name_template": "{{ user.name }}"}])
async def test_username_picker(client, idp):
    state, nonce, cookie, _ = await start(client)
    resp = await callback(client, state, idp.mint_code(nonce, name="Jo March"), cookie)
    assert resp.headers["Location"] == "/_synapse/client/pick_username/account_details"
    session = resp.cookies[USERNAME_MAPPING_COOKIE].value
    headers = {"Cookie": f"{USERNAME_MAPPING_COOKIE}={session}"}
    page = await client.get("/_synapse/client/pick_username/account_details", headers=headers)
    assert page.status == 200 and "Jo March" in await page.text()
    await client.hs.auth.users.create_user("@taken:hs.test", password_hash=None, created_ts=0)
    check = await client.get("/_synapse/client/pick_username/check", params={"username": "taken"}, headers=headers)
    assert await check.json() == {"available": False}
    check = await client.get("/_synapse/client/pick_username/check", params={"username": "jo"}, headers=headers)
    assert await check.json() == {"available": True}
    bad = await client.get("/_synapse/client/pick_username/check", params={"username": "Jo!"}, headers=headers)
    assert bad.status == 400 and (await bad.json())["errcode"] == "M_INVALID_USERNAME"
    # Without the cookie there is no session.
    assert (await client.get("/_synapse/client/pick_username/account_details")).status == 400

    taken = await client.post("/_synapse/client/pick_username/account_details", data={"username": "taken"},
                              headers=headers, allow_redirects=False)
    assert taken.status == 400 and "already taken" in await taken.text()
    done = await client.post("/_synapse/client/pick_username/account_details",
                             data={"username": "jo", "use_display_name": "true"}, headers=headers,
                             allow_redirects=False)
    assert done.status == 302 and done.headers["Location"].startswith("https://app.example/cb?")
    assert (await ProfileStore(client.hs.db).get_profile("@jo:hs.test")) == {"displayname": "Jo March"}
    again = await client.post("/_synapse/client/pick_username/account_details", data={"username": "jo2"},
                              headers=headers, allow_redirects=False)
    assert again.status == 400 and await client.hs.auth.users.get_user("@jo2:hs.test") is None


async def test_several_idps_or_unknown_idp(client):
    resp = await client.get("/_matrix/client/v3/login/sso/redirect/oidc-nope",
                            params={"redirectUrl": "https://app.example/"}, allow_redirects=False)
    assert resp.status == 404
    picker = await client.get("/_synapse/client/pick_idp", params={"redirectUrl": "https://app.example/"})
    assert picker.status == 200 and 'value="oidc-fake"' in await picker.text()
    chosen = await client.get("/_synapse/client/pick_idp", params={"redirectUrl": "https://app.example/",
                                                                   "idp": "oidc-fake"}, allow_redirects=False)
    assert chosen.headers["Location"].startswith("/_matrix/client/v3/login/sso/redirect/oidc-fake?")


async def test_jwt_login_over_http(client):
    good = pyjwt.encode({"sub": "kim", "name": "Kim"}, JWT_SECRET, algorithm="HS256")
    resp = await client.post("/_matrix/client/v3/login", json={"type": "org.matrix.login.jwt", "token": good})
    assert resp.status == 200 and (await resp.json())["user_id"] == "@kim:hs.test"
    assert (await ProfileStore(client.hs.db).get_profile("@kim:hs.test")) == {"displayname": "Kim"}
    bad = pyjwt.encode({"sub": "kim"}, "wrong-secret-wrong-secret-wrong-secret", algorithm="HS256")
    resp = await client.post("/_matrix/client/v3/login", json={"type": "org.matrix.login.jwt", "token": bad})
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"


@pytest.mark.parametrize("mapping_config", [{"localpart_template": "{{ user.preferred_username }}",
                                             "email_template": "{{ user.email }}"}])
async def test_email_template_stores_a_validated_address(client, idp):
    """The mapping's address goes on the new account (the IdP vouched for it); one that is
    already another account's is left out, and the login still works."""
    async def login(sub: str, username: str, email: str) -> str:
        return await sso_login(client, idp, sub, preferred_username=username, email=email)

    token = await login("u-meg", "meg", " Meg@Example.org")
    resp = await client.get("/_matrix/client/v3/account/3pid", headers={"Authorization": f"Bearer {token}"})
    (threepid,) = (await resp.json())["threepids"]
    assert (threepid["medium"], threepid["address"]) == ("email", "meg@example.org") and threepid["validated_at"] > 0
    assert await client.hs.threepids.user_of("email", "meg@example.org") == "@meg:hs.test"
    token = await login("u-amy", "amy", "meg@example.org")  # Meg's already
    resp = await client.get("/_matrix/client/v3/account/3pid", headers={"Authorization": f"Bearer {token}"})
    assert (await resp.json())["threepids"] == []


@pytest.mark.parametrize("oidc_overrides", [{"issuer": lambda idp: idp.issuer + "/", "skip_verification": False}])
async def test_issuer_with_a_trailing_slash_is_the_same_issuer(client, idp):
    """The config says ``http://idp/``, discovery and the ID token ``http://idp``: checked, and equal."""
    assert (await sso_login_response(client, idp, preferred_username="dana"))["user_id"] == "@dana:hs.test"


@pytest.mark.parametrize("oidc_overrides", [{"skip_verification": False}])
@pytest.mark.parametrize("idp", ["/other"], indirect=True)
async def test_another_issuer_is_refused(client, idp):
    resp = await client.get("/_matrix/client/v3/login/sso/redirect", params={"redirectUrl": "https://app.example/"},
                            allow_redirects=False)
    assert resp.status == 503 and "issuer" in await resp.text(), await resp.text()


@pytest.mark.parametrize("oidc_overrides", [{
    "passthrough_authorization_parameters": ["login_hint", "ui_locales"],
    "additional_authorization_parameters": {"prompt": "login", "login_hint": "nobody"}}])
async def test_listed_query_parameters_are_passed_to_the_idp(client, idp):
    *_, query = await start(client, login_hint="alice@example.org", ui_locales="de", acr_values="gold",
                            state="mine")
    assert (query["login_hint"], query["ui_locales"], query["prompt"]) == ("alice@example.org", "de", "login")
    assert "acr_values" not in query  # not listed
    assert query["state"] != "mine" and query["client_id"] == "gateway"  # ours, whatever the client sends
    *_, query = await start(client)
    assert query["login_hint"] == "nobody" and "ui_locales" not in query


@pytest.mark.parametrize("mapping_config", [{
    "localpart_template": "{{ user.preferred_username }}",
    "extra_attributes": {"org.example.department": "{{ user.dept }}", "user_id": "@mallory:hs.test"}}])
async def test_extra_attributes_come_back_in_the_login_response(client, idp):
    body = await sso_login_response(client, idp, preferred_username="erin", dept="Ops")
    assert body["org.example.department"] == "Ops"
    assert body["user_id"] == "@erin:hs.test" and body["access_token"]  # never replaced
    # Only the login that the token came from carries them.
    password = await client.post("/_matrix/client/v3/login", json={
        "type": "org.matrix.login.jwt", "token": pyjwt.encode({"sub": "frank"}, JWT_SECRET, algorithm="HS256")})
    assert "org.example.department" not in await password.json()

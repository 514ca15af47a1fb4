"""Attacks on the OAuth 2.0 API: redirect URIs that browsers and our parser read differently,
session fixation on our pages, guessing device user codes."""

from __future__ import annotations

import pytest

from gateway.oauth.clients import ClientMetadataError, redirect_uri_allowed, validate_client_metadata

from .conftest import new_request


def _refused(body) -> ClientMetadataError:
    with pytest.raises(ClientMetadataError) as e:
        validate_client_metadata(body)
    return e.value


# --- redirect URIs: what the browser will open is what we checked ---------------------------------

@pytest.mark.parametrize("uri", [
    "http://evil.example\\@127.0.0.1:1234/cb",  # a browser: host evil.example
    "http://evil.example@127.0.0.1:1234/cb",     # userinfo at use, never registered
    "http://127.0.0.1:1234@evil.example/cb",
    "http://127.0.0.1:1234\\@evil.example/cb",
    "http://127.0.0.1:12\t34/cb",                 # urllib drops the tab, so would the browser: refuse
    "http://127.0.0.1:1234/cb\\..\\x",
])
def test_loopback_port_matching_takes_only_host_and_port(uri):
    assert not redirect_uri_allowed(uri, ["http://127.0.0.1/cb"])
    assert redirect_uri_allowed("http://127.0.0.1:1234/cb", ["http://127.0.0.1/cb"])


async def test_authorize_never_redirects_to_a_backslash_authority(client, hs):
    """The loopback rule let "http://evil.example\\@127.0.0.1:1234/cb" through (urllib: host
    127.0.0.1); a browser goes to evil.example with the code, or, for a refused request,
    with no user interaction at all."""
    resp = await client.post("/_gateway/oauth2/register", json={
        "application_type": "native", "client_uri": "https://app.example.org/", "client_name": "Native",
        "redirect_uris": ["http://127.0.0.1/cb"]})
    assert resp.status == 201
    client_id = (await resp.json())["client_id"]
    req = new_request(client_id, redirect_uri="http://evil.example\\@127.0.0.1:1234/cb")
    # A bad scope: the error would go straight back to the redirect URI.
    resp = await client.get("/_gateway/oauth2/authorize", params=req.query(scope="nonsense"),
                            allow_redirects=False)
    assert resp.status == 400 and "Location" not in resp.headers
    req = new_request(client_id, redirect_uri="http://127.0.0.1:1234/cb")
    resp = await client.get("/_gateway/oauth2/authorize", params=req.query(scope="nonsense"),
                            allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"].startswith("http://127.0.0.1:1234/cb?error=invalid_scope")


@pytest.mark.parametrize("uri", [
    "https://evil.example\\.app.example.org/cb",  # a browser: host evil.example, path /.app.example.org/cb
    "https://evil.example%2f.app.example.org/cb",
    "https://evil.example%5c.app.example.org/cb",
    "https://app.example.org/caf\u00e9",
    "https://\u0430pp.example.org/cb",  # Cyrillic a
])
def test_web_redirect_uri_must_be_plain_for_browsers(uri):
    error = _refused({"client_uri": "https://app.example.org/", "redirect_uris": [uri]})
    assert error.error == "invalid_redirect_uri"


def test_metadata_uris_cannot_claim_the_client_host_with_a_backslash():
    """The consent screen names the client_uri host; logo and policy links must be there."""
    for key in ("logo_uri", "policy_uri", "tos_uri"):
        error = _refused({"client_uri": "https://app.example.org/", "redirect_uris": ["https://app.example.org/cb"],
                          key: "https://evil.example\\.app.example.org/x"})
        assert error.error == "invalid_client_metadata"
    error = _refused({"client_uri": "https://evil.example\\.app.example.org/",
                      "redirect_uris": ["https://evil.example\\.app.example.org/cb"]})
    assert error.error == "invalid_client_metadata"


@pytest.mark.parametrize("client_uri,uri", [("https://javascript/", "javascript:alert(document.domain)//"),
                                            ("https://data/", "data:text/html,<script>alert(1)</script>"),
                                            ("https://vbscript/", "vbscript:msgbox")])
def test_private_use_scheme_is_a_reversed_domain(client_uri, uri):
    error = _refused({"application_type": "native", "client_uri": client_uri, "redirect_uris": [uri]})
    assert error.error == "invalid_redirect_uri"
    # A real reversed domain stays fine.
    assert validate_client_metadata({"application_type": "native", "client_uri": "https://app.example.org/",
                                     "redirect_uris": ["org.example.app:/cb"]})["redirect_uris"]


# --- session fixation: a cookie planted before sign-in is worth nothing after it ------------------

async def test_signing_in_gives_the_browser_a_new_cookie(client, hs, aiohttp_client_factory):
    """An attacker who can plant our cookie in the victim's browser (a sibling subdomain, a
    plain-http response) knew the key the victim then signed in with, and so was signed in
    as the victim on our pages (consent, account page). The key changes at sign-in; a
    pending authorisation request follows the browser to its new key."""
    from gateway.oauth.pages import BROWSER_COOKIE

    from .conftest import csrf_of, follow, hidden, make_user, register_client

    await make_user(hs)
    planted = "attacker-knows-this-key"
    client.session.cookie_jar.update_cookies({BROWSER_COOKIE: planted})
    req = new_request(await register_client(client))
    resp = await client.get("/_gateway/oauth2/authorize", params=req.query(), allow_redirects=False)
    login_page = await follow(client, resp.headers["Location"])
    html = await login_page.text()
    resp = await client.post("/_gateway/login", data={"csrf": csrf_of(html), "next": hidden(html, "next"),
                                                      "username": "alice", "password": "correct horse battery"},
                             allow_redirects=False)
    assert resp.status == 302
    # The attacker's copy of the planted cookie is not signed in.
    attacker = await aiohttp_client_factory()
    attacker.session.cookie_jar.update_cookies({BROWSER_COOKIE: planted})
    assert (await attacker.get("/_gateway/account/", allow_redirects=False)).headers["Location"].startswith(
        "/_gateway/login")
    assert await hs.oauth.browser_user(planted) is None
    # The victim's browser goes on to the consent screen of its pending request.
    consent = await follow(client, resp.headers["Location"])
    assert consent.status == 200, await consent.text()
    assert hidden(await consent.text(), "grant")


async def test_an_upstream_sign_in_changes_the_cookie_too(client, hs):
    from gateway.oauth.pages import BROWSER_COOKIE
    from sso.sessions import hash_key

    from .conftest import make_user

    alice = await make_user(hs)
    planted = "planted-before-the-idp"
    client.session.cookie_jar.update_cookies({BROWSER_COOKIE: planted})
    # What the SSO gateway hands back at the end of an IdP login, for this browser.
    token = await hs.auth.create_login_token(alice, auth_provider_id="oidc-x", auth_provider_session_id="s1")
    resp = await client.get("/_gateway/login/upstream_done", params={
        "loginToken": token, "b": hash_key("upstream:" + planted)[:32], "next": "/_gateway/account/"},
        allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/_gateway/account/"
    assert await hs.oauth.browser_user(planted) is None
    assert (await hs.oauth.browser_user(resp.cookies[BROWSER_COOKIE].value)).user_id == alice


async def test_registering_changes_the_cookie_too(client, hs):
    from gateway.oauth.pages import BROWSER_COOKIE

    from .conftest import csrf_of, hidden

    planted = "planted-before-registration"
    client.session.cookie_jar.update_cookies({BROWSER_COOKIE: planted})
    page = await client.get("/_gateway/register")
    html = await page.text()
    resp = await client.post("/_gateway/register", data={
        "csrf": csrf_of(html), "next": hidden(html, "next"), "username": "newbie",
        "password": "a long password", "password_confirm": "a long password"}, allow_redirects=False)
    assert resp.status == 302, await resp.text()
    assert await hs.oauth.browser_user(planted) is None
    cookie = resp.cookies[BROWSER_COOKIE]
    assert cookie.value != planted and cookie["httponly"]
    assert (await hs.oauth.browser_user(cookie.value)).user_id == f"@newbie:{hs.server_name}"


# --- device user codes cannot be guessed at speed ---------------------------------------------------

@pytest.fixture
async def strict_client(tmp_path, database_config, clock):
    """A server with rc_login.failed_attempts at 3, then one per 100 s (slow enough that a
    busy machine cannot refill the bucket during the test)."""
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.app import build_listener_app
    from gateway.server import HomeServer

    from .conftest import server_config

    server = await HomeServer.open(server_config(database_config, tmp_path, {}, {
        "rc_login": {"failed_attempts": {"per_second": 0.01, "burst_count": 3}}}))
    server.clock_ms = clock
    async with TestClient(TestServer(build_listener_app(server, server.config.listeners[0]))) as c:
        yield c, server
    await server.close()


async def test_wrong_user_codes_are_rate_limited(strict_client):
    """A user code has 20^8 values; with live codes around and no limit, a script could try
    codes until one binds to its browser (then approve it with its own account, or deny it)."""
    from .conftest import csrf_of, register_client

    client, hs = strict_client
    client_id = await register_client(client)
    resp = await client.post("/_gateway/oauth2/device", data={
        "client_id": client_id, "scope": "urn:matrix:client:api:* urn:matrix:client:device:TV00000001"})
    user_code = (await resp.json())["user_code"]
    csrf = csrf_of(await (await client.get("/_gateway/link")).text())
    wrong = "BBBB-BBBB" if user_code != "BBBB-BBBB" else "CCCC-CCCC"
    for _ in range(3):
        resp = await client.post("/_gateway/link", data={"csrf": csrf, "code": wrong}, allow_redirects=False)
        assert resp.status == 400
    resp = await client.post("/_gateway/link", data={"csrf": csrf, "code": user_code}, allow_redirects=False)
    assert resp.status == 429 and "Too many wrong codes" in await resp.text()
    grant = await hs.oauth.store.get_grant_by_user_code(user_code.replace("-", ""))
    assert grant.browser_key_hash is None  # not bound while limited

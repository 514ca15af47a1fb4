"""The authorisation code grant over HTTP: our pages, the token endpoint, and every refusal
(RFC 6749 4.1, RFC 7636; spec "Authorisation code flow")."""

from __future__ import annotations

import urllib.parse

import pytest

from .conftest import (REDIRECT_URI, authorize, callback_params, csrf_of, exchange, follow, hidden, login,
                       make_user, new_request, register_client, sign_in, token_request, whoami)


@pytest.fixture
async def alice(hs):
    return await make_user(hs)


async def test_password_login_then_the_token_works_everywhere(client, hs, alice):
    req, tokens = await login(client, hs)
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 300
    assert tokens["scope"] == f"urn:matrix:client:api:* urn:matrix:client:device:{req.device_id}"
    assert tokens["refresh_token"] and "id_token" not in tokens
    status, me = await whoami(client, tokens["access_token"])
    assert status == 200 and me == {"user_id": alice, "device_id": req.device_id, "is_guest": False}
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    sync = await client.get("/_matrix/client/v3/sync", headers=headers)
    assert sync.status == 200
    room = await client.post("/_matrix/client/v3/createRoom", json={"name": "via OAuth"}, headers=headers)
    assert room.status == 200
    devices = await (await client.get("/_matrix/client/v3/devices", headers=headers)).json()
    device = next(d for d in devices["devices"] if d["device_id"] == req.device_id)
    assert device["display_name"] == "Test App"  # the client's name


async def test_login_page_has_password_manager_fields_and_refuses_bad_passwords(client, hs, alice):
    client_id = await register_client(client)
    req = new_request(client_id)
    resp = await client.get("/_gateway/oauth2/authorize", params=req.query(), allow_redirects=False)
    login_url = resp.headers["Location"]
    html = await (await follow(client, login_url)).text()
    assert 'name="username"' in html and 'autocomplete="username"' in html
    assert 'name="password"' in html and 'autocomplete="current-password"' in html
    bad = await sign_in(client, login_url, password="wrong password")
    assert bad.status == 401 and "Invalid username or password" in await bad.text()
    # No CSRF token: refused before the password is even looked at.
    forged = await client.post("/_gateway/login", data={"username": "alice", "password": "x", "next": "/"},
                               allow_redirects=False)
    assert forged.status == 403 and "csrf" in await forged.text()
    ok = await sign_in(client, login_url)
    assert ok.status == 302 and ok.headers["Location"].startswith("/_gateway/oauth2/consent")


async def test_consent_names_the_client_and_deny_redirects_with_access_denied(client, hs, alice):
    client_id = await register_client(client, client_name="Fancy Client", **{"client_name#fr": "Client chic"},
                                      policy_uri="https://app.example.org/privacy")
    req = new_request(client_id)
    resp = await client.get("/_gateway/oauth2/authorize", params=req.query(), allow_redirects=False)
    consent_url = (await sign_in(client, resp.headers["Location"])).headers["Location"]
    html = await (await client.get(consent_url, headers={"Accept-Language": "fr-CH, en;q=0.5"})).text()
    assert "Client chic" in html and "app.example.org" in html and "https://app.example.org/privacy" in html
    assert req.device_id in html and "@alice:hs.test" in html
    # A cross-site post (no CSRF token) changes nothing.
    forged = await client.post("/_gateway/oauth2/consent", data={"grant": hidden(html, "grant"), "action": "allow"},
                               allow_redirects=False)
    assert forged.status == 403
    resp = await client.post("/_gateway/oauth2/consent", data={"csrf": csrf_of(html), "grant": hidden(html, "grant"),
                                                               "action": "deny"}, allow_redirects=False)
    params = callback_params(resp.headers["Location"])
    assert params["error"] == "access_denied" and params["state"] == req.state and "code" not in params


async def test_signed_in_browser_skips_the_password_and_fragment_mode(client, hs, alice):
    req, _ = await login(client, hs)
    req2 = new_request(req.client_id)
    resp = await client.get("/_gateway/oauth2/authorize", params=req2.query(response_mode="fragment"),
                            allow_redirects=False)
    assert resp.headers["Location"].startswith("/_gateway/oauth2/consent")  # no login page this time
    page = await follow(client, resp.headers["Location"])
    html = await page.text()
    resp = await client.post("/_gateway/oauth2/consent", data={"csrf": csrf_of(html), "grant": hidden(html, "grant"),
                                                               "action": "allow"}, allow_redirects=False)
    location = resp.headers["Location"]
    assert location.startswith(REDIRECT_URI + "#") and "?" not in location
    params = callback_params(location)
    assert params["state"] == req2.state
    await exchange(client, req2, params["code"])


async def test_consent_page_belongs_to_the_browser_that_asked(client, hs, alice, aiohttp_client_factory):
    client_id = await register_client(client)
    req = new_request(client_id)
    resp = await client.get("/_gateway/oauth2/authorize", params=req.query(), allow_redirects=False)
    consent_url = (await sign_in(client, resp.headers["Location"])).headers["Location"]
    other = await aiohttp_client_factory()
    resp = await other.get(consent_url, allow_redirects=False)
    assert resp.status == 403 and "another browser" in await resp.text()


@pytest.mark.parametrize("change,error", [
    ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge": "too-short"}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"scope": "urn:matrix:client:api:*"}, "invalid_scope"),
    ({"scope": "urn:matrix:client:api:* urn:matrix:client:device:A urn:matrix:client:device:B"}, "invalid_scope"),
    ({"response_mode": "form_post"}, "invalid_request"),
])
async def test_bad_requests_go_back_to_the_client_with_an_error(client, hs, change, error):
    client_id = await register_client(client)
    req = new_request(client_id)
    resp = await client.get("/_gateway/oauth2/authorize", params=req.query(**change), allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"].startswith(REDIRECT_URI)
    params = callback_params(resp.headers["Location"])
    assert params["error"] == error and params["state"] == req.state


@pytest.mark.parametrize("change", [
    {"client_id": "unknown-client"},
    {"redirect_uri": "https://evil.example.net/callback"},
    {"redirect_uri": "https://app.example.org/callback/../other"},
    {"redirect_uri": REDIRECT_URI + "?extra=1"},
    {"redirect_uri": None},
])
async def test_unknown_client_or_redirect_uri_never_redirects(client, hs, change):
    client_id = await register_client(client)
    req = new_request(client_id)
    resp = await client.get("/_gateway/oauth2/authorize", params=req.query(**change), allow_redirects=False)
    assert resp.status == 400 and "Location" not in resp.headers
    assert "error-code" in await resp.text()


async def test_native_loopback_redirect_with_any_port(client, hs, alice):
    client_id = await register_client(client, application_type="native",
                                      redirect_uris=["http://127.0.0.1/callback", "org.example.app:/cb"])
    req = new_request(client_id, redirect_uri="http://127.0.0.1:49152/callback")
    params = await authorize(client, req)
    tokens = await exchange(client, req, params["code"])
    assert (await whoami(client, tokens["access_token"]))[0] == 200
    req2 = new_request(client_id, redirect_uri="org.example.app:/cb")
    resp = await client.get("/_gateway/oauth2/authorize", params=req2.query(), allow_redirects=False)
    assert resp.status == 302  # to consent (signed in): the private-use scheme is registered


async def test_code_is_single_use_and_a_replay_revokes_what_it_gave(client, hs, alice):
    client_id = await register_client(client)
    req = new_request(client_id)
    code = (await authorize(client, req))["code"]
    tokens = await exchange(client, req, code)
    status, body = await token_request(client, grant_type="authorization_code", code=code,
                                       redirect_uri=req.redirect_uri, client_id=client_id, code_verifier=req.verifier)
    assert status == 400 and body["error"] == "invalid_grant"
    assert (await whoami(client, tokens["access_token"]))[0] == 401
    status, body = await token_request(client, grant_type="refresh_token", refresh_token=tokens["refresh_token"],
                                       client_id=client_id)
    assert body["error"] == "invalid_grant"


async def test_code_bound_to_client_redirect_uri_and_verifier(client, hs, alice):
    client_id = await register_client(client)
    other_client = await register_client(client)
    req = new_request(client_id)
    code = (await authorize(client, req))["code"]
    base = {"grant_type": "authorization_code", "code": code, "redirect_uri": req.redirect_uri,
            "client_id": client_id, "code_verifier": req.verifier}
    for change, error, status_code in [
        ({"code_verifier": "A" * 43}, "invalid_grant", 400),
        ({"code_verifier": None}, "invalid_grant", 400),
        ({"redirect_uri": "https://app.example.org/other"}, "invalid_grant", 400),
        ({"client_id": other_client}, "invalid_grant", 400),
        ({"client_id": "nobody"}, "invalid_client", 401),
        ({"client_id": None}, "invalid_request", 400),
        ({"code": "forged"}, "invalid_grant", 400),
        ({"grant_type": "password"}, "unsupported_grant_type", 400),
    ]:
        form = {k: v for k, v in {**base, **change}.items() if v is not None}
        status, body = await token_request(client, **form)
        assert (status, body["error"]) == (status_code, error), change
    # Failed attempts do not use the code up: the real client still gets its tokens.
    await exchange(client, req, code)


async def test_expired_code_and_expired_access_token(client, hs, alice, clock):
    client_id = await register_client(client)
    req = new_request(client_id)
    code = (await authorize(client, req))["code"]
    clock.advance(3 * 60 * 1000)
    status, body = await token_request(client, grant_type="authorization_code", code=code, client_id=client_id,
                                       redirect_uri=req.redirect_uri, code_verifier=req.verifier)
    assert body["error"] == "invalid_grant"
    req2, tokens = await login(client, hs)
    clock.advance(301 * 1000)
    status, body = await whoami(client, tokens["access_token"])
    assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN" and body["soft_logout"] is True


async def test_the_token_endpoint_wants_a_form(client, hs):
    resp = await client.post("/_gateway/oauth2/token", json={"grant_type": "authorization_code"})
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_request"
    resp = await client.post("/_gateway/oauth2/token", data="grant_type=refresh_token&grant_type=refresh_token",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (await resp.json())["error"] == "invalid_request"


async def test_sign_up_with_prompt_create(client, hs):
    client_id = await register_client(client)
    req = new_request(client_id)
    resp = await client.get("/_gateway/oauth2/authorize", params=req.query(prompt="create"), allow_redirects=False)
    assert resp.headers["Location"].startswith("/_gateway/register")
    html = await (await follow(client, resp.headers["Location"])).text()
    assert 'autocomplete="new-password"' in html
    form = {"csrf": csrf_of(html), "next": hidden(html, "next"), "username": "bob", "password": "long enough pw",
            "password_confirm": "long enough pw"}
    mismatch = await client.post("/_gateway/register", data={**form, "password_confirm": "other"},
                                 allow_redirects=False)
    assert mismatch.status == 400 and "not the same" in await mismatch.text()
    resp = await client.post("/_gateway/register", data=form, allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"].startswith("/_gateway/oauth2/consent")
    html = await (await follow(client, resp.headers["Location"])).text()
    resp = await client.post("/_gateway/oauth2/consent", data={"csrf": csrf_of(html), "grant": hidden(html, "grant"),
                                                               "action": "allow"}, allow_redirects=False)
    tokens = await exchange(client, req, callback_params(resp.headers["Location"])["code"])
    assert (await whoami(client, tokens["access_token"]))[1]["user_id"] == "@bob:hs.test"
    # The new account has a password: the legacy API takes it too.
    legacy = await client.post("/_matrix/client/v3/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"}, "password": "long enough pw"})
    assert legacy.status == 200
    # Signing up signed the browser in under a new cookie: the form opened before has a stale CSRF token.
    fresh = csrf_of(await (await client.get("/_gateway/register")).text())
    taken = await client.post("/_gateway/register", data={**form, "csrf": fresh, "username": "bob"},
                              allow_redirects=False)
    assert taken.status == 400 and "already taken" in await taken.text()


async def test_next_parameter_is_never_an_open_redirect(client, hs, alice):
    for evil in ("https://evil.example.net/", "//evil.example.net/x", "/_gateway/..//evil", "/\\evil.example.net"):
        resp = await sign_in(client, "/_gateway/login?" + urllib.parse.urlencode({"next": evil, "force": "1"}))
        assert resp.status == 302 and resp.headers["Location"] == "/_gateway/account/", evil


@pytest.mark.parametrize("oauth_overrides", [{"static_clients": [{
    "client_id": "kiosk", "client_name": "Lobby screen", "client_uri": "https://kiosk.example.com/",
    "redirect_uris": ["https://kiosk.example.com/cb"], "grant_types": ["authorization_code", "refresh_token"]}]}])
async def test_a_static_client_from_the_config(client, hs, alice):
    req = new_request("kiosk", redirect_uri="https://kiosk.example.com/cb")
    params = await authorize(client, req)
    tokens = await exchange(client, req, params["code"])
    assert (await whoami(client, tokens["access_token"]))[0] == 200
    device = await hs.auth.devices.get_device(alice, req.device_id)
    assert device.display_name == "Lobby screen"


async def test_prompt_none_never_shows_a_page(client, hs, alice):
    """OpenID Connect Core 3.1.2.1: prompt=none answers at once. Clients register anew for every
    sign-in, so there is never a standing consent: login_required, then consent_required."""
    req = new_request(await register_client(client))
    resp = await client.get("/_gateway/oauth2/authorize", params=req.query(prompt="none"), allow_redirects=False)
    assert resp.status == 302
    params = callback_params(resp.headers["Location"])
    assert params["error"] == "login_required" and params["state"] == req.state
    await authorize(client, new_request(req.client_id))  # now the browser is signed in
    resp = await client.get("/_gateway/oauth2/authorize", params=req.query(prompt="none"), allow_redirects=False)
    params = callback_params(resp.headers["Location"])
    assert params["error"] == "consent_required" and params["state"] == req.state
    resp = await client.get("/_gateway/oauth2/authorize", params=req.query(prompt="none login"),
                            allow_redirects=False)
    assert callback_params(resp.headers["Location"])["error"] == "invalid_request"
    # prompt=login: signed in, yet asked to sign in again.
    resp = await client.get("/_gateway/oauth2/authorize", params=req.query(prompt="login"), allow_redirects=False)
    assert resp.headers["Location"].startswith("/_gateway/login") and "force=1" in resp.headers["Location"]

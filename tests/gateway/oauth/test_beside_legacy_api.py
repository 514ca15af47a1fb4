"""Living beside the legacy API (spec "OAuth 2.0 aware clients"), UI-auth with OAuth tokens,
the m.oauth stage, and the account management page."""

from __future__ import annotations

import urllib.parse
from types import SimpleNamespace

import pytest

from tests.gateway.client_api.test_keys import cross_signing

from .conftest import PASSWORD, csrf_of, follow, hidden, login, make_user, sign_in, token_request, whoami


@pytest.fixture
async def alice(hs):
    return await make_user(hs)


def bearer(tokens: dict) -> dict:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_sso_redirect_goes_through_our_pages_to_a_login_token(client, hs, alice):
    target = "https://client.example.org/after-login?x=1"
    resp = await client.get("/_matrix/client/v3/login/sso/redirect", params={"redirectUrl": target, "action": "login"},
                            allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"].startswith("/_gateway/login?")
    resp = await sign_in(client, resp.headers["Location"])
    assert resp.headers["Location"].startswith("/_gateway/login/sso_continue")
    page = await follow(client, resp.headers["Location"])
    html = await page.text()
    # Not whitelisted: the confirmation page shows where the token goes, and links there.
    assert page.status == 200 and "client.example.org" in html
    link = next(part.split('"')[0] for part in html.split('href="')[1:] if part.startswith("https://client.example.org"))
    login_token = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(link.replace("&amp;", "&")).query))["loginToken"]
    resp = await client.post("/_matrix/client/v3/login", json={"type": "m.login.token", "token": login_token})
    body = await resp.json()
    assert resp.status == 200 and body["user_id"] == alice
    # A legacy token: UI-auth works for it as before (the password stage is offered).
    resp = await client.post("/_matrix/client/v3/account/password", json={"new_password": "n" * 12},
                             headers=bearer(body))
    assert resp.status == 401 and ["m.login.password"] in [f["stages"] for f in (await resp.json())["flows"]]


async def test_sso_redirect_with_action_register_and_a_bad_redirect_url(client, hs):
    resp = await client.get("/_matrix/client/v3/login/sso/redirect",
                            params={"redirectUrl": "https://client.example.org/", "action": "register"},
                            allow_redirects=False)
    assert resp.headers["Location"].startswith("/_gateway/register?")
    resp = await client.get("/_gateway/login/sso_continue", params={"redirectUrl": "javascript:alert(1)"},
                            allow_redirects=False)
    assert resp.status == 400 and "Location" not in resp.headers


async def test_legacy_ui_auth_endpoints_point_oauth_tokens_to_the_account_page(client, hs, alice):
    req, tokens = await login(client, hs)
    for method, path, body, action in [
        ("POST", "/_matrix/client/v3/account/password", {"new_password": "x" * 12}, None),
        ("POST", "/_matrix/client/v3/account/deactivate", {}, "org.matrix.account_deactivate"),
        ("DELETE", f"/_matrix/client/v3/devices/{req.device_id}", {}, "org.matrix.device_delete"),
        ("POST", "/_matrix/client/v3/delete_devices", {"devices": [req.device_id]}, "org.matrix.devices_list"),
    ]:
        resp = await client.request(method, path, json=body, headers=bearer(tokens))
        err = await resp.json()
        assert resp.status == 403 and err["errcode"] == "M_FORBIDDEN", (path, err)
        assert err["account_management_uri"].startswith("http://localhost/_gateway/account/")
        if action:
            assert f"action={action}" in err["account_management_uri"]
    assert (await whoami(client, tokens["access_token"]))[0] == 200  # nothing happened
    caps = await (await client.get("/_matrix/client/v3/capabilities", headers=bearer(tokens))).json()
    assert caps["capabilities"]["m.change_password"] == {"enabled": False}


async def test_cross_signing_reset_through_the_m_oauth_stage(client, hs, alice, clock):
    _, tokens = await login(client, hs)

    def signing_keys(tag: str) -> dict:
        return cross_signing(SimpleNamespace(user_id=alice))[1]

    url = "/_matrix/client/v3/keys/device_signing/upload"
    assert (await client.post(url, json=signing_keys("a"), headers=bearer(tokens))).status == 200  # first: no auth
    resp = await client.post(url, json=signing_keys("b"), headers=bearer(tokens))
    body = await resp.json()
    assert resp.status == 401 and body["flows"] == [{"stages": ["m.oauth"]}]
    reset_url = body["params"]["m.oauth"]["url"]
    assert reset_url == "http://localhost/_gateway/account/?action=org.matrix.cross_signing_reset"
    session = body["session"]
    retry = {**signing_keys("b"), "auth": {"session": session}}
    refused = await client.post(url, json=retry, headers=bearer(tokens))
    assert refused.status == 401 and (await refused.json())["errcode"] == "M_UNAUTHORIZED"
    # The user allows it on the account page (signed in: this browser logged in just now).
    page = await follow(client, reset_url)
    html = await page.text()
    assert page.status == 200 and "Reset your identity" in html
    resp = await client.post("/_gateway/account/", data={"csrf": csrf_of(html), "op": "allow_cross_signing_reset",
                                                          "action": "org.matrix.cross_signing_reset"})
    assert resp.status == 200 and "within 10 minutes" in await resp.text()
    assert (await client.post(url, json=retry, headers=bearer(tokens))).status == 200
    # After the window, the next replacement asks again.
    clock.advance(11 * 60 * 1000)
    _, fresh = await login(client, hs)
    resp = await client.post(url, json=signing_keys("c"), headers=bearer(fresh))
    assert resp.status == 401 and (await resp.json())["flows"] == [{"stages": ["m.oauth"]}]


async def test_account_page_actions(client, hs, alice, clock):
    req, tokens = await login(client, hs)
    page = await follow(client, f"/_gateway/account/?action=org.matrix.device_view&device_id={req.device_id}")
    html = await page.text()
    assert page.status == 200 and req.device_id in html and "Sign out this device" in html
    resp = await client.post("/_gateway/account/", data={"csrf": csrf_of(html), "op": "delete_device",
                                                          "device_id": req.device_id})
    assert resp.status == 200 and "is signed out" in await resp.text()
    assert (await whoami(client, tokens["access_token"]))[0] == 401
    status, body = await token_request(
        client, grant_type="refresh_token", refresh_token=tokens["refresh_token"], client_id=req.client_id)
    assert body["error"] == "invalid_grant"
    # Profile.
    html = await (await follow(client, "/_gateway/account/?action=org.matrix.profile")).text()
    resp = await client.post("/_gateway/account/", data={"csrf": csrf_of(html), "op": "set_displayname",
                                                          "displayname": "Alice L.", "action": "org.matrix.profile"})
    assert resp.status == 200
    from gateway.storage.profiles import ProfileStore

    assert (await ProfileStore(hs.db).get_profile(alice))["displayname"] == "Alice L."
    # A device that is not the user's.
    resp = await client.post("/_gateway/account/", data={"csrf": csrf_of(html), "op": "delete_device",
                                                          "device_id": "NOTMINE"})
    assert resp.status == 404
    # Deactivation wants a recent sign-in and the user ID typed out.
    clock.advance(11 * 60 * 1000)
    resp = await client.post("/_gateway/account/", data={"csrf": csrf_of(html), "op": "deactivate",
                                                          "action": "org.matrix.account_deactivate",
                                                          "confirm": alice}, allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"].startswith("/_gateway/login?")
    assert "force=1" in resp.headers["Location"]
    await sign_in(client, resp.headers["Location"])
    html = await (await follow(client, "/_gateway/account/?action=org.matrix.account_deactivate")).text()
    resp = await client.post("/_gateway/account/", data={"csrf": csrf_of(html), "op": "deactivate",
                                                          "action": "org.matrix.account_deactivate", "confirm": "nope"})
    assert resp.status == 400
    resp = await client.post("/_gateway/account/", data={"csrf": csrf_of(html), "op": "deactivate",
                                                          "action": "org.matrix.account_deactivate", "confirm": alice})
    assert resp.status == 200 and "deactivated" in await resp.text()
    assert (await hs.auth.users.get_user(alice)).deactivated
    legacy = await client.post("/_matrix/client/v3/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD})
    assert legacy.status == 403


async def test_account_page_needs_a_sign_in_and_csrf(client, hs, alice):
    resp = await client.get("/_gateway/account/?action=org.matrix.devices_list", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"].startswith("/_gateway/login?")
    resp = await sign_in(client, resp.headers["Location"])
    assert resp.headers["Location"] == "/_gateway/account/?action=org.matrix.devices_list"
    forged = await client.post("/_gateway/account/", data={"op": "deactivate", "confirm": alice})
    assert forged.status == 403
    assert not (await hs.auth.users.get_user(alice)).deactivated
    html = await (await follow(client, "/_gateway/account/")).text()
    out = await client.post("/_gateway/logout", data={"csrf": csrf_of(html), "next": hidden(html, "next")},
                            allow_redirects=False)
    assert out.status == 302
    again = await client.get("/_gateway/account/", allow_redirects=False)
    assert again.status == 302 and again.headers["Location"].startswith("/_gateway/login")

"""The password form of our sign-in page asks the password auth provider modules (LDAP and
the like) as the legacy ``/login`` does, and takes e-mail addresses (``check_3pid_auth``)."""

from __future__ import annotations

import pytest

from gateway.server import HomeServer

from .conftest import (csrf_of, exchange, follow, hidden, make_user, new_request, register_client, server_config,
                       whoami)

MODULES = {"modules": [{"module": "tests.gateway.modules.sample_modules.Passwords", "config": {}}]}


@pytest.fixture
def server_extra() -> dict:
    return MODULES


async def _password_form(client, req, username: str, password: str):
    resp = await client.get("/_gateway/oauth2/authorize", params=req.query(), allow_redirects=False)
    page = await follow(client, resp.headers["Location"])
    html = await page.text()
    return await client.post("/_gateway/login", data={"csrf": csrf_of(html), "next": hidden(html, "next"),
                                                      "username": username, "password": password},
                             allow_redirects=False)


async def _consent_and_exchange(client, req, location: str) -> dict:
    page = await follow(client, location)
    html = await page.text()
    resp = await client.post("/_gateway/oauth2/consent", data={"csrf": csrf_of(html), "grant": hidden(html, "grant"),
                                                               "action": "allow"}, allow_redirects=False)
    code = dict(p.split("=", 1) for p in resp.headers["Location"].split("?", 1)[1].split("&"))["code"]
    return await exchange(client, req, code)


async def test_the_password_form_asks_password_modules(client, hs, aiohttp_client_factory):
    await make_user(hs, "carol")
    await make_user(hs, "pat")
    for username, password, user_id in [
        ("carol", "module-secret", "@carol:hs.test"),          # the module's auth_checkers vouch
        ("carol", "correct horse battery", "@carol:hs.test"),  # then our own database
        ("pat@example.com", "mail-secret", "@pat:hs.test"),     # an e-mail address: check_3pid_auth
    ]:
        browser = await aiohttp_client_factory()
        req = new_request(await register_client(browser))
        resp = await _password_form(browser, req, username, password)
        assert resp.status == 302, await resp.text()
        assert resp.headers["Location"].startswith("/_gateway/oauth2/consent")
        tokens = await _consent_and_exchange(browser, req, resp.headers["Location"])
        status, body = await whoami(browser, tokens["access_token"])
        assert status == 200 and body["user_id"] == user_id and body["device_id"] == req.device_id


async def test_wrong_passwords_stay_on_the_form(client, hs):
    await make_user(hs, "carol")
    req = new_request(await register_client(client))
    for username, password in [
        ("carol", "wrong"),
        ("nobody", "module-secret"),     # a module may only vouch for users that exist here
        ("pat@example.com", "wrong"),
        ("@carol", "module-secret"),     # not a user ID: refused as a wrong password, not a crash
    ]:
        resp = await _password_form(client, req, username, password)
        assert resp.status == 401, (username, await resp.text())
        assert "Invalid username or password" in await resp.text()

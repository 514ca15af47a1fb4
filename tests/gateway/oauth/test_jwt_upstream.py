"""A token service (``jwt_config.login_url``) as an upstream login of our sign-in page: out
with a ``redirect_uri``, back with ``token=<JWT>``, checked as ``org.matrix.login.jwt``."""

from __future__ import annotations

import urllib.parse

import jwt
import pytest

from gateway.server import HomeServer

from .conftest import callback_params, csrf_of, exchange, follow, hidden, new_request, register_client, \
    server_config, whoami

SECRET = "a shared secret that is long enough for HS256 and for HS384 and HS512 too, 64+"
PORTAL = "https://portal.example.org/matrix?tenant=7"
JWT_CONFIG = {"jwt_config": {"enabled": True, "secret": SECRET, "algorithm": "HS256", "login_url": PORTAL,
                             "idp_name": "Staff portal", "display_name_claim": "name"}}


@pytest.fixture
def server_extra() -> dict:
    return JWT_CONFIG


def token_for(subject: str, secret: str = SECRET, **claims) -> str:
    return jwt.encode({"sub": subject, **claims}, secret, algorithm="HS256")


async def to_portal(client, req) -> str:
    """From the authorisation request to the portal: the redirect_uri it is given."""
    resp = await client.get("/_gateway/oauth2/authorize", params=req.query(), allow_redirects=False)
    page = await follow(client, resp.headers["Location"])
    html = await page.text()
    assert "Staff portal" in html and 'id="idp-jwt"' in html
    button = urllib.parse.unquote(html.split('id="idp-jwt"')[0].rsplit('href="', 1)[1].split('"')[0])
    resp = await follow(client, button.replace("&amp;", "&"))
    assert resp.status == 302
    out = urllib.parse.urlsplit(resp.headers["Location"])
    assert f"{out.scheme}://{out.netloc}{out.path}" == "https://portal.example.org/matrix"
    query = dict(urllib.parse.parse_qsl(out.query))
    assert query["tenant"] == "7"
    return query["redirect_uri"]


def back_from_portal(redirect_uri: str, token: str) -> str:
    return redirect_uri + "&" + urllib.parse.urlencode({"token": token})


async def test_sign_in_through_the_token_service(client, hs):
    req = new_request(await register_client(client))
    back = await to_portal(client, req)
    assert back.startswith("http://localhost/_gateway/login/jwt_done?")
    resp = await follow(client, back_from_portal(back, token_for("jdoe", name="Jane Doe")))
    assert resp.status == 302 and resp.headers["Location"].startswith("/_gateway/oauth2/consent")
    html = await (await follow(client, resp.headers["Location"])).text()
    resp = await client.post("/_gateway/oauth2/consent", data={"csrf": csrf_of(html), "grant": hidden(html, "grant"),
                                                               "action": "allow"}, allow_redirects=False)
    tokens = await exchange(client, req, callback_params(resp.headers["Location"])["code"])
    status, me = await whoami(client, tokens["access_token"])
    assert status == 200 and me["user_id"] == "@jdoe:hs.test" and me["device_id"] == req.device_id
    profile = await (await client.get("/_matrix/client/v3/profile/@jdoe:hs.test")).json()
    assert profile["displayname"] == "Jane Doe"  # made at the first sign-in


async def test_token_service_answers_that_are_refused(client, hs, aiohttp_client_factory):
    req = new_request(await register_client(client))
    back = await to_portal(client, req)
    for token in (token_for("jdoe", secret="not the secret at all, but as long"),
                  jwt.encode({"sub": "jdoe"}, SECRET + "x", algorithm="HS384"), "", "garbage"):
        resp = await follow(client, back_from_portal(back, token))
        assert resp.status == 403 and "Location" not in resp.headers
    # A valid token, but in another browser than the one that went out (login CSRF).
    other = await aiohttp_client_factory()
    resp = await follow(other, back_from_portal(back, token_for("mallory")))
    assert resp.status == 403 and "Location" not in resp.headers
    assert await hs.auth.users.get_user("@mallory:hs.test") is None


async def test_no_button_without_a_login_url(client, tmp_path, database_config, oauth_overrides, clock):
    server = await HomeServer.open(server_config(database_config, tmp_path, oauth_overrides, {
        "jwt_config": {k: v for k, v in JWT_CONFIG["jwt_config"].items() if k != "login_url"}}))
    try:
        from aiohttp.test_utils import TestClient, TestServer

        from gateway.app import build_listener_app

        async with TestClient(TestServer(build_listener_app(server, server.config.listeners[0]))) as c:
            html = await (await c.get("/_gateway/login")).text()
            assert "idp-jwt" not in html
            assert (await c.get("/_gateway/login/jwt", allow_redirects=False)).status == 404
    finally:
        await server.close()

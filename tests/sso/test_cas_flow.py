"""CAS login against a real CAS server (django-mama-cas on loopback), driven over HTTP.

Covers: the login flows, the full login (protocol 2 and 3) ending in m.login.token,
display name and required attributes, grandfathered accounts, forged and replayed
tickets, and a CAS answer that redirects elsewhere or carries XML entities.
"""

from __future__ import annotations

import re
import urllib.parse

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import build_listener_app
from gateway.config import parse_config
from gateway.server import HomeServer
from sso.handler import BROWSER_COOKIE
from tests.conftest import free_port
from tests.support.cas_server import USERS, running_cas_server


@pytest.fixture(scope="module")
def cas_url(tmp_path_factory):
    with running_cas_server(free_port(), tmp_path_factory.mktemp("cas")) as url:
        yield url


def config(tmp_path, server_url, **cas):
    return parse_config({
        "server_name": "hs.test", "public_baseurl": "https://hs.test/",
        "listeners": [{"port": 1, "resources": [{"names": ["client"]}]}],
        "database": {"name": "sqlite3", "args": {"database": str(tmp_path / "hs.db")}},
        "signing_key_path": str(tmp_path / "signing.key"),
        "cas_config": {"enabled": True, "server_url": server_url, "displayname_attribute": "displayName",
                       "required_attributes": {"userGroup": "staff"}, **cas},
        "sso": {"client_whitelist": ["https://app.example/"]},
    }, config_path=str(tmp_path / "homeserver.yaml"))


@pytest.fixture
async def make_client(tmp_path):
    opened = []

    async def make(server_url, **cas):
        c = config(tmp_path / str(len(opened)), server_url, **cas)
        (tmp_path / str(len(opened))).mkdir()
        hs = await HomeServer.open(c)
        client = TestClient(TestServer(build_listener_app(hs, c.listeners[0])))
        await client.start_server()
        client.hs = hs
        opened.append(client)
        return client

    yield make
    for client in opened:
        await client.close()
        await client.hs.close()


async def start(client, redirect_url="https://app.example/cb?x=1"):
    resp = await client.get("/_matrix/client/v3/login/sso/redirect/cas", params={"redirectUrl": redirect_url},
                            allow_redirects=False)
    assert resp.status == 302, await resp.text()
    cookie = resp.cookies[BROWSER_COOKIE]
    assert cookie["path"] == "/_matrix/client/" and cookie["httponly"]
    return resp.headers["Location"], cookie.value


async def cas_login(location: str, username: str) -> str:
    """Log in at the CAS server's form; returns the service URL it sends the browser to."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(location) as resp:
            assert resp.status == 200
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', await resp.text()).group(1)
        async with browser.post(str(resp.url), data={"csrfmiddlewaretoken": token, "username": username,
                                                     "password": USERS[username][0]},
                                allow_redirects=False) as resp:
            assert resp.status == 302, await resp.text()
            return resp.headers["Location"]


async def back_to_gateway(client, service_url: str, cookie: str):
    parts = urllib.parse.urlsplit(service_url)
    assert f"{parts.scheme}://{parts.netloc}" == "https://hs.test"
    return await client.get(f"{parts.path}?{parts.query}", headers={"Cookie": f"{BROWSER_COOKIE}={cookie}"},
                            allow_redirects=False)


async def logged_in_user(client, resp) -> str:
    assert resp.status == 302, await resp.text()
    target = urllib.parse.urlsplit(resp.headers["Location"])
    assert target.netloc == "app.example"
    token = dict(urllib.parse.parse_qsl(target.query))["loginToken"]
    login = await client.post("/_matrix/client/v3/login", json={"type": "m.login.token", "token": token})
    assert login.status == 200, await login.text()
    return (await login.json())["user_id"]


async def expect_refused(resp, status: int, code: str) -> None:
    text = await resp.text()
    assert resp.status == status, text
    assert "Location" not in resp.headers and f'id="error-code">{code}<' in text, text


async def test_login_flows(make_client, cas_url):
    client = await make_client(cas_url, idp_name="University", idp_brand="cas")
    flows = (await (await client.get("/_matrix/client/v3/login")).json())["flows"]
    assert {"type": "m.login.cas"} in flows
    sso = next(f for f in flows if f["type"] == "m.login.sso")
    assert sso["identity_providers"] == [{"id": "cas", "name": "University", "brand": "cas"}]
    # The legacy redirect goes the same way.
    resp = await client.get("/_matrix/client/r0/login/cas/redirect",
                            params={"redirectUrl": "https://app.example/"}, allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"].startswith(f"{cas_url}/login?service=")


@pytest.mark.parametrize("version", [2, 3])
async def test_full_login(make_client, cas_url, version):
    client = await make_client(cas_url, protocol_version=version)
    location, cookie = await start(client)
    service = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["service"]
    assert service.startswith("https://hs.test/_matrix/client/r0/login/cas/ticket?state=")
    back = await cas_login(location, "carol")
    assert back.startswith(service + "&ticket=ST-")
    assert await logged_in_user(client, await back_to_gateway(client, back, cookie)) == "@carol:hs.test"
    profile = await client.hs.auth.users.get_user("@carol:hs.test")
    assert profile is not None
    from gateway.storage.profiles import ProfileStore

    assert (await ProfileStore(client.hs.db).get_profile("@carol:hs.test"))["displayname"] == "Carol Cas"


async def test_existing_account_of_that_name_is_taken_over(make_client, cas_url):
    """As in Synapse: a CAS username maps straight to the account of that name."""
    client = await make_client(cas_url)
    await client.hs.auth.users.create_user("@erin.upper:hs.test", password_hash="x", created_ts=0)
    location, cookie = await start(client)
    back = await cas_login(location, "Erin.Upper")
    assert await logged_in_user(client, await back_to_gateway(client, back, cookie)) == "@erin.upper:hs.test"


async def test_required_attributes_refuse(make_client, cas_url):
    client = await make_client(cas_url)
    location, cookie = await start(client)
    back = await cas_login(location, "dan")  # userGroup: guests
    await expect_refused(await back_to_gateway(client, back, cookie), 403, "unauthorised")
    assert await client.hs.auth.users.get_user("@dan:hs.test") is None


async def test_forged_and_replayed_tickets_refused(make_client, cas_url):
    client = await make_client(cas_url)
    location, cookie = await start(client)
    service = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["service"]
    forged = service + "&ticket=ST-1-forgedforgedforgedforged-cas"
    await expect_refused(await back_to_gateway(client, forged, cookie), 403, "invalid_ticket")

    location, cookie = await start(client)
    back = await cas_login(location, "carol")
    assert (await back_to_gateway(client, back, cookie)).status == 302
    # The same callback again: our session is used up.
    await expect_refused(await back_to_gateway(client, back, cookie), 400, "session_used")
    # The same ticket for a new login: the CAS server refuses it (a ticket is validated once).
    location, cookie = await start(client)
    service = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["service"]
    ticket = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(back).query))["ticket"]
    await expect_refused(await back_to_gateway(client, f"{service}&ticket={ticket}", cookie), 403, "invalid_ticket")
    # From another browser (no cookie).
    location, _ = await start(client)
    back = await cas_login(location, "carol")
    await expect_refused(await back_to_gateway(client, back, "other-browser"), 400, "mismatching_session")


class FakeCas:
    """A CAS server that misbehaves: redirects its validation elsewhere, or answers with entities."""

    def __init__(self):
        self.mode = "redirect"
        self.hits: list[str] = []
        self.elsewhere_hits = 0
        self.elsewhere_url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cas/proxyValidate", self.validate)
        app.router.add_get("/cas/p3/proxyValidate", self.validate)
        app.router.add_get("/elsewhere", self.elsewhere)
        return app

    async def validate(self, request):
        self.hits.append(request.path)
        if self.mode == "redirect":
            raise web.HTTPFound(self.elsewhere_url)
        if self.mode == "entities":
            return web.Response(content_type="text/xml", text=(
                '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
                '<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas"><cas:authenticationSuccess>'
                '<cas:user>&b;</cas:user></cas:authenticationSuccess></cas:serviceResponse>'))
        return web.Response(content_type="text/xml", text="<not-cas/>")

    async def elsewhere(self, request):
        self.elsewhere_hits += 1
        return web.Response(content_type="text/xml", text=(
            '<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas"><cas:authenticationSuccess>'
            '<cas:user>admin</cas:user></cas:authenticationSuccess></cas:serviceResponse>'))


async def test_misbehaving_cas_server(make_client):
    fake = FakeCas()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    try:
        base = str(server.make_url("")).rstrip("/")
        fake.elsewhere_url = f"{base}/elsewhere"
        client = await make_client(f"{base}/cas", protocol_version=3)
        for mode, status, code in [("redirect", 502, "server_error"), ("entities", 502, "invalid_cas_response"),
                                   ("junk", 502, "invalid_cas_response")]:
            fake.mode = mode
            location, cookie = await start(client)
            service = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["service"]
            await expect_refused(await back_to_gateway(client, service + "&ticket=ST-1", cookie), status, code)
        assert fake.hits == ["/cas/p3/proxyValidate"] * 3
        assert fake.elsewhere_hits == 0  # the redirect was not followed
        assert await client.hs.auth.users.get_user("@admin:hs.test") is None
    finally:
        await server.close()


async def test_ui_auth_through_cas(make_client, cas_url):
    """UI-auth (m.login.sso) with CAS: only the same CAS user completes the stage."""
    client = await make_client(cas_url)
    location, cookie = await start(client)
    login = await client.post("/_matrix/client/v3/login", json={"type": "m.login.token", "token": dict(
        urllib.parse.parse_qsl(urllib.parse.urlsplit(
            (await back_to_gateway(client, await cas_login(location, "carol"), cookie)).headers["Location"]
        ).query))["loginToken"]})
    me = await login.json()
    headers = {"Authorization": f"Bearer {me['access_token']}"}
    url = f"/_matrix/client/v3/devices/{me['device_id']}"
    first = await client.delete(url, headers=headers, json={})
    body = await first.json()
    assert first.status == 401 and body["flows"] == [{"stages": ["m.login.sso"]}]

    async def through_cas(username: str):
        go = await client.get("/_matrix/client/v3/auth/m.login.sso/fallback/web",
                              params={"session": body["session"], "idp_id": "cas"}, allow_redirects=False)
        assert go.status == 302 and go.headers["Location"].startswith(f"{cas_url}/login?service=")
        return await back_to_gateway(client, await cas_login(go.headers["Location"], username),
                                     go.cookies[BROWSER_COOKIE].value)

    wrong = await through_cas("Erin.Upper")
    assert wrong.status == 403 and "@carol:hs.test" in await wrong.text()
    right = await through_cas("carol")
    assert right.status == 200 and "authDone" in await right.text()
    done = await client.delete(url, headers=headers, json={"auth": {"type": "m.login.sso", "session": body["session"]}})
    assert done.status == 200, await done.text()
    assert (await client.get("/_matrix/client/v3/account/whoami", headers=headers)).status == 401

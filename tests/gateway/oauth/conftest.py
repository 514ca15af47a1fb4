"""An OAuth-enabled server in-process, a settable clock, and helpers that act as a client
(registration, PKCE) and as a browser (cookies, CSRF tokens) over HTTP."""

from __future__ import annotations

import re
import secrets
import time
import urllib.parse
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import build_listener_app
from gateway.config import parse_config
from gateway.oauth.pkce import s256_challenge
from gateway.server import HomeServer
from tests.gateway.client_api.conftest import BASE_CONFIG

CLIENT_URI = "https://app.example.org/"
REDIRECT_URI = "https://app.example.org/callback"
PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@pytest.fixture
def oauth_overrides() -> dict:
    return {}


def server_config(database_config, tmp_path, oauth_overrides: dict, extra: dict | None = None):
    db = {"name": "sqlite3", "args": {"database": database_config.args["database"]}} \
        if database_config.engine == "sqlite" else {"name": "psycopg2", "args": database_config.args}
    return parse_config({**BASE_CONFIG, "database": db, "public_baseurl": "http://localhost/",
                         "oauth": {"enabled": True, "enable_registration": True, **oauth_overrides},
                         **(extra or {})}, config_path=str(tmp_path / "homeserver.yaml"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server_extra() -> dict:
    """Config beside the ``oauth`` section (a test module overrides it: modules, jwt_config...)."""
    return {}


@pytest.fixture
async def hs(tmp_path, database_config, oauth_overrides, clock, server_extra):
    server = await HomeServer.open(server_config(database_config, tmp_path, oauth_overrides, server_extra))
    server.clock_ms = clock  # before any service is built: they all read this clock
    yield server
    await server.close()


@pytest.fixture
async def client(hs):
    async with TestClient(TestServer(build_listener_app(hs, hs.config.listeners[0]))) as c:
        yield c


async def make_user(hs: HomeServer, localpart: str = "alice", password: str = PASSWORD) -> str:
    from gateway.passwords import hash_password

    user_id = f"@{localpart}:{hs.server_name}"
    await hs.auth.users.create_user(user_id, password_hash=hash_password(password, 4), created_ts=hs.clock_ms(),
                                    displayname=localpart)
    return user_id


async def register_client(client: TestClient, **metadata) -> str:
    body = {"client_uri": CLIENT_URI, "redirect_uris": [REDIRECT_URI], "client_name": "Test App",
            "grant_types": ["authorization_code", "refresh_token",
                            "urn:ietf:params:oauth:grant-type:device_code"],
            "response_types": ["code"], "token_endpoint_auth_method": "none", **metadata}
    resp = await client.post("/_gateway/oauth2/register", json=body)
    data = await resp.json()
    assert resp.status == 201, data
    return data["client_id"]


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def hidden(html: str, name: str) -> str:
    return re.search(rf'name="{name}" value="([^"]*)"', html).group(1)


def callback_params(location: str) -> dict[str, str]:
    parts = urllib.parse.urlsplit(location)
    return dict(urllib.parse.parse_qsl(parts.fragment or parts.query))


@dataclass
class AuthRequest:
    client_id: str
    verifier: str
    state: str
    device_id: str
    redirect_uri: str = REDIRECT_URI

    def query(self, **extra) -> dict[str, str]:
        q = {"response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect_uri,
             "scope": f"urn:matrix:client:api:* urn:matrix:client:device:{self.device_id}", "state": self.state,
             "code_challenge": s256_challenge(self.verifier), "code_challenge_method": "S256",
             "response_mode": "query"}
        q.update(extra)
        return {k: v for k, v in q.items() if v is not None}


def new_request(client_id: str, device_id: str | None = None, **kw) -> AuthRequest:
    return AuthRequest(client_id, secrets.token_urlsafe(48), secrets.token_urlsafe(8),
                       device_id or secrets.token_hex(5).upper(), **kw)


async def follow(client: TestClient, location: str):
    """GET one of our pages (a path, or our absolute URL)."""
    path = urllib.parse.urlsplit(location)
    return await client.get(path.path + ("?" + path.query if path.query else ""), allow_redirects=False)


async def sign_in(client: TestClient, login_location: str, username: str = "alice", password: str = PASSWORD):
    """On the login page at ``login_location``: the password form. Returns the response."""
    page = await follow(client, login_location)
    assert page.status == 200, await page.text()
    html = await page.text()
    return await client.post("/_gateway/login", data={"csrf": csrf_of(html), "next": hidden(html, "next"),
                                                      "username": username, "password": password},
                             allow_redirects=False)


async def authorize(client: TestClient, req: AuthRequest, *, username: str = "alice", allow: bool = True,
                    **extra) -> dict[str, str]:
    """The whole browser side: authorisation request, password (unless signed in), consent.
    Returns the parameters the client's redirect URI receives."""
    resp = await client.get("/_gateway/oauth2/authorize", params=req.query(**extra), allow_redirects=False)
    assert resp.status == 302, await resp.text()
    location = resp.headers["Location"]
    if location.startswith("/_gateway/login"):
        resp = await sign_in(client, location, username)
        assert resp.status == 302, await resp.text()
        location = resp.headers["Location"]
    assert location.startswith("/_gateway/oauth2/consent"), location
    page = await follow(client, location)
    html = await page.text()
    assert page.status == 200, html
    resp = await client.post("/_gateway/oauth2/consent", data={
        "csrf": csrf_of(html), "grant": hidden(html, "grant"), "action": "allow" if allow else "deny"},
        allow_redirects=False)
    assert resp.status == 302, await resp.text()
    assert resp.headers["Location"].startswith(req.redirect_uri.split("?")[0]), resp.headers["Location"]
    return callback_params(resp.headers["Location"])


async def token_request(client: TestClient, **form) -> tuple[int, dict]:
    resp = await client.post("/_gateway/oauth2/token", data=form)
    return resp.status, await resp.json()


async def exchange(client: TestClient, req: AuthRequest, code: str) -> dict:
    status, body = await token_request(client, grant_type="authorization_code", code=code,
                                       redirect_uri=req.redirect_uri, client_id=req.client_id,
                                       code_verifier=req.verifier)
    assert status == 200, body
    return body


async def login(client: TestClient, hs: HomeServer, device_id: str | None = None, **extra) -> tuple[AuthRequest, dict]:
    """Register a client and go through the code flow; (request, token response)."""
    client_id = await register_client(client)
    req = new_request(client_id, device_id)
    params = await authorize(client, req, **extra)
    return req, await exchange(client, req, params["code"])


async def whoami(client: TestClient, token: str):
    resp = await client.get("/_matrix/client/v3/account/whoami", headers={"Authorization": f"Bearer {token}"})
    return resp.status, await resp.json()


@pytest.fixture
async def aiohttp_client_factory(client):
    """Another browser (its own cookie jar) on the same server."""
    opened = []

    async def make():
        other = TestClient(client.server)
        await other.start_server()
        opened.append(other)
        return other

    yield make
    for other in opened:
        await other.session.close()

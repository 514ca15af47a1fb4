"""The OAuth 2.0 API end to end: matrix-js-sdk 43's own OAuth code (node) as the client,
headless Chromium as the user's browser, and real upstream IdPs.

One gateway per module, with a password user and three upstreams: npm oidc-provider (OIDC),
npm saml-idp (SAML) and django-mama-cas (CAS). For each way of signing in: the SDK discovers
``auth_metadata``, registers a web client whose redirect URI is a tiny page on its own origin
(the redirect target Playwright cannot route), builds the authorisation URL (PKCE S256,
fragment mode); the browser signs in on our page and allows the client on our consent page;
the SDK exchanges the code and syncs. Then: the SDK refreshing an expired token by itself,
revocation, and the device grant.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from tests.conftest import free_port
from tests.e2e.browser import chromium, screenshot_path
from tests.e2e.oidc_idp import running_oidc_provider
from tests.e2e.saml_idp import running_saml_idp
from tests.e2e.test_sso_oidc_login import idp_login
from tests.support.cas_server import USERS, running_cas_server
from tests.support.gateway_server import running_gateway
from tests.support.tls import TestCA

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("oauth_js_sdk.mjs")
SDK = ROOT / ".cache" / "node" / "node_modules" / "matrix-js-sdk" / "lib" / "index.js"
PASSWORD = "pass-word-e2e"
TOKEN_LIFETIME_S = 4

WEB_CLIENT_ENTRY = Path(__file__).with_name("oauth_web_client.mjs")
ESBUILD = ROOT / ".cache" / "node" / "node_modules" / ".bin" / "esbuild"
WEB_CLIENT_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>Web client</title></head>
<body><h1>Web test client</h1><p id="status">starting…</p><p id="whoami"></p>
<script src="/sdk-app.js"></script></body></html>"""
CALLBACK_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>Client</title></head>
<body><h1>Test client</h1><p id="where"></p>
<script>document.getElementById("where").textContent = location.href;</script></body></html>"""


def bundle_web_client(directory: Path) -> Path:
    """matrix-js-sdk and oauth_web_client.mjs as one browser script (esbuild)."""
    import os
    import subprocess

    assert ESBUILD.exists(), "run scripts/install-node-deps first (esbuild is missing)"
    out = directory / "sdk-app.js"
    subprocess.run([str(ESBUILD), str(WEB_CLIENT_ENTRY), "--bundle", "--format=iife", "--platform=browser",
                    f"--outfile={out}", "--log-level=error"], check=True, timeout=120,
                   env={**os.environ, "NODE_PATH": str(SDK.parents[2])})
    return out


@contextlib.asynccontextmanager
async def client_origin(bundle: Path | None = None) -> AsyncIterator[str]:
    """The web client's own origin: its redirect URI page, its logo, and the bundled web app."""
    app = web.Application()

    async def web_client(request: web.Request) -> web.Response:
        return web.Response(text=WEB_CLIENT_PAGE, content_type="text/html")

    async def script(request: web.Request) -> web.FileResponse:
        return web.FileResponse(bundle, headers={"Content-Type": "text/javascript"})

    if bundle is not None:
        app.router.add_get("/app", web_client)
        app.router.add_get("/sdk-app.js", script)

    async def callback(request: web.Request) -> web.Response:
        return web.Response(text=CALLBACK_PAGE, content_type="text/html")

    async def logo(request: web.Request) -> web.Response:
        svg = '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>'
        return web.Response(text=svg, content_type="image/svg+xml")

    app.router.add_get("/callback", callback)
    app.router.add_get("/logo.png", logo)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class Setup:
    def __init__(self, gw, origin: str, browser, tmp: Path):
        self.gw, self.origin, self.browser, self.tmp = gw, origin, browser, tmp
        self.base = gw.client_url
        self.redirect_uri = f"{origin}/callback"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory) -> AsyncIterator[Setup]:
    assert SDK.exists(), "run scripts/install-node-deps first (matrix-js-sdk is missing)"
    tmp = tmp_path_factory.mktemp("oauth-e2e")
    oidc_port, saml_port, cas_port = free_port(), free_port(), free_port()
    async with contextlib.AsyncExitStack() as stack:
        origin = await stack.enter_async_context(client_origin(bundle_web_client(tmp)))
        config = {
            "enable_registration": True, "enable_registration_without_verification": True,
            "oauth": {"enabled": True, "allow_loopback_http_web_clients": True,
                      "access_token_lifetime": f"{TOKEN_LIFETIME_S}s", "device_code_poll_interval": "1s"},
            "oidc_providers": [{
                "idp_id": "e2e", "idp_name": "Example OIDC", "issuer": f"http://127.0.0.1:{oidc_port}",
                "client_id": "gateway", "client_secret": "e2e-secret", "scopes": ["openid", "profile", "email"],
                "skip_verification": True, "backchannel_logout_enabled": True,
                "user_mapping_provider": {"config": {"display_name_template": "{{ user.name }}"}},
            }],
            "saml2_config": {
                "sp_config": {"metadata": {"remote": [{"url": f"http://127.0.0.1:{saml_port}/metadata"}]},
                              "allow_unknown_attributes": True},
                "user_mapping_provider": {"config": {"mxid_source_attribute": "uid"}},
                "attribute_requirements": [{"attribute": "userGroup", "value": "staff"}],
                "idp_name": "Example SAML",
            },
            "cas_config": {"enabled": True, "server_url": f"http://127.0.0.1:{cas_port}/cas",
                           "displayname_attribute": "displayName", "idp_name": "Example CAS"},
        }
        gw = await stack.enter_async_context(running_gateway(tmp, TestCA(tmp / "ca"), config))
        await stack.enter_async_context(running_oidc_provider(oidc_port, {
            "client_id": "gateway", "client_secret": "e2e-secret",
            "redirect_uris": [f"{gw.client_url}/_synapse/client/oidc/callback"],
            "backchannel_logout_uri": f"{gw.client_url}/_synapse/client/oidc/backchannel_logout",
            "backchannel_logout_session_required": True}))
        await stack.enter_async_context(running_saml_idp(
            saml_port, tmp / "saml-idp", f"{gw.client_url}/_synapse/client/saml2/authn_response",
            f"{gw.client_url}/_synapse/client/saml2/metadata.xml"))
        stack.enter_context(running_cas_server(cas_port, tmp / "cas"))
        browser = await stack.enter_async_context(chromium())
        async with aiohttp.ClientSession() as http:
            resp = await http.post(f"{gw.client_url}/_matrix/client/v3/register", json={
                "username": "paula", "password": PASSWORD, "auth": {"type": "m.login.dummy"}})
            assert resp.status == 200, await resp.text()
        yield Setup(gw, origin, browser, tmp)


async def js_sdk(command: str, **args) -> dict:
    proc = await asyncio.create_subprocess_exec(
        "node", str(DRIVER), str(SDK), command, json.dumps(args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    lines = out.decode().strip().splitlines()
    result = json.loads(lines[-1]) if lines else {}
    assert proc.returncode == 0, (result, err.decode()[-3000:])
    return result


async def start(s: Setup, **extra) -> dict:
    started = await js_sdk("start", baseUrl=s.base, redirectUri=s.redirect_uri, clientUri=s.origin + "/", **extra)
    assert started["url"].startswith(f"{s.base}/_gateway/oauth2/authorize?")
    assert started["context"]["codeVerifier"] and started["context"]["deviceId"]
    return started


async def consent_and_code(s: Setup, page, started: dict, shot: str | None = None) -> str:
    """On our consent page: check it names the client, allow, and take the code the client's
    page receives in its URL fragment."""
    await page.wait_for_selector("#allow")
    assert await page.inner_text("#client-name") == "js-sdk test client"
    assert await page.inner_text("#device-id") == started["context"]["deviceId"]
    if shot:
        await page.screenshot(path=screenshot_path(shot), full_page=True)
    await page.click("#allow")
    await page.wait_for_url(f"{s.redirect_uri}#*")
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(page.url).fragment))
    assert params["state"] == started["state"]
    return params["code"]


async def finish(s: Setup, started: dict, code: str, user_id: str) -> dict:
    done = await js_sdk("finish", baseUrl=s.base, redirectUri=s.redirect_uri, context=started["context"], code=code)
    assert done["whoami"]["user_id"] == user_id
    assert done["whoami"]["device_id"] == started["context"]["deviceId"]
    assert done["sync"] in ("PREPARED", "SYNCING") and done["roomId"].startswith("!")
    return done


async def test_password_login_sync_refresh_and_revoke(setup):
    s = setup
    started = await start(s)
    page = await s.browser.new_page(viewport={"width": 420, "height": 860})
    await page.goto(started["url"])
    await page.wait_for_selector("input[name=username][autocomplete=username]")
    assert await page.locator("input[name=password][autocomplete=current-password]").count() == 1
    for idp in ("oidc-e2e", "saml", "cas"):
        assert await page.locator(f"#idp-{idp}").count() == 1  # a button per upstream
    await page.screenshot(path=screenshot_path("oauth-login-page"), full_page=True)
    await page.fill("#username", "paula")
    await page.fill("#password", PASSWORD)
    await page.click("#sign-in")
    code = await consent_and_code(s, page, started, "oauth-consent-page")
    user_id = f"@paula:{s.gw.server_name}"
    done = await finish(s, started, code, user_id)
    tokens = done["tokens"]
    assert tokens["expires_in"] == TOKEN_LIFETIME_S and tokens["refresh_token"]

    # Wait (for the server's word, not a fixed time) until the access token has expired...
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            async with http.get(f"{s.base}/_matrix/client/v3/account/whoami",
                                headers={"Authorization": f"Bearer {tokens['access_token']}"}) as resp:
                if resp.status == 401:
                    assert (await resp.json())["soft_logout"] is True
                    break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the access token never expired")
    # ... then the SDK refreshes by itself (M_UNKNOWN_TOKEN -> refresh token grant -> retry).
    refreshed = await js_sdk("refresh", baseUrl=s.base, context=started["context"], tokens=tokens)
    assert refreshed["whoami"]["user_id"] == user_id
    assert refreshed["refreshed"]["accessToken"] != tokens["access_token"]
    new_tokens = {"access_token": refreshed["refreshed"]["accessToken"],
                  "refresh_token": refreshed["refreshed"]["refreshToken"]}
    revoked = await js_sdk("revoke", baseUrl=s.base, context=started["context"], tokens=new_tokens)
    assert revoked["whoamiAfter"] == "M_UNKNOWN_TOKEN"
    # The same browser is signed in: the next authorisation goes straight to consent.
    again = await start(s)
    await page.goto(again["url"])
    code = await consent_and_code(s, page, again)
    await finish(s, again, code, user_id)


async def test_upstream_oidc(setup):
    s = setup
    started = await start(s)
    page = await (await s.browser.new_context()).new_page()
    await page.goto(started["url"])
    await page.click("#idp-oidc-e2e")
    await idp_login(page, "olivia")
    await page.wait_for_selector("#username")  # the SSO gateway's username picker
    assert "/_synapse/client/pick_username/account_details" in page.url
    await page.fill("#username", "olivia.oidc")
    await page.click("#continue")
    code = await consent_and_code(s, page, started)
    done = await finish(s, started, code, f"@olivia.oidc:{s.gw.server_name}")
    # Signing out at the IdP (OIDC back-channel logout) ends the OAuth session it started.
    token_url = f"{s.base}/_gateway/oauth2/token"
    async with aiohttp.ClientSession() as http:
        async def refresh(refresh_token: str) -> tuple[int, dict]:
            async with http.post(token_url, data={"grant_type": "refresh_token", "refresh_token": refresh_token,
                                                  "client_id": started["context"]["clientId"]}) as resp:
                return resp.status, await resp.json()

        status, fresh = await refresh(done["tokens"]["refresh_token"])
        assert status == 200, fresh
        issuer = s.gw.config.sso.oidc_providers[0].issuer
        await page.goto(f"{issuer}/session/end")
        await page.click("button[name=logout][value=yes]")
        await page.wait_for_url(f"{issuer}/session/end/success")
        status, body = await refresh(fresh["refresh_token"])
        assert (status, body["error"]) == (400, "invalid_grant")
    # ... and this browser's sign-in on our pages: the next authorisation asks again.
    again = await start(s)
    await page.goto(again["url"])
    await page.wait_for_selector("#idp-oidc-e2e")


async def test_upstream_saml_with_attribute_requirements(setup):
    s = setup
    started = await start(s)
    page = await (await s.browser.new_context()).new_page()
    await page.goto(started["url"])
    await page.click("#idp-saml")
    await page.wait_for_selector("#btn-sign-in")
    await page.fill("#uid", "Sam.OAuth")
    await page.fill("#displayName", "Sam via SAML")
    await page.click("#btn-sign-in")
    code = await consent_and_code(s, page, started, "oauth-consent-after-saml")
    await finish(s, started, code, f"@sam.oauth:{s.gw.server_name}")
    # Someone outside the required group never reaches the consent page.
    refused = await start(s)
    page2 = await (await s.browser.new_context()).new_page()
    await page2.goto(refused["url"])
    await page2.click("#idp-saml")
    await page2.wait_for_selector("#btn-sign-in")
    await page2.fill("#uid", "guest")
    await page2.fill("#userGroup", "guests")
    await page2.click("#btn-sign-in")
    await page2.wait_for_selector("#error-code")
    assert await page2.inner_text("#error-code") == "unauthorised"


async def test_upstream_cas(setup):
    s = setup
    started = await start(s)
    page = await (await s.browser.new_context()).new_page()
    await page.goto(started["url"])
    await page.click("#idp-cas")
    await page.wait_for_selector("#id_username")
    await page.fill("#id_username", "carol")
    await page.fill("#id_password", USERS["carol"][0])
    await page.click("button[type=submit]")
    code = await consent_and_code(s, page, started)
    await finish(s, started, code, f"@carol:{s.gw.server_name}")


async def test_device_grant_with_js_sdk(setup):
    s = setup
    proc = await asyncio.create_subprocess_exec(
        "node", str(DRIVER), str(SDK), "device",
        json.dumps({"baseUrl": s.base, "clientUri": s.origin + "/", "deviceId": "LIVINGROOM"}),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
        assert "session" in first, (first, (await proc.stderr.read()).decode()[-2000:])
        session = first["session"]
        page = await (await s.browser.new_context()).new_page()
        await page.goto(session["verification_uri_complete"])  # e.g. scanned from a QR code
        assert await page.input_value("#code") == session["user_code"]
        await page.click("#continue")
        await page.fill("#username", "paula")
        await page.fill("#password", PASSWORD)
        await page.click("#sign-in")
        await page.wait_for_selector("#device-grant-note")
        await page.click("#allow")
        await page.wait_for_selector("#outcome")
        assert await page.inner_text("#outcome") == "Device connected"
        second = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
        assert second["whoami"] == {"user_id": f"@paula:{s.gw.server_name}", "device_id": "LIVINGROOM",
                                    "is_guest": False}
        assert second["tokens"]["refresh_token"]
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_web_client_bundled_on_its_own_origin(setup):
    """Element Web's path: the SDK in a page of the client's origin, every call cross-origin."""
    s = setup
    page = await (await s.browser.new_context()).new_page()
    await page.goto(f"{s.origin}/app?hs={urllib.parse.quote(s.base)}")
    await page.wait_for_selector("#password")  # discovery and registration ran in the page
    assert page.url.startswith(f"{s.base}/_gateway/login")
    await page.fill("#username", "paula")
    await page.fill("#password", PASSWORD)
    await page.click("#sign-in")
    await page.wait_for_selector("#allow")
    assert await page.inner_text("#client-name") == "Web test client"
    await page.click("#allow")
    await page.wait_for_function("document.getElementById('status').textContent !== 'starting…'")
    assert await page.inner_text("#status") == "synced"
    assert await page.inner_text("#whoami") == f"@paula:{s.gw.server_name}"
    assert page.url.startswith(f"{s.origin}/app#")
    await page.screenshot(path=screenshot_path("oauth-web-client-synced"), full_page=True)

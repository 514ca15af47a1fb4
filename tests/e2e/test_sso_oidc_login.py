"""The whole SSO login in a real browser against a real OpenID provider.

Headless Chromium (Playwright) -> our /login/sso/redirect -> npm oidc-provider's login form
-> our callback -> the username picker -> a local client page with ``loginToken``, which
does ``m.login.token`` and ``whoami`` itself, like a real client would.
"""

from __future__ import annotations

import contextlib
from typing import AsyncIterator

from aiohttp import web

from tests.conftest import free_port
from tests.e2e.browser import chromium, screenshot_path
from tests.e2e.oidc_idp import running_oidc_provider
from tests.support.gateway_server import running_gateway
from tests.support.tls import TestCA

CLIENT_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>Test client</title></head>
<body><h1>Test client</h1><p id="status">logging in…</p><p id="whoami"></p>
<script>
(async function () {
  const params = new URLSearchParams(location.search);
  const hs = params.get("hs");
  const login = await fetch(hs + "/_matrix/client/v3/login", {method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({type: "m.login.token", token: params.get("loginToken")})});
  const body = await login.json();
  if (!login.ok) { document.getElementById("status").textContent = "login failed: " + body.errcode; return; }
  const who = await fetch(hs + "/_matrix/client/v3/account/whoami",
    {headers: {Authorization: "Bearer " + body.access_token}});
  document.body.dataset.accessToken = body.access_token;
  document.getElementById("whoami").textContent = (await who.json()).user_id;
  document.getElementById("status").textContent = "logged in";
})();
</script></body></html>"""


@contextlib.asynccontextmanager
async def client_site() -> AsyncIterator[str]:
    """A tiny Matrix 'client': a page that finishes the login from its URL."""
    app = web.Application()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=CLIENT_PAGE, content_type="text/html")

    app.router.add_get("/client", page)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}/client"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def sso_setup(tmp_path, *, extra: dict | None = None, whitelist: bool = True, backchannel: bool = False):
    idp_port = free_port()
    issuer = f"http://127.0.0.1:{idp_port}"
    async with client_site() as client_url:
        config = {
            "oidc_providers": [{
                "idp_id": "e2e", "idp_name": "Example IdP", "issuer": issuer, "client_id": "gateway",
                "client_secret": "e2e-secret", "scopes": ["openid", "profile", "email"],
                # Plain http on loopback: as with Synapse, only with skip_verification.
                "skip_verification": True,
                "backchannel_logout_enabled": backchannel,
                "user_mapping_provider": {"config": {"display_name_template": "{{ user.name }}",
                                                     "email_template": "{{ user.email }}"}},
            }],
            "sso": {"client_whitelist": [client_url] if whitelist else []},
            **(extra or {}),
        }
        # The gateway starts while the IdP is still down: that must not stop it.
        async with running_gateway(tmp_path, TestCA(tmp_path / "ca"), config) as gw:
            callback = f"{gw.client_url}/_synapse/client/oidc/callback"
            client = {"client_id": "gateway", "client_secret": "e2e-secret", "redirect_uris": [callback]}
            if backchannel:
                client["backchannel_logout_uri"] = f"{gw.client_url}/_synapse/client/oidc/backchannel_logout"
                client["backchannel_logout_session_required"] = True
            async with running_oidc_provider(idp_port, client):
                yield gw, client_url


async def idp_login(page, username: str) -> None:
    """Fill oidc-provider's dev login form, then its consent form."""
    await page.wait_for_selector("input[name=login]")
    await page.fill("input[name=login]", username)
    await page.fill("input[name=password]", "anything")
    await page.click("button[type=submit]")
    await page.wait_for_load_state()
    if "/interaction/" in page.url:  # consent
        await page.click("button[type=submit]")


async def test_new_user_picks_username_then_client_logs_in(tmp_path):
    async with sso_setup(tmp_path) as (gw, client_url), chromium() as browser:
        page = await browser.new_page(viewport={"width": 420, "height": 860})  # a phone-sized window
        start = (f"{gw.client_url}/_matrix/client/v3/login/sso/redirect"
                 f"?redirectUrl={client_url}%3Fhs%3D{gw.client_url}")
        await page.goto(start)
        await idp_login(page, "alice")

        await page.wait_for_selector("#username")
        assert "/_synapse/client/pick_username/account_details" in page.url
        assert "Example IdP" in await page.inner_text("main")
        assert "Alice Example" in await page.inner_text("main")  # offered as display name
        await page.screenshot(path=screenshot_path("sso-username-picker"), full_page=True)

        await page.fill("#username", "alice.wonder")
        await page.wait_for_function("document.getElementById('username-hint').textContent.includes('available')")
        await page.click("#continue")

        await page.wait_for_selector("#whoami:not(:empty)")
        assert await page.inner_text("#whoami") == f"@alice.wonder:{gw.server_name}"
        assert await page.inner_text("#status") == "logged in"

        # Second login of the same IdP user: linked, no picker, straight back to the client.
        page2 = await browser.new_page()
        await page2.goto(start)
        await idp_login(page2, "alice")
        await page2.wait_for_selector("#whoami:not(:empty)")
        assert await page2.inner_text("#whoami") == f"@alice.wonder:{gw.server_name}"

        # Our other pages, for the screenshots: the IdP picker and an error.
        await page.goto(f"{gw.client_url}/_synapse/client/pick_idp?redirectUrl={client_url}")
        assert await page.locator("#idp-oidc-e2e").count() == 1
        await page.screenshot(path=screenshot_path("sso-idp-picker"), full_page=True)
        await page.goto(f"{gw.client_url}/_synapse/client/oidc/callback?state=forged&code=x")
        assert await page.inner_text("#error-code") == "unknown_session"
        await page.screenshot(path=screenshot_path("sso-error"), full_page=True)


async def test_unlisted_client_gets_confirmation_page_and_custom_template(tmp_path):
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "sso_redirect_confirm.html").write_text(
        "<!DOCTYPE html><title>ACME</title><h1 id='brand'>ACME sign-in check</h1>"
        "<p id='user'>{{ user_id }}</p><p id='where'>{{ display_url }}</p>"
        "<a id='continue' href='{{ redirect_url }}'>Continue</a>"
    )
    extra = {"templates": {"custom_template_directory": str(custom)},
             "oidc_providers": None}  # replaced below
    extra.pop("oidc_providers")
    async with sso_setup(tmp_path, extra=extra, whitelist=False) as (gw, client_url), chromium() as browser:
        page = await browser.new_page()
        await page.goto(f"{gw.client_url}/_matrix/client/r0/login/sso/redirect/oidc-e2e"
                        f"?redirectUrl={client_url}%3Fhs%3D{gw.client_url}")
        await idp_login(page, "bob")
        await page.wait_for_selector("#username")
        await page.fill("#username", "bob")
        await page.click("#continue")
        # Not whitelisted: never redirected silently; our custom page asks first.
        await page.wait_for_selector("#brand")
        assert await page.inner_text("#brand") == "ACME sign-in check"
        assert await page.inner_text("#user") == f"@bob:{gw.server_name}"
        assert page.url.startswith(gw.client_url)
        await page.screenshot(path=screenshot_path("sso-redirect-confirm-custom"))
        await page.click("#continue")
        await page.wait_for_selector("#whoami:not(:empty)")
        assert await page.inner_text("#whoami") == f"@bob:{gw.server_name}"


async def test_logout_at_the_idp_logs_out_the_device(tmp_path):
    """OIDC Back-Channel Logout: signing out at the IdP ends the Matrix session it started."""
    import aiohttp

    async with sso_setup(tmp_path, backchannel=True) as (gw, client_url), chromium() as browser:
        page = await browser.new_page()
        await page.goto(f"{gw.client_url}/_matrix/client/v3/login/sso/redirect"
                        f"?redirectUrl={client_url}%3Fhs%3D{gw.client_url}")
        await idp_login(page, "carol")
        await page.wait_for_selector("#username")
        await page.fill("#username", "carol")
        await page.click("#continue")
        await page.wait_for_selector("#whoami:not(:empty)")
        access_token = await page.evaluate("document.body.dataset.accessToken")
        issuer = gw.config.sso.oidc_providers[0].issuer

        async def whoami() -> int:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{gw.client_url}/_matrix/client/v3/account/whoami",
                                    headers={"Authorization": f"Bearer {access_token}"}) as resp:
                    return resp.status

        assert await whoami() == 200
        await page.goto(f"{issuer}/session/end")  # the IdP's own sign-out page
        await page.click("button[name=logout][value=yes]")
        await page.wait_for_load_state()
        assert page.url == f"{issuer}/session/end/success"
        # oidc-provider answers the browser only after our back-channel endpoint answered it.
        assert await whoami() == 401

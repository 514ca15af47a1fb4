"""UI-auth through SSO in a real browser against a real OpenID provider (npm oidc-provider).

A user who logged in through OIDC deletes one of their devices: the client gets the 401 with
``m.login.sso``, opens the spec's fallback page in a popup, the popup goes to the IdP and
back to our success page, which posts ``authDone`` to the client page; the client's retried
DELETE then succeeds. Another IdP user in the popup is refused (``sso_auth_bad_user.html``).

Spec: https://spec.matrix.org/latest/client-server-api/#fallback
"""

from __future__ import annotations

import aiohttp

from tests.e2e.browser import chromium, screenshot_path
from tests.e2e.test_sso_oidc_login import idp_login, sso_setup


async def _login(context, gw, client_url: str, username: str, pick: bool) -> tuple[object, str]:
    """A whole SSO login in a new page; returns the client page and its access token."""
    page = await context.new_page()
    await page.goto(f"{gw.client_url}/_matrix/client/v3/login/sso/redirect"
                    f"?redirectUrl={client_url}%3Fhs%3D{gw.client_url}")
    if "/interaction/" in page.url or await page.locator("input[name=login]").count():
        await idp_login(page, username)
    if pick:
        await page.wait_for_selector("#username")
        await page.fill("#username", username)
        await page.click("#continue")
    await page.wait_for_selector("#whoami:not(:empty)")
    return page, await page.evaluate("document.body.dataset.accessToken")


async def _api(method: str, url: str, token: str, body: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status, await resp.json()


async def test_delete_device_confirmed_through_the_idp(tmp_path):
    async with sso_setup(tmp_path) as (gw, client_url), chromium() as browser:
        context = await browser.new_context(viewport={"width": 420, "height": 860})
        page, token = await _login(context, gw, client_url, "dave", pick=True)
        _, phone_token = await _login(context, gw, client_url, "dave", pick=False)  # a second device
        status, me = await _api("GET", f"{gw.client_url}/_matrix/client/v3/account/whoami", phone_token, {})
        phone = me["device_id"]

        delete_url = f"{gw.client_url}/_matrix/client/v3/devices/{phone}"
        status, body = await _api("DELETE", delete_url, token, {})
        assert status == 401 and body["flows"] == [{"stages": ["m.login.sso"]}]
        session = body["session"]

        # The client opens the fallback page in a popup and waits for "authDone".
        fallback = f"{gw.client_url}/_matrix/client/v3/auth/m.login.sso/fallback/web?session={session}"
        async with page.expect_popup() as popup_info:
            await page.evaluate("""url => {
                window.addEventListener("message", ev => {
                    if (ev.data === "authDone") document.body.dataset.authDone = "yes";
                });
                window.open(url, "sso-auth", "width=420,height=700");
            }""", fallback)
        popup = await popup_info.value
        await popup.wait_for_selector("#continue")
        assert "remove a device from your account" in await popup.inner_text("main")
        await popup.set_viewport_size({"width": 420, "height": 700})
        await popup.screenshot(path=screenshot_path("sso-auth-confirm"), full_page=True)
        await popup.click("#continue")
        # The IdP still knows dave from the login: it may ask again or send him straight back.
        await popup.wait_for_load_state()
        if "/interaction/" in popup.url:
            await idp_login(popup, "dave")
        await popup.wait_for_selector("text=You may now close this window")
        assert popup.url.startswith(f"{gw.client_url}/_synapse/client/oidc/callback")
        await popup.screenshot(path=screenshot_path("sso-auth-success"), full_page=True)
        await page.wait_for_function("document.body.dataset.authDone === 'yes'")

        status, body = await _api("DELETE", delete_url, token, {"auth": {"type": "m.login.sso", "session": session}})
        assert status == 200, body
        status, _ = await _api("GET", f"{gw.client_url}/_matrix/client/v3/account/whoami", phone_token, {})
        assert status == 401

        # In another browser, someone else signs in at the IdP: refused, the stage stays open.
        status, body = await _api("POST", f"{gw.client_url}/_matrix/client/v3/account/deactivate", token, {})
        assert status == 401
        session = body["session"]
        other = await (await browser.new_context(viewport={"width": 420, "height": 700})).new_page()
        await other.goto(f"{gw.client_url}/_matrix/client/r0/auth/m.login.sso/fallback/web?session={session}")
        assert "deactivate your account" in await other.inner_text("main")
        await other.click("#continue")
        await idp_login(other, "mallory")
        await other.wait_for_selector("text=That was a different account")
        assert f"@dave:{gw.server_name}" in await other.inner_text("main")
        await other.screenshot(path=screenshot_path("sso-auth-bad-user"), full_page=True)
        status, body = await _api("POST", f"{gw.client_url}/_matrix/client/v3/account/deactivate", token,
                                  {"auth": {"type": "m.login.sso", "session": session}})
        assert status == 401 and body["errcode"] == "M_UNAUTHORIZED"
        status, _ = await _api("GET", f"{gw.client_url}/_matrix/client/v3/account/whoami", token, {})
        assert status == 200

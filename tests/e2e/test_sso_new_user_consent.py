"""New-user consent in a real browser: OIDC login at npm oidc-provider -> username picker ->
the terms page (``sso_new_user_consent.html``, linking ``/_matrix/consent``) -> the client
logs in; the accepted version is stored with the account.
"""

from __future__ import annotations

import aiohttp

from tests.e2e.browser import chromium, screenshot_path
from tests.e2e.test_sso_oidc_login import idp_login, sso_setup


async def test_new_user_accepts_the_terms(tmp_path):
    policies = tmp_path / "privacy" / "en"
    policies.mkdir(parents=True)
    (policies / "2.1.html").write_text("<!DOCTYPE html><title>Privacy</title><h1 id='policy'>"
                                       "Privacy policy {{ consent_version }}</h1>")
    extra = {"enable_registration": True, "enable_registration_without_verification": True,
             "user_consent": {"template_dir": str(tmp_path / "privacy"), "version": "2.1",
                              "require_at_registration": True}}
    async with sso_setup(tmp_path, extra=extra) as (gw, client_url), chromium() as browser:
        page = await browser.new_page(viewport={"width": 420, "height": 860})
        await page.goto(f"{gw.client_url}/_matrix/client/v3/login/sso/redirect"
                        f"?redirectUrl={client_url}%3Fhs%3D{gw.client_url}")
        await idp_login(page, "erin")
        await page.wait_for_selector("#username")
        await page.fill("#username", "erin")
        await page.click("#continue")

        await page.wait_for_selector("text=I accept the terms")
        assert page.url == f"{gw.client_url}/_synapse/client/new_user_consent"
        main = await page.inner_text("main")
        assert f"@erin:{gw.server_name}" in main and "Erin Example" in main and "2.1" in main
        await page.screenshot(path=screenshot_path("sso-new-user-consent"), full_page=True)
        terms_url = await page.get_attribute("main a[href*='_matrix/consent']", "href")
        assert terms_url == f"{gw.client_url}/_matrix/consent?v=2.1"

        policy = await browser.new_page()
        await policy.goto(terms_url)
        assert await policy.inner_text("#policy") == "Privacy policy 2.1"

        await page.click("text=I accept the terms")
        await page.wait_for_selector("#whoami:not(:empty)")
        assert await page.inner_text("#whoami") == f"@erin:{gw.server_name}"

        # The m.login.terms fallback page of /register, for clients without a terms UI.
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{gw.client_url}/_matrix/client/v3/register", json={}) as resp:
                session = (await resp.json())["session"]
        await page.goto(f"{gw.client_url}/_matrix/client/v3/auth/m.login.terms/fallback/web?session={session}")
        assert await page.get_attribute("#policy", "href") == terms_url
        await page.screenshot(path=screenshot_path("terms-fallback"), full_page=True)
        await page.click("#accept")
        await page.wait_for_selector("text=You may now close this window")

"""SAML and CAS logins in a real browser against real identity providers.

Headless Chromium -> our IdP picker -> npm saml-idp's sign-in form (it signs the response
and the assertion) -> its auto-POST to our assertion consumer service -> a local client page
with ``loginToken``, which does ``m.login.token`` and ``whoami`` itself. Then the same for
CAS through the legacy ``/login/cas/redirect``: django-mama-cas's login form -> our ticket
URL -> the client page. Both IdPs are down when the gateway starts.
"""

from __future__ import annotations

from tests.conftest import free_port
from tests.e2e.browser import chromium, screenshot_path
from tests.e2e.saml_idp import running_saml_idp
from tests.e2e.test_sso_oidc_login import client_site
from tests.support.cas_server import USERS, running_cas_server
from tests.support.gateway_server import running_gateway
from tests.support.tls import TestCA


async def test_saml_and_cas_logins_in_a_browser(tmp_path):
    idp_port, cas_port = free_port(), free_port()
    idp_url = f"http://127.0.0.1:{idp_port}"
    cas_url = f"http://127.0.0.1:{cas_port}/cas"
    async with client_site() as client_url:
        config = {
            "saml2_config": {
                # Remote metadata, loaded on first use: the IdP is not up yet.
                "sp_config": {"metadata": {"remote": [{"url": f"{idp_url}/metadata"}]},
                              "allow_unknown_attributes": True},
                "user_mapping_provider": {"config": {"mxid_source_attribute": "uid"}},
                "attribute_requirements": [{"attribute": "userGroup", "value": "staff"}],
                "idp_name": "Example SAML",
            },
            "cas_config": {"enabled": True, "server_url": cas_url, "displayname_attribute": "displayName",
                           "idp_name": "Example CAS"},
            "sso": {"client_whitelist": [client_url]},
        }
        async with running_gateway(tmp_path, TestCA(tmp_path / "ca"), config) as gw, chromium() as browser:
            acs = f"{gw.client_url}/_synapse/client/saml2/authn_response"
            entity_id = f"{gw.client_url}/_synapse/client/saml2/metadata.xml"
            start = f"{gw.client_url}/_matrix/client/v3/login/sso/redirect?redirectUrl={client_url}%3Fhs%3D{gw.client_url}"
            page = await browser.new_page(viewport={"width": 420, "height": 860})

            # The IdP is down: a clear error page, not a stack trace; the server keeps running.
            await page.goto(f"{gw.client_url}/_matrix/client/v3/login/sso/redirect/saml"
                            f"?redirectUrl={client_url}")
            assert await page.inner_text("#error-code") == "server_error"

            async with running_saml_idp(idp_port, tmp_path / "saml-idp", acs, entity_id):
                await page.goto(start)  # two providers: the picker
                await page.wait_for_selector("#idp-saml")
                assert await page.locator("#idp-cas").count() == 1
                await page.screenshot(path=screenshot_path("sso-idp-picker-saml-cas"), full_page=True)
                await page.click("#idp-saml")

                await page.wait_for_selector("#btn-sign-in")  # saml-idp's sign-in form
                assert page.url.startswith(idp_url)
                await page.fill("#uid", "Sam.E2E")
                await page.fill("#displayName", "Sam from SAML")
                await page.click("#btn-sign-in")

                await page.wait_for_selector("#whoami:not(:empty)")
                assert page.url.startswith(client_url)
                assert await page.inner_text("#whoami") == f"@sam.e2e:{gw.server_name}"
                assert await page.inner_text("#status") == "logged in"
                await page.screenshot(path=screenshot_path("sso-saml-client-logged-in"), full_page=True)

                # Not in the required group: refused with our error page.
                page2 = await browser.new_page()
                await page2.goto(f"{gw.client_url}/_matrix/client/v3/login/sso/redirect/saml"
                                 f"?redirectUrl={client_url}")
                await page2.wait_for_selector("#btn-sign-in")
                await page2.fill("#uid", "guest")
                await page2.fill("#userGroup", "guests")
                await page2.click("#btn-sign-in")
                await page2.wait_for_selector("#error-code")
                assert await page2.inner_text("#error-code") == "unauthorised"
                assert page2.url == acs
                await page2.screenshot(path=screenshot_path("sso-saml-refused"), full_page=True)

            with running_cas_server(cas_port, tmp_path / "cas"):
                page3 = await browser.new_page(viewport={"width": 420, "height": 860})
                await page3.goto(f"{gw.client_url}/_matrix/client/r0/login/cas/redirect"
                                 f"?redirectUrl={client_url}%3Fhs%3D{gw.client_url}")
                await page3.wait_for_selector("#id_username")  # mama-cas's login form
                assert page3.url.startswith(cas_url)
                await page3.fill("#id_username", "carol")
                await page3.fill("#id_password", USERS["carol"][0])
                await page3.click("button[type=submit]")
                await page3.wait_for_selector("#whoami:not(:empty)")
                assert await page3.inner_text("#whoami") == f"@carol:{gw.server_name}"
                await page3.screenshot(path=screenshot_path("sso-cas-client-logged-in"), full_page=True)

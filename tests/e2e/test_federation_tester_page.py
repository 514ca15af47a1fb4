"""The federation tester page in a real browser: submit the form, read the report."""

from __future__ import annotations

from tests.e2e.browser import chromium, screenshot_path
from tests.support.gateway_server import running_gateway
from tests.support.tls import TestCA


async def test_tester_page_good_and_bad(tmp_path):
    ca = TestCA(tmp_path / "ca")
    extra = {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
             "federation_tester": {"self_check_interval": "1h"}}
    async with running_gateway(tmp_path, ca, extra) as gw, chromium() as browser:
        page = await browser.new_page(viewport={"width": 900, "height": 1000})
        await page.request.get(f"{gw.client_url}/_gateway/federation-tester/api/self")  # the first run is done
        await page.goto(f"{gw.client_url}/_gateway/federation-tester/")
        await page.fill("#server_name", gw.server_name)
        await page.click("button[type=submit]")
        await page.wait_for_selector("#verdict")
        assert "federation works" in await page.inner_text("#verdict")
        assert await page.locator("#diagnosis li[data-area=Federation]").get_attribute("class") == "pass"
        assert await page.locator("#address-table li.fail").count() == 0
        assert await page.locator("#address-table li.pass").count() == 5
        assert await page.get_attribute("#json-link", "href") == await page.input_value("#json-url")
        assert await page.inner_text("#self-check") == (
            f"This server ({gw.server_name}) tests itself every 60 minutes: the last test, 0 minutes ago, passed. "
            "Its report.")
        await page.screenshot(path=screenshot_path("federation-tester-ok"), full_page=True)

        await page.fill("#server_name", "127.0.0.1:1")
        await page.click("button[type=submit]")
        await page.wait_for_selector("#verdict")
        assert "is broken" in await page.inner_text("#verdict")
        assert await page.locator(".fix").count() >= 1
        await page.screenshot(path=screenshot_path("federation-tester-bad"), full_page=True)

        # Markup in the input is shown as text, never run.
        await page.goto(f"{gw.client_url}/_gateway/federation-tester/?server_name=%3Cscript%3Ealert(1)%3C/script%3E")
        assert await page.locator("script").count() == 0
        assert "<script>" in await page.input_value("#server_name")


async def test_custom_template_overrides_one_page(tmp_path):
    ca = TestCA(tmp_path / "ca")
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "federation_tester.html").write_text(
        "<!DOCTYPE html><title>Our tester</title><h1 id='brand'>ACME federation check</h1>"
        "<p id='who'>{{ server_name }}</p>"
    )
    extra = {"templates": {"custom_template_directory": str(custom)}}
    async with running_gateway(tmp_path, ca, extra) as gw, chromium() as browser:
        page = await browser.new_page()
        await page.goto(f"{gw.client_url}/_gateway/federation-tester/?server_name=%3Cb%3Ex%3C/b%3E")
        assert await page.inner_text("#brand") == "ACME federation check"
        assert await page.inner_text("#who") == "<b>x</b>"  # escaped, shown as text
        await page.screenshot(path=screenshot_path("federation-tester-custom"))

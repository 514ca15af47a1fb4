"""The federation tester's page for a broken setup, in Chromium: a name (dnsmasq) with
four addresses, one good, one with an expired certificate, one that never answers and
one speaking plain HTTP on the TLS port; the good one refuses our signed request without
fetching our key ("can receive but not send"). The page puts the diagnosis first, a row
per address with its TLS verdict and timings, the client side, and a JSON link; it works
without JavaScript."""

from __future__ import annotations

import asyncio
import ssl

from aiohttp import web

from tests.conftest import free_port
from tests.e2e.browser import chromium, screenshot_path
from tests.federation.net.conftest import start_dnsmasq, stop_dnsmasq
from tests.support.fake_remote import signed_keys_handler
from tests.support.gateway_server import running_gateway
from tests.support.tls import TestCA


def _tls(cert) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert.cert_path), str(cert.key_path))
    return ctx


async def test_broken_setup_report_page(tmp_path):
    ca = TestCA(tmp_path / "ca")
    port = free_port()
    name = f"broken.test:{port}"
    async def refuse(request):  # never fetches the sender's key: its outbound federation is blocked
        return web.json_response({"errcode": "M_UNAUTHORIZED", "error": "Failed to fetch the key"}, status=401)

    async def version(request):
        return web.json_response({"server": {"name": "Broken", "version": "1"}})

    good = web.Application()
    good.router.add_get("/_matrix/key/v2/server", signed_keys_handler(name))
    good.router.add_get("/_matrix/federation/v1/version", version)
    good.router.add_get("/_matrix/federation/v1/query/profile", refuse)
    runners = []
    for host, ctx in (("127.0.0.1", _tls(ca.issue("broken.test", filename="good"))),
                      ("127.0.0.2", _tls(ca.issue("broken.test", valid_days=-3, not_before_days=40,
                                                  filename="expired"))),
                      ("127.0.0.4", None)):  # plain HTTP where TLS is expected
        runner = web.AppRunner(good, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, ssl_context=ctx).start()
        runners.append(runner)
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.3", port)  # accepts, never answers
    hosts = tmp_path / "hosts"
    hosts.write_text("".join(f"127.0.0.{i} broken.test\n" for i in (1, 2, 3, 4)))
    dns = start_dnsmasq(f"--addn-hosts={hosts}")
    extra = {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
             "dns_nameservers": [f"127.0.0.1:{dns.port}"]}
    try:
        async with running_gateway(tmp_path, ca, extra) as gw, chromium() as browser:
            context = await browser.new_context(java_script_enabled=False, viewport={"width": 1100, "height": 900})
            page = await context.new_page()
            await page.goto(f"{gw.client_url}/_gateway/federation-tester/")
            await page.fill("#server_name", name)
            await page.click("button[type=submit]")  # a plain GET form: no JavaScript needed
            await page.wait_for_selector("#verdict")
            await page.screenshot(path=screenshot_path("federation-tester-broken-setup"), full_page=True)
            assert "is broken" in await page.inner_text("#verdict")
            # The diagnosis comes first, in words.
            first = page.locator("#diagnosis li").first
            assert await first.get_attribute("data-area") == "Federation"
            assert await first.get_attribute("class") == "fail"
            reaching = page.locator("#diagnosis li[data-area='Reaching others']")
            assert await reaching.get_attribute("class") == "fail"
            assert "can receive but not send" in await reaching.inner_text()
            # One row per address, each with its own TLS verdict.
            codes = {}
            for i in (1, 2, 3, 4):
                cell = page.locator(f"#address-table tr[data-address='127.0.0.{i}:{port}'] td[data-code]")
                codes[i] = await cell.get_attribute("data-code")
            assert codes == {1: "ok", 2: "expired", 3: "handshake_timeout", 4: "plain_http"}, codes
            silent_row = await page.inner_text(f"#address-table tr[data-address='127.0.0.3:{port}']")
            assert "handshake" in silent_row and " s" in silent_row
            expired_row = page.locator(f"#address-table tr[data-address='127.0.0.2:{port}']")
            assert "expired on" in await expired_row.inner_text()
            assert await expired_row.locator("li.fail").all_inner_texts() == ["TLS certificate valid for the server name"]
            # The client side is there too, and the JSON link gives the same report.
            assert await page.locator("#client-table").count() == 1
            json_url = await page.input_value("#json-url")
            assert json_url == await page.get_attribute("#json-link", "href")
            api = await page.request.get(json_url)
            report = await api.json()
            assert report["Outbound"]["CanReachUs"] is False
            assert report["TLSDiagnosis"][f"127.0.0.2:{port}"]["Code"] == "expired"
            await context.close()
    finally:
        stop_dnsmasq(dns)
        silent.close()
        for runner in runners:
            await runner.cleanup()

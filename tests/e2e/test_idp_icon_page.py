"""The identity provider picker in a real browser: the IdP icon (an mxc:// URI in the
config) is loaded through ``mxc_to_http`` from our media repository, without a token,
while authenticated media stays enforced for everything else."""

from __future__ import annotations

import io

from PIL import Image

from gateway.server import HomeServer
from tests.e2e.browser import chromium, screenshot_path
from tests.support.gateway_server import running_gateway
from tests.support.tls import TestCA

ICON_ID = "idpIconForTheBrowser"


def icon_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (128, 128), (255, 120, 0)).save(buf, "PNG")
    return buf.getvalue()


async def test_picker_page_shows_the_idp_icon(tmp_path):
    ca = TestCA(tmp_path / "ca")
    provider = {"issuer": "https://idp.example/", "client_id": "c", "client_secret": "s", "discover": False,
                "authorization_endpoint": "https://idp.example/auth", "token_endpoint": "https://idp.example/token",
                "jwks_uri": "https://idp.example/jwks"}

    def extra(server_name: str) -> dict:
        return {"oidc_providers": [
            {**provider, "idp_id": "orange", "idp_name": "Orange", "idp_icon": f"mxc://{server_name}/{ICON_ID}"},
            {**provider, "idp_id": "plain", "idp_name": "Plain"}]}

    async with running_gateway(tmp_path, ca, extra) as gw, chromium() as browser:
        hs = await HomeServer.open(gw.config)
        try:
            written = await hs.media.files.write_bytes(icon_png())
            await hs.media.store.store_local_media(
                media_id=ICON_ID, user_id=f"@admin:{gw.server_name}", now_ms=1, media_type="image/png",
                length=written.length, upload_name="icon.png", filesystem_id=written.filesystem_id,
                sha256=written.sha256)
        finally:
            await hs.close()
        page = await browser.new_page()
        await page.goto(f"{gw.client_url}/_synapse/client/pick_idp?redirectUrl=https%3A%2F%2Fapp.example%2F")
        img = page.locator("img").first
        await img.wait_for()
        src = await img.get_attribute("src")
        assert f"/_matrix/media/v1/thumbnail/{gw.server_name}/{ICON_ID}?" in src
        # The browser really decoded it: a 32x32 crop of the 128x128 icon.
        await page.wait_for_function("() => document.querySelector('img').complete")
        size = await img.evaluate("i => [i.naturalWidth, i.naturalHeight]")
        assert size == [32, 32]
        await page.screenshot(path=screenshot_path("idp_picker_icon"))


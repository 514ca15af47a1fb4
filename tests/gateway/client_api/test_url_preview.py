"""URL previews of a page served on loopback: allowed when the preview IP rules let
127.0.0.1 through, refused by default (loopback blocked), also through a redirect."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from federation.net.ip_ranges import DEFAULT_IP_RANGE_BLACKLIST
from gateway.config import ConfigError, DatabaseConfig, parse_config

from .conftest import BASE_CONFIG, auth_header, register
from .test_media import image_bytes, size_of

V1 = "/_matrix/client/v1/media"

PAGE = """<!doctype html><html><head><meta charset="utf-8">
<title>  The fallback   title </title>
<meta property="og:title" content="Ünïcode &amp; friends">
<meta property="og:description" content="A page about things">
<meta property="og:image" content="/pic.png">
<meta property="og:type" content="website">
<meta name="description" content="ignored: og:description wins">
</head><body>hello</body></html>"""


@pytest.fixture
async def database_config(tmp_path):
    yield DatabaseConfig("sqlite", {"database": str(tmp_path / "test.db")})


@pytest.fixture
async def site():
    png = image_bytes(120, 80)

    def answer(**kw):
        async def handler(request):
            return web.Response(**kw)
        return handler

    async def away(request):
        raise web.HTTPFound(f"http://127.0.0.2:{request.url.port}/page")

    app = web.Application()
    app.router.add_get("/page", answer(text=PAGE, content_type="text/html"))
    app.router.add_get("/plain", answer(
        body=b"<html><head><title>Only a title</title><meta name='description' content='Desc'></head></html>",
        content_type="text/html"))
    app.router.add_get("/pic.png", answer(body=png, content_type="image/png"))
    app.router.add_get("/big", answer(text="<html>" + "x" * 5000, content_type="text/html"))
    app.router.add_get("/away", away)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}"
    await server.close()


def preview_config(whitelist: list[str]) -> dict:
    return {"url_preview_enabled": True, "url_preview_ip_range_blacklist": list(DEFAULT_IP_RANGE_BLACKLIST),
            "url_preview_ip_range_whitelist": whitelist, "max_spider_size": 4000}


class TestAllowedLoopback:
    @pytest.fixture
    def config_overrides(self):
        return preview_config(["127.0.0.1/32"])

    async def test_open_graph_preview_with_image(self, client, site):
        alice = auth_header((await register(client, "alice"))["access_token"])
        resp = await client.get(f"{V1}/preview_url", params={"url": f"{site}/page"}, headers=alice)
        body = await resp.json()
        assert resp.status == 200, body
        assert body["og:title"] == "Ünïcode & friends"
        assert body["og:description"] == "A page about things"
        assert body["og:type"] == "website"
        assert body["og:image"].startswith("mxc://hs.test/")
        assert body["og:image:type"] == "image/png"
        assert (body["og:image:width"], body["og:image:height"]) == (120, 80)
        # The image is ours now: downloadable and thumbnailable.
        media_id = body["og:image"].rsplit("/", 1)[1]
        got = await client.get(f"{V1}/download/hs.test/{media_id}", headers=alice)
        data = await got.read()
        assert got.status == 200 and size_of(data) == (120, 80) and body["matrix:image:size"] == len(data)

        # Fallbacks: <title> and the description meta.
        resp = await client.get(f"{V1}/preview_url", params={"url": f"{site}/plain"}, headers=alice)
        assert await resp.json() == {"og:title": "Only a title", "og:description": "Desc"}

        # The legacy path answers too.
        resp = await client.get("/_matrix/media/v3/preview_url", params={"url": f"{site}/plain"}, headers=alice)
        assert resp.status == 200

    async def test_limits_and_bad_input(self, client, site):
        alice = auth_header((await register(client, "alice"))["access_token"])
        resp = await client.get(f"{V1}/preview_url", params={"url": f"{site}/big"}, headers=alice)
        assert resp.status == 502 and (await resp.json())["errcode"] == "M_TOO_LARGE"
        for url in ("file:///etc/passwd", "ftp://127.0.0.1/", "not a url"):
            resp = await client.get(f"{V1}/preview_url", params={"url": url}, headers=alice)
            assert resp.status == 400, url
        resp = await client.get(f"{V1}/preview_url", headers=alice)
        assert resp.status == 400 and (await resp.json())["errcode"] == "M_MISSING_PARAM"
        resp = await client.get(f"{V1}/preview_url", params={"url": f"{site}/page"})
        assert resp.status == 401

    async def test_redirect_to_a_blocked_address_is_refused(self, client, site):
        alice = auth_header((await register(client, "alice"))["access_token"])
        # 127.0.0.2 is loopback too, but only 127.0.0.1 is allowed.
        resp = await client.get(f"{V1}/preview_url", params={"url": f"{site}/away"}, headers=alice)
        assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"


class TestDefaultRules:
    @pytest.fixture
    def config_overrides(self):
        return preview_config([])

    async def test_loopback_is_refused(self, client, site):
        alice = auth_header((await register(client, "alice"))["access_token"])
        for url in (f"{site}/page", site.replace("127.0.0.1", "[::ffff:127.0.0.1]") + "/page",
                    site.replace("127.0.0.1", "0.0.0.0") + "/page"):
            resp = await client.get(f"{V1}/preview_url", params={"url": url}, headers=alice)
            body = await resp.json()
            assert resp.status == 403 and body["errcode"] == "M_FORBIDDEN", (url, body)


def test_preview_needs_an_explicit_blacklist(tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE_CONFIG, "url_preview_enabled": True}, config_path=str(tmp_path / "h.yaml"))
    assert "url_preview_ip_range_blacklist" in str(e.value)

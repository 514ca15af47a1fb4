"""Media over federation between two of our servers (TLS, test CA): a client of B
downloads and thumbnails media uploaded on A; B caches it. Against stand-in servers:
the fallback to the legacy endpoint for older servers, a Location part, size limits and
remote errors mapped as Synapse maps them."""

from __future__ import annotations

import io
import json

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from gateway.server import HomeServer
from tests.support.gateway_server import running_gateway
from tests.support.tls import TestCA, serve_tls

V1 = "/_matrix/client/v1/media"


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


async def _register(gw, name: str) -> dict:
    async with aiohttp.ClientSession() as s, s.post(f"{gw.client_url}/_matrix/client/v3/register", json={
            "username": name, "password": "pw", "auth": {"type": "m.login.dummy"}}) as r:
        assert r.status == 200, await r.text()
        return {"Authorization": f"Bearer {(await r.json())['access_token']}"}


def _base(ca: TestCA, **extra) -> dict:
    return {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
            "enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4,
            **extra}


async def test_remote_media_between_two_gateways(tmp_path):
    ca = TestCA(tmp_path / "ca")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    base = _base(ca)
    async with running_gateway(tmp_path / "a", ca, base) as a, running_gateway(tmp_path / "b", ca, base) as b:
        anna, bert = await _register(a, "anna"), await _register(b, "bert")
        image = png(300, 200)
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{a.client_url}/_matrix/media/v3/upload?filename=field.png", data=image,
                              headers={**anna, "Content-Type": "image/png"}) as r:
                mxc = (await r.json())["content_uri"]
            media_id = mxc.rsplit("/", 1)[1]
            assert mxc == f"mxc://{a.server_name}/{media_id}"

            # B's user asks B; B fetches from A over federation (signed, multipart answer).
            async with s.get(f"{b.client_url}{V1}/download/{a.server_name}/{media_id}", headers=bert) as r:
                assert r.status == 200, await r.text()
                assert await r.read() == image
                assert r.headers["Content-Type"] == "image/png"
                assert r.headers["Content-Disposition"] == 'inline; filename="field.png"'
            async with s.get(f"{b.client_url}{V1}/thumbnail/{a.server_name}/{media_id}",
                             params={"width": "32", "height": "32", "method": "crop"}, headers=bert) as r:
                assert r.status == 200, await r.text()
                assert Image.open(io.BytesIO(await r.read())).size == (32, 32)

            # Thumbnail of media B never downloaded: A's thumbnail is fetched, not the original.
            async with s.post(f"{a.client_url}/_matrix/media/v3/upload", data=png(640, 640),
                              headers={**anna, "Content-Type": "image/png"}) as r:
                thumb_only = (await r.json())["content_uri"].rsplit("/", 1)[1]
            for _ in range(2):  # the second time from B's cache
                async with s.get(f"{b.client_url}{V1}/thumbnail/{a.server_name}/{thumb_only}",
                                 params={"width": "90", "height": "90", "method": "crop"}, headers=bert) as r:
                    assert r.status == 200, await r.text()
                    assert Image.open(io.BytesIO(await r.read())).size == (96, 96)

            # Unknown on A: 404 on B, nothing cached.
            async with s.get(f"{b.client_url}{V1}/download/{a.server_name}/noSuchMedia", headers=bert) as r:
                assert r.status == 404 and (await r.json())["errcode"] == "M_NOT_FOUND"

            # A's federation endpoint wants a signature.
            ctx = aiohttp.TCPConnector(ssl=False)
            async with aiohttp.ClientSession(connector=ctx) as raw, \
                    raw.get(f"{a.federation_url}/_matrix/federation/v1/media/download/{media_id}") as r:
                assert r.status == 401

        hs_b = await HomeServer.open(b.config)
        try:
            cached = await hs_b.media.store.get_remote_media(a.server_name, media_id)
            assert cached is not None and cached.media_length == len(image) and cached.upload_name == "field.png"
            assert await hs_b.media.store.get_remote_media(a.server_name, "noSuchMedia") is None
            assert await hs_b.media.store.get_remote_media(a.server_name, thumb_only) is None
            kept = await hs_b.media.store.get_thumbnail(a.server_name, thumb_only, 96, 96, "crop")
            assert (kept.thumbnail_width, kept.thumbnail_height, kept.media_type) == (96, 96, "image/png")
            # B's admin can quarantine A's media it never downloaded.
            assert await hs_b.media.quarantine(a.server_name, thumb_only, "@root:b")
            # A signed request from B straight to A: multipart/mixed, JSON then the bytes.
            async with hs_b.federation_client.stream(
                    "GET", a.server_name, f"/_matrix/federation/v1/media/download/{media_id}") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("multipart/mixed; boundary=")
                reader = aiohttp.MultipartReader.from_response(resp)
                meta = await reader.next()
                assert meta.headers["Content-Type"] == "application/json" and await meta.json() == {}
                part = await reader.next()
                assert part.headers["Content-Type"] == "image/png"
                assert await part.read() == image
            async with hs_b.federation_client.stream(
                    "GET", a.server_name, f"/_matrix/federation/v1/media/thumbnail/{media_id}",
                    query={"width": "96", "height": "96", "method": "crop"}) as resp:
                reader = aiohttp.MultipartReader.from_response(resp)
                await (await reader.next()).read()
                part = await reader.next()
                assert Image.open(io.BytesIO(await part.read())).size == (96, 96)
        finally:
            await hs_b.close()

        async with aiohttp.ClientSession() as s:
            async with s.get(f"{b.client_url}{V1}/thumbnail/{a.server_name}/{thumb_only}",
                             params={"width": "90", "height": "90", "method": "crop"}, headers=bert) as r:
                assert r.status == 404
            async with s.get(f"{b.client_url}{V1}/download/{a.server_name}/{thumb_only}", headers=bert) as r:
                assert r.status == 404

        # Quarantined on A: B (with a fresh name) cannot get it any more.
        hs_a = await HomeServer.open(a.config)
        try:
            assert await hs_a.media.quarantine(a.server_name, media_id, "@root:x")
            async with hs_a.federation_client.stream(  # A asking itself over federation
                    "GET", a.server_name, f"/_matrix/federation/v1/media/download/{media_id}") as resp:
                assert resp.status == 404
        finally:
            await hs_a.close()


class StandIn:
    """A server that only knows the deprecated media endpoint, or misbehaves on purpose."""

    def __init__(self):
        self.requests: list[str] = []
        self.mode = "legacy"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/_matrix/federation/v1/media/download/{media_id}", self.federation)
        app.router.add_get("/_matrix/media/v3/download/{server}/{media_id}", self.legacy)
        app.router.add_get("/_matrix/federation/v1/media/thumbnail/{media_id}", self.federation)
        app.router.add_get("/_matrix/media/v3/thumbnail/{server}/{media_id}", self.legacy_thumbnail)
        app.router.add_get("/elsewhere/{media_id}", self.elsewhere)
        return app

    async def federation(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(str(request.rel_url))
        assert request.headers["Authorization"].startswith("X-Matrix ")
        if self.mode == "legacy":
            return web.json_response({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}, status=404)
        if self.mode == "error":
            return web.json_response({"errcode": "M_UNKNOWN", "error": "boom"}, status=500)
        if self.mode == "not_yet":
            return web.json_response({"errcode": "M_NOT_YET_UPLOADED", "error": "wait"}, status=504)
        boundary = "b0undary"
        second = (f"Location: https://{request.host}/elsewhere/{request.match_info['media_id']}\r\n\r\n"
                  if self.mode == "location" else
                  "Content-Type: application/octet-stream\r\n\r\n" + "x" * 5000)
        body = (f"--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n{second}\r\n"
                f"--{boundary}--\r\n")
        return web.Response(body=body.encode(), headers={"Content-Type": f"multipart/mixed; boundary={boundary}"})

    async def legacy(self, request: web.Request) -> web.Response:
        self.requests.append(str(request.rel_url))
        if request.query.get("allow_remote") != "false":
            return web.json_response({"errcode": "M_FORBIDDEN", "error": "allow_remote must be false"}, status=403)
        return web.Response(body=b"legacy bytes", headers={
            "Content-Type": "text/plain", "Content-Disposition": "attachment; filename*=utf-8''old%20one.txt"})

    async def legacy_thumbnail(self, request: web.Request) -> web.Response:
        self.requests.append(str(request.rel_url))
        assert request.query["allow_remote"] == "false" and request.query["method"] == "scale"
        return web.Response(body=png(int(request.query["width"]), 20), content_type="image/png")

    async def elsewhere(self, request: web.Request) -> web.Response:
        self.requests.append(str(request.rel_url))
        return web.Response(body=b"redirected bytes", headers={"Content-Type": "text/plain"})


@pytest.fixture
async def stand_in(tmp_path):
    ca = TestCA(tmp_path / "ca")
    server = StandIn()
    runner, port = await serve_tls(server.app(), ca, "127.0.0.1")
    server.name = f"127.0.0.1:{port}"
    server.ca = ca
    yield server
    await runner.cleanup()


async def test_fallback_location_limits_and_errors(tmp_path, stand_in):
    (tmp_path / "b").mkdir()
    async with running_gateway(tmp_path / "b", stand_in.ca, _base(stand_in.ca, max_upload_size=1000)) as b:
        bert = await _register(b, "bert")
        async with aiohttp.ClientSession() as s:
            async def get(media_id):
                async with s.get(f"{b.client_url}{V1}/download/{stand_in.name}/{media_id}", headers=bert) as r:
                    return r.status, r.headers, await r.read()

            # An older server: 404 M_UNRECOGNIZED, then the legacy endpoint with allow_remote=false.
            status, headers, body = await get("oldMedia")
            assert (status, body) == (200, b"legacy bytes")
            assert headers["Content-Disposition"] == 'inline; filename="old one.txt"'
            assert stand_in.requests[0].startswith("/_matrix/federation/v1/media/download/oldMedia?timeout_ms=")
            assert stand_in.requests[1].startswith(f"/_matrix/media/v3/download/{stand_in.name.replace(':', '%3A')}"
                                                   "/oldMedia?") and "allow_remote=false" in stand_in.requests[1]

            # Thumbnails from an older server: the deprecated thumbnail endpoint.
            async with s.get(f"{b.client_url}{V1}/thumbnail/{stand_in.name}/oldPicture",
                             params={"width": "300", "height": "200", "method": "scale"}, headers=bert) as r:
                assert r.status == 200, await r.text()
                assert Image.open(io.BytesIO(await r.read())).size == (320, 20)
            assert stand_in.requests[-2].startswith("/_matrix/federation/v1/media/thumbnail/oldPicture?")
            assert stand_in.requests[-1].startswith("/_matrix/media/v3/thumbnail/")

            # A Location part: followed (under the outbound IP rules).
            stand_in.mode = "location"
            status, _, body = await get("movedMedia")
            assert (status, body) == (200, b"redirected bytes")

            # Larger than max_upload_size: 502 M_TOO_LARGE, nothing cached.
            stand_in.mode = "big"
            status, _, body = await get("bigMedia")
            assert status == 502 and json.loads(body)["errcode"] == "M_TOO_LARGE"

            stand_in.mode = "error"
            status, _, body = await get("brokenMedia")
            assert status == 502 and json.loads(body)["errcode"] == "M_UNKNOWN"

            stand_in.mode = "not_yet"
            status, _, body = await get("pendingMedia")
            assert status == 504 and json.loads(body)["errcode"] == "M_NOT_YET_UPLOADED"

            # Bad server names never reach the network.
            async with s.get(f"{b.client_url}{V1}/download/bad%20name/abc", headers=bert) as r:
                assert r.status == 400 and (await r.json())["errcode"] == "M_INVALID_PARAM"
        hs = await HomeServer.open(b.config)
        try:
            assert await hs.media.store.get_remote_media(stand_in.name, "oldMedia") is not None
            assert await hs.media.store.get_remote_media(stand_in.name, "bigMedia") is None
        finally:
            await hs.close()
        files = [p for p in (tmp_path / "b" / "media_store").rglob("*") if p.is_file()]
        assert len(files) == 3  # two fetched pieces and a thumbnail; nothing left of the refused ones

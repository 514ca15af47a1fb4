"""The media repository over HTTP: uploads (direct and asynchronous), downloads,
thumbnails, limits, headers, legacy endpoints, quarantine; matrix-nio as the client.
(HTTP behaviour does not depend on the engine: SQLite only here; the store is tested on both.)"""

from __future__ import annotations

import asyncio
import io
from urllib.parse import quote

import nio
import pytest
from PIL import Image
from yarl import URL

from gateway.config import DatabaseConfig

from .conftest import auth_header, register

V1 = "/_matrix/client/v1/media"


@pytest.fixture
async def database_config(tmp_path):
    yield DatabaseConfig("sqlite", {"database": str(tmp_path / "test.db")})


@pytest.fixture
async def alice(client):
    return auth_header((await register(client, "alice"))["access_token"])


@pytest.fixture
async def bob(client):
    return auth_header((await register(client, "bob"))["access_token"])


def image_bytes(width: int, height: int, fmt: str = "PNG") -> bytes:
    image = Image.new("RGB", (width, height))
    for x in range(width):  # a gradient, so a wrong crop or scale would show
        image.putpixel((x, 0), (x % 256, 0, 0))
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def size_of(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


async def upload(client, headers, data: bytes, content_type: str = "image/png", filename: str | None = None) -> str:
    url = "/_matrix/media/v3/upload" + (f"?filename={quote(filename)}" if filename else "")
    resp = await client.post(url, data=data, headers={**headers, "Content-Type": content_type})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["content_uri"].startswith("mxc://hs.test/")
    return body["content_uri"].rsplit("/", 1)[1]


async def test_nio_upload_download_and_thumbnail(client):
    url = str(client.make_url("/")).rstrip("/")
    alice = nio.AsyncClient(url, "alice")
    try:
        assert isinstance(await alice.register("alice", "wonderland-pass"), nio.RegisterResponse)
        png = image_bytes(400, 300)
        resp, _keys = await alice.upload(io.BytesIO(png), content_type="image/png", filename="cat.png",
                                         filesize=len(png))
        assert isinstance(resp, nio.UploadResponse), resp
        assert resp.content_uri.startswith("mxc://hs.test/")

        down = await alice.download(resp.content_uri)
        assert isinstance(down, nio.DownloadResponse), down
        assert down.body == png and down.content_type == "image/png" and down.filename == "cat.png"

        server_name, media_id = resp.content_uri[len("mxc://"):].split("/")
        thumb = await alice.thumbnail(server_name, media_id, 96, 96, nio.ResizingMethod.crop)
        assert isinstance(thumb, nio.ThumbnailResponse), thumb
        assert thumb.content_type == "image/png" and size_of(thumb.body) == (96, 96)

        missing = await alice.download("mxc://hs.test/doesNotExist")
        assert isinstance(missing, nio.DownloadError) and missing.status_code == "M_NOT_FOUND"
    finally:
        await alice.close()


async def test_download_headers_are_safe(client, alice):
    media_id = await upload(client, alice, b"<script>alert(1)</script>", "text/html", "page.html")
    resp = await client.get(f"{V1}/download/hs.test/{media_id}", headers=alice)
    assert resp.status == 200
    assert await resp.read() == b"<script>alert(1)</script>"
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="page.html"'
    assert resp.headers["Content-Security-Policy"].startswith("sandbox;")
    assert resp.headers["Cross-Origin-Resource-Policy"] == "cross-origin"

    media_id = await upload(client, alice, image_bytes(4, 4), "image/png", "naïve \"x\".png")
    resp = await client.get(f"{V1}/download/hs.test/{media_id}", headers=alice)
    assert resp.headers["Content-Disposition"] == "inline; filename*=utf-8''na%C3%AFve%20%22x%22.png"
    # A name in the path overrides the stored one.
    resp = await client.get(f"{V1}/download/hs.test/{media_id}/other.png", headers=alice)
    assert resp.headers["Content-Disposition"] == 'inline; filename="other.png"'

    # Without a Content-Type header: application/octet-stream, as an attachment.
    resp = await client.post("/_matrix/media/v3/upload", data=b"raw", headers={**alice, "Content-Type": ""})
    media_id = (await resp.json())["content_uri"].rsplit("/", 1)[1]
    resp = await client.get(f"{V1}/download/hs.test/{media_id}", headers=alice)
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Disposition"] == "attachment"


async def test_authenticated_endpoints_need_a_token(client, alice):
    media_id = await upload(client, alice, b"hello", "text/plain")
    for path in (f"{V1}/download/hs.test/{media_id}", f"{V1}/thumbnail/hs.test/{media_id}?width=1&height=1",
                 f"{V1}/config"):
        resp = await client.get(path)
        assert resp.status == 401 and (await resp.json())["errcode"] == "M_MISSING_TOKEN"
    resp = await client.post("/_matrix/media/v3/upload", data=b"x")
    assert resp.status == 401
    resp = await client.get(f"{V1}/config", headers=alice)
    assert await resp.json() == {"m.upload.size": 50 * 1024 * 1024}


@pytest.mark.parametrize("fmt,media_type", [("PNG", "image/png"), ("JPEG", "image/jpeg")])
async def test_thumbnails_scale_and_crop(client, alice, hs, fmt, media_type):
    media_id = await upload(client, alice, image_bytes(1000, 500, fmt), media_type)

    async def thumb(width, height, method):
        resp = await client.get(f"{V1}/thumbnail/hs.test/{media_id}?width={width}&height={height}&method={method}",
                                headers=alice)
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"] == media_type  # JPEG stays JPEG, others become PNG
        assert resp.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
        return size_of(await resp.read())

    # Not dynamic (the default): the configured sizes, the smallest that is big enough.
    assert await thumb(32, 32, "crop") == (32, 32)
    assert await thumb(50, 50, "crop") == (96, 96)
    assert await thumb(300, 200, "scale") == (320, 160)  # 320x240 box, aspect kept
    assert await thumb(700, 500, "scale") == (800, 400)
    # Generated once, then served from the cache.
    stored = await hs.media.store.get_thumbnail("hs.test", media_id, 96, 96, "crop")
    assert stored is not None and (stored.thumbnail_width, stored.thumbnail_height) == (96, 96)
    assert await thumb(96, 96, "crop") == (96, 96)


async def test_dynamic_thumbnails_and_no_upscaling(client, alice, hs):
    object.__setattr__(hs.config.media, "dynamic_thumbnails", True)
    big = await upload(client, alice, image_bytes(600, 400))
    small = await upload(client, alice, image_bytes(20, 10))
    for path, expected in ((f"{big}?width=150&height=150&method=crop", (150, 150)),
                           (f"{big}?width=150&height=150&method=scale", (150, 100)),
                           (f"{big}?width=1000&height=50&method=crop", (600, 50)),
                           (f"{small}?width=64&height=64&method=crop", (20, 10)),  # the original
                           (f"{small}?width=64&height=64", (20, 10))):
        resp = await client.get(f"{V1}/thumbnail/hs.test/{path}", headers=alice)
        assert resp.status == 200, await resp.text()
        assert size_of(await resp.read()) == expected, path


async def test_bad_thumbnail_requests(client, alice, hs):
    png = await upload(client, alice, image_bytes(50, 50))
    text = await upload(client, alice, b"not an image", "text/plain")
    fake = await upload(client, alice, b"not really a png", "image/png")
    cases = [
        (f"{png}", 400, "M_MISSING_PARAM"),
        (f"{png}?width=10", 400, "M_MISSING_PARAM"),
        (f"{png}?width=abc&height=10", 400, "M_INVALID_PARAM"),
        (f"{png}?width=-5&height=10", 400, "M_INVALID_PARAM"),
        (f"{png}?width=10&height=0", 400, "M_INVALID_PARAM"),
        (f"{png}?width=10&height=10&method=stretch", 400, "M_INVALID_PARAM"),
        (f"{png}?width=10&height=10&animated=maybe", 400, "M_INVALID_PARAM"),
        (f"{text}?width=10&height=10", 400, "M_UNKNOWN"),
        (f"{fake}?width=10&height=10", 400, "M_UNKNOWN"),
        ("unknownMedia?width=10&height=10", 404, "M_NOT_FOUND"),
    ]
    for path, status, errcode in cases:
        resp = await client.get(f"{V1}/thumbnail/hs.test/{path}", headers=alice)
        body = await resp.json()
        assert (resp.status, body["errcode"]) == (status, errcode), (path, body)
    # Too many pixels to thumbnail: 413 M_TOO_LARGE for local media.
    object.__setattr__(hs.config.media, "max_image_pixels", 1000)
    resp = await client.get(f"{V1}/thumbnail/hs.test/{png}?width=10&height=10&method=crop", headers=alice)
    assert resp.status == 413 and (await resp.json())["errcode"] == "M_TOO_LARGE"


async def test_upload_limits_and_bad_headers(client, alice, hs, tmp_path):
    object.__setattr__(hs.config.media, "max_upload_size", 1000)
    # Declared too large: refused before reading.
    resp = await client.post("/_matrix/media/v3/upload", data=b"x" * 1001,
                             headers={**alice, "Content-Type": "text/plain"})
    assert resp.status == 413 and (await resp.json())["errcode"] == "M_TOO_LARGE"

    # Streamed without a length: refused once it passes the limit, nothing kept.
    async def chunks():
        for _ in range(5):
            yield b"y" * 300

    resp = await client.post("/_matrix/media/r0/upload", data=chunks(), headers={**alice, "Content-Type": "text/plain"})
    assert resp.status == 413 and (await resp.json())["errcode"] == "M_TOO_LARGE"
    store = tmp_path / "media_store"
    assert not [p for p in store.rglob("*") if p.is_file()]

    for bad in ("not a type", "/png", "text/plain/extra", "ima ge/png"):
        resp = await client.post("/_matrix/media/v3/upload", data=b"ok", headers={**alice, "Content-Type": bad})
        assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_PARAM", bad
    resp = await client.post("/_matrix/media/v3/upload?filename=a%0Ab", data=b"ok",
                             headers={**alice, "Content-Type": "text/plain"})
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_PARAM"

    # Exactly at the limit is fine; the legacy r0 path works too.
    media_id = await upload(client, alice, b"z" * 1000, "text/plain")
    assert len(media_id) >= 20 and media_id.replace("-", "").replace("_", "").isalnum()


async def test_unknown_and_traversal_media_ids(client, alice, tmp_path):
    (tmp_path / "secret.txt").write_text("secret")
    paths = [
        f"{V1}/download/hs.test/unknownMediaId",
        f"{V1}/download/hs.test/..%2F..%2Fsecret.txt",
        f"{V1}/download/hs.test/%2E%2E",
        f"{V1}/download/hs.test/..",
        f"{V1}/download/hs.test/media%00id",
        f"{V1}/download/..%2F..%2F/secret.txt",
        f"{V1}/download/hs.test/abc%2F..%2F..%2Fsecret.txt",
    ]
    for path in paths:
        resp = await client.get(URL(path, encoded=True), headers=alice)
        body = await resp.read()
        assert resp.status in (400, 404), (path, resp.status)
        assert b"secret" not in body and (await resp.json())["errcode"] in (
            "M_NOT_FOUND", "M_UNRECOGNIZED", "M_INVALID_PARAM"), path


async def test_async_upload(client, alice, bob, hs):
    resp = await client.post("/_matrix/media/v1/create", headers=alice)
    body = await resp.json()
    assert resp.status == 200, body
    assert body["unused_expires_at"] > hs.clock_ms()
    media_id = body["content_uri"].rsplit("/", 1)[1]
    put = f"/_matrix/media/v3/upload/hs.test/{media_id}"

    # Not yet uploaded: a download waits, then says so.
    resp = await client.get(f"{V1}/download/hs.test/{media_id}?timeout_ms=0", headers=alice)
    assert resp.status == 504 and (await resp.json())["errcode"] == "M_NOT_YET_UPLOADED"

    # Someone else cannot upload to it.
    resp = await client.put(put, data=b"mine", headers={**bob, "Content-Type": "text/plain"})
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"

    # A waiting download gets the content as soon as the creator uploads it.
    waiting = asyncio.ensure_future(client.get(f"{V1}/download/hs.test/{media_id}?timeout_ms=20000", headers=bob))
    resp = await client.put(put + "?filename=notes.txt", data=b"the content",
                            headers={**alice, "Content-Type": "text/plain"})
    assert resp.status == 200 and await resp.json() == {}
    got = await asyncio.wait_for(waiting, 20)
    assert got.status == 200 and await got.read() == b"the content"
    assert got.headers["Content-Disposition"] == 'inline; filename="notes.txt"'

    # Only once.
    resp = await client.put(put, data=b"again", headers={**alice, "Content-Type": "text/plain"})
    assert resp.status == 409 and (await resp.json())["errcode"] == "M_CANNOT_OVERWRITE_MEDIA"

    # Unknown IDs, other servers' names.
    for path in ("/_matrix/media/v3/upload/hs.test/neverCreated", f"/_matrix/media/v3/upload/other.test/{media_id}"):
        resp = await client.put(path, data=b"x", headers={**alice, "Content-Type": "text/plain"})
        assert resp.status == 404 and (await resp.json())["errcode"] == "M_NOT_FOUND"

    # Expired: 404 for the upload and the download.
    resp = await client.post("/_matrix/media/v1/create", headers=alice)
    expiring = (await resp.json())["content_uri"].rsplit("/", 1)[1]
    real_clock = hs.clock_ms
    hs.clock_ms = lambda: real_clock() + 25 * 3_600_000
    try:
        resp = await client.put(f"/_matrix/media/v3/upload/hs.test/{expiring}", data=b"late",
                                headers={**alice, "Content-Type": "text/plain"})
        assert resp.status == 404 and (await resp.json())["errcode"] == "M_NOT_FOUND"
        resp = await client.get(f"{V1}/download/hs.test/{expiring}", headers=alice)
        assert resp.status == 404
    finally:
        hs.clock_ms = real_clock


async def test_pending_upload_limit(client, alice, hs):
    for _ in range(5):
        assert (await client.post("/_matrix/media/v1/create", headers=alice)).status == 200
    resp = await client.post("/_matrix/media/v1/create", headers=alice)
    assert resp.status == 429 and (await resp.json())["errcode"] == "M_LIMIT_EXCEEDED"


async def test_legacy_endpoints_frozen_by_default(client, alice):
    media_id = await upload(client, alice, b"old style", "text/plain")
    for path in (f"/_matrix/media/v3/download/hs.test/{media_id}",
                 f"/_matrix/media/r0/thumbnail/hs.test/{media_id}?width=1&height=1"):
        resp = await client.get(path)
        assert resp.status == 404 and (await resp.json())["errcode"] == "M_NOT_FOUND"
    resp = await client.get("/_matrix/media/v3/config", headers=alice)
    assert resp.status == 200 and "m.upload.size" in await resp.json()


async def test_legacy_endpoints_when_authenticated_media_is_off(client, alice, hs):
    object.__setattr__(hs.config.media, "enable_authenticated_media", False)
    media_id = await upload(client, alice, image_bytes(200, 200), "image/png")
    resp = await client.get(f"/_matrix/media/v3/download/hs.test/{media_id}")
    assert resp.status == 200 and size_of(await resp.read()) == (200, 200)
    resp = await client.get(f"/_matrix/media/v3/thumbnail/hs.test/{media_id}?width=32&height=32&method=crop")
    assert resp.status == 200 and size_of(await resp.read()) == (32, 32)
    # allow_remote=false: remote media is not fetched.
    resp = await client.get("/_matrix/media/v3/download/other.test/abcdef?allow_remote=false")
    assert resp.status == 404 and (await resp.json())["errcode"] == "M_NOT_FOUND"


async def test_preview_url_is_unrecognized_when_disabled(client, alice):
    resp = await client.get(f"{V1}/preview_url?url=https://example.org/", headers=alice)
    assert resp.status == 404 and (await resp.json())["errcode"] == "M_UNRECOGNIZED"


async def test_admin_quarantine_and_delete(client, alice, hs):
    await hs.auth.users.create_user("@root:hs.test", password_hash=None, created_ts=1, admin=True)
    admin = auth_header((await hs.auth.login_session("@root:hs.test"))["access_token"])
    media_id = await upload(client, alice, b"bad things", "text/plain")
    download = f"{V1}/download/hs.test/{media_id}"
    A = "/_synapse/admin/v1/media"

    resp = await client.post(f"{A}/quarantine/hs.test/{media_id}", headers=alice)
    assert resp.status == 403  # not an admin
    resp = await client.post(f"{A}/quarantine/hs.test/{media_id}", headers=admin)
    assert resp.status == 200
    resp = await client.get(download, headers=alice)
    assert resp.status == 404 and (await resp.json())["errcode"] == "M_NOT_FOUND"
    info = await (await client.get(f"{A}/hs.test/{media_id}", headers=admin)).json()
    assert info["media_info"]["quarantined_by"] == "@root:hs.test"
    assert info["media_info"]["media_length"] == 10

    resp = await client.post(f"{A}/unquarantine/hs.test/{media_id}", headers=admin)
    assert resp.status == 200
    assert (await client.get(download, headers=alice)).status == 200

    path = hs.media.files.path(info["media_info"]["filesystem_id"])
    assert path.exists()
    resp = await client.delete(f"{A}/hs.test/{media_id}", headers=admin)
    assert resp.status == 200 and await resp.json() == {"deleted_media": [media_id], "total": 1}
    assert not path.exists()
    assert (await client.get(download, headers=alice)).status == 404
    resp = await client.delete(f"{A}/hs.test/{media_id}", headers=admin)
    assert resp.status == 404
    resp = await client.post(f"{A}/quarantine/hs.test/..%2Fx", headers=admin)
    assert resp.status == 404


class TestIdpIcons:
    """The login pages' IdP icons stay reachable without a token (the spec asks servers
    to keep them out of the freeze); ``mxc_to_http`` links to them."""

    @pytest.fixture
    def config_overrides(self):
        provider = {"issuer": "https://idp.example/", "client_id": "c", "client_secret": "s",
                    "discover": False, "authorization_endpoint": "https://idp.example/auth",
                    "token_endpoint": "https://idp.example/token", "jwks_uri": "https://idp.example/jwks"}
        return {"oidc_providers": [
            {**provider, "idp_id": "one", "idp_name": "One", "idp_icon": "mxc://hs.test/iconMediaId01"},
            {**provider, "idp_id": "two", "idp_name": "Two"}]}

    async def test_icon_served_on_the_picker_page_without_a_token(self, client, alice, hs):
        import html
        import re

        written = await hs.media.files.write_bytes(image_bytes(64, 64))
        await hs.media.store.store_local_media(media_id="iconMediaId01", user_id="@alice:hs.test", now_ms=1,
                                               media_type="image/png", length=written.length, upload_name=None,
                                               filesystem_id=written.filesystem_id, sha256=written.sha256)
        other = await upload(client, alice, image_bytes(64, 64))

        page = await client.get("/_synapse/client/pick_idp", params={"redirectUrl": "https://app.example/"})
        assert page.status == 200
        (src,) = re.findall(r'<img src="([^"]+)"', await page.text())
        src = html.unescape(src)
        assert src.startswith("https://hs.test/_matrix/media/v1/thumbnail/hs.test/iconMediaId01?")
        resp = await client.get(src[len("https://hs.test"):])
        assert resp.status == 200 and size_of(await resp.read()) == (32, 32)
        resp = await client.get("/_matrix/media/v1/download/hs.test/iconMediaId01")
        assert resp.status == 200
        # Other media stays behind authentication.
        resp = await client.get(f"/_matrix/media/v1/thumbnail/hs.test/{other}?width=32&height=32")
        assert resp.status == 404


async def test_admin_quarantines_a_rooms_media(client, alice, hs):
    await hs.auth.users.create_user("@root:hs.test", password_hash=None, created_ts=1, admin=True)
    admin = auth_header((await hs.auth.login_session("@root:hs.test"))["access_token"])
    in_room = await upload(client, alice, image_bytes(10, 10), "image/png")
    thumb = await upload(client, alice, image_bytes(5, 5), "image/png")
    elsewhere = await upload(client, alice, b"not in the room", "text/plain")
    resp = await client.post("/_matrix/client/v3/createRoom", json={}, headers=alice)
    room_id = (await resp.json())["room_id"]
    content = {"msgtype": "m.image", "body": "pic.png", "url": f"mxc://hs.test/{in_room}",
               "info": {"thumbnail_url": f"mxc://hs.test/{thumb}", "mimetype": "image/png"}}
    resp = await client.put(f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1", json=content,
                            headers=alice)
    assert resp.status == 200, await resp.text()

    resp = await client.post(f"/_synapse/admin/v1/room/{room_id}/media/quarantine", headers=alice)
    assert resp.status == 403
    resp = await client.post(f"/_synapse/admin/v1/room/{room_id}/media/quarantine", headers=admin)
    assert resp.status == 200 and await resp.json() == {"num_quarantined": 2}
    for media_id, status in ((in_room, 404), (thumb, 404), (elsewhere, 200)):
        resp = await client.get(f"{V1}/download/hs.test/{media_id}", headers=alice)
        assert resp.status == status, media_id

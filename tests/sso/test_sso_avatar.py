"""The IdP's picture becomes the user's avatar (stored as our media), fetched under the
outbound IP rules: refused for loopback by default, allowed when whitelisted."""

from __future__ import annotations

import io

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from gateway.app import build_listener_app
from gateway.config import parse_config
from gateway.server import HomeServer
from gateway.storage.profiles import ProfileStore
from tests.sso.test_oidc_flow import FakeIdP, sso_login


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), (0, 0, 255)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
async def idp():
    fake = FakeIdP()
    app = fake.app()
    fake.picture_requests = 0

    async def picture(request):
        fake.picture_requests += 1
        return web.Response(body=png_bytes(), content_type="image/png")

    async def not_an_image(request):
        return web.Response(text="<html>", content_type="text/html")

    app.router.add_get("/avatar.png", picture)
    app.router.add_get("/page", not_an_image)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    fake.issuer = str(server.make_url("")).rstrip("/")
    yield fake
    await server.close()


async def make_client(tmp_path, idp, extra: dict):
    config = parse_config({
        "server_name": "hs.test", "public_baseurl": "https://hs.test/",
        "listeners": [{"port": 1, "resources": [{"names": ["client"]}]}],
        "database": {"name": "sqlite3", "args": {"database": str(tmp_path / "hs.db")}},
        "signing_key_path": str(tmp_path / "signing.key"),
        "oidc_providers": [{"idp_id": "fake", "idp_name": "Fake", "issuer": idp.issuer,
                            "client_id": "gateway", "client_secret": "s3cret", "skip_verification": True,
                            "user_mapping_provider": {"config": {
                                "localpart_template": "{{ user.preferred_username }}",
                                "picture_template": "{{ user.avatar }}"}}}],
        "sso": {"client_whitelist": ["https://app.example/"], "update_profile_information": True},
        **extra,
    }, config_path=str(tmp_path / "homeserver.yaml"))
    hs = await HomeServer.open(config)
    client = TestClient(TestServer(build_listener_app(hs, config.listeners[0])))
    await client.start_server()
    client.hs = hs
    return client


async def login(client, idp, username: str, avatar: str) -> str:
    return await sso_login(client, idp, username, preferred_username=username, avatar=avatar)


async def test_picture_becomes_the_avatar_when_allowed(tmp_path, idp):
    client = await make_client(tmp_path, idp, {"ip_range_whitelist": ["127.0.0.1/32"]})
    try:
        token = await login(client, idp, "dora", f"{idp.issuer}/avatar.png")
        profile = await ProfileStore(client.hs.db).get_profile("@dora:hs.test")
        mxc = profile["avatar_url"]
        assert mxc.startswith("mxc://hs.test/")
        resp = await client.get(f"/_matrix/client/v1/media/download/hs.test/{mxc.rsplit('/', 1)[1]}",
                                headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 200 and await resp.read() == png_bytes()
        assert idp.picture_requests == 1
        # Logging in again with the same picture downloads nothing new.
        await login(client, idp, "dora", f"{idp.issuer}/avatar.png")
        assert idp.picture_requests == 1
        assert (await ProfileStore(client.hs.db).get_profile("@dora:hs.test"))["avatar_url"] == mxc
        # Not an image: no avatar, the login still works.
        await login(client, idp, "erik", f"{idp.issuer}/page")
        assert "avatar_url" not in (await ProfileStore(client.hs.db).get_profile("@erik:hs.test"))
    finally:
        await client.close()
        await client.hs.close()


async def test_loopback_picture_refused_by_default(tmp_path, idp):
    client = await make_client(tmp_path, idp, {})
    try:
        await login(client, idp, "fred", f"{idp.issuer}/avatar.png")
        assert idp.picture_requests == 0
        assert "avatar_url" not in (await ProfileStore(client.hs.db).get_profile("@fred:hs.test"))
    finally:
        await client.close()
        await client.hs.close()

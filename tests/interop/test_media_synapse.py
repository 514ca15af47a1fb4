"""Media over federation with a real Synapse, both ways: our client downloads and
thumbnails media uploaded on Synapse, and Synapse's client downloads and thumbnails ours
(Synapse parses our multipart answers)."""

from __future__ import annotations

import io

import aiohttp
from PIL import Image

from gateway.server import HomeServer
from tests.gateway.client_api.conftest import auth_header
from tests.support.gateway_server import running_gateway
from tests.support.synapse import register_synapse_user, unique_localpart

V1 = "/_matrix/client/v1/media"


def jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(buf, "JPEG")
    return buf.getvalue()


def size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


async def test_media_both_ways_with_synapse(tmp_path, shared_synapse):
    synapse = shared_synapse
    ca = synapse.ca
    extra = {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
             "enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4}
    async with running_gateway(tmp_path, ca, extra) as gw, aiohttp.ClientSession() as s:
        async with s.post(f"{gw.client_url}/_matrix/client/v3/register", json={
                "username": "alice", "password": "alice-pass", "auth": {"type": "m.login.dummy"}}) as r:
            alice = auth_header((await r.json())["access_token"])
        bob = auth_header(await register_synapse_user(synapse, unique_localpart("bob")))

        # Synapse's media, fetched by us.
        theirs = jpeg(640, 480)
        async with s.post(f"{synapse.client_url}/_matrix/media/v3/upload?filename=synapse.jpg", data=theirs,
                          headers={**bob, "Content-Type": "image/jpeg"}) as r:
            assert r.status == 200, await r.text()
            their_id = (await r.json())["content_uri"].rsplit("/", 1)[1]
        # A thumbnail first: fetched from Synapse's federation thumbnail endpoint (not the original).
        async with s.get(f"{gw.client_url}{V1}/thumbnail/{synapse.server_name}/{their_id}",
                         params={"width": "96", "height": "96", "method": "crop"}, headers=alice) as r:
            assert r.status == 200, await r.text()
            assert size(await r.read()) == (96, 96)
        hs = await HomeServer.open(gw.config)
        try:
            assert await hs.media.store.get_remote_media(synapse.server_name, their_id) is None
            kept = await hs.media.store.get_thumbnail(synapse.server_name, their_id, 96, 96, "crop")
            assert kept is not None and (kept.thumbnail_width, kept.thumbnail_height) == (96, 96)
        finally:
            await hs.close()
        async with s.get(f"{gw.client_url}{V1}/download/{synapse.server_name}/{their_id}", headers=alice) as r:
            assert r.status == 200, await r.text()
            assert await r.read() == theirs
            assert r.headers["Content-Type"] == "image/jpeg"
            assert 'filename="synapse.jpg"' in r.headers["Content-Disposition"]
        async with s.get(f"{gw.client_url}{V1}/download/{synapse.server_name}/notThere123", headers=alice) as r:
            assert r.status == 404 and (await r.json())["errcode"] == "M_NOT_FOUND"

        # Our media, fetched by Synapse.
        ours = jpeg(800, 400)
        async with s.post(f"{gw.client_url}/_matrix/media/v3/upload?filename=gateway.jpg", data=ours,
                          headers={**alice, "Content-Type": "image/jpeg"}) as r:
            our_id = (await r.json())["content_uri"].rsplit("/", 1)[1]
        async with s.get(f"{synapse.client_url}{V1}/download/{gw.server_name}/{our_id}", headers=bob) as r:
            assert r.status == 200, await r.text()
            assert await r.read() == ours
            assert r.headers["Content-Type"] == "image/jpeg"
            assert "gateway.jpg" in r.headers["Content-Disposition"]
        async with s.get(f"{synapse.client_url}{V1}/thumbnail/{gw.server_name}/{our_id}",
                         params={"width": "320", "height": "240", "method": "scale"}, headers=bob) as r:
            assert r.status == 200, await r.text()
            assert size(await r.read()) == (320, 160)
        async with s.get(f"{synapse.client_url}{V1}/download/{gw.server_name}/unknownOnOurs",
                         headers=bob) as r:
            assert r.status == 404, await r.text()


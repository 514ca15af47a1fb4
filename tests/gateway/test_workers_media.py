"""The media repository on a worker (issue 18): main runs with ``enable_media_repo: false``
and a worker with a ``media`` listener shares its ``media_store_path``; docs/workers.md's
nginx example routes the media paths there. Real processes, PostgreSQL, Redis and nginx."""

from __future__ import annotations

import io
import re
from pathlib import Path

import aiohttp
import pytest
import yaml
from PIL import Image

from gateway.config import load_config
from gateway.roles import roles_for
from tests.conftest import SKIP_POSTGRES
from tests.support.client_api import register_user
from tests.support.worker_cluster import (DOC, Worker, documented_nginx_for, requests_served, run_nginx,
                                          running_cluster)


def documented_media_files() -> tuple[dict, dict]:
    """docs/workers.md's shared-file keys and worker file for a media worker."""
    section = DOC.read_text(encoding="utf-8").split("### Media on a worker", 1)[1]
    shared, worker = re.findall(r"^```yaml\n(.*?)^```", section, re.M | re.S)[:2]
    return yaml.safe_load(shared), yaml.safe_load(worker)


def test_the_documented_media_worker_holds_the_media_roles_and_main_none(tmp_path):
    shared_keys, worker_keys = documented_media_files()
    shared = tmp_path / "homeserver.yaml"
    shared.write_text(yaml.safe_dump({"server_name": "example.com", "redis": {"enabled": True},
                                      "database": {"name": "psycopg2", "args": {"database": "g"}}, **shared_keys}))
    (tmp_path / "media1.yaml").write_text(yaml.safe_dump(worker_keys))
    main = roles_for(load_config(str(shared)))
    assert not main.media_repo and not main.media_background
    media = roles_for(load_config([str(shared), str(tmp_path / "media1.yaml")]))
    assert media.instance_name == "media1" and media.media_repo and media.media_background
    # Synapse's media_repository app is a media worker without saying so.
    (tmp_path / "m2.yaml").write_text(yaml.safe_dump({"worker_app": "synapse.app.media_repository",
                                                      "worker_name": "m2"}))
    assert roles_for(load_config([str(shared), str(tmp_path / "m2.yaml")])).media_repo


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if SKIP_POSTGRES:
        pytest.skip("workers need PostgreSQL")
    shared_keys, worker_keys = documented_media_files()
    media = Worker(worker_keys["worker_name"], ["media"],
                   extra={k: v for k, v in worker_keys.items() if k not in ("worker_app", "worker_name",
                                                                             "worker_listeners")})
    with running_cluster(Path(tmp_path_factory.mktemp("media")), [media], shared_keys) as c:
        yield c


@pytest.fixture(scope="module")
def nginx(cluster, tmp_path_factory):
    """The documented nginx: no client reader here (main takes its routes), media to the worker."""
    server = documented_nginx_for(cluster.main_port, cluster.main_port, cluster.workers['media1'].port)
    with run_nginx(Path(tmp_path_factory.mktemp("nginx")), server) as url:
        yield url


def png(size: int = 400) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 90)).save(out, "PNG")
    return out.getvalue()


async def test_uploads_downloads_and_thumbnails_go_through_the_media_worker(cluster, nginx):
    worker = cluster.workers["media1"].url
    async with aiohttp.ClientSession() as session:
        user = await register_user(session, nginx, "mia")
        auth = {"Authorization": f"Bearer {user.token}"}
        uploads_before = await requests_served(session, worker, r'[^"]*/upload')
        image = png()
        async with session.post(f"{nginx}/_matrix/media/v3/upload", params={"filename": "dot.png"}, data=image,
                                headers={**auth, "Content-Type": "image/png"}) as r:
            assert r.status == 200, await r.text()
            mxc = (await r.json())["content_uri"]
        assert await requests_served(session, worker, r'[^"]*/upload') == uploads_before + 1
        server_name, media_id = mxc.removeprefix("mxc://").split("/")
        assert server_name == "workers.test"
        # The file is in the shared media store.
        assert any(p.is_file() and p.read_bytes() == image for p in (cluster.dir / "media").rglob("*"))

        async with session.get(f"{nginx}/_matrix/client/v1/media/download/{server_name}/{media_id}",
                               headers=auth) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "image/png"
            assert await r.read() == image
        async with session.get(f"{nginx}/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}",
                               params={"width": "32", "height": "32", "method": "crop"}, headers=auth) as r:
            assert r.status == 200, await r.text()
            thumb = Image.open(io.BytesIO(await r.read()))
            assert thumb.size == (32, 32)  # made from the 400x400 original
        assert await requests_served(session, worker, r'[^"]*/download/[^"]*') >= 1
        assert await requests_served(session, worker, r'[^"]*/thumbnail/[^"]*') >= 1

        # Main serves no media: the endpoints are unknown there.
        for method, path in (("POST", "/_matrix/media/v3/upload"),
                             ("GET", f"/_matrix/client/v1/media/download/{server_name}/{media_id}"),
                             ("GET", f"/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}?width=32&height=32"),
                             ("GET", "/_matrix/client/v1/media/config")):
            async with session.request(method, f"{cluster.main_url}{path}", headers=auth) as r:
                assert r.status == 404, (path, r.status)
                assert (await r.json())["errcode"] == "M_UNRECOGNIZED", path
        assert await requests_served(session, cluster.main_url, r'[^"]*/media/[^"]*') == 0
        # The rest of the client API is main's, and it still works.
        assert (await user.call("GET", "/account/whoami"))["user_id"] == user.user_id

        # Other servers' downloads are served by the worker too (X-Matrix auth required).
        async with session.get(f"{worker}/_matrix/federation/v1/media/download/{media_id}") as r:
            assert r.status == 401 and (await r.json())["errcode"] == "M_UNAUTHORIZED"

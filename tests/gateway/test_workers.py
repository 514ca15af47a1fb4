"""Worker processes (issue 18), as an operator runs them: ``gateway run`` for the main
process and ``gateway run -c homeserver.yaml -c worker.yaml`` for a generic worker, on a
real PostgreSQL and the real Redis at 127.0.0.1:6379 (a channel prefix of their own). A
client writes on the main process and long-polls /sync on the worker."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import aiohttp
import pytest
import yaml

from gateway.config import load_config
from gateway.roles import roles_for
from tests.conftest import SKIP_POSTGRES
from tests.support.client_api import Client, has_text, register_user, timeline_bodies
from tests.support.gateway_process import ROOT
from tests.support.worker_cluster import DOC, WORKER_APP, Worker, documented_nginx_for, requests_served, run_nginx, \
    running_cluster

pytestmark = pytest.mark.skipif(SKIP_POSTGRES, reason="workers need PostgreSQL")

WORKER = "client_reader1"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("workers"), [Worker(WORKER, ["client"])]) as c:
        yield c


@pytest.fixture(scope="module")
def nginx(cluster, tmp_path_factory):
    """docs/workers.md's nginx example in front of the cluster, only its ports changed
    (media to main)."""
    server = documented_nginx_for(cluster.main_port, cluster.workers[WORKER].port, cluster.main_port)
    with run_nginx(tmp_path_factory.mktemp("nginx"), server) as url:
        yield url


async def waiting_syncs(session: aiohttp.ClientSession, base: str) -> float:
    async with session.get(f"{base}/_synapse/metrics") as r:
        text = await r.text()
    m = re.search(r"^gateway_notifier_waiting_syncs (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def parked_sync(session: aiohttp.ClientSession, reader: Client, since: str, *,
                      metrics_base: str | None = None) -> asyncio.Task:
    """A /sync long-poll on the worker (a 2-minute timeout), once it waits: it has read the
    database and found nothing new, so only a wake-up can end it early."""
    task = asyncio.create_task(reader.call("GET", "/sync", params={"since": since, "timeout": "120000"}))
    while await waiting_syncs(session, metrics_base or reader.base) < 1:
        assert not task.done(), task.result()
        await asyncio.sleep(0.05)  # polling the metrics for the condition, not the sync
    return task


async def _setup(session: aiohttp.ClientSession, cluster: Cluster, name: str) -> tuple[Client, Client, str]:
    """A user registered on main with a room; the same user's client on the worker."""
    writer = await register_user(session, cluster.main_url, name)
    room_id = (await writer.call("POST", "/createRoom", {}))["room_id"]
    reader = Client(session, cluster.workers[WORKER].url, writer.token, writer.user_id)
    return writer, reader, room_id


async def test_a_send_on_main_wakes_a_sync_on_the_worker(cluster):
    async with aiohttp.ClientSession() as session:
        writer, reader, room_id = await _setup(session, cluster, "alice")
        body = await reader.call("GET", "/sync", params={"timeout": "0"})
        assert room_id in body["rooms"]["join"]  # the worker reads what main wrote
        task = await parked_sync(session, reader, body["next_batch"])
        event_id = await writer.send_text(room_id, "from main")
        # Answered by the wake-up (the sync's own timeout is two minutes).
        body = await asyncio.wait_for(task, 60)
        events = body["rooms"]["join"][room_id]["timeline"]["events"]
        assert [e["event_id"] for e in events] == [event_id]


async def test_typing_on_main_shows_in_a_sync_on_the_worker(cluster):
    """Typing lives in memory: main publishes each change and the worker keeps a copy."""
    async with aiohttp.ClientSession() as session:
        writer, reader, room_id = await _setup(session, cluster, "dave")
        since = (await reader.call("GET", "/sync", params={"timeout": "0"}))["next_batch"]
        task = await parked_sync(session, reader, since)
        await writer.call("PUT", f"/rooms/{room_id}/typing/{writer.user_id}", {"typing": True, "timeout": 60000})
        body = await asyncio.wait_for(task, 60)
        ephemeral = body["rooms"]["join"][room_id]["ephemeral"]["events"]
        assert {"type": "m.typing", "content": {"user_ids": [writer.user_id]}} in ephemeral
        task = await parked_sync(session, reader, body["next_batch"])
        await writer.call("PUT", f"/rooms/{room_id}/typing/{writer.user_id}", {"typing": False})
        body = await asyncio.wait_for(task, 60)
        ephemeral = body["rooms"]["join"][room_id]["ephemeral"]["events"]
        assert {"type": "m.typing", "content": {"user_ids": []}} in ephemeral


async def test_an_ignore_list_changed_on_main_applies_on_the_worker(cluster):
    """The worker caches whom a user ignores; a change on main drops its copy."""
    async with aiohttp.ClientSession() as session:
        writer, reader, room_id = await _setup(session, cluster, "erin")
        other = await register_user(session, cluster.main_url, "frank")
        await writer.call("POST", f"/rooms/{room_id}/invite", {"user_id": other.user_id})
        await other.call("POST", f"/join/{room_id}", {})
        since = (await reader.call("GET", "/sync", params={"timeout": "0"}))["next_batch"]
        await other.send_text(room_id, "seen")
        body = await reader.call("GET", "/sync", params={"since": since, "timeout": "0"})
        assert timeline_bodies(room_id)(body) == ["seen"]  # read (and cached) on the worker: nobody ignored
        # Parked before the change: what wakes it was published after the invalidation.
        task = await parked_sync(session, reader, body["next_batch"])
        await writer.call("PUT", f"/user/{writer.user_id}/account_data/m.ignored_user_list",
                          {"ignored_users": {other.user_id: {}}})
        await other.send_text(room_id, "ignored")
        await writer.send_text(room_id, "own")
        seen: list[str] = []
        body = await asyncio.wait_for(task, 60)
        while "own" not in seen:
            seen += timeline_bodies(room_id)(body)
            if "own" not in seen:
                body = await reader.call("GET", "/sync", params={"since": body["next_batch"], "timeout": "30000"})
        assert seen == ["own"]


async def test_the_worker_restarts_and_old_sync_tokens_keep_working(cluster):
    async with aiohttp.ClientSession() as session:
        writer, reader, room_id = await _setup(session, cluster, "bob")
        old = (await reader.call("GET", "/sync", params={"timeout": "0"}))["next_batch"]
        await writer.send_text(room_id, "before the crash")
        cluster.kill(WORKER)
        await writer.send_text(room_id, "while the worker is down")
        cluster.start_worker(WORKER)
        # The token from before the crash: everything since, read from the database.
        body = await reader.call("GET", "/sync", params={"since": old, "timeout": "0"})
        assert timeline_bodies(room_id)(body) == ["before the crash", "while the worker is down"]
        # And the restarted worker is woken again.
        task = await parked_sync(session, reader, body["next_batch"])
        await writer.send_text(room_id, "after the restart")
        assert has_text(room_id, "after the restart")(await asyncio.wait_for(task, 60))


async def test_nginx_routes_syncs_to_the_worker_and_sends_to_main(cluster, nginx):
    """One client, one base URL (nginx): its sends reach main, its /sync the worker, and
    the long-poll on the worker is woken by the send on main."""
    async with aiohttp.ClientSession() as session:
        client = await register_user(session, nginx, "carol")
        room_id = (await client.call("POST", "/createRoom", {}))["room_id"]
        sync_route, send_route = r'[^"]*/sync', r'[^"]*/send/[^"]*'
        worker_syncs = await requests_served(session, cluster.workers[WORKER].url, sync_route)
        main_syncs = await requests_served(session, cluster.main_url, sync_route)
        main_sends = await requests_served(session, cluster.main_url, send_route)
        body = await client.call("GET", "/sync", params={"timeout": "0"})
        assert room_id in body["rooms"]["join"]
        task = await parked_sync(session, Client(session, nginx, client.token, client.user_id), body["next_batch"],
                                 metrics_base=cluster.workers[WORKER].url)
        await client.send_text(room_id, "through nginx")
        assert has_text(room_id, "through nginx")(await asyncio.wait_for(task, 60))
        assert await requests_served(session, cluster.workers[WORKER].url, sync_route) == worker_syncs + 2
        assert await requests_served(session, cluster.main_url, sync_route) == main_syncs
        assert await requests_served(session, cluster.main_url, send_route) == main_sends + 1
        assert await requests_served(session, cluster.workers[WORKER].url, send_route) == 0


def test_the_documented_files_make_a_main_process_and_a_worker(tmp_path):
    """docs/workers.md's homeserver.yaml and worker file, read as the two --config-path."""
    shared, worker = re.findall(r"^```yaml\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.M | re.S)[:2]
    (tmp_path / "homeserver.yaml").write_text(shared)
    (tmp_path / "worker.yaml").write_text(worker)
    main = load_config(str(tmp_path / "homeserver.yaml"))
    assert roles_for(main).is_main and main.workers.instance_map["main"].port == 9093
    config = load_config([str(tmp_path / "homeserver.yaml"), str(tmp_path / "worker.yaml")])
    assert config.warnings == ()
    assert roles_for(config).instance_name == "client_reader1"
    assert [li.port for li in config.listeners] == [8083]


def test_a_worker_refuses_sqlite(tmp_path):
    shared = tmp_path / "homeserver.yaml"
    shared.write_text(yaml.safe_dump({"server_name": "workers.test", "redis": {"enabled": True},
                                      "database": {"name": "sqlite3", "args": {"database": str(tmp_path / "db")}}}))
    worker = tmp_path / "worker.yaml"
    worker.write_text(yaml.safe_dump({"worker_app": WORKER_APP, "worker_name": "w1"}))
    r = subprocess.run([sys.executable, "-m", "gateway", "run", "-c", str(shared), "-c", str(worker)], cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "database: workers need PostgreSQL" in r.stderr
    assert not (tmp_path / "db").exists()

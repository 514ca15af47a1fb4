"""Pushers on workers (issue 18: ``pusher_instances``): the events writer (main) stores the
notifications; the pusher worker that owns the user's shard hears of them over Redis,
reads them from the database and sends them to the user's push gateway. Real processes,
PostgreSQL and Redis; the push gateway is an HTTP server in this test that notes which
process each request came from."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import redis.asyncio as redis
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config import parse_config
from gateway.config.workers import instance_for
from gateway.roles import pusher_for_user, roles_for
from tests.conftest import SKIP_POSTGRES
from tests.support.client_api import Client, register_user
from tests.support.worker_cluster import Worker, WorkerCluster, process_of_connection, running_cluster

PUSHERS = ("pusher1", "pusher2")
SHARED = {"server_name": "example.com", "database": {"name": "psycopg2", "args": {"database": "g"}},
          "redis": {"enabled": True}}


def test_users_are_shared_between_the_pushers_as_synapse_shares_them():
    users = [f"@user{i}:example.com" for i in range(400)]
    owners = [instance_for(u, PUSHERS) for u in users]
    # As Synapse shards them: SHA-256 of the user ID, little-endian, modulo the list.
    assert owners == [PUSHERS[int.from_bytes(hashlib.sha256(u.encode()).digest(), "little") % 2] for u in users]
    counts = Counter(owners)
    assert set(counts) == set(PUSHERS) and min(counts.values()) > 120  # both get a fair part
    assert {instance_for(u, ("only",)) for u in users} == {"only"}


def test_pusher_for_user_follows_the_config():
    alone = parse_config({**SHARED})
    assert pusher_for_user(alone, "@a:example.com") == "main"
    assert pusher_for_user(parse_config({**SHARED, "start_pushers": False}), "@a:example.com") is None
    sharded = parse_config({**SHARED, "start_pushers": False, "pusher_instances": list(PUSHERS)})
    assert pusher_for_user(sharded, "@a:example.com") == instance_for("@a:example.com", PUSHERS)
    assert not roles_for(sharded).pusher
    worker = parse_config({**SHARED, "pusher_instances": list(PUSHERS), "worker_app": "synapse.app.generic_worker",
                           "worker_name": "pusher2"})
    assert roles_for(worker).pusher


def name_in_shard(prefix: str, owner: str) -> str:
    """A localpart starting with ``prefix`` whose user ID falls in ``owner``'s shard."""
    for i in range(1000):
        if instance_for(f"@{prefix}{i}:workers.test", PUSHERS) == owner:
            return f"{prefix}{i}"
    raise AssertionError("no such name")


class PushGateway:
    """Records each notification with the name of the cluster process that sent it."""

    def __init__(self, cluster: WorkerCluster):
        self.cluster = cluster
        self.received: list[tuple[str | None, dict]] = []
        self.changed = asyncio.Condition()

    async def handler(self, request: web.Request) -> web.Response:
        peer_port = request.transport.get_extra_info("peername")[1]
        own_port = request.transport.get_extra_info("sockname")[1]
        sender = process_of_connection(peer_port, own_port, self.cluster.pids())
        body = await request.json()
        async with self.changed:
            self.received.append((sender, body["notification"]))
            self.changed.notify_all()
        return web.json_response({"rejected": []})

    async def wait_for(self, predicate, timeout: float = 60) -> list[tuple[str | None, dict]]:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: [r for r in self.received if predicate(r[1])]),
                                   timeout)
            return [r for r in self.received if predicate(r[1])]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if SKIP_POSTGRES:
        pytest.skip("workers need PostgreSQL")
    workers = [Worker(n, []) for n in PUSHERS]  # a metrics listener only: they serve no requests
    with running_cluster(Path(tmp_path_factory.mktemp("pushers")), workers,
                         {"pusher_instances": list(PUSHERS), "ip_range_whitelist": ["127.0.0.1/32"]}) as c:
        yield c


def http_pusher(url: str, pushkey: str) -> dict:
    return {"kind": "http", "app_id": "org.example.app", "pushkey": pushkey, "app_display_name": "App",
            "device_display_name": "Phone", "lang": "en", "data": {"url": url}}


@pytest.fixture
async def push_gateway(cluster):
    gateway = PushGateway(cluster)
    app = web.Application()
    app.router.add_post("/_matrix/push/v1/notify", gateway.handler)
    async with TestServer(app, host="127.0.0.1") as server:
        gateway.url = str(server.make_url("/_matrix/push/v1/notify"))
        yield gateway


async def test_each_pusher_worker_pushes_the_messages_sent_through_main_to_its_users(cluster, push_gateway):
    gateway, url = push_gateway, push_gateway.url
    async with aiohttp.ClientSession() as session:
        one = await register_user(session, cluster.main_url, name_in_shard("one", "pusher1"))
        two = await register_user(session, cluster.main_url, name_in_shard("two", "pusher2"))
        sender = await register_user(session, cluster.main_url, "sender")
        room_id = (await sender.call("POST", "/createRoom", {"preset": "public_chat", "name": "Pushed"}))["room_id"]
        for user in (one, two):
            await user.call("POST", f"/join/{room_id}", {})
            await user.call("POST", "/pushers/set", http_pusher(url, f"key-{user.user_id}"))
        event_id = await sender.send_text(room_id, "hello both")

        def the_message(n: dict) -> bool:
            return n.get("event_id") == event_id

        pushes = await gateway.wait_for(lambda n: the_message(n) and len(
            [r for r in gateway.received if the_message(r[1])]) >= 2)
        by_key = {n["devices"][0]["pushkey"]: (process, n) for process, n in pushes}
        assert set(by_key) == {f"key-{one.user_id}", f"key-{two.user_id}"}
        # Each push came from the worker of the user's shard, none from main.
        assert by_key[f"key-{one.user_id}"][0] == "pusher1"
        assert by_key[f"key-{two.user_id}"][0] == "pusher2"
        note = by_key[f"key-{one.user_id}"][1]
        assert note["room_id"] == room_id and note["content"]["body"] == "hello both"
        assert note["sender_display_name"] == "sender" and note["room_name"] == "Pushed"
        assert note["counts"] == {"unread": 1}

        # A read receipt stored by main: the user's pusher worker sends the new badge.
        await Client(session, cluster.main_url, one.token, one.user_id).call(
            "POST", f"/rooms/{room_id}/receipt/m.read/{event_id}", {})
        (badge,) = await gateway.wait_for(lambda n: "event_id" not in n)
        assert badge[0] == "pusher1"
        assert badge[1]["counts"] == {"unread": 0} and badge[1]["devices"][0]["pushkey"] == f"key-{one.user_id}"
        assert all(process in PUSHERS for process, _ in gateway.received)


async def test_a_pusher_worker_catches_up_on_hand_overs_it_missed(cluster, push_gateway):
    """Notifications stored while Redis was away from the pusher: when its subscription
    comes back (or a publisher says it lost messages) it reads them from the database."""
    async with aiohttp.ClientSession() as session:
        one = await register_user(session, cluster.main_url, name_in_shard("late", "pusher1"))
        sender = await register_user(session, cluster.main_url, name_in_shard("talker", "pusher1"))
        room_id = (await sender.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
        await one.call("POST", f"/join/{room_id}", {})
        await one.call("POST", "/pushers/set", http_pusher(push_gateway.url, "late-key"))
        # Muted: main stores no notification for it and hands nothing over...
        await one.call("PUT", f"/pushrules/global/room/{room_id}", {"actions": ["dont_notify"]})
        event_id = await sender.send_text(room_id, "while Redis was away")
    # ... and here is the notification whose hand-over the pusher missed.
    conn = await asyncpg.connect(**cluster.db_args)
    try:
        position = await conn.fetchval("SELECT stream_ordering FROM events WHERE event_id = $1", event_id)
        await conn.execute(
            "INSERT INTO event_push_actions (room_id, user_id, event_id, stream_ordering, notif, highlight,"
            " thread_id, actions) VALUES ($1, $2, $3, $4, TRUE, FALSE, 'main', '[\"notify\"]')",
            room_id, one.user_id, event_id, position)
    finally:
        await conn.close()
    prefix = yaml.safe_load(cluster.shared.read_text())["redis"]["channel_prefix"]
    client = redis.Redis(host="127.0.0.1", port=6379)
    try:  # what a publisher that lost messages sends once Redis answers again
        assert await client.publish(f"{prefix}/notify", b'{"i": "test", "reset": true}') >= 3
    finally:
        await client.aclose()
    ((process, note),) = await push_gateway.wait_for(lambda n: n.get("event_id") == event_id)
    assert process == "pusher1" and note["devices"][0]["pushkey"] == "late-key"
    assert note["content"]["body"] == "while Redis was away"


async def test_email_pushers_are_mailed_by_the_process_of_the_users_shard():
    from gateway.services.email_notifs import EmailNotifier

    class Store:
        async def users_with_pending_notifications(self) -> list[str]:
            return ["@mine:example.com", "@theirs:example.com"]

    notifier = EmailNotifier(config=None, server_name="example.com", public_baseurl="", store=Store(), pushers=None,
                             events=None, profiles=None, mailer=None, pages=None, secret=b"k", clock_ms=lambda: 0,
                             mails_here=lambda user_id: user_id == "@mine:example.com")
    await notifier._sweep()  # what start() does first: users with notifications not mailed yet
    assert list(notifier._due) == ["@mine:example.com"]


async def test_receipts_and_out_of_band_invites_go_to_the_users_pusher_process():
    """On a process that does not push for the user, the badge and the invite are handed
    over (to the pusher that does, ``on_remote_badge`` / ``on_remote_invite``)."""
    from types import SimpleNamespace

    from gateway.services.push import BADGE, INVITE, PushService

    class Notifier:
        def __init__(self):
            self.published: list[tuple[str, object]] = []

        def publish_data(self, kind, data):
            self.published.append((kind, data))

        def on_data(self, kind, handler):
            pass

    notifier = Notifier()
    push = PushService(db=None, server_name="example.com", events=None, account_data_store=None,
                       notifier=notifier, gateway=None, clock_ms=lambda: 0, pushes_here=lambda user_id: False)
    push.on_receipt("!r:example.com", "m.read", "@u:example.com", "$e", {})
    invite = SimpleNamespace(type="m.room.member", content={"membership": "invite"}, sender="@s:remote.test",
                             room_id="!r:remote.test", event_id="$i", state_key="@u:example.com")
    stripped = [{"type": "m.room.name", "state_key": "", "content": {"name": "Far"}}]
    push.on_out_of_band_invite(invite, stripped)
    assert notifier.published == [
        (BADGE, {"room": "!r:example.com", "user": "@u:example.com"}),
        (INVITE, {"event": {"type": "m.room.member", "content": {"membership": "invite"}, "sender": "@s:remote.test",
                            "room_id": "!r:remote.test", "event_id": "$i", "state_key": "@u:example.com"},
                  "stripped": stripped}),
    ]
    await push.flush_pushes()  # nothing was started here


async def test_a_pusher_worker_killed_and_started_again_pushes_what_it_missed_once(cluster, push_gateway):
    """Issue 18: a pusher process killed (SIGKILL) while events are stored pushes, once it
    runs again, every notification stored meanwhile (from its pusher's stored position),
    and none it had pushed before."""
    gateway = push_gateway
    async with aiohttp.ClientSession() as session:
        reader = await register_user(session, cluster.main_url, name_in_shard("away", "pusher1"))
        sender = await register_user(session, cluster.main_url, name_in_shard("chatty", "pusher2"))
        room_id = (await sender.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
        await reader.call("POST", f"/join/{room_id}", {})
        await reader.call("POST", "/pushers/set", http_pusher(gateway.url, "away-key"))

        def for_reader(n: dict) -> bool:
            return n.get("room_id") == room_id and n["devices"][0]["pushkey"] == "away-key" and "event_id" in n

        before = await sender.send_text(room_id, "before the kill")
        await gateway.wait_for(lambda n: for_reader(n) and n["event_id"] == before)
        conn = await asyncpg.connect(**cluster.db_args)
        try:
            # Pushed, and its position stored (a kill between the two pushes it again).
            while not await conn.fetchval(
                    "SELECT p.last_stream_ordering >= e.stream_ordering FROM pushers p, events e"
                    " WHERE p.pushkey = 'away-key' AND e.event_id = $1", before):
                await asyncio.sleep(0.05)
            cluster.kill("pusher1")
            missed = [await sender.send_text(room_id, f"while down {i}") for i in range(3)]
            # Stored by main, handed over to nobody: the notifications are in the database.
            while await conn.fetchval("SELECT COUNT(*) FROM event_push_actions WHERE user_id = $1"
                                      " AND event_id = ANY($2::text[])", reader.user_id, missed) < len(missed):
                await asyncio.sleep(0.05)
        finally:
            await conn.close()
        assert not [n for _, n in gateway.received if for_reader(n) and n["event_id"] in missed]
        await asyncio.get_running_loop().run_in_executor(None, cluster.start_worker, "pusher1")
        await gateway.wait_for(lambda n: for_reader(n) and n["event_id"] == missed[-1])
        after = await sender.send_text(room_id, "after the restart")
        await gateway.wait_for(lambda n: for_reader(n) and n["event_id"] == after)
    pushed = [(process, n["event_id"]) for process, n in gateway.received if for_reader(n)]
    # Each once, in order, the missed ones by the restarted worker.
    assert [e for _, e in pushed] == [before, *missed, after]
    assert {p for p, _ in pushed} == {"pusher1"}

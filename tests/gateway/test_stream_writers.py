"""Stream writers on workers (issue 18): two event persister workers share the rooms'
events (the first also writes every other stream), a client worker and the main process
forward their clients' writes to them over the replication listener, and every process
sees them in /sync. Real processes on a real PostgreSQL and the real Redis, as in
tests/gateway/test_workers.py."""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace

import aiohttp
import pytest

from gateway.config import load_config
from gateway.roles import writer_of
from tests.conftest import SKIP_POSTGRES
from tests.gateway.client_api.test_keys import cross_signing, device_keys
from tests.support.client_api import Client, q, register_user, timeline_bodies
from tests.support.worker_cluster import Worker, WorkerCluster, running_cluster

pytestmark = pytest.mark.skipif(SKIP_POSTGRES, reason="workers need PostgreSQL")

SECRET = "replication-secret"
STREAMS = ("events", "typing", "to_device", "account_data", "receipts", "presence", "push_rules", "device_lists")


def workers() -> list[Worker]:
    """An event persister writing every stream (``persister1``, also serving clients), a
    second one sharing the rooms' events (``persister2``), both reached on a replication
    listener of their own, and a client worker (``client1``)."""
    return [Worker("persister1", ["client"], replication_listener=True),
            Worker("persister2", [], replication_listener=True),
            Worker("client1", ["client"])]


SHARED = {"server_name": "writers.test",
          "stream_writers": {**{s: ["persister1"] for s in STREAMS}, "events": ["persister1", "persister2"]},
          "worker_replication_secret": SECRET}


def writer_of_room(cluster: WorkerCluster, room_id: str) -> str:
    return writer_of(load_config(str(cluster.shared)).workers, "events", room_id)


async def room_on(cluster: WorkerCluster, client: Client, persister: str) -> str:
    """A new room whose events ``persister`` writes (room IDs are hashed to a writer)."""
    for _ in range(50):
        room_id = (await client.call("POST", "/createRoom", {}))["room_id"]
        if writer_of_room(cluster, room_id) == persister:
            return room_id
    raise AssertionError(f"no room of {persister} in 50")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("writers"), workers(), SHARED) as c:
        yield c


async def forwarded(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """The writes other processes forwarded to the process at ``base``, by endpoint."""
    async with session.get(f"{base}/_synapse/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for m in re.finditer(r'^gateway_forwarded_writes_total\{endpoint="([^"]+)",outcome="ok"\} (\S+)$', text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


async def whoami_device(client: Client) -> str:
    return (await client.call("GET", "/account/whoami"))["device_id"]


async def test_writes_on_the_client_worker_are_stored_by_the_writer_and_seen_on_main(cluster):
    async with aiohttp.ClientSession() as session:
        before = await forwarded(session, cluster.url("persister1"))
        before_events = await forwarded(session, cluster.url("persister2"))
        # Registered on the client worker: the new device's device-list change is forwarded too.
        alice = await register_user(session, cluster.url("client1"), "alice")
        bob = await register_user(session, cluster.url("client1"), "bob")
        room_id = (await alice.call("POST", "/createRoom", {"name": "Writers"}))["room_id"]
        await alice.call("POST", f"/rooms/{q(room_id)}/invite", {"user_id": bob.user_id})
        await bob.call("POST", f"/join/{q(room_id)}", {})
        await alice.call("PUT", f"/rooms/{q(room_id)}/state/m.room.topic/", {"topic": "forwarded"})
        event_id = await alice.send_text(room_id, "hello from the client worker")
        await alice.call("PUT", f"/rooms/{q(room_id)}/typing/{q(alice.user_id)}", {"typing": True, "timeout": 60000})
        await alice.call("POST", f"/rooms/{q(room_id)}/receipt/m.read/{q(event_id)}", {})
        await alice.call("PUT", f"/user/{q(alice.user_id)}/account_data/org.example.writers", {"forwarded": True})
        await alice.call("PUT", f"/user/{q(alice.user_id)}/rooms/{q(room_id)}/tags/u.work", {"order": 0.5})
        bob_device = await whoami_device(bob)
        await alice.call("PUT", "/sendToDevice/org.example.ping/txn1",
                         {"messages": {bob.user_id: {bob_device: {"ping": 1}}}})
        who = SimpleNamespace(user_id=alice.user_id, device_id=await whoami_device(alice))
        keys, _ = device_keys(who)
        await alice.call("POST", "/keys/upload", {"device_keys": keys})
        _, signing_keys = cross_signing(who)
        await alice.call("POST", "/keys/device_signing/upload", signing_keys)
        # The persister stored what the client worker built and ran its other writes.
        after = await forwarded(session, cluster.url("persister1"))
        grew = {e for e in after if after[e] > before.get(e, 0)}
        assert {"typing.set_typing", "receipts.send_receipt", "account_data.put", "account_data.add_tag",
                "e2e_keys.send_to_device", "e2e_keys.on_devices_changed", "e2e_keys.upload_keys",
                "e2e_keys.store_signing_keys"} <= grew
        # ... and the room's event persister its events.
        if writer_of_room(cluster, room_id) == "persister2":
            before, after = before_events, await forwarded(session, cluster.url("persister2"))
        assert {e for e in after if e.startswith("events.") and after[e] > before.get(e, 0)} == \
            {"events.create_room", "events.persist"}

        # Bob, syncing on the main process, sees every one of them.
        bob_main = Client(session, cluster.url("main"), bob.token, bob.user_id)
        seen: dict[str, object] = {}

        def everything(body: dict) -> bool:
            room = body.get("rooms", {}).get("join", {}).get(room_id, {})
            for e in room.get("timeline", {}).get("events", []):
                if e["type"] == "m.room.topic":
                    seen["topic"] = e["content"]["topic"]
                if e["type"] == "m.room.message":
                    seen["message"] = e["content"]["body"]
            for e in room.get("ephemeral", {}).get("events", []):
                if e["type"] == "m.typing" and alice.user_id in e["content"]["user_ids"]:
                    seen["typing"] = True
                if e["type"] == "m.receipt" and alice.user_id in e["content"].get(event_id, {}).get("m.read", {}):
                    seen["receipt"] = True
            for e in body.get("to_device", {}).get("events", []):
                if e["type"] == "org.example.ping" and e["sender"] == alice.user_id:
                    seen["to_device"] = e["content"]
            return len(seen) == 5

        await bob_main.sync_until(everything)
        assert seen == {"topic": "forwarded", "message": "hello from the client worker", "typing": True,
                        "receipt": True, "to_device": {"ping": 1}}
        # Alice's account data, read on main.
        alice_main = Client(session, cluster.url("main"), alice.token, alice.user_id)
        body = await alice_main.call("GET", "/sync", params={"timeout": "0"})
        types = {e["type"]: e["content"] for e in body["account_data"]["events"]}
        assert types["org.example.writers"] == {"forwarded": True}
        room_data = {e["type"]: e["content"] for e in body["rooms"]["join"][room_id]["account_data"]["events"]}
        assert room_data["m.tag"] == {"tags": {"u.work": {"order": 0.5}}}
        # Her keys, queried on main.
        found = await bob_main.call("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
        assert found["device_keys"][alice.user_id][who.device_id]["keys"] == keys["keys"]
        assert found["master_keys"][alice.user_id]["keys"] == signing_keys["master_key"]["keys"]


async def test_the_event_persister_killed_mid_burst_loses_nothing_acknowledged(cluster):
    """Two clients send through main and the client worker (neither writes events) while
    the persister is killed -9 and started again: every acknowledged send is in
    /messages once, and a sync token from before the crash still reads them all."""
    async with aiohttp.ClientSession() as session:
        alice = await register_user(session, cluster.url("main"), "alice2")
        room_id = await room_on(cluster, alice, "persister1")  # the one killed
        old_token = (await alice.call("GET", "/sync", params={"timeout": "0"}))["next_batch"]
        senders = {"main": Client(session, cluster.url("main"), alice.token, alice.user_id),
                   "client1": Client(session, cluster.url("client1"), alice.token, alice.user_id)}
        acked: dict[str, str] = {}  # body -> event ID
        refused: list[str] = []
        back_up = asyncio.Event()
        enough_before_the_kill = asyncio.Event()

        async def burst(name: str, count: int) -> None:
            client = senders[name]
            for i in range(count):
                body, txn = f"{name} {i}", f"burst-{name}-{i}"
                while True:  # a client retries a refused send with the same transaction ID
                    async with session.put(client.url(f"/rooms/{q(room_id)}/send/m.room.message/{txn}"),
                                           json={"msgtype": "m.text", "body": body},
                                           headers={"Authorization": f"Bearer {client.token}"}) as r:
                        answer = await r.json()
                    if r.status == 200:
                        acked[body] = answer["event_id"]
                        break
                    assert r.status in (502, 503) and answer["errcode"] == "M_UNKNOWN", (r.status, answer)
                    refused.append(answer["error"])
                    await back_up.wait()
                if len(acked) >= 10:
                    enough_before_the_kill.set()

        tasks = [asyncio.create_task(burst(name, 25)) for name in senders]
        await asyncio.wait_for(enough_before_the_kill.wait(), 60)
        cluster.kill("persister1")
        killed_at = len(acked)
        await asyncio.to_thread(cluster.start_worker, "persister1")
        back_up.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        assert killed_at < 50 and len(acked) == 50
        assert all("persister1" in why for why in refused)

        # Every acknowledged send is in the room's history, once.
        reader = Client(session, cluster.url("client1"), alice.token, alice.user_id)
        body = await reader.call("GET", f"/rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "200"})
        messages = [e for e in body["chunk"] if e["type"] == "m.room.message"]
        assert sorted(e["content"]["body"] for e in messages) == sorted(acked)
        assert {e["content"]["body"]: e["event_id"] for e in messages} == acked
        # Each sender's messages in its order (one room, one writer, positions in commit order).
        for name in senders:
            mine = [int(e["content"]["body"].split()[1]) for e in reversed(messages)
                    if e["content"]["body"].startswith(name)]
            assert mine == list(range(25))
        # The token from before the crash reads the whole burst, on any process.
        body = await senders["main"].call("GET", "/sync", params={
            "since": old_token, "timeout": "0", "filter": '{"room": {"timeline": {"limit": 100}}}'})
        assert sorted(timeline_bodies(room_id)(body)) == sorted(acked)


async def test_a_writer_that_is_down_is_a_503_naming_it(cluster):
    async with aiohttp.ClientSession() as session:
        alice = await register_user(session, cluster.url("main"), "alice3")
        room_id = await room_on(cluster, alice, "persister1")
        worker = Client(session, cluster.url("client1"), alice.token, alice.user_id)
        cluster.kill("persister1")
        try:
            body = await worker.call("PUT", f"/rooms/{q(room_id)}/send/m.room.message/down1",
                                     {"msgtype": "m.text", "body": "lost?"}, expect=503)
            assert body["errcode"] == "M_UNKNOWN" and "persister1" in body["error"]
            body = await worker.call("PUT", f"/rooms/{q(room_id)}/typing/{q(alice.user_id)}", {"typing": True},
                                     expect=503)
            assert "typing" in body["error"] and "persister1" in body["error"]
        finally:
            cluster.start_worker("persister1")
        # The same transaction, sent again once the writer is back, is stored once.
        event_id = await worker.call("PUT", f"/rooms/{q(room_id)}/send/m.room.message/down1",
                                     {"msgtype": "m.text", "body": "lost?"})
        again = await worker.call("PUT", f"/rooms/{q(room_id)}/send/m.room.message/down1",
                                  {"msgtype": "m.text", "body": "lost?"})
        assert again == event_id
        body = await worker.call("GET", f"/rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "50"})
        assert [e["content"]["body"] for e in body["chunk"] if e["type"] == "m.room.message"] == ["lost?"]


@pytest.mark.parametrize("header, status", [
    (None, 403),
    ("Bearer wrong-secret", 403),
    (f"Basic {SECRET}", 403),
    (f"Bearer {SECRET}", 404),  # let in: there is no such endpoint
])
async def test_the_replication_listener_wants_the_secret(cluster, header, status):
    headers = {"Authorization": header} if header else {}
    async with aiohttp.ClientSession() as session:
        replication = cluster.workers["persister1"].replication_url
        async with session.post(f"{replication}/_synapse/replication/no.such_endpoint",
                                json={}, headers=headers) as r:
            body = await r.json()
    assert r.status == status, body
    assert body["errcode"] == ("M_FORBIDDEN" if status == 403 else "M_UNRECOGNIZED")


async def test_a_forwarded_call_without_the_secret_stores_nothing(cluster):
    """What a process would forward, sent without the secret: refused, and not written."""
    async with aiohttp.ClientSession() as session:
        alice = await register_user(session, cluster.url("main"), "alice4")
        url = f"{cluster.workers['persister1'].replication_url}/_synapse/replication/account_data.put"
        call = {"args": [alice.user_id, None, "org.example.sneaky", {"x": 1}], "kwargs": {}}
        async with session.post(url, json=call, headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 403
        await alice.call("GET", f"/user/{q(alice.user_id)}/account_data/org.example.sneaky", expect=404)
        async with session.post(url, json=call, headers={"Authorization": f"Bearer {SECRET}"}) as r:
            assert r.status == 200, await r.text()
        assert await alice.call("GET", f"/user/{q(alice.user_id)}/account_data/org.example.sneaky") == {"x": 1}


async def test_two_event_persisters_one_sync_stream(cluster):
    """Rooms on both persisters written at once from two processes: a client syncing
    incrementally on the client worker sees every message once and none is skipped, and
    its tokens read the same on main."""
    async with aiohttp.ClientSession() as session:
        alice = await register_user(session, cluster.url("client1"), "alice5")
        rooms = {p: await room_on(cluster, alice, p) for p in ("persister1", "persister2")}
        start = (await alice.call("GET", "/sync", params={"timeout": "0"}))["next_batch"]
        on_main = Client(session, cluster.url("main"), alice.token, alice.user_id)
        sent: set[tuple[str, str]] = set()

        async def send(client: Client, room_id: str, tag: str) -> None:
            for i in range(15):
                await client.send_text(room_id, f"{tag} {i}")
                sent.add((room_id, f"{tag} {i}"))

        seen: list[tuple[str, str]] = []
        tokens = [(start, 0)]  # (token, how many messages came before it)

        async def follow() -> None:  # incremental syncs while the writes go on
            while len(seen) < 60:
                body = await alice.call("GET", "/sync", params={
                    "since": tokens[-1][0], "timeout": "5000", "filter": '{"room": {"timeline": {"limit": 100}}}'})
                for room_id in rooms.values():
                    room = body.get("rooms", {}).get("join", {}).get(room_id, {})
                    assert not room.get("timeline", {}).get("limited"), "a gap in the timeline"
                    seen.extend((room_id, b) for b in timeline_bodies(room_id)(body))
                tokens.append((body["next_batch"], len(seen)))

        follower = asyncio.create_task(follow())
        await asyncio.gather(*(send(c, r, f"{c.base[-5:]}-{p}") for p, r in rooms.items()
                               for c in (alice, on_main)))
        await asyncio.wait_for(follower, 120)
        assert len(sent) == 60 and sorted(seen) == sorted(sent)  # each once: none skipped, none twice
        # Every token the worker gave reads, on main, what followed it.
        token, before = tokens[len(tokens) // 2]
        body = await on_main.call("GET", "/sync", params={
            "since": token, "timeout": "0", "filter": '{"room": {"timeline": {"limit": 100}}}'})
        later = [(r, b) for r in rooms.values() for b in timeline_bodies(r)(body)]
        assert sorted(later) == sorted(seen[before:])

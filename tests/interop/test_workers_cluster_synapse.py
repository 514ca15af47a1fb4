"""The whole worker layout of issue 18, as an operator runs it: the main process, a
sync/client worker, an inbound federation worker, a federation sender and an event
persister (``stream_writers.events``), real processes on PostgreSQL and Redis, behind
docs/workers.md's nginx example (client traffic, only its ports changed) and a TLS
``server`` block for federation as that page describes it; matrix-nio clients and a
real Synapse.

- Two nio clients talk at once through nginx: every /sync is served by the sync worker,
  every send by main, every event stored by the event persister; each sees all of the
  other's messages, in order.
- Synapse federates both ways: its user joins a cluster room by alias (the inbound
  worker answers), a cluster user joins a Synapse room (main asks Synapse), messages
  go both ways (the federation sender sends).
- A read receipt made while the federation sender is killed reaches Synapse once it is
  started again.
- kill -9 of the sync worker, the federation sender and the inbound federation worker in
  the middle of a burst from both clients and Synapse, then all started again: every
  acknowledged event is in /messages, in the clients' /syncs and on Synapse (and
  Synapse's in the cluster); a sync token from before the burst
  answers 200 with every event after it, in /sync and in /messages.
- Events built at once on main and on the sync worker (writes "or any worker"), stored
  by the persister in one order that /messages and /sync share.
- kill -9 of the event persister with sends in flight, started again: main retries the
  forwarded writes, clients retry a 503 with their transaction IDs; every acknowledged
  message is stored once, synced and sent to Synapse.
- With main killed, the workers carry messages both ways: Synapse's to the clients'
  syncs, one sent to the sync worker to Synapse; the sync worker still answers a user
  whose sync makes them online (main writes presence).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any, Callable

import aiohttp
import nio
import pytest
import pytest_asyncio

from tests.conftest import SKIP_POSTGRES, create_postgres_database, drop_postgres_database, free_port
from tests.support.client_api import Client, q
from tests.support.synapse import register_synapse_user, unique_localpart
from tests.support.worker_cluster import Worker, WorkerCluster, documented_nginx, replace_documented, \
    requests_served, run_nginx

pytestmark = [pytest.mark.skipif(SKIP_POSTGRES, reason="workers need PostgreSQL"),
              pytest.mark.asyncio(loop_scope="module")]

SYNC, FED_READER, FED_SENDER, PERSISTER = "sync1", "fedreader1", "fedsender1", "persister1"
PASSWORD = "cluster password"
#: Timelines long enough that no sync of these tests is ``limited``: every event shows.
NO_GAPS = {"room": {"timeline": {"limit": 500}}}
SYNC_ROUTE, SEND_ROUTE = r'[^"]*/sync', r'[^"]*/send/[^"]*'
FORWARDED_ROUTE = r'/_synapse/replication/[^"]*'  # writes other processes forwarded


def federation_server(fed_port: int, reader_port: int, cert: Any) -> str:
    """The federation ``server`` block docs/workers.md describes: TLS at the server name's
    port, federation and key requests to the inbound federation workers."""
    return (f"upstream gateway_federation_readers {{\n    server 127.0.0.1:{reader_port};\n}}\n"
            f"server {{\n    listen 127.0.0.1:{fed_port} ssl;\n"
            f"    ssl_certificate {cert.cert_path};\n    ssl_certificate_key {cert.key_path};\n"
            f"    location ~ ^/_matrix/(federation|key)/ {{\n"
            f"        proxy_pass http://gateway_federation_readers;\n"
            f"        proxy_set_header Host $host;\n        proxy_set_header X-Forwarded-For $remote_addr;\n"
            f"        proxy_http_version 1.1;\n        client_max_body_size 50M;\n    }}\n}}\n")


class Setup:
    def __init__(self, cluster: WorkerCluster, nginx: str, server_name: str, synapse: Any,
                 session: aiohttp.ClientSession, alice: nio.AsyncClient, bob: nio.AsyncClient, carol: Client):
        self.cluster, self.nginx, self.server_name, self.synapse = cluster, nginx, server_name, synapse
        self.session, self.alice, self.bob, self.carol = session, alice, bob, carol

    def url(self, name: str) -> str:
        return self.cluster.main_url if name == "main" else self.cluster.workers[name].url

    async def served(self, name: str, route: str) -> float:
        return await requests_served(self.session, self.url(name), route)

    async def sent_to_synapse(self) -> float:
        """Transactions Synapse took from the (current) federation sender process."""
        async with self.session.get(f"{self.url(FED_SENDER)}/_synapse/metrics") as r:
            text = await r.text()
        destination = re.escape(self.synapse.server_name)
        pattern = rf'^gateway_federation_sent_transactions_total\{{destination="{destination}"\}} (\S+)$'
        return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))


async def nio_account(url: str, name: str) -> nio.AsyncClient:
    client = nio.AsyncClient(url, name)
    assert isinstance(await client.register(name, PASSWORD), nio.RegisterResponse)
    return client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory, shared_synapse):
    synapse = shared_synapse
    name, db_args = await create_postgres_database()
    directory = Path(tmp_path_factory.mktemp("cluster"))
    fed_port = free_port()
    server_name = f"127.0.0.1:{fed_port}"
    cert = synapse.ca.issue("127.0.0.1", filename=f"cluster-{fed_port}")
    cluster = WorkerCluster(directory, db_args, [
        Worker(SYNC, ["client"]),
        Worker(FED_READER, ["federation"]),
        Worker(FED_SENDER, []),  # a metrics listener only
        Worker(PERSISTER, ["replication"]),  # its instance_map entry: where writes are forwarded
    ], {
        "server_name": server_name,
        "send_federation": False, "federation_sender_instances": [FED_SENDER],
        "stream_writers": {"events": [PERSISTER]}, "worker_replication_secret": uuid.uuid4().hex,
        "federation_custom_ca_list": [str(synapse.ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
    })
    nginx_dir = directory / "nginx"
    nginx_dir.mkdir()
    server = documented_nginx()
    server = replace_documented(server, "server 127.0.0.1:8008;", f"server 127.0.0.1:{cluster.main_port};")
    server = replace_documented(server, "server 127.0.0.1:8083;", f"server 127.0.0.1:{cluster.workers[SYNC].port};")
    server = replace_documented(server, "server 127.0.0.1:8085;", f"server 127.0.0.1:{cluster.main_port};")
    server += federation_server(fed_port, cluster.workers[FED_READER].port, cert)
    clients: list[nio.AsyncClient] = []
    try:
        await asyncio.to_thread(cluster.start)
        with run_nginx(nginx_dir, server) as nginx:
            async with aiohttp.ClientSession() as session:
                for who in ("alice", "bob"):
                    clients.append(await nio_account(nginx, f"{who}-{uuid.uuid4().hex[:6]}"))
                localpart = unique_localpart("carol")
                carol = Client(session, synapse.client_url, await register_synapse_user(synapse, localpart),
                               f"@{localpart}:{synapse.server_name}")
                carol.sync_filter = '{"room": {"timeline": {"limit": 500}}}'
                yield Setup(cluster, nginx, server_name, synapse, session, *clients, carol)
    finally:
        for client in clients:
            await client.close()
        await asyncio.to_thread(cluster.stop)
        await drop_postgres_database(name)


async def sync_once(client: nio.AsyncClient, timeout: int = 0) -> nio.SyncResponse:
    resp = await client.sync(timeout=timeout, sync_filter=NO_GAPS)
    assert isinstance(resp, nio.SyncResponse), resp
    return resp


def timeline(resp: nio.SyncResponse, room_id: str, gapless: bool = True) -> list[Any]:
    """The room's new events; ``gapless``: the sync must have left none out (the first
    sync after joining another server's room does: what came before the join)."""
    room = resp.rooms.join.get(room_id)
    if room is None:
        return []
    assert not (gapless and room.timeline.limited), "a sync of the room left a gap"
    return room.timeline.events


async def follow(client: nio.AsyncClient, room_id: str, seen: list[str], until: Callable[[], bool]) -> int:
    """Long-poll /sync as a client does until ``until()``: the IDs of the room's new
    events go to ``seen``; a failed sync (the sync worker down: nginx answers 502) is
    retried with the same token. Returns how many syncs failed."""
    failed = 0
    while not until():
        try:
            resp = await client.sync(timeout=1000, sync_filter=NO_GAPS)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            resp = None
        if isinstance(resp, nio.SyncResponse):
            seen.extend(e.event_id for e in timeline(resp, room_id))
        else:
            failed += 1
            await asyncio.sleep(0.2)  # a client's back-off before it tries again
    return failed


class Expected:
    """What the followers wait for: nothing until ``ids`` is set (the burst is over)."""

    def __init__(self) -> None:
        self.ids: set[str] | None = None

    def seen_by(self, seen: list[str]) -> Callable[[], bool]:
        return lambda: self.ids is not None and self.ids <= set(seen)


async def send(client: nio.AsyncClient, room_id: str, body: str, *, retries: int = 0) -> str:
    """Send a message; ``retries``: how many times a 503 (the room's writer away) is
    tried again with the same transaction ID, as clients do."""
    txn = uuid.uuid4().hex
    for _ in range(retries + 1):
        resp = await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body}, tx_id=txn)
        if isinstance(resp, nio.RoomSendResponse):
            return resp.event_id
        assert resp.transport_response is not None and resp.transport_response.status == 503, resp
    raise AssertionError(f"{body!r} never acknowledged")


async def wait_for(client: nio.AsyncClient, room_id: str, ids: set[str], seen: list[str] | None = None) -> list[str]:
    """Syncs until every one of ``ids`` was in the room's timeline; returns what was seen."""
    seen = [] if seen is None else seen
    for _ in range(120):
        if ids <= set(seen):
            return seen
        seen.extend(e.event_id for e in timeline(await sync_once(client, timeout=1000), room_id, gapless=False))
    raise AssertionError(f"{client.user_id} never saw {sorted(ids - set(seen))}")


async def room_with_both(s: Setup) -> str:
    created = await s.alice.room_create(name="cluster room", invite=[s.bob.user_id])
    assert isinstance(created, nio.RoomCreateResponse), created
    room_id = created.room_id
    await sync_once(s.bob)
    assert isinstance(await s.bob.join(room_id), nio.JoinResponse)
    await sync_once(s.alice)
    await sync_once(s.bob)
    return room_id


async def messages_ids(client: nio.AsyncClient, room_id: str) -> list[str]:
    """The room's whole history through /messages (newest first), as event IDs."""
    ids: list[str] = []
    token = ""
    for _ in range(100):
        page = await client.room_messages(room_id, start=token, limit=100)
        assert isinstance(page, nio.RoomMessagesResponse), page
        ids += [e.event_id for e in page.chunk]
        if not page.chunk or not page.end:
            return ids
        token = page.end
    raise AssertionError("/messages never reached the room's start")


async def synapse_event_ids(s: Setup, room_id: str, ids: set[str]) -> set[str]:
    """Carol's long-polls on Synapse until every one of ``ids`` arrived there."""
    seen: set[str] = set()

    def collect(body: dict) -> bool:
        room = body.get("rooms", {}).get("join", {}).get(room_id, {})
        assert not room.get("timeline", {}).get("limited") or not seen, "Synapse left a gap in carol's timeline"
        seen.update(e["event_id"] for e in room.get("timeline", {}).get("events", []))
        return ids <= seen

    await s.carol.sync_until(collect, timeout=180)
    return seen


async def test_two_nio_clients_talk_at_once_through_nginx(setup):
    s = setup
    room_id = await room_with_both(s)
    before = {name: await s.served(name, SYNC_ROUTE) for name in ("main", SYNC)}
    main_sends = await s.served("main", SEND_ROUTE)
    forwarded = await s.served(PERSISTER, FORWARDED_ROUTE)
    sent: dict[str, list[str]] = {s.alice.user_id: [], s.bob.user_id: []}
    seen: dict[str, list[str]] = {s.alice.user_id: [], s.bob.user_id: []}
    expected = Expected()

    async def talk(client: nio.AsyncClient) -> None:
        for i in range(15):
            sent[client.user_id].append(await send(client, room_id, f"{client.user_id} says {i}"))

    listeners = [asyncio.create_task(follow(c, room_id, seen[c.user_id], expected.seen_by(seen[c.user_id])))
                 for c in (s.alice, s.bob)]
    await asyncio.gather(talk(s.alice), talk(s.bob))
    expected.ids = set(sent[s.alice.user_id]) | set(sent[s.bob.user_id])
    assert await asyncio.wait_for(asyncio.gather(*listeners), 120) == [0, 0]  # no sync failed
    for me, other in ((s.alice, s.bob), (s.bob, s.alice)):
        # Each saw the other's messages once, in the order they were acknowledged.
        assert [e for e in seen[me.user_id] if e in sent[other.user_id]] == sent[other.user_id]
    # nginx sent every /sync to the sync worker, every send to main; the event persister stored them.
    assert await s.served(SYNC, SYNC_ROUTE) > before[SYNC]
    assert await s.served("main", SYNC_ROUTE) == before["main"]
    assert await s.served("main", SEND_ROUTE) == main_sends + 30
    # (main's group commit may hand the writer several events in one call)
    assert forwarded < await s.served(PERSISTER, FORWARDED_ROUTE) <= forwarded + 30


async def federated_room(s: Setup, name: str) -> str:
    """A cluster room alice made with bob and Synapse's carol in it (carol joins by its
    alias: directory query, make_join and send_join answered by the inbound worker)."""
    room_id = await room_with_both(s)
    alias = f"{name}-{uuid.uuid4().hex[:6]}"
    assert isinstance(await s.alice.room_put_alias(f"#{alias}:{s.server_name}", room_id), nio.RoomPutAliasResponse)
    assert isinstance(await s.alice.room_put_state(room_id, "m.room.join_rules", {"join_rule": "public"}),
                      nio.RoomPutStateResponse)
    joined = await s.carol.call("POST", f"/join/{q(f'#{alias}:{s.server_name}')}", {})
    assert joined["room_id"] == room_id
    return room_id


async def test_synapse_federates_with_the_cluster_both_ways(setup):
    s = setup
    # Into a cluster room: Synapse's user joins through the inbound federation worker.
    reader_sends = await s.served(FED_READER, r"[^\"]*/send/[^\"]*")
    room_id = await federated_room(s, "both-ways")
    hello = await s.carol.send_text(room_id, "hello from synapse")
    await wait_for(s.alice, room_id, {hello})
    await wait_for(s.bob, room_id, {hello})
    reply = await send(s.bob, room_id, "hello from the cluster")
    await synapse_event_ids(s, room_id, {reply})  # sent by the federation sender
    assert await s.sent_to_synapse() > 0
    # Into a Synapse room: main asks Synapse (make_join, send_join) for alice.
    theirs = (await s.carol.call("POST", "/createRoom", {"preset": "private_chat", "invite": [s.alice.user_id]}))[
        "room_id"]
    for _ in range(60):
        if theirs in (await sync_once(s.alice, timeout=1000)).rooms.invite:
            break
    else:
        raise AssertionError("alice never saw Synapse's invite")
    assert isinstance(await s.alice.join(theirs), nio.JoinResponse)
    ours = await send(s.alice, theirs, "in synapse's room")
    await synapse_event_ids(s, theirs, {ours})
    answer = await s.carol.send_text(theirs, "welcome")
    await wait_for(s.alice, theirs, {answer})
    # Synapse's transactions went to the inbound worker (counted once its answers were sent).
    assert await s.served(FED_READER, r"[^\"]*/send/[^\"]*") > reader_sends


async def test_a_receipt_made_while_the_federation_sender_is_killed_reaches_synapse_when_it_is_back(setup):
    """The receipt is stored by main (its writer) and kept for Synapse there; the sender,
    started again after ``kill -9``, sends it (it heard nothing over Redis meanwhile)."""
    s = setup
    room_id = await federated_room(s, "receipts")
    read = await send(s.alice, room_id, "read me")
    await synapse_event_ids(s, room_id, {read})
    await asyncio.to_thread(s.cluster.kill, FED_SENDER)
    try:
        answer = await s.alice.update_receipt_marker(room_id, read)
        assert isinstance(answer, nio.UpdateReceiptMarkerResponse), answer
    finally:
        await asyncio.to_thread(s.cluster.start_worker, FED_SENDER)

    def alices_receipt(body: dict) -> bool:
        room = body.get("rooms", {}).get("join", {}).get(room_id, {})
        return any(e["type"] == "m.receipt" and s.alice.user_id in e["content"].get(read, {}).get("m.read", {})
                   for e in room.get("ephemeral", {}).get("events", []))

    await s.carol.sync_until(alices_receipt, timeout=180)


async def test_kill_9_of_the_sync_worker_and_the_federation_workers_mid_burst_loses_nothing(setup):
    s = setup
    room_id = await federated_room(s, "burst")
    await wait_for(s.alice, room_id, set())  # both clients' tokens are past the setup
    await wait_for(s.bob, room_id, set())
    await s.carol.sync_until(lambda body: True)
    old_tokens = {c.user_id: c.next_batch for c in (s.alice, s.bob)}
    sent: dict[str, list[str]] = {s.alice.user_id: [], s.bob.user_id: [], s.carol.user_id: []}
    seen: dict[str, list[str]] = {s.alice.user_id: [], s.bob.user_id: []}
    expected = Expected()
    killed, restarted = asyncio.Event(), asyncio.Event()

    async def talk(client: nio.AsyncClient, n: int) -> None:
        for i in range(n):
            sent[client.user_id].append(await send(client, room_id, f"{client.user_id} burst {i}"))
            if client is s.alice and i == 9:  # a third of the way: kill them, mid-flight
                for name in (SYNC, FED_SENDER, FED_READER):
                    await asyncio.to_thread(s.cluster.kill, name)
                killed.set()
            if client is s.alice and i == 19:
                await asyncio.gather(*(asyncio.to_thread(s.cluster.start_worker, name)
                                       for name in (SYNC, FED_SENDER, FED_READER)))
                restarted.set()

    async def remote_talk() -> None:
        for i in range(10):
            if i == 3:
                await killed.wait()
            if i == 7:
                await restarted.wait()
            sent[s.carol.user_id].append(await s.carol.send_text(room_id, f"synapse burst {i}"))

    listeners = [asyncio.create_task(follow(c, room_id, seen[c.user_id], expected.seen_by(seen[c.user_id])))
                 for c in (s.alice, s.bob)]
    await asyncio.gather(talk(s.alice, 30), talk(s.bob, 30), remote_talk())
    ours = set(sent[s.alice.user_id]) | set(sent[s.bob.user_id])
    expected.ids = ours | set(sent[s.carol.user_id])
    assert len(expected.ids) == 70
    failed = await asyncio.wait_for(asyncio.gather(*listeners), 180)
    assert sum(failed) > 0, "the clients' syncs went on while the sync worker was down"
    # Every acknowledged event is in the room's history, each client's own in its order.
    history = list(reversed(await messages_ids(s.alice, room_id)))
    assert expected.ids <= set(history)
    for user_id, ids in sent.items():
        assert [e for e in history if e in ids] == ids, user_id
    # The tokens from before the burst, on the restarted sync worker: 200, and every event since.
    syncs = await s.served(SYNC, SYNC_ROUTE)  # counted by the new process
    for client in (s.alice, s.bob):
        resp = await client.sync(timeout=0, since=old_tokens[client.user_id], sync_filter=NO_GAPS)
        assert isinstance(resp, nio.SyncResponse), resp
        since_old = [e.event_id for e in timeline(resp, room_id)]
        assert expected.ids <= set(since_old) and len(since_old) == len(set(since_old))
        for user_id, ids in sent.items():
            assert [e for e in since_old if e in ids] == ids, user_id
        # The clients' own syncs across the crash: every event once, each sender's in order.
        assert len(seen[client.user_id]) == len(set(seen[client.user_id])), "an event came down /sync twice"
        for user_id, ids in sent.items():
            assert [e for e in seen[client.user_id] if e in ids] == ids, user_id
    assert await s.served(SYNC, SYNC_ROUTE) == syncs + 2
    # A sync token is a /messages token too: forwards from the old one, every event since.
    page = await s.alice.room_messages(room_id, start=old_tokens[s.alice.user_id], limit=200,
                                       direction=nio.MessageDirection.front)
    assert isinstance(page, nio.RoomMessagesResponse), page
    assert [e.event_id for e in page.chunk if e.event_id in expected.ids] == [e for e in history if e in expected.ids]
    # Synapse has every one of the cluster's events, from the restarted sender.
    assert ours <= await synapse_event_ids(s, room_id, ours)
    assert await s.sent_to_synapse() > 0
    # Typing (in memory, made on main) reaches the restarted processes over Redis: bob's
    # sync on the sync worker and, through the sender, carol on Synapse.
    assert isinstance(await s.alice.room_typing(room_id, True, 30_000), nio.RoomTypingResponse)
    for _ in range(60):
        resp = await sync_once(s.bob, timeout=1000)
        room = resp.rooms.join.get(room_id)
        if room and any(isinstance(e, nio.TypingNoticeEvent) and s.alice.user_id in e.users for e in room.ephemeral):
            break
    else:
        raise AssertionError("bob never saw alice typing")

    def carol_sees_typing(body: dict) -> bool:
        events = body.get("rooms", {}).get("join", {}).get(room_id, {}).get("ephemeral", {}).get("events", [])
        return any(e["type"] == "m.typing" and s.alice.user_id in e["content"]["user_ids"] for e in events)

    await s.carol.sync_until(carol_sees_typing)


async def test_kill_9_of_the_event_persister_mid_burst_stores_each_message_once(setup):
    """The writer of the room's events dies with sends in flight: main retries the
    forwarded writes until it is back (a client retries a 503 with its transaction ID);
    every acknowledged message is stored once, synced and sent to Synapse."""
    s = setup
    room_id = await federated_room(s, "persister")
    await wait_for(s.alice, room_id, set())
    await wait_for(s.bob, room_id, set())
    sent: dict[str, list[str]] = {s.alice.user_id: [], s.bob.user_id: []}
    seen: dict[str, list[str]] = {s.alice.user_id: [], s.bob.user_id: []}
    expected = Expected()
    restarted: list[asyncio.Task] = []

    async def talk(client: nio.AsyncClient, n: int) -> None:
        for i in range(n):
            sent[client.user_id].append(await send(client, room_id, f"{client.user_id} persisted {i}", retries=5))
            if client is s.alice and i == 4:
                await asyncio.to_thread(s.cluster.kill, PERSISTER)
                restarted.append(asyncio.create_task(asyncio.to_thread(s.cluster.start_worker, PERSISTER)))

    listeners = [asyncio.create_task(follow(c, room_id, seen[c.user_id], expected.seen_by(seen[c.user_id])))
                 for c in (s.alice, s.bob)]
    await asyncio.gather(talk(s.alice, 15), talk(s.bob, 15))
    await restarted[0]
    expected.ids = set(sent[s.alice.user_id]) | set(sent[s.bob.user_id])
    assert len(expected.ids) == 30
    await asyncio.wait_for(asyncio.gather(*listeners), 180)
    history = list(reversed(await messages_ids(s.alice, room_id)))
    assert expected.ids <= set(history) and len(history) == len(set(history))
    for user_id, ids in sent.items():
        assert [e for e in history if e in ids] == ids, user_id  # each once, in order
        for client in (s.alice, s.bob):
            assert [e for e in seen[client.user_id] if e in ids] == ids, (client.user_id, user_id)
    assert expected.ids <= await synapse_event_ids(s, room_id, expected.ids)


async def test_events_built_on_main_and_on_the_sync_worker_at_once(setup):
    """Any process may build events (docs/workers.md: writes "or any worker"): alice's
    sends are built on main, bob's on the sync worker, at once in one room; the persister
    stores both in one order that every reader shares."""
    s = setup
    room_id = await room_with_both(s)
    on_worker = nio.AsyncClient(s.url(SYNC), s.bob.user_id, device_id=s.bob.device_id)
    on_worker.restore_login(s.bob.user_id, s.bob.device_id, s.bob.access_token)
    sent: dict[str, list[str]] = {s.alice.user_id: [], s.bob.user_id: []}
    worker_sends = await s.served(SYNC, SEND_ROUTE)
    try:
        async def talk(client: nio.AsyncClient) -> None:
            for i in range(15):
                sent[client.user_id].append(await send(client, room_id, f"{client.user_id} built {i}"))

        await asyncio.gather(talk(s.alice), talk(on_worker))
    finally:
        await on_worker.close()
    assert await s.served(SYNC, SEND_ROUTE) == worker_sends + 15
    everything = set(sent[s.alice.user_id]) | set(sent[s.bob.user_id])
    history = list(reversed(await messages_ids(s.alice, room_id)))
    assert everything <= set(history) and len(history) == len(set(history))
    for user_id, ids in sent.items():
        assert [e for e in history if e in ids] == ids, user_id
    order = [e for e in history if e in everything]
    for client in (s.alice, s.bob):  # /sync on the sync worker: the same order as /messages on main
        assert [e for e in await wait_for(client, room_id, everything) if e in everything] == order


async def test_with_main_down_the_workers_carry_messages_both_ways(setup):
    """main killed: the sync worker still answers a user whose sync makes them online
    (the presence change waits for main), Synapse's messages reach the clients through
    the inbound worker and the sync worker, and a message sent to the sync worker
    (writes "or any worker") is stored by the persister and sent to Synapse by the
    sender. Once main is back the user is online."""
    s = setup
    room_id = await federated_room(s, "main-down")
    dave = await nio_account(s.nginx, f"dave-{uuid.uuid4().hex[:6]}")
    on_worker = nio.AsyncClient(s.url(SYNC), s.bob.user_id, device_id=s.bob.device_id)
    on_worker.restore_login(s.bob.user_id, s.bob.device_id, s.bob.access_token)
    try:
        assert isinstance(await s.alice.room_invite(room_id, dave.user_id), nio.RoomInviteResponse)
        assert isinstance(await dave.join(room_id), nio.JoinResponse)
        await wait_for(s.alice, room_id, set())
        await asyncio.to_thread(s.cluster.kill, "main")
        try:
            resp = await dave.sync(timeout=0, sync_filter=NO_GAPS)  # offline until now: this makes him online
            assert isinstance(resp, nio.SyncResponse), resp
            assert room_id in resp.rooms.join
            remote = await s.carol.send_text(room_id, "while main is down")
            await wait_for(s.alice, room_id, {remote})
            local = await send(on_worker, room_id, "sent to the sync worker while main is down")
            await synapse_event_ids(s, room_id, {local})
        finally:
            await asyncio.to_thread(s.cluster.start_main)
        await sync_once(dave)
        presence = await s.alice.get_presence(dave.user_id)
        assert isinstance(presence, nio.PresenceGetResponse) and presence.presence == "online", presence
    finally:
        await dave.close()
        await on_worker.close()

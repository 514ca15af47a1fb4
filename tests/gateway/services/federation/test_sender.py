"""The federation sender against a real fake peer (TLS on loopback, every request and PDU
signature checked with the protocol core): delivery in order, one transaction in flight,
destinations per event (joined servers at the event, targets of kicks and bans), backoff
while the peer is down and delivery when it is back, catch-up after a long outage, a
restart of our server, EDU coalescing, a signed request from the peer resetting the
backoff."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from gateway.app import build_listener_app
from gateway.config import parse_config
from gateway.server import HomeServer
from gateway.services.events import EventSpec
from tests.support.federation_peer import FederationPeer, remote_join
from tests.support.tls import TestCA

from ..conftest import make_user


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def retry():
    return {"destination_min_retry_interval": 40, "destination_max_retry_interval": 300}


@pytest.fixture
def open_hs(tmp_path, database_config, ca, retry):
    """``await open_hs(start=True)``: our server (hs.test) on the test database; several
    calls share the database and the signing key (a restart)."""
    opened: list[HomeServer] = []
    db = {"name": "sqlite3", "args": {"database": database_config.args["database"]}} \
        if database_config.engine == "sqlite" else {"name": "psycopg2", "args": database_config.args}

    async def open_(start: bool = True) -> HomeServer:
        config = parse_config({
            "server_name": "hs.test", "database": db,
            "signing_key_path": str(tmp_path / "hs.signing.key"),
            "listeners": [{"port": 1, "resources": [{"names": ["client", "federation"]}]}],
            "federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
            "federation": retry,
        }, config_path=str(tmp_path / "homeserver.yaml"))
        hs = await HomeServer.open(config)
        opened.append(hs)
        _SERVERS.append(hs)
        if start:
            await hs.federation_sender.start()
        return hs

    yield open_
    # closed by the tests that restart; the rest here


@pytest.fixture
async def hs(open_hs):
    server = await open_hs()
    yield server
    await server.close()


@pytest.fixture
async def peer(ca, tmp_path):
    keys: dict = {}
    p = FederationPeer(ca, lambda server, key_id: keys.get((server, key_id)))
    p.our_keys = keys
    await p.start()
    yield p
    await p.stop()


def trust(peer: FederationPeer, hs: HomeServer) -> None:
    peer.our_keys[(hs.server_name, hs.signing_key.key_id)] = hs.signing_key.verify_key


async def new_room(hs, alice: str | None = None) -> tuple[str, str]:
    alice = alice or await make_user(hs, "alice")
    room_id = await hs.rooms.create_room(alice, {"room_version": "12", "preset": "public_chat"})
    return alice, room_id


async def say(hs, room_id, sender, n: int, prefix: str = "m") -> list[str]:
    out = []
    for i in range(n):
        sent = await hs.events.send_event(room_id, EventSpec("m.room.message", sender,
                                                             {"msgtype": "m.text", "body": f"{prefix}{i}"}))
        out.append(sent.pdu.event_id)
    return out


def bodies(peer: FederationPeer) -> list[str]:
    return [p["content"].get("body") for p in peer.pdus if p["type"] == "m.room.message"]


async def destination(hs, name):
    return await hs.federation_sender.store.get_destination(name)


def routed(hs, event_id: str):
    """A check: the sender has worked out the destinations of ``event_id``."""
    async def check():
        last = (await hs.events.store.get_event(event_id)).stream_ordering
        return await hs.federation_sender.store.get_sender_position() >= last

    return check


async def until(check, timeout: float = 20.0):
    """Poll ``await check()`` (a database condition) until it is truthy; return it."""
    async def loop():
        while not (result := await check()):
            await asyncio.sleep(0.01)
        return result

    try:
        return await asyncio.wait_for(loop(), timeout)
    except asyncio.TimeoutError:
        await _dump()
        raise


_SERVERS: list = []


async def _dump():
    """On a timeout: what the sender thinks (printed with the failure)."""
    for hs in _SERVERS[-1:]:
        s = hs.federation_sender
        print("DUMP pos", s._position, await s.store.get_sender_position(), "started", s.started, "stopped", s.stopped,
              "dist", s._distributor, s._wake.is_set(), "cur", await hs.events.store.get_current_position())
        for name, q in s._queues.items():
            print("Q", name, len(q.pdus), q.catching_up, q.task, q.retry_interval, q.timer,
                  await s.store.get_destination(name))


async def test_pdus_arrive_in_order_signed_one_transaction_at_a_time(hs, peer):
    trust(peer, hs)
    alice, room_id = await new_room(hs)
    await remote_join(hs, room_id, f"@bob:{peer.server_name}", peer)
    sent = await say(hs, room_id, alice, 120)
    await peer.wait_for(lambda: len(peer.pdus) >= 120)
    assert peer.errors == []
    assert peer.event_ids() == sent  # in order; nothing from before the join, no duplicates
    assert all(len(t.pdus) <= 50 for t in peer.transactions) and len(peer.transactions) >= 3
    assert len({t.txn_id for t in peer.transactions}) == len(peer.transactions)
    assert peer.max_in_flight == 1
    assert {t.origin for t in peer.transactions} == {"hs.test"}
    last = (await hs.events.store.get_event(sent[-1])).stream_ordering

    async def all_sent():
        row = await destination(hs, peer.server_name)
        return row if row.last_successful_stream_ordering == last else None

    row = await until(all_sent)
    assert row.retry_interval == 0 and row.failure_ts is None
    rooms, total = await hs.federation_sender.store.list_destination_rooms(peer.server_name, offset=0, limit=10)
    assert rooms == [(room_id, last)] and total == 1
    assert await hs.federation_sender.joined_servers(room_id) == {peer.server_name}


async def test_kicked_and_banned_servers_receive_their_own_membership_change(hs, peer, ca):
    trust(peer, hs)
    alice, room_id = await new_room(hs)
    bob = f"@bob:{peer.server_name}"
    await remote_join(hs, room_id, bob, peer)
    kick = await hs.rooms.kick(alice, room_id, bob)
    await peer.wait_for(lambda: kick.pdu.event_id in peer.event_ids())
    # Nobody of the peer's is in the room now: this message is not for it...
    await say(hs, room_id, alice, 1, prefix="after-kick")
    # ...but the ban of another of its users is, and arrives after (a single ordered queue).
    ban = await hs.rooms.ban(alice, room_id, f"@carol:{peer.server_name}")
    await peer.wait_for(lambda: ban.pdu.event_id in peer.event_ids())
    assert peer.event_ids()[-2:] == [kick.pdu.event_id, ban.pdu.event_id]
    assert "after-kick0" not in bodies(peer)
    assert peer.errors == []


async def test_an_invite_goes_through_invite_not_to_a_server_outside_the_room(hs, peer):
    """The invitee's server got the invite through /invite: a server with nobody in the
    room is sent no events of it (a later ban of one of its users is its business)."""
    trust(peer, hs)
    alice, room_id = await new_room(hs)
    invite = await hs.events.send_event(
        room_id, EventSpec("m.room.member", alice, {"membership": "invite"}, f"@dave:{peer.server_name}"))
    ban = await hs.rooms.ban(alice, room_id, f"@carol:{peer.server_name}")
    await peer.wait_for(lambda: ban.pdu.event_id in peer.event_ids())
    assert invite.pdu.event_id not in peer.event_ids()
    assert peer.errors == []


async def test_down_peer_is_retried_with_growing_backoff_then_gets_everything(hs, peer):
    trust(peer, hs)
    alice, room_id = await new_room(hs)
    await remote_join(hs, room_id, f"@bob:{peer.server_name}", peer)
    await peer.stop()
    sent = await say(hs, room_id, alice, 5)
    intervals = []

    async def backing_off_thrice():
        row = await destination(hs, peer.server_name)
        if row and row.retry_interval and (not intervals or intervals[-1] != row.retry_interval):
            intervals.append(row.retry_interval)
        return row if len(intervals) >= 3 else None

    row = await until(backing_off_thrice)
    assert row.failure_ts is not None and row.retry_last_ts >= row.failure_ts
    # Each failure waits longer (the first ones may pass unseen between two looks), up to the max.
    assert intervals == sorted(set(intervals)) and intervals[-1] <= 300
    assert hs.federation_sender.is_backing_off(peer.server_name) or row.retry_interval > 0
    await peer.start()
    await peer.wait_for(lambda: sent[-1] in peer.event_ids())
    assert peer.event_ids() == sent  # a short outage: every event, in order
    assert peer.errors == []
    async def reset():
        row = await destination(hs, peer.server_name)
        return (row.retry_interval, row.retry_last_ts, row.failure_ts) == (0, 0, None)

    assert await until(reset)


async def test_server_errors_back_off_too(hs, peer):
    trust(peer, hs)
    alice, room_id = await new_room(hs)
    await remote_join(hs, room_id, f"@bob:{peer.server_name}", peer)
    peer.answer = 503
    sent = await say(hs, room_id, alice, 2)
    await peer.wait_for(lambda: peer.refused >= 2)
    assert (await destination(hs, peer.server_name)).retry_interval > 0
    peer.answer = "ok"
    await peer.wait_for(lambda: sent[-1] in peer.event_ids())
    assert peer.event_ids() == sent


async def test_catch_up_after_a_long_outage_sends_only_the_newest_event(hs, peer):
    trust(peer, hs)
    alice, room_id = await new_room(hs)
    _, quiet_room = await new_room(hs, alice)
    await remote_join(hs, room_id, f"@bob:{peer.server_name}", peer)
    await remote_join(hs, quiet_room, f"@bob:{peer.server_name}", peer)
    await peer.stop()
    sent = await say(hs, room_id, alice, 80)
    quiet = await say(hs, quiet_room, alice, 2, prefix="q")
    await until(routed(hs, quiet[-1]))
    await peer.start()
    await peer.wait_for(lambda: sent[-1] in peer.event_ids() and quiet[-1] in peer.event_ids())
    got = peer.event_ids()
    # The busy room: its newest event only (the peer asks for the gap); in order of position.
    assert got == [sent[-1], quiet[-1]]
    assert await hs.events.store.get_forward_extremities(room_id) == [sent[-1]]
    assert peer.errors == []


async def test_restart_of_our_server_delivers_what_was_pending(open_hs, peer):
    # Events stored while the sender did not run at all (it never saw them)...
    hs1 = await open_hs(start=False)
    trust(peer, hs1)
    alice, room_id = await new_room(hs1)
    await remote_join(hs1, room_id, f"@bob:{peer.server_name}", peer)
    first = await say(hs1, room_id, alice, 3, prefix="a")
    await hs1.close()
    # ...and events it routed but could not deliver (the peer was down) before a restart.
    await peer.stop()
    hs2 = await open_hs()
    second = await say(hs2, room_id, alice, 3, prefix="b")

    last = (await hs2.events.store.get_event(second[-1])).stream_ordering

    async def routed_and_failed():
        row = await destination(hs2, peer.server_name)
        position = await hs2.federation_sender.store.get_sender_position()
        return position >= last and row is not None and row.retry_interval > 0

    await until(routed_and_failed)
    await hs2.close()
    await peer.start()
    hs3 = await open_hs()
    try:
        await peer.wait_for(lambda: second[-1] in peer.event_ids())
        assert peer.event_ids() == first + second
        assert peer.errors == []
    finally:
        await hs3.close()


async def test_keyed_edus_coalesce_while_a_transaction_is_in_flight(hs, peer):
    trust(peer, hs)
    sender = hs.federation_sender
    peer.gate.clear()
    sender.send_edu(peer.server_name, "m.receipt", {"n": 0})
    await peer.wait_for(lambda: peer.in_flight == 1)
    for i in range(5):
        sender.send_edu(peer.server_name, "m.typing", {"room_id": "!a", "n": i}, key="!a")
        sender.send_edu(peer.server_name, "m.typing", {"room_id": "!b", "n": i}, key="!b")
    sender.send_edu(peer.server_name, "m.direct_to_device", {"message_id": "x"})
    sender.send_edu(peer.server_name, "m.typing", {"room_id": "!a", "n": 9}, key="!a")
    sender.send_edu(hs.server_name, "m.typing", {"room_id": "!a"}, key="!a")  # ourselves: ignored
    peer.gate.set()
    await peer.wait_for(lambda: len(peer.transactions) == 2 and peer.in_flight == 0)
    assert peer.transactions[0].edus == [{"edu_type": "m.receipt", "content": {"n": 0}}]
    assert peer.transactions[1].edus == [
        {"edu_type": "m.typing", "content": {"room_id": "!b", "n": 4}},
        {"edu_type": "m.direct_to_device", "content": {"message_id": "x"}},
        {"edu_type": "m.typing", "content": {"room_id": "!a", "n": 9}},
    ]
    assert peer.transactions[1].pdus == [] and peer.errors == []


@pytest.mark.parametrize("retry", [{"destination_min_retry_interval": "1h"}])
async def test_a_signed_request_from_the_peer_ends_the_backoff(hs, peer):
    trust(peer, hs)
    alice, room_id = await new_room(hs)
    await remote_join(hs, room_id, f"@bob:{peer.server_name}", peer)
    await peer.stop()
    sent = await say(hs, room_id, alice, 2)

    async def failed():
        row = await destination(hs, peer.server_name)
        return row if row and row.retry_interval else None

    assert (await until(failed)).retry_interval >= 3600_000 * 0.8
    await peer.start()
    # An hour to wait... unless the peer talks to us: our keyring fetches its key over TLS.
    async with TestClient(TestServer(build_listener_app(hs, hs.config.listeners[0]))) as client:
        target = f"/_matrix/federation/v1/query/profile?user_id=%40alice%3Ahs.test"
        resp = await client.get(URL(target, encoded=True),
                                headers={"Authorization": peer.sign_request("GET", target, hs.server_name)})
        assert resp.status == 200, await resp.text()
    await peer.wait_for(lambda: sent[-1] in peer.event_ids())
    assert peer.event_ids() == sent


@pytest.mark.parametrize("retry", [{"destination_min_retry_interval": "1h"}])
async def test_admin_reset_connection_sends_now(hs, peer):
    trust(peer, hs)
    alice, room_id = await new_room(hs)
    await remote_join(hs, room_id, f"@bob:{peer.server_name}", peer)
    await peer.stop()
    sent = await say(hs, room_id, alice, 3)

    async def failed():
        row = await destination(hs, peer.server_name)
        return row if row and row.retry_interval else None

    await until(failed)
    await peer.start()
    await hs.auth.users.create_user("@root:hs.test", password_hash=None, created_ts=1, admin=True)
    token = (await hs.auth.login_session("@root:hs.test"))["access_token"]
    async with TestClient(TestServer(build_listener_app(hs, hs.config.listeners[0]))) as client:
        resp = await client.post(f"/_synapse/admin/v1/federation/destinations/{peer.server_name}/reset_connection",
                                 headers={"Authorization": f"Bearer {token}"}, json={})
        assert resp.status == 200, await resp.text()
    await peer.wait_for(lambda: sent[-1] in peer.event_ids())
    assert peer.event_ids() == sent and peer.errors == []


async def test_each_event_goes_to_the_servers_in_the_room_at_that_event(hs, peer, ca):
    other = FederationPeer(ca, peer.keys_of_senders)
    await other.start()
    try:
        trust(peer, hs)
        alice, room_id = await new_room(hs)
        await remote_join(hs, room_id, f"@a:{peer.server_name}", peer)
        m1 = await say(hs, room_id, alice, 1, prefix="one")
        await peer.wait_for(lambda: m1[0] in peer.event_ids())
        await remote_join(hs, room_id, f"@b:{other.server_name}", other)
        m2 = await say(hs, room_id, alice, 1, prefix="two")
        await remote_join(hs, room_id, f"@b:{other.server_name}", other, membership="leave")
        m3 = await say(hs, room_id, alice, 1, prefix="three")
        # In one write: a message, a ban of the other server's user, a message after it.
        await remote_join(hs, room_id, f"@b:{other.server_name}", other)
        both = await hs.events.send_events(room_id, [
            EventSpec("m.room.message", alice, {"msgtype": "m.text", "body": "four"}),
            EventSpec("m.room.member", alice, {"membership": "ban"}, f"@b:{other.server_name}"),
            EventSpec("m.room.message", alice, {"msgtype": "m.text", "body": "five"}),
        ])
        ids = [s.pdu.event_id for s in both]
        await peer.wait_for(lambda: ids[-1] in peer.event_ids())
        await other.wait_for(lambda: ids[1] in other.event_ids())
        assert peer.event_ids() == m1 + m2 + m3 + ids
        assert other.event_ids() == m2 + ids[:2]  # not m1 (before), m3 (left), "five" (banned)
        assert peer.errors == [] and other.errors == []
    finally:
        await other.stop()


async def test_routing_is_right_when_members_were_read_before_a_join_committed(open_hs, peer):
    hs = await open_hs(start=False)
    try:
        alice, room_id = await new_room(hs)
        before_join = await hs.federation_sender.store.get_joined_members([room_id])
        await remote_join(hs, room_id, f"@bob:{peer.server_name}", peer)
        sent = await say(hs, room_id, alice, 1)
        pos = (await hs.events.store.get_event(sent[0])).stream_ordering
        sender = hs.federation_sender
        sender._position = 0

        async def stale_members(rooms):  # read just before the join committed
            return before_join

        sender.store.get_joined_members = stale_members
        assert await sender._distribute_batch() is False
        assert sender._queues[peer.server_name].pdus == [(pos, sent[0])]
        assert await sender.store.get_catch_up_rooms(peer.server_name, 0, 10) == [(room_id, pos)]
    finally:
        await hs.close()


async def test_local_typing_and_receipts_become_edus_for_the_rooms_servers(hs, peer):
    trust(peer, hs)
    alice, room_id = await new_room(hs)
    await remote_join(hs, room_id, f"@bob:{peer.server_name}", peer)
    (msg,) = await say(hs, room_id, alice, 1)
    await peer.wait_for(lambda: msg in peer.event_ids())
    await hs.typing.set_typing(alice, room_id, True, 30_000)
    await hs.typing.set_typing(alice, room_id, False, None)
    await hs.receipts.send_receipt(alice, room_id, "m.read", msg, None)
    await hs.receipts.send_receipt(alice, room_id, "m.read.private", msg, None)  # private: stays here

    def receipt_arrived():
        return any(e["edu_type"] == "m.receipt" for e in peer.edus)

    await peer.wait_for(receipt_arrived)
    typing = [e["content"] for e in peer.edus if e["edu_type"] == "m.typing"]
    # In order; a coalesced pair leaves only the last state.
    assert typing[-1] == {"room_id": room_id, "user_id": alice, "typing": False}
    assert all(t["typing"] for t in typing[:-1])
    (receipt,) = [e["content"] for e in peer.edus if e["edu_type"] == "m.receipt"]
    entry = receipt[room_id]["m.read"][alice]
    assert entry["event_ids"] == [msg] and isinstance(entry["data"]["ts"], int)
    assert peer.errors == []


async def test_presence_goes_to_servers_sharing_a_room(hs, peer):
    trust(peer, hs)
    alice, room_id = await new_room(hs)
    loner = await make_user(hs, "loner")  # shares no room with the peer: nothing to send
    await hs.user_directory.set_presence(loner, loner, "online", None)
    await remote_join(hs, room_id, f"@bob:{peer.server_name}", peer)
    await hs.user_directory.set_presence(alice, alice, "unavailable", "in a meeting")

    def presence_arrived():
        return any(e["edu_type"] == "m.presence" for e in peer.edus)

    await peer.wait_for(presence_arrived)
    pushes = [p for e in peer.edus if e["edu_type"] == "m.presence" for p in e["content"]["push"]]
    assert [p["user_id"] for p in pushes] == [alice]
    assert pushes[0]["presence"] == "unavailable" and pushes[0]["status_msg"] == "in a meeting"
    assert pushes[0]["currently_active"] is False and isinstance(pushes[0]["last_active_ago"], int)
    assert peer.errors == []


async def test_two_senders_each_send_only_to_their_own_destinations(open_hs, peer):
    """Sharded senders (``federation_sender_instances``): both route every event, only the
    owner of the peer's name (``instance_for``) sends to it, each keeps its own position;
    an EDU given to the other one is handed to the owner (Redis in a deployment)."""
    from gateway.config.workers import instance_for
    from gateway.services.federation.sender import FederationSender

    hs = await open_hs(start=False)
    try:
        trust(peer, hs)
        names = ("fs1", "fs2")
        owner = instance_for(peer.server_name, names)
        other = next(n for n in names if n != owner)
        senders = {n: FederationSender(hs, instance_name=n, sender_instances=names) for n in names}
        forwarded: list[dict] = []

        def forward(message):
            forwarded.append(message)
            for s in senders.values():
                s.on_forwarded(message)

        for s in senders.values():
            s.forward = forward
            await s.start()
        alice, room_id = await new_room(hs)
        await remote_join(hs, room_id, f"@bob:{peer.server_name}", peer)
        sent = await say(hs, room_id, alice, 5)
        await peer.wait_for(lambda: len(peer.pdus) >= 5)
        last = (await hs.events.store.get_event(sent[-1])).stream_ordering
        for n in names:  # both routed everything, each from its own position
            await until(lambda n=n: _at_least(senders[n].store.get_sender_position(n), last))
        assert peer.event_ids() == sent
        assert peer.server_name in senders[owner]._queues and peer.server_name not in senders[other]._queues
        senders[other].send_edu(peer.server_name, "m.direct_to_device",
                                {"sender": alice, "type": "m.test", "message_id": "m1", "messages": {}}, key="m1")
        await peer.wait_for(lambda: any(e["edu_type"] == "m.direct_to_device" for e in peer.edus))
        assert [m["to"] for m in forwarded if m["op"] == "edu"] == [owner]
        assert peer.server_name not in senders[other]._queues
        assert peer.errors == []
        for s in senders.values():
            await s.stop()
    finally:
        await hs.close()


async def _at_least(position, last: int) -> bool:
    return await position >= last


async def test_a_join_brings_the_members_presence_to_the_joining_server(hs, peer, monkeypatch):
    """A user of another server joins: our members' presence (not offline ones) goes to
    that server at once, without waiting for their next change (as Synapse does), a
    bounded number of users per EDU."""
    import gateway.services.user_directory as user_directory

    monkeypatch.setattr(user_directory, "PRESENCE_PER_EDU", 1)
    trust(peer, hs)
    alice, room_id = await new_room(hs)
    quiet, busy = await make_user(hs, "quiet"), await make_user(hs, "busy")
    await hs.rooms.join(quiet, room_id)
    await hs.rooms.join(busy, room_id)
    await hs.user_directory.set_presence(alice, alice, "online", "here")  # shares no room with the peer yet
    await hs.user_directory.set_presence(busy, busy, "unavailable", None)
    assert not any(e["edu_type"] == "m.presence" for e in peer.edus)
    join = await remote_join(hs, room_id, f"@bob:{peer.server_name}", peer)
    # (announced as the inbound side does once it stored the join)
    position = (await hs.events.store.get_event(join.event_id)).stream_ordering
    hs.events.announce_stored(room_id, [position], received=[join])

    def both_arrived():
        return sum(e["edu_type"] == "m.presence" for e in peer.edus) == 2

    await peer.wait_for(both_arrived)
    edus = [e["content"]["push"] for e in peer.edus if e["edu_type"] == "m.presence"]
    assert all(len(push) == 1 for push in edus)
    assert sorted((p["user_id"], p["presence"], p.get("status_msg")) for push in edus for p in push) == \
        sorted([(alice, "online", "here"), (busy, "unavailable", None)])
    assert peer.errors == []


async def test_a_destination_moving_to_another_sender_misses_nothing(open_hs, peer):
    """The list of senders changes (here: reversed) while the peer's old sender was
    behind: its new sender starts from the slowest position and sends the peer what its
    old one had not routed, and nothing the peer already took."""
    from gateway.config.workers import instance_for
    from gateway.services.federation.sender import FederationSender

    hs = await open_hs(start=False)
    try:
        trust(peer, hs)
        names = ("fs1", "fs2")
        owner = instance_for(peer.server_name, names)
        other = next(n for n in names if n != owner)
        senders = {n: FederationSender(hs, instance_name=n, sender_instances=names) for n in names}
        for s in senders.values():
            await s.start()
        alice, room_id = await new_room(hs)
        await remote_join(hs, room_id, f"@bob:{peer.server_name}", peer)
        first = await say(hs, room_id, alice, 3, prefix="a")
        await peer.wait_for(lambda: len(peer.pdus) >= 3)
        taken = (await hs.events.store.get_event(first[-1])).stream_ordering

        async def recorded():
            row = await destination(hs, peer.server_name)
            return row is not None and row.last_successful_stream_ordering == taken

        await until(recorded)
        await senders[owner].stop()  # the peer's sender stops; the other one goes on routing
        later = await say(hs, room_id, alice, 3, prefix="b")
        last = (await hs.events.store.get_event(later[-1])).stream_ordering
        await until(lambda: _at_least(senders[other].store.get_sender_position(other), last))
        await senders[other].stop()
        assert peer.event_ids() == first
        # Reversed: the peer belongs to the other sender now, which was ahead.
        moved = FederationSender(hs, instance_name=other, sender_instances=tuple(reversed(names)))
        assert moved.owns(peer.server_name)
        await moved.start()
        await peer.wait_for(lambda: len(peer.pdus) >= 6)
        assert peer.event_ids() == first + later  # each once
        await moved.stop()
        assert peer.errors == []
    finally:
        await hs.close()


async def test_receipts_and_presence_made_while_the_sender_is_down_reach_the_server_when_it_starts(open_hs, peer):
    """Issue 18: a receipt (or presence) is kept for the room's servers until they took
    it, so one made while no sender runs (or before a restart) is sent when the sender
    starts; a newer receipt of the same user, or presence, replaces the older one; once
    taken, none is kept."""
    hs1 = await open_hs(start=False)
    trust(peer, hs1)
    alice, room_id = await new_room(hs1)
    await remote_join(hs1, room_id, f"@bob:{peer.server_name}", peer)
    first, second = await say(hs1, room_id, alice, 2)
    await hs1.receipts.send_receipt(alice, room_id, "m.read", first, None)
    await hs1.receipts.send_receipt(alice, room_id, "m.read", second, None)
    await hs1.receipts.send_receipt(alice, room_id, "m.read.private", second, None)  # stays here
    await hs1.user_directory.mark_syncing(alice, "online")  # a sync (not rate limited)
    await hs1.user_directory.set_presence(alice, alice, "unavailable", "second")

    async def kept():
        rows = await hs1.db.fetch("SELECT destination, edu_type, content FROM device_federation_outbox"
                                  " ORDER BY edu_type")
        return rows if len(rows) == 2 and second in rows[1][2] else None

    rows = await until(kept)
    assert [(r[0], r[1]) for r in rows] == [(peer.server_name, "m.presence"), (peer.server_name, "m.receipt")]
    assert "second" in rows[0][2]
    await hs1.close()
    assert not any(e["edu_type"] in ("m.receipt", "m.presence") for e in peer.edus)
    hs2 = await open_hs()
    try:
        def arrived():
            return {e["edu_type"] for e in peer.edus} >= {"m.receipt", "m.presence"}

        await peer.wait_for(arrived)
        (receipt,) = [e["content"] for e in peer.edus if e["edu_type"] == "m.receipt"]
        assert list(receipt[room_id]) == ["m.read"]
        assert receipt[room_id]["m.read"][alice]["event_ids"] == [second]
        (presence,) = [p for e in peer.edus if e["edu_type"] == "m.presence" for p in e["content"]["push"]]
        assert (presence["user_id"], presence["presence"], presence["status_msg"]) == (alice, "unavailable", "second")

        async def forgotten():
            return await hs2.db.fetchval("SELECT COUNT(*) FROM device_federation_outbox") == 0

        await until(forgotten)
        assert peer.errors == []
    finally:
        await hs2.close()


async def test_presence_made_while_a_server_is_unreachable_reaches_it_when_it_answers(hs, peer):
    """Presence is not queued for a server we back off from, but kept: once it answers
    again it gets the user's newest presence."""
    trust(peer, hs)
    alice, room_id = await new_room(hs)
    await remote_join(hs, room_id, f"@bob:{peer.server_name}", peer)
    await peer.stop()
    (sent,) = await say(hs, room_id, alice, 1)

    async def backing_off():
        row = await destination(hs, peer.server_name)
        return row is not None and row.retry_interval > 0

    await until(backing_off)
    await hs.user_directory.set_presence(alice, alice, "unavailable", "away for a while")
    await peer.start()
    await peer.wait_for(lambda: sent in peer.event_ids()
                        and any(e["edu_type"] == "m.presence" for e in peer.edus))
    pushes = [p for e in peer.edus if e["edu_type"] == "m.presence" for p in e["content"]["push"]]
    assert pushes[-1]["user_id"] == alice and pushes[-1]["status_msg"] == "away for a while"
    assert peer.errors == []

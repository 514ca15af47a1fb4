"""Inbound federation on a worker that is not the room's event persister (issue 18): the
worker checks what another server sends (signatures, hashes, auth), and the room's
persister writes it, as it writes what clients send on any process; other servers' EDUs
go to their stream's writer. Real processes (tests/support/worker_cluster.py): main, an
event persister that writes every stream, and an inbound federation worker on the
server name's port (TLS); a scripted remote server (``FakeRemote``) sends the
transactions."""

from __future__ import annotations

import asyncio
import re
import secrets

import aiohttp
import pytest
import pytest_asyncio

from federation.events import PDU
from federation.net.client import FederationRequestError
from federation.room_versions import get_room_version
from federation.signing import generate_signing_key, sign_event
from tests.conftest import SKIP_POSTGRES
from tests.support.client_api import Client, has_text, member_event, register_user
from tests.support.fake_remote import FakeRemote, RoomView
from tests.support.tls import TestCA
from tests.support.worker_cluster import Worker, running_cluster

pytestmark = [pytest.mark.skipif(SKIP_POSTGRES, reason="workers need PostgreSQL"),
              pytest.mark.asyncio(loop_scope="module")]

STREAMS = ("events", "typing", "to_device", "account_data", "receipts", "presence", "push_rules", "device_lists")
PERSISTER, INBOUND = "persister1", "fedin1"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, ca):
    inbound = Worker(INBOUND, ["federation"], tls=True)
    cert = ca.issue("127.0.0.1", filename=f"cluster-{inbound.port}")
    shared = {
        "server_name": f"127.0.0.1:{inbound.port}",
        "tls_certificate_path": str(cert.cert_path), "tls_private_key_path": str(cert.key_path),
        "federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
        "stream_writers": {s: [PERSISTER] for s in STREAMS},
    }
    with running_cluster(tmp_path_factory.mktemp("fedworkers"), [Worker(PERSISTER, ["replication"]), inbound],
                         shared) as c:
        c.server_name = shared["server_name"]
        yield c


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def remote(ca):
    async with FakeRemote(ca) as r:
        yield r


async def forwarded(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The writes other processes forwarded to the process at ``url``, by endpoint (ok only)."""
    async with session.get(f"{url}/_synapse/metrics") as r:
        text = await r.text()
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^gateway_forwarded_writes_total\{endpoint="([^"]+)",outcome="ok"\} (\S+)$', text, re.M)}


async def joined_room(cluster, remote: FakeRemote, alice: Client) -> tuple[str, RoomView, str]:
    """A public room of alice's (on main) that the remote's bob joins through the inbound
    worker (make_join, send_join); the remote's view of it."""
    room_id = (await alice.call("POST", "/createRoom", {"preset": "public_chat", "room_version": "12"}))["room_id"]
    rv = get_room_version("12")
    bob = f"@bob{secrets.token_hex(3)}:{remote.server_name}"
    join, answer = await remote.join_via(cluster.server_name, room_id, bob)
    view = RoomView(remote, rv, room_id)
    known = [PDU.from_pdu_json(p, rv) for p in answer["auth_chain"] + answer["state"]]
    view.learn(sorted({p.event_id: p for p in known}.values(), key=lambda p: p.depth))
    view.learn([PDU.from_pdu_json(join, rv)])
    await alice.sync_until(member_event(room_id, bob, "join"))
    return room_id, view, bob


async def test_received_events_are_written_by_the_rooms_persister(cluster, remote):
    async with aiohttp.ClientSession() as session:
        persister = cluster.workers[PERSISTER].url
        alice = await register_user(session, cluster.main_url, "alice")
        before = await forwarded(session, persister)
        room_id, view, bob = await joined_room(cluster, remote, alice)
        # The join (send_join on the inbound worker) went to the persister.
        after_join = await forwarded(session, persister)
        assert after_join.get("events.persist_received", 0) >= before.get("events.persist_received", 0) + 1
        # A run of messages in one transaction: one call, stored in order.
        msgs = [view.make("m.room.message", bob, {"msgtype": "m.text", "body": f"from afar {i}"}) for i in range(3)]
        ids = [view.event_id(m, view.rv) for m in msgs]
        assert await remote.send(cluster.server_name, msgs) == {"pdus": {e: {} for e in ids}}
        after = await forwarded(session, persister)
        assert after["events.persist_received"] == after_join["events.persist_received"] + 1
        seen: list[str] = []

        def all_three(body: dict) -> bool:
            events = body.get("rooms", {}).get("join", {}).get(room_id, {}).get("timeline", {}).get("events", [])
            seen.extend(e["event_id"] for e in events if e["event_id"] in ids)
            return len(seen) == 3

        await alice.sync_until(all_three)
        assert seen == ids
        # A forged event is refused where it arrives: nothing reaches the persister.
        forged = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "forged"}, advance=False)
        forged["signatures"] = {}
        forged = sign_event(forged, remote.server_name, generate_signing_key("fr1"), room_version=view.rv)
        forged_id = view.event_id(forged, view.rv)
        answer = await remote.send(cluster.server_name, [forged])
        assert "signature" in answer["pdus"][forged_id]["error"]
        assert (await forwarded(session, persister))["events.persist_received"] == after["events.persist_received"]


async def test_edus_go_to_their_streams_writer(cluster, remote):
    async with aiohttp.ClientSession() as session:
        persister = cluster.workers[PERSISTER].url
        alice = await register_user(session, cluster.main_url, "carol")
        room_id, view, bob = await joined_room(cluster, remote, alice)
        msg = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "read me"})
        msg_id = view.event_id(msg, view.rv)
        await remote.send(cluster.server_name, [msg])
        await alice.sync_until(has_text(room_id, "read me"))
        device = (await alice.call("GET", "/account/whoami"))["device_id"]
        before = await forwarded(session, persister)
        edus = [
            {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": bob, "typing": True}},
            {"edu_type": "m.receipt", "content": {room_id: {"m.read": {bob: {"event_ids": [msg_id],
                                                                               "data": {"ts": 1}}}}}},
            {"edu_type": "m.presence", "content": {"push": [{"user_id": bob, "presence": "online",
                                                             "last_active_ago": 0}]}},
            {"edu_type": "m.direct_to_device", "content": {
                "sender": bob, "type": "m.fed.test", "message_id": secrets.token_hex(4),
                "messages": {alice.user_id: {device: {"n": 1}}}}},
        ]
        assert await remote.send(cluster.server_name, [], edus) == {"pdus": {}}
        after = await forwarded(session, persister)
        for endpoint in ("typing.on_remote_typing", "receipts.on_remote_receipt", "user_directory.on_presence_edu",
                         "e2e_keys.on_direct_to_device"):
            assert after.get(endpoint, 0) == before.get(endpoint, 0) + 1, endpoint
        got: dict[str, bool] = {}

        def everything(body: dict) -> bool:
            room = body.get("rooms", {}).get("join", {}).get(room_id, {})
            for e in room.get("ephemeral", {}).get("events", []):
                if e["type"] == "m.typing" and bob in e["content"]["user_ids"]:
                    got["typing"] = True
                if e["type"] == "m.receipt" and bob in e["content"].get(msg_id, {}).get("m.read", {}):
                    got["receipt"] = True
            if any(e["type"] == "m.fed.test" for e in body.get("to_device", {}).get("events", [])):
                got["to_device"] = True
            return len(got) == 3

        await alice.sync_until(everything)


async def test_nothing_is_acknowledged_while_the_persister_is_down(cluster, remote):
    """The inbound worker answers 503 (the sender tries again later) rather than 200
    with events it could not have stored; the same transaction, retried once the
    persister is back, stores them."""
    async with aiohttp.ClientSession() as session:
        alice = await register_user(session, cluster.main_url, "dave")
        room_id, view, bob = await joined_room(cluster, remote, alice)
        msg = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "while it was down"})
        msg_id = view.event_id(msg, view.rv)
        await asyncio.to_thread(cluster.kill, PERSISTER)
        try:
            with pytest.raises(FederationRequestError) as e:
                await remote.send(cluster.server_name, [msg], txn_id="down1")
            assert e.value.status == 503
        finally:
            await asyncio.to_thread(cluster.start_worker, PERSISTER)
        assert await remote.send(cluster.server_name, [msg], txn_id="down1") == {"pdus": {msg_id: {}}}
        await alice.sync_until(has_text(room_id, "while it was down"))

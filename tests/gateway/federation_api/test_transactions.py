"""Receiving PDUs over federation (PUT /send) end to end, on both database engines: a
scripted remote server (its own key, served over TLS) builds and signs events and sends
real signed transactions to our server in-process on TLS; our server fetches the
remote's keys, missing events and state from it."""

from __future__ import annotations

from urllib.parse import quote

import aiohttp
import pytest

from federation.net.client import FederationRequestError
from federation.room_versions import get_room_version
from federation.signing import generate_signing_key, sign_event
from tests.support.fake_remote import FakeRemote, RoomView, local_gateway
from tests.support.tls import TestCA


@pytest.fixture
def ca(tmp_path):
    return TestCA(tmp_path / "ca")


@pytest.fixture
async def gw(tmp_path, database_config, ca):
    async with local_gateway(tmp_path, database_config, ca) as g:
        yield g


@pytest.fixture
async def remote(ca):
    async with FakeRemote(ca) as r:
        yield r


class Client:
    """A local user talking to our Client-Server API."""

    def __init__(self, gw, session, token, user_id):
        self.gw, self.session, self.token, self.user_id = gw, session, token, user_id
        self.txn = 0

    async def call(self, method, path, body=None):
        async with self.session.request(method, self.gw.url + "/_matrix/client/v3" + path, json=body,
                                        headers={"Authorization": f"Bearer {self.token}"}, ssl=self.gw.ssl) as r:
            data = await r.json()
            assert r.status == 200, (path, data)
            return data

    async def send(self, room_id, body):
        self.txn += 1
        return (await self.call("PUT", f"/rooms/{quote(room_id)}/send/m.room.message/t{self.txn}",
                                {"msgtype": "m.text", "body": body}))["event_id"]

    async def messages(self, room_id):
        data = await self.call("GET", f"/rooms/{quote(room_id)}/messages?dir=b&limit=100")
        return list(reversed(data["chunk"]))


@pytest.fixture
async def alice(gw):
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/_matrix/client/v3/register", ssl=gw.ssl, json={
                "username": "alice", "password": "pw-xxxxxxxx", "auth": {"type": "m.login.dummy"}}) as r:
            body = await r.json()
            assert r.status == 200, body
        yield Client(gw, s, body["access_token"], body["user_id"])


async def public_room(gw, alice, remote, version="12", **extra):
    """A public room on our server, and the remote's view of it (from our database)."""
    room_id = (await alice.call("POST", "/createRoom", {"preset": "public_chat", "room_version": version,
                                                         **extra}))["room_id"]
    view = RoomView(remote, get_room_version(version), room_id)
    await sync_view(gw, view)
    return room_id, view


async def sync_view(gw, view):
    events = await gw.hs.events.store.get_room_events(view.room_id, from_pos=None, backwards=False, limit=1000)
    view.learn([e.pdu for e in events])


async def join_bob(gw, remote, view, name="bob"):
    user = f"@{name}:{remote.server_name}"
    join = view.make("m.room.member", user, {"membership": "join"}, state_key=user)
    answer = await remote.send(gw.server_name, [join])
    assert answer == {"pdus": {view.event_id(join, view.rv): {}}}
    return user


def bodies(chunk):
    return [e["content"].get("body") for e in chunk if e["type"] == "m.room.message"]


@pytest.mark.parametrize("version", ["12", "10", "3", "1"])
async def test_remote_join_and_message_reach_the_local_timeline(gw, remote, alice, version):
    room_id, view = await public_room(gw, alice, remote, version)
    seen = []
    gw.hs.events.add_new_events_listener(lambda room, positions: seen.append((room, list(positions))))
    bob = await join_bob(gw, remote, view)
    msg = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "hello from afar"})
    msg_id = view.event_id(msg, view.rv)
    assert await remote.send(gw.server_name, [msg]) == {"pdus": {msg_id: {}}}

    chunk = await alice.messages(room_id)
    assert bodies(chunk) == ["hello from afar"]
    assert chunk[-1]["event_id"] == msg_id and chunk[-1]["sender"] == bob
    member = await gw.hs.events.state.get_membership(room_id, bob)
    assert member is not None and member.membership == "join"
    assert await gw.hs.events.store.get_forward_extremities(room_id) == [msg_id]
    assert [r for r, _ in seen] == [room_id, room_id] and all(p > 0 for _, ps in seen for p in ps)
    # Our next local event builds on the remote one.
    mine = await alice.send(room_id, "welcome")
    stored = await gw.hs.events.store.get_event(mine)
    assert stored.pdu.prev_event_ids == (msg_id,)


async def test_bad_signatures_are_dropped_and_bad_hashes_redacted(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    # Signed with another key under the same key ID: not stored.
    forged = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "forged"}, advance=False)
    forged["signatures"] = {}
    forged = sign_event(forged, remote.server_name, generate_signing_key("fr1"), room_version=view.rv)
    forged_id = view.event_id(forged, view.rv)
    # No signature at all.
    unsigned = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "unsigned"}, advance=False)
    unsigned["signatures"] = {}
    unsigned_id = view.event_id(unsigned, view.rv)
    # Content changed after signing: the signature (over the redacted form) holds, the hash not.
    tampered = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "original"})
    tampered["content"] = {"msgtype": "m.text", "body": "tampered"}
    tampered_id = view.event_id(tampered, view.rv)
    answer = await remote.send(gw.server_name, [forged, unsigned, tampered])
    assert "signature" in answer["pdus"][forged_id]["error"]
    assert "signature" in answer["pdus"][unsigned_id]["error"]
    assert answer["pdus"][tampered_id] == {}
    assert await gw.hs.events.store.get_event_meta([forged_id, unsigned_id]) == {}
    chunk = await alice.messages(room_id)
    last = chunk[-1]
    assert last["event_id"] == tampered_id and last["content"] == {}
    assert "forged" not in bodies(chunk) and "unsigned" not in bodies(chunk)


async def test_auth_failures_are_rejected_and_never_shown(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    mallory = f"@mallory:{remote.server_name}"
    # Not a member: fails against its own auth events (none for mallory).
    intruder = view.make("m.room.message", mallory, {"msgtype": "m.text", "body": "let me in"}, advance=False)
    # bob may not change the power levels (power 0).
    pl = dict(view.state[("m.room.power_levels", "")].content)
    pl["users"] = {**pl.get("users", {}), bob: 100}
    grab = view.make("m.room.power_levels", bob, pl, state_key="", advance=False)
    answer = await remote.send(gw.server_name, [intruder, grab])
    for ev in (intruder, grab):
        eid = view.event_id(ev, view.rv)
        assert answer["pdus"][eid] == {}, answer  # handled: stored as rejected, as Synapse answers
        meta = (await gw.hs.events.store.get_event_meta([eid]))[eid]
        assert meta.rejected_reason is not None
    assert bodies(await alice.messages(room_id)) == []
    current = await gw.hs.events.state.get_current_state_ids(room_id)
    assert current[("m.room.power_levels", "")] != view.event_id(grab, view.rv)
    assert await gw.hs.events.store.get_forward_extremities(room_id) == [view.head[0]]


async def test_soft_failed_event_is_stored_but_not_shown_nor_an_extremity(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    before_ban = list(view.head)
    await alice.call("POST", f"/rooms/{quote(room_id)}/ban", {"user_id": bob})
    # bob's server did not see the ban: its message points at the event before it.
    late = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "after the ban"}, prev=before_ban)
    late_id = view.event_id(late, view.rv)
    assert await remote.send(gw.server_name, [late]) == {"pdus": {late_id: {}}}
    meta = (await gw.hs.events.store.get_event_meta([late_id]))[late_id]
    assert meta.soft_failed and meta.rejected_reason is None and meta.stream_ordering < 0
    assert "after the ban" not in bodies(await alice.messages(room_id))
    assert late_id not in await gw.hs.events.store.get_forward_extremities(room_id)


async def test_a_redaction_of_another_rooms_event_redacts_nothing(gw, remote, alice):
    """bob redacts, in a room he shares with alice, a message of another room: the
    redaction stays out of the timeline and the message keeps its content."""
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    other_id, other_view = await public_room(gw, alice, remote)
    await join_bob(gw, remote, other_view)
    msg = other_view.make("m.room.message", bob, {"msgtype": "m.text", "body": "elsewhere"})
    await remote.send(gw.server_name, [msg])
    # (rooms 11+: "redacts" in the content)
    redaction = view.make("m.room.redaction", bob, {"redacts": view.event_id(msg, other_view.rv)})
    red_id = view.event_id(redaction, view.rv)
    assert await remote.send(gw.server_name, [redaction]) == {"pdus": {red_id: {}}}
    meta = (await gw.hs.events.store.get_event_meta([red_id]))[red_id]
    assert meta.soft_failed and meta.rejected_reason is None
    assert red_id not in {e["event_id"] for e in await alice.messages(room_id)}
    assert bodies(await alice.messages(other_id)) == ["elsewhere"]


async def test_missing_prev_events_come_from_get_missing_events(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    chain = [view.make("m.room.message", bob, {"msgtype": "m.text", "body": f"m{i}"}) for i in range(4)]
    remote.requests.clear()
    last_id = view.event_id(chain[-1], view.rv)
    assert await remote.send(gw.server_name, [chain[-1]]) == {"pdus": {last_id: {}}}
    assert ("POST", "/_matrix/federation/v1/get_missing_events/{room_id}") in remote.requests
    assert bodies(await alice.messages(room_id)) == ["m0", "m1", "m2", "m3"]
    assert await gw.hs.events.store.get_forward_extremities(room_id) == [last_id]


async def test_missing_prev_event_state_from_state_ids_when_gap_cannot_be_filled(gw, remote, alice):
    """m3 is sent; get_missing_events gives m2 but not m1 before it: the state at m1
    comes from /state_ids (for a pulled event, as Synapse does too), m1 itself is an
    outlier, m2 and m3 join the timeline (m1 too once a client pages back to it)."""
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    topic = view.make("m.room.topic", bob, {"topic": "t"}, state_key="")  # bob may not: rejected on its own
    view.state.pop(("m.room.topic", ""))  # ... and the remote knows it
    m1 = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "one"}, prev=[view.event_id(topic, view.rv)])
    m2 = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "two"})
    m3 = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "three"})
    m1_id, m2_id, m3_id = (view.event_id(m, view.rv) for m in (m1, m2, m3))
    remote.withheld = {m1_id}
    remote.requests.clear()
    assert await remote.send(gw.server_name, [m3]) == {"pdus": {m3_id: {}}}
    paths = {p for _, p in remote.requests}
    assert "/_matrix/federation/v1/state_ids/{room_id}" in paths and "/_matrix/federation/v1/event/{event_id}" in paths
    metas = await gw.hs.events.store.get_event_meta([m1_id, m2_id, m3_id])
    assert metas[m1_id].outlier and not metas[m2_id].outlier and not metas[m3_id].outlier
    # Paging back to the gap backfills m1 into its place (tests/gateway/services/test_pagination.py).
    assert bodies(await alice.messages(room_id)) == ["one", "two", "three"]
    # The state at m2 is the remote's state at m1 (no topic), resolved with ours.
    assert ("m.room.topic", "") not in await gw.hs.events.state.get_current_state_ids(room_id)


async def test_a_sent_event_whose_prev_events_its_server_withholds_is_refused(gw, remote, alice):
    """A server pushes an event whose prev events it does not give (get_missing_events):
    refused, not given state from that server's /state_ids (it could then become our
    only forward extremity with a state its server chose; as Synapse refuses it)."""
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    view.make("m.room.message", bob, {"msgtype": "m.text", "body": "hidden"})
    sent = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "sent"})
    remote.serve_missing_events = False
    remote.requests.clear()
    sent_id = view.event_id(sent, view.rv)
    answer = await remote.send(gw.server_name, [sent])
    assert "prev events" in answer["pdus"][sent_id]["error"]
    assert ("GET", "/_matrix/federation/v1/state_ids/{room_id}") not in remote.requests
    assert (await gw.hs.events.store.get_event_meta([sent_id])).get(sent_id) is None
    assert "sent" not in bodies(await alice.messages(room_id))
    # Once its server gives the missing event, the next one is taken, with both.
    remote.serve_missing_events = True
    later = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "later"})
    assert await remote.send(gw.server_name, [later]) == {"pdus": {view.event_id(later, view.rv): {}}}
    assert bodies(await alice.messages(room_id))[-3:] == ["hidden", "sent", "later"]


async def test_retried_transaction_gets_the_same_answer_and_stores_nothing_twice(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    msg = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "once"})
    first = await remote.send(gw.server_name, [msg], txn_id="txn-1")
    # The same transaction ID again, even with other content: the first answer, nothing processed.
    other = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "sneaked in"}, advance=False)
    assert await remote.send(gw.server_name, [msg, other], txn_id="txn-1") == first
    # The same PDU in a new transaction: fine, still stored once.
    assert await remote.send(gw.server_name, [msg], txn_id="txn-2") == first
    assert bodies(await alice.messages(room_id)) == ["once"]
    assert await gw.hs.events.store.get_event_meta([view.event_id(other, view.rv)]) == {}


async def test_oversized_transactions_are_refused(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote)
    bob = f"@bob:{remote.server_name}"
    pdus = [view.make("m.room.message", bob, {"body": str(i)}, advance=False) for i in range(51)]
    for kwargs in ({"pdus": pdus}, {"pdus": [], "edus": [{"edu_type": "m.typing", "content": {}}] * 101}):
        with pytest.raises(FederationRequestError) as e:
            await remote.send(gw.server_name, **kwargs)
        assert e.value.status == 400 and e.value.body["errcode"] == "M_BAD_JSON"
    assert await gw.hs.events.store.get_event_meta([view.event_id(p, view.rv) for p in pdus]) == {}


async def test_bad_pdus_never_fail_the_others_and_edus_reach_their_handlers(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    got = []

    async def on_typing(origin, content):
        got.append((origin, content))

    async def broken(origin, content):
        raise RuntimeError("boom")

    gw.hs.edu_handlers.register("m.typing", on_typing)
    gw.hs.edu_handlers.register("m.receipt", broken)
    good = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "fine"})
    unknown_room = dict(good, room_id="!nowhere:elsewhere.test")
    garbage = {"room_id": room_id, "type": 5}
    answer = await remote.send(gw.server_name, [garbage, unknown_room, good], edus=[
        {"edu_type": "m.receipt", "content": {}}, {"edu_type": "m.typing", "content": {"room_id": room_id}},
        {"edu_type": "org.unknown", "content": {}}, "junk",
    ])
    assert answer["pdus"][view.event_id(good, view.rv)] == {}
    assert any("Unknown room" in r.get("error", "") for r in answer["pdus"].values())
    assert got == [(remote.server_name, {"room_id": room_id})]
    assert bodies(await alice.messages(room_id)) == ["fine"]


async def test_server_acl_denies_pdus_from_a_denied_origin(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    await alice.call("PUT", f"/rooms/{quote(room_id)}/state/m.room.server_acl/",
                     {"allow": ["*"], "deny": ["127.0.0.1"], "allow_ip_literals": True})
    await sync_view(gw, view)
    msg = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "denied"})
    answer = await remote.send(gw.server_name, [msg])
    assert "server ACL" in answer["pdus"][view.event_id(msg, view.rv)]["error"]
    assert await gw.hs.events.store.get_event_meta([view.event_id(msg, view.rv)]) == {}
    # Room data endpoints: 403.
    with pytest.raises(FederationRequestError) as e:
        await remote.client.request("GET", gw.server_name,
                                    f"/_matrix/federation/v1/state_ids/{quote(room_id, safe='')}",
                                    query={"event_id": view.head[0]})
    assert e.value.status == 403 and e.value.body["errcode"] == "M_FORBIDDEN"


async def test_not_json_transaction_is_a_matrix_error(gw, remote):
    from federation.signing import build_x_matrix_authorization

    target = "/_matrix/federation/v1/send/t1"
    header = build_x_matrix_authorization("PUT", target, remote.server_name, gw.server_name, None, remote.key)
    async with aiohttp.ClientSession() as s, s.put(gw.url + target, data=b"[1, 2", ssl=gw.ssl,
                                                   headers={"Authorization": header}) as r:
        assert r.status == 400 and (await r.json())["errcode"] == "M_NOT_JSON"


async def test_missing_auth_events_are_fetched_with_event_auth_and_outliers_become_timeline_events(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    rename = view.make("m.room.member", bob, {"membership": "join", "displayname": "Bobby"}, state_key=bob)
    msg = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "call me Bobby"})
    rename_id, msg_id = view.event_id(rename, view.rv), view.event_id(msg, view.rv)
    assert rename_id in msg["auth_events"]
    remote.requests.clear()
    assert await remote.send(gw.server_name, [msg]) == {"pdus": {msg_id: {}}}
    assert ("GET", "/_matrix/federation/v1/event_auth/{room_id}/{event_id}") in remote.requests
    metas = await gw.hs.events.store.get_event_meta([rename_id, msg_id])
    assert not metas[rename_id].outlier and metas[rename_id].stream_ordering > 0  # got its state after all
    assert not metas[msg_id].outlier
    member = await gw.hs.events.state.get_membership(room_id, bob)
    assert member.displayname == "Bobby" and member.event_id == rename_id
    chunk = await alice.messages(room_id)
    assert [e["event_id"] for e in chunk[-2:]] == [rename_id, msg_id]


async def test_missing_auth_events_come_from_event_when_event_auth_is_not_served(gw, remote, alice):
    """A server that does not serve /event_auth (or whose chain lacks some): the missing
    auth events are fetched one by one with /event, and the event is taken."""
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    rename = view.make("m.room.member", bob, {"membership": "join", "displayname": "Bobby"}, state_key=bob)
    msg = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "call me Bobby"})
    rename_id, msg_id = view.event_id(rename, view.rv), view.event_id(msg, view.rv)
    remote.serve_event_auth = False
    remote.requests.clear()
    assert await remote.send(gw.server_name, [msg]) == {"pdus": {msg_id: {}}}
    assert ("GET", "/_matrix/federation/v1/event/{event_id}") in remote.requests
    metas = await gw.hs.events.store.get_event_meta([rename_id, msg_id])
    assert metas[msg_id].rejected_reason is None and not metas[msg_id].outlier
    assert "call me Bobby" in bodies(await alice.messages(room_id))

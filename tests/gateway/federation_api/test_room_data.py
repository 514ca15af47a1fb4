"""Serving room data to other servers (/event, /state, /state_ids, /event_auth,
/get_missing_events, /backfill) over real signed requests, on both engines: what a
server in the room gets, what a server outside it or denied by the ACL gets, history
visibility, and room v3 event IDs with '/' and '+' in the path."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from federation.net.client import FederationRequestError
from tests.support.fake_remote import FakeRemote

from .test_transactions import alice, ca, gw, join_bob, public_room, remote, sync_view  # noqa: F401

FED = "/_matrix/federation/v1"


def q(value: str) -> str:
    return quote(value, safe="")


async def get(remote, gw, path, query=None):
    return await remote.client.request("GET", gw.server_name, path, query=query)


async def refused(coro) -> tuple[int, str]:
    with pytest.raises(FederationRequestError) as e:
        await coro
    return e.value.status, e.value.body["errcode"]


async def slashy_event(alice, room_id) -> str:
    """Send messages until one's ID has both '/' and '+' (room v3 uses standard base64)."""
    for i in range(200):
        event_id = await alice.send(room_id, f"m{i}")
        if "/" in event_id and "+" in event_id:
            return event_id
    raise AssertionError("no event ID with / and +")


async def test_events_state_and_auth_chain_for_a_server_in_the_room(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote, "3")
    bob = await join_bob(gw, remote, view)
    event_id = await slashy_event(alice, room_id)
    # /event with the ID percent-encoded (as we and Synapse send it) and with a raw '+'.
    for path in (f"{FED}/event/{q(event_id)}", f"{FED}/event/{q(event_id).replace('%2B', '+')}"):
        answer = await get(remote, gw, path)
        (pdu,) = answer["pdus"]
        assert answer["origin"] == gw.server_name and pdu["content"]["body"].startswith("m")
        assert "event_id" not in pdu and "unsigned" not in pdu
    assert await refused(get(remote, gw, f"{FED}/event/{q('$nope/+x')}")) == (404, "M_NOT_FOUND")

    current = await gw.hs.events.state.get_current_state_ids(room_id)
    ids = await get(remote, gw, f"{FED}/state_ids/{q(room_id)}", {"event_id": event_id})
    assert set(ids["pdu_ids"]) == set(current.values())  # a message: state before = current
    create_id = current[("m.room.create", "")]
    assert create_id in ids["auth_chain_ids"]
    state = await get(remote, gw, f"{FED}/state/{q(room_id)}", {"event_id": event_id})
    assert len(state["pdus"]) == len(ids["pdu_ids"]) and len(state["auth_chain"]) == len(ids["auth_chain_ids"])
    # The state before bob's join does not hold his membership.
    join_id = current[("m.room.member", bob)]
    before_join = await get(remote, gw, f"{FED}/state_ids/{q(room_id)}", {"event_id": join_id})
    assert join_id not in before_join["pdu_ids"] and create_id in before_join["pdu_ids"]

    auth = await get(remote, gw, f"{FED}/event_auth/{q(room_id)}/{q(event_id)}")
    stored = await gw.hs.events.store.get_event(event_id)
    chain_ids = {view.event_id(p, view.rv) for p in auth["auth_chain"]}
    assert set(stored.pdu.auth_event_ids) <= chain_ids and create_id in chain_ids

    status = await refused(get(remote, gw, f"{FED}/state_ids/{q(room_id)}", {"event_id": "$unknown"}))
    assert status == (404, "M_NOT_FOUND")
    assert await refused(get(remote, gw, f"{FED}/state_ids/{q(room_id)}")) == (400, "M_MISSING_PARAM")


async def test_missing_events_and_backfill(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote, "3")
    await join_bob(gw, remote, view)
    sent = [await alice.send(room_id, f"b{i}") for i in range(6)]
    answer = await remote.client.request("POST", gw.server_name, f"{FED}/get_missing_events/{q(room_id)}", content={
        "earliest_events": [sent[1]], "latest_events": [sent[5]], "limit": 10, "min_depth": 0})
    assert [e["content"]["body"] for e in answer["events"]] == ["b2", "b3", "b4"]
    answer = await remote.client.request("POST", gw.server_name, f"{FED}/get_missing_events/{q(room_id)}", content={
        "earliest_events": [], "latest_events": [sent[5]], "limit": 2, "min_depth": 0})
    assert [e["content"]["body"] for e in answer["events"]] == ["b3", "b4"]

    back = await get(remote, gw, f"{FED}/backfill/{q(room_id)}", {"v": sent[4], "limit": "3"})
    assert [e["content"].get("body") for e in back["pdus"]] == ["b4", "b3", "b2"]
    everything = await get(remote, gw, f"{FED}/backfill/{q(room_id)}", {"v": sent[5], "limit": "100"})
    assert everything["pdus"][-1]["type"] == "m.room.create"
    assert await refused(get(remote, gw, f"{FED}/backfill/{q(room_id)}")) == (400, "M_MISSING_PARAM")


async def test_servers_outside_the_room_or_denied_are_refused(gw, remote, alice, ca):
    room_id, view = await public_room(gw, alice, remote, "3")
    event_id = await alice.send(room_id, "private")
    # remote has nobody in the room yet.
    assert await refused(get(remote, gw, f"{FED}/state_ids/{q(room_id)}", {"event_id": event_id})) \
        == (403, "M_FORBIDDEN")
    assert await refused(get(remote, gw, f"{FED}/backfill/{q(room_id)}", {"v": event_id})) == (403, "M_FORBIDDEN")
    assert await refused(get(remote, gw, f"{FED}/event_auth/{q(room_id)}/{q(event_id)}")) == (403, "M_FORBIDDEN")
    assert await refused(remote.client.request("POST", gw.server_name, f"{FED}/get_missing_events/{q(room_id)}",
                                               content={"earliest_events": [], "latest_events": [event_id]})) \
        == (403, "M_FORBIDDEN")
    assert await refused(get(remote, gw, f"{FED}/state_ids/{q('!unknown:x.test')}", {"event_id": event_id})) \
        == (404, "M_NOT_FOUND")
    # ... but a public room's history ("shared") can be read event by event.
    assert (await get(remote, gw, f"{FED}/event/{q(event_id)}"))["pdus"][0]["content"]["body"] == "private"

    # After bob joins, a server with nobody in the room is still refused.
    await join_bob(gw, remote, view)
    async with FakeRemote(ca, key_id="other") as other:
        assert await refused(get(other, gw, f"{FED}/state_ids/{q(room_id)}", {"event_id": event_id})) \
            == (403, "M_FORBIDDEN")
    assert (await get(remote, gw, f"{FED}/state_ids/{q(room_id)}", {"event_id": event_id}))["pdu_ids"]


async def test_history_visibility_joined_hides_earlier_events_from_a_new_server(gw, remote, alice, ca):
    room_id, view = await public_room(gw, alice, remote, "3",
                                      initial_state=[{"type": "m.room.history_visibility", "state_key": "",
                                                      "content": {"history_visibility": "joined"}}])
    secret = await alice.send(room_id, "before you came")
    await sync_view(gw, view)
    await join_bob(gw, remote, view)
    later = await alice.send(room_id, "after you came")
    # The hidden event comes redacted, by itself (as Synapse: the joined server needs it
    # to build the state at its join) as in backfill (the DAG stays whole).
    (hidden,) = (await get(remote, gw, f"{FED}/event/{q(secret)}"))["pdus"]
    assert hidden["content"] == {} and view.event_id(hidden, view.rv) == secret
    assert (await get(remote, gw, f"{FED}/event/{q(later)}"))["pdus"][0]["content"]["body"] == "after you came"
    # A server with nobody in the room is refused it.
    async with FakeRemote(ca, key_id="other") as other:
        assert await refused(get(other, gw, f"{FED}/event/{q(secret)}")) == (403, "M_FORBIDDEN")
    back = await get(remote, gw, f"{FED}/backfill/{q(room_id)}", {"v": later, "limit": "10"})
    by_id = {view.event_id(p, view.rv): p for p in back["pdus"]}
    assert by_id[later]["content"]["body"] == "after you came"
    assert by_id[secret]["content"] == {}


async def test_timestamp_to_event(gw, remote, alice, ca):
    room_id, view = await public_room(gw, alice, remote, "10",
                                      initial_state=[{"type": "m.room.history_visibility", "state_key": "",
                                                      "content": {"history_visibility": "joined"}}])
    secret = await alice.send(room_id, "before you came")
    path = f"{FED}/timestamp_to_event/{q(room_id)}"
    # Nobody of the remote is in the room yet.
    assert await refused(get(remote, gw, path, {"ts": "0", "dir": "f"})) == (403, "M_FORBIDDEN")
    await sync_view(gw, view)
    await join_bob(gw, remote, view)
    sent = [await alice.send(room_id, f"t{i}") for i in range(3)]
    stored = [(await gw.hs.events.store.get_event(e)).pdu for e in sent]
    ts = stored[1].origin_server_ts
    forwards = await get(remote, gw, path, {"ts": str(ts), "dir": "f"})
    backwards = await get(remote, gw, path, {"ts": str(ts), "dir": "b"})
    # Events in one millisecond: the first at/after ts forwards, the last at/before backwards.
    same_ms = [p.event_id for p in stored if p.origin_server_ts == ts]
    assert forwards == {"event_id": same_ms[0], "origin_server_ts": ts}
    assert backwards == {"event_id": same_ms[-1], "origin_server_ts": ts}
    assert (await get(remote, gw, path, {"ts": str(stored[-1].origin_server_ts + 1), "dir": "b"}))["event_id"] \
        == sent[-1]
    assert await refused(get(remote, gw, path, {"ts": str(stored[-1].origin_server_ts + 60_000), "dir": "f"})) \
        == (404, "M_NOT_FOUND")
    # The room's first events were "shared" (no history visibility yet)...
    create_id = (await gw.hs.events.state.get_current_state_ids(room_id))[("m.room.create", "")]
    assert (await get(remote, gw, path, {"ts": "0", "dir": "f"}))["event_id"] == create_id
    # ... but with "joined" history, what came before the remote's join stays hidden from it.
    secret_ts = (await gw.hs.events.store.get_event(secret)).pdu.origin_server_ts
    before_join = await refused(get(remote, gw, path, {"ts": str(secret_ts), "dir": "b"}))
    assert before_join == (404, "M_NOT_FOUND")
    for query in ({"dir": "f"}, {"ts": "soon", "dir": "f"}, {"ts": "1", "dir": "up"}):
        assert (await refused(get(remote, gw, path, query)))[0] == 400
    assert await refused(get(remote, gw, f"{FED}/timestamp_to_event/{q('!unknown:x.test')}",
                             {"ts": "0", "dir": "f"})) == (404, "M_NOT_FOUND")


async def test_events_of_an_erased_user_are_served_redacted(gw, remote, alice):
    """After alice deactivates with ``erase: true``, other servers get her events redacted,
    in /event and in /backfill alike (those that had them keep their copy)."""
    room_id, view = await public_room(gw, alice, remote, "10")
    await join_bob(gw, remote, view)
    event_id = await alice.send(room_id, "secret")
    (pdu,) = (await get(remote, gw, f"{FED}/event/{q(event_id)}"))["pdus"]
    assert pdu["content"]["body"] == "secret"
    await alice.call("POST", "/account/deactivate", {
        "erase": True, "auth": {"type": "m.login.password", "password": "pw-xxxxxxxx",
                                "identifier": {"type": "m.id.user", "user": "alice"}}})
    (pdu,) = (await get(remote, gw, f"{FED}/event/{q(event_id)}"))["pdus"]
    assert pdu["content"] == {} and pdu["type"] == "m.room.message" and pdu["hashes"]
    back = await get(remote, gw, f"{FED}/backfill/{q(room_id)}", {"v": event_id, "limit": "1"})
    assert [p["content"] for p in back["pdus"]] == [{}]

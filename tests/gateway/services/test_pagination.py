"""/messages in topological order, on both engines, with a scripted remote that leaves
gaps in a room after our join: paging back from a /sync ``prev_batch`` backfills the gap
and returns its events in their place; an event whose prev event is in another room
does not let pagination (nor backfill) cross into that room.

Spec: https://spec.matrix.org/latest/client-server-api/#syncing and
https://spec.matrix.org/latest/server-server-api/#backfilling-and-retrieving-missing-events
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from gateway.http import MatrixError
from gateway.services.pagination import RoomToken, parse_room_token
from tests.gateway.federation_api.test_transactions import (  # noqa: F401
    alice, bodies, ca, gw, join_bob, public_room, remote)
from tests.support.fake_remote import RoomView

BACKFILL = ("GET", "/_matrix/federation/v1/backfill/{room_id}")


def test_tokens_topological_and_stream():
    assert parse_room_token("t12-345") == RoomToken(345, 12)
    assert parse_room_token("t3--7") == RoomToken(-7, 3)  # a backfilled event's position
    assert parse_room_token("s42") == RoomToken(42)
    assert parse_room_token("s42_7_0_3_0") == RoomToken(42)  # a /sync next_batch
    assert str(RoomToken(-7, 3)) == "t3--7" and str(RoomToken(42)) == "s42"
    for bad in ("", "x1", "t1", "t1-", "tq-1", "s", "s1x"):
        with pytest.raises(MatrixError):
            parse_room_token(bad)


def say(view, sender, text, **kw) -> tuple[dict, str]:
    ev = view.make("m.room.message", sender, {"msgtype": "m.text", "body": text}, **kw)
    return ev, RoomView.event_id(ev, view.rv)


async def sync_prev_batch(alice, room_id: str, limit: int) -> tuple[list[dict], str]:
    """An initial /sync with a short timeline: its events and ``prev_batch``."""
    f = quote(json.dumps({"room": {"timeline": {"limit": limit}}}))
    body = await alice.call("GET", f"/sync?filter={f}")
    timeline = body["rooms"]["join"][room_id]["timeline"]
    return timeline["events"], timeline["prev_batch"]


async def messages(alice, room_id: str, **query) -> dict:
    qs = "&".join(f"{k}={quote(str(v))}" for k, v in query.items())
    return await alice.call("GET", f"/rooms/{quote(room_id)}/messages?{qs}")


async def page_all(alice, room_id: str, token: str | None, limit: int) -> list[dict]:
    out = []
    for _ in range(100):
        page = await messages(alice, room_id, dir="b", limit=limit, **({"from": token} if token else {}))
        out += page["chunk"]
        if "end" not in page:
            return out
        token = page["end"]
    raise AssertionError("pagination never ended")


async def test_a_gap_after_our_join_is_backfilled_in_topological_place(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    # The remote's history after bob's join: g1..g6, then 'late'. get_missing_events gives
    # g6 but withholds g1..g5: a gap, its state from /state_ids.
    gap = [say(view, bob, f"g{i}") for i in range(1, 7)]
    late, late_id = say(view, bob, "late")
    remote.withheld = {eid for _, eid in gap[:5]}
    assert await remote.send(gw.server_name, [late]) == {"pdus": {late_id: {}}}
    await alice.send(room_id, "mine")
    metas = await gw.hs.events.store.get_event_meta([eid for _, eid in gap])
    assert [eid for _, eid in gap if eid in metas and not metas[eid].outlier] == [gap[5][1]]

    # A /sync shows the newest two; paging back from its prev_batch fills the gap.
    events, prev_batch = await sync_prev_batch(alice, room_id, 2)
    assert bodies(events) == ["late", "mine"]
    remote.requests.clear()
    page = await messages(alice, room_id, dir="b", limit=8, **{"from": prev_batch})
    assert bodies(page["chunk"]) == ["g6", "g5", "g4", "g3", "g2", "g1"]
    assert page["chunk"][6]["type"] == "m.room.member" and page["chunk"][6]["state_key"] == bob
    assert remote.requests.count(BACKFILL) == 1
    assert page["end"].startswith("t")
    # The filled events never look new to /sync.
    stored = await gw.hs.events.store.get_event(gap[0][1])
    assert stored.stream_ordering < 0 and not stored.outlier

    # Paging on, and again from the newest: every event once, in DAG order, no more requests.
    everything = await page_all(alice, room_id, None, 3)
    ids = [e["event_id"] for e in everything]
    assert len(ids) == len(set(ids))
    assert bodies(everything) == ["mine", "late", "g6", "g5", "g4", "g3", "g2", "g1"]
    assert everything[-1]["type"] == "m.room.create"
    assert remote.requests.count(BACKFILL) == 1
    # Forwards from an 'end' token: the same order, oldest first.
    back = await messages(alice, room_id, dir="b", limit=4, **{"from": prev_batch})
    fwd = await messages(alice, room_id, dir="f", limit=20, **{"from": back["end"]})
    assert bodies(fwd["chunk"]) == ["g3", "g4", "g5", "g6", "late", "mine"]
    # A whole /sync token (next_batch) is a stream token too.
    next_batch = (await alice.call("GET", "/sync"))["next_batch"]
    newest = await messages(alice, room_id, dir="b", limit=2, **{"from": next_batch})
    assert bodies(newest["chunk"]) == ["mine", "late"]


async def test_prev_events_in_another_room_do_not_let_pagination_cross(gw, remote, alice):
    """As SyTest's 34room-backfill: Q (room 2) names P (room 1) as its prev event, R
    and S follow Q. S arrives, R with it, Q is left out: paging back from /sync backfills
    Q (the remote also serves P and room 1's history: dropped), never P; and P is no
    gap of room 2 to ask for again."""
    room1, view1 = await public_room(gw, alice, remote)
    room2, view2 = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view1)
    await join_bob(gw, remote, view2)
    p, p_id = say(view1, bob, "event P")
    q, q_id = say(view2, bob, "event Q", prev=[p_id])
    r, r_id = say(view2, bob, "event R")
    s, s_id = say(view2, bob, "event S")
    remote.withheld = {q_id}
    assert await remote.send(gw.server_name, [s]) == {"pdus": {s_id: {}}}
    assert await remote.send(gw.server_name, [p]) == {"pdus": {p_id: {}}}

    events, prev_batch = await sync_prev_batch(alice, room2, 2)
    assert bodies(events) == ["event R", "event S"]
    remote.requests.clear()
    page = await messages(alice, room2, dir="b", **{"from": prev_batch})
    assert bodies(page["chunk"]) == ["event Q"]
    assert page["chunk"][1]["type"] == "m.room.member" and page["chunk"][1]["state_key"] == bob
    assert all(e["room_id"] == room2 for e in page["chunk"])
    assert remote.requests.count(BACKFILL) == 1
    stored = await gw.hs.events.store.get_event(p_id)
    assert stored.pdu.room_id == room1
    # P, ours in room 1, is no backward extremity of room 2: nothing more to ask.
    assert p_id not in await gw.hs.federation_backfill.backward_extremities(room2)
    everything = await page_all(alice, room2, None, 4)
    assert bodies(everything) == ["event S", "event R", "event Q"]
    assert remote.requests.count(BACKFILL) == 1


async def test_an_unknown_prev_event_in_another_room_is_asked_for_once(gw, remote, alice):
    """The same, but P never reached us: backfill asks for it, drops the other room's
    events it gets, and does not ask again on the next page."""
    room1, view1 = await public_room(gw, alice, remote)
    room2, view2 = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view1)
    await join_bob(gw, remote, view2)
    p, p_id = say(view1, bob, "event P")
    q, q_id = say(view2, bob, "event Q", prev=[p_id])
    say(view2, bob, "event R")
    s, s_id = say(view2, bob, "event S")
    remote.withheld = {q_id}
    assert await remote.send(gw.server_name, [s]) == {"pdus": {s_id: {}}}
    _, prev_batch = await sync_prev_batch(alice, room2, 2)
    remote.requests.clear()
    page = await messages(alice, room2, dir="b", **{"from": prev_batch})
    assert bodies(page["chunk"]) == ["event Q"]
    assert all(e["room_id"] == room2 for e in page["chunk"])
    assert await gw.hs.events.store.get_event(p_id) is None
    asked = remote.requests.count(BACKFILL)
    assert asked == 2  # Q, then P (served with room 1's history: all dropped)
    again = await messages(alice, room2, dir="b", **{"from": prev_batch})
    assert bodies(again["chunk"]) == ["event Q"]
    assert remote.requests.count(BACKFILL) == asked

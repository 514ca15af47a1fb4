"""Backfill as the requesting side, on both engines, from a scripted remote whose room
history forks (two branches changing different state, merged later) and whose early
history was not visible to later members. A local user joins late and pages back
through /messages: every event once, down to the create event, each branch's events
judged by their own branch's state.

Spec: https://spec.matrix.org/latest/server-server-api/#backfilling-and-retrieving-missing-events
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.gateway.federation_api.test_transactions import alice, ca, gw, remote  # noqa: F401
from tests.gateway.services.federation.test_receive import our_join
from tests.support.fake_remote import RoomView, remote_room

STATE_IDS = ("GET", "/_matrix/federation/v1/state_ids/{room_id}")


def new_room(remote, version: str, visibility: str = "shared"):
    view, carol = remote_room(remote, version, localpart="fork")
    view.make("m.room.history_visibility", carol, {"history_visibility": visibility}, state_key="")
    return view, carol


def say(view, sender, text, **kw) -> str:
    return RoomView.event_id(view.make("m.room.message", sender, {"msgtype": "m.text", "body": text}, **kw), view.rv)


def branch(view, fork: tuple, sender: str, state: tuple[str, dict], texts: list[str]) -> tuple:
    """Events on top of the fork point ``fork`` (state, head, depth); returns the view's
    (state, head, depth) at the branch's end."""
    view.state, view.head, view.depth = dict(fork[0]), list(fork[1]), fork[2]
    view.make(state[0], sender, state[1], state_key="")
    for t in texts:
        say(view, sender, t)
    return dict(view.state), list(view.head), view.depth


async def join_late(gw, view, user_id: str) -> None:
    """Our user joins at the remote's head (the state send_join would give)."""
    hs = gw.hs
    await hs.events.store.ensure_room(view.room_id, view.rv, creator=None, created_ts=0)
    result = await hs.federation_events.persist_outliers(
        view.remote.server_name, view.room_id, view.rv, [p.get_pdu_json() for p in view.state.values()])
    assert not result.rejected and not result.dropped
    outcome = await hs.federation_events.persist_event_with_state(
        None, view.room_id, our_join(hs, view, user_id), {k: p.event_id for k, p in view.state.items()})
    assert outcome.rejected is None and outcome.error is None


async def page_back(alice, room_id: str, limit: int) -> list[dict]:
    """/messages backwards until the end, ``limit`` at a time (older last)."""
    seen, token = [], None
    for _ in range(200):
        query = f"dir=b&limit={limit}" + (f"&from={token}" if token else "")
        page = await alice.call("GET", f"/rooms/{quote(room_id)}/messages?{query}")
        seen += page["chunk"]
        if "end" not in page:
            return seen
        token = page["end"]
    raise AssertionError("pagination never ended")


@pytest.mark.parametrize("version", ["12", "10"])
async def test_forked_history_is_backfilled_with_each_branchs_state(gw, remote, alice, version):
    view, carol = new_room(remote, version)
    dave = f"@dave:{remote.server_name}"
    view.make("m.room.member", dave, {"membership": "join"}, state_key=dave)
    # (Old: where the branches conflict, the later topic wins the resolution.)
    view.make("m.room.topic", carol, {"topic": "first"}, state_key="", ts=1)
    say(view, carol, "before the fork")
    fork = (dict(view.state), list(view.head), view.depth)
    # Branch A (longer): a new topic and seven messages; branch B: a name and three.
    a_end = branch(view, fork, carol, ("m.room.topic", {"topic": "A"}), [f"a{i}" for i in range(1, 8)])
    b_end = branch(view, fork, carol, ("m.room.name", {"name": "B"}), [f"b{i}" for i in range(1, 4)])
    # The merge: both branches' changes (no conflict), then more messages.
    view.state = {**b_end[0], **{k: v for k, v in a_end[0].items() if k[0] == "m.room.topic"}}
    view.head, view.depth = [a_end[1][0], b_end[1][0]], max(a_end[2], b_end[2])
    merged = say(view, carol, "merged")
    for i in range(2):
        say(view, carol, f"after {i}")
    await join_late(gw, view, alice.user_id)

    # Small pages and backfill requests: the first backfill stops halfway down both branches.
    gw.hs.federation_backfill.batch_size = 5
    chunk = await page_back(alice, view.room_id, 5)
    ids = [e["event_id"] for e in chunk]
    assert len(ids) == len(set(ids)), "an event came twice"
    assert chunk[-1]["type"] == "m.room.create"
    texts = [e["content"]["body"] for e in reversed(chunk) if e["type"] == "m.room.message"]
    expected = ["before the fork", *[f"a{i}" for i in range(1, 8)], *[f"b{i}" for i in range(1, 4)], "merged",
                "after 0", "after 1"]
    assert sorted(texts) == sorted(expected)
    # Each event is in the timeline once, with the remote's full history.
    stored = {e: await gw.hs.events.store.get_event(e) for e in remote.pdus}
    assert all(s is not None and not s.outlier for s in stored.values())
    assert set(ids) >= set(remote.pdus) - {e for e, s in stored.items() if s.pdu.type == "m.room.member"
                                           and s.pdu.state_key == alice.user_id}

    async def state_at(text: str) -> dict:
        (event,) = [s for s in stored.values() if s.pdu.type == "m.room.message" and s.pdu.content["body"] == text]
        state = (await gw.hs.events.state.get_state(event.state_group)).state
        got = await gw.hs.events.get_pdus([state[k] for k in (("m.room.topic", ""), ("m.room.name", ""))
                                           if k in state])
        return {p.type: p.content for p in got.values()}

    # Branch A's events never see B's name, B's never see A's topic.
    for i in range(1, 8):
        assert await state_at(f"a{i}") == {"m.room.topic": {"topic": "A"}}
    for i in range(1, 4):
        assert await state_at(f"b{i}") == {"m.room.topic": {"topic": "first"}, "m.room.name": {"name": "B"}}
    # The merge resolved both.
    assert await state_at("merged") == {"m.room.topic": {"topic": "A"}, "m.room.name": {"name": "B"}}
    assert stored[merged].state_group is not None
    # The state where the batch met unknown history came from the remote.
    assert remote.requests.count(STATE_IDS) >= 1
    # Nothing more to fetch.
    assert await gw.hs.federation_backfill.backward_extremities(view.room_id) == []


async def test_backfilled_history_keeps_its_visibility(gw, remote, alice):
    """Messages from when history was visible to joined members only stay hidden from
    a user who joined later, once the room changed to shared (the state before each
    event is that of its own time, not of the newest event)."""
    view, carol = new_room(remote, "12", visibility="joined")
    for i in range(3):
        say(view, carol, f"members only {i}")
    view.make("m.room.history_visibility", carol, {"history_visibility": "shared"}, state_key="")
    for i in range(3):
        say(view, carol, f"shared {i}")
    await join_late(gw, view, alice.user_id)
    chunk = await page_back(alice, view.room_id, 4)
    texts = [e["content"]["body"] for e in reversed(chunk) if e["type"] == "m.room.message"]
    assert texts == [f"shared {i}" for i in range(3)]
    hidden = [RoomView.event_id(p, view.rv) for p in remote.pdus.values()
              if p["type"] == "m.room.message" and p["content"]["body"].startswith("members only")]
    stored = [await gw.hs.events.store.get_event(e) for e in hidden]
    assert all(s is not None and not s.outlier for s in stored)  # backfilled, just not shown


async def test_a_short_history_comes_whole_in_one_request(gw, remote, alice):
    """A client's small page still asks the remote for a full batch: ten messages after
    the room's creation come in one /backfill, down to the create event, and the state
    events the join brought as outliers take their place in the timeline (no /state_ids
    needed where the batch meets them)."""
    view, carol = new_room(remote, "10")
    for i in range(10):
        say(view, carol, f"m{i}")
    await join_late(gw, view, alice.user_id)
    remote.requests.clear()
    page = await alice.call("GET", f"/rooms/{quote(view.room_id)}/messages?dir=b&limit=11")
    assert [e["content"]["body"] for e in page["chunk"][1:]] == [f"m{i}" for i in reversed(range(10))]
    assert remote.requests.count(("GET", "/_matrix/federation/v1/backfill/{room_id}")) == 1
    assert STATE_IDS not in remote.requests
    stored = await gw.hs.events.store.get_event(view.state[("m.room.create", "")].event_id)
    assert not stored.outlier and stored.state_group is not None

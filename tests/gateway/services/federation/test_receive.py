"""The federation event handler's bulk paths for joins (``persist_outliers``,
``persist_event_with_state``) and forks, on both engines: a room that lives on a
scripted remote server, whose state and auth chain (with bad events mixed in) we store,
then our user's join event with that state, then live traffic on top."""

from __future__ import annotations

import time

import pytest

from federation.events import PDU, build_event, compute_event_id
from federation.room_versions import get_room_version
from federation.signing import generate_signing_key, sign_event
from gateway.services.federation.receive import PDUError
from tests.gateway.federation_api.test_transactions import (  # noqa: F401
    alice,
    bodies,
    ca,
    gw,
    join_bob,
    public_room,
    remote,
)
from tests.support.fake_remote import RoomView


def remote_room(remote, version="12"):
    """A public room created on the remote by carol, with a few messages."""
    rv = get_room_version(version)
    carol = f"@carol:{remote.server_name}"
    view = RoomView(remote, rv, None)
    create_content = {"room_version": version} if rv.implicit_room_creator else {"creator": carol}
    create = view.make("m.room.create", carol, create_content, state_key="", prev=[])
    room_id = "!" + RoomView.event_id(create, rv)[1:] if rv.room_id_from_create_event else None
    if room_id is None:
        raise AssertionError("use a v12 room here")
    view.room_id = room_id
    view.make("m.room.member", carol, {"membership": "join"}, state_key=carol)
    view.make("m.room.power_levels", carol, {"users": {}, "users_default": 0, "events_default": 0,
                                             "state_default": 50}, state_key="")
    view.make("m.room.join_rules", carol, {"join_rule": "public"}, state_key="")
    view.make("m.room.history_visibility", carol, {"history_visibility": "shared"}, state_key="")
    view.make("m.room.message", carol, {"msgtype": "m.text", "body": "before you"})
    return view, carol


def our_join(hs, view, user_id):
    """Our user's join event on the remote room's head, signed by us (what make_join +
    signing produce)."""
    from federation.auth_rules import auth_types_for_event

    keys = auth_types_for_event(view.rv, "m.room.member", user_id, user_id, {"membership": "join"})
    auth = [view.state[k].event_id for k in sorted(keys) if k in view.state]
    ev = build_event(view.rv, type="m.room.member", sender=user_id, room_id=view.room_id,
                     content={"membership": "join"}, prev_event_ids=view.head, auth_event_ids=auth,
                     depth=view.depth + 1, origin_server_ts=int(time.time() * 1000), state_key=user_id)
    return sign_event(ev, hs.server_name, hs.signing_key, room_version=view.rv)


async def test_join_state_in_bulk_then_the_join_event_with_that_state(gw, remote, alice):
    hs = gw.hs
    view, carol = remote_room(remote)
    rv, room_id = view.rv, view.room_id
    state_pdus = [view.state[k].get_pdu_json() for k in sorted(view.state)]
    # Bad events mixed in: a forged signature, a broken hash, an unauthorised state event,
    # and an event whose auth events include the forged one.
    forged = view.make("m.room.topic", carol, {"topic": "forged"}, state_key="", advance=False)
    forged["signatures"] = {}
    forged = sign_event(forged, remote.server_name, generate_signing_key("fr1"), room_version=rv)
    tampered = view.make("m.room.name", carol, {"name": "real"}, state_key="", advance=False)
    tampered["content"] = {"name": "fake"}
    mallory = f"@mallory:{remote.server_name}"
    unauthorised = view.make("m.room.name", mallory, {"name": "mine"}, state_key="", advance=False)
    on_forged = dict(view.make("m.room.avatar", carol, {"url": "mxc://x/y"}, state_key="", advance=False))
    on_forged["auth_events"] = on_forged["auth_events"] + [compute_event_id(forged, rv)]
    on_forged["signatures"] = {}
    on_forged = sign_event(on_forged, remote.server_name, remote.key, room_version=rv)
    garbage = {"type": "m.room.message"}

    assert await hs.events.store.ensure_room(room_id, rv, creator=carol, created_ts=0)
    assert not await hs.events.store.ensure_room(room_id, rv, creator=carol, created_ts=0)
    result = await hs.federation_events.persist_outliers(
        remote.server_name, room_id, rv, [*reversed(state_pdus), forged, tampered, unauthorised, on_forged, garbage])
    ids = {name: compute_event_id(ev, rv) for name, ev in
           (("forged", forged), ("tampered", tampered), ("unauthorised", unauthorised), ("on_forged", on_forged))}
    assert set(result.accepted) == {p.event_id for p in view.state.values()} | {ids["tampered"]}
    assert result.accepted[ids["tampered"]].content == {}  # kept redacted
    assert set(result.rejected) == {ids["unauthorised"], ids["on_forged"]}
    assert "auth events not available" in result.rejected[ids["on_forged"]]
    assert ids["forged"] in result.dropped and len(result.dropped) == 2  # and the garbage
    assert "signature" in result.dropped[ids["forged"]]
    metas = await hs.events.store.get_event_meta([*result.accepted, *result.rejected, ids["forged"]])
    assert ids["forged"] not in metas
    assert all(m.outlier and m.stream_ordering < 0 and m.state_group is None for m in metas.values())
    # Again: nothing new, the same verdicts.
    again = await hs.federation_events.persist_outliers(remote.server_name, room_id, rv, state_pdus)
    assert set(again.accepted) == {p.event_id for p in view.state.values()}

    join = our_join(hs, view, alice.user_id)
    join_id = compute_event_id(join, rv)
    state = {k: p.event_id for k, p in view.state.items()}
    outcome = await hs.federation_events.persist_event_with_state(None, room_id, join, state)
    assert outcome.error is None and outcome.rejected is None and outcome.stream_ordering > 0
    current = await hs.events.state.get_current_state_ids(room_id)
    assert current == {**state, ("m.room.member", alice.user_id): join_id}
    member = await hs.events.state.get_membership(room_id, alice.user_id)
    assert member.membership == "join"
    assert (await hs.events.state.get_membership(room_id, carol)).membership == "join"
    assert await hs.events.store.get_forward_extremities(room_id) == [join_id]
    # The join is the newest event (what comes before is backfilled from the remote).
    assert [e["event_id"] for e in await alice.messages(room_id)][-1] == join_id

    # Live traffic on top of the join goes through the normal pipeline.
    view.learn([(await hs.events.store.get_event(join_id)).pdu])
    msg = view.make("m.room.message", carol, {"msgtype": "m.text", "body": "welcome"})
    (out,) = await hs.federation_events.receive_pdus(remote.server_name, room_id, [msg])
    assert out.error is None and not out.soft_failed
    assert bodies(await alice.messages(room_id)) == ["before you", "welcome"]
    # And our own sends build on it.
    mine = await alice.send(room_id, "thanks")
    assert (await hs.events.store.get_event(mine)).pdu.prev_event_ids == (out.event_id,)


@pytest.mark.parametrize("where", ["processes", "threads", "dying processes"])
async def test_a_big_batch_is_checked_in_chunks_with_the_same_verdicts(gw, remote, alice, monkeypatch, where):
    """Batches bigger than CHECK_CHUNK are checked chunk by chunk in worker processes
    (or threads without them, or here when the worker processes die), and written a
    slice at a time (in auth order): bad events anywhere in the batch are still dropped
    or rejected, also when what they depend on sits in another chunk or slice, and the
    batch is given in reverse order."""
    from gateway.services.federation import receive as federation_events

    monkeypatch.setattr(federation_events, "CHECK_CHUNK", 3)
    monkeypatch.setattr(federation_events, "WRITE_SLICE", 5)
    hs = gw.hs
    procs = hs.federation_events.check_processes
    if where == "threads":
        monkeypatch.setattr(hs.federation_events, "check_processes", None)
    else:
        assert procs.enabled
        assert await procs.run("ping") == "pong"  # started
        if where == "dying processes":
            for worker in procs._workers:
                worker.proc.kill()
                await worker.proc.wait()
    view, carol = remote_room(remote)
    rv, room_id = view.rv, view.room_id
    members = [f"@m{i}:{remote.server_name}" for i in range(12)]
    for m in members:
        view.make("m.room.member", m, {"membership": "join"}, state_key=m)
    # A second membership of each member: its own earlier join is among its auth events.
    for m in members[:6]:
        view.make("m.room.member", m, {"membership": "join", "displayname": m}, state_key=m)
    events = [p.get_pdu_json() for p in view.state.values()]
    first_joins = [e for e in remote.pdus.values() if e["type"] == "m.room.member" and e["state_key"] in members[:6]
                   and "displayname" not in e["content"]]
    forged = view.make("m.room.member", members[7], {"membership": "leave"}, state_key=members[7], advance=False)
    forged = sign_event({**forged, "signatures": {}}, remote.server_name, generate_signing_key("fr1"),
                        room_version=rv)
    tampered = view.make("m.room.topic", carol, {"topic": "real"}, state_key="", advance=False)
    tampered["content"] = {"topic": "fake"}
    mallory = f"@mallory:{remote.server_name}"
    unauthorised = view.make("m.room.name", mallory, {"name": "mine"}, state_key="", advance=False)
    on_forged = dict(view.make("m.room.member", members[7], {"membership": "join", "displayname": "x"},
                               state_key=members[7], advance=False))
    on_forged["auth_events"] = [*on_forged["auth_events"], compute_event_id(forged, rv)]
    on_forged = sign_event({**on_forged, "signatures": {}}, remote.server_name, remote.key, room_version=rv)
    batch = [*events, *first_joins, forged, tampered, unauthorised, on_forged, {"type": "m.room.message"}]
    ids = {name: compute_event_id(ev, rv) for name, ev in
           (("forged", forged), ("tampered", tampered), ("unauthorised", unauthorised), ("on_forged", on_forged))}

    await hs.events.store.ensure_room(room_id, rv, creator=carol, created_ts=0)
    result = await hs.federation_events.persist_outliers(remote.server_name, room_id, rv, list(reversed(batch)))
    good = {compute_event_id(e, rv) for e in [*events, *first_joins]}
    assert len(batch) > 8 * federation_events.CHECK_CHUNK
    assert set(result.accepted) == good | {ids["tampered"]}
    assert result.accepted[ids["tampered"]].content == {}
    assert set(result.rejected) == {ids["unauthorised"], ids["on_forged"]}
    assert set(result.dropped) >= {ids["forged"]} and len(result.dropped) == 2
    metas = await hs.events.store.get_event_meta([*good, *ids.values()])
    assert set(metas) == good | {ids["tampered"], ids["unauthorised"], ids["on_forged"]}
    assert {e for e, m in metas.items() if m.rejected_reason} == {ids["unauthorised"], ids["on_forged"]}
    if where != "threads":
        assert await procs.run("ping") == "pong"  # workers that died were replaced


async def test_a_join_event_the_state_does_not_allow_is_refused_or_rejected(gw, remote, alice):
    hs = gw.hs
    view, carol = remote_room(remote)
    rv, room_id = view.rv, view.room_id
    await hs.events.store.ensure_room(room_id, rv, creator=carol, created_ts=0)
    await hs.federation_events.persist_outliers(remote.server_name, room_id, rv,
                                                [p.get_pdu_json() for p in view.state.values()])
    join = our_join(hs, view, alice.user_id)
    state = {k: p.event_id for k, p in view.state.items() if k != ("m.room.join_rules", "")}
    outcome = await hs.federation_events.persist_event_with_state(None, room_id, join, state)
    assert outcome.rejected is not None  # no join rules in that state: a join is not allowed
    assert await hs.events.state.get_membership(room_id, alice.user_id) is None
    with pytest.raises(PDUError):
        await hs.federation_events.persist_event_with_state(None, "!unknown:x.test", join, state)


async def test_concurrent_branches_merge_into_one_resolved_state(gw, remote, alice):
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    fork_point = list(view.head)
    # Our side moves on (a topic by alice); the remote's side, unaware, sends on the old head.
    await alice.call("PUT", f"/rooms/{room_id}/state/m.room.topic/", {"topic": "ours"})
    msg = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "parallel"}, prev=fork_point)
    msg_id = view.event_id(msg, view.rv)
    assert await remote.send(gw.server_name, [msg]) == {"pdus": {msg_id: {}}}
    extremities = await gw.hs.events.store.get_forward_extremities(room_id)
    assert len(extremities) == 2 and msg_id in extremities
    current = await gw.hs.events.state.get_current_state_ids(room_id)
    assert ("m.room.topic", "") in current and ("m.room.member", bob) in current
    # The next local event merges both branches.
    mine = await alice.send(room_id, "merge")
    stored = await gw.hs.events.store.get_event(mine)
    assert set(stored.pdu.prev_event_ids) == set(extremities)
    assert await gw.hs.events.store.get_forward_extremities(room_id) == [mine]


async def test_v12_batch_without_its_create_event_fetches_it(gw, remote, alice):
    """Rooms 12 list the create event in no auth_events: a batch without it makes us
    fetch it by its ID (the room's) instead of rejecting the batch."""
    hs = gw.hs
    view, carol = remote_room(remote)
    rv, room_id = view.rv, view.room_id
    create_id = "$" + room_id[1:]
    others = [p.get_pdu_json() for k, p in view.state.items() if k != ("m.room.create", "")]
    await hs.events.store.ensure_room(room_id, rv, creator=carol, created_ts=0)
    result = await hs.federation_events.persist_outliers(remote.server_name, room_id, rv, others)
    assert set(result.accepted) == {p.event_id for p in view.state.values() if p.type != "m.room.create"}
    assert not result.rejected and not result.dropped
    assert remote.requests.count(("GET", "/_matrix/federation/v1/event/{event_id}")) == 1
    meta = (await hs.events.store.get_event_meta([create_id]))[create_id]
    assert meta.outlier and meta.rejected_reason is None
    # Known now: the next batch does not ask again.
    msg = view.make("m.room.message", carol, {"msgtype": "m.text", "body": "more"})
    again = await hs.federation_events.persist_outliers(remote.server_name, room_id, rv, [msg])
    assert list(again.accepted) == [view.event_id(msg, rv)]
    assert remote.requests.count(("GET", "/_matrix/federation/v1/event/{event_id}")) == 1


async def test_v12_create_event_served_wrong_is_not_taken(gw, remote, alice):
    hs = gw.hs
    view, carol = remote_room(remote)
    rv, room_id = view.rv, view.room_id
    create_id = "$" + room_id[1:]
    # The remote answers /event for the create's ID with another event (not its hash).
    remote.pdus[create_id] = view.state[("m.room.power_levels", "")].get_pdu_json()
    others = [p.get_pdu_json() for k, p in view.state.items() if k != ("m.room.create", "")]
    await hs.events.store.ensure_room(room_id, rv, creator=carol, created_ts=0)
    result = await hs.federation_events.persist_outliers(remote.server_name, room_id, rv, others)
    assert not result.accepted
    assert all("create event" in r for r in result.rejected.values()) and len(result.rejected) == len(others)
    assert create_id not in await hs.events.store.get_event_meta([create_id])


def test_auth_order_puts_the_create_event_first_whatever_the_depths():
    from gateway.services.federation.receive import _auth_order

    remote = type("R", (), {"pdus": {}, "state_before": {}, "server_name": "r.test",
                            "key": generate_signing_key("k")})()
    view, carol = remote_room(remote)
    rv = view.rv
    create = view.state[("m.room.create", "")]
    events = {create.event_id: create}
    for k, p in view.state.items():
        if k[0] != "m.room.create":
            low = {**p.get_pdu_json(), "depth": 0}
            pdu = PDU.from_pdu_json(low, rv)
            events[pdu.event_id] = pdu
    ordered = _auth_order(dict(reversed(list(events.items()))))
    assert ordered[0].event_id == create.event_id


# --- one /send transaction, one write ---------------------------------------------------


def count_writes(hs, monkeypatch, fail_for: str | None = None) -> list[list[str]]:
    """Record the event IDs of each batch the store writes (and fail a batch holding
    ``fail_for``, as a broken row would)."""
    store = hs.events.store
    original = store.persist_batch
    writes: list[list[str]] = []

    async def persist_batch(batch, **kw):
        ids = [e.pdu.event_id for e in batch.events]
        writes.append(ids)
        if fail_for in ids:
            raise RuntimeError("a row the database refuses")
        return await original(batch, **kw)

    monkeypatch.setattr(store, "persist_batch", persist_batch)
    return writes


async def test_a_transaction_is_stored_in_one_write_with_what_each_event_changed(gw, remote, alice, monkeypatch):
    """The PDUs of one /send go through the checks in order, each seeing the ones before
    it (a join, then that member's message), and are written in one transaction: the
    timeline events at consecutive positions, a rejected one apart, the current state
    and memberships as each state event left them, recorded at its own position, and
    the listeners told once."""
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    hs = gw.hs
    carol = f"@carol:{remote.server_name}"
    mallory = f"@mallory:{remote.server_name}"
    m1 = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "one"})
    carol_join = view.make("m.room.member", carol, {"membership": "join"}, state_key=carol)
    by_carol = view.make("m.room.message", carol, {"msgtype": "m.text", "body": "carol here"})
    intruder = view.make("m.room.message", mallory, {"msgtype": "m.text", "body": "let me in"}, advance=False)
    rename = view.make("m.room.member", bob, {"membership": "join", "displayname": "Bobby"}, state_key=bob)
    m2 = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "two"})
    pdus = [m1, carol_join, by_carol, intruder, rename, m2]
    ids = [view.event_id(p, view.rv) for p in pdus]
    seen = []
    hs.events.add_new_events_listener(lambda room, positions: seen.append(list(positions)))
    writes = count_writes(hs, monkeypatch)

    answer = await remote.send(gw.server_name, pdus)
    assert all(answer["pdus"][e] == {} for e in ids)  # a rejected PDU was handled too (stored as rejected)
    assert writes == [ids]
    metas = await hs.events.store.get_event_meta(ids)
    timeline = [metas[e].stream_ordering for i, e in enumerate(ids) if i != 3]
    assert timeline == list(range(timeline[0], timeline[0] + 5)) and timeline[0] > 0
    assert metas[ids[3]].stream_ordering < 0 and metas[ids[3]].rejected_reason is not None
    assert seen == [timeline]
    assert bodies(await alice.messages(room_id)) == ["one", "carol here", "two"]
    assert await hs.events.store.get_forward_extremities(room_id) == [ids[5]]
    current = await hs.events.state.get_current_state_ids(room_id)
    assert current[("m.room.member", carol)] == ids[1] and current[("m.room.member", bob)] == ids[4]
    bob_row = await hs.events.state.get_membership(room_id, bob)
    assert (bob_row.displayname, bob_row.stream_ordering) == ("Bobby", metas[ids[4]].stream_ordering)
    carol_row = await hs.events.state.get_membership(room_id, carol)
    assert (carol_row.membership, carol_row.stream_ordering) == ("join", metas[ids[1]].stream_ordering)
    deltas = await hs.db.fetch(
        "SELECT stream_ordering, state_key, event_id FROM current_state_deltas WHERE room_id = $1"
        " AND stream_ordering >= $2 ORDER BY stream_ordering", room_id, timeline[0])
    assert [tuple(r) for r in deltas] == [(metas[ids[1]].stream_ordering, carol, ids[1]),
                                          (metas[ids[4]].stream_ordering, bob, ids[4])]
    # The state after each event, as a fresh reader sees it.
    from gateway.storage.state import StateStore
    fresh = StateStore(hs.db)
    after_by_carol = await fresh.get_state(metas[ids[2]].state_group)
    assert after_by_carol.state[("m.room.member", carol)] == ids[1]
    assert after_by_carol.state[("m.room.member", bob)] != ids[4]
    assert (await fresh.get_state(metas[ids[5]].state_group)).state[("m.room.member", bob)] == ids[4]


async def test_a_fork_inside_one_transaction_is_resolved(gw, remote, alice, monkeypatch):
    """Two events on the same prev event in one transaction: both become forward
    extremities and the current state is the resolution of both branches; an event
    on both merges them, in the same write."""
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    hs = gw.hs
    fork_point = list(view.head)
    rename = view.make("m.room.member", bob, {"membership": "join", "displayname": "Bobby"}, state_key=bob)
    rename_id = view.event_id(rename, view.rv)
    side = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "side"}, prev=fork_point)
    side_id = view.event_id(side, view.rv)
    writes = count_writes(hs, monkeypatch)
    assert await remote.send(gw.server_name, [rename, side]) == {"pdus": {rename_id: {}, side_id: {}}}
    assert writes == [[rename_id, side_id]]
    assert sorted(await hs.events.store.get_forward_extremities(room_id)) == sorted([rename_id, side_id])
    current = await hs.events.state.get_current_state_ids(room_id)
    assert current[("m.room.member", bob)] == rename_id
    assert (await hs.events.state.get_membership(room_id, bob)).displayname == "Bobby"
    # A second fork and its merge in one transaction.
    topic_side = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "other side"}, prev=[side_id])
    merge = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "merged"},
                      prev=[rename_id, view.event_id(topic_side, view.rv)])
    merge_id = view.event_id(merge, view.rv)
    answer = await remote.send(gw.server_name, [topic_side, merge])
    assert all(v == {} for v in answer["pdus"].values())
    assert await hs.events.store.get_forward_extremities(room_id) == [merge_id]
    meta = (await hs.events.store.get_event_meta([merge_id]))[merge_id]
    assert (await hs.events.state.get_state(meta.state_group)).state[("m.room.member", bob)] == rename_id
    # Our next event builds on the merge alone.
    mine = await alice.send(room_id, "after the merge")
    assert (await hs.events.store.get_event(mine)).pdu.prev_event_ids == (merge_id,)


async def test_a_batch_that_cannot_be_written_is_written_event_by_event(gw, remote, alice, monkeypatch):
    """Acknowledged means stored: when the transaction holding a run of PDUs fails,
    nothing of it is acknowledged; the PDUs are written one at a time, and only the one
    the database refuses is answered with an error (and not stored)."""
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    hs = gw.hs
    fork_point = list(view.head)
    m1 = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "one"})
    bad = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "refused"}, prev=fork_point, advance=False)
    m2 = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "two"})
    ids = [view.event_id(p, view.rv) for p in (m1, bad, m2)]
    writes = count_writes(hs, monkeypatch, fail_for=ids[1])
    answer = await remote.send(gw.server_name, [m1, bad, m2])
    assert answer["pdus"][ids[0]] == {} and answer["pdus"][ids[2]] == {}
    assert "Internal error" in answer["pdus"][ids[1]]["error"]
    assert writes == [ids, [ids[0]], [ids[1]], [ids[2]]]
    assert set(await hs.events.store.get_event_meta(ids)) == {ids[0], ids[2]}
    assert bodies(await alice.messages(room_id)) == ["one", "two"]
    assert await hs.events.store.get_forward_extremities(room_id) == [ids[2]]


async def test_an_event_that_arrives_after_its_child_is_not_a_forward_extremity(gw, remote, alice):
    """m2 arrives first, pulled by get_missing_events for m3, which does not give m1
    (fetched as an outlier for its state); when m1 itself arrives, in a transaction with
    a new event on m3, it joins the timeline but is not a forward extremity: a stored
    timeline event already points at it."""
    room_id, view = await public_room(gw, alice, remote)
    bob = await join_bob(gw, remote, view)
    hs = gw.hs
    m1 = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "one"})
    m2 = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "two"})
    m3 = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "three"})
    m4 = view.make("m.room.message", bob, {"msgtype": "m.text", "body": "four"})
    ids = [view.event_id(p, view.rv) for p in (m1, m2, m3, m4)]
    remote.withheld = {ids[0]}
    assert await remote.send(gw.server_name, [m3]) == {"pdus": {ids[2]: {}}}
    assert (await hs.events.store.get_event_meta([ids[0]]))[ids[0]].outlier
    assert await hs.events.store.get_timeline_children([ids[0], ids[1]]) == {ids[0], ids[1]}
    assert await remote.send(gw.server_name, [m1, m4]) == {"pdus": {ids[0]: {}, ids[3]: {}}}
    metas = await hs.events.store.get_event_meta(ids)
    assert not metas[ids[0]].outlier and metas[ids[0]].stream_ordering > 0
    assert await hs.events.store.get_forward_extremities(room_id) == [ids[3]]

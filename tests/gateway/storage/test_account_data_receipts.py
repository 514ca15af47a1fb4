"""Account data and receipt stores, and the batched reads of the sync store, on both engines."""

from __future__ import annotations

import pytest

from federation.canonical_json import encode_canonical_json
from gateway.storage.account_data import AccountDataStore
from gateway.storage.events import EventStore
from gateway.storage.receipts import ReceiptStore
from gateway.storage.state import StateStore
from gateway.storage.sync import SyncStore, TimelineFilter

from .test_events import ALICE, BOB, Chain, new_room, write


async def test_account_data_positions_and_changes(database):
    store = AccountDataStore(database)
    assert await store.get_current_position() == 0
    p1 = await store.put(ALICE, "", "org.example.a", {"v": 1})
    p2 = await store.put(ALICE, "!r:hs.test", "m.tag", {"tags": {}})
    p3 = await store.put(BOB, "", "org.example.a", {"v": "bob"})
    p4 = await store.put(ALICE, "", "org.example.a", {"v": 2})  # overwrite moves it forward
    assert p1 < p2 < p3 < p4 == await store.get_current_position()
    assert await store.get(ALICE, "", "org.example.a") == {"v": 2}
    assert await store.get(ALICE, "", "missing") is None
    changes = await store.get_changes(ALICE, since=p1, upto=p4)
    assert [(c.room_id, c.type, c.content) for c in changes] == [
        ("!r:hs.test", "m.tag", {"tags": {}}), ("", "org.example.a", {"v": 2})]
    assert [c.type for c in await store.get_changes(ALICE, since=None, upto=p4, room_ids=[])] == ["org.example.a"]
    assert await store.get_changes(ALICE, since=p4, upto=p4) == []

    def add_tag(old):
        tags = dict((old or {}).get("tags", {}))
        tags["u.x"] = {"order": 1}
        return {"tags": tags}

    await store.update(ALICE, "!r:hs.test", "m.tag", add_tag)
    assert await store.get_for_rooms(ALICE, ["!r:hs.test", "!other:hs.test"], "m.tag") == {
        "!r:hs.test": {"tags": {"u.x": {"order": 1}}}}


async def test_receipts_keep_the_latest(database):
    store = ReceiptStore(database)
    kw = dict(room_id="!r:hs.test", receipt_type="m.read", user_id=ALICE, thread_id="")
    p1 = await store.put_receipt(event_id="$b", event_stream_ordering=5, data={"ts": 1}, **kw)
    assert p1 == 1
    assert await store.put_receipt(event_id="$a", event_stream_ordering=3, data={"ts": 2}, **kw) is None  # older
    assert await store.put_receipt(event_id="$b", event_stream_ordering=5, data={"ts": 3}, **kw) is None  # same
    p2 = await store.put_receipt(event_id="$c", event_stream_ordering=9, data={"ts": 4}, **kw)
    p3 = await store.put_receipt(event_id="$a", event_stream_ordering=3, data={"ts": 5, "thread_id": "t"},
                                 **{**kw, "thread_id": "t"})  # another thread is another receipt
    assert p1 < p2 < p3 == await store.get_current_position()
    changes = await store.get_changes(since=p1, upto=p3)
    assert [(c.event_id, c.thread_id, c.data) for c in changes] == [
        ("$c", "", {"ts": 4}), ("$a", "t", {"ts": 5, "thread_id": "t"})]
    assert len(await store.get_for_rooms(["!r:hs.test", "!x:hs.test"], upto=p3)) == 2
    assert await store.get_read_positions(ALICE, ["!r:hs.test", "!x:hs.test"]) == {"!r:hs.test": 9}
    found = await store.get_user_receipt("!r:hs.test", ALICE, ["m.read"])
    assert found is not None and found.event_id == "$c"


async def test_sync_store_batched_reads(database):
    state = StateStore(database)
    events = EventStore(database, state)
    sync = SyncStore(database, events)
    rooms = []
    for i in range(3):
        chain = Chain()
        chain.ts += 100 * i  # distinct create events, distinct v12 room IDs
        create, join, result = await new_room(events, chain)
        rooms.append((chain, create.room_id))
    positions = await sync.get_positions()
    assert positions == {"events": 6, "account_data": 0, "receipts": 0, "device_lists": 0, "to_device": 0,
                         "presence": 0}
    assert (await sync.get_positions_and_memberships("@nobody:hs.test")) == (positions, [])
    since = positions["events"]
    # Messages in two of the rooms, and bob's invite in the last one.
    for k, (chain, room_id) in enumerate(rooms[:2]):
        room = await events.get_room(room_id)
        before = await state.get_state(room.current_state_group)
        msgs = [chain.make("m.room.message", {"body": f"m{i}"}) for i in range(3)]
        pings = [chain.make("org.example.ping", {})]
        writes = [write(p) for p in msgs + pings]
        writes[0].txn = (ALICE, "DEV", f"txn-{k}")
        await events.persist_events(room_id, writes, state_before=before,
                                    expected_head=room.head_stream_ordering, received_ts=1)
    chain, room_id = rooms[2]
    room = await events.get_room(room_id)
    invite = chain.make("m.room.member", {"membership": "invite"}, BOB)
    await events.persist_events(room_id, [write(invite)], state_before=await state.get_state(room.current_state_group),
                                expected_head=room.head_stream_ordering, received_ts=1)
    now = (await sync.get_positions())["events"]
    assert now == since + 9

    positions, alice = await sync.get_positions_and_memberships(ALICE)
    assert positions["events"] == now
    memberships = {m.room_id: m for m in alice}
    assert all(m.current_state_group is not None for m in alice)
    assert set(memberships) == {r for _, r in rooms}
    assert all(m.membership == "join" for m in memberships.values())
    assert [memberships[r].room_head > since for _, r in rooms] == [True, True, True]
    assert [m.membership for m in await sync.get_memberships(BOB)] == ["invite"]

    ids = [r for _, r in rooms]
    dev = (ALICE, "DEV")
    got = await sync.get_timelines(ids, after=since, upto=now, limit=2, flt=TimelineFilter(), device=dev)
    assert [len(got[r]) for r in ids] == [2, 2, 1]
    assert [t.event.pdu.type for t in got[ids[0]]] == ["org.example.ping", "m.room.message"]  # newest first
    msgs_only = await sync.get_timelines(ids, after=since, upto=now, limit=10,
                                         flt=TimelineFilter(types=("m.room.*",), not_senders=("@x:hs.test",)),
                                         device=dev)
    assert [len(msgs_only[r]) for r in ids] == [3, 3, 1]
    # The transaction ID comes only for the device that sent the event.
    assert [t.txn_id for t in msgs_only[ids[0]]] == [None, None, "txn-0"]
    other_device = await sync.get_timelines(ids[:1], after=since, upto=now, limit=10, flt=TimelineFilter(),
                                            device=(ALICE, "OTHER"))
    assert all(t.txn_id is None for t in other_device[ids[0]])
    not_msgs = await sync.get_timeline(ids[0], after=None, upto=now, limit=10,
                                       flt=TimelineFilter(not_types=("m.room.message", "m.room.c*")), device=dev)
    assert [t.event.pdu.type for t in not_msgs] == ["org.example.ping", "m.room.member"]
    assert await sync.get_timeline(ids[0], after=since, upto=now, limit=10, flt=TimelineFilter(senders=()),
                                   device=dev) == []
    # A redaction that applies shows up with the event.
    chain, room_id = rooms[0]
    room = await events.get_room(room_id)
    target = msgs_only[ids[0]][0].event.event_id
    redaction = chain.make("m.room.redaction", {}, redacts=target)
    await events.persist_events(room_id, [write(redaction, redaction_applies_to=target)],
                                state_before=await state.get_state(room.current_state_group),
                                expected_head=room.head_stream_ordering, received_ts=1)
    again = await sync.get_timeline(room_id, after=since, upto=now + 1, limit=10, flt=TimelineFilter(), device=dev)
    assert {t.event.event_id: t.redacted_by for t in again}[target] == redaction.event_id

    counts = await sync.get_member_counts(ids)
    assert counts[ids[2]] == {"join": 1, "invite": 1} and counts[ids[0]] == {"join": 1, "invite": 0}
    heroes = await sync.get_hero_candidates(ids, 5)
    assert heroes[ids[2]] == [(ALICE, "join"), (BOB, "invite")] and heroes[ids[0]] == [(ALICE, "join")]
    assert [h for h, _ in (await sync.get_hero_candidates(ids, 1))[ids[2]]] == [ALICE]
    assert await sync.get_member_event_targets(since + 1, now) == {BOB}
    group = await sync.get_state_group_at(ids[2], since)
    assert group is not None and ("m.room.member", BOB) not in (await state.get_state(group)).state


@pytest.mark.parametrize("pattern,matches", [("m.room.*", True), ("m.*.message", True), ("m_room%", False)])
async def test_type_wildcards_escape_sql(database, pattern, matches):
    state = StateStore(database)
    events = EventStore(database, state)
    sync = SyncStore(database, events)
    chain = Chain()
    create, _, _ = await new_room(events, chain)
    room = await events.get_room(create.room_id)
    msg = chain.make("m.room.message", {})
    await events.persist_events(create.room_id, [write(msg)], state_before=await state.get_state(room.current_state_group),
                                expected_head=room.head_stream_ordering, received_ts=1)
    got = await sync.get_timeline(create.room_id, after=2, upto=10, limit=5, flt=TimelineFilter(types=(pattern,)),
                                  device=(ALICE, "D"))
    assert bool(got) is matches


async def test_unread_counts_after_the_read_receipt(database):
    sync = SyncStore(database, EventStore(database, StateStore(database)))
    rows = [("!r:hs.test", ALICE, f"$e{i}", i, True, i == 3, "main", "[]") for i in range(1, 5)]
    await database.executemany(
        "INSERT INTO event_push_actions (room_id, user_id, event_id, stream_ordering, notif, highlight, thread_id,"
        " actions) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", rows)
    assert await sync.get_unread_counts(ALICE, ["!r:hs.test", "!quiet:hs.test"]) == {"!r:hs.test": {"main": (4, 1)}}
    receipts = ReceiptStore(database)
    await receipts.put_receipt(room_id="!r:hs.test", receipt_type="m.read.private", user_id=ALICE, thread_id="",
                               event_id="$e2", event_stream_ordering=2, data={"ts": 1})
    assert await sync.get_unread_counts(ALICE, ["!r:hs.test"]) == {"!r:hs.test": {"main": (2, 1)}}
    await receipts.put_receipt(room_id="!r:hs.test", receipt_type="m.read", user_id=ALICE, thread_id="",
                               event_id="$e4", event_stream_ordering=4, data={"ts": 1})
    assert await sync.get_unread_counts(ALICE, ["!r:hs.test"]) == {}
    assert await sync.get_unread_counts(BOB, ["!r:hs.test"]) == {}


async def test_timeline_pages_each_room_its_own_range(database):
    """``get_timeline_pages``: many rooms in one read, each over its own range, each
    limited on its own, newest first; a filter and the device's transaction IDs apply."""
    state = StateStore(database)
    events = EventStore(database, state)
    sync = SyncStore(database, events)
    rooms = []
    for i in range(3):
        chain = Chain()
        chain.ts += 100 * i
        create, _, _ = await new_room(events, chain)
        room = await events.get_room(create.room_id)
        writes = [write(chain.make("m.room.message", {"body": f"{i}-{k}"})) for k in range(4)]
        writes[3].txn = (ALICE, "DEV", f"txn-{i}")
        await events.persist_events(create.room_id, writes, state_before=await state.get_state(room.current_state_group),
                                    expected_head=room.head_stream_ordering, received_ts=1)
        rooms.append(create.room_id)
    heads = {r: (await events.get_room(r)).head_stream_ordering for r in rooms}
    pages = await sync.get_timeline_pages(
        [(rooms[0], None, heads[rooms[0]]), (rooms[1], heads[rooms[1]] - 2, heads[rooms[1]]),
         (rooms[2], None, heads[rooms[2]] - 1)], limit=3, flt=TimelineFilter(), device=(ALICE, "DEV"))
    bodies = {r: [t.event.pdu.content.get("body", t.event.pdu.type) for t in rows] for r, rows in pages.items()}
    assert bodies == {rooms[0]: ["0-3", "0-2", "0-1"], rooms[1]: ["1-3", "1-2"], rooms[2]: ["2-2", "2-1", "2-0"]}
    assert [t.txn_id for t in pages[rooms[0]]] == ["txn-0", None, None]
    only_members = await sync.get_timeline_pages([(r, None, heads[r]) for r in rooms], limit=5,
                                                 flt=TimelineFilter(types=("m.room.member",)), device=(ALICE, "DEV"))
    assert {r: [t.event.pdu.type for t in rows] for r, rows in only_members.items()} == {
        r: ["m.room.member"] for r in rooms}
    assert await sync.get_timeline_pages([], limit=5, flt=TimelineFilter(), device=(ALICE, "DEV")) == {}


async def test_timeline_reads_reparse_changed_json(database):
    """Timeline reads keep events parsed, but one whose stored JSON changed (an expired
    message pruned) is read anew."""
    state = StateStore(database)
    events = EventStore(database, state)
    sync = SyncStore(database, events)
    chain = Chain()
    create, _, _ = await new_room(events, chain)
    room = await events.get_room(create.room_id)
    msg = chain.make("m.room.message", {"body": "secret"})
    await events.persist_events(create.room_id, [write(msg)], state_before=await state.get_state(room.current_state_group),
                                expected_head=room.head_stream_ordering, received_ts=1)
    head = (await events.get_room(create.room_id)).head_stream_ordering
    read = lambda: sync.get_timeline(create.room_id, after=None, upto=head, limit=1, flt=TimelineFilter(),  # noqa: E731
                                     device=(ALICE, "D"))
    first, again = await read(), await read()
    assert first[0].event.pdu.content == {"body": "secret"}
    assert again[0].event.pdu is first[0].event.pdu  # parsed once
    stored = await events.get_event(msg.event_id)
    pruned = dict(stored.pdu.get_pdu_json(), content={}, event_id=msg.event_id)
    await database.execute("UPDATE events SET json = $2 WHERE event_id = $1", msg.event_id,
                           encode_canonical_json(pruned).decode())
    assert (await read())[0].event.pdu.content == {}

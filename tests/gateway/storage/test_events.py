"""The event store and state store, on both engines."""

from __future__ import annotations

import pytest

from federation.events import PDU, build_event
from federation.room_versions import RoomVersions
from federation.signing import generate_signing_key, sign_event
from gateway.storage import state as state_module
from gateway.storage.events import EventStore, EventWrite, RoomExistsError, StaleHeadError
from gateway.storage.state import StateStore

KEY = generate_signing_key("k1")
ALICE = "@alice:hs.test"
BOB = "@bob:hs.test"


class Chain:
    """Builds a linear chain of signed events for one room (no auth checks: storage only)."""

    def __init__(self, rv=RoomVersions.V12):
        self.rv = rv
        self.room_id: str | None = None if rv.room_id_from_create_event else "!room:hs.test"
        self.prev: list[str] = []
        self.depth = 0
        self.ts = 1000

    def make(self, type: str, content: dict, state_key: str | None = None, sender: str = ALICE, redacts=None) -> PDU:
        self.depth += 1
        self.ts += 1
        pdu_json = build_event(self.rv, type=type, sender=sender, room_id=self.room_id, content=content,
                               prev_event_ids=self.prev, auth_event_ids=[], depth=self.depth,
                               origin_server_ts=self.ts, state_key=state_key, redacts=redacts)
        pdu = PDU.from_pdu_json(sign_event(pdu_json, "hs.test", KEY, room_version=self.rv), self.rv)
        self.room_id = pdu.room_id
        self.prev = [pdu.event_id]
        return pdu


def write(pdu: PDU, **kw) -> EventWrite:
    delta = {(pdu.type, pdu.state_key): pdu.event_id} if pdu.state_key is not None else {}
    return EventWrite(pdu, state_delta=delta, **kw)


async def new_room(store: EventStore, chain: Chain):
    create = chain.make("m.room.create", {"room_version": chain.rv.identifier}, "")
    join = chain.make("m.room.member", {"membership": "join", "displayname": "Alice"}, ALICE)
    result = await store.create_room_and_persist(
        room_id=create.room_id, room_version=chain.rv, creator=ALICE, created_ts=5, is_public=False,
        writes=[write(create), write(join)],
    )
    return create, join, result


@pytest.fixture
def stores(database):
    state = StateStore(database)
    return EventStore(database, state), state


async def test_create_room_persists_events_state_and_memberships(stores):
    store, state = stores
    chain = Chain()
    create, join, result = await new_room(store, chain)
    assert result.stream_orderings == [1, 2]
    room = await store.get_room(create.room_id)
    assert room is not None and room.room_version is RoomVersions.V12 and room.creator == ALICE
    assert room.head_stream_ordering == 2 and room.current_state_group == result.state_after.group

    got = await store.get_event(join.event_id)
    assert got is not None and got.pdu.get_pdu_json() == join.get_pdu_json()
    assert got.pdu.event_id == join.event_id and got.stream_ordering == 2 and not got.outlier
    assert await store.get_forward_extremities(create.room_id) == [join.event_id]
    assert await store.get_prev_event_ids(join.event_id) == [create.event_id]
    assert await store.get_current_position() == 2

    current = await state.get_current_state_ids(create.room_id)
    assert current == {("m.room.create", ""): create.event_id, ("m.room.member", ALICE): join.event_id}
    snap = await StateStore(store.db).get_state(room.current_state_group)  # fresh cache: from the database
    assert dict(snap.state) == current
    assert await state.get_rooms_for_user(ALICE) == [create.room_id]
    member = await state.get_membership(create.room_id, ALICE)
    assert member is not None and member.membership == "join" and member.displayname == "Alice"

    with pytest.raises(RoomExistsError):
        await store.create_room_and_persist(
            room_id=create.room_id, room_version=chain.rv, creator=ALICE, created_ts=5, is_public=False,
            writes=[write(create)])


async def test_persist_messages_and_stale_head(stores):
    store, state = stores
    chain = Chain(RoomVersions.V11)
    create, join, _ = await new_room(store, chain)
    room = await store.get_room(create.room_id)
    before = await state.get_state(room.current_state_group)
    msg = chain.make("m.room.message", {"body": "hi", "msgtype": "m.text"})
    res = await store.persist_events(create.room_id, [write(msg, txn=(ALICE, "DEV", "t1"))],
                                     state_before=before, expected_head=room.head_stream_ordering, received_ts=9)
    assert res.stream_orderings == [3]
    assert res.state_after.group == before.group  # a message does not change state
    assert (await store.get_event(msg.event_id)).state_group == before.group
    assert await store.get_txn_event_id(ALICE, "DEV", "t1") == msg.event_id
    assert await store.get_txn_ids_for_events([msg.event_id]) == {msg.event_id: (ALICE, "DEV", "t1")}
    assert await store.get_forward_extremities(create.room_id) == [msg.event_id]

    # A second writer that read the old head must not extend it: nothing is written.
    other = chain.make("m.room.message", {"body": "fork", "msgtype": "m.text"})
    with pytest.raises(StaleHeadError):
        await store.persist_events(create.room_id, [write(other)], state_before=before,
                                   expected_head=room.head_stream_ordering, received_ts=9)
    assert await store.get_event(other.event_id) is None
    assert await store.get_forward_extremities(create.room_id) == [msg.event_id]
    assert await store.get_current_position() == 3


async def test_room_events_pagination_and_filters(stores):
    store, state = stores
    chain = Chain()
    create, join, _ = await new_room(store, chain)
    room = await store.get_room(create.room_id)
    before = await state.get_state(room.current_state_group)
    msgs = [chain.make("m.room.message", {"body": str(i), "msgtype": "m.text"}) for i in range(5)]
    await store.persist_events(create.room_id, [write(m) for m in msgs], state_before=before,
                               expected_head=room.head_stream_ordering, received_ts=1)
    back = await store.get_room_events(create.room_id, from_pos=None, backwards=True, limit=3)
    assert [e.pdu.content["body"] for e in back] == ["4", "3", "2"]
    assert [e.stream_ordering for e in back] == [7, 6, 5]
    fwd = await store.get_room_events(create.room_id, from_pos=2, backwards=False, limit=10, to_pos=4)
    assert [e.pdu.event_id for e in fwd] == [msgs[0].event_id, msgs[1].event_id]
    only_state = await store.get_room_events(create.room_id, from_pos=None, backwards=False, limit=10,
                                             not_types=["m.room.message"])
    assert [e.pdu.type for e in only_state] == ["m.room.create", "m.room.member"]
    assert await store.get_room_events(create.room_id, from_pos=None, backwards=True, limit=10,
                                       senders=[BOB]) == []


async def test_topological_order_tokens_and_backward_extremities(stores):
    """Pages by (depth, stream position), whatever order the events came in; a stream
    position stands before every event after it; missing prev events are the room's
    backward extremities, found by their children's depth."""
    store, state = stores
    chain = Chain()
    create, join, _ = await new_room(store, chain)
    room = await store.get_room(create.room_id)
    before = await state.get_state(room.current_state_group)
    a, b, c = (chain.make("m.room.message", {"body": x, "msgtype": "m.text"}) for x in "abc")
    # c (depth 5) comes before b (depth 4): positions a=3, c=4, b=5.
    for pdu in (a, c, b):
        room = await store.get_room(create.room_id)
        await store.persist_events(create.room_id, [write(pdu)], state_before=before,
                                   expected_head=room.head_stream_ordering, received_ts=1)

    async def bodies(**kw):
        return [e.pdu.content.get("body", e.pdu.type) for e in
                await store.get_room_events_topological(create.room_id, limit=10, **kw)]

    assert await bodies(from_key=None, backwards=True) == ["c", "b", "a", "m.room.member", "m.room.create"]
    assert await bodies(from_key=None, backwards=False) == ["m.room.create", "m.room.member", "a", "b", "c"]
    assert await bodies(from_key=(4, 5), backwards=True) == ["b", "a", "m.room.member", "m.room.create"]
    assert await bodies(from_key=(4, 4), backwards=True) == ["a", "m.room.member", "m.room.create"]
    assert await bodies(from_key=(3, 3), backwards=False, to_key=(4, 5)) == ["b"]
    assert await bodies(from_key=(5, 5), backwards=True, types=["m.room.member"]) == ["m.room.member"]
    # s3: before b and c (the events after position 3); s5: after everything.
    assert await store.get_topological_key(create.room_id, 3) == (4, 3)
    assert await bodies(from_key=(4, 3), backwards=True) == ["a", "m.room.member", "m.room.create"]
    assert await store.get_topological_key(create.room_id, 5) == (5, 5)

    assert await store.get_backward_extremities(create.room_id) == []
    chain.prev = [b.event_id, "$missing"]
    d = chain.make("m.room.message", {"body": "d", "msgtype": "m.text"})
    room = await store.get_room(create.room_id)
    await store.persist_events(create.room_id, [write(d)], state_before=before,
                               expected_head=room.head_stream_ordering, received_ts=1)
    assert await store.get_backward_extremities(create.room_id) == ["$missing"]
    assert await store.get_backward_extremities(create.room_id, max_depth=6, min_depth=6) == ["$missing"]
    assert await store.get_backward_extremities(create.room_id, max_depth=5) == []
    assert await store.get_backward_extremities(create.room_id, oldest=True, scan=3) == []


async def test_state_groups_are_deltas_with_a_bounded_chain(stores, monkeypatch):
    monkeypatch.setattr(state_module, "MAX_DELTA_CHAIN", 3)
    store, state = stores
    chain = Chain()
    create, join, result = await new_room(store, chain)
    current = result.state_after
    expected = dict(current.state)
    head = (await store.get_room(create.room_id)).head_stream_ordering
    depths = []
    for i in range(7):
        ev = chain.make("m.room.topic", {"topic": f"t{i}"}, "")
        res = await store.persist_events(create.room_id, [write(ev)], state_before=current,
                                         expected_head=head, received_ts=1)
        head, current = res.stream_orderings[-1], res.state_after
        expected[("m.room.topic", "")] = ev.event_id
        depths.append(current.delta_depth)
        fresh = await StateStore(store.db).get_state(current.group)
        assert dict(fresh.state) == expected
    assert max(depths) < 3 and 0 in depths  # full snapshots keep the chain short
    rows = await store.db.fetch("SELECT COUNT(*) FROM state_group_entries WHERE state_group = $1", current.group)
    assert rows[0][0] <= len(expected)
    deltas = await store.db.fetch(
        "SELECT event_id, prev_event_id FROM current_state_deltas WHERE type = 'm.room.topic' ORDER BY stream_ordering")
    assert len(deltas) == 7 and deltas[0][1] is None and deltas[1][1] == deltas[0][0]
    topic = await store.get_event(expected[("m.room.topic", "")])
    assert topic.replaces_state == deltas[-1][1]


async def test_a_batch_builds_its_state_in_memory_and_writes_it_with_its_events(stores):
    """EventBatch: each event's state is built in memory (state groups with reserved
    IDs, readable by the next event of the batch before anything is written); a stale
    head writes nothing, not even the groups; the write stores the events at
    consecutive positions with their groups, the current state and each change at its
    own event's position."""
    from gateway.storage.event_batch import EventBatch

    store, state = stores
    chain = Chain()
    create, join, result = await new_room(store, chain)
    room_id = create.room_id
    room = await store.get_room(room_id)
    batch = EventBatch(state, room_id, head=room.head_stream_ordering, current=result.state_after,
                       extremities=[join.event_id])
    topic = chain.make("m.room.topic", {"topic": "first"}, "")
    msg = chain.make("m.room.message", {"body": "hi", "msgtype": "m.text"})
    bob = chain.make("m.room.member", {"membership": "join", "displayname": "Bob"}, BOB, sender=BOB)
    events = [await batch.add(p, before=batch.current) for p in (topic, msg, bob)]
    groups = [e.state_after.group for e in events]
    assert groups[0] == groups[1] != groups[2] and batch.current.group == groups[2]
    assert batch.snapshot(groups[0]).state[("m.room.topic", "")] == topic.event_id
    assert dict(batch.snapshot(groups[2]).state) == {**result.state_after.state, ("m.room.topic", ""): topic.event_id,
                                                     ("m.room.member", BOB): bob.event_id}
    assert batch.extremities == {bob.event_id}
    assert [e.current_state_changes for e in events] == [
        {("m.room.topic", ""): topic.event_id}, {}, {("m.room.member", BOB): bob.event_id}]

    async def groups_stored() -> int:
        return await store.db.fetchval(
            f"SELECT COUNT(*) FROM state_groups WHERE state_group IN ({', '.join(str(g) for g in groups)})")

    assert await groups_stored() == 0
    batch.head -= 1  # as if another writer had moved the room on
    with pytest.raises(StaleHeadError):
        await store.persist_batch(batch, received_ts=3)
    assert await groups_stored() == 0 and await store.get_event(topic.event_id) is None
    batch.head += 1
    positions = await store.persist_batch(batch, received_ts=3)
    assert positions == [room.head_stream_ordering + i for i in (1, 2, 3)]
    assert await groups_stored() == 2
    fresh = StateStore(store.db)
    assert dict((await fresh.get_state(groups[2])).state) == dict(batch.current.state)
    assert (await store.get_event(msg.event_id)).state_group == groups[0]
    assert await store.get_forward_extremities(room_id) == [bob.event_id]
    assert await state.get_current_state_ids(room_id) == dict(batch.current.state)
    assert (await store.get_room(room_id)).current_state_group == groups[2]
    member = await state.get_membership(room_id, BOB)
    assert (member.displayname, member.stream_ordering) == ("Bob", positions[2])
    deltas = await store.db.fetch(
        "SELECT stream_ordering, type, event_id FROM current_state_deltas WHERE room_id = $1 AND stream_ordering > $2"
        " ORDER BY stream_ordering", room_id, room.head_stream_ordering)
    assert [tuple(r) for r in deltas] == [(positions[0], "m.room.topic", topic.event_id),
                                          (positions[2], "m.room.member", bob.event_id)]


async def test_state_group_ids_reserved_by_two_processes_never_meet(database):
    """Each process reserves group IDs a block at a time from the shared counter."""
    first, second = StateStore(database), StateStore(database)
    empty = state_module.EMPTY_STATE
    ids = []
    for store in (first, second, first, second):
        for _ in range(3):
            g = await store.plan_state_group(room_id="!r:x", event_id=None, prev=empty, state={}, delta={})
            ids.append(g.snapshot.group)
    assert len(set(ids)) == len(ids)
    # And groups written in a transaction the old way take none of them.
    async with database.transaction() as txn:
        snap = await first.store_state_group(txn, room_id="!r:x", event_id=None, prev=empty, state={}, delta={})
    assert snap.group not in ids


async def test_redactions_in_a_v10_room(stores):
    store, state = stores
    chain = Chain(RoomVersions.V10)
    create, join, _ = await new_room(store, chain)
    room = await store.get_room(create.room_id)
    before = await state.get_state(room.current_state_group)
    msg = chain.make("m.room.message", {"body": "oops", "msgtype": "m.text"})
    red = chain.make("m.room.redaction", {}, redacts=msg.event_id)
    await store.persist_events(create.room_id, [write(msg), write(red, redaction_applies_to=msg.event_id)],
                               state_before=before, expected_head=room.head_stream_ordering, received_ts=1)
    assert await store.get_redactions_for([msg.event_id, red.event_id]) == {msg.event_id: red.event_id}
    assert (await store.get_event(red.event_id)).pdu.redacts == msg.event_id


async def test_outliers_in_bulk_and_when_another_writer_stored_some_meanwhile(stores, monkeypatch):
    """Outliers take backfill positions and no state; a batch bigger than one write
    chunk goes in whole; events stored by someone else between our check and our write
    (a COPY conflict on PostgreSQL) are skipped, not duplicated or lost."""
    from gateway.storage import events as events_module

    store, _ = stores
    monkeypatch.setattr(events_module, "_WRITE_CHUNK", 3)
    chain = Chain()
    pdus = [chain.make("m.room.create", {"room_version": "12"}, "")]
    pdus += [chain.make("m.room.member", {"membership": "join"}, f"@u{i}:hs.test", sender=f"@u{i}:hs.test")
             for i in range(9)]
    room_id = pdus[0].room_id
    await store.ensure_room(room_id, chain.rv, creator=ALICE, created_ts=0)
    first = await store.persist_outliers(room_id, [(p, None) for p in pdus[:4]], received_ts=7)
    assert first == [p.event_id for p in pdus[:4]]
    # The next batch overlaps the first; our check misses that (as if the other writer
    # stored them after we looked).
    real_meta = store.get_event_meta

    async def blind(ids):
        return {}

    monkeypatch.setattr(store, "get_event_meta", blind)
    rest = await store.persist_outliers(room_id, [(p, "rejected: test" if i == 8 else None)
                                                  for i, p in enumerate(pdus)], received_ts=8)
    assert set(rest) >= {p.event_id for p in pdus[4:]}
    monkeypatch.setattr(store, "get_event_meta", real_meta)
    metas = await store.get_event_meta([p.event_id for p in pdus])
    assert len(metas) == len(pdus)
    assert all(m.outlier and m.state_group is None and m.stream_ordering < 0 for m in metas.values())
    assert len({m.stream_ordering for m in metas.values()}) == len(pdus)
    assert metas[pdus[8].event_id].rejected_reason == "rejected: test"
    assert metas[pdus[0].event_id].rejected_reason is None
    assert await store.get_room_events(room_id, from_pos=None, backwards=True, limit=50) == []


async def test_has_joined_member_of_matches_the_server_exactly(database):
    state = StateStore(database)
    rows = [("!r:x", "@a:my_host.test", "join"), ("!r:x", "@b:other.test", "join"),
            ("!r:x", "@c:myXhost.test", "join"), ("!r:x", "@d:left.test", "leave"),
            ("!q:x", "@e:100%.test", "join")]
    await database.executemany(
        "INSERT INTO room_memberships (room_id, user_id, membership, event_id, sender, stream_ordering)"
        " VALUES ($1, $2, $3, '$e', $2, 1)", rows)
    assert await state.has_joined_member_of("!r:x", "my_host.test")
    assert await state.has_joined_member_of("!r:x", "other.test")
    assert not await state.has_joined_member_of("!r:x", "left.test")  # left: not joined
    assert not await state.has_joined_member_of("!r:x", "host.test")  # a suffix of another name
    assert not await state.has_joined_member_of("!r:x", "my%.test")  # LIKE wildcards are literal
    assert not await state.has_joined_member_of("!r:x", "my__ost.test")
    assert await state.has_joined_member_of("!q:x", "100%.test") and not await state.has_joined_member_of("!r:x", "100%.test")


async def test_every_read_of_an_event_shares_one_parsed_pdu_within_the_bound(database):
    """One bounded cache of parsed events (``EventStore._parsed``) serves lookups by ID,
    room pages and /sync's timelines: the same unchanged row gives the same PDU object,
    a changed row (pruned JSON) is parsed again, and no more than the bound are kept."""
    from gateway.storage.sync import SyncStore, TimelineFilter

    state = StateStore(database)
    store = EventStore(database, state, parsed_events=3)
    sync = SyncStore(database, store)
    chain = Chain()
    create, join, _ = await new_room(store, chain)
    room = await store.get_room(create.room_id)
    before = await state.get_state(room.current_state_group)
    msgs = [chain.make("m.room.message", {"body": str(i), "msgtype": "m.text"}) for i in range(4)]
    await store.persist_events(create.room_id, [write(m) for m in msgs], state_before=before,
                               expected_head=room.head_stream_ordering, received_ts=1)
    last = msgs[-1].event_id

    by_id = (await store.get_event(last)).pdu
    page = await store.get_room_events(create.room_id, from_pos=None, backwards=True, limit=1)
    timeline = await sync.get_timeline(create.room_id, after=None, upto=10**6, limit=1, flt=TimelineFilter(),
                                       device=(ALICE, "DEV"))
    pages = await sync.get_timeline_pages([(create.room_id, None, 10**6)], limit=1, flt=TimelineFilter(),
                                          device=(ALICE, "DEV"))
    assert page[0].pdu is by_id and timeline[0].event.pdu is by_id
    assert pages[create.room_id][0].event.pdu is by_id
    assert by_id.get_pdu_json() == msgs[-1].get_pdu_json()

    # The bound: reading every event of the room keeps only the last three read.
    everything = await store.get_room_events(create.room_id, from_pos=None, backwards=False, limit=100)
    assert len(everything) == 6 and len(store._parsed) == 3
    assert list(store._parsed) == [e.pdu.event_id for e in everything[-3:]]
    oldest = everything[0].pdu
    assert (await store.get_event(oldest.event_id)).pdu is not oldest  # dropped, parsed again

    # A changed row (an expired message's pruned content) is parsed again, not served stale.
    await database.execute("UPDATE events SET json = $2 WHERE event_id = $1", last,
                           (await database.fetchval("SELECT json FROM events WHERE event_id = $1", last))
                           .replace('"body":"3"', '"body":"3!"'))
    again = (await store.get_event(last)).pdu
    assert again is not by_id and again.content["body"] == "3!"
    assert (await store.get_event(last)).pdu is again


async def test_events_just_written_are_read_as_the_pdus_written(stores):
    """A batch's PDUs join the parsed events: the /syncs a write wakes read them, not a
    copy each; what they read is what parsing the row gives."""
    store, state = stores
    chain = Chain()
    create, join, _ = await new_room(store, chain)
    room = await store.get_room(create.room_id)
    before = await state.get_state(room.current_state_group)
    msg = chain.make("m.room.message", {"body": "fresh", "msgtype": "m.text"})
    await store.persist_events(create.room_id, [write(msg)], state_before=before,
                               expected_head=room.head_stream_ordering, received_ts=1)
    got = (await store.get_event(msg.event_id)).pdu
    assert got is msg
    store._parsed.clear()
    parsed = (await store.get_event(msg.event_id)).pdu
    assert parsed is not msg and parsed.get_pdu_json() == msg.get_pdu_json() and parsed.event_id == msg.event_id

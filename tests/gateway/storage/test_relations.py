"""The relations store on both engines: rows written by every event write path, the
rules for which children count, the queries behind /relations, bundles and /threads,
and the migration's backfill of relations from events stored before the table."""

from __future__ import annotations

import pytest

from gateway.storage.database import split_sql_script
from gateway.storage.event_batch import EventBatch
from gateway.storage.migrations import load_migrations
from gateway.storage.relations import RelationStore

from .test_events import ALICE, BOB, Chain, new_room, stores, write  # noqa: F401 (fixture)


def rel(rel_type: str, parent: str, **extra) -> dict:
    return {"body": "x", "m.relates_to": {"rel_type": rel_type, "event_id": parent, **extra}}


async def _append(store, state, room_id, pdus, **kw):
    room = await store.get_room(room_id)
    before = await state.get_state(room.current_state_group)
    return await store.persist_events(room_id, [write(p, **kw) for p in pdus], state_before=before,
                                      expected_head=room.head_stream_ordering, received_ts=1)


async def _rows(db) -> set[tuple]:
    rows = await db.fetch("SELECT event_id, relates_to_id, rel_type, room_id, type, sender, aggregation_key"
                          " FROM event_relations")
    return {tuple(r) for r in rows}


async def test_children_that_count(stores, database):
    store, state = stores
    relations = RelationStore(database, store)
    chain = Chain()
    create, join, _ = await new_room(store, chain)
    room_id = create.room_id
    root = chain.make("m.room.message", {"body": "root"})
    replies = [chain.make("m.room.message", rel("m.thread", root.event_id)) for _ in range(3)]
    edit = chain.make("m.room.message", {**rel("m.replace", root.event_id), "m.new_content": {"body": "new"}})
    thumbs = chain.make("m.reaction", rel("m.annotation", root.event_id, key="👍"))
    nested = chain.make("m.reaction", rel("m.annotation", replies[0].event_id, key="🎉"), sender=BOB)
    await _append(store, state, room_id, [root, *replies, edit, thumbs, nested])
    # A rejected event writes no row.
    rejected = chain.make("m.room.message", rel("m.thread", root.event_id))
    await _append(store, state, room_id, [rejected], rejected_reason="test")
    assert (rejected.event_id, root.event_id) not in {r[:2] for r in await _rows(database)}
    assert (thumbs.event_id, root.event_id, "m.annotation", room_id, "m.reaction", ALICE, "👍") \
        in await _rows(database)

    children = await relations.get_children(room_id, root.event_id, limit=10)
    assert [e.event_id for e in children] == [thumbs.event_id, edit.event_id, *reversed([r.event_id for r in replies])]
    only = await relations.get_children(room_id, root.event_id, rel_type="m.thread", limit=2, backwards=False)
    assert [e.event_id for e in only] == [replies[0].event_id, replies[1].event_id]
    later = await relations.get_children(room_id, root.event_id, rel_type="m.thread", limit=5, backwards=False,
                                         from_pos=only[-1].stream_ordering)
    assert [e.event_id for e in later] == [replies[2].event_id]
    deep = await relations.get_children(room_id, root.event_id, limit=10, depth=3)
    assert nested.event_id in {e.event_id for e in deep}
    assert await relations.get_children(room_id, root.event_id, limit=10, depth=3, not_senders=[ALICE]) == []
    assert await relations.get_children("!other:hs.test", root.event_id, limit=10) == []

    summaries = await relations.get_thread_summaries([root.event_id], BOB)
    summary = summaries[root.event_id]
    assert (summary.room_id, summary.count, summary.participated) == (room_id, 3, False)
    assert summary.latest_position == (await store.get_event(replies[2].event_id)).stream_ordering
    assert [c.event_id for c in await relations.get_edit_candidates([root.event_id])] == [edit.event_id]
    assert await relations.has_annotation(root.event_id, ALICE, "m.reaction", "👍")
    assert not await relations.has_annotation(root.event_id, BOB, "m.reaction", "👍")
    assert await relations.get_thread_roots(room_id, limit=5) == [(root.event_id, summary.latest_position)]
    assert await relations.get_thread_roots(room_id, limit=5, participant=BOB) == []
    assert await relations.get_thread_roots(room_id, limit=5, before=summary.latest_position) == []

    # A redaction breaks the relationship; a soft-failed child never counts.
    redaction = chain.make("m.room.redaction", {}, redacts=replies[2].event_id)
    await _append(store, state, room_id, [redaction], redaction_applies_to=replies[2].event_id)
    summary = (await relations.get_thread_summaries([root.event_id], BOB))[root.event_id]
    assert summary.count == 2
    assert summary.latest_position == (await store.get_event(replies[1].event_id)).stream_ordering
    assert await relations.get_thread_roots(room_id, limit=5) == [(root.event_id, summary.latest_position)]
    room = await store.get_room(room_id)
    current = await state.get_state(room.current_state_group)
    soft = chain.make("m.room.message", rel("m.thread", root.event_id), sender=BOB)
    received = chain.make("m.room.message", rel("m.thread", root.event_id), sender=BOB)
    batch = EventBatch(state, room_id, head=room.head_stream_ordering, current=current)
    await batch.add(soft, before=current, soft_failed=True)
    await batch.add(received, before=current)
    await store.persist_batch(batch, received_ts=2)
    summary = (await relations.get_thread_summaries([root.event_id], BOB))[root.event_id]
    assert (summary.count, summary.participated) == (3, True)
    assert await relations.get_thread_roots(room_id, limit=5, participant=BOB) == [
        (root.event_id, (await store.get_event(received.event_id)).stream_ordering)]


async def test_outliers_count_once_backfilled(stores, database):
    store, state = stores
    relations = RelationStore(database, store)
    chain = Chain()
    create, join, _ = await new_room(store, chain)
    root = chain.make("m.room.message", {"body": "root"})
    await _append(store, state, create.room_id, [root])
    reference = chain.make("m.room.message", rel("m.reference", root.event_id), sender=BOB)
    await store.persist_outliers(create.room_id, [(reference, None)], received_ts=3)
    assert await relations.get_references([root.event_id]) == []
    # Backfill turns the outlier into a timeline event in place (its row is already there).
    await database.execute("UPDATE events SET outlier = FALSE WHERE event_id = $1", reference.event_id)
    assert await relations.get_references([root.event_id]) == [(root.event_id, reference.event_id, create.room_id)]


async def test_migration_backfills_relations_of_stored_events(stores, database):
    store, state = stores
    chain = Chain()
    create, join, _ = await new_room(store, chain)
    root = chain.make("m.room.message", {"body": "root"})
    good = [
        chain.make("m.room.message", rel("m.thread", root.event_id)),
        chain.make("m.reaction", rel("m.annotation", root.event_id, key="👍")),
        chain.make("m.reaction", rel("m.annotation", root.event_id, key=7)),  # key is no string: no key
        chain.make("m.room.message", rel("org.example.custom", root.event_id)),
        chain.make("m.room.message", rel("m.reference", root.event_id, key="a key only annotations keep")),
    ]
    odd = [
        chain.make("m.room.message", rel("m.thread", "$with\x00nul")),
        chain.make("m.room.message", rel("m.thread\x00", root.event_id)),
        chain.make("m.room.message", rel("m.thread", "no-sigil")),
        chain.make("m.room.message", rel("m.thread", 42)),
        chain.make("m.room.message", rel("", root.event_id)),
        chain.make("m.room.message", rel("m.reference", "$" + "x" * 300)),
        chain.make("m.room.message", {"body": "x", "m.relates_to": "nonsense"}),
        chain.make("m.room.message", {"body": "x", "m.relates_to": {"m.in_reply_to": {"event_id": "$r"}}}),
        chain.make("m.room.message", {"body": "m.relates_to in the body only"}),
    ]
    await _append(store, state, create.room_id, [root, *good, *odd])
    written = await _rows(database)
    assert {r[0] for r in written} == {p.event_id for p in good}
    assert {r[0]: r[6] for r in written}[good[2].event_id] is None
    assert {r[0]: r[6] for r in written}[good[4].event_id] is None

    # The migration's INSERT, run on the same events, finds exactly the same rows.
    (migration,) = [m for m in load_migrations(database.engine) if m.name == "event_relations_backfill"]
    (backfill,) = [s for s in split_sql_script(migration.sql) if s.lstrip().startswith("INSERT")]
    await database.execute("DELETE FROM event_relations")
    await database.execute(backfill)
    assert await _rows(database) == written


async def test_threads_follow_replies_and_redactions(stores, database):
    store, state = stores
    relations = RelationStore(database, store)
    chain = Chain()
    create, join, _ = await new_room(store, chain)
    room_id = create.room_id
    roots = [chain.make("m.room.message", {"body": f"root {i}"}) for i in range(3)]
    await _append(store, state, room_id, roots)
    lone = chain.make("m.room.message", rel("m.thread", roots[0].event_id))
    busy = [chain.make("m.room.message", rel("m.thread", roots[1].event_id)) for _ in range(2)]
    elsewhere = chain.make("m.room.message", rel("m.thread", "$a-root-in-another-room"))
    result = await _append(store, state, room_id, [lone, *busy, elsewhere])
    pos = dict(zip([e.event_id for e in (lone, *busy, elsewhere)], result.stream_orderings))
    assert await relations.get_thread_roots(room_id, limit=10) == [
        (roots[1].event_id, pos[busy[1].event_id]), (roots[0].event_id, pos[lone.event_id])]
    # Pages continue after the last thread.
    assert await relations.get_thread_roots(room_id, limit=10, before=pos[busy[1].event_id]) \
        == [(roots[0].event_id, pos[lone.event_id])]
    # Redacting the newest reply moves the thread back; redacting the only one ends it.
    for target in (busy[1], lone):
        redaction = chain.make("m.room.redaction", {}, redacts=target.event_id)
        await _append(store, state, room_id, [redaction], redaction_applies_to=target.event_id)
    assert await relations.get_thread_roots(room_id, limit=10) == [(roots[1].event_id, pos[busy[0].event_id])]
    # Replies to events that are no roots here (unknown, of another room) are passed over,
    # however many come first.
    strays = [chain.make("m.room.message", rel("m.thread", f"$stray{i}")) for i in range(15)]
    await _append(store, state, room_id, strays)
    assert await relations.get_thread_roots(room_id, limit=1) == [(roots[1].event_id, pos[busy[0].event_id])]

    # The migration computes the same table from the stored events.
    kept = await database.fetch("SELECT room_id, root_id, latest_position FROM threads ORDER BY root_id")
    (migration,) = [m for m in load_migrations(database.engine) if m.name == "threads"]
    (fill,) = [s for s in split_sql_script(migration.sql) if s.lstrip().startswith("INSERT")]
    await database.execute("DELETE FROM threads")
    await database.execute(fill)
    assert [tuple(r) for r in await database.fetch(
        "SELECT room_id, root_id, latest_position FROM threads ORDER BY root_id")] == [tuple(r) for r in kept]

"""The full-text search index, on both engines: what is indexed when events are stored,
redactions taking events out, the query syntax (never the engine's), ranking, recent
order and its pagination, highlights, and the migration indexing stored messages."""

from __future__ import annotations

from federation.room_versions import RoomVersions
from gateway.storage.database import split_sql_script
from gateway.storage.migrations import load_migrations
from gateway.storage.room_admin import RoomAdminStore
from gateway.storage.search import (
    RoomScope,
    SearchQuery,
    SearchStore,
    Term,
    fts5_match,
    parse_search_term,
    room_token,
    searchable_text,
)
from tests.gateway.storage.test_events import ALICE, BOB, Chain, new_room, stores, write  # noqa: F401

KEYS = ("content.body", "content.name", "content.topic")


def msg(chain: Chain, body, sender=ALICE, **extra):
    return chain.make("m.room.message", {"msgtype": "m.text", "body": body, **extra}, sender=sender)


async def room_with(store, chain: Chain):
    """A new room (create, Alice's join) on ``chain``: its ID and the persist result."""
    create, _join, result = await new_room(store, chain)
    return create.room_id, result


async def append(store, room_id, pdus):
    room = await store.get_room(room_id)
    snap = await store.state.get_state(room.current_state_group)
    return await store.persist_events(room_id, [write(p) for p in pdus], state_before=snap,
                                      expected_head=room.head_stream_ordering, received_ts=1)


async def find(search: SearchStore, room_id: str, term: str, *, order="recent", keys=KEYS, **kw):
    query = parse_search_term(term)
    if query is None:
        return []
    hits = await search.search(query, scopes=[RoomScope(room_id)], keys=keys, order=order, limit=50, **kw)
    return hits


# --- pure parts --------------------------------------------------------------------


def test_search_term_parsing():
    q = parse_search_term('martians and "little green men" -invaders or -x OR  ')
    assert q == SearchQuery(groups=((Term("martians"),), (Term("little green men"),)),
                            excluded=(Term("invaders", True), Term("x", True)))
    q = parse_search_term("cats or dogs fish")
    assert q.groups == ((Term("cats"), Term("dogs")), (Term("fish"),))
    # Nothing the tokenizers keep, or only exclusions: no query at all.
    assert parse_search_term("") is None
    assert parse_search_term('!!! "" ___ ()') is None
    assert parse_search_term("-spam") is None
    # Unbalanced quotes: the phrase runs to the end.
    assert parse_search_term('"open phrase').groups == ((Term("open phrase"),),)


def test_fts5_expression_quotes_every_term():
    q = parse_search_term('a"b NEAR(x) c* "d "" e" -f^')
    expr = fts5_match(q)
    # Every term is one FTS5 string literal (quotes doubled): operators stay data.
    assert expr == 'value : ((("a""b") AND ("NEAR(x)") AND ("c*") AND ("d ") AND (" e")) NOT "f^")'
    # Rooms are named by their tokens in the room column.
    assert fts5_match(parse_search_term("x"), ["!a:b"]) == 'value : (("x")) AND room : ("r21613a620")'


def test_searchable_text_by_type():
    chain = Chain(RoomVersions.V10)
    assert searchable_text(msg(chain, "hello")) == ("content.body", "hello")
    assert searchable_text(msg(chain, 5)) is None
    assert searchable_text(chain.make("m.room.name", {"name": "Lobby"}, "")) == ("content.name", "Lobby")
    topic = chain.make("m.room.topic", {"topic": "plain words", "m.topic": {"m.text": [
        {"mimetype": "text/html", "body": "<b>html</b>"}, {"body": "plain words"},
        {"mimetype": "text/plain", "body": "other plain"}]}}, "")
    assert searchable_text(topic) == ("content.topic", "plain words other plain")
    assert searchable_text(chain.make("m.room.name", {"name": "x"}, "not-empty")) is None
    assert searchable_text(chain.make("m.room.encrypted", {"ciphertext": "zzz", "body": "no"})) is None
    assert searchable_text(msg(chain, "nul\x00 and \x02marks\x03")) == ("content.body", "nul and marks")


# --- on both engines -----------------------------------------------------------------


async def test_stored_events_are_searchable_redactions_are_not(stores):
    store, _ = stores
    search = SearchStore(store.db)
    chain = Chain()
    room_id, _ = await room_with(store, chain)
    m1 = msg(chain, "The quick brown fox jumps")
    m2 = msg(chain, "A lazy dog sleeps", sender=BOB)
    m3 = msg(chain, "Foxes are running quickly")
    name = chain.make("m.room.name", {"name": "Fox den"}, "")
    rejected = msg(chain, "fox rejected")
    await append(store, room_id, [m1, m2, m3, name])
    room = await store.get_room(room_id)
    snap = await store.state.get_state(room.current_state_group)
    await store.persist_events(room_id, [write(rejected, rejected_reason="auth")], state_before=snap,
                               expected_head=room.head_stream_ordering, received_ts=1)

    hits = await find(search, room_id, "fox")
    # Stemming: "fox" finds "Foxes"; newest first; the rejected event is not indexed.
    assert [h.event_id for h in hits] == [name.event_id, m3.event_id, m1.event_id]
    assert [h.event_id for h in await find(search, room_id, "fox", keys=["content.body"])] == \
        [m3.event_id, m1.event_id]
    assert [h.event_id for h in await find(search, room_id, "fox", senders=[BOB])] == []
    assert [h.event_id for h in await find(search, room_id, "dog", senders=[BOB])] == [m2.event_id]
    assert [h.event_id for h in await find(search, room_id, "dog", not_senders=[BOB])] == []
    assert [h.event_id for h in await find(search, room_id, "run fox")] == [m3.event_id]
    assert [h.event_id for h in await find(search, room_id, "fox -quick -run")] == [name.event_id]
    assert [h.event_id for h in await find(search, room_id, '"brown fox"')] == [m1.event_id]
    assert [h.event_id for h in await find(search, room_id, '"fox brown"')] == []
    assert {h.event_id for h in await find(search, room_id, "lazy or den")} == {m2.event_id, name.event_id}
    assert await search.count(parse_search_term("fox"), scopes=[RoomScope(room_id)], keys=KEYS) == 3
    # Other rooms' events stay out of a room's scope.
    other_chain = Chain()
    other_chain.ts = 50_000  # another create event: another room
    other_id, _ = await room_with(store, other_chain)
    await append(store, other_id, [msg(other_chain, "fox elsewhere")])
    assert len(await find(search, room_id, "fox")) == 3
    assert len(await find(search, other_id, "fox")) == 1
    both = [RoomScope(room_id), RoomScope(other_id)]
    assert await search.count(parse_search_term("fox"), scopes=both, keys=KEYS) == 4
    # A term that is a room's token in the room column matches no text.
    assert await find(search, room_id, room_token(room_id)) == []

    # A redaction takes the event out of the index.
    redaction = chain.make("m.room.redaction", {"redacts": m3.event_id}, redacts=m3.event_id)
    room = await store.get_room(room_id)
    snap = await store.state.get_state(room.current_state_group)
    await store.persist_events(room_id, [write(redaction, redaction_applies_to=m3.event_id)], state_before=snap,
                               expected_head=room.head_stream_ordering, received_ts=1)
    assert [h.event_id for h in await find(search, room_id, "fox")] == [name.event_id, m1.event_id]

    # Purging a room (admin API) empties its part of the index, and only that.
    await RoomAdminStore(store.db).purge_room(room_id)
    assert await find(search, room_id, "fox") == []
    assert len(await find(search, other_id, "fox")) == 1


async def test_ranges_limit_positions(stores):
    store, _ = stores
    search = SearchStore(store.db)
    chain = Chain()
    room_id, _ = await room_with(store, chain)
    pdus = [msg(chain, f"word number {i}") for i in range(6)]
    result = await append(store, room_id, pdus)
    pos = result.stream_orderings
    query = parse_search_term("word")
    scope = RoomScope(room_id, ((pos[1], pos[3]), (pos[5], None)))
    hits = await search.search(query, scopes=[scope], keys=KEYS, order="recent", limit=10)
    assert [h.stream_ordering for h in hits] == [pos[5], pos[2], pos[1]]
    assert await search.count(query, scopes=[scope], keys=KEYS) == 3
    assert await search.search(query, scopes=[RoomScope(room_id, ())], keys=KEYS, order="recent", limit=10) == []


async def test_rank_order_and_keyset_pagination(stores):
    store, _ = stores
    search = SearchStore(store.db)
    chain = Chain()
    room_id, _ = await room_with(store, chain)
    bodies = ["apple", "apple apple apple", "banana apple", "apple pie with apple", "apple", "cherry"]
    pdus = [msg(chain, b) for b in bodies]
    await append(store, room_id, pdus)
    query = parse_search_term("apple")
    everything = await search.search(query, scopes=[RoomScope(room_id)], keys=KEYS, order="rank", limit=10)
    assert len(everything) == 5
    ranks = [h.rank for h in everything]
    assert ranks == sorted(ranks, reverse=True) and ranks[0] > ranks[-1]
    assert everything[0].event_id == pdus[1].event_id  # three times in three words
    # Equal ranks ("apple" twice) come newest first.
    ids = [h.event_id for h in everything]
    assert everything[ids.index(pdus[4].event_id)].rank == everything[ids.index(pdus[0].event_id)].rank
    for a, b in zip(everything, everything[1:]):
        assert a.rank > b.rank or (a.rank == b.rank and a.stream_ordering > b.stream_ordering)
    # Pages of two, each after the last match of the one before, give the same order.
    pages, after = [], None
    while True:
        page = await search.search(query, scopes=[RoomScope(room_id)], keys=KEYS, order="rank", after=after,
                                   limit=2)
        pages += page
        if len(page) < 2:
            break
        after = page[-1]
    assert [h.event_id for h in pages] == [h.event_id for h in everything]
    # Recent order pages the same way.
    recent = await search.search(query, scopes=[RoomScope(room_id)], keys=KEYS, order="recent", limit=2)
    rest = await search.search(query, scopes=[RoomScope(room_id)], keys=KEYS, order="recent", after=recent[-1],
                               limit=10)
    assert [h.event_id for h in recent + rest] == [p.event_id for p in reversed(pdus[:5])]


ODD_TERMS = [
    '"', '""', "'", "*", "AND", "NOT x", "NEAR(a b)", "a:b", "col:word", "^x", "x*", "(", ")", "{a b}",
    "\\", "\x00", "%_", "' OR 1=1 --", "😀", "!!", "&|!", "a & b | !c", "<->", ":*", "'''", "\"a\" \"b",
    "x -", "- -", "or or", "x or", "or x", "-\"\"", "x\u200b", "a" * 5000,
]


async def test_odd_terms_never_fail(stores):
    store, _ = stores
    search = SearchStore(store.db)
    chain = Chain()
    room_id, _ = await room_with(store, chain)
    await append(store, room_id, [msg(chain, "x marks col word a b near and not 😀 the spot")])
    for term in ODD_TERMS:
        query = parse_search_term(term)
        if query is not None:
            hits = await search.search(query, scopes=[RoomScope(room_id)], keys=KEYS, order="rank", limit=5)
            assert await search.count(query, scopes=[RoomScope(room_id)], keys=KEYS) == len(hits)
            await search.highlights(query, {h.stream_ordering: "x marks" for h in hits})
    # Terms that are words find them, whatever surrounds them.
    for term in ["col:word", "(b NEAR)", "x*", "a & b | !near"]:
        hits = await search.search(parse_search_term(term), scopes=[RoomScope(room_id)], keys=KEYS,
                                   order="rank", limit=5)
        assert len(hits) == 1, term


async def test_highlights_are_the_matched_words(stores):
    store, _ = stores
    search = SearchStore(store.db)
    chain = Chain()
    room_id, _ = await room_with(store, chain)
    pdus = [msg(chain, "Running runners run"), msg(chain, "nothing here")]
    result = await append(store, room_id, pdus)
    query = parse_search_term("runs -walk")
    words = await search.highlights(query, {result.stream_orderings[0]: "Running runners run"})
    # Both engines stem "runs" to "run"; "Running" stems to "run" too (Porter, English).
    assert {"run", "Running"} <= words
    assert "nothing" not in words
    assert await search.highlights(query, {}) == set()


async def test_migration_indexes_stored_messages(database_config):
    """Events stored before migration 0031 (event_search) are indexed by it (messages, names, topics
    with their m.topic text; not redacted, rejected, outlier or soft-failed ones)."""
    from gateway.storage import open_database
    from gateway.storage.events import EventStore
    from gateway.storage.state import StateStore

    db = await open_database(database_config)
    try:
        migrations = load_migrations(db.engine)
        search_migration = next(m for m in migrations if m.name == "event_search")
        await db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for m in migrations:
            if m.version >= search_migration.version:
                break
            async with db.transaction() as txn:
                for stmt in split_sql_script(m.sql):
                    await txn.execute(stmt)
                await txn.execute("INSERT INTO schema_version (version) VALUES ($1)", m.version)
        # Before the migration: store events without indexing them.
        import gateway.storage.events as events_module

        async def no_index(*args, **kwargs):
            return None

        original = events_module.index_events, events_module.unindex_events
        events_module.index_events = events_module.unindex_events = no_index
        try:
            store = EventStore(db, StateStore(db))
            chain = Chain(RoomVersions.V10)
            room_id, _ = await room_with(store, chain)
            kept = msg(chain, "ancient treasure map")
            gone = msg(chain, "treasure to redact")
            nul = msg(chain, "treasure with \x00 inside")
            topic = chain.make("m.room.topic", {"topic": "pirate chat", "m.topic": {"m.text": [
                {"body": "pirate chat"}, {"mimetype": "text/plain", "body": "treasure island"}]}}, "")
            name = chain.make("m.room.name", {"name": "Treasure cove"}, "")
            odd = chain.make("m.room.message", {"body": {"not": "a string"}})
            await append(store, room_id, [kept, gone, nul, topic, name, odd])
            redaction = chain.make("m.room.redaction", {}, redacts=gone.event_id)
            room = await store.get_room(room_id)
            snap = await store.state.get_state(room.current_state_group)
            await store.persist_events(room_id, [write(redaction, redaction_applies_to=gone.event_id)],
                                       state_before=snap, expected_head=room.head_stream_ordering, received_ts=1)
            rejected = msg(chain, "treasure rejected")
            room = await store.get_room(room_id)
            await store.persist_events(room_id, [write(rejected, rejected_reason="no")], state_before=snap,
                                       expected_head=room.head_stream_ordering, received_ts=1)
        finally:
            events_module.index_events, events_module.unindex_events = original

        from gateway.storage import migrate

        await migrate(db)
        search = SearchStore(db)
        hits = await find(search, room_id, "treasure")
        expected = [name.event_id, topic.event_id, kept.event_id]
        if db.engine == "sqlite":  # PostgreSQL's jsonb refuses \u0000: that one waits for a new copy
            expected.insert(2, nul.event_id)
        assert [h.event_id for h in hits] == expected
        assert [h.event_id for h in await find(search, room_id, "island", keys=["content.topic"])] == [topic.event_id]
        assert [h.event_id for h in await find(search, room_id, "pirate")] == [topic.event_id]
    finally:
        await db.close()

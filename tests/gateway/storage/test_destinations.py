"""The federation sender's tables on both engines: batches of routed events, catch-up
rooms, the last successful position (never backwards), retry timings, admin listings."""

from __future__ import annotations

import pytest

from gateway.storage.destinations import DestinationStore


@pytest.fixture
def store(database) -> DestinationStore:
    return DestinationStore(database)


async def test_batches_record_the_newest_position_per_destination_and_room(store):
    assert await store.get_sender_position() == 0
    await store.save_batch(10, {("a.test", "!r1"): 5, ("a.test", "!r2"): 7, ("b.test", "!r1"): 5})
    await store.save_batch(20, {("a.test", "!r1"): 15})
    await store.save_batch(15, {("a.test", "!r2"): 3})  # an older position never wins
    assert await store.get_sender_position() == 20
    assert await store.get_catch_up_rooms("a.test", 0, 10) == [("!r2", 7), ("!r1", 15)]
    assert await store.get_catch_up_rooms("a.test", 7, 10) == [("!r1", 15)]
    assert await store.get_catch_up_rooms("a.test", 0, 1) == [("!r2", 7)]
    assert await store.get_destinations_with_backlog() == ["a.test", "b.test"]
    a = await store.get_destination("a.test")
    assert (a.retry_last_ts, a.retry_interval, a.failure_ts, a.last_successful_stream_ordering) == (0, 0, None, None)

    await store.set_last_successful("a.test", 15)
    await store.set_last_successful("a.test", 9)  # never backwards
    assert (await store.get_destination("a.test")).last_successful_stream_ordering == 15
    assert await store.get_destinations_with_backlog() == ["b.test"]
    await store.set_last_successful("new.test", 3)  # a row is made if needed
    assert (await store.get_destination("new.test")).last_successful_stream_ordering == 3


async def test_retry_timings(store):
    await store.set_retry_timings("down.test", retry_last_ts=1000, retry_interval=600, failure_ts=900)
    await store.set_retry_timings("down.test", retry_last_ts=2000, retry_interval=1200, failure_ts=900)
    row = await store.get_destination("down.test")
    assert (row.retry_last_ts, row.retry_interval, row.failure_ts) == (2000, 1200, 900)
    assert [r.destination for r in await store.get_backing_off()] == ["down.test"]
    assert await store.reset_retry_timings("down.test") is True
    assert await store.reset_retry_timings("down.test") is False  # nothing to reset
    assert await store.reset_retry_timings("unknown.test") is False
    row = await store.get_destination("down.test")
    assert (row.retry_last_ts, row.retry_interval, row.failure_ts) == (0, 0, None)
    assert await store.get_backing_off() == []
    assert (await store.get_destinations(["down.test", "unknown.test"])).keys() == {"down.test"}


async def test_admin_listings_sort_and_page(store):
    await store.save_batch(1, {(d, "!r"): 1 for d in ("c.test", "a.test", "b_x.test")})
    await store.set_retry_timings("c.test", retry_last_ts=50, retry_interval=10, failure_ts=40)
    await store.set_last_successful("a.test", 1)
    rows, total = await store.list_destinations(offset=0, limit=2)
    assert total == 3 and [r.destination for r in rows] == ["a.test", "b_x.test"]
    rows, _ = await store.list_destinations(offset=2, limit=2)
    assert [r.destination for r in rows] == ["c.test"]
    rows, _ = await store.list_destinations(offset=0, limit=5, order_by="retry_last_ts", backwards=True)
    assert [r.destination for r in rows] == ["c.test", "b_x.test", "a.test"]
    # NULLs sort first forwards on both engines.
    rows, _ = await store.list_destinations(offset=0, limit=5, order_by="last_successful_stream_ordering")
    assert [r.destination for r in rows] == ["b_x.test", "c.test", "a.test"]
    rows, total = await store.list_destinations(offset=0, limit=5, search="_")  # LIKE wildcards are literal
    assert [r.destination for r in rows] == ["b_x.test"] and total == 1
    with pytest.raises(ValueError):
        await store.list_destinations(offset=0, limit=5, order_by="destination; DROP TABLE destinations")
    await store.save_batch(2, {("a.test", "!a"): 2, ("a.test", "!b"): 2})
    rooms, total = await store.list_destination_rooms("a.test", offset=1, limit=5, backwards=True)
    assert rooms == [("!b", 2), ("!a", 2)] and total == 3


async def test_joined_servers_are_grouped_by_the_database(database, store):
    rows = [("!r", "@a:one.test", "join"), ("!r", "@b:one.test", "join"), ("!r", "@c:two.test:8448", "join"),
            ("!r", "@d:three.test", "leave"), ("!other", "@e:four.test", "join")]
    await database.executemany(
        "INSERT INTO room_memberships (room_id, user_id, membership, event_id, sender, stream_ordering)"
        " VALUES ($1, $2, $3, $4, $2, 1)",
        [(r, u, m, f"$e{i}") for i, (r, u, m) in enumerate(rows)],
    )
    assert await store.get_joined_servers("!r") == {"one.test", "two.test:8448"}
    assert await store.get_joined_servers("!none") == set()

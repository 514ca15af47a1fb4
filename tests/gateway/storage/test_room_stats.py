"""room_stats_state and the forgotten flag follow batched current-state changes (the
federation path), on both engines."""

from __future__ import annotations

from types import SimpleNamespace

from gateway.storage.state import StateStore, apply_current_state_changes


def ev(sender, **content):
    return SimpleNamespace(sender=sender, content=content)


async def test_batched_changes_update_room_stats_and_forgotten(database):
    room = "!r:hs.test"
    events = {"$name": ev("@a:hs.test", name="Garden"), "$jr": ev("@a:hs.test", join_rule="public"),
              "$leave": ev("@b:hs.test", membership="leave"), "$alias": ev("@a:hs.test", alias="#g:hs.test")}
    async with database.transaction() as txn:
        await apply_current_state_changes(txn, room_id=room, changes={
            ("m.room.name", ""): "$name", ("m.room.join_rules", ""): "$jr", ("m.room.member", "@b:hs.test"): "$leave",
            ("m.room.canonical_alias", ""): "$alias"}, previous={}, stream_ordering=5, events=events)
    row = await database.fetchrow("SELECT name, join_rules, canonical_alias FROM room_stats_state WHERE room_id = $1",
                                  room)
    assert tuple(row) == ("Garden", "public", "#g:hs.test")
    state = StateStore(database)
    assert await state.forget_room(room, "@b:hs.test")
    assert await state.get_forgotten_rooms("@b:hs.test") == {room}
    # A removal clears the column; a new membership clears 'forgotten'.
    events2 = {"$join": ev("@b:hs.test", membership="join")}
    async with database.transaction() as txn:
        await apply_current_state_changes(txn, room_id=room, changes={
            ("m.room.name", ""): None, ("m.room.member", "@b:hs.test"): "$join"},
            previous={("m.room.name", ""): "$name"}, stream_ordering=6, events=events2)
    row = await database.fetchrow("SELECT name, join_rules FROM room_stats_state WHERE room_id = $1", room)
    assert tuple(row) == (None, "public")
    assert await state.get_forgotten_rooms("@b:hs.test") == set()
    assert not await state.forget_room(room, "@b:hs.test")  # joined: nothing to forget

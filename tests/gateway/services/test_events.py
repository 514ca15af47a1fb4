"""The local event pipeline: auth events, concurrency (no forks, no lost events),
idempotent transaction IDs, state persisted with events."""

from __future__ import annotations

import asyncio

import pytest

from federation.auth_rules import auth_types_for_event
from federation.signing import verify_event_signatures
from gateway.http import MatrixError
from gateway.services.events import EventSpec, EventsService

from .conftest import make_user


async def new_room(hs, version="12", **body) -> tuple[str, str]:
    alice = await make_user(hs, "alice")
    room_id = await hs.rooms.create_room(alice, {"room_version": version, "preset": "public_chat", **body})
    return alice, room_id


async def timeline(hs, room_id):
    events = await hs.events.store.get_room_events(room_id, from_pos=None, backwards=False, limit=10_000)
    return [e.pdu for e in events]


def assert_linear(pdus):
    for before, after in zip(pdus, pdus[1:]):
        assert after.prev_event_ids == (before.event_id,), (before, after)
        assert after.depth == before.depth + 1


@pytest.mark.parametrize("version", ["12", "11", "3", "1"])
async def test_created_room_is_a_signed_linear_chain_with_selected_auth_events(hs, version):
    alice, room_id = await new_room(hs, version, name="n")
    pdus = await timeline(hs, room_id)
    assert [p.type for p in pdus[:3]] == ["m.room.create", "m.room.member", "m.room.power_levels"]
    assert_linear(pdus)
    state: dict = {}
    for pdu in pdus:
        wanted = auth_types_for_event(pdu.room_version, pdu.type, pdu.sender, pdu.state_key, pdu.content)
        assert set(pdu.auth_event_ids) == {state[k] for k in wanted if k in state}
        if version == "12":
            assert pdus[0].event_id not in pdu.auth_event_ids
        assert "hs.test" in pdu.signatures
        state[(pdu.type, pdu.state_key)] = pdu.event_id
    key = hs.signing_key
    for pdu in pdus:
        verify_event_signatures(pdu.get_pdu_json(), pdu.room_version, lambda s, k: key.verify_key if (s, k) == ("hs.test", key.key_id) else None)
    assert await hs.events.state.get_current_state_ids(room_id) == state


async def test_fifty_concurrent_sends_make_one_linear_dag(hs):
    alice, room_id = await new_room(hs)
    before = len(await timeline(hs, room_id))
    seen: list = []
    hs.events.add_new_events_listener(lambda room, positions: seen.extend(positions))
    sends = [hs.events.send_event(room_id, EventSpec("m.room.message", alice, {"body": str(i), "msgtype": "m.text"}))
             for i in range(50)]
    results = await asyncio.gather(*sends)
    pdus = await timeline(hs, room_id)
    assert len(pdus) == before + 50
    assert {p.content.get("body") for p in pdus[before:]} == {str(i) for i in range(50)}
    assert_linear(pdus)
    assert await hs.events.store.get_forward_extremities(room_id) == [pdus[-1].event_id]
    assert sorted(seen) == sorted(r.stream_ordering for r in results) and len(set(seen)) == 50


def another_pipeline(hs) -> EventsService:
    """A second event pipeline over the server's database, as another process has."""
    return EventsService(db=hs.db, server_name=hs.server_name, signing_key=hs.signing_key,
                         modules=hs.modules.callbacks, clock_ms=hs.clock_ms)


async def test_two_writers_without_a_shared_lock_do_not_fork(hs):
    """Two pipelines over one database (as two processes would be): the head check
    makes the loser build again on top of the winner."""
    alice, room_id = await new_room(hs)
    other = another_pipeline(hs)
    assert other.room_lock(room_id) is not hs.events.room_lock(room_id)
    sends = []
    for i in range(20):
        service = hs.events if i % 2 else other
        sends.append(service.send_event(room_id, EventSpec("m.room.message", alice, {"body": str(i)})))
    await asyncio.gather(*sends)
    pdus = await timeline(hs, room_id)
    assert sum(p.type == "m.room.message" for p in pdus) == 20
    assert_linear(pdus)
    assert len(await hs.events.store.get_forward_extremities(room_id)) == 1


async def test_concurrent_same_transaction_id_gives_one_event(hs):
    alice, room_id = await new_room(hs)
    txn = (alice, "DEV", "same")
    spec = EventSpec("m.room.message", alice, {"body": "once"})
    results = await asyncio.gather(*[hs.events.send_event(room_id, spec, txn=txn) for _ in range(5)])
    assert len({r.pdu.event_id for r in results}) == 1
    assert sum(p.content.get("body") == "once" for p in await timeline(hs, room_id)) == 1


async def test_forbidden_events_are_not_stored(hs):
    alice, room_id = await new_room(hs)
    mallory = await make_user(hs, "mallory")
    before = await timeline(hs, room_id)
    with pytest.raises(MatrixError) as e:
        await hs.events.send_event(room_id, EventSpec("m.room.message", mallory, {"body": "x"}))
    assert e.value.errcode == "M_FORBIDDEN" and "not joined" in e.value.error
    assert await timeline(hs, room_id) == before


async def test_state_survives_a_restart_of_the_service(hs):
    alice, room_id = await new_room(hs, "11")
    bob = await make_user(hs, "bob")
    await hs.rooms.join(bob, room_id)
    await hs.events.send_event(room_id, EventSpec("m.room.topic", alice, {"topic": "t"}, ""))
    fresh = another_pipeline(hs)  # empty caches, as after a restart
    room = await fresh.get_room(room_id)
    snap = await fresh.state.get_state(room.current_state_group)
    assert dict(snap.state) == await hs.events.state.get_current_state_ids(room_id)
    assert snap.state[("m.room.member", bob)]
    assert [m.user_id for m in await fresh.state.get_members(room_id, "join")] == [alice, bob]
    sent = await fresh.send_event(room_id, EventSpec("m.room.message", bob, {"body": "after restart"}))
    assert sent.pdu.prev_event_ids == ((await timeline(hs, room_id))[-2].event_id,)


async def test_a_stale_cached_head_is_checked_again_before_refusing(hs):
    """A join written by another process must not make this one refuse the user's message."""
    alice, room_id = await new_room(hs, "11")
    bob = await make_user(hs, "bob")
    await hs.events.send_event(room_id, EventSpec("m.room.message", alice, {"body": "warm the cache"}))
    other = another_pipeline(hs)
    await other.send_event(room_id, EventSpec("m.room.member", bob, {"membership": "join"}, bob))
    sent = await hs.events.send_event(room_id, EventSpec("m.room.message", bob, {"body": "hi"}))
    pdus = await timeline(hs, room_id)
    assert pdus[-1].event_id == sent.pdu.event_id
    assert_linear(pdus)


async def test_concurrent_sends_share_transactions_and_a_refused_one_leaves_the_others(hs, monkeypatch):
    """Group commit: senders waiting for the room's lock are written together, in one
    transaction per group (fewer writes than sends), each getting its own event, with
    its transaction ID; a sender the rules refuse gets M_FORBIDDEN and the others
    build on what came before it (one linear chain); state events in a group are seen
    by the senders after them."""
    alice, room_id = await new_room(hs, "11")
    mallory = await make_user(hs, "mallory")
    bob = await make_user(hs, "bob")
    store = hs.events.store
    original = store.persist_events
    writes = []

    async def persist_events(room, batch, **kw):
        writes.append([w.pdu.event_id for w in batch])
        return await original(room, batch, **kw)

    monkeypatch.setattr(store, "persist_events", persist_events)
    before = len(await timeline(hs, room_id))

    def send(sender, content, state_key=None, txn=None, event_type="m.room.message"):
        # send_events queues the caller before its first await: the queue is in call order.
        return hs.events.send_events(room_id, [EventSpec(event_type, sender, content, state_key)], txn=txn)

    sends = [send(alice, {"body": f"a{i}"}, txn=(alice, "DEV", f"t{i}")) for i in range(10)]
    sends.insert(3, send(mallory, {"body": "intruder"}))
    sends.insert(5, send(bob, {"membership": "join"}, bob, event_type="m.room.member"))
    sends.insert(6, send(bob, {"body": "bob here"}))
    results = await asyncio.gather(*sends, return_exceptions=True)
    assert isinstance(results[3], MatrixError) and results[3].errcode == "M_FORBIDDEN"
    sent = [r[0] for r in results if not isinstance(r, BaseException)]
    assert len(sent) == 12
    assert len(writes) < 12 and sum(len(w) for w in writes) == 12
    pdus = await timeline(hs, room_id)
    assert len(pdus) == before + 12 and "intruder" not in {p.content.get("body") for p in pdus}
    assert_linear(pdus)
    assert [r.pdu.event_id for r in sent] == [p.event_id for p in pdus[before:]]  # in the callers' order
    assert [r.stream_ordering for r in sent] == sorted(r.stream_ordering for r in sent)
    for i, r in enumerate(r for r in sent if r.pdu.sender == alice):
        assert await store.get_txn_event_id(alice, "DEV", f"t{i}") == r.pdu.event_id
    assert (await hs.events.state.get_membership(room_id, bob)).membership == "join"
    # A retried transaction ID gets the same event without a new write.
    again = await hs.events.send_event(room_id, EventSpec("m.room.message", alice, {"body": "a0"}),
                                       txn=(alice, "DEV", "t0"))
    assert again.pdu.event_id == sent[0].pdu.event_id and len(await timeline(hs, room_id)) == before + 12

"""Federated rooms between two instances of our server, gateway A on SQLite and gateway B
on PostgreSQL (TLS with a test CA, IP-literal server names): a user of B joins a room on
A by alias and messages go both ways; invites from A to B accepted and rejected; leave
and kick seen on the other side; and concurrent state changes on both servers (a fork
of the room DAG) resolve to the same current state on both.

Spec: https://spec.matrix.org/latest/server-server-api/#room-state-resolution
Each server is driven through its own Client-Server API.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import SKIP_POSTGRES, create_postgres_database, drop_postgres_database
from tests.support.client_api import Client, has_text, invited_to, left, member_event, q
from tests.support.gateway_server import running_gateway
from tests.support.tls import TestCA


async def _register(s: aiohttp.ClientSession, gw, name: str) -> Client:
    async with s.post(f"{gw.client_url}/_matrix/client/v3/register", json={
            "username": name, "password": f"{name}-pass", "auth": {"type": "m.login.dummy"}}) as r:
        body = await r.json()
        assert r.status == 200, body
    client = Client(s, gw.client_url, body["access_token"], body["user_id"])
    await client.sync_until(lambda b: True)  # an initial sync: later ones are incremental
    return client


@pytest.fixture
def gateways_ca(tmp_path: Path) -> TestCA:
    """The CA both gateways' certificates come from (and trust): for other servers of a test."""
    return TestCA(tmp_path / "ca")


@pytest.fixture
async def gateways(tmp_path: Path, gateways_ca: TestCA):
    """Gateway A (SQLite) with alice, gateway B (PostgreSQL) with bob and carol."""
    if SKIP_POSTGRES:
        pytest.skip("GATEWAY_TEST_SKIP_POSTGRES=1: no PostgreSQL reachable (the test command said so)")
    ca = gateways_ca
    base = {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
            "enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4,
            "rc_registration": {"per_second": 1000, "burst_count": 1000}}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    db_name, args = await create_postgres_database()
    postgres = {"database": {"name": "psycopg2", "args": {**args, "cp_min": 1, "cp_max": 4}}}
    try:
        async with running_gateway(tmp_path / "a", ca, base) as a, \
                running_gateway(tmp_path / "b", ca, {**base, **postgres}) as b, \
                aiohttp.ClientSession() as s:
            assert a.config.database.engine == "sqlite" and b.config.database.engine == "postgres"
            alice = await _register(s, a, "alice")
            bob = await _register(s, b, "bob")
            carol = await _register(s, b, "carol")
            yield a, b, alice, bob, carol
    finally:
        await drop_postgres_database(db_name)


async def test_join_by_alias_talk_leave_and_kick(gateways):
    a, b, alice, bob, carol = gateways
    room = (await alice.call("POST", "/createRoom", {"preset": "public_chat", "name": "Harbour",
                                                     "room_alias_name": "harbour"}))["room_id"]
    await alice.send_text(room, "before bob")
    # Bob (on B, PostgreSQL) joins by A's alias: resolved and joined over federation.
    assert await bob.call("POST", f"/join/{q(f'#harbour:{a.server_name}')}", {}) == {"room_id": room}
    await bob.sync_until(member_event(room, bob.user_id, "join"))
    assert await bob.call("GET", f"/rooms/{q(room)}/state/m.room.name") == {"name": "Harbour"}
    await alice.sync_until(member_event(room, bob.user_id, "join"))
    # Messages both ways.
    await bob.send_text(room, "hello from B")
    await alice.sync_until(has_text(room, "hello from B"))
    await alice.send_text(room, "hello from A")
    await bob.sync_until(has_text(room, "hello from A"))
    # Bob leaves: A sees it.
    await bob.call("POST", f"/rooms/{q(room)}/leave", {})
    await alice.sync_until(member_event(room, bob.user_id, "leave"))
    await bob.sync_until(left(room))

    # Carol joins by room id via A, then is kicked by alice: B sees it, carol's /sync too.
    await carol.call("POST", f"/join/{q(room)}", {}, params={"via": a.server_name})
    await alice.sync_until(member_event(room, carol.user_id, "join"))
    await alice.call("POST", f"/rooms/{q(room)}/kick", {"user_id": carol.user_id, "reason": "bye"})
    await carol.sync_until(left(room))
    kicked = await alice.sync_until(member_event(room, carol.user_id, "leave"))
    assert kicked["sender"] == alice.user_id and kicked["content"].get("reason") == "bye"
    # Carol's own server holds the kick as her membership (state as of when she left).
    member = await carol.call("GET", f"/rooms/{q(room)}/state/m.room.member/{q(carol.user_id)}")
    assert member["membership"] == "leave" and member.get("reason") == "bye"


async def test_invites_from_a_accepted_and_rejected(gateways):
    a, b, alice, bob, carol = gateways
    room = (await alice.call("POST", "/createRoom", {"preset": "private_chat", "name": "Ours"}))["room_id"]
    await alice.call("POST", f"/rooms/{q(room)}/invite", {"user_id": bob.user_id})
    await alice.call("POST", f"/rooms/{q(room)}/invite", {"user_id": carol.user_id})

    invite = await bob.sync_until(invited_to(room))
    stripped = {e["type"]: e for e in invite["invite_state"]["events"]}
    assert stripped["m.room.name"]["content"] == {"name": "Ours"}
    assert stripped["m.room.member"]["state_key"] == bob.user_id
    await bob.call("POST", f"/join/{q(room)}", {})
    await alice.sync_until(member_event(room, bob.user_id, "join"))
    await bob.send_text(room, "thanks")
    await alice.sync_until(has_text(room, "thanks"))

    # Carol rejects: B is now in the room, so her leave goes through B's copy of the room.
    await carol.sync_until(invited_to(room))
    await carol.call("POST", f"/rooms/{q(room)}/leave", {})
    await alice.sync_until(member_event(room, carol.user_id, "leave"))
    await carol.sync_until(left(room))

    # A rejection while B is not in the room at all (make_leave/send_leave to A).
    lone = (await alice.call("POST", "/createRoom", {"preset": "private_chat", "name": "Alone"}))["room_id"]
    await alice.call("POST", f"/rooms/{q(lone)}/invite", {"user_id": carol.user_id})
    await carol.sync_until(invited_to(lone))
    await carol.call("POST", f"/rooms/{q(lone)}/leave", {})
    await alice.sync_until(member_event(lone, carol.user_id, "leave"))
    await carol.sync_until(left(lone))


async def _state(client: Client, room: str) -> dict:
    events = await client.call("GET", f"/rooms/{q(room)}/state")
    return {(e["type"], e["state_key"]): e["event_id"] for e in events}


async def _until_same_state(alice: Client, bob: Client, room: str, timeout: float = 60) -> dict:
    """Await (no fixed sleeps: between rounds both users long-poll /sync for news) until
    both servers report the same current state."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        on_a, on_b = await asyncio.gather(_state(alice, room), _state(bob, room))
        if on_a == on_b:
            return on_a
        assert asyncio.get_running_loop().time() < deadline, ("state never converged", on_a, on_b)
        await asyncio.gather(alice.sync_until(lambda body: True), bob.sync_until(lambda body: True))


async def test_concurrent_state_changes_resolve_the_same_on_both(gateways):
    a, b, alice, bob, carol = gateways
    room = (await alice.call("POST", "/createRoom", {
        "preset": "public_chat", "name": "Start",
        # Bob may change name and topic (power 50 is the default for state events;
        # alice, the creator, is above every level in rooms of version 12).
        "power_level_content_override": {"users": {bob.user_id: 50}},
    }))["room_id"]
    await bob.call("POST", f"/join/{q(room)}", {}, params={"via": a.server_name})
    await alice.sync_until(member_event(room, bob.user_id, "join"))
    await _until_same_state(alice, bob, room)

    for round_ in range(3):
        # Both servers change the same state at the same time: the DAG forks.
        sent = await asyncio.gather(
            alice.call("PUT", f"/rooms/{q(room)}/state/m.room.topic", {"topic": f"A's topic {round_}"}),
            bob.call("PUT", f"/rooms/{q(room)}/state/m.room.topic", {"topic": f"B's topic {round_}"}),
            alice.call("PUT", f"/rooms/{q(room)}/state/m.room.name", {"name": f"A's name {round_}"}),
            bob.call("PUT", f"/rooms/{q(room)}/state/m.room.name", {"name": f"B's name {round_}"}),
        )
        topics = {sent[0]["event_id"], sent[1]["event_id"]}
        names = {sent[2]["event_id"], sent[3]["event_id"]}
        # One more message each (these merge the fork), seen on the other side.
        await asyncio.gather(alice.send_text(room, f"A after {round_}"), bob.send_text(room, f"B after {round_}"))
        await asyncio.gather(alice.sync_until(has_text(room, f"B after {round_}")),
                             bob.sync_until(has_text(room, f"A after {round_}")))
        state = await _until_same_state(alice, bob, room)
        # The winner is one of the two concurrent events, the same on both servers.
        assert state[("m.room.topic", "")] in topics
        assert state[("m.room.name", "")] in names
        topic_a = await alice.call("GET", f"/rooms/{q(room)}/state/m.room.topic")
        assert topic_a == await bob.call("GET", f"/rooms/{q(room)}/state/m.room.topic")
        assert topic_a["topic"] in {f"A's topic {round_}", f"B's topic {round_}"}


async def test_a_partial_join_of_a_room_on_a(gateways):
    """A answers B's send_join with the members left out (omit_members): bob is joined at
    once, B fetches the rest in the background, and B's member list then has everyone."""
    from gateway.storage import open_database

    a, b, alice, bob, carol = gateways
    room = (await alice.call("POST", "/createRoom", {"preset": "public_chat", "name": "Plaza"}))["room_id"]
    others = [await _register(alice.s, a, f"plaza{i}") for i in range(4)]
    for c in others:
        await c.call("POST", f"/join/{q(room)}", {})
    await bob.call("POST", f"/join/{q(room)}", {}, params={"via": a.server_name})
    await bob.send_text(room, "hello plaza")
    await others[2].sync_until(has_text(room, "hello plaza"))
    joined = (await bob.call("GET", f"/rooms/{q(room)}/joined_members"))["joined"]  # waits for the resync
    assert set(joined) == {alice.user_id, bob.user_id} | {c.user_id for c in others}
    await others[3].send_text(room, "hello bob")
    await bob.sync_until(has_text(room, "hello bob"))
    # B went through a partial join and its resync; carol (also on B) then joins locally.
    db = await open_database(b.config.database)
    try:
        assert await db.fetchval("SELECT full_state_stream_ordering FROM rooms WHERE room_id = $1", room) is not None
        assert await db.fetchval("SELECT COUNT(*) FROM partial_state_rooms") == 0
    finally:
        await db.close()
    await carol.call("POST", f"/join/{q(room)}", {})
    await alice.sync_until(member_event(room, carol.user_id, "join"))

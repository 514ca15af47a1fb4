"""Restricted rooms between instances of our server: gateway A on SQLite, B on
PostgreSQL (as in test_federated_rooms_gateways.py) and, where a join needs two
residents, C on SQLite. Each server is driven through its own Client-Server API.

Spec: https://spec.matrix.org/latest/server-server-api/#restricted-rooms
- a user of B joins a restricted room of A once in the allowed room (A authorises);
- a user of B joins when B is in the room already: a local member of B authorises, or,
  when none of B's users may invite, B asks A;
- the first resident asked cannot vouch (M_UNABLE_TO_GRANT_JOIN: nobody there may
  invite; M_UNABLE_TO_AUTHORISE_JOIN: it is not in the allowed room): the joining
  server goes on to the next one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import SKIP_POSTGRES, create_postgres_database, drop_postgres_database
from tests.interop.test_federated_rooms_gateways import _register
from tests.support.client_api import Client, member_event, q
from tests.support.gateway_server import running_gateway
from tests.support.tls import TestCA

AUTHORISER = "join_authorised_via_users_server"


def restricted(allowed: str, **extra) -> dict:
    return {"preset": "private_chat", "initial_state": [{
        "type": "m.room.join_rules", "state_key": "",
        "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": allowed}]},
    }], **extra}


@pytest.fixture
async def three(tmp_path: Path):
    """A (SQLite) with alice, B (PostgreSQL) with bob and carol, C (SQLite) with cyril."""
    if SKIP_POSTGRES:
        pytest.skip("GATEWAY_TEST_SKIP_POSTGRES=1: no PostgreSQL reachable (the test command said so)")
    ca = TestCA(tmp_path / "ca")
    base = {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
            "enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4}
    for name in "abc":
        (tmp_path / name).mkdir()
    db_name, args = await create_postgres_database()
    postgres = {"database": {"name": "psycopg2", "args": {**args, "cp_min": 1, "cp_max": 4}}}
    try:
        async with running_gateway(tmp_path / "a", ca, base) as a, \
                running_gateway(tmp_path / "b", ca, {**base, **postgres}) as b, \
                running_gateway(tmp_path / "c", ca, base) as c, \
                aiohttp.ClientSession() as s:
            assert b.config.database.engine == "postgres"
            users = [await _register(s, gw, name) for gw, name in ((a, "alice"), (b, "bob"), (b, "carol"),
                                                                   (c, "cyril"))]
            yield (a, b, c), users
    finally:
        await drop_postgres_database(db_name)


async def _join(client: Client, room: str, *via: str, expect: int = 200) -> dict:
    return await client.call("POST", f"/join/{q(room)}", {}, params=[("via", v) for v in via], expect=expect)


async def _authoriser(client: Client, room: str, user_id: str) -> str | None:
    member = await client.call("GET", f"/rooms/{q(room)}/state/m.room.member/{q(user_id)}")
    assert member["membership"] == "join"
    return member.get(AUTHORISER)


async def test_join_authorised_by_a_then_by_a_member_of_b(three):
    (a, b, c), (alice, bob, carol, cyril) = three
    space = (await alice.call("POST", "/createRoom", {"preset": "public_chat", "name": "Space"}))["room_id"]
    room = (await alice.call("POST", "/createRoom", restricted(space, name="Inner")))["room_id"]
    # Not in the space: A refuses (403 passed on to the client).
    refused = await _join(bob, room, a.server_name, expect=403)
    assert refused["errcode"] == "M_FORBIDDEN"

    await _join(bob, space, a.server_name)
    assert await _join(bob, room, a.server_name) == {"room_id": room}
    await alice.sync_until(member_event(room, bob.user_id, "join"))
    assert await _authoriser(bob, room, bob.user_id) == alice.user_id
    assert await _authoriser(alice, room, bob.user_id) == alice.user_id
    assert await bob.call("GET", f"/rooms/{q(room)}/state/m.room.name") == {"name": "Inner"}

    # B is in the room now and bob may invite (level 0 here): carol's join is
    # authorised on B itself, by bob, and A accepts B's signature.
    await _join(carol, space, a.server_name)
    assert await _join(carol, room) == {"room_id": room}
    await alice.sync_until(member_event(room, carol.user_id, "join"))
    assert await _authoriser(alice, room, carol.user_id) == bob.user_id


async def test_b_in_the_room_but_nobody_there_may_invite_asks_a(three, caplog):
    (a, b, c), (alice, bob, carol, cyril) = three
    space = (await alice.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
    room = (await alice.call("POST", "/createRoom", restricted(
        space, power_level_content_override={"invite": 50})))["room_id"]
    for user in (bob, carol):
        await _join(user, space, a.server_name)
    # Carol's join to the space is a local join on B (already there through bob): A learns
    # of it by a transaction, and must know of it before it can authorise her below.
    await alice.sync_until(member_event(space, carol.user_id, "join"))
    await _join(bob, room, a.server_name)
    await alice.sync_until(member_event(room, bob.user_id, "join"))
    # Carol's server is resident, but bob (level 0) may not invite: B asks A.
    assert await _join(carol, room) == {"room_id": room}
    await alice.sync_until(member_event(room, carol.user_id, "join"))
    assert await _authoriser(alice, room, carol.user_id) == alice.user_id
    assert await _authoriser(carol, room, carol.user_id) == alice.user_id
    # B's copy of the room goes on normally: carol talks, alice hears.
    await carol.send_text(room, "in via A")
    await alice.sync_until(lambda body: "in via A" in [
        e["content"].get("body") for e in body.get("rooms", {}).get("join", {}).get(room, {})
        .get("timeline", {}).get("events", [])])


async def test_first_resident_cannot_authorise_so_the_next_one_does(three, caplog):
    (a, b, c), (alice, bob, carol, cyril) = three
    caplog.set_level(logging.INFO, logger="gateway.services.federation.membership")
    space = (await alice.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
    for user in (bob, cyril):
        await _join(user, space, a.server_name)
    # A room on C, restricted to A's space; alice is in it but may not invite.
    room = (await cyril.call("POST", "/createRoom", restricted(
        space, power_level_content_override={"invite": 50})))["room_id"]
    await _join(alice, room, c.server_name)
    await cyril.sync_until(member_event(room, alice.user_id, "join"))
    assert await _authoriser(alice, room, alice.user_id) == cyril.user_id
    # A joined with partial state: /joined_members answers once A has the full state, and
    # only then does A answer make_join as a resident (before, it sends askers elsewhere).
    assert alice.user_id in (await alice.call("GET", f"/rooms/{q(room)}/joined_members"))["joined"]

    # Bob asks A first: A sees him in the space but nobody on A may invite.
    assert await _join(bob, room, a.server_name, c.server_name) == {"room_id": room}
    assert any(a.server_name in r.getMessage() and "M_UNABLE_TO_GRANT_JOIN" in r.getMessage()
               for r in caplog.records), "A was not asked first"
    await cyril.sync_until(member_event(room, bob.user_id, "join"))
    assert await _authoriser(bob, room, bob.user_id) == cyril.user_id

    # A room on C restricted to C's own space, which A is not in: A cannot tell.
    space_c = (await cyril.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
    room2 = (await cyril.call("POST", "/createRoom", restricted(space_c)))["room_id"]
    await cyril.call("POST", f"/rooms/{q(room2)}/invite", {"user_id": alice.user_id})
    await alice.sync_until(lambda body: room2 in body.get("rooms", {}).get("invite", {}))
    await _join(alice, room2)
    assert alice.user_id in (await alice.call("GET", f"/rooms/{q(room2)}/joined_members"))["joined"]
    await _join(carol, space_c, c.server_name)
    caplog.clear()
    assert await _join(carol, room2, a.server_name, c.server_name) == {"room_id": room2}
    assert any(a.server_name in r.getMessage() and "M_UNABLE_TO_AUTHORISE_JOIN" in r.getMessage()
               for r in caplog.records), "A was not asked first"
    await cyril.sync_until(member_event(room2, carol.user_id, "join"))
    assert await _authoriser(carol, room2, carol.user_id) == cyril.user_id

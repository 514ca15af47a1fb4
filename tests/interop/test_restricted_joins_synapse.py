"""Restricted rooms (rooms 8+, ``join_authorised_via_users_server``) between our server
and a real Synapse, both ways: a resident server vouches (signs) for a join of a user
who is joined to one of the rooms the join rule allows.

Spec: https://spec.matrix.org/latest/server-server-api/#restricted-rooms and
https://spec.matrix.org/latest/client-server-api/#restricted-rooms

- a Synapse user joins a restricted room of ours once in the allowed room, and is
  refused (403 M_FORBIDDEN from our make_join) before;
- our server does not authorise a join when none of its users may invite
  (M_UNABLE_TO_GRANT_JOIN), so the join fails;
- our user joins a restricted room on Synapse: Synapse authorises, we check its
  signature on the event it sends back.
"""

from __future__ import annotations

import pytest

from tests.interop.test_federated_rooms_synapse import servers  # noqa: F401 - the fixture
from tests.support.client_api import member_event, q

pytestmark = pytest.mark.asyncio(loop_scope="module")  # the shared servers fixture

AUTHORISER = "join_authorised_via_users_server"


def restricted_to(room_id: str) -> dict:
    return {"type": "m.room.join_rules", "state_key": "",
            "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": room_id}]}}


async def _members(client, room: str) -> dict[str, str]:
    events = (await client.call("GET", f"/rooms/{q(room)}/members"))["chunk"]
    return {e["state_key"]: e["content"]["membership"] for e in events}


async def space_and_room(client, version: str, name: str) -> tuple[str, str]:
    """A public room (the 'space') and a room restricted to its members, named ``name``."""
    space = (await client.call("POST", "/createRoom", {"preset": "public_chat", "name": "Space"}))["room_id"]
    room = (await client.call("POST", "/createRoom", {
        "preset": "private_chat", "name": name, "room_version": version, "initial_state": [restricted_to(space)],
    }))["room_id"]
    return space, room


@pytest.mark.parametrize("version", ["10", "12"])
async def test_synapse_user_joins_our_restricted_room(servers, version):  # noqa: F811
    gw, synapse, alice, bob = servers
    space, room = await space_and_room(alice, version, "Members only")
    # Not in the allowed room: our make_join says 403 M_FORBIDDEN, Synapse passes it on.
    refused = await bob.call("POST", f"/join/{q(room)}", {}, params={"server_name": gw.server_name}, expect=403)
    assert refused["errcode"] == "M_FORBIDDEN"
    assert bob.user_id not in await _members(alice, room)

    await bob.call("POST", f"/join/{q(space)}", {}, params={"server_name": gw.server_name})
    await alice.sync_until(member_event(space, bob.user_id, "join"))
    assert await bob.call("POST", f"/join/{q(room)}", {}, params={"server_name": gw.server_name}) \
        == {"room_id": room}
    # Our server named alice (the only local member who may invite) and signed it.
    join = await alice.sync_until(member_event(room, bob.user_id, "join"))
    assert join["content"][AUTHORISER] == alice.user_id
    assert join["sender"] == bob.user_id
    # Synapse took the co-signed join as its state too, and talks in the room.
    mine = await bob.call("GET", f"/rooms/{q(room)}/state/m.room.member/{q(bob.user_id)}")
    assert mine["membership"] == "join" and mine[AUTHORISER] == alice.user_id
    assert (await bob.call("GET", f"/rooms/{q(room)}/state/m.room.name")) == {"name": "Members only"}


async def test_no_local_user_may_invite_so_we_do_not_authorise(servers):  # noqa: F811
    gw, synapse, alice, bob = servers
    space, room = await space_and_room(alice, "10", "Nobody may invite")
    # Alice gives up the power to invite (room 10: the creator is an ordinary user).
    levels = await alice.call("GET", f"/rooms/{q(room)}/state/m.room.power_levels")
    await alice.call("PUT", f"/rooms/{q(room)}/state/m.room.power_levels",
                     {**levels, "invite": 50, "users": {alice.user_id: 10}})
    await bob.call("POST", f"/join/{q(space)}", {}, params={"server_name": gw.server_name})
    await alice.sync_until(member_event(space, bob.user_id, "join"))
    # Bob meets the condition, but nobody here may vouch for him: our server answers
    # M_UNABLE_TO_GRANT_JOIN (tests/gateway/services/test_restricted_joins.py checks the
    # code) instead of naming a user the auth rules would refuse; Synapse, with no other
    # server to ask, gives up.
    failed = await bob.call("POST", f"/join/{q(room)}", {}, params={"server_name": gw.server_name},
                            expect=502)
    assert failed["errcode"] == "M_UNKNOWN"
    assert bob.user_id not in await _members(alice, room)


@pytest.mark.parametrize("version", ["10", "12"])
async def test_our_user_joins_a_restricted_synapse_room(servers, version):  # noqa: F811
    gw, synapse, alice, bob = servers
    space, room = await space_and_room(bob, version, "Theirs")
    # Synapse refuses alice while she is not in the space.
    refused = await alice.call("POST", f"/join/{q(room)}", {}, params={"via": synapse.server_name}, expect=403)
    assert refused["errcode"] == "M_FORBIDDEN"

    await alice.call("POST", f"/join/{q(space)}", {}, params={"via": synapse.server_name})
    await bob.sync_until(member_event(space, alice.user_id, "join"))
    assert await alice.call("POST", f"/join/{q(room)}", {}, params={"via": synapse.server_name}) \
        == {"room_id": room}
    # Our copy of her join carries bob as authoriser (its signature was checked and the
    # auth rules accepted it here), and Synapse has it too.
    mine = await alice.call("GET", f"/rooms/{q(room)}/state/m.room.member/{q(alice.user_id)}")
    assert mine["membership"] == "join" and mine[AUTHORISER] == bob.user_id
    assert (await alice.call("GET", f"/rooms/{q(room)}/state/m.room.name")) == {"name": "Theirs"}
    seen = await bob.sync_until(member_event(room, alice.user_id, "join"))
    assert seen["content"][AUTHORISER] == bob.user_id

"""Knocking between our server and a real Synapse, both ways, each side driven through
its own Client-Server API.

- Our user knocks on a Synapse room (by alias; by room ID with ``via`` for room v12):
  Synapse's user sees the knock and accepts it with an invite, our user joins.
- Our user retracts a knock: Synapse sees the leave (make_leave / send_leave).
- Synapse's user denies a knock with a kick. Synapse does not tell the knocker's server
  (it sends a leave about a user not in the room to that user's server only when it
  rescinds an invite), so our user still sees the knock; their leave then ends it here,
  as Synapse no longer takes it. A rescinded invite does reach us and ends the invite.
- A Synapse user knocks on our room: our user sees it, invites, and the Synapse user joins.

Spec: https://spec.matrix.org/latest/client-server-api/#knocking-on-rooms,
https://spec.matrix.org/latest/server-server-api/#knocking-rooms
"""

from __future__ import annotations

import pytest

from tests.interop.test_federated_rooms_synapse import servers  # noqa: F401
from tests.support.client_api import accept_knock, invited_to, knocked, left, member_event, q

pytestmark = pytest.mark.asyncio(loop_scope="module")  # the shared servers fixture

KNOCK_RULE = [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]


async def synapse_knock_room(bob, version: str, alias: str | None = None) -> str:
    body = {"preset": "private_chat", "room_version": version, "name": "Synapse door", "initial_state": KNOCK_RULE}
    if alias:
        body["room_alias_name"] = alias
    return (await bob.call("POST", "/createRoom", body))["room_id"]


@pytest.mark.parametrize("version", ["7", "12"])
async def test_our_user_knocks_on_a_synapse_room_and_is_let_in(servers, version):  # noqa: F811
    gw, synapse, alice, bob = servers
    room = await synapse_knock_room(bob, version, alias=f"door{version}")
    if version == "7":
        target, params = q(f"#door7:{synapse.server_name}"), None  # the alias names the server
    else:
        target, params = q(room), {"via": synapse.server_name}  # v12 room IDs name no server
    knock = await alice.call("POST", f"/knock/{target}", {"reason": "may I?"}, params=params)
    assert knock == {"room_id": room}

    # Alice's /sync: the room under rooms.knock, with the state Synapse showed us.
    state = {e["type"]: e for e in (await alice.sync_until(knocked(room)))["knock_state"]["events"]}
    assert state["m.room.name"]["content"] == {"name": "Synapse door"}
    assert state["m.room.join_rules"]["content"] == {"join_rule": "knock"}
    assert state["m.room.create"]["content"]["room_version"] == version
    assert state["m.room.member"]["content"]["membership"] == "knock"

    # Synapse's user sees the knock, and accepts it with an invite; alice joins.
    seen = await bob.sync_until(member_event(room, alice.user_id, "knock"))
    assert seen["content"].get("reason") == "may I?"
    await accept_knock(bob, alice, room, "thanks for letting me in")


async def test_knocks_retracted_and_denied_on_synapse(servers):  # noqa: F811
    gw, synapse, alice, bob = servers
    room = await synapse_knock_room(bob, "12")
    via = {"via": synapse.server_name}

    # A retracted knock: Synapse sees alice's leave.
    await alice.call("POST", f"/knock/{q(room)}", {}, params=via)
    await bob.sync_until(member_event(room, alice.user_id, "knock"))
    await alice.call("POST", f"/rooms/{q(room)}/leave", {"reason": "later"})
    gone = await bob.sync_until(member_event(room, alice.user_id, "leave"))
    assert gone["sender"] == alice.user_id and gone["content"].get("reason") == "later"
    await alice.sync_until(left(room))

    # A denied knock: Synapse keeps the kick to itself, so alice's server still has her
    # knock; her leave (Synapse refuses make_leave now) ends it here.
    await alice.call("POST", f"/knock/{q(room)}", {}, params=via)
    await bob.sync_until(member_event(room, alice.user_id, "knock"))
    await alice.sync_until(knocked(room))
    await bob.call("POST", f"/rooms/{q(room)}/kick", {"user_id": alice.user_id, "reason": "no"})
    await bob.sync_until(member_event(room, alice.user_id, "leave"))
    await alice.call("POST", f"/rooms/{q(room)}/leave", {})
    await alice.sync_until(left(room))
    # Synapse still holds the kick as alice's membership.
    member = await bob.call("GET", f"/rooms/{q(room)}/state/m.room.member/{q(alice.user_id)}")
    assert member["membership"] == "leave" and member.get("reason") == "no"

    # A rescinded invite does reach us: Synapse sends the leave to the invitee's server.
    await bob.call("POST", f"/rooms/{q(room)}/invite", {"user_id": alice.user_id})
    await alice.sync_until(invited_to(room))
    await bob.call("POST", f"/rooms/{q(room)}/kick", {"user_id": alice.user_id, "reason": "oops"})
    await alice.sync_until(left(room))


async def test_synapse_user_knocks_on_our_room_and_is_let_in(servers):  # noqa: F811
    gw, synapse, alice, bob = servers
    room = (await alice.call("POST", "/createRoom", {
        "preset": "private_chat", "name": "Gateway door", "room_alias_name": "gdoor",
        "initial_state": KNOCK_RULE}))["room_id"]

    # Synapse resolves our alias and knocks through us (make_knock / send_knock).
    knock = await bob.call("POST", f"/knock/{q(f'#gdoor:{gw.server_name}')}", {"reason": "hello"})
    assert knock == {"room_id": room}
    state = {e["type"]: e for e in (await bob.sync_until(knocked(room)))["knock_state"]["events"]}
    assert state["m.room.name"]["content"] == {"name": "Gateway door"}
    assert "m.room.create" in state
    seen = await alice.sync_until(member_event(room, bob.user_id, "knock"))
    assert seen["content"].get("reason") == "hello"

    # Alice accepts with an invite; bob joins through us and they talk.
    await accept_knock(alice, bob, room, "thanks")

    # Knocking on our public room is refused, with our reason.
    public = (await alice.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
    refused = await bob.call("POST", f"/knock/{q(public)}", {}, params={"via": gw.server_name}, expect=403)
    assert refused["errcode"] == "M_FORBIDDEN" and "does not allow knocking" in refused["error"]

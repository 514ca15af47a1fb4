"""Knocking between two of our servers (gateway A on SQLite, gateway B on PostgreSQL),
each driven through its own Client-Server API: users of B knock on a room of A (by
alias, and by room ID with ``via``), A's user sees the knocks and accepts one with an
invite (the knocker joins), denies another with a kick (the knocker's /sync shows the
room as left), and knocks are retracted both while B is not in the room (make_leave /
send_leave) and once it is (a plain leave).

Spec: https://spec.matrix.org/latest/server-server-api/#knocking-rooms
"""

from __future__ import annotations

from tests.interop.test_federated_rooms_gateways import gateways, gateways_ca  # noqa: F401
from tests.support.client_api import accept_knock, knocked, left, member_event, q


async def knock_room(alice, alias: str | None = None) -> str:
    body = {"preset": "private_chat", "name": "Knock knock",
            "initial_state": [{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}]}
    if alias:
        body["room_alias_name"] = alias
    return (await alice.call("POST", "/createRoom", body))["room_id"]


async def test_knocks_accepted_denied_and_retracted(gateways):  # noqa: F811
    a, b, alice, bob, carol = gateways
    room = await knock_room(alice, "door")

    # Bob knocks by A's alias: the room shows under rooms.knock with its stripped state.
    assert await bob.call("POST", f"/knock/{q(f'#door:{a.server_name}')}", {"reason": "hi!"}) == {"room_id": room}
    state = {e["type"]: e for e in (await bob.sync_until(knocked(room)))["knock_state"]["events"]}
    assert state["m.room.name"]["content"] == {"name": "Knock knock"}
    assert state["m.room.join_rules"]["content"] == {"join_rule": "knock"}
    assert state["m.room.member"]["content"]["membership"] == "knock"
    seen = await alice.sync_until(member_event(room, bob.user_id, "knock"))
    assert seen["content"].get("reason") == "hi!"

    # Carol knocks by room ID through A; alice denies it: carol's server is told.
    assert await carol.call("POST", f"/knock/{q(room)}", {}, params={"via": a.server_name}) == {"room_id": room}
    await carol.sync_until(knocked(room))
    await alice.sync_until(member_event(room, carol.user_id, "knock"))
    await alice.call("POST", f"/rooms/{q(room)}/kick", {"user_id": carol.user_id, "reason": "not today"})
    await carol.sync_until(left(room))

    # Alice accepts bob's knock with an invite; bob joins and talks.
    await accept_knock(alice, bob, room, "thanks for letting me in")

    # B is in the room now: carol's new knock is an event of the room, and so is its retraction.
    await carol.call("POST", f"/knock/{q(room)}", {"reason": "again"})
    await alice.sync_until(member_event(room, carol.user_id, "knock"))
    await carol.call("POST", f"/rooms/{q(room)}/leave", {})
    await alice.sync_until(member_event(room, carol.user_id, "leave"))


async def test_knock_retracted_while_not_in_the_room(gateways):  # noqa: F811
    a, b, alice, bob, carol = gateways
    room = await knock_room(alice)
    await carol.call("POST", f"/knock/{q(room)}", {}, params={"via": a.server_name})
    await carol.sync_until(knocked(room))
    await alice.sync_until(member_event(room, carol.user_id, "knock"))
    # B is not in the room: the leave goes through A (make_leave/send_leave).
    await carol.call("POST", f"/rooms/{q(room)}/leave", {"reason": "never mind"})
    gone = await alice.sync_until(member_event(room, carol.user_id, "leave"))
    assert gone["sender"] == carol.user_id and gone["content"].get("reason") == "never mind"
    await carol.sync_until(left(room))

    # Knocking on a room whose join rules do not allow it: A's refusal reaches carol.
    public = (await alice.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
    refused = await carol.call("POST", f"/knock/{q(public)}", {}, params={"via": a.server_name}, expect=403)
    assert refused["errcode"] == "M_FORBIDDEN"

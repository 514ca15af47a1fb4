"""Restricted rooms (rooms 8+) on our server, on both database engines: a scripted
remote server joins through make_join/send_join with real signed requests, and local
users join through the Client-Server API.

Spec: https://spec.matrix.org/latest/server-server-api/#restricted-rooms,
https://spec.matrix.org/latest/client-server-api/#restricted-rooms
"""

from __future__ import annotations

from urllib.parse import quote

import aiohttp
import pytest

from federation.events import PDU
from federation.net.client import FederationRequestError
from federation.room_versions import get_room_version
from federation.signing import verify_event_signatures
from tests.gateway.federation_api.test_transactions import (  # noqa: F401 - fixtures
    Client,
    alice,
    ca,
    gw,
    join_bob,
    public_room,
    remote,
)

AUTHORISER = "join_authorised_via_users_server"


def restricted_to(*room_ids: str) -> dict:
    return {"type": "m.room.join_rules", "state_key": "", "content": {
        "join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": r} for r in room_ids]}}


async def restricted_room(alice, allowed: list[str], version: str = "10") -> str:
    return (await alice.call("POST", "/createRoom", {"preset": "private_chat", "room_version": version,
                                                       "initial_state": [restricted_to(*allowed)]}))["room_id"]


async def refused(coro) -> tuple[int, str]:
    with pytest.raises(FederationRequestError) as err:
        await coro
    return err.value.status, err.value.body.get("errcode")


async def membership(gw, room_id: str, user_id: str) -> str | None:
    m = await gw.hs.events.state.get_membership(room_id, user_id)
    return None if m is None else m.membership


@pytest.mark.parametrize("version", ["10", "12"])
async def test_remote_user_in_the_allowed_room_is_authorised(gw, remote, alice, version):
    space, view = await public_room(gw, alice, remote)
    room = await restricted_room(alice, [space], version)
    bob = f"@bob:{remote.server_name}"
    # Not in the space: 403 M_FORBIDDEN (fails every condition).
    assert await refused(remote.join_via(gw.server_name, room, bob)) == (403, "M_FORBIDDEN")

    await join_bob(gw, remote, view)
    event, answer = await remote.join_via(gw.server_name, room, bob)
    assert event["content"][AUTHORISER] == alice.user_id
    # The answer carries our copy, signed by us as the authoriser's server (and by bob's).
    signed = answer["event"]
    assert set(signed["signatures"]) == {remote.server_name, gw.server_name}
    keys = {(gw.server_name, gw.hs.signing_key.key_id): gw.hs.signing_key.verify_key,
            (remote.server_name, remote.key.key_id): remote.key.verify_key}
    verify_event_signatures(signed, get_room_version(version), lambda s, k: keys.get((s, k)))
    assert await membership(gw, room, bob) == "join"
    stored = await gw.hs.events.store.get_event(PDU.from_pdu_json(signed, get_room_version(version)).event_id)
    assert stored.pdu.signatures[gw.server_name] and stored.pdu.content[AUTHORISER] == alice.user_id


async def test_conditions_on_rooms_we_are_not_in_cannot_be_checked(gw, remote, alice):
    elsewhere = f"!elsewhere:{remote.server_name}"
    room = await restricted_room(alice, [elsewhere])
    bob = f"@bob:{remote.server_name}"
    assert await refused(remote.join_via(gw.server_name, room, bob)) == (400, "M_UNABLE_TO_AUTHORISE_JOIN")
    # A room we know and one we do not: the user fails the known one -> still unable
    # (another server may be in the other room).
    space, _ = await public_room(gw, alice, remote)
    room2 = await restricted_room(alice, [space, elsewhere])
    assert await refused(remote.join_via(gw.server_name, room2, bob)) == (400, "M_UNABLE_TO_AUTHORISE_JOIN")
    # Malformed conditions only: failed all conditions.
    room3 = (await alice.call("POST", "/createRoom", {"preset": "private_chat", "room_version": "10", "initial_state": [
        {"type": "m.room.join_rules", "state_key": "", "content": {
            "join_rule": "restricted", "allow": [{"type": "m.room_membership"}, {"type": "x", "room_id": space}]}}]}
    ))["room_id"]
    assert await refused(remote.join_via(gw.server_name, room3, bob)) == (403, "M_FORBIDDEN")


async def test_no_local_user_may_invite(gw, remote, alice):
    space, view = await public_room(gw, alice, remote)
    room = await restricted_room(alice, [space])
    levels = await alice.call("GET", f"/rooms/{quote(room)}/state/m.room.power_levels")
    await alice.call("PUT", f"/rooms/{quote(room)}/state/m.room.power_levels",
                     {**levels, "invite": 50, "users": {alice.user_id: 10}})
    bob = await join_bob(gw, remote, view)
    assert await refused(remote.join_via(gw.server_name, room, bob)) == (400, "M_UNABLE_TO_GRANT_JOIN")

    # A join naming alice anyway is not signed by us: send_join answers the same error
    # and nothing is stored.
    def naming_alice(template):
        return {**template, "content": {**template["content"], AUTHORISER: alice.user_id}}

    assert await refused(_send_join_with(gw, remote, room, bob, naming_alice)) == (400, "M_UNABLE_TO_GRANT_JOIN")
    assert await membership(gw, room, bob) is None


async def _send_join_with(gw, remote, room_id, user_id, edit):
    """send_join of a join event the joining server built itself (no make_join) on the
    room's current head, its content changed by ``edit``: a server lying about the
    conditions."""
    from federation.auth_rules import auth_types_for_event
    from federation.room_membership import event_from_template, membership_template

    room = await gw.hs.events.store.get_room(room_id)
    rv = room.room_version
    state = await gw.hs.events.state.get_current_state_ids(room_id)

    content = edit({"content": {"membership": "join"}})["content"]
    keys = auth_types_for_event(rv, "m.room.member", user_id, user_id, content)
    prev = await gw.hs.events.store.get_forward_extremities(room_id)
    depths = await gw.hs.events.store.get_depths(prev)
    template = membership_template(rv, room_id=room_id, user_id=user_id, content=content, prev_event_ids=prev,
                                   auth_event_ids=[state[k] for k in sorted(keys) if k in state],
                                   depth=max(depths.values()) + 1, origin=gw.server_name, origin_server_ts=1)
    event = event_from_template(template, rv, membership="join", user_id=user_id, room_id=room_id,
                                server_name=remote.server_name, signing_key=remote.key, origin_server_ts=2)
    event_id = PDU.from_pdu_json(event, rv).event_id
    return await remote.client.request(
        "PUT", gw.server_name, f"/_matrix/federation/v2/send_join/{quote(room_id, safe='')}/{quote(event_id, safe='')}",
        content=event)


async def test_send_join_checks_the_conditions_again(gw, remote, alice):
    """A joining server that names our user without meeting the conditions (it never
    got a template from us) is refused; our signature never leaves the server."""
    space, view = await public_room(gw, alice, remote)
    room = await restricted_room(alice, [space])
    bob = f"@bob:{remote.server_name}"

    def naming_alice(template):
        return {**template, "content": {**template["content"], AUTHORISER: alice.user_id}}

    assert await refused(_send_join_with(gw, remote, room, bob, naming_alice)) == (403, "M_FORBIDDEN")
    assert await membership(gw, room, bob) is None
    # Without an authoriser the auth rules refuse it (restricted, not invited).
    assert (await refused(_send_join_with(gw, remote, room, bob, lambda t: t)))[0] == 403
    # Once in the space the same kind of event is accepted and co-signed.
    await join_bob(gw, remote, view)
    answer = await _send_join_with(gw, remote, room, bob, naming_alice)
    assert gw.hs.server_name in answer["event"]["signatures"]
    assert await membership(gw, room, bob) == "join"


@pytest.mark.parametrize("version", ["10", "12"])
async def test_local_users_join_restricted_rooms(gw, alice, version):
    space = (await alice.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
    room = await restricted_room(alice, [space], version)
    async with aiohttp.ClientSession() as s:
        users = []
        for name in ("carol", "dave"):
            async with s.post(gw.url + "/_matrix/client/v3/register", ssl=gw.ssl, json={
                    "username": name, "password": "pw-xxxxxxxx", "auth": {"type": "m.login.dummy"}}) as r:
                body = await r.json()
            users.append(Client(gw, s, body["access_token"], body["user_id"]))
        carol, dave = users

        async def join(client, room_id):
            async with s.post(f"{gw.url}/_matrix/client/v3/join/{quote(room_id)}", json={}, ssl=gw.ssl,
                              headers={"Authorization": f"Bearer {client.token}"}) as r:
                return r.status, await r.json()

        status, body = await join(carol, room)
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
        assert await membership(gw, room, carol.user_id) is None
        assert (await join(carol, space))[0] == 200
        assert await join(carol, room) == (200, {"room_id": room})
        event = await carol.call("GET", f"/rooms/{quote(room)}/state/m.room.member/{quote(carol.user_id)}")
        assert event == {"membership": "join", AUTHORISER: alice.user_id, **{k: v for k, v in event.items()
                                                                            if k in ("displayname",)}}
        # An invited user needs no authoriser.
        await alice.call("POST", f"/rooms/{quote(room)}/invite", {"user_id": dave.user_id})
        assert await join(dave, room) == (200, {"room_id": room})
        event = await dave.call("GET", f"/rooms/{quote(room)}/state/m.room.member/{quote(dave.user_id)}")
        assert event["membership"] == "join" and AUTHORISER not in event

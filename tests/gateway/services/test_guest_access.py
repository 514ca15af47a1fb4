"""Guests leave a room when another server's user stops it admitting guests: a scripted
remote server sends the ``m.room.guest_access`` change in a real signed transaction, on
both database engines; a guest cannot join a remote room whose state we do not have.

Spec: https://spec.matrix.org/latest/client-server-api/#guest-access (server behaviour)
"""

from __future__ import annotations

import aiohttp
import pytest

from tests.gateway.federation_api.test_transactions import Client, ca, public_room, remote  # noqa: F401
from tests.support.fake_remote import local_gateway


@pytest.fixture
async def gw(tmp_path, database_config, ca):  # noqa: F811
    async with local_gateway(tmp_path, database_config, ca, {"allow_guest_access": True}) as g:
        yield g


async def register(gw, session, *, guest: bool) -> Client:
    params = {"kind": "guest"} if guest else {}
    body = {} if guest else {"username": "alice", "password": "pw-xxxxxxxx", "auth": {"type": "m.login.dummy"}}
    async with session.post(gw.url + "/_matrix/client/v3/register", params=params, json=body, ssl=gw.ssl) as r:
        data = await r.json()
        assert r.status == 200, data
    return Client(gw, session, data["access_token"], data["user_id"])


async def test_guests_leave_when_a_remote_user_revokes_guest_access(gw, remote):  # noqa: F811
    async with aiohttp.ClientSession() as session:
        alice = await register(gw, session, guest=False)
        guest = await register(gw, session, guest=True)
        bob = f"@bob:{remote.server_name}"
        room_id, view = await public_room(gw, alice, remote, "10", initial_state=[
            {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "can_join"}}],
            power_level_content_override={"users": {alice.user_id: 100, bob: 100}})
        join = view.make("m.room.member", bob, {"membership": "join"}, state_key=bob)
        assert await remote.send(gw.server_name, [join]) == {"pdus": {view.event_id(join, view.rv): {}}}
        await guest.call("POST", f"/join/{room_id}", {})
        since = (await guest.call("GET", "/sync"))["next_batch"]
        view.learn([(await gw.hs.events.store.get_event(
            await gw.hs.events.state.get_current_state_event_id(room_id, "m.room.member", guest.user_id))).pdu])

        revoke = view.make("m.room.guest_access", bob, {"guest_access": "forbidden"}, state_key="")
        assert await remote.send(gw.server_name, [revoke]) == {"pdus": {view.event_id(revoke, view.rv): {}}}
        for _ in range(10):  # each sync long-polls until something happens
            body = await guest.call("GET", f"/sync?since={since}&timeout=10000")
            since = body["next_batch"]
            if room_id in body["rooms"]["leave"]:
                break
        member = await gw.hs.events.state.get_membership(room_id, guest.user_id)
        assert member.membership == "leave" and member.sender == guest.user_id
        alice_member = await gw.hs.events.state.get_membership(room_id, alice.user_id)
        assert alice_member.membership == "join"


async def test_guests_cannot_join_a_remote_room_we_know_nothing_of(gw):
    async with aiohttp.ClientSession() as session:
        guest = await register(gw, session, guest=True)
        async with session.post(gw.url + "/_matrix/client/v3/join/!elsewhere:example.org", json={}, ssl=gw.ssl,
                                headers={"Authorization": f"Bearer {guest.token}"}) as r:
            assert (r.status, (await r.json())["errcode"]) == (403, "M_GUEST_ACCESS_FORBIDDEN")

"""Faster joins with a real Synapse as the resident: our user joins a Synapse room of 30
members, Synapse answers send_join with the members omitted, messages flow both ways
while our server only has the partial state, /joined_members waits for the background
resync and then lists everyone, and messages still flow afterwards.

Spec: https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv2send_joinroomideventid
(``omit_members``); our server runs in-process so the test can hold its resync.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from gateway.config import DatabaseConfig
from tests.support.client_api import LAZY_MEMBERS, Client, has_text, member_event, q
from tests.support.fake_remote import local_gateway
from tests.support.synapse import register_synapse_user, unique_localpart

#: Users of the Synapse room (all joined before ours).
SYNAPSE_MEMBERS = 30


async def _until(predicate, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition never met"
        await asyncio.sleep(0.02)


@pytest.fixture
async def servers(tmp_path, shared_synapse):
    synapse = shared_synapse  # the process's (tests/interop/conftest.py): users of our own below
    (tmp_path / "gw").mkdir()
    db = DatabaseConfig("sqlite", {"database": str(tmp_path / "gw" / "gateway.db")})
    async with local_gateway(tmp_path / "gw", db, synapse.ca) as gw, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=gw.ssl)) as s:
        await gw.hs.federation_sender.start()
        yield gw, synapse, s


async def test_joining_a_big_synapse_room_with_partial_state(servers):
    gw, synapse, s = servers
    hs = gw.hs
    members, prefix = [], unique_localpart("user")
    for i in range(SYNAPSE_MEMBERS):
        token = await register_synapse_user(synapse, f"{prefix}-{i}")
        members.append(Client(s, synapse.client_url, token, f"@{prefix}-{i}:{synapse.server_name}"))
    owner = members[0]
    room = (await owner.call("POST", "/createRoom", {"preset": "public_chat", "name": "Crowd"}))["room_id"]
    for m in members[1:]:
        await m.call("POST", f"/join/{q(room)}", {})
    await owner.send_text(room, "before the gateway")
    await owner.sync_until(lambda b: True)

    # Hold our resync until messages went both ways on the partial state.
    gate = asyncio.Event()
    fetch = hs.partial_state._fetch_full_state

    async def held(*args, **kwargs):
        await gate.wait()
        return await fetch(*args, **kwargs)

    hs.partial_state._fetch_full_state = held
    async with s.post(f"{gw.url}/_matrix/client/v3/register", json={
            "username": "alice", "password": "alice-pass", "auth": {"type": "m.login.dummy"}}) as r:
        body = await r.json()
    alice = Client(s, gw.url, body["access_token"], body["user_id"])
    alice.sync_filter = LAZY_MEMBERS  # a client that sees the room while its state is partial
    assert await alice.call("POST", f"/join/{q(room)}", {}, params={"via": synapse.server_name}) == {"room_id": room}
    assert await hs.partial_state.is_partial(room)
    known = {m.user_id for m in await hs.events.state.get_members(room, "join")}
    assert alice.user_id in known and len(known) < SYNAPSE_MEMBERS  # Synapse left the members out
    await alice.sync_until(member_event(room, alice.user_id, "join"))
    await owner.sync_until(member_event(room, alice.user_id, "join"))

    await alice.send_text(room, "hello from a partial join")
    await owner.sync_until(has_text(room, "hello from a partial join"))
    await members[7].send_text(room, "hello to a partial join")
    await alice.sync_until(has_text(room, "hello to a partial join"))

    waiting = asyncio.create_task(alice.call("GET", f"/rooms/{q(room)}/joined_members"))
    await _until(lambda: hs.partial_state.waiting(room) == 1)
    gate.set()
    joined = (await asyncio.wait_for(waiting, 120))["joined"]
    assert set(joined) == {m.user_id for m in members} | {alice.user_id}
    assert not await hs.partial_state.is_partial(room)
    chunk = (await alice.call("GET", f"/rooms/{q(room)}/members"))["chunk"]
    assert len([e for e in chunk if e["content"]["membership"] == "join"]) == SYNAPSE_MEMBERS + 1

    await alice.send_text(room, "hello with the full state")
    await members[12].sync_until(has_text(room, "hello with the full state"))
    await members[20].send_text(room, "back at you")
    await alice.sync_until(has_text(room, "back at you"))
    # Someone joining afterwards is seen as usual.
    latecomer = unique_localpart("late")
    late = Client(s, synapse.client_url, await register_synapse_user(synapse, latecomer),
                  f"@{latecomer}:{synapse.server_name}")
    await late.call("POST", f"/join/{q(room)}", {})
    await alice.sync_until(member_event(room, late.user_id, "join"))
    joined = (await alice.call("GET", f"/rooms/{q(room)}/joined_members"))["joined"]
    assert late.user_id in joined and len(joined) == SYNAPSE_MEMBERS + 2

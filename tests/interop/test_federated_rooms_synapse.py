"""Users of our server and of a real Synapse in the same rooms: joins both ways, messages
both ways seen in /sync, invites both ways (accepted and rejected), leave and kick seen
on the other side, and joining by an alias of the other server.

Each server is driven through its own Client-Server API.
"""

from __future__ import annotations

import aiohttp
import pytest
import pytest_asyncio

from tests.support.client_api import Client, has_text, invited_to, left, member_event, q, timeline_bodies
from tests.support.gateway_server import running_gateway
from tests.support.synapse import register_synapse_user, unique_localpart


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def servers(tmp_path_factory, shared_synapse):
    """The process's shared Synapse (its own user here) and one of ours for the whole
    module (each test makes its own rooms). Modules that import this fixture share it
    the same way and need ``pytestmark = pytest.mark.asyncio(loop_scope="module")``."""
    tmp_path = tmp_path_factory.mktemp("synapse_and_gateway")
    synapse = shared_synapse
    ca = synapse.ca
    extra = {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
             "enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4,
             "rc_registration": {"per_second": 1000, "burst_count": 1000}}
    async with running_gateway(tmp_path, ca, extra) as gw, aiohttp.ClientSession() as s:
        async with s.post(f"{gw.client_url}/_matrix/client/v3/register", json={
                "username": "alice", "password": "alice-pass", "auth": {"type": "m.login.dummy"}}) as r:
            body = await r.json()
        alice = Client(s, gw.client_url, body["access_token"], body["user_id"])
        localpart = unique_localpart("bob")
        bob = Client(s, synapse.client_url, await register_synapse_user(synapse, localpart),
                     f"@{localpart}:{synapse.server_name}")
        await alice.sync_until(lambda b: True)
        await bob.sync_until(lambda b: True)
        yield gw, synapse, alice, bob


async def test_our_user_joins_a_synapse_room_and_talks(servers):
    gw, synapse, alice, bob = servers
    room = (await bob.call("POST", "/createRoom", {"preset": "public_chat", "name": "Garden",
                                                   "room_alias_name": "garden"}))["room_id"]
    await bob.send_text(room, "before alice")
    # Joined by alias of the other server: resolved over federation, joined through it.
    joined = await alice.call("POST", f"/join/{q(f'#garden:{synapse.server_name}')}", {})
    assert joined == {"room_id": room}
    # Alice's /sync has the room, its name and her join.
    first = await alice.sync_until(member_event(room, alice.user_id, "join"))
    assert first["sender"] == alice.user_id
    state = await alice.call("GET", f"/rooms/{q(room)}/state/m.room.name")
    assert state == {"name": "Garden"}
    # Synapse sees her join.
    await bob.sync_until(member_event(room, alice.user_id, "join"))
    # Messages both ways.
    await alice.send_text(room, "hello from gateway")
    await bob.sync_until(has_text(room, "hello from gateway"))
    await bob.send_text(room, "hello from synapse")
    await alice.sync_until(has_text(room, "hello from synapse"))
    # Alice leaves: Synapse sees it.
    await alice.call("POST", f"/rooms/{q(room)}/leave", {})
    await bob.sync_until(member_event(room, alice.user_id, "leave"))


async def test_synapse_user_joins_our_room_and_is_kicked(servers):
    gw, synapse, alice, bob = servers
    room = (await alice.call("POST", "/createRoom", {"preset": "public_chat", "name": "Lobby",
                                                     "room_alias_name": "lobby"}))["room_id"]
    joined = await bob.call("POST", f"/join/{q(f'#lobby:{gw.server_name}')}", {})
    assert joined["room_id"] == room
    await alice.sync_until(member_event(room, bob.user_id, "join"))
    name = await bob.call("GET", f"/rooms/{q(room)}/state/m.room.name")
    assert name == {"name": "Lobby"}
    await bob.send_text(room, "synapse says hi")
    await alice.sync_until(has_text(room, "synapse says hi"))
    await alice.send_text(room, "gateway says hi")
    await bob.sync_until(has_text(room, "gateway says hi"))
    # A kick by our user is seen on Synapse.
    await alice.call("POST", f"/rooms/{q(room)}/kick", {"user_id": bob.user_id, "reason": "bye"})
    await bob.sync_until(left(room))
    await alice.sync_until(member_event(room, bob.user_id, "leave"))


async def test_invites_both_ways(servers):
    gw, synapse, alice, bob = servers
    # Synapse invites our user; she accepts.
    room1 = (await bob.call("POST", "/createRoom", {"preset": "private_chat", "name": "Secret"}))["room_id"]
    await bob.call("POST", f"/rooms/{q(room1)}/invite", {"user_id": alice.user_id})
    invite = await alice.sync_until(invited_to(room1))
    stripped = {e["type"]: e for e in invite["invite_state"]["events"]}
    assert stripped["m.room.name"]["content"] == {"name": "Secret"}
    assert stripped["m.room.member"]["state_key"] == alice.user_id
    await alice.call("POST", f"/join/{q(room1)}", {})
    await bob.sync_until(member_event(room1, alice.user_id, "join"))
    await bob.send_text(room1, "welcome")
    await alice.sync_until(has_text(room1, "welcome"))

    # Synapse invites again into another room; she rejects (make_leave/send_leave).
    room2 = (await bob.call("POST", "/createRoom", {"preset": "private_chat", "name": "Nope"}))["room_id"]
    await bob.call("POST", f"/rooms/{q(room2)}/invite", {"user_id": alice.user_id})
    await alice.sync_until(invited_to(room2))
    await alice.call("POST", f"/rooms/{q(room2)}/leave", {})
    await bob.sync_until(member_event(room2, alice.user_id, "leave"))
    await alice.sync_until(left(room2))

    # Our user invites the Synapse user; he accepts.
    room3 = (await alice.call("POST", "/createRoom", {"preset": "private_chat", "name": "Ours"}))["room_id"]
    await alice.call("POST", f"/rooms/{q(room3)}/invite", {"user_id": bob.user_id})
    invite = await bob.sync_until(invited_to(room3))
    assert {e["type"] for e in invite["invite_state"]["events"]} >= {"m.room.create", "m.room.name"}
    await bob.call("POST", f"/join/{q(room3)}", {})
    await alice.sync_until(member_event(room3, bob.user_id, "join"))
    await bob.send_text(room3, "thanks")
    await alice.sync_until(has_text(room3, "thanks"))

    # And once more; he rejects.
    room4 = (await alice.call("POST", "/createRoom", {"preset": "private_chat", "name": "Ours too"}))["room_id"]
    await alice.call("POST", f"/rooms/{q(room4)}/invite", {"user_id": bob.user_id})
    await bob.sync_until(invited_to(room4))
    await bob.call("POST", f"/rooms/{q(room4)}/leave", {})
    await alice.sync_until(member_event(room4, bob.user_id, "leave"))


async def test_history_of_a_synapse_room_is_backfilled(servers):
    gw, synapse, alice, bob = servers
    room = (await bob.call("POST", "/createRoom", {"preset": "public_chat", "name": "Old"}))["room_id"]
    for i in range(500):
        await bob.send_text(room, f"old {i}")
    await alice.call("POST", f"/join/{q(room)}", {}, params={"via": synapse.server_name})
    sync = await alice.sync_until(member_event(room, alice.user_id, "join"))
    assert sync["sender"] == alice.user_id
    # Paginate back to the create event.
    seen: list[dict] = []
    token = None
    for _ in range(20):
        params = {"dir": "b", "limit": "100", **({"from": token} if token else {})}
        page = await alice.call("GET", f"/rooms/{q(room)}/messages", params=params)
        seen += page["chunk"]
        if not page["chunk"] or page["chunk"][-1]["type"] == "m.room.create" or "end" not in page:
            break
        token = page["end"]
    assert seen[-1]["type"] == "m.room.create"
    bodies = [e["content"]["body"] for e in reversed(seen) if e["type"] == "m.room.message"]
    assert bodies == [f"old {i}" for i in range(500)]
    ids = [e["event_id"] for e in seen]
    assert len(ids) == len(set(ids))
    # None of it shows up as new in /sync: the next incremental sync has only the new message.
    await alice.send_text(room, "now")
    later = await alice.sync_until(lambda b: b if timeline_bodies(room)(b) else None)
    assert timeline_bodies(room)(later) == ["now"]


async def test_synapse_joining_with_omitted_members_ends_up_with_all_of_them(servers, tmp_path):
    """Synapse joins with ``omit_members=true`` (a partial-state join) and fetches the
    rest of the state from us afterwards: its member list ends up complete, members who
    joined before it included."""
    gw, synapse, alice, bob = servers
    room = (await alice.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
    others = []
    for i in range(7):
        async with alice.s.post(f"{gw.client_url}/_matrix/client/v3/register", json={
                "username": f"early{i}", "password": "early-pass", "auth": {"type": "m.login.dummy"}}) as r:
            body = await r.json()
            assert r.status == 200, body
        member = Client(alice.s, gw.client_url, body["access_token"], body["user_id"])
        await member.call("POST", f"/join/{q(room)}", {})
        others.append(member.user_id)
    await bob.call("POST", f"/join/{q(room)}", {}, params={"server_name": gw.server_name})
    # Synapse's /sync shows the room once its state is complete.
    await bob.sync_until(member_event(room, bob.user_id, "join"), timeout=120)
    joined = await bob.call("GET", f"/rooms/{q(room)}/joined_members")
    assert set(joined["joined"]) == {alice.user_id, bob.user_id, *others}
    members = await bob.call("GET", f"/rooms/{q(room)}/members")
    assert {e["state_key"] for e in members["chunk"] if e["content"]["membership"] == "join"} == \
        {alice.user_id, bob.user_id, *others}
    # It did join with a reduced answer (the send_join it sent for this room asked for
    # one; the log is shared with the other modules that use this Synapse).
    assert any("omit_members=true" in line for line in synapse.log_path.read_text().splitlines()
               if f"/send_join/{q(room)}/" in line)


async def test_a_synapse_user_binds_an_address_invited_to_our_room(servers):
    """Third-party invites with Synapse as the invitee's server: alice invites an unbound
    address through our identity server; bob binds it; the identity server calls Synapse's
    ``/3pid/onbind`` (with POST, as Sydent: Synapse answers the spec's PUT with 405, so we
    take both); Synapse (not in the room) asks us with ``exchange_third_party_invite``;
    we send the invite (Synapse co-signs it) and bob joins."""
    import ssl

    from tests.support.identity_server import ACCESS_TOKEN, start_identity_server

    gw, synapse, alice, bob = servers
    identity, runner = await start_identity_server(synapse.ca)
    try:
        identity.onbind_ssl = ssl.create_default_context(cafile=str(synapse.ca.ca_path))
        identity.onbind_urls[synapse.server_name] = f"https://{synapse.server_name}"
        identity.onbind_method = "POST"
        room = (await alice.call("POST", "/createRoom", {"preset": "private_chat", "name": "By mail"}))["room_id"]
        await alice.call("POST", f"/rooms/{q(room)}/invite", {
            "id_server": identity.name, "id_access_token": ACCESS_TOKEN, "medium": "email",
            "address": "bob@example.org"})
        (stored,) = identity.invites
        await identity.bind("email", "bob@example.org", bob.user_id)
        assert identity.onbind_answers == [200]
        await bob.sync_until(invited_to(room))
        invite = await alice.sync_until(member_event(room, bob.user_id, "invite"))
        assert invite["sender"] == alice.user_id
        assert invite["content"]["third_party_invite"]["signed"]["token"] == stored["token"]
        await bob.call("POST", f"/join/{q(room)}", {})
        await alice.sync_until(member_event(room, bob.user_id, "join"))
    finally:
        await runner.cleanup()

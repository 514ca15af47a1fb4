"""Profiles with a real Synapse (one Synapse and one gateway for the module): our user's
display name and avatar changes reach Synapse in a room they share (Synapse's room and
ours), each side reads the other's users' profiles over federation (extended fields
too), and our invites of a Synapse user carry that user's profile as Synapse gives it."""

from __future__ import annotations

import aiohttp
import pytest
import pytest_asyncio

from tests.support.client_api import Client, invited_to, member_event, q
from tests.support.gateway_server import running_gateway
from tests.support.synapse import SynapseServer, register_synapse_user, unique_localpart

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Env:
    gw: object
    synapse: SynapseServer
    session: aiohttp.ClientSession


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory, shared_synapse):
    e = Env()
    tmp = tmp_path_factory.mktemp("profiles_synapse")
    e.synapse = shared_synapse
    ca = e.synapse.ca
    extra = {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
             "enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4}
    (tmp / "gw").mkdir()
    async with running_gateway(tmp / "gw", ca, extra) as gw, aiohttp.ClientSession() as s:
        e.gw, e.session = gw, s
        yield e


async def ours(env: Env, localpart: str) -> Client:
    async with env.session.post(f"{env.gw.client_url}/_matrix/client/v3/register", json={
            "username": localpart, "password": "secret-pass", "auth": {"type": "m.login.dummy"}}) as r:
        body = await r.json()
        assert r.status == 200, body
    return Client(env.session, env.gw.client_url, body["access_token"], body["user_id"])


async def theirs(env: Env, localpart: str) -> Client:
    localpart = unique_localpart(localpart)  # the Synapse is shared with other modules
    token = await register_synapse_user(env.synapse, localpart)
    return Client(env.session, env.synapse.client_url, token, f"@{localpart}:{env.synapse.server_name}")


def member_with(room_id: str, user_id: str, **content):
    """A /sync predicate: ``user_id``'s join event in ``room_id`` with ``content`` in it."""
    find = member_event(room_id, user_id, "join")

    def check(body):
        event = find(body)
        return event if event and all(event["content"].get(k) == v for k, v in content.items()) else None
    return check


async def test_our_profile_change_reaches_synapse(env):
    alice, bob = await ours(env, "alice"), await theirs(env, "bob")
    # A room on our server and one on Synapse, both with alice and bob in them.
    our_room = (await alice.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
    await bob.call("POST", f"/join/{q(our_room)}", {}, params={"via": env.gw.server_name})
    their_room = (await bob.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
    await alice.call("POST", f"/join/{q(their_room)}", {}, params={"via": env.synapse.server_name})
    await bob.sync_until(member_event(their_room, alice.user_id, "join"))
    await bob.sync_until(lambda b: True)  # bob's next /sync starts after the joins

    await alice.call("PUT", f"/profile/{q(alice.user_id)}/displayname", {"displayname": "Alice Renamed"})
    await alice.call("PUT", f"/profile/{q(alice.user_id)}/avatar_url", {"avatar_url": "mxc://example/alice"})
    seen: dict[str, dict] = {}

    def both_rooms(body):
        for room_id in (our_room, their_room):
            event = member_with(room_id, alice.user_id, displayname="Alice Renamed",
                                avatar_url="mxc://example/alice")(body)
            if event:
                seen[room_id] = event
        return len(seen) == 2

    await bob.sync_until(both_rooms)
    for room_id in (our_room, their_room):
        # Synapse's own view of the room state.
        state = await bob.call("GET", f"/rooms/{q(room_id)}/state/m.room.member/{q(alice.user_id)}")
        assert state == {"membership": "join", "displayname": "Alice Renamed", "avatar_url": "mxc://example/alice"}
        assert seen[room_id]["sender"] == alice.user_id
    members = await bob.call("GET", f"/rooms/{q(their_room)}/joined_members")
    assert members["joined"][alice.user_id]["display_name"] == "Alice Renamed"


async def test_we_read_a_synapse_users_profile(env):
    alice, carol = await ours(env, "alice2"), await theirs(env, "carol")
    await carol.call("PUT", f"/profile/{q(carol.user_id)}/displayname", {"displayname": "Carol C"})
    await carol.call("PUT", f"/profile/{q(carol.user_id)}/m.tz", {"m.tz": "America/New_York"})
    whole = await alice.call("GET", f"/profile/{q(carol.user_id)}")
    assert whole["displayname"] == "Carol C" and whole["m.tz"] == "America/New_York"
    # Another user's fields, without a token (profiles are public by default).
    async with env.session.get(f"{env.gw.client_url}/_matrix/client/v3/profile/{q(carol.user_id)}/m.tz") as r:
        assert (r.status, await r.json()) == (200, {"m.tz": "America/New_York"})
    nobody = f"@nobody:{env.synapse.server_name}"
    answer = await alice.call("GET", f"/profile/{q(nobody)}", expect=404)
    assert answer["errcode"] == "M_NOT_FOUND"


async def test_synapse_reads_our_users_profile(env):
    dave, erin = await ours(env, "dave"), await theirs(env, "erin")
    await dave.call("PUT", f"/profile/{q(dave.user_id)}/displayname", {"displayname": "Dave D"})
    await dave.call("PUT", f"/profile/{q(dave.user_id)}/avatar_url", {"avatar_url": "mxc://example/dave"})
    await dave.call("PUT", f"/profile/{q(dave.user_id)}/com.example.team", {"com.example.team": ["blue"]})
    assert await erin.call("GET", f"/profile/{q(dave.user_id)}") == {
        "displayname": "Dave D", "avatar_url": "mxc://example/dave", "com.example.team": ["blue"]}
    assert await erin.call("GET", f"/profile/{q(dave.user_id)}/displayname") == {"displayname": "Dave D"}
    answer = await erin.call("GET", f"/profile/{q('@nobody:' + env.gw.server_name)}", expect=404)
    assert answer["errcode"] == "M_NOT_FOUND"


async def test_our_invite_carries_the_synapse_users_profile(env):
    fay, gus = await ours(env, "fay"), await theirs(env, "gus")
    await gus.call("PUT", f"/profile/{q(gus.user_id)}/displayname", {"displayname": "Gus G"})
    room = (await fay.call("POST", "/createRoom", {"preset": "private_chat"}))["room_id"]
    await fay.call("POST", f"/rooms/{q(room)}/invite", {"user_id": gus.user_id})
    invite = await fay.call("GET", f"/rooms/{q(room)}/state/m.room.member/{q(gus.user_id)}")
    assert invite == {"membership": "invite", "displayname": "Gus G"}
    # Synapse took the invite as it is.
    await gus.sync_until(invited_to(room))
    await gus.call("POST", f"/join/{q(room)}", {})
    joined = await fay.sync_until(member_event(room, gus.user_id, "join"))
    assert joined["content"]["displayname"] == "Gus G"


async def test_a_synapse_users_change_reaches_us_and_our_user_directory(env):
    hal, ivy = await ours(env, "hal"), await theirs(env, "ivy")
    room = (await hal.call("POST", "/createRoom", {"preset": "private_chat"}))["room_id"]
    await hal.call("POST", f"/rooms/{q(room)}/invite", {"user_id": ivy.user_id})
    await ivy.sync_until(invited_to(room))
    await ivy.call("POST", f"/join/{q(room)}", {})
    await hal.sync_until(member_event(room, ivy.user_id, "join"))
    await ivy.call("PUT", f"/profile/{q(ivy.user_id)}/displayname", {"displayname": "Ivy Quasar"})
    await hal.sync_until(member_with(room, ivy.user_id, displayname="Ivy Quasar"))
    found = await hal.call("POST", "/user_directory/search", {"search_term": "quasar"})
    assert found["results"] == [{"user_id": ivy.user_id, "display_name": "Ivy Quasar"}]

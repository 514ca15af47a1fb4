"""Profile changes reach rooms (in-process, both engines): a display name or avatar
change sends a new join event into every room the user is joined to (replacing a
per-room name, as Synapse does; rooms already showing it are left alone), the job
survives a restart, invites carry the invitee's profile, and the user directory follows."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest

from gateway.server import HomeServer

from .conftest import auth_header, register

C = "/_matrix/client/v3"


def q(s: str) -> str:
    return quote(s, safe="")


async def _room(client, h, **body) -> str:
    resp = await client.post(f"{C}/createRoom", json={"preset": "public_chat", **body}, headers=h)
    assert resp.status == 200
    return (await resp.json())["room_id"]


async def _member(client, h, room_id: str, user_id: str) -> dict:
    resp = await client.get(f"{C}/rooms/{q(room_id)}/state/m.room.member/{q(user_id)}", headers=h)
    assert resp.status == 200
    return await resp.json()


async def _member_event_id(hs, room_id: str, user_id: str) -> str:
    return (await hs.events.state.get_membership(room_id, user_id)).event_id


async def test_display_name_change_reaches_every_joined_room(client, hs):
    pat, quinn = await register(client, "pat"), await register(client, "quinn")
    hp, hq = auth_header(pat["access_token"]), auth_header(quinn["access_token"])
    mine = [await _room(client, hp), await _room(client, hp)]
    theirs = await _room(client, hq)
    assert (await client.post(f"{C}/join/{q(theirs)}", json={}, headers=hp)).status == 200
    invited = await _room(client, hq, preset="private_chat")
    assert (await client.post(f"{C}/rooms/{q(invited)}/invite", json={"user_id": "@pat:hs.test"},
                              headers=hq)).status == 200
    # A per-room name in one room: the global change replaces it (Synapse does the same).
    resp = await client.put(f"{C}/rooms/{q(mine[0])}/state/m.room.member/{q('@pat:hs.test')}",
                            json={"membership": "join", "displayname": "Pat in here"}, headers=hp)
    assert resp.status == 200
    invite_before = await _member_event_id(hs, invited, "@pat:hs.test")

    assert (await client.put(f"{C}/profile/@pat:hs.test/displayname", json={"displayname": "Patricia"},
                             headers=hp)).status == 200
    assert (await client.put(f"{C}/profile/@pat:hs.test/avatar_url", json={"avatar_url": "mxc://hs.test/pic"},
                             headers=hp)).status == 200
    await hs.profiles.idle()
    for room_id in [*mine, theirs]:
        content = await _member(client, hp, room_id, "@pat:hs.test")
        assert content == {"membership": "join", "displayname": "Patricia", "avatar_url": "mxc://hs.test/pic"}
        # Other members see it too.
        if room_id == theirs:
            assert (await _member(client, hq, room_id, "@pat:hs.test"))["displayname"] == "Patricia"
    # The invite is untouched; the job is gone.
    assert await _member_event_id(hs, invited, "@pat:hs.test") == invite_before
    assert await hs.profiles.store.pending_propagations() == []

    # The same name again: every room already shows it, so no new events.
    before = {r: await _member_event_id(hs, r, "@pat:hs.test") for r in [*mine, theirs]}
    assert (await client.put(f"{C}/profile/@pat:hs.test/displayname", json={"displayname": "Patricia"},
                             headers=hp)).status == 200
    await hs.profiles.idle()
    assert {r: await _member_event_id(hs, r, "@pat:hs.test") for r in before} == before

    # Other fields are not member event material.
    assert (await client.put(f"{C}/profile/@pat:hs.test/m.tz", json={"m.tz": "UTC"}, headers=hp)).status == 200
    await hs.profiles.idle()
    assert {r: await _member_event_id(hs, r, "@pat:hs.test") for r in before} == before

    # The member list (/members, /sync's state) shows the new name.
    members = await (await client.get(f"{C}/rooms/{q(theirs)}/joined_members", headers=hq)).json()
    assert members["joined"]["@pat:hs.test"] == {"display_name": "Patricia", "avatar_url": "mxc://hs.test/pic"}


async def test_newer_change_wins(client, hs):
    """Two quick changes: every room ends with the second, whatever the first job did."""
    h = auth_header((await register(client, "pat"))["access_token"])
    rooms = [await _room(client, h) for _ in range(3)]
    for name in ("First", "Second"):
        assert (await client.put(f"{C}/profile/@pat:hs.test/displayname", json={"displayname": name},
                                 headers=h)).status == 200
    await hs.profiles.idle()
    for room_id in rooms:
        assert (await _member(client, h, room_id, "@pat:hs.test"))["displayname"] == "Second"


async def test_propagation_resumes_after_a_restart(client, hs):
    """Acknowledged means stored: the server stops (here: its job is cut off in the
    middle, as a kill would) after answering the PUT; the next start sends the member
    events still missing."""
    h = auth_header((await register(client, "pat"))["access_token"])
    rooms = sorted([await _room(client, h) for _ in range(4)])
    reached, never = asyncio.Event(), asyncio.Event()
    real = hs.rooms.refresh_profile
    done: list[str] = []

    async def stalls_after_the_first(room_id, user_id, profile):
        if done:
            reached.set()
            await never.wait()  # the "kill" comes while this room is being updated
        done.append(room_id)
        return await real(room_id, user_id, profile)

    hs.rooms.refresh_profile = stalls_after_the_first
    assert (await client.put(f"{C}/profile/@pat:hs.test/displayname", json={"displayname": "Resumed"},
                             headers=h)).status == 200
    await reached.wait()
    await hs.profiles.close()  # the process is gone: its task never finishes
    assert done == rooms[:1]
    generation, last_done = await hs.profiles.store.get_propagation("@pat:hs.test")
    assert last_done == rooms[0]

    again = await HomeServer.open(hs.config)
    try:
        for room_id in rooms[1:]:  # not there yet
            assert (await again.events.state.get_membership(room_id, "@pat:hs.test")).displayname == "pat"
        await again.profiles.start()
        await again.profiles.idle()
        for room_id in rooms:
            assert (await again.events.state.get_membership(room_id, "@pat:hs.test")).displayname == "Resumed"
        assert await again.profiles.store.get_propagation("@pat:hs.test") is None
    finally:
        await again.close()


async def test_invites_carry_the_invitees_profile(client, hs):
    pat, quinn = await register(client, "pat"), await register(client, "quinn")
    hp, hq = auth_header(pat["access_token"]), auth_header(quinn["access_token"])
    await client.put(f"{C}/profile/@quinn:hs.test/displayname", json={"displayname": "Quinn Q"}, headers=hq)
    await client.put(f"{C}/profile/@quinn:hs.test/avatar_url", json={"avatar_url": "mxc://hs.test/q"}, headers=hq)
    room = await _room(client, hp, preset="private_chat")
    await client.post(f"{C}/rooms/{q(room)}/invite", json={"user_id": "@quinn:hs.test", "reason": "hi"}, headers=hp)
    assert await _member(client, hp, room, "@quinn:hs.test") == {
        "membership": "invite", "displayname": "Quinn Q", "avatar_url": "mxc://hs.test/q", "reason": "hi"}
    # createRoom's invites too; the join that follows carries the profile as well.
    room2 = await _room(client, hp, preset="private_chat", invite=["@quinn:hs.test"], is_direct=True)
    assert await _member(client, hp, room2, "@quinn:hs.test") == {
        "membership": "invite", "displayname": "Quinn Q", "avatar_url": "mxc://hs.test/q", "is_direct": True}
    assert (await client.post(f"{C}/join/{q(room2)}", json={}, headers=hq)).status == 200
    assert await _member(client, hp, room2, "@quinn:hs.test") == {
        "membership": "join", "displayname": "Quinn Q", "avatar_url": "mxc://hs.test/q"}


@pytest.mark.parametrize("config_overrides", [{"include_profile_data_on_invite": False}])
async def test_include_profile_data_on_invite_false(client, hs):
    hp = auth_header((await register(client, "pat"))["access_token"])
    await register(client, "quinn")
    room = await _room(client, hp, preset="private_chat")
    await client.post(f"{C}/rooms/{q(room)}/invite", json={"user_id": "@quinn:hs.test"}, headers=hp)
    assert await _member(client, hp, room, "@quinn:hs.test") == {"membership": "invite"}


async def test_user_directory_and_admin_changes_follow(client, hs):
    """The user directory shows the new name at once; an admin's change (admin API)
    reaches the rooms like the user's own."""
    pat, root = await register(client, "pat"), await register(client, "root")
    await hs.auth.users.set_admin("@root:hs.test", True)
    hp, hr = auth_header(pat["access_token"]), auth_header(root["access_token"])
    room = await _room(client, hp)
    assert (await client.post(f"{C}/join/{q(room)}", json={}, headers=hr)).status == 200
    await client.put(f"{C}/profile/@pat:hs.test/displayname", json={"displayname": "Zebedee"}, headers=hp)
    found = await (await client.post(f"{C}/user_directory/search", json={"search_term": "zebe"}, headers=hr)).json()
    assert found["results"] == [{"user_id": "@pat:hs.test", "display_name": "Zebedee"}]
    resp = await client.put("/_synapse/admin/v2/users/@pat:hs.test", json={"displayname": "Admin Named"}, headers=hr)
    assert resp.status == 200
    await hs.profiles.idle()
    assert (await _member(client, hr, room, "@pat:hs.test"))["displayname"] == "Admin Named"
    found = await (await client.post(f"{C}/user_directory/search", json={"search_term": "zebe"}, headers=hr)).json()
    assert found["results"] == []


async def test_own_member_event_gets_the_profile_when_it_names_none(client, hs):
    """A member event a client sends itself (``PUT /state/m.room.member/{own ID}``) without
    a display name or avatar carries the profile's; one that names its own (a per-room
    profile, ``allow_per_room_profiles`` being true by default) keeps them."""
    pat = await register(client, "pat")
    hp = auth_header(pat["access_token"])
    await client.put(f"{C}/profile/@pat:hs.test/displayname", json={"displayname": "Pat P"}, headers=hp)
    await client.put(f"{C}/profile/@pat:hs.test/avatar_url", json={"avatar_url": "mxc://hs.test/p"}, headers=hp)
    room = await _room(client, hp)
    url = f"{C}/rooms/{q(room)}/state/m.room.member/{q('@pat:hs.test')}"
    resp = await client.put(url, json={"membership": "join", "reason": "tidy"}, headers=hp)
    assert resp.status == 200, await resp.json()
    assert await _member(client, hp, room, "@pat:hs.test") == {
        "membership": "join", "displayname": "Pat P", "avatar_url": "mxc://hs.test/p", "reason": "tidy"}
    assert (await client.put(url, json={"membership": "join", "displayname": "Pat here"}, headers=hp)).status == 200
    assert await _member(client, hp, room, "@pat:hs.test") == {
        "membership": "join", "displayname": "Pat here", "avatar_url": "mxc://hs.test/p"}
    # A leave names no profile.
    assert (await client.put(url, json={"membership": "leave"}, headers=hp)).status == 200
    assert await _member(client, hp, room, "@pat:hs.test") == {"membership": "leave"}


@pytest.mark.parametrize("config_overrides", [{"allow_per_room_profiles": False}])
async def test_allow_per_room_profiles_false(client, hs):
    """Synapse's ``allow_per_room_profiles: false``: the display name and avatar a member
    event names are replaced by the profile's (removed when the profile has none)."""
    pat = await register(client, "pat")
    hp = auth_header(pat["access_token"])
    await client.put(f"{C}/profile/@pat:hs.test/displayname", json={"displayname": "Pat P"}, headers=hp)
    room = await _room(client, hp)
    url = f"{C}/rooms/{q(room)}/state/m.room.member/{q('@pat:hs.test')}"
    resp = await client.put(url, json={"membership": "join", "displayname": "Someone else",
                                       "avatar_url": "mxc://hs.test/other"}, headers=hp)
    assert resp.status == 200
    assert await _member(client, hp, room, "@pat:hs.test") == {"membership": "join", "displayname": "Pat P"}

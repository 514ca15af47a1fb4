"""Room upgrades over HTTP, on both engines: the new room's create event and state, the
tombstone, aliases and directory listing moved (also as other servers resolve them),
the old room restricted, bans, room v12 creators, the settings that follow members, the
errors, and concurrent requests."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest
from yarl import URL

from tests.gateway.federation_api.test_auth import fake, signed  # noqa: F401

from .conftest import auth_header, register
from .test_directory import get_alias, put_alias, put_state
from .test_push_rules import put
from .test_rooms import create, get, post, send

C = "/_matrix/client/v3"


async def upgrade(client, token, room_id, version, **extra):
    resp = await client.post(f"{C}/rooms/{room_id}/upgrade", json={"new_version": version, **extra},
                             headers=auth_header(token))
    return resp.status, await resp.json()


async def upgraded(client, token, room_id, version, **extra) -> str:
    status, body = await upgrade(client, token, room_id, version, **extra)
    assert status == 200, body
    return body["replacement_room"]


async def state_of(client, token, room_id) -> dict:
    status, events = await get(client, token, f"/rooms/{room_id}/state")
    assert status == 200, events
    return {(e["type"], e["state_key"]): e for e in events}


@pytest.fixture
async def alice(client):
    return (await register(client, "alice"))["access_token"]


@pytest.fixture
async def bob(client):
    return (await register(client, "bob"))["access_token"]


COPIED = {
    "m.room.name": {"name": "Garden"},
    "m.room.topic": {"topic": "Roses"},
    "m.room.avatar": {"url": "mxc://hs.test/avatar"},
    "m.room.encryption": {"algorithm": "m.megolm.v1.aes-sha2"},
    "m.room.server_acl": {"allow": ["*"], "allow_ip_literals": False, "deny": ["evil.test"]},
    "m.room.history_visibility": {"history_visibility": "joined"},
    "m.room.guest_access": {"guest_access": "forbidden"},
    "m.room.join_rules": {"join_rule": "public"},
}


@pytest.mark.parametrize("old_version,new_version", [("10", "11"), ("10", "12"), ("12", "12"), ("12", "9")])
async def test_upgrade_carries_the_room_over(client, alice, bob, fake, old_version, new_version):  # noqa: F811
    room = await create(client, alice, room_version=old_version, preset="public_chat", visibility="public",
                        creation_content={"type": "org.example.kind"})
    for event_type, content in COPIED.items():
        assert (await put_state(client, alice, room, event_type, content))[0] == 200
    assert (await put_state(client, alice, room, "m.space.child", {"via": ["hs.test"]}, "!child:hs.test"))[0] == 200
    assert (await put_state(client, alice, room, "m.space.child", {}, "!removed:hs.test"))[0] == 200
    assert (await put_state(client, alice, room, "org.example.custom", {"keep": "no"}))[0] == 200
    assert (await put_alias(client, alice, "#garden:hs.test", room))[0] == 200
    assert (await put_alias(client, alice, "#roses:hs.test", room))[0] == 200
    canonical = {"alias": "#garden:hs.test", "alt_aliases": ["#roses:hs.test"]}
    assert (await put_state(client, alice, room, "m.room.canonical_alias", canonical))[0] == 200
    assert (await post(client, bob, f"/rooms/{room}/join"))[0] == 200
    assert (await post(client, alice, f"/rooms/{room}/ban", {"user_id": "@spammer:elsewhere.test",
                                                             "reason": "spam"}))[0] == 200
    old_state = await state_of(client, alice, room)
    old_levels = old_state[("m.room.power_levels", "")]["content"]

    new = await upgraded(client, alice, room, new_version)
    assert new != room
    state = await state_of(client, alice, new)
    old_after = await state_of(client, alice, room)

    # The tombstone, and the new room pointing back at it (rooms 12: no event ID, as the
    # room ID hashes the create event).
    tombstone = old_after[("m.room.tombstone", "")]
    assert tombstone["content"] == {"body": "This room has been replaced", "replacement_room": new}
    create_content = state[("m.room.create", "")]["content"]
    assert create_content["room_version"] == new_version
    assert create_content["type"] == "org.example.kind"
    expected_predecessor = {"room_id": room} if new_version == "12" else {"room_id": room,
                                                                          "event_id": tombstone["event_id"]}
    assert create_content["predecessor"] == expected_predecessor
    assert ("creator" in create_content) == (int(new_version) <= 10)
    # State carried over; the unknown type, the removed child and memberships are not.
    for event_type, content in COPIED.items():
        assert state[(event_type, "")]["content"] == content, event_type
    assert state[("m.space.child", "!child:hs.test")]["content"] == {"via": ["hs.test"]}
    assert ("m.space.child", "!removed:hs.test") not in state
    assert ("org.example.custom", "") not in state
    assert ("m.room.member", "@bob:hs.test") not in state
    # Bans are copied.
    ban = state[("m.room.member", "@spammer:elsewhere.test")]
    assert ban["content"] == {"membership": "ban", "reason": "spam"} and ban["sender"] == "@alice:hs.test"
    # Power levels: the old room's (creators of a v12 room are never listed).
    levels = state[("m.room.power_levels", "")]["content"]
    expected = dict(old_levels)
    if new_version == "12":
        expected["users"] = {u: v for u, v in old_levels["users"].items() if u != "@alice:hs.test"}
    elif old_version == "12":
        expected["users"] = {**old_levels["users"], "@alice:hs.test": 150}  # the creator keeps the top level
    assert levels == expected

    # Aliases resolve to the new room, for clients and for other servers.
    assert await get_alias(client, "#garden:hs.test") == (200, {"room_id": new, "servers": ["hs.test"]})
    assert (await get_alias(client, "#roses:hs.test"))[1]["room_id"] == new
    target = "/_matrix/federation/v1/query/directory?room_alias=" + quote("#roses:hs.test", safe="")
    resp = await client.get(URL(target, encoded=True), headers={"Authorization": signed("GET", target)})
    assert resp.status == 200 and (await resp.json())["room_id"] == new
    assert state[("m.room.canonical_alias", "")]["content"] == canonical
    assert old_after[("m.room.canonical_alias", "")]["content"] == {}
    # The directory lists the new room instead of the old.
    assert (await get(client, alice, f"/directory/list/room/{new}"))[1] == {"visibility": "public"}
    assert (await get(client, alice, f"/directory/list/room/{room}"))[1] == {"visibility": "private"}
    listed = [r["room_id"] for r in (await get(client, alice, "/publicRooms"))[1]["chunk"]]
    assert new in listed and room not in listed

    # The old room: ordinary members may no longer talk or invite; bob (public room)
    # joins the new one without an invite.
    restricted = old_after[("m.room.power_levels", "")]["content"]
    assert restricted["events_default"] == 50 and restricted["invite"] == 50
    sent = await send(client, bob, room, "still here?")
    assert sent["status"] == 403 and sent["errcode"] == "M_FORBIDDEN"
    assert (await post(client, bob, f"/rooms/{new}/join"))[0] == 200
    assert (await send(client, bob, new, "moved"))["status"] == 200


async def test_room_v12_creators(client, alice, bob):
    room = await create(client, alice, room_version="10", preset="public_chat",
                        power_level_content_override={"users": {"@alice:hs.test": 100, "@bob:hs.test": 100,
                                                                "@carol:hs.test": 20}})
    new = await upgraded(client, alice, room, "12", additional_creators=["@bob:hs.test"])
    state = await state_of(client, alice, new)
    create_ev = state[("m.room.create", "")]
    assert create_ev["sender"] == "@alice:hs.test"
    assert create_ev["content"]["additional_creators"] == ["@bob:hs.test"]
    assert state[("m.room.power_levels", "")]["content"]["users"] == {"@carol:hs.test": 20}
    # Bob, a creator, has unlimited power once he joins.
    assert (await post(client, bob, f"/rooms/{new}/join"))[0] == 200
    assert (await put_state(client, bob, new, "m.room.power_levels",
                            {"users": {"@carol:hs.test": 99}, "events": {}}))[0] == 200
    # Upgrading again without naming him: he is no creator of the next room.
    newer = await upgraded(client, alice, new, "12")
    assert "additional_creators" not in (await state_of(client, alice, newer))[("m.room.create", "")]["content"]
    # additional_creators is ignored by versions without them.
    older = await upgraded(client, alice, newer, "11", additional_creators=["@bob:hs.test"])
    assert "additional_creators" not in (await state_of(client, alice, older))[("m.room.create", "")]["content"]


async def test_m_federate_kept(client, alice):
    room = await create(client, alice, room_version="10", creation_content={"m.federate": False})
    new = await upgraded(client, alice, room, "11")
    assert (await get(client, alice, f"/rooms/{new}/state/m.room.create"))[1]["m.federate"] is False


async def test_settings_left_to_defaults_are_stated_in_the_new_room(client, alice):
    # A public_chat room sends no guest_access: the new room says "forbidden" (what its
    # absence meant), so clients waiting for the room's settings see them all.
    room = await create(client, alice, room_version="10", preset="public_chat")
    assert (await get(client, alice, f"/rooms/{room}/state/m.room.guest_access"))[0] == 404
    new = await upgraded(client, alice, room, "11")
    state = await state_of(client, alice, new)
    assert state[("m.room.guest_access", "")]["content"] == {"guest_access": "forbidden"}
    assert state[("m.room.history_visibility", "")]["content"] == {"history_visibility": "shared"}
    assert state[("m.room.join_rules", "")]["content"] == {"join_rule": "public"}


async def test_moderator_upgrade_keeps_levels(client, alice, bob):
    """A moderator allowed to send the tombstone upgrades: the new room ends with the old
    levels (bob back at 50), and the old room keeps them (he may not change them)."""
    room = await create(client, alice, room_version="10", preset="public_chat")
    assert (await post(client, bob, f"/rooms/{room}/join"))[0] == 200
    status, levels = await get(client, alice, f"/rooms/{room}/state/m.room.power_levels")
    levels["users"]["@bob:hs.test"] = 50
    levels["events"]["m.room.tombstone"] = 50
    assert (await put_state(client, alice, room, "m.room.power_levels", levels))[0] == 200
    new = await upgraded(client, bob, room, "11")
    assert (await get(client, bob, f"/rooms/{new}/state/m.room.power_levels"))[1] == levels
    assert (await get(client, bob, f"/rooms/{room}/state/m.room.power_levels"))[1] == levels
    # Bob was raised to copy the state, then went back: two power levels events.
    status, page = await get(client, bob, f"/rooms/{new}/messages", dir="f", limit="50")
    assert [e["type"] for e in page["chunk"]].count("m.room.power_levels") == 2


async def test_errors(client, alice, bob):
    room = await create(client, alice, room_version="10", preset="public_chat")
    for bad, errcode in (({"new_version": "my_bad_version"}, "M_UNSUPPORTED_ROOM_VERSION"),
                         ({"new_version": 11}, "M_UNSUPPORTED_ROOM_VERSION"),
                         ({}, "M_MISSING_PARAM"),
                         ({"new_version": "12", "additional_creators": "@bob:hs.test"}, "M_BAD_JSON"),
                         ({"new_version": "12", "additional_creators": ["bob"]}, "M_BAD_JSON")):
        resp = await client.post(f"{C}/rooms/{room}/upgrade", json=bad, headers=auth_header(alice))
        body = await resp.json()
        assert resp.status == 400 and body["errcode"] == errcode, (bad, body)
    status, body = await upgrade(client, alice, "!fail:unknown", "11")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    # Not a member; a member without the power to send the tombstone.
    status, body = await upgrade(client, bob, room, "11")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    assert (await post(client, bob, f"/rooms/{room}/join"))[0] == 200
    status, body = await upgrade(client, bob, room, "11")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    assert (await get(client, alice, f"/rooms/{room}/state/m.room.tombstone"))[0] == 404
    # A tombstone pointing at its own room, or not a state event, is refused.
    status, body = await put_state(client, alice, room, "m.room.tombstone", {"body": "x", "replacement_room": room})
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    resp = await client.put(f"{C}/rooms/{room}/send/m.room.tombstone/t1", json={"replacement_room": room},
                            headers=auth_header(alice))
    assert resp.status == 400
    # Without a token.
    resp = await client.post(f"{C}/rooms/{room}/upgrade", json={"new_version": "11"})
    assert resp.status == 401


async def test_concurrent_requests_make_one_room(client, alice, bob):
    room = await create(client, alice, room_version="10", preset="public_chat")
    results = await asyncio.gather(*(upgrade(client, alice, room, "11") for _ in range(4)))
    assert {status for status, _ in results} == {200}
    assert len({body["replacement_room"] for _, body in results}) == 1
    # One new room, one tombstone.
    assert len((await get(client, alice, "/joined_rooms"))[1]["joined_rooms"]) == 2
    status, page = await get(client, alice, f"/rooms/{room}/messages", dir="b", limit="50")
    assert [e["type"] for e in page["chunk"]].count("m.room.tombstone") == 1
    # Asking again for another version is a new upgrade.
    assert await upgraded(client, alice, room, "12") != results[0][1]["replacement_room"]


async def test_invite_only_room_invites_nobody(client, alice, bob):
    room = await create(client, alice, room_version="10", preset="private_chat")
    assert (await post(client, alice, f"/rooms/{room}/invite", {"user_id": "@bob:hs.test"}))[0] == 200
    assert (await post(client, bob, f"/rooms/{room}/join"))[0] == 200
    new = await upgraded(client, alice, room, "11")
    status, sync = await get(client, bob, "/sync")
    assert new not in sync["rooms"].get("invite", {}) and new not in sync["rooms"].get("join", {})
    # The tombstone reaches him; the new room is invite-only.
    tomb = [e for e in sync["rooms"]["join"][room]["timeline"]["events"] + sync["rooms"]["join"][room]["state"]["events"]
            if e["type"] == "m.room.tombstone"]
    assert tomb and tomb[0]["content"]["replacement_room"] == new
    status, body = await post(client, bob, f"/rooms/{new}/join")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


async def test_tags_push_rules_and_direct_follow(client, alice, bob):
    room = await create(client, alice, room_version="10", preset="public_chat")
    assert (await post(client, bob, f"/rooms/{room}/join"))[0] == 200
    assert (await put(client, bob, f"/user/@bob:hs.test/rooms/{room}/tags/m.favourite", {"order": 0.5}))[0] == 200
    assert (await put(client, bob, f"/pushrules/global/room/{room}", {"actions": ["notify", {"set_tweak": "sound", "value": "bell"}]}))[0] == 200
    assert (await put(client, bob, "/pushrules/global/override/mute-it",
                      {"actions": [], "conditions": [{"kind": "event_match", "key": "room_id",
                                                      "pattern": room}]}))[0] == 200
    assert (await put(client, bob, "/user/@bob:hs.test/account_data/m.direct", {"@alice:hs.test": [room]}))[0] == 200
    assert (await put(client, alice, "/user/@alice:hs.test/account_data/m.direct", {"@bob:hs.test": [room]}))[0] == 200
    status, first = await get(client, bob, "/sync")
    new = await upgraded(client, alice, room, "11")
    # The upgrader's m.direct has the new room at once.
    assert (await get(client, alice, "/user/@alice:hs.test/account_data/m.direct"))[1] == {"@bob:hs.test": [room, new]}
    assert (await post(client, bob, f"/rooms/{new}/join"))[0] == 200
    assert (await get(client, bob, f"/user/@bob:hs.test/rooms/{new}/tags"))[1] == {"tags": {"m.favourite": {"order": 0.5}}}
    assert (await get(client, bob, f"/pushrules/global/room/{new}"))[1]["actions"] == ["notify", {"set_tweak": "sound", "value": "bell"}]
    rule = (await get(client, bob, "/pushrules/global/override/mute-it.{new}".replace("{new}", new)))[1]
    assert rule["conditions"] == [{"kind": "event_match", "key": "room_id", "pattern": new}]
    assert (await get(client, bob, "/user/@bob:hs.test/account_data/m.direct"))[1] == {"@alice:hs.test": [room, new]}
    # The old room's rules stay; the tags show in bob's incremental /sync.
    assert (await get(client, bob, f"/pushrules/global/room/{room}"))[0] == 200
    status, later = await get(client, bob, "/sync", since=first["next_batch"])
    tags = [e for e in later["rooms"]["join"][new]["account_data"]["events"] if e["type"] == "m.tag"]
    assert tags and tags[0]["content"] == {"tags": {"m.favourite": {"order": 0.5}}}


async def test_settings_follow_a_member_who_joins_later_without_overwriting(client, alice, bob):
    """Carol was not in the old room when it was upgraded (nothing copied then): her tags
    follow when she joins the new room; a tag she already set there stays."""
    carol = (await register(client, "carol"))["access_token"]
    room = await create(client, alice, room_version="10", preset="public_chat")
    assert (await post(client, carol, f"/rooms/{room}/join"))[0] == 200
    assert (await put(client, carol, f"/user/@carol:hs.test/rooms/{room}/tags/u.work", {"order": 1}))[0] == 200
    assert (await put(client, carol, f"/user/@carol:hs.test/rooms/{room}/tags/u.old", {}))[0] == 200
    assert (await post(client, carol, f"/rooms/{room}/leave"))[0] == 200
    new = await upgraded(client, alice, room, "11")
    assert (await get(client, carol, f"/user/@carol:hs.test/rooms/{new}/tags"))[1] == {"tags": {}}
    assert (await post(client, carol, f"/rooms/{new}/join"))[0] == 200
    assert (await put(client, carol, f"/user/@carol:hs.test/rooms/{new}/tags/u.work", {"order": 2}))[0] == 200
    # Joining again (a no-op join) copies again, without overwriting.
    assert (await post(client, carol, f"/rooms/{new}/join"))[0] == 200
    tags = (await get(client, carol, f"/user/@carol:hs.test/rooms/{new}/tags"))[1]["tags"]
    assert tags == {"u.work": {"order": 2}, "u.old": {}}

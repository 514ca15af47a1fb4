"""Room aliases, createRoom's room_alias_name, m.room.canonical_alias checks, join by
alias and the public room directory over HTTP (client and federation), on both engines."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from yarl import URL

from gateway.services.directory import DirectoryService
from tests.gateway.federation_api.test_auth import fake, signed  # noqa: F401

from .conftest import auth_header, register
from .test_rooms import create, get, post

C = "/_matrix/client/v3"


def alias_path(alias: str) -> str:
    return f"{C}/directory/room/{quote(alias, safe='')}"


async def put_alias(client, token, alias, room_id):
    resp = await client.put(URL(alias_path(alias), encoded=True), json={"room_id": room_id},
                            headers=auth_header(token))
    return resp.status, await resp.json()


async def get_alias(client, alias):
    resp = await client.get(URL(alias_path(alias), encoded=True))
    return resp.status, await resp.json()


async def delete_alias(client, token, alias):
    resp = await client.delete(URL(alias_path(alias), encoded=True), headers=auth_header(token))
    return resp.status, await resp.json()


async def put_state(client, token, room_id, event_type, content, state_key=""):
    resp = await client.put(f"{C}/rooms/{room_id}/state/{event_type}/{state_key}", json=content,
                            headers=auth_header(token))
    return resp.status, await resp.json()


@pytest.fixture
async def alice(client):
    return (await register(client, "alice"))["access_token"]


@pytest.fixture
async def bob(client):
    return (await register(client, "bob"))["access_token"]


async def test_alias_create_resolve_conflict_delete(client, alice, bob):
    room_id = await create(client, alice, preset="public_chat")
    assert await put_alias(client, alice, "#garden:hs.test", room_id) == (200, {})
    status, body = await get_alias(client, "#garden:hs.test")
    assert status == 200 and body == {"room_id": room_id, "servers": ["hs.test"]}
    # Taken.
    other = await create(client, alice)
    status, body = await put_alias(client, alice, "#garden:hs.test", other)
    assert status == 409 and body["errcode"] == "M_ROOM_IN_USE"
    # Malformed, or on another server.
    for bad in ("#nocolon", "garden:hs.test"):
        status, body = await put_alias(client, alice, bad, room_id)
        assert status == 400 and body["errcode"] == "M_INVALID_PARAM", (bad, body)
    status, body = await put_alias(client, alice, "#garden:elsewhere.test", room_id)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    # Unknown room; a room the user is not in.
    status, body = await put_alias(client, alice, "#nothing:hs.test", "!nope:hs.test")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await put_alias(client, bob, "#bobs:hs.test", room_id)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    # The room's local aliases.
    assert await get(client, alice, f"/rooms/{room_id}/aliases") == (200, {"aliases": ["#garden:hs.test"]})
    status, body = await get(client, bob, f"/rooms/{room_id}/aliases")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    # Bob joins: he may add an alias, but not delete alice's (no power), while alice may delete his.
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    assert await put_alias(client, bob, "#bobs:hs.test", room_id) == (200, {})
    status, body = await delete_alias(client, bob, "#garden:hs.test")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    assert await delete_alias(client, alice, "#bobs:hs.test") == (200, {})
    assert await delete_alias(client, alice, "#garden:hs.test") == (200, {})
    status, body = await get_alias(client, "#garden:hs.test")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await delete_alias(client, alice, "#garden:hs.test")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    assert await get(client, alice, f"/rooms/{room_id}/aliases") == (200, {"aliases": []})


async def test_create_room_with_alias_and_canonical_alias_checks(client, alice, bob):
    room_id = await create(client, alice, preset="public_chat", room_alias_name="tea")
    assert (await get_alias(client, "#tea:hs.test"))[1]["room_id"] == room_id
    status, content = await get(client, alice, f"/rooms/{room_id}/state/m.room.canonical_alias")
    assert status == 200 and content == {"alias": "#tea:hs.test"}
    # The alias is taken: refused before any room is made.
    before = (await get(client, alice, "/joined_rooms"))[1]["joined_rooms"]
    resp = await client.post(f"{C}/createRoom", json={"room_alias_name": "tea"}, headers=auth_header(alice))
    body = await resp.json()
    assert resp.status == 400 and body["errcode"] == "M_ROOM_IN_USE"
    assert (await get(client, alice, "/joined_rooms"))[1]["joined_rooms"] == before
    resp = await client.post(f"{C}/createRoom", json={"room_alias_name": "a:b"}, headers=auth_header(alice))
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_PARAM"

    # m.room.canonical_alias: local aliases must exist and point to the room.
    other = await create(client, alice, room_alias_name="coffee")
    status, body = await put_state(client, alice, room_id, "m.room.canonical_alias", {"alias": "#nope:hs.test"})
    assert status == 400 and body["errcode"] == "M_BAD_ALIAS"
    status, body = await put_state(client, alice, room_id, "m.room.canonical_alias",
                                   {"alias": "#tea:hs.test", "alt_aliases": ["#coffee:hs.test"]})
    assert status == 400 and body["errcode"] == "M_BAD_ALIAS"
    status, body = await put_state(client, alice, room_id, "m.room.canonical_alias", {"alias": "not an alias"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    assert await put_alias(client, alice, "#chai:hs.test", room_id) == (200, {})
    status, _ = await put_state(client, alice, room_id, "m.room.canonical_alias",
                                {"alias": "#tea:hs.test", "alt_aliases": ["#chai:hs.test", "#x:remote.test"]})
    assert status == 200
    assert other != room_id
    # Deleting an alias the canonical alias names updates the event.
    assert await delete_alias(client, alice, "#chai:hs.test") == (200, {})
    status, content = await get(client, alice, f"/rooms/{room_id}/state/m.room.canonical_alias")
    assert content == {"alias": "#tea:hs.test", "alt_aliases": ["#x:remote.test"]}

    # Join by alias (local).
    resp = await client.post(URL(f"{C}/join/{quote('#tea:hs.test', safe='')}", encoded=True), json={},
                             headers=auth_header(bob))
    assert resp.status == 200 and (await resp.json()) == {"room_id": room_id}
    assert room_id in (await get(client, bob, "/joined_rooms"))[1]["joined_rooms"]
    resp = await client.post(URL(f"{C}/join/{quote('#none:hs.test', safe='')}", encoded=True), json={},
                             headers=auth_header(bob))
    assert resp.status == 404 and (await resp.json())["errcode"] == "M_NOT_FOUND"


async def test_join_by_remote_alias_resolves_over_federation(client, hs, bob, monkeypatch):
    asked = []

    async def fake_request(method, destination, path, *, query=None, **kwargs):
        asked.append((method, destination, path, query))
        return {"room_id": "!far:remote.test", "servers": ["other.test"]}

    monkeypatch.setattr(hs.federation_client, "request", fake_request)
    assert await hs.directory.resolve_alias("#lobby:remote.test") == ("!far:remote.test", ["remote.test", "other.test"])
    assert asked[0] == ("GET", "remote.test", "/_matrix/federation/v1/query/directory", {"room_alias": "#lobby:remote.test"})
    resp = await client.post(URL(f"{C}/join/{quote('#lobby:remote.test', safe='')}", encoded=True), json={},
                             headers=auth_header(bob))
    body = await resp.json()
    # The join is tried through the alias's servers (here they answer nonsense): a clear error.
    assert resp.status == 404 and body["errcode"] == "M_NOT_FOUND" and "through any server" in body["error"]
    make_joins = [(d, p) for m, d, p, _ in asked if "/make_join/" in p]
    assert [d for d, _ in make_joins] == ["remote.test", "other.test"]
    assert await hs.events.store.get_room("!far:remote.test") is None


async def test_federation_directory_query(client, alice, fake):  # noqa: F811
    room_id = await create(client, alice, room_alias_name="fed")
    target = "/_matrix/federation/v1/query/directory?room_alias=" + quote("#fed:hs.test", safe="")
    resp = await client.get(URL(target, encoded=True), headers={"Authorization": signed("GET", target)})
    assert resp.status == 200 and await resp.json() == {"room_id": room_id, "servers": ["hs.test"]}
    target = "/_matrix/federation/v1/query/directory?room_alias=" + quote("#unknown:hs.test", safe="")
    resp = await client.get(URL(target, encoded=True), headers={"Authorization": signed("GET", target)})
    assert resp.status == 404 and (await resp.json())["errcode"] == "M_NOT_FOUND"


async def test_public_room_list_pagination_search_and_visibility(client, alice, bob):
    rooms = []
    for i, name in enumerate(["Apples", "Bananas", "Cherries"]):
        rooms.append(await create(client, alice, visibility="public", name=name, topic=f"Fruit {i}",
                                  room_alias_name=name.lower()))
    private = await create(client, alice, name="Secret")
    # Bananas gets a second member: it comes first.
    assert (await post(client, bob, f"/rooms/{rooms[1]}/join"))[0] == 200
    status, body = await get(client, alice, "/publicRooms")
    assert status == 200 and body["total_room_count_estimate"] == 3
    assert [r["room_id"] for r in body["chunk"]][0] == rooms[1]
    assert private not in [r["room_id"] for r in body["chunk"]]
    banana = body["chunk"][0]
    assert banana == {"room_id": rooms[1], "name": "Bananas", "topic": "Fruit 1", "num_joined_members": 2,
                      "canonical_alias": "#bananas:hs.test", "world_readable": False, "guest_can_join": False,
                      "join_rule": "public"}
    # Pages of one.
    seen, since = [], None
    for _ in range(4):
        params = {"limit": "1", **({"since": since} if since else {})}
        status, page = await get(client, alice, "/publicRooms", **params)
        assert status == 200 and len(page["chunk"]) <= 1
        seen += [r["room_id"] for r in page["chunk"]]
        since = page.get("next_batch")
        if since is None:
            break
    assert sorted(seen) == sorted(rooms) and len(seen) == 3
    status, body = await get(client, alice, "/publicRooms", since="garbage")
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    # Search (POST).
    status, body = await post(client, alice, "/publicRooms", {"filter": {"generic_search_term": "cherr"}})
    assert status == 200 and [r["room_id"] for r in body["chunk"]] == [rooms[2]]
    status, body = await post(client, alice, "/publicRooms", {"filter": {"generic_search_term": "%"}})
    assert status == 200 and body["chunk"] == []
    # No token: refused by default.
    resp = await client.get(f"{C}/publicRooms")
    assert resp.status == 401 and (await resp.json())["errcode"] == "M_MISSING_TOKEN"

    # Visibility: bob may not change it; alice may.
    assert await get(client, bob, f"/directory/list/room/{private}") == (200, {"visibility": "private"})
    resp = await client.put(f"{C}/directory/list/room/{rooms[1]}", json={"visibility": "private"},
                            headers=auth_header(bob))
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"
    resp = await client.put(f"{C}/directory/list/room/{private}", json={"visibility": "public"},
                            headers=auth_header(alice))
    assert resp.status == 200
    resp = await client.put(f"{C}/directory/list/room/{private}", json={"visibility": "open"},
                            headers=auth_header(alice))
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_PARAM"
    status, body = await get(client, alice, "/publicRooms")
    assert private in [r["room_id"] for r in body["chunk"]] and body["total_room_count_estimate"] == 4
    status, body = await get(client, alice, "/directory/list/room/!unknown:hs.test")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


@pytest.mark.parametrize("config_overrides", [{
    "room_list_publication_rules": [{"alias": "#ok*", "action": "allow"}, {"action": "deny"}],
    "allow_public_rooms_without_auth": True,
    "allow_public_rooms_over_federation": True,
}])
async def test_publication_rules_and_federation_list(client, alice, fake):  # noqa: F811
    # Not allowed to publish: created, but not listed (as Synapse does).
    hidden = await create(client, alice, visibility="public")
    assert await get(client, alice, f"/directory/list/room/{hidden}") == (200, {"visibility": "private"})
    room_id = await create(client, alice, visibility="public", room_alias_name="okay", name="Okay")
    unlisted = await create(client, alice, name="Unlisted")
    resp = await client.put(f"{C}/directory/list/room/{unlisted}", json={"visibility": "public"},
                            headers=auth_header(alice))
    assert resp.status == 403
    resp = await client.get(f"{C}/publicRooms")  # no token needed with allow_public_rooms_without_auth
    assert resp.status == 200 and [r["room_id"] for r in (await resp.json())["chunk"]] == [room_id]
    target = "/_matrix/federation/v1/publicRooms"
    body = {"limit": 5, "filter": {"generic_search_term": "oka"}}
    resp = await client.post(target, json=body, headers={"Authorization": signed("POST", target, body)})
    got = await resp.json()
    assert resp.status == 200 and [r["room_id"] for r in got["chunk"]] == [room_id]
    target = "/_matrix/federation/v1/publicRooms?limit=1"
    resp = await client.get(URL(target, encoded=True), headers={"Authorization": signed("GET", target)})
    assert resp.status == 200 and len((await resp.json())["chunk"]) == 1


async def test_federation_public_rooms_off_by_default(client, fake):  # noqa: F811
    target = "/_matrix/federation/v1/publicRooms"
    resp = await client.get(target, headers={"Authorization": signed("GET", target)})
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"


def test_service_is_importable():
    assert DirectoryService.resolve_alias

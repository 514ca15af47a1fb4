"""GET /_matrix/client/v1/rooms/{roomId}/hierarchy and /room_summary over real HTTP, on
both engines, with rooms of this server: who sees which child (one rule at a time),
order, suggested children, loops, the depth cap, pagination and its tokens, bad
parameters; room summaries for members, invitees, strangers and anonymous clients."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from gateway.services import spaces
from tests.support.spaces import room_body

from .conftest import auth_header, register

C = "/_matrix/client/v3"
V1 = "/_matrix/client/v1"


def q(value: str) -> str:
    return quote(value, safe="")


class User:
    def __init__(self, client, token, user_id):
        self.client, self.token, self.user_id = client, token, user_id

    async def call(self, method, path, body=None, *, params=None, expect=200):
        resp = await self.client.request(method, path, json=body, params=params, headers=auth_header(self.token))
        data = await resp.json()
        assert resp.status == expect, (path, resp.status, data)
        return data

    async def room(self, **kwargs) -> str:
        return (await self.call("POST", f"{C}/createRoom", room_body(**kwargs)))["room_id"]

    async def add_child(self, space_id, child_id, **content):
        content.setdefault("via", ["hs.test"])
        await self.call("PUT", f"{C}/rooms/{q(space_id)}/state/m.space.child/{q(child_id)}", content)

    async def join(self, room_id):
        await self.call("POST", f"{C}/join/{q(room_id)}", {})

    async def hierarchy(self, room_id, expect=200, **params):
        return await self.call("GET", f"{V1}/rooms/{q(room_id)}/hierarchy",
                               params={k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()},
                               expect=expect)


@pytest.fixture
async def alice(client):
    body = await register(client, "alice")
    return User(client, body["access_token"], body["user_id"])


@pytest.fixture
async def bob(client):
    body = await register(client, "bob")
    return User(client, body["access_token"], body["user_id"])


def ids(body) -> list[str]:
    return [r["room_id"] for r in body["rooms"]]


async def test_who_sees_which_child(alice, bob):
    space = await alice.room(space=True, name="Space")
    other = await alice.room(join_rule="invite")  # a room bob is not in
    children = {
        "public": await alice.room(name="Public"),
        "invite": await alice.room(join_rule="invite"),
        "invited": await alice.room(join_rule="invite"),
        "joined": await alice.room(join_rule="invite"),
        "world_readable": await alice.room(join_rule="invite", history="world_readable"),
        "knock": await alice.room(join_rule="knock", version="7"),
        "knock_before_v7": await alice.room(join_rule="knock", version="6"),
        "knock_restricted": await alice.room(join_rule="knock_restricted", version="10"),
        "restricted_by_space": await alice.room(join_rule="restricted", version="9", allow=[space]),
        "restricted_elsewhere": await alice.room(join_rule="restricted", version="9", allow=[other]),
    }
    for child in children.values():
        await alice.add_child(space, child)
    await bob.join(space)
    await alice.call("POST", f"{C}/rooms/{q(children['invited'])}/invite", {"user_id": bob.user_id})
    await alice.call("POST", f"{C}/rooms/{q(children['joined'])}/invite", {"user_id": bob.user_id})
    await bob.join(children["joined"])

    body = await bob.hierarchy(space)
    seen = set(ids(body))
    expected = {"public", "invited", "joined", "world_readable", "knock", "knock_restricted", "restricted_by_space"}
    assert seen == {space} | {children[k] for k in expected}
    # The space lists every child event, seen or not (they are its state).
    root = body["rooms"][0]
    assert root["room_id"] == space and root["room_type"] == "m.space" and root["name"] == "Space"
    assert {e["state_key"] for e in root["children_state"]} == set(children.values())
    event = root["children_state"][0]
    assert set(event) == {"type", "state_key", "content", "sender", "origin_server_ts"}
    assert event["sender"] == alice.user_id and event["content"] == {"via": ["hs.test"]}
    by_id = {r["room_id"]: r for r in body["rooms"]}
    public = by_id[children["public"]]
    assert public["name"] == "Public" and public["join_rule"] == "public" and public["children_state"] == []
    assert public["num_joined_members"] == 1 and public["world_readable"] is False
    assert public["guest_can_join"] is False and public["room_version"]
    assert by_id[children["restricted_by_space"]]["allowed_room_ids"] == [space]
    assert by_id[children["world_readable"]]["world_readable"] is True

    # Alice (in every room) sees them all.
    assert set(ids(await alice.hierarchy(space))) == {space} | set(children.values())


async def test_a_space_the_user_may_not_see(alice, bob):
    private = await alice.room(space=True, join_rule="invite")
    body = await bob.hierarchy(private, expect=403)
    assert body["errcode"] == "M_FORBIDDEN"
    unknown = await bob.hierarchy("!nothing:hs.test", expect=403)
    assert unknown["errcode"] == "M_FORBIDDEN"
    # A public space, and a public child, hide from a user banned from them.
    public = await alice.room(space=True)
    child = await alice.room()
    await alice.add_child(public, child)
    await bob.join(public)
    await bob.join(child)
    assert ids(await bob.hierarchy(public)) == [public, child]
    await alice.call("POST", f"{C}/rooms/{q(child)}/ban", {"user_id": bob.user_id})
    assert ids(await bob.hierarchy(public)) == [public]
    await alice.call("POST", f"{C}/rooms/{q(public)}/ban", {"user_id": bob.user_id})
    assert (await bob.hierarchy(public, expect=403))["errcode"] == "M_FORBIDDEN"


async def test_order_suggested_and_removed_children(alice):
    space = await alice.room(space=True)
    a, b, c, d = [await alice.room() for _ in range(4)]
    await alice.add_child(space, a)
    await alice.add_child(space, b, order="b", suggested=True)
    await alice.add_child(space, c, order="a")
    await alice.add_child(space, d, suggested=True)
    assert ids(await alice.hierarchy(space)) == [space, c, b, a, d]
    assert ids(await alice.hierarchy(space, suggested_only=True)) == [space, b, d]
    # A child event without via no longer counts; nor does a redacted one.
    await alice.call("PUT", f"{C}/rooms/{q(space)}/state/m.space.child/{q(a)}", {})
    state = await alice.call("GET", f"{C}/rooms/{q(space)}/state")
    child_event = next(e for e in state if e["type"] == "m.space.child" and e["state_key"] == c)
    await alice.call("PUT", f"{C}/rooms/{q(space)}/redact/{q(child_event['event_id'])}/r1", {})
    body = await alice.hierarchy(space)
    assert ids(body) == [space, b, d]
    assert [e["state_key"] for e in body["rooms"][0]["children_state"]] == [b, d]


async def test_loops_are_cut_and_depth_is_capped(alice, monkeypatch):
    # a -> b -> c -> a (a loop), and c -> d.
    a, b, c = [await alice.room(space=True) for _ in range(3)]
    d = await alice.room()
    await alice.add_child(a, b)
    await alice.add_child(b, c)
    await alice.add_child(c, a)
    await alice.add_child(c, d)
    assert ids(await alice.hierarchy(a)) == [a, b, c, d]
    assert ids(await alice.hierarchy(b)) == [b, c, a, d]
    assert ids(await alice.hierarchy(a, max_depth=0)) == [a]
    assert ids(await alice.hierarchy(a, max_depth=1)) == [a, b]
    # Depth first: a space's subtree comes before its next sibling.
    e = await alice.room()
    await alice.add_child(a, e, order="z")
    await alice.add_child(a, b, order="a")
    assert ids(await alice.hierarchy(a)) == [a, b, c, d, e]
    # A huge max_depth is accepted, and capped.
    monkeypatch.setattr(spaces, "MAX_DEPTH", 2)
    assert ids(await alice.hierarchy(a, max_depth=10**12)) == [a, b, c, e]


async def test_pagination(alice, bob, monkeypatch):
    space = await alice.room(space=True)
    sub = await alice.room(space=True)
    rooms = [await alice.room() for _ in range(4)]
    for i, r in enumerate(rooms[:2]):
        await alice.add_child(space, r, order=f"a{i}")
    await alice.add_child(space, sub, order="b")
    for i, r in enumerate(rooms[2:]):
        await alice.add_child(sub, r, order=f"c{i}")
    full = ids(await alice.hierarchy(space))
    assert full == [space, rooms[0], rooms[1], sub, rooms[2], rooms[3]]

    pages, token = [], None
    for _ in range(10):
        body = await alice.hierarchy(space, limit=2, **({"from": token} if token else {}))
        assert len(body["rooms"]) <= 2
        pages += ids(body)
        token = body.get("next_batch")
        if not token:
            break
    assert pages == full

    first = await alice.hierarchy(space, limit=1, max_depth=3)
    token = first["next_batch"]
    # The token goes with its user, room and parameters.
    for user, room, params in ((alice, space, {"max_depth": 4}), (alice, space, {"suggested_only": True}),
                               (alice, space, {}), (alice, sub, {"max_depth": 3}), (bob, space, {"max_depth": 3})):
        if user is bob:
            await bob.join(space)
        body = await user.hierarchy(room, expect=400, **{"from": token, **params})
        assert body["errcode"] == "M_INVALID_PARAM"
    assert ids(await alice.hierarchy(space, limit=1, max_depth=3, **{"from": token})) == [rooms[0]]
    for bad in ("garbage", token + "x", ""):
        assert (await alice.hierarchy(space, expect=400, **{"from": bad}))["errcode"] == "M_INVALID_PARAM"

    # Expired tokens are refused.
    monkeypatch.setattr(spaces, "SESSION_LIFETIME_MS", -1)
    body = await alice.hierarchy(space, limit=1)
    assert (await alice.hierarchy(space, expect=400, limit=1, **{"from": body["next_batch"]}))["errcode"] \
        == "M_INVALID_PARAM"


async def test_a_page_rechecks_what_the_user_sees(alice, bob):
    space = await alice.room(space=True)
    secret = await alice.room(join_rule="invite")
    rooms = [await alice.room() for _ in range(2)]
    await alice.add_child(space, rooms[0], order="a")
    await alice.add_child(space, secret, order="b")
    await alice.add_child(space, rooms[1], order="c")
    await alice.call("POST", f"{C}/rooms/{q(secret)}/invite", {"user_id": bob.user_id})
    await bob.join(space)
    first = await bob.hierarchy(space, limit=2)
    assert ids(first) == [space, rooms[0]]
    # The invite is withdrawn before the next page: the room no longer shows.
    await alice.call("POST", f"{C}/rooms/{q(secret)}/kick", {"user_id": bob.user_id})
    assert ids(await bob.hierarchy(space, **{"from": first["next_batch"]})) == [rooms[1]]
    # Bob leaves the space: its pages are refused.
    await bob.call("POST", f"{C}/rooms/{q(space)}/leave", {})
    await alice.call("PUT", f"{C}/rooms/{q(space)}/state/m.room.join_rules", {"join_rule": "invite"})
    assert (await bob.hierarchy(space, expect=403, **{"from": first["next_batch"]}))["errcode"] == "M_FORBIDDEN"


@pytest.mark.parametrize("params", [
    {"limit": 0}, {"limit": "many"}, {"max_depth": -1}, {"max_depth": "deep"}, {"suggested_only": "yes"},
])
async def test_bad_parameters(alice, params):
    space = await alice.room(space=True)
    body = await alice.hierarchy(space, expect=400, **params)
    assert body["errcode"] == "M_INVALID_PARAM"


async def test_hierarchy_needs_a_token(client, alice):
    space = await alice.room(space=True)
    resp = await client.get(f"{V1}/rooms/{q(space)}/hierarchy")
    assert resp.status == 401


# --- room summaries --------------------------------------------------------------------


async def summary(client, room, token=None, expect=200, path="v1"):
    url = {"v1": f"{V1}/room_summary/{q(room)}",
           "nheko": f"/_matrix/client/unstable/im.nheko.summary/summary/{q(room)}",
           "nheko_old": f"/_matrix/client/unstable/im.nheko.summary/rooms/{q(room)}/summary"}[path]
    resp = await client.get(url, headers=auth_header(token) if token else {})
    body = await resp.json()
    assert resp.status == expect, body
    return body


async def test_room_summary(client, alice, bob):
    public = await alice.room(name="Lobby", space=True)
    await alice.call("PUT", f"{C}/directory/room/{q('#lobby:hs.test')}", {"room_id": public})
    private = await alice.room(join_rule="invite", name="Secret")
    got = await summary(client, public, alice.token)
    assert got["room_id"] == public and got["name"] == "Lobby" and got["membership"] == "join"
    assert got["room_type"] == "m.space" and got["join_rule"] == "public" and got["num_joined_members"] == 1
    assert "children_state" not in got and got["room_version"]
    assert (await summary(client, public, bob.token))["membership"] == "leave"
    anonymous = await summary(client, public)
    assert anonymous["name"] == "Lobby" and "membership" not in anonymous
    assert (await summary(client, "#lobby:hs.test", bob.token))["room_id"] == public
    for path in ("nheko", "nheko_old"):
        assert (await summary(client, public, bob.token, path=path))["room_id"] == public

    assert (await summary(client, private, bob.token, expect=404))["errcode"] == "M_NOT_FOUND"
    assert (await summary(client, private, expect=404))["errcode"] == "M_NOT_FOUND"
    await alice.call("POST", f"{C}/rooms/{q(private)}/invite", {"user_id": bob.user_id})
    invited = await summary(client, private, bob.token)
    assert invited["membership"] == "invite" and invited["name"] == "Secret"
    assert (await summary(client, private, expect=404))["errcode"] == "M_NOT_FOUND"

    assert (await summary(client, "!unknown:hs.test", bob.token, expect=404))["errcode"] == "M_NOT_FOUND"
    assert (await summary(client, "#nothing:hs.test", bob.token, expect=404))["errcode"] == "M_NOT_FOUND"
    assert (await summary(client, "not-a-room", bob.token, expect=400))["errcode"] == "M_INVALID_PARAM"
    resp = await client.get(f"{V1}/room_summary/{q(public)}", headers=auth_header("bad-token"))
    assert resp.status == 401 and (await resp.json())["errcode"] == "M_UNKNOWN_TOKEN"


async def test_anonymous_summaries_are_rate_limited(client, hs, alice):
    public = await alice.room()
    hs.spaces.anonymous_summaries.limit = spaces.RateLimit(per_second=0.001, burst_count=2)
    statuses = [(await client.get(f"{V1}/room_summary/{q(public)}")).status for _ in range(4)]
    assert statuses == [200, 200, 429, 429]
    assert (await summary(client, public, alice.token))["membership"] == "join"  # users are not limited here


async def test_bad_room_ids_are_invalid_params(client, alice):
    for path in (f"{V1}/rooms/{q('!a' + chr(0) + 'b:hs.test')}/hierarchy", f"{V1}/rooms/not-a-room/hierarchy",
                 f"{V1}/room_summary/{q('!a' + chr(0) + 'b:hs.test')}",
                 f"{V1}/rooms/{q('!a' + chr(0) + 'b:hs.test')}/timestamp_to_event?ts=1&dir=f"):
        resp = await client.get(path, headers=auth_header(alice.token))
        assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_PARAM", path

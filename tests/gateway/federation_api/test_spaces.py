"""Spaces across servers, on both engines, with a scripted remote over real signed TLS
requests: our GET /_matrix/federation/v1/hierarchy (which children another server may
see, rule by rule), and our client hierarchy and room summaries walking rooms we are
not in through the remote's answers (visibility for our user, the remote's
``children`` and ``inaccessible_children``, bad answers, the cache)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from aiohttp import web

from federation.net.client import FederationRequestError
from federation.signing import parse_x_matrix_authorization
from tests.support.fake_remote import FakeRemote
from tests.support.spaces import room_body

from .test_transactions import alice, ca, gw, join_bob, public_room, sync_view  # noqa: F401

FED = "/_matrix/federation/v1"


def q(value: str) -> str:
    return quote(value, safe="")


async def v1(alice, method, path, *, params=None, token=True, expect=200):
    headers = {"Authorization": f"Bearer {alice.token}"} if token else {}
    async with alice.session.request(method, alice.gw.url + "/_matrix/client/v1" + path, params=params,
                                     headers=headers, ssl=alice.gw.ssl) as r:
        body = await r.json()
        assert r.status == expect, (path, r.status, body)
        return body


async def room(alice, version="10", **kwargs) -> str:
    return (await alice.call("POST", "/createRoom", room_body(version=version, **kwargs)))["room_id"]


async def add_child(alice, space, child, **content):
    content.setdefault("via", [alice.gw.server_name])
    await alice.call("PUT", f"/rooms/{q(space)}/state/m.space.child/{q(child)}", content)


@pytest.fixture
async def remote(ca):  # noqa: F811
    """The scripted remote: answers GET /hierarchy from ``remote.hierarchies``
    (room ID -> (status, body)) and records what it was asked."""
    fake = FakeRemote(ca)
    fake.hierarchies = {}
    fake.asked = []

    async def hierarchy(request: web.Request) -> web.Response:
        room_id = request.match_info["room_id"]
        auth = parse_x_matrix_authorization(request.headers["Authorization"])
        fake.asked.append((room_id, request.query.get("suggested_only"), auth.origin))
        status, body = fake.hierarchies.get(room_id, (404, {"errcode": "M_NOT_FOUND", "error": "no"}))
        return web.json_response(body, status=status)

    fake.extra_routes.append(("GET", "/_matrix/federation/v1/hierarchy/{room_id}", hierarchy))
    async with fake as r:
        yield r


# --- what we serve ----------------------------------------------------------------------


async def test_what_another_server_sees(gw, remote, alice):
    space, view = await public_room(gw, alice, remote, "10", creation_content={"type": "m.space"})
    await join_bob(gw, remote, view)  # the remote has a user in the space
    other = await room(alice, join_rule="invite")
    joined_child, child_view = await public_room(gw, alice, remote, "10")
    await join_bob(gw, remote, child_view)
    await alice.call("PUT", f"/rooms/{q(joined_child)}/state/m.room.join_rules", {"join_rule": "invite"})
    children = {
        "public": await room(alice),
        "invite": await room(alice, join_rule="invite"),
        "joined": joined_child,
        "world_readable": await room(alice, join_rule="invite", history="world_readable"),
        "knock": await room(alice, join_rule="knock"),
        "restricted_by_space": await room(alice, join_rule="restricted", allow=[space]),
        "restricted_elsewhere": await room(alice, join_rule="restricted", allow=[other]),
    }
    for i, (name, child) in enumerate(children.items()):
        await add_child(alice, space, child, order=f"{i:02d}", suggested=name == "public")
    await add_child(alice, space, f"!elsewhere:{remote.server_name}", order="99")  # a room we are not in

    answer = await remote.client.request("GET", gw.server_name, f"{FED}/hierarchy/{q(space)}")
    assert answer["room"]["room_id"] == space and answer["room"]["room_type"] == "m.space"
    assert [e["state_key"] for e in answer["room"]["children_state"]] == \
        [*children.values(), f"!elsewhere:{remote.server_name}"]
    described = {c["room_id"]: c for c in answer["children"]}
    visible = ["public", "joined", "world_readable", "knock", "restricted_by_space"]
    assert list(described) == [children[k] for k in visible]
    assert answer["inaccessible_children"] == [children["invite"], children["restricted_elsewhere"]]
    assert described[children["restricted_by_space"]]["allowed_room_ids"] == [space]
    assert all("children_state" not in c for c in answer["children"])

    suggested = await remote.client.request("GET", gw.server_name, f"{FED}/hierarchy/{q(space)}",
                                             query={"suggested_only": "true"})
    assert [e["state_key"] for e in suggested["room"]["children_state"]] == [children["public"]]
    assert [c["room_id"] for c in suggested["children"]] == [children["public"]]

    # A room the server may not see, an unknown one, a bad parameter.
    for room_id in (children["invite"], "!unknown:" + gw.server_name):
        with pytest.raises(FederationRequestError) as e:
            await remote.client.request("GET", gw.server_name, f"{FED}/hierarchy/{q(room_id)}")
        assert (e.value.status, e.value.body["errcode"]) == (404, "M_NOT_FOUND")
    for path, query in ((f"{FED}/hierarchy/{q(space)}", {"suggested_only": "maybe"}),
                        (f"{FED}/hierarchy/{q('!a' + chr(0) + ':x')}", None),
                        (f"{FED}/timestamp_to_event/{q('!a' + chr(0) + ':x')}", {"ts": "1", "dir": "f"})):
        with pytest.raises(FederationRequestError) as e:
            await remote.client.request("GET", gw.server_name, path, query=query)
        assert (e.value.status, e.value.body["errcode"]) == (400, "M_INVALID_PARAM")
    # A server the space's ACL denies sees nothing, member or not.
    await alice.call("PUT", f"/rooms/{q(space)}/state/m.room.server_acl",
                     {"allow": ["*"], "deny": ["127.0.0.1"], "allow_ip_literals": True})
    with pytest.raises(FederationRequestError) as e:
        await remote.client.request("GET", gw.server_name, f"{FED}/hierarchy/{q(space)}")
    assert e.value.status == 404


async def test_a_server_without_members_sees_only_open_rooms(gw, remote, alice):
    space = await room(alice, space=True)
    public, invite, restricted = await room(alice), await room(alice, join_rule="invite"), \
        await room(alice, join_rule="restricted", allow=[space])
    for child in (public, invite, restricted):
        await add_child(alice, space, child)
    answer = await remote.client.request("GET", gw.server_name, f"{FED}/hierarchy/{q(space)}")
    assert [c["room_id"] for c in answer["children"]] == [public]
    assert sorted(answer["inaccessible_children"]) == sorted([invite, restricted])
    # A non-space room has no children.
    answer = await remote.client.request("GET", gw.server_name, f"{FED}/hierarchy/{q(public)}")
    assert answer["room"]["children_state"] == [] and answer["children"] == []


# --- what we ask ------------------------------------------------------------------------


def summary(room_id, **fields):
    return {"room_id": room_id, "num_joined_members": 2, "world_readable": False, "guest_can_join": False,
            "join_rule": "public", **fields}


def child_event(room_id, via, order, ts=1):
    return {"type": "m.space.child", "state_key": room_id, "content": {"via": [via], "order": order},
            "sender": "@carol:" + via, "origin_server_ts": ts}


async def test_walking_rooms_on_another_server(gw, remote, alice):
    rs = remote.server_name
    space = await room(alice, space=True)
    r1, r2, r3, r4, r5, r6, r7 = [f"!r{i}:{rs}" for i in range(1, 8)]
    for i, child in enumerate((r1, r5, r6, r7)):
        await add_child(alice, space, child, via=[rs], order=str(i))
    # r1: a public space of the remote with children r2 (public), r3 (invite only:
    # described, but not for alice), r4 (inaccessible to us: never asked for).
    remote.hierarchies[r1] = (200, {
        "room": {**summary(r1, room_type="m.space", name="Remote space"),
                 "children_state": [child_event(r2, rs, "a"), child_event(r3, rs, "b"), child_event(r4, rs, "c")]},
        "children": [summary(r2, name="R2"), summary(r3, join_rule="invite")],
        "inaccessible_children": [r4],
    })
    # r5: restricted to our space, which alice is in.
    remote.hierarchies[r5] = (200, {"room": {**summary(r5, join_rule="restricted", allowed_room_ids=[space]),
                                             "children_state": []}, "children": [], "inaccessible_children": []})
    # r6: an answer about another room; r7: 404.
    remote.hierarchies[r6] = (200, {"room": {**summary(r1), "children_state": []}, "children": [],
                                    "inaccessible_children": []})

    body = await v1(alice, "GET", f"/rooms/{q(space)}/hierarchy")
    assert [r["room_id"] for r in body["rooms"]] == [space, r1, r2, r5]
    by_id = {r["room_id"]: r for r in body["rooms"]}
    assert by_id[r1]["name"] == "Remote space" and len(by_id[r1]["children_state"]) == 3
    assert by_id[r2] == {**summary(r2, name="R2"), "children_state": []}
    assert by_id[r5]["allowed_room_ids"] == [space]
    asked = sorted(remote.asked)
    assert asked == sorted((r, "false", gw.server_name) for r in (r1, r5, r6, r7))  # not r2, r3, r4

    # Answers are kept a while; suggested_only is asked for separately.
    await v1(alice, "GET", f"/rooms/{q(space)}/hierarchy")
    assert len(remote.asked) == 4
    await v1(alice, "GET", f"/rooms/{q(space)}/hierarchy", params={"suggested_only": "true"})
    assert len(remote.asked) == 4  # no child of our space is suggested: nothing to ask

    # A remote root (we are not in it): its room ID names the server to ask.
    body = await v1(alice, "GET", f"/rooms/{q(r1)}/hierarchy")
    assert [r["room_id"] for r in body["rooms"]] == [r1, r2]
    assert (await v1(alice, "GET", f"/rooms/{q(r7)}/hierarchy", expect=403))["errcode"] == "M_FORBIDDEN"
    remote.hierarchies[r3] = (200, {"room": {**summary(r3, join_rule="invite"), "children_state": []},
                                    "children": [], "inaccessible_children": []})
    assert (await v1(alice, "GET", f"/rooms/{q(r3)}/hierarchy", expect=403))["errcode"] == "M_FORBIDDEN"

    # Room summaries of rooms we are not in.
    got = await v1(alice, "GET", f"/room_summary/{q(r1)}", params={"via": rs})
    assert got["name"] == "Remote space" and got["membership"] == "leave" and "children_state" not in got
    anonymous = await v1(alice, "GET", f"/room_summary/{q(r1)}", params={"via": rs}, token=False)
    assert anonymous["room_id"] == r1 and "membership" not in anonymous
    assert (await v1(alice, "GET", f"/room_summary/{q(r3)}", expect=404))["errcode"] == "M_NOT_FOUND"
    restricted = await v1(alice, "GET", f"/room_summary/{q(r5)}")
    assert restricted["allowed_room_ids"] == [space]
    assert (await v1(alice, "GET", f"/room_summary/{q(r5)}", token=False, expect=404))["errcode"] == "M_NOT_FOUND"
    assert ("!nowhere:" + rs, "true", gw.server_name) not in remote.asked
    assert (await v1(alice, "GET", f"/room_summary/{q('!nowhere:' + rs)}", expect=404))["errcode"] == "M_NOT_FOUND"
    assert ("!nowhere:" + rs, "true", gw.server_name) in remote.asked

"""Relationships over HTTP, on both engines: /relations, bundled aggregations (m.replace,
m.thread, m.reference) on every endpoint that serves events, /threads, duplicate
annotations, redactions, ignored users, history visibility and odd input."""

from __future__ import annotations

import itertools
import json

from .conftest import auth_header, register
from .test_rooms import alice, bob, create, get, post  # noqa: F401 (fixtures)

C = "/_matrix/client/v3"
V1 = "/_matrix/client/v1"
_txn = itertools.count()


async def send(client, token, room_id, content, type="m.room.message", expect=200) -> str | dict:
    resp = await client.put(f"{C}/rooms/{room_id}/send/{type}/r{next(_txn)}", json=content,
                            headers=auth_header(token))
    body = await resp.json()
    assert resp.status == expect, body
    return body["event_id"] if expect == 200 else body


def text(body: str, **extra) -> dict:
    return {"msgtype": "m.text", "body": body, **extra}


def edit(target: str, body: str) -> dict:
    return {"msgtype": "m.text", "body": f"* {body}", "m.new_content": {"msgtype": "m.text", "body": body},
            "m.relates_to": {"rel_type": "m.replace", "event_id": target}}


def in_thread(root: str, body: str) -> dict:
    return text(body, **{"m.relates_to": {"rel_type": "m.thread", "event_id": root}})


def reaction(target: str, key: str) -> dict:
    return {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}


def reference(target: str) -> dict:
    return text("ref", **{"m.relates_to": {"rel_type": "m.reference", "event_id": target}})


async def relations(client, token, room_id, event_id, *path, **params):
    url = f"{V1}/rooms/{room_id}/relations/{event_id}" + "".join(f"/{p}" for p in path)
    resp = await client.get(url, headers=auth_header(token), params=params)
    return resp.status, await resp.json()


async def threads(client, token, room_id, **params):
    resp = await client.get(f"{V1}/rooms/{room_id}/threads", headers=auth_header(token), params=params)
    return resp.status, await resp.json()


async def event(client, token, room_id, event_id) -> dict:
    status, body = await get(client, token, f"/rooms/{room_id}/event/{event_id}")
    assert status == 200, body
    return body


def bundle(ev: dict) -> dict:
    return ev.get("unsigned", {}).get("m.relations", {})


async def redact(client, token, room_id, event_id):
    resp = await client.put(f"{C}/rooms/{room_id}/redact/{event_id}/x{next(_txn)}", json={},
                            headers=auth_header(token))
    assert resp.status == 200, await resp.json()


async def test_edits_are_bundled_where_events_are_served(client, hs, alice, bob):
    clock = [1_700_000_000_000]
    hs.clock_ms = lambda: clock[0]
    room = await create(client, alice, preset="public_chat")
    assert (await post(client, bob, f"/rooms/{room}/join"))[0] == 200
    original = await send(client, alice, room, text("original"))
    clock[0] += 10
    first = await send(client, alice, room, edit(original, "first edit"))
    clock[0] += 10
    second = await send(client, alice, room, edit(original, "second edit"))
    # Invalid edits are accepted as events but never bundled: another sender, no
    # m.new_content, another event type, an edit of an edit.
    clock[0] += 10
    await send(client, bob, room, edit(original, "bob's edit"))
    await send(client, alice, room, {"body": "x", "m.relates_to": {"rel_type": "m.replace", "event_id": original}})
    await send(client, alice, room, edit(original, "sticker"), type="m.sticker")
    await send(client, alice, room, edit(second, "edit of an edit"))

    ev = await event(client, alice, room, original)
    replace = bundle(ev)["m.replace"]
    assert replace["event_id"] == second
    assert replace["content"]["m.new_content"] == {"msgtype": "m.text", "body": "second edit"}
    assert replace["sender"] == "@alice:hs.test" and replace["type"] == "m.room.message"
    assert ev["content"]["body"] == "original"  # the original's content is left intact
    assert "m.relations" not in (await event(client, alice, room, second)).get("unsigned", {})  # edits get none

    # /messages and /context bundle it too, for any user who may see the events.
    status, page = await get(client, bob, f"/rooms/{room}/messages", dir="b", limit="20")
    by_id = {e["event_id"]: e for e in page["chunk"]}
    assert bundle(by_id[original])["m.replace"]["event_id"] == second
    status, ctx = await get(client, bob, f"/rooms/{room}/context/{first}", limit="10")
    assert status == 200
    around = {e["event_id"]: e for e in ctx["events_before"] + ctx["events_after"]}
    assert bundle(around[original])["m.replace"]["event_id"] == second

    # Same origin_server_ts: the lexicographically largest event ID is the most recent.
    clock[0] += 10
    tied = [await send(client, alice, room, edit(original, f"tie {i}")) for i in range(3)]
    assert bundle(await event(client, alice, room, original))["m.replace"]["event_id"] == max(tied)

    # Redacting the latest edit falls back to the one before; redacting the original
    # drops the m.replace bundle.
    for e in sorted(tied, reverse=True):
        await redact(client, alice, room, e)
    assert bundle(await event(client, alice, room, original))["m.replace"]["event_id"] == second
    await redact(client, alice, room, original)
    assert "m.replace" not in bundle(await event(client, alice, room, original))


async def test_relations_endpoint_filters_pages_and_recurses(client, alice, bob):
    room = await create(client, alice, preset="public_chat")
    root = await send(client, alice, room, text("root"))
    replies = [await send(client, alice, room, in_thread(root, f"reply {i}")) for i in range(5)]
    thumbs = await send(client, alice, room, reaction(root, "👍"), type="m.reaction")
    nested = await send(client, alice, room, reaction(replies[0], "🎉"), type="m.reaction")
    custom = await send(client, alice, room, text("x", **{"m.relates_to": {"rel_type": "org.example.rel",
                                                                               "event_id": root}}))

    status, body = await relations(client, alice, room, root, limit="50")
    assert status == 200 and "next_batch" not in body and "recursion_depth" not in body
    assert [e["event_id"] for e in body["chunk"]] == [custom, thumbs, *reversed(replies)]  # newest first
    # By relationship type, and by event type.
    status, body = await relations(client, alice, room, root, "m.thread", limit="50")
    assert [e["event_id"] for e in body["chunk"]] == list(reversed(replies))
    status, body = await relations(client, alice, room, root, "m.annotation", "m.reaction")
    assert [e["event_id"] for e in body["chunk"]] == [thumbs]
    status, body = await relations(client, alice, room, root, "m.annotation", "m.room.message")
    assert body["chunk"] == []
    # An unknown relationship type is an empty chunk; a custom one is listed, not aggregated.
    assert await relations(client, alice, room, root, "org.example.unknown") == (200, {"chunk": []})
    status, body = await relations(client, alice, room, root, "org.example.rel")
    assert [e["event_id"] for e in body["chunk"]] == [custom]
    assert set(bundle(await event(client, alice, room, root))) == {"m.thread"}

    # Pages of two, backwards then forwards; tokens also from /messages.
    seen, token = [], None
    for _ in range(5):
        params = {"limit": "2", **({"from": token} if token else {})}
        status, body = await relations(client, alice, room, root, "m.thread", **params)
        seen += [e["event_id"] for e in body["chunk"]]
        if token:
            assert body["prev_batch"] == token
        token = body.get("next_batch")
        if token is None:
            break
    assert seen == list(reversed(replies))
    status, body = await relations(client, alice, room, root, "m.thread", dir="f", limit="3")
    assert [e["event_id"] for e in body["chunk"]] == replies[:3]
    status, body = await relations(client, alice, room, root, "m.thread", dir="f", **{"from": body["next_batch"]})
    assert [e["event_id"] for e in body["chunk"]] == replies[3:]
    status, msgs = await get(client, alice, f"/rooms/{room}/messages", dir="b", limit="1")
    status, body = await relations(client, alice, room, root, "m.thread", **{"from": msgs["end"], "limit": "50"})
    assert [e["event_id"] for e in body["chunk"]] == list(reversed(replies))
    status, body = await relations(client, alice, room, root, "m.thread", **{"from": msgs["end"],
                                                                              "to": f"s0", "limit": "50"})
    assert len(body["chunk"]) == 5

    # recurse: a reaction to a reply is an indirect child; filters apply at every level.
    status, body = await relations(client, alice, room, root, recurse="true", limit="50")
    assert body["recursion_depth"] == 3 and nested in {e["event_id"] for e in body["chunk"]}
    status, body = await relations(client, alice, room, root, "m.thread", recurse="true", limit="50")
    assert nested not in {e["event_id"] for e in body["chunk"]}
    status, body = await relations(client, alice, room, root, recurse="false", limit="50")
    assert body["recursion_depth"] == 1 and nested not in {e["event_id"] for e in body["chunk"]}
    # The children carry their own aggregations (the reply's reaction is not one).
    status, body = await relations(client, alice, room, replies[0])
    assert [e["event_id"] for e in body["chunk"]] == [nested]

    # Malformed parameters are 400 M_INVALID_PARAM; unknown or invisible events 404.
    for params in ({"dir": "x"}, {"limit": "many"}, {"limit": "-1"}, {"recurse": "maybe"}, {"from": "bogus"}):
        status, err = await relations(client, alice, room, root, **params)
        assert (status, err["errcode"]) == (400, "M_INVALID_PARAM"), params
    status, err = await relations(client, alice, room, "$unknown")
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")
    private = await create(client, alice, preset="private_chat")
    secret = await send(client, alice, private, text("secret"))
    status, err = await relations(client, bob, private, secret)
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")
    status, err = await relations(client, alice, room, secret)  # exists, but in another room
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")


async def test_threads_are_bundled_and_listed_by_latest_activity(client, alice, bob):
    room = await create(client, alice, preset="public_chat")
    assert (await post(client, bob, f"/rooms/{room}/join"))[0] == 200
    first = await send(client, alice, room, text("thread one"))
    second = await send(client, bob, room, text("thread two"))
    await send(client, alice, room, in_thread(first, "a1"))
    await send(client, bob, room, in_thread(second, "b1"))
    last_reply = await send(client, alice, room, in_thread(first, "a2"))
    # Threads cannot start from an event that is itself a child (400 M_UNKNOWN).
    err = await send(client, alice, room, in_thread(last_reply, "nested"), expect=400)
    assert err["errcode"] == "M_UNKNOWN"

    root = await event(client, bob, room, first)
    thread = bundle(root)["m.thread"]
    assert thread["count"] == 2 and thread["latest_event"]["event_id"] == last_reply
    assert thread["latest_event"]["content"]["body"] == "a2"
    assert thread["current_user_participated"] is False  # bob neither started nor replied
    assert bundle(await event(client, alice, room, first))["m.thread"]["current_user_participated"] is True
    assert bundle(await event(client, alice, room, second))["m.thread"]["current_user_participated"] is False
    # The latest event carries its own aggregations (an edit of it).
    fix = await send(client, alice, room, edit(last_reply, "a2 fixed"))
    latest = bundle(await event(client, bob, room, first))["m.thread"]["latest_event"]
    assert bundle(latest)["m.replace"]["event_id"] == fix
    assert bundle(await event(client, bob, room, first))["m.thread"]["count"] == 2  # edits do not count

    # Most recently active first, each with its bundle; pages of one.
    status, body = await threads(client, bob, room)
    assert status == 200 and [e["event_id"] for e in body["chunk"]] == [first, second]
    assert bundle(body["chunk"][0])["m.thread"]["count"] == 2
    await send(client, bob, room, in_thread(second, "b2"))
    status, page1 = await threads(client, bob, room, limit="1")
    assert [e["event_id"] for e in page1["chunk"]] == [second]
    status, page2 = await threads(client, bob, room, limit="1", **{"from": page1["next_batch"]})
    assert [e["event_id"] for e in page2["chunk"]] == [first] and "next_batch" not in page2
    # include=participated: threads the user started or replied to.
    status, body = await threads(client, alice, room, include="participated")
    assert [e["event_id"] for e in body["chunk"]] == [first]
    status, body = await threads(client, bob, room, include="participated")
    assert [e["event_id"] for e in body["chunk"]] == [second]
    carol = (await register(client, "carol"))["access_token"]
    assert (await post(client, carol, f"/rooms/{room}/join"))[0] == 200
    assert (await threads(client, carol, room, include="participated")) == (200, {"chunk": []})
    # Bad parameters, and a user who was never in the room.
    for params in ({"include": "some"}, {"limit": "0"}, {"limit": "x"}, {"from": "nonsense"}, {"from": "tx"}):
        status, err = await threads(client, bob, room, **params)
        assert (status, err["errcode"]) == (400, "M_INVALID_PARAM"), params
    dave = (await register(client, "dave"))["access_token"]
    status, err = await threads(client, dave, room)
    assert (status, err["errcode"]) == (403, "M_FORBIDDEN")


async def test_participated_is_about_the_user(client, alice, bob):
    room = await create(client, alice, preset="public_chat")
    assert (await post(client, bob, f"/rooms/{room}/join"))[0] == 200
    mine = await send(client, alice, room, text("alice's"))
    theirs = await send(client, bob, room, text("bob's"))
    replied = await send(client, bob, room, text("bob's, alice replied"))
    await send(client, bob, room, in_thread(mine, "x"))
    await send(client, bob, room, in_thread(theirs, "y"))
    await send(client, alice, room, in_thread(replied, "z"))
    status, body = await threads(client, alice, room, include="participated")
    assert [e["event_id"] for e in body["chunk"]] == [replied, mine]


async def test_duplicate_annotations_are_refused(client, alice, bob):
    room = await create(client, alice, preset="public_chat")
    assert (await post(client, bob, f"/rooms/{room}/join"))[0] == 200
    target = await send(client, alice, room, text("react to me"))
    first = await send(client, alice, room, reaction(target, "👍"), type="m.reaction")
    err = await send(client, alice, room, reaction(target, "👍"), type="m.reaction", expect=400)
    assert err["errcode"] == "M_DUPLICATE_ANNOTATION"
    # Another key, another user, another event type: fine.
    await send(client, alice, room, reaction(target, "👎"), type="m.reaction")
    await send(client, bob, room, reaction(target, "👍"), type="m.reaction")
    await send(client, alice, room, {"m.relates_to": reaction(target, "👍")["m.relates_to"], "body": "x"})
    # Once the first is redacted the user may react so again.
    await redact(client, alice, room, first)
    await send(client, alice, room, reaction(target, "👍"), type="m.reaction")
    # Annotations are not aggregated by the server.
    assert "m.annotation" not in bundle(await event(client, alice, room, target))


async def test_references_and_relations_across_rooms(client, alice):
    room = await create(client, alice, preset="public_chat")
    other = await create(client, alice, preset="public_chat")
    target = await send(client, alice, room, text("referenced"))
    refs = [await send(client, alice, room, reference(target)) for _ in range(2)]
    # A relationship from another room is accepted, and neither listed nor aggregated.
    await send(client, alice, other, reference(target))
    await send(client, alice, other, in_thread(target, "elsewhere"))
    await send(client, alice, other, edit(target, "elsewhere"))
    ev = await event(client, alice, room, target)
    assert bundle(ev) == {"m.reference": {"chunk": [{"event_id": r} for r in refs]}}
    status, body = await relations(client, alice, room, target, limit="10")
    assert [e["event_id"] for e in body["chunk"]] == list(reversed(refs))
    # A relationship that does not follow the schema is no relationship.
    await send(client, alice, room, text("x", **{"m.relates_to": {"rel_type": "m.reference", "event_id": 5}}))
    await send(client, alice, room, text("x", **{"m.relates_to": {"rel_type": "m.reference", "event_id": "nope"}}))
    await send(client, alice, room, text("x", **{"m.relates_to": "nonsense"}))
    assert len(bundle(await event(client, alice, room, target))["m.reference"]["chunk"]) == 2
    # A redacted reference is no reference any more.
    await redact(client, alice, room, refs[0])
    assert bundle(await event(client, alice, room, target))["m.reference"]["chunk"] == [{"event_id": refs[1]}]


async def test_ignored_users_are_left_out(client, alice, bob):
    room = await create(client, alice, preset="public_chat")
    assert (await post(client, bob, f"/rooms/{room}/join"))[0] == 200
    root = await send(client, bob, room, text("root by bob"))
    mine = await send(client, alice, room, in_thread(root, "alice"))
    await send(client, bob, room, in_thread(root, "bob"))
    await send(client, bob, room, reference(root))
    resp = await client.put(f"{C}/user/@alice:hs.test/account_data/m.ignored_user_list",
                            json={"ignored_users": {"@bob:hs.test": {}}}, headers=auth_header(alice))
    assert resp.status == 200
    thread = bundle(await event(client, alice, room, root))["m.thread"]
    assert thread["count"] == 1 and thread["latest_event"]["event_id"] == mine
    assert "m.reference" not in bundle(await event(client, alice, room, root))
    status, body = await relations(client, alice, room, root, limit="10")
    assert [e["event_id"] for e in body["chunk"]] == [mine]
    # The thread root by an ignored user is listed redacted.
    status, body = await threads(client, alice, room)
    assert [e["event_id"] for e in body["chunk"]] == [root] and "body" not in body["chunk"][0]["content"]
    # Bob himself still sees everything.
    assert bundle(await event(client, bob, room, root))["m.thread"]["count"] == 2


async def test_history_visibility_applies_to_children(client, alice, bob):
    room = await create(client, alice, preset="public_chat",
                        initial_state=[{"type": "m.room.history_visibility", "state_key": "",
                                        "content": {"history_visibility": "joined"}}])
    root = await send(client, alice, room, text("root"))
    early = await send(client, alice, room, in_thread(root, "before bob"))
    assert (await post(client, bob, f"/rooms/{room}/join"))[0] == 200
    late = await send(client, alice, room, in_thread(root, "after bob"))
    # Bob cannot see the root (sent before he joined): 404, as for /event.
    status, err = await relations(client, bob, room, root)
    assert status == 404
    status, body = await relations(client, alice, room, root)
    assert [e["event_id"] for e in body["chunk"]] == [late, early]
    status, body = await threads(client, bob, room)
    assert body["chunk"] == []  # the root is hidden from him
    # Alice leaves; what is sent afterwards is not hers to see in the bundle.
    assert (await post(client, alice, f"/rooms/{room}/leave"))[0] == 200
    await send(client, bob, room, in_thread(root, "after alice left"))
    status, body = await get(client, alice, f"/rooms/{room}/messages", dir="b", limit="50")
    roots = [e for e in body["chunk"] if e["event_id"] == root]
    assert bundle(roots[0])["m.thread"]["latest_event"]["event_id"] == late
    # ...nor in the count: only the replies she may see (spec: the count leaves out what
    # the requester cannot see, as the latest event does).
    assert bundle(roots[0])["m.thread"]["count"] == 2
    status, body = await threads(client, alice, room)
    assert [e["event_id"] for e in body["chunk"]] == [root] and bundle(body["chunk"][0])["m.thread"]["count"] == 2
    # Back in the room, she sees the reply sent while she was away ("joined": from her
    # new join on, not what she missed), so the count stays; a new reply counts.
    assert (await post(client, alice, f"/rooms/{room}/join"))[0] == 200
    newest = await send(client, bob, room, in_thread(root, "welcome back"))
    thread = bundle(await event(client, alice, room, root))["m.thread"]
    assert thread["count"] == 3 and thread["latest_event"]["event_id"] == newest


async def test_sync_bundles_only_limited_timelines(client, alice):
    room = await create(client, alice, preset="public_chat")
    original = await send(client, alice, room, text("original"))
    fix = await send(client, alice, room, edit(original, "fixed"))
    flt = json.dumps({"room": {"timeline": {"limit": 2}}})
    status, body = await get(client, alice, "/sync", filter=flt)
    timeline = body["rooms"]["join"][room]["timeline"]
    assert timeline["limited"] is True
    assert [e["event_id"] for e in timeline["events"]] == [original, fix]
    assert bundle(timeline["events"][0])["m.replace"]["event_id"] == fix
    # An incremental sync that is not limited leaves the aggregation to the client.
    since = body["next_batch"]
    fix2 = await send(client, alice, room, edit(original, "fixed again"))
    reply = await send(client, alice, room, in_thread(original, "hi"))
    status, body = await get(client, alice, "/sync", since=since, filter=flt)
    timeline = body["rooms"]["join"][room]["timeline"]
    assert timeline["limited"] is False and [e["event_id"] for e in timeline["events"]] == [fix2, reply]
    assert all("m.relations" not in e["unsigned"] for e in timeline["events"])
    # A limited incremental sync bundles.
    since = body["next_batch"]
    for i in range(3):
        await send(client, alice, room, text(f"filler {i}"))
    late = await send(client, alice, room, text("late"))
    late_fix = await send(client, alice, room, edit(late, "late fixed"))
    status, body = await get(client, alice, "/sync", since=since, filter=flt)
    timeline = body["rooms"]["join"][room]["timeline"]
    assert timeline["limited"] is True and [e["event_id"] for e in timeline["events"]] == [late, late_fix]
    assert bundle(timeline["events"][0])["m.replace"]["event_id"] == late_fix

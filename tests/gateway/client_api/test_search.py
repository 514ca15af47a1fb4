"""POST /search (room_events) over HTTP, on both engines: rooms, filters, orders and
pagination, groups, highlights, context, state, who may see what, and bad requests."""

from __future__ import annotations

from .conftest import auth_header, register
from .test_rooms import C, alice, bob, create, post, send  # noqa: F401 (fixtures)


async def search(client, token, term=None, *, expect=200, batch=None, version="v3", body=None, **criteria):
    if body is None:
        body = {"search_categories": {"room_events": {"search_term": term, **criteria}}}
    params = {"next_batch": batch} if batch else {}
    resp = await client.post(f"/_matrix/client/{version}/search", json=body, params=params,
                             headers=auth_header(token))
    data = await resp.json()
    assert resp.status == expect, data
    return data["search_categories"]["room_events"] if expect == 200 else data


def ids(found):
    return [r["result"]["event_id"] for r in found["results"]]


async def say(client, token, room_id, text, n=[0]):
    n[0] += 1
    sent = await send(client, token, room_id, text, txn=f"s{n[0]}")
    assert sent["status"] == 200, sent
    return sent["event_id"]


async def put_state(client, token, room_id, event_type, content, state_key=""):
    resp = await client.put(f"{C}/rooms/{room_id}/state/{event_type}/{state_key}", json=content,
                            headers=auth_header(token))
    assert resp.status == 200, await resp.json()
    return (await resp.json())["event_id"]


async def pages(client, token, term, **criteria):
    """Every result, following next_batch."""
    out, batch = [], None
    while True:
        found = await search(client, token, term, batch=batch, **criteria)
        out += ids(found)
        batch = found.get("next_batch")
        if batch is None:
            return out


async def test_search_across_rooms_orders_filters_and_pages(client, alice, bob):
    room_a = await create(client, alice, preset="public_chat", name="Fox den")
    room_b = await create(client, alice, preset="public_chat", topic="Foxes and hounds")
    assert (await post(client, bob, f"/rooms/{room_b}/join"))[0] == 200
    a1 = await say(client, alice, room_a, "The quick brown fox")
    b1 = await say(client, bob, room_b, "a fox fox fox in the henhouse")
    a2 = await say(client, alice, room_a, "Running foxes everywhere")
    await say(client, alice, room_a, "nothing to see here")

    found = await search(client, alice, "fox", order_by="recent")
    name_id = [r for r in found["results"] if r["result"]["type"] == "m.room.name"][0]["result"]["event_id"]
    topic_id = [r for r in found["results"] if r["result"]["type"] == "m.room.topic"][0]["result"]["event_id"]
    # Newest first; names and topics too; stemmed ("foxes").
    assert ids(found) == [a2, b1, a1, topic_id, name_id]
    assert found["count"] == 5
    assert {"fox", "foxes", "Foxes"} & set(found["highlights"]) and "quick" not in found["highlights"]
    assert "next_batch" not in found
    assert all(isinstance(r["rank"], float) for r in found["results"])
    assert found["results"][0]["result"]["content"]["body"] == "Running foxes everywhere"
    assert "context" not in found["results"][0]

    # Rank: "fox fox fox" first; ranks never grow.
    ranked = await search(client, alice, "fox")
    assert ids(ranked)[0] == b1 and set(ids(ranked)) == set(ids(found))
    ranks = [r["rank"] for r in ranked["results"]]
    assert ranks == sorted(ranks, reverse=True)

    # Keys and filters.
    assert ids(await search(client, alice, "fox", keys=["content.body"], order_by="recent")) == [a2, b1, a1]
    assert ids(await search(client, alice, "fox", keys=["content.name", "content.topic"], order_by="recent")) \
        == [topic_id, name_id]
    assert ids(await search(client, alice, "fox", order_by="recent", filter={"rooms": [room_a]})) \
        == [a2, a1, name_id]
    assert ids(await search(client, alice, "fox", order_by="recent", filter={"not_rooms": [room_a]})) \
        == [b1, topic_id]
    assert ids(await search(client, alice, "fox", order_by="recent", filter={"senders": ["@bob:hs.test"]})) == [b1]
    assert ids(await search(client, alice, "fox", order_by="recent", filter={"not_senders": ["@alice:hs.test"]})) \
        == [b1]
    assert ids(await search(client, alice, "fox", filter={"types": ["m.room.name"]})) == [name_id]
    assert ids(await search(client, alice, "fox", order_by="recent", filter={"not_types": ["m.room.*"]})) == []
    assert ids(await search(client, alice, "fox", order_by="recent", filter={"types": ["m.room.t*"]})) \
        == [topic_id]
    # A phrase, an exclusion, "or".
    assert ids(await search(client, alice, '"brown fox"')) == [a1]
    assert ids(await search(client, alice, "fox -quick -henhouse -running", order_by="recent")) \
        == [topic_id, name_id]
    assert set(ids(await search(client, alice, "henhouse or everywhere"))) == {a2, b1}
    # Bob is only in room B.
    assert set(ids(await search(client, bob, "fox"))) == {b1, topic_id}

    # Pages of two, in both orders, give every result once and in order.
    assert await pages(client, alice, "fox", order_by="recent", filter={"limit": 2}) == ids(found)
    assert await pages(client, alice, "fox", order_by="rank", filter={"limit": 2}) == ids(ranked)
    first = await search(client, alice, "fox", order_by="recent", filter={"limit": 2})
    assert ids(first) == [a2, b1] and first["count"] == 5
    # The old API path answers the same.
    assert ids(await search(client, alice, "fox", order_by="recent", version="r0")) == ids(found)


async def test_groups_and_their_tokens(client, alice, bob):
    room_a = await create(client, alice, preset="public_chat")
    room_b = await create(client, alice, preset="public_chat")
    assert (await post(client, bob, f"/rooms/{room_a}/join"))[0] == 200
    sent = {}
    for i in range(3):
        sent[f"a{i}"] = await say(client, alice, room_a, f"apple {i}")
        sent[f"b{i}"] = await say(client, alice, room_b, f"apple {i}")
        sent[f"c{i}"] = await say(client, bob, room_a, f"apple {i}")
    grouped = {"group_by": [{"key": "room_id"}, {"key": "sender"}]}
    found = await search(client, alice, "apple", order_by="recent", groupings=grouped, filter={"limit": 4})
    assert ids(found) == [sent["c2"], sent["b2"], sent["a2"], sent["c1"]]
    rooms = found["groups"]["room_id"]
    assert rooms[room_a]["results"] == [sent["c2"], sent["a2"], sent["c1"]]
    assert rooms[room_b]["results"] == [sent["b2"]]
    assert rooms[room_a]["order"] == 1 and rooms[room_b]["order"] == 2
    senders = found["groups"]["sender"]
    assert senders["@bob:hs.test"]["results"] == [sent["c2"], sent["c1"]]
    assert senders["@alice:hs.test"]["results"] == [sent["b2"], sent["a2"]]
    # A group's token goes on within the group.
    more_b = await search(client, alice, "apple", order_by="recent", groupings=grouped, filter={"limit": 4},
                          batch=rooms[room_b]["next_batch"])
    assert ids(more_b) == [sent["b1"], sent["b0"]] and "next_batch" not in more_b
    more_bob = await search(client, alice, "apple", order_by="recent", filter={"limit": 4},
                            batch=senders["@bob:hs.test"]["next_batch"])
    assert ids(more_bob) == [sent["c0"]]
    # The top-level token goes on with everything.
    rest = await search(client, alice, "apple", order_by="recent", filter={"limit": 10}, batch=found["next_batch"])
    assert ids(rest) == [sent["b1"], sent["a1"], sent["c0"], sent["b0"], sent["a0"]]
    # Rank order's group tokens too.
    ranked = await search(client, alice, "apple", groupings=grouped, filter={"limit": 2})
    seen = set(ids(ranked))
    group_token = ranked["groups"]["room_id"][next(iter(ranked["groups"]["room_id"]))]["next_batch"]
    room_of_group = next(iter(ranked["groups"]["room_id"]))
    rest_in_group, batch = [], group_token
    while batch:
        page = await search(client, alice, "apple", filter={"limit": 2}, batch=batch)
        rest_in_group += page["results"]
        batch = page.get("next_batch")
    assert all(r["result"]["room_id"] == room_of_group for r in rest_in_group)
    everything_in_group = {e for k, e in sent.items() if (k[0] == "b") == (room_of_group == room_b)}
    assert {r["result"]["event_id"] for r in rest_in_group} == everything_in_group - seen


async def test_who_sees_what(client, alice, bob):
    carol = (await register(client, "carol"))["access_token"]
    # 'joined' history: Bob, joining later, finds nothing from before.
    joined = await create(client, alice, preset="public_chat")
    await put_state(client, alice, joined, "m.room.history_visibility", {"history_visibility": "joined"})
    early = await say(client, alice, joined, "secret plans early")
    assert (await post(client, bob, f"/rooms/{joined}/join"))[0] == 200
    late = await say(client, alice, joined, "secret plans late")
    found = await search(client, bob, "secret")
    assert ids(found) == [late] and found["count"] == 1
    assert set(ids(await search(client, alice, "secret"))) == {early, late}
    # 'shared' history: all of it, once joined; nothing for someone never in.
    shared = await create(client, alice, preset="public_chat")
    before = await say(client, alice, shared, "shared secret before")
    assert await search(client, bob, "shared") == {"results": [], "count": 0, "highlights": []}
    assert (await post(client, bob, f"/rooms/{shared}/join"))[0] == 200
    assert ids(await search(client, bob, "shared")) == [before]
    # A room left: what was sent while joined, not after (nor, as /messages has it, what
    # 'shared' history showed only while joined).
    during = await say(client, alice, shared, "shared secret during")
    assert (await post(client, bob, f"/rooms/{shared}/leave"))[0] == 200
    await say(client, alice, shared, "shared secret after")
    found = await search(client, bob, "shared", order_by="recent", include_state=True,
                         event_context={"before_limit": 5, "after_limit": 5})
    assert ids(found) == [during] and found["count"] == 1
    # The context stops at the leave; the state is the state at the leave.
    after_ids = [e["event_id"] for e in found["results"][0]["context"]["events_after"]]
    assert [e["type"] for e in found["results"][0]["context"]["events_after"]] == ["m.room.member"]
    member_state = [e for e in found["state"][shared] if e["type"] == "m.room.member"
                    and e["state_key"] == "@bob:hs.test"]
    assert member_state[0]["content"]["membership"] == "leave" and member_state[0]["event_id"] == after_ids[0]
    # Forgotten: not searched any more.
    assert (await post(client, bob, f"/rooms/{shared}/forget"))[0] == 200
    assert ids(await search(client, bob, "shared")) == []
    # 'invited' history: from the invite on.
    invited = await create(client, alice, preset="private_chat")
    await put_state(client, alice, invited, "m.room.history_visibility", {"history_visibility": "invited"})
    await say(client, alice, invited, "hidden gem")
    assert (await post(client, alice, f"/rooms/{invited}/invite", {"user_id": "@carol:hs.test"}))[0] == 200
    gem = await say(client, alice, invited, "visible gem")
    assert (await post(client, carol, f"/rooms/{invited}/join"))[0] == 200
    assert ids(await search(client, carol, "gem")) == [gem]
    # World-readable history: joined members find it all.
    world = await create(client, alice, preset="public_chat")
    await put_state(client, alice, world, "m.room.history_visibility", {"history_visibility": "world_readable"})
    old = await say(client, alice, world, "open book")
    assert (await post(client, carol, f"/rooms/{world}/join"))[0] == 200
    assert ids(await search(client, carol, "book")) == [old]


async def test_context_profiles_and_state(client, alice, bob):
    room_id = await create(client, alice, preset="public_chat", name="Context")
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    await put_state(client, bob, room_id, "m.room.member",
                    {"membership": "join", "displayname": "Bobby", "avatar_url": "mxc://hs.test/b"}, "@bob:hs.test")
    before = [await say(client, alice, room_id, f"filler {i}") for i in range(3)]
    target = await say(client, bob, room_id, "the needle")
    after = [await say(client, alice, room_id, f"filler after {i}") for i in range(3)]
    found = await search(client, alice, "needle", include_state=True,
                         event_context={"before_limit": 2, "after_limit": 1, "include_profile": True})
    (result,) = found["results"]
    assert result["result"]["event_id"] == target
    context = result["context"]
    assert [e["event_id"] for e in context["events_before"]] == [before[2], before[1]]
    assert [e["event_id"] for e in context["events_after"]] == [after[0]]
    assert context["profile_info"] == {
        "@bob:hs.test": {"displayname": "Bobby", "avatar_url": "mxc://hs.test/b"},
        "@alice:hs.test": {"displayname": "alice"}}
    # The tokens continue with /messages.
    resp = await client.get(f"{C}/rooms/{room_id}/messages", headers=auth_header(alice),
                            params={"dir": "b", "limit": "1", "from": context["start"]})
    assert [e["event_id"] for e in (await resp.json())["chunk"]] == [before[0]]
    resp = await client.get(f"{C}/rooms/{room_id}/messages", headers=auth_header(alice),
                            params={"dir": "f", "limit": "1", "from": context["end"]})
    assert [e["event_id"] for e in (await resp.json())["chunk"]] == [after[1]]
    state = found["state"][room_id]
    assert {"m.room.create", "m.room.name", "m.room.member"} <= {e["type"] for e in state}
    assert list(found["state"]) == [room_id]
    # Defaults: five on each side, no profiles.
    context = (await search(client, alice, "needle", event_context={}))["results"][0]["context"]
    assert len(context["events_before"]) == 5 and len(context["events_after"]) == 3
    assert "profile_info" not in context


async def test_redacted_and_encrypted_events_are_not_found(client, alice):
    room_id = await create(client, alice, preset="private_chat")
    gone = await say(client, alice, room_id, "regrettable words")
    kept = await say(client, alice, room_id, "acceptable words")
    resp = await client.put(f"{C}/rooms/{room_id}/redact/{gone}/r1", json={}, headers=auth_header(alice))
    assert resp.status == 200
    assert ids(await search(client, alice, "words")) == [kept]
    # Encrypted messages carry no searchable text.
    resp = await client.put(f"{C}/rooms/{room_id}/send/m.room.encrypted/e1",
                            json={"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "words words",
                                  "sender_key": "k", "session_id": "s", "device_id": "D"},
                            headers=auth_header(alice))
    assert resp.status == 200
    assert ids(await search(client, alice, "words")) == [kept]


BAD_BODIES = [
    ({}, "M_BAD_JSON"),
    ({"search_categories": []}, "M_BAD_JSON"),
    ({"search_categories": {}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x"}, "people": {}}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": "x"}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {}}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": 5}}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "keys": ["content.url"]}}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "keys": "content.body"}}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "order_by": "oldest"}}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "filter": []}}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "filter": {"rooms": "!a:b"}}}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "filter": {"limit": -1}}}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "filter": {"senders": [1]}}}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "include_state": "yes"}}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "event_context": {"before_limit": "5"}}}},
     "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "event_context": {"after_limit": -1}}}},
     "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "event_context": []}}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "groupings": {"group_by": [{"key": "type"}]}}}},
     "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "groupings": {"group_by": "room_id"}}}},
     "M_BAD_JSON"),
]


async def test_bad_requests(client, alice):
    for body, errcode in BAD_BODIES:
        err = await search(client, alice, body=body, expect=400)
        assert err["errcode"] == errcode and err["error"], body


async def test_bad_tokens_and_odd_terms(client, alice):
    resp = await client.post(f"{C}/search", data=b"{not json", headers=auth_header(alice))
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_NOT_JSON"
    room_id = await create(client, alice, preset="private_chat")
    for i in range(3):
        await say(client, alice, room_id, f"token test {i}")
    for batch in ["garbage!", "e30", "WyJyZWNlbnQiXQ", "WyJyZWNlbnQiLCJ4IiwwXQ"]:
        err = await search(client, alice, "token", batch=batch, expect=400)
        assert err["errcode"] == "M_INVALID_PARAM", batch
    page = await search(client, alice, "token", order_by="recent", filter={"limit": 1})
    err = await search(client, alice, "token", order_by="rank", batch=page["next_batch"], expect=400)
    assert err["errcode"] == "M_INVALID_PARAM"
    for term in ['"', "NEAR(", "a OR", "'; DROP TABLE events; --", "*:*", "\\", "\u0000", "-", "x" * 3000,
                 "token:*", '"token" NOT', "(token", "token)", "tok\u0000en"]:
        found = await search(client, alice, term)
        assert isinstance(found["results"], list), term
    assert len((await search(client, alice, "(token"))["results"]) == 3
    assert len((await search(client, alice, "token:*"))["results"]) == 3
    assert len((await search(client, alice, "tok\u0000en"))["results"]) == 3
    # No words at all: nothing, not an error.
    assert await search(client, alice, "") == {"results": [], "count": 0, "highlights": []}


async def test_edits_are_bundled_and_ignored_users_left_out(client, alice, bob):
    room_id = await create(client, alice, preset="public_chat",
                           power_level_content_override={"events": {"m.room.topic": 0}})
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    original = await say(client, alice, room_id, "original wording")
    resp = await client.put(f"{C}/rooms/{room_id}/send/m.room.message/edit1", headers=auth_header(alice), json={
        "msgtype": "m.text", "body": "* better wording",
        "m.new_content": {"msgtype": "m.text", "body": "better wording"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": original}})
    assert resp.status == 200
    edit = (await resp.json())["event_id"]
    found = await search(client, bob, "original", event_context={"before_limit": 0, "after_limit": 1})
    (result,) = found["results"]
    assert result["result"]["unsigned"]["m.relations"]["m.replace"]["event_id"] == edit
    assert [e["event_id"] for e in result["context"]["events_after"]] == [edit]

    # Alice ignores Bob: his messages are not found, his topic still is.
    bobs = await say(client, bob, room_id, "wording from bob")
    topic = await put_state(client, bob, room_id, "m.room.topic", {"topic": "wording rules"})
    assert bobs in ids(await search(client, alice, "wording"))
    resp = await client.put(f"{C}/user/@alice:hs.test/account_data/m.ignored_user_list",
                            json={"ignored_users": {"@bob:hs.test": {}}}, headers=auth_header(alice))
    assert resp.status == 200
    found = await search(client, alice, "wording", order_by="recent")
    assert ids(found) == [topic, edit, original] and found["count"] == 3


async def test_a_room_named_in_the_filter_brings_the_rooms_it_replaced(client, alice, bob):
    """Room upgrades: searching the new room (filter.rooms) also searches its predecessors
    that the user was in, as Synapse does."""
    from .test_room_upgrades import upgraded

    old_room = await create(client, alice, preset="public_chat", room_version="10")
    older = await say(client, alice, old_room, "heritage text")
    new_room = await upgraded(client, alice, old_room, "12")
    newer = await say(client, alice, new_room, "heritage continues")
    other = await create(client, alice, preset="public_chat")
    await say(client, alice, other, "heritage elsewhere")
    found = await search(client, alice, "heritage", order_by="recent", filter={"rooms": [new_room]})
    assert ids(found) == [newer, older]
    # Bob was never in the old room: only the new room's message.
    assert (await post(client, bob, f"/rooms/{new_room}/join"))[0] == 200
    assert ids(await search(client, bob, "heritage", filter={"rooms": [new_room]})) == [newer]

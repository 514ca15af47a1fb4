"""Push rules API, evaluation of new events into unread counts, and pushers, over HTTP
on both engines."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import auth_header, register
from .test_rooms import create, get, post

C = "/_matrix/client/v3"


@pytest.fixture
async def alice(client):
    return (await register(client, "alice"))["access_token"]


@pytest.fixture
async def bob(client):
    return (await register(client, "bob"))["access_token"]


async def put(client, token, path, body, **params):
    resp = await client.put(f"{C}{path}", json=body, params=params, headers=auth_header(token))
    return resp.status, await resp.json()


async def delete(client, token, path):
    resp = await client.delete(f"{C}{path}", headers=auth_header(token))
    return resp.status, await resp.json()


async def say(client, token, room_id, txn, body="hi", **content):
    status, sent = await put(client, token, f"/rooms/{room_id}/send/m.room.message/{txn}",
                             {"msgtype": "m.text", "body": body, **content})
    assert status == 200, sent
    return sent["event_id"]


async def test_ruleset_and_rule_crud(client, alice):
    status, body = await get(client, alice, "/pushrules/")
    assert status == 200
    ruleset = body["global"]
    assert set(ruleset) == {"override", "content", "room", "sender", "underride"}
    ids = [r["rule_id"] for r in ruleset["override"]]
    for rid in (".m.rule.master", ".m.rule.is_user_mention", ".m.rule.is_room_mention", ".m.rule.suppress_edits",
                ".m.rule.tombstone", ".m.rule.roomnotif", ".m.rule.contains_display_name",
                ".m.rule.invite_for_me", ".m.rule.member_event", ".m.rule.reaction", ".m.rule.room.server_acl",
                ".m.rule.suppress_notices"):
        assert rid in ids
    assert (await get(client, alice, "/pushrules/global/"))[1] == ruleset

    cake = {"pattern": "cake", "actions": ["notify", {"set_tweak": "sound", "value": "cakealarm.wav"}]}
    assert await put(client, alice, "/pushrules/global/content/cake", cake) == (200, {})
    assert await put(client, alice, "/pushrules/global/content/lie", {"pattern": "cake*lie", "actions": ["notify"]},
                     before="cake") == (200, {})
    assert await put(client, alice, "/pushrules/global/content/last", {"pattern": "z", "actions": []},
                     after="cake") == (200, {})
    assert await put(client, alice, "/pushrules/global/content/first", {"pattern": "y", "actions": []}) == (200, {})
    content = (await get(client, alice, "/pushrules/global/"))[1]["content"]
    assert [r["rule_id"] for r in content] == ["first", "lie", "cake", "last", ".m.rule.contains_user_name"]
    status, rule = await get(client, alice, "/pushrules/global/content/cake")
    assert rule == {"rule_id": "cake", "default": False, "enabled": True, "pattern": "cake",
                    "actions": cake["actions"]}
    # Updating keeps the place.
    assert await put(client, alice, "/pushrules/global/content/cake", {"pattern": "pie", "actions": []}) == (200, {})
    content = (await get(client, alice, "/pushrules/global/"))[1]["content"]
    assert [r["rule_id"] for r in content][:4] == ["first", "lie", "cake", "last"] and content[2]["pattern"] == "pie"

    # Enabled and actions, of user rules and of default rules.
    assert await put(client, alice, "/pushrules/global/content/cake/enabled", {"enabled": False}) == (200, {})
    assert await get(client, alice, "/pushrules/global/content/cake/enabled") == (200, {"enabled": False})
    assert await put(client, alice, "/pushrules/global/override/.m.rule.master/enabled", {"enabled": True}) \
        == (200, {})
    assert await get(client, alice, "/pushrules/global/override/.m.rule.master/enabled") == (200, {"enabled": True})
    assert await put(client, alice, "/pushrules/global/underride/.m.rule.message/actions",
                     {"actions": ["notify", {"set_tweak": "highlight"}]}) == (200, {})
    assert await get(client, alice, "/pushrules/global/underride/.m.rule.message/actions") == \
        (200, {"actions": ["notify", {"set_tweak": "highlight"}]})

    # Errors.
    for path, body, params, status_code, errcode in [
        ("/pushrules/global/content/.mine", {"pattern": "x", "actions": []}, {}, 400, "M_INVALID_PARAM"),
        ("/pushrules/global/content/x", {"actions": []}, {}, 400, "M_INVALID_PARAM"),
        ("/pushrules/global/content/x", {"pattern": "x", "actions": ["explode"]}, {}, 400, "M_INVALID_PARAM"),
        ("/pushrules/global/override/x", {"actions": [], "conditions": "no"}, {}, 400, "M_INVALID_PARAM"),
        ("/pushrules/global/content/x", {"pattern": "x", "actions": []}, {"before": "nope"}, 400, "M_UNKNOWN"),
        ("/pushrules/global/content/x", {"pattern": "x", "actions": []}, {"after": ".m.rule.contains_user_name"},
         400, "M_INVALID_PARAM"),
        ("/pushrules/global/nonsense/x", {"actions": []}, {}, 400, "M_INVALID_PARAM"),
        ("/pushrules/device/content/x", {"pattern": "x", "actions": []}, {}, 400, "M_INVALID_PARAM"),
        ("/pushrules/global/sender/not-a-user", {"actions": []}, {}, 400, "M_INVALID_PARAM"),
        ("/pushrules/global/content/nope/enabled", {"enabled": True}, {}, 404, "M_NOT_FOUND"),
        ("/pushrules/global/content/cake/enabled", {"enabled": "yes"}, {}, 400, "M_BAD_JSON"),
    ]:
        status, err = await put(client, alice, path, body, **params)
        assert (status, err.get("errcode")) == (status_code, errcode), (path, params, err)
    status, err = await get(client, alice, "/pushrules/global/content/nope")
    assert status == 404 and err["errcode"] == "M_NOT_FOUND"
    status, err = await delete(client, alice, "/pushrules/global/underride/.m.rule.message")
    assert status == 400 and err["errcode"] == "M_INVALID_PARAM"
    assert await delete(client, alice, "/pushrules/global/content/cake") == (200, {})
    status, err = await delete(client, alice, "/pushrules/global/content/cake")
    assert status == 404 and err["errcode"] == "M_NOT_FOUND"


async def test_trailing_slashes_list_and_malformed_paths_are_refused(client, alice):
    """As the spec writes the paths: a trailing slash lists (everything, a scope, a kind);
    a path that stops at a scope or kind without one, or names an unknown scope, kind or
    attribute, is a 400 (``/pushrules`` itself is no endpoint)."""
    assert await put(client, alice, "/pushrules/global/sender/@bob:example.com", {"actions": ["notify"]}) == (200, {})
    status, rules = await get(client, alice, "/pushrules/global/sender/")
    assert status == 200 and [r["rule_id"] for r in rules] == ["@bob:example.com"]
    status, scope = await get(client, alice, "/pushrules/global/")
    assert status == 200 and scope["sender"] == rules
    assert (await get(client, alice, "/pushrules"))[0] == 404
    for path in ("/pushrules/global", "/pushrules/global/room", "/pushrules/not_a_scope/",
                 "/pushrules/global/not_a_template/", "/pushrules/global/override/.m.rule.master/not_an_attr"):
        status, err = await get(client, alice, path)
        assert (status, err["errcode"]) == (400, "M_INVALID_PARAM"), path
    for path, body in [("/pushrules/", {}), ("/pushrules/global", {}), ("/pushrules/global/room", {}),
                       ("/pushrules/global/room/", {"actions": []}),
                       ("/pushrules/global/room/a%2Fb", {"actions": []}),
                       ("/pushrules/global/override/.m.rule.master/not_an_attr", {"enabled": True})]:
        status, err = await put(client, alice, path, body)
        assert (status, err["errcode"]) == (400, "M_INVALID_PARAM"), path
    # The encoded slash was refused, not taken as a separator: nothing was stored.
    assert (await get(client, alice, "/pushrules/global/room/"))[1] == []
    status, err = await delete(client, alice, "/pushrules/global/sender/")
    assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")


async def test_rules_keep_the_actions_sent_and_historical_actions_do_nothing(client, hs, alice, bob):
    """``dont_notify`` reads back as sent (as a client set it) and mutes like ``[]``; a
    room rule's ID is taken as given (an alias names no room, so that rule matches
    nothing)."""
    room_id = await create(client, alice, preset="public_chat")
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    assert await put(client, alice, "/pushrules/global/room/%23spam:example.com", {"actions": ["notify"]}) == (200, {})
    assert (await get(client, alice, "/pushrules/global/room/%23spam:example.com"))[1]["actions"] == ["notify"]
    assert await put(client, alice, f"/pushrules/global/room/{room_id}", {"actions": ["dont_notify"]}) == (200, {})
    assert await get(client, alice, f"/pushrules/global/room/{room_id}/actions") == (200, {"actions": ["dont_notify"]})
    assert await put(client, alice, "/pushrules/global/underride/.m.rule.message/actions",
                     {"actions": ["dont_notify", "coalesce"]}) == (200, {})
    assert await get(client, alice, "/pushrules/global/underride/.m.rule.message/actions") == \
        (200, {"actions": ["dont_notify", "coalesce"]})
    start = (await hs.events.get_room(room_id)).head_stream_ordering
    await say(client, bob, room_id, "1", "muted")
    assert await hs.push.get_unread_counts("@alice:hs.test", room_id, start) == (0, 0)
    await say(client, bob, room_id, "2", "but mentions", **{"m.mentions": {"user_ids": ["@alice:hs.test"]}})
    assert await hs.push.get_unread_counts("@alice:hs.test", room_id, start) == (1, 1)


async def test_new_events_are_counted_for_other_members(client, hs, alice, bob):
    room_id = await create(client, alice, preset="public_chat")
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    carol = (await register(client, "carol"))["access_token"]
    assert (await post(client, carol, f"/rooms/{room_id}/join"))[0] == 200
    room = await hs.events.get_room(room_id)
    start = room.head_stream_ordering
    await say(client, bob, room_id, "1", "plain message")
    await say(client, bob, room_id, "2", "hey", **{"m.mentions": {"user_ids": ["@alice:hs.test"]}})
    await say(client, alice, room_id, "3", "alice talks")  # not counted for herself
    assert await hs.push.get_unread_counts("@alice:hs.test", room_id, start) == (2, 1)
    assert await hs.push.get_unread_counts("@bob:hs.test", room_id, start) == (1, 0)
    assert await hs.push.get_unread_counts("@carol:hs.test", room_id, start) == (3, 0)
    # Counted after a read position.
    after_first = (await hs.events.get_room(room_id)).head_stream_ordering
    assert await hs.push.get_unread_counts("@alice:hs.test", room_id, after_first) == (0, 0)
    # Bob mutes the room with a room rule; alice keywords.
    assert (await put(client, bob, f"/pushrules/global/room/{room_id}", {"actions": []}))[0] == 200
    assert (await put(client, alice, "/pushrules/global/content/tea",
                      {"pattern": "tea", "actions": ["notify", {"set_tweak": "highlight"}]}))[0] == 200
    await say(client, carol, room_id, "4", "tea time")
    assert await hs.push.get_unread_counts("@bob:hs.test", room_id, after_first) == (0, 0)
    assert await hs.push.get_unread_counts("@alice:hs.test", room_id, after_first) == (1, 1)
    # Notices do not notify; the notifications list shows the highlight.
    await say(client, carol, room_id, "5", "bot says", msgtype="m.notice")
    assert await hs.push.get_unread_counts("@alice:hs.test", room_id, after_first) == (1, 1)
    status, body = await get(client, alice, "/notifications", only="highlight")
    assert status == 200 and [n["event"]["content"]["body"] for n in body["notifications"]] == ["tea time", "hey"]
    assert [n["read"] for n in body["notifications"]] == [False, False]
    assert all(n["profile_tag"] is None for n in body["notifications"])
    # A read receipt on "hey" marks it (and what came before) read.
    hey = body["notifications"][1]["event"]["event_id"]
    assert (await post(client, alice, f"/rooms/{room_id}/receipt/m.read/{hey}"))[0] == 200
    status, body = await get(client, alice, "/notifications", only="highlight")
    assert [n["read"] for n in body["notifications"]] == [False, True]


async def test_batches_stored_while_an_evaluation_waits_are_evaluated_together(client, hs, alice, bob,
                                                                                 monkeypatch):
    """A busy room: the events stored while its evaluation task waits for the one before
    join it (one evaluation for all of them), and every one is counted."""
    import asyncio

    room_id = await create(client, alice, preset="public_chat")
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    await hs.push.flush()
    start = (await hs.events.get_room(room_id)).head_stream_ordering
    evaluate = hs.push.evaluate_events
    calls: list[list[int]] = []
    first_started, release = asyncio.Event(), asyncio.Event()

    async def gated(room, positions):
        calls.append(sorted(positions))
        first_started.set()
        await release.wait()
        await evaluate(room, positions)

    monkeypatch.setattr(hs.push, "evaluate_events", gated)
    try:
        await say(client, bob, room_id, "1", "one")
        await first_started.wait()  # the first evaluation runs (and waits)
        for i in range(2, 5):  # these wait for it: one task takes them all
            await say(client, bob, room_id, str(i), f"message {i}")
    finally:
        release.set()
    await hs.push.flush(room_id)
    heads = [p for batch in calls for p in batch]
    assert len(calls) == 2 and len(calls[0]) == 1 and len(calls[1]) == 3, calls
    assert heads == sorted(heads) and heads[0] > start
    assert await hs.push.get_unread_counts("@alice:hs.test", room_id, start) == (4, 0)


async def test_rule_changes_reach_incremental_sync(client, alice):
    status, first = await get(client, alice, "/sync")
    assert status == 200
    initial = [e for e in first["account_data"]["events"] if e["type"] == "m.push_rules"]
    assert len(initial) == 1 and initial[0]["content"]["global"]["override"][0]["rule_id"] == ".m.rule.master"
    assert (await put(client, alice, "/pushrules/global/content/tea", {"pattern": "tea", "actions": ["notify"]}))[0] \
        == 200
    status, later = await get(client, alice, "/sync", since=first["next_batch"], timeout="0")
    (rules,) = [e for e in later["account_data"]["events"] if e["type"] == "m.push_rules"]
    assert rules["content"]["global"]["content"][0]["rule_id"] == "tea"
    status, again = await get(client, alice, "/sync")  # a new initial sync: still one ruleset
    assert len([e for e in again["account_data"]["events"] if e["type"] == "m.push_rules"]) == 1


async def test_invites_notify_the_invitee(client, hs, alice, bob):
    room_id = await create(client, alice)
    start = (await hs.events.get_room(room_id)).head_stream_ordering
    assert (await post(client, alice, f"/rooms/{room_id}/invite", {"user_id": "@bob:hs.test"}))[0] == 200
    assert await hs.push.get_unread_counts("@bob:hs.test", room_id, start) == (1, 0)


async def test_pushers(client, alice, bob):
    pusher = {"kind": "http", "app_id": "org.example.app", "pushkey": "key1", "app_display_name": "App",
              "device_display_name": "Phone", "lang": "en", "data": {"url": "https://push.example/_matrix/push/v1/notify"}}
    assert await post(client, alice, "/pushers/set", pusher) == (200, {})
    status, body = await get(client, alice, "/pushers")
    assert status == 200 and body == {"pushers": [{k: v for k, v in pusher.items()}]}
    # Same app_id and pushkey for bob: alice's goes unless append.
    assert await post(client, bob, "/pushers/set", {**pusher, "append": True}) == (200, {})
    assert len((await get(client, alice, "/pushers"))[1]["pushers"]) == 1
    assert await post(client, bob, "/pushers/set", pusher) == (200, {})
    assert (await get(client, alice, "/pushers"))[1] == {"pushers": []}
    # Update, then delete with kind null.
    assert await post(client, bob, "/pushers/set", {**pusher, "lang": "fr"}) == (200, {})
    assert [p["lang"] for p in (await get(client, bob, "/pushers"))[1]["pushers"]] == ["fr"]
    assert await post(client, bob, "/pushers/set", {"kind": None, "app_id": "org.example.app",
                                                    "pushkey": "key1"}) == (200, {})
    assert (await get(client, bob, "/pushers"))[1] == {"pushers": []}
    for bad, code in [
        ({**pusher, "kind": "carrier-pigeon"}, "M_INVALID_PARAM"),
        ({**pusher, "data": {"url": "https://push.example/other"}}, "M_INVALID_PARAM"),
        ({**pusher, "data": {}}, "M_INVALID_PARAM"),
        ({**pusher, "app_id": "x" * 65}, "M_INVALID_PARAM"),
        ({k: v for k, v in pusher.items() if k != "pushkey"}, "M_MISSING_PARAM"),
        ({k: v for k, v in pusher.items() if k != "lang"}, "M_MISSING_PARAM"),
        ({k: v for k, v in pusher.items() if k != "kind"}, "M_MISSING_PARAM"),
    ]:
        status, err = await post(client, alice, "/pushers/set", bad)
        assert status == 400 and err["errcode"] == code, (bad, err)
    # An email pusher's address must be on the account (tests/gateway/services/test_email_notifs.py).
    email = {**pusher, "kind": "email", "pushkey": "alice@example.org", "app_id": "m.email", "data": {}}
    status, err = await post(client, alice, "/pushers/set", email)
    assert status == 400 and err["errcode"] == "M_THREEPID_NOT_FOUND"


class FakePushGateway:
    """A push gateway on loopback that records what it is sent."""

    def __init__(self, reject=()):
        self.received: list[dict] = []
        self.reject = set(reject)
        self.failures = 0  # answer this many requests with a 503 first

    async def handler(self, request):
        from aiohttp import web

        body = await request.json()
        if self.failures:
            self.failures -= 1
            return web.json_response({"errcode": "M_UNKNOWN"}, status=503)
        self.received.append(body)
        keys = [d["pushkey"] for d in body["notification"]["devices"] if d["pushkey"] in self.reject]
        return web.json_response({"rejected": keys})


@pytest.fixture
async def gateway():
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    fake = FakePushGateway(reject={"gone"})
    app = web.Application()
    app.router.add_post("/_matrix/push/v1/notify", fake.handler)
    async with TestServer(app, host="127.0.0.1") as server:
        fake.url = str(server.make_url("/_matrix/push/v1/notify"))
        yield fake


def http_pusher(url, pushkey="key1", **data):
    return {"kind": "http", "app_id": "org.example.app", "pushkey": pushkey, "app_display_name": "App",
            "device_display_name": "Phone", "lang": "en", "data": {"url": url, **data}}


@pytest.mark.parametrize("config_overrides", [{"ip_range_whitelist": ["127.0.0.1/32"]}])
async def test_notifications_reach_push_gateways(client, hs, alice, bob, gateway):
    room_id = await create(client, alice, preset="public_chat", name="Tea room")
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    assert await post(client, alice, "/pushers/set", http_pusher(gateway.url)) == (200, {})
    assert await post(client, alice, "/pushers/set", http_pusher(gateway.url, "short", format="event_id_only",
                                                                  extra="x")) == (200, {})
    assert await post(client, alice, "/pushers/set", http_pusher(gateway.url, "gone")) == (200, {})
    event_id = await say(client, bob, room_id, "1", "hello alice", **{"m.mentions": {"user_ids": ["@alice:hs.test"]}})
    await hs.push.flush(room_id)
    await hs.push.flush_pushes()
    by_key = {r["notification"]["devices"][0]["pushkey"]: r["notification"] for r in gateway.received}
    assert set(by_key) == {"key1", "short", "gone"}
    full = by_key["key1"]
    assert full["event_id"] == event_id and full["room_id"] == room_id and full["type"] == "m.room.message"
    assert full["sender"] == "@bob:hs.test" and full["sender_display_name"] == "bob"
    assert full["room_name"] == "Tea room" and full["content"]["body"] == "hello alice"
    assert full["prio"] == "high" and full["user_is_target"] is False
    assert full["devices"][0]["tweaks"] == {"sound": "default", "highlight": True}
    assert full["devices"][0]["data"] == {}
    assert full["counts"] == {"unread": 1}  # rooms with unread notifications
    assert full["id"] == event_id and "membership" not in full and "room_alias" not in full
    short = by_key["short"]
    assert set(short) == {"event_id", "room_id", "prio", "devices", "counts"}
    assert short["devices"][0]["data"] == {"format": "event_id_only", "extra": "x"}
    # The rejected push key's pusher is gone; alice's own messages push nothing to her.
    assert sorted(p["pushkey"] for p in (await get(client, alice, "/pushers"))[1]["pushers"]) == ["key1", "short"]
    gateway.received.clear()
    await say(client, alice, room_id, "2", "talking to myself")
    await hs.push.flush(room_id)
    await hs.push.flush_pushes()
    assert gateway.received == []


@pytest.mark.parametrize("config_overrides", [{"ip_range_whitelist": ["127.0.0.1/32"]}])
async def test_a_gateway_that_fails_gets_the_notifications_later_in_order(client, hs, alice, bob, gateway,
                                                                          monkeypatch):
    """A 5xx answer: the pusher keeps its position and tries again after a wait, the
    notifications stored meanwhile following in order, each once."""
    import gateway.services.push as push_module

    monkeypatch.setattr(push_module, "RETRY_DELAYS_S", (0.05, 0.05))
    room_id = await create(client, alice, preset="public_chat")
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    assert await post(client, alice, "/pushers/set", http_pusher(gateway.url)) == (200, {})
    gateway.failures = 2
    first = await say(client, bob, room_id, "1", "one")
    second = await say(client, bob, room_id, "2", "two")
    await hs.push.flush(room_id)
    while len(gateway.received) < 2:
        await asyncio.sleep(0.02)
    await hs.push.flush_pushes()
    assert [r["notification"]["event_id"] for r in gateway.received] == [first, second]
    (pusher,) = await hs.push.pushers.get_pushers("@alice:hs.test")
    assert pusher.last_stream_ordering == (await hs.events.store.get_event(second)).stream_ordering
    # Past the last wait, a notification the gateway never takes is skipped.
    gateway.failures = 3
    third = await say(client, bob, room_id, "3", "three")
    fourth = await say(client, bob, room_id, "4", "four")
    await hs.push.flush(room_id)
    while len(gateway.received) < 3:
        await asyncio.sleep(0.02)
    await hs.push.flush_pushes()
    assert [r["notification"]["event_id"] for r in gateway.received][2:] == [fourth]
    assert third not in [r["notification"]["event_id"] for r in gateway.received]


@pytest.mark.parametrize("config_overrides", [{"ip_range_whitelist": ["127.0.0.1/32"]}])
async def test_read_receipts_send_the_new_badge(client, hs, alice, bob, gateway):
    """Reading the room sends the pushers a badge-only notification (no event) with the
    new count of rooms with unread notifications; a receipt that leaves it unchanged
    sends nothing."""
    room_id = await create(client, alice, preset="public_chat")
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    assert await post(client, alice, "/pushers/set", http_pusher(gateway.url)) == (200, {})
    event_id = await say(client, bob, room_id, "1", "hello alice")
    await hs.push.flush(room_id)
    await hs.push.flush_pushes()
    assert [r["notification"]["counts"] for r in gateway.received] == [{"unread": 1}]
    gateway.received.clear()
    assert (await post(client, alice, f"/rooms/{room_id}/receipt/m.read/{event_id}", {}))[0] == 200
    await hs.push.flush_pushes()
    (badge,) = [r["notification"] for r in gateway.received]
    assert badge["counts"] == {"unread": 0} and "type" not in badge and "event_id" not in badge
    assert [d["pushkey"] for d in badge["devices"]] == ["key1"] and "tweaks" not in badge["devices"][0]
    gateway.received.clear()
    assert (await post(client, alice, f"/rooms/{room_id}/receipt/m.read/{event_id}", {}))[0] == 200
    await hs.push.flush_pushes()
    assert gateway.received == []


@pytest.mark.parametrize("config_overrides", [{"ip_range_whitelist": ["127.0.0.1/32"]}])
async def test_invites_and_aliased_rooms_in_pushes(client, hs, alice, bob, gateway):
    """An invite's push says the membership and that the user is its target; a room
    without a name is named by its canonical alias; a format the spec does not name gets
    the full notification."""
    assert await post(client, alice, "/pushers/set", http_pusher(gateway.url, format="id_event_only")) == (200, {})
    assert (await get(client, alice, "/pushers"))[1]["pushers"][0]["data"]["format"] == "id_event_only"
    room_id = await create(client, bob, room_alias_name="tea")
    assert (await post(client, bob, f"/rooms/{room_id}/invite", {"user_id": "@alice:hs.test"}))[0] == 200
    await hs.push.flush(room_id)
    await hs.push.flush_pushes()
    (invite,) = [r["notification"] for r in gateway.received]
    assert invite["type"] == "m.room.member" and invite["membership"] == "invite"
    assert invite["user_is_target"] is True and invite["sender"] == "@bob:hs.test"
    assert invite["room_name"] == invite["room_alias"] == "#tea:hs.test"


async def test_push_gateways_on_blocked_addresses_are_not_contacted(client, hs, alice, bob, gateway):
    room_id = await create(client, alice, preset="public_chat")
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    assert await post(client, alice, "/pushers/set", http_pusher(gateway.url)) == (200, {})
    await say(client, bob, room_id, "1", "hello")
    await hs.push.flush(room_id)
    await hs.push.flush_pushes()
    assert gateway.received == []  # 127.0.0.1 is in the default ip_range_blacklist
    assert await hs.push.get_unread_counts("@alice:hs.test", room_id, 0) == (1, 0)


async def test_push_actions_older_than_the_retention_go(client, hs, alice, bob):
    t0 = 1_700_000_000_000
    clock = [t0]
    hs.clock_ms = lambda: clock[0]
    hour, day = 3_600_000, 86_400_000

    async def at(ts, txn, body):
        await hs.push.flush()  # evaluations read the clock when they run
        clock[0] = ts
        await say(client, bob, room_id, txn, body)

    room_id = await create(client, alice, preset="public_chat")  # first checkpoint, at t0
    assert (await post(client, bob, f"/rooms/{room_id}/join"))[0] == 200
    await at(t0, "1", "old one")
    await at(t0 + 2 * hour, "2", "two hours later")  # checkpoint: up to here at t0+2h
    await at(t0 + 3 * hour, "3", "three hours later")  # checkpoint at t0+3h
    assert await hs.push.get_unread_counts("@alice:hs.test", room_id, 0) == (3, 0)
    await at(t0 + 2 * hour + 30 * day + hour // 2, "4", "a month later")
    # Everything up to the last checkpoint older than 30 days (t0+2h) is gone.
    assert await hs.push.get_unread_counts("@alice:hs.test", room_id, 0) == (2, 0)
    status, body = await get(client, alice, "/notifications")
    assert [n["event"]["content"]["body"] for n in body["notifications"]] == ["a month later", "three hours later"]


async def test_logging_out_removes_the_devices_pushers(client, alice):
    phone = await client.post(f"{C}/login", json={"type": "m.login.password", "identifier": {
        "type": "m.id.user", "user": "alice"}, "password": "pw-" + "x" * 8})
    phone_token = (await phone.json())["access_token"]
    base = {"kind": "http", "app_id": "org.example.app", "app_display_name": "App", "device_display_name": "D",
            "lang": "en", "data": {"url": "https://push.example/_matrix/push/v1/notify"}}
    assert await post(client, alice, "/pushers/set", {**base, "pushkey": "laptop"}) == (200, {})
    assert await post(client, phone_token, "/pushers/set", {**base, "pushkey": "phone"}) == (200, {})
    assert await post(client, phone_token, "/logout") == (200, {})
    assert [p["pushkey"] for p in (await get(client, alice, "/pushers"))[1]["pushers"]] == ["laptop"]

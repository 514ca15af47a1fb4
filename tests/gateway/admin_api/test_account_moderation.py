"""Synapse's admin API for moderating accounts: shadow-bans (the user's events get made-up
IDs and nobody sees them), suspension (``/v1/suspend``), locking (``locked`` of the user
API) and logging in as a user (a device-less session owned by the admin). Both engines."""

from __future__ import annotations

import random

import pytest

from gateway.services.account_moderation import ShadowBanDelay
from tests.gateway.client_api.conftest import auth_header, register
from tests.gateway.client_api.test_sync import User, alice  # noqa: F401  (fixtures)

A = "/_synapse/admin"
C = "/_matrix/client/v3"


@pytest.fixture
async def mallory(client):
    return User(client, await register(client, "mallory"))


async def _admin(client, admin, method, path, body=None):
    resp = await client.request(method, A + path, headers=admin, json=body if body is not None else {})
    return resp.status, await resp.json()


async def test_non_admins_are_refused(client, alice):
    h = auth_header(alice.token)
    for method, path in (("POST", "/v1/users/@alice:hs.test/shadow_ban"), ("DELETE", "/v1/users/@alice:hs.test/shadow_ban"),
                         ("PUT", "/v1/suspend/@alice:hs.test"), ("POST", "/v1/users/@root:hs.test/login")):
        resp = await client.request(method, A + path, headers=h, json={"suspend": True})
        assert (resp.status, (await resp.json())["errcode"]) == (403, "M_FORBIDDEN"), path


async def test_shadow_banned_users_events_go_nowhere(client, hs, admin, alice, mallory):
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    hs.shadow_ban_delay = ShadowBanDelay(rng=random.Random(7), sleep=sleep)
    room = await alice.create_room(preset="public_chat")
    await mallory.call("POST", f"/join/{room}", {})
    real = await mallory.send(room, "before the ban", txn="t0")
    await mallory.call("PUT", f"/profile/{mallory.user_id}/displayname", {"displayname": "Mallory"})
    await hs.profiles.idle()
    assert await _admin(client, admin, "POST", "/v1/users/@mallory:hs.test/shadow_ban") == (200, {})
    assert (await _admin(client, admin, "GET", "/v2/users/@mallory:hs.test"))[1]["shadow_banned"] is True
    since = (await alice.sync())["next_batch"]
    head = (await hs.events.get_room(room)).head_stream_ordering

    # Every kind of event answers an event ID of the room's format, as if it was sent.
    fake = await mallory.send(room, "spam spam spam", txn="t1")
    assert fake.startswith("$") and fake != real and len(fake) == 44
    assert await mallory.send(room, "spam spam spam", txn="t1") == fake  # a retry: the same answer
    state = await mallory.state(room, "m.room.topic", {"topic": "defaced"})
    redaction = (await mallory.call("PUT", f"/rooms/{room}/redact/{real}/r1", {}))["event_id"]
    assert await mallory.call("POST", f"/rooms/{room}/invite", {"user_id": "@carol:hs.test"}) == {}
    assert await mallory.call("PUT", f"/rooms/{room}/typing/{mallory.user_id}", {"typing": True, "timeout": 9000}) == {}
    for event_id in (fake, state, redaction):
        assert await hs.events.store.get_event(event_id) is None
    # A new name: in the profile, not in the rooms.
    await mallory.call("PUT", f"/profile/{mallory.user_id}/displayname", {"displayname": "M4llory"})
    await hs.profiles.idle()
    assert (await alice.call("GET", f"/profile/{mallory.user_id}/displayname"))["displayname"] == "M4llory"
    member = await alice.call("GET", f"/rooms/{room}/state/m.room.member/{mallory.user_id}")
    assert member["displayname"] == "Mallory"
    assert (await hs.events.get_room(room)).head_stream_ordering == head  # nothing was stored
    # Each dropped action was answered after a random 1-10 s (Synapse's range): the two
    # sends (a retry too), state, redaction, invite, typing and the profile change.
    assert len(waits) == 7 and all(1 <= w <= 10 for w in waits) and len(set(waits)) > 1, waits

    # Nobody sees any of it, and the real message stays unredacted.
    body = await alice.sync(since, timeout="0")
    assert room not in body["rooms"]["join"] or not body["rooms"]["join"][room]["timeline"]["events"]
    msgs = await alice.call("GET", f"/rooms/{room}/messages", dir="b", limit="20")
    assert [e["content"].get("body") for e in msgs["chunk"] if e["type"] == "m.room.message"] == ["before the ban"]
    assert (await alice.call("GET", f"/rooms/{room}/state/m.room.topic", expect=404))["errcode"] == "M_NOT_FOUND"
    # Rooms are made, without their invites; upgrades answer a room nobody has.
    made = await mallory.create_room(invite=["@alice:hs.test"])
    assert await hs.events.state.get_membership(made, "@alice:hs.test") is None
    assert len(waits) == 8
    await mallory.create_room()  # nothing dropped, no delay
    assert len(waits) == 8
    upgraded = await mallory.call("POST", f"/rooms/{made}/upgrade", {"new_version": "11"})
    assert await hs.events.store.get_room(upgraded["replacement_room"]) is None
    assert len(waits) == 9

    # Lifted: what the user sends arrives again.
    assert await _admin(client, admin, "DELETE", "/v1/users/@mallory:hs.test/shadow_ban") == (200, {})
    seen = await mallory.send(room, "after the ban", txn="t2")
    assert (await hs.events.store.get_event(seen)) is not None
    assert len(waits) == 9
    assert (await _admin(client, admin, "POST", "/v1/users/@nobody:hs.test/shadow_ban"))[0] == 404
    assert (await _admin(client, admin, "POST", "/v1/users/@mallory:other.test/shadow_ban"))[0] == 400


async def test_suspend_with_synapse_path(client, admin, alice, mallory):
    room = await alice.create_room(preset="public_chat")
    status, body = await _admin(client, admin, "PUT", "/v1/suspend/@mallory:hs.test", {"suspend": True})
    assert (status, body) == (200, {"user_@mallory:hs.test_suspended": True})
    assert (await _admin(client, admin, "GET", "/v2/users/@mallory:hs.test"))[1]["suspended"] is True
    assert (await mallory.call("POST", f"/join/{room}", {}, expect=403))["errcode"] == "M_USER_SUSPENDED"
    assert (await _admin(client, admin, "PUT", "/v1/suspend/@mallory:hs.test", {"suspend": False}))[1] \
        == {"user_@mallory:hs.test_suspended": False}
    await mallory.call("POST", f"/join/{room}", {})
    for body in ({}, {"suspend": "yes"}):
        status, answer = await _admin(client, admin, "PUT", "/v1/suspend/@mallory:hs.test", body)
        assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")
    assert (await _admin(client, admin, "PUT", "/v1/suspend/@ghost:hs.test", {"suspend": True}))[0] == 404


async def test_locked_through_the_user_api(client, admin, alice):
    status, body = await _admin(client, admin, "PUT", "/v2/users/@alice:hs.test", {"locked": True})
    assert status == 200 and body["locked"] is True
    resp = await client.get(f"{C}/account/whoami", headers=auth_header(alice.token))
    assert (resp.status, await resp.json()) == (401, {"errcode": "M_USER_LOCKED", "error": "This account has been locked",
                                                      "soft_logout": True})
    listed = (await _admin(client, admin, "GET", "/v2/users"))[1]["users"]
    assert {u["name"]: u["locked"] for u in listed}["@alice:hs.test"] is True
    assert (await _admin(client, admin, "PUT", "/v2/users/@alice:hs.test", {"locked": False}))[1]["locked"] is False
    assert (await client.get(f"{C}/account/whoami", headers=auth_header(alice.token))).status == 200  # same session
    assert (await _admin(client, admin, "PUT", "/v2/users/@alice:hs.test", {"locked": "yes"}))[0] == 400


async def test_login_as_a_user(client, hs, admin, alice):
    room = await alice.create_room(name="Alice's room")
    devices_before = (await alice.call("GET", "/devices"))["devices"]
    status, body = await _admin(client, admin, "POST", "/v1/users/@alice:hs.test/login")
    assert status == 200 and set(body) == {"access_token"}
    puppet = User(client, {"user_id": "@alice:hs.test", "access_token": body["access_token"], "device_id": None})
    # It acts as alice: her rooms, her identity, no device of its own.
    assert await puppet.call("GET", "/account/whoami") == {"user_id": "@alice:hs.test", "is_guest": False}
    assert room in (await puppet.call("GET", "/joined_rooms"))["joined_rooms"]
    sent = await puppet.send(room, "sent by the admin as alice")
    assert (await hs.events.store.get_event(sent)).pdu.sender == "@alice:hs.test"
    assert (await alice.call("GET", "/devices"))["devices"] == devices_before  # alice cannot tell
    assert (await client.get(f"{A}/v1/whois/@alice:hs.test", headers=admin)).status == 200

    # alice logging out everywhere does not end it; the admin doing so does.
    other = await client.post(f"{C}/login", json={"type": "m.login.password", "user": "alice",
                                                  "password": "pw-" + "x" * 8})
    other_token = (await other.json())["access_token"]
    assert (await client.post(f"{C}/logout/all", headers=auth_header(other_token), json={})).status == 200
    await puppet.call("GET", "/account/whoami")
    assert (await client.post(f"{C}/logout/all", headers=admin, json={})).status == 200
    assert (await puppet.call("GET", "/account/whoami", expect=401))["errcode"] == "M_UNKNOWN_TOKEN"


async def test_login_as_a_user_until_and_errors(client, hs, admin, alice):
    future = hs.clock_ms() + 3_600_000
    status, body = await _admin(client, admin, "POST", "/v1/users/@alice:hs.test/login", {"valid_until_ms": future})
    assert status == 200
    assert (await client.get(f"{C}/account/whoami", headers=auth_header(body["access_token"]))).status == 200
    status, body = await _admin(client, admin, "POST", "/v1/users/@alice:hs.test/login", {"valid_until_ms": 1})
    resp = await client.get(f"{C}/account/whoami", headers=auth_header(body["access_token"]))
    assert (resp.status, (await resp.json())["errcode"]) == (401, "M_UNKNOWN_TOKEN")  # already expired
    # Logging out with it ends only it.
    status, body = await _admin(client, admin, "POST", "/v1/users/@alice:hs.test/login")
    assert (await client.post(f"{C}/logout", headers=auth_header(body["access_token"]), json={})).status == 200
    assert (await client.get(f"{C}/account/whoami", headers=auth_header(body["access_token"]))).status == 401
    await alice.call("GET", "/account/whoami")

    cases = [("/v1/users/@root:hs.test/login", {}, 400, "M_INVALID_PARAM"),
             ("/v1/users/@alice:hs.test/login", {"valid_until_ms": "soon"}, 400, "M_INVALID_PARAM"),
             ("/v1/users/@alice:hs.test/login", {"valid_until_ms": -5}, 400, "M_INVALID_PARAM"),
             ("/v1/users/@ghost:hs.test/login", {}, 404, "M_NOT_FOUND"),
             ("/v1/users/@alice:other.test/login", {}, 400, "M_INVALID_PARAM")]
    for path, body, want_status, errcode in cases:
        status, answer = await _admin(client, admin, "POST", path, body)
        assert (status, answer["errcode"]) == (want_status, errcode), (path, body)
    assert (await _admin(client, admin, "POST", "/v1/deactivate/@alice:hs.test"))[0] == 200
    status, answer = await _admin(client, admin, "POST", "/v1/users/@alice:hs.test/login")
    assert (status, answer["errcode"]) == (403, "M_USER_DEACTIVATED")

"""The spec's account moderation (v1.18): ``/_matrix/client/v1/admin/lock|suspend/{userId}``,
the ``m.account_moderation`` capability, a locked account (401 ``M_USER_LOCKED`` with
``soft_logout`` everywhere but logout, no new logins) and a suspended one (the listed
actions 403 ``M_USER_SUSPENDED``, reading and leaving still allowed). Both engines.

https://spec.matrix.org/latest/client-server-api/#account-moderation
"""

from __future__ import annotations

import pytest

from .conftest import auth_header, register
from .test_sync import User, alice, bob  # noqa: F401  (fixtures)

V1 = "/_matrix/client/v1"
C = "/_matrix/client/v3"
PASSWORD = "pw-" + "x" * 8


@pytest.fixture
async def root(client, hs):
    await hs.auth.users.create_user("@root:hs.test", password_hash=None, created_ts=1, admin=True)
    return User(client, await hs.auth.login_session("@root:hs.test"))


async def _moderate(client, who, action, user_id, body=None):
    method = "GET" if body is None else "PUT"
    resp = await client.request(method, f"{V1}/admin/{action}/{user_id}", json=body,
                                headers=auth_header(who.token))
    return resp.status, await resp.json()


async def test_capability_is_for_admins(root, alice):
    caps = (await root.call("GET", "/capabilities"))["capabilities"]
    assert caps["m.account_moderation"] == {"lock": True, "suspend": True}
    assert "m.account_moderation" not in (await alice.call("GET", "/capabilities"))["capabilities"]


@pytest.mark.parametrize("action,flag", [("lock", "locked"), ("suspend", "suspended")])
async def test_admin_endpoints_and_their_errors(client, hs, root, alice, bob, action, flag):
    assert await _moderate(client, root, action, "@alice:hs.test") == (200, {flag: False})
    assert await _moderate(client, root, action, "@alice:hs.test", {flag: True}) == (200, {flag: True})
    assert await _moderate(client, root, action, "@alice:hs.test") == (200, {flag: True})
    assert getattr(await hs.auth.users.get_user("@alice:hs.test"), flag) is True
    # Not an admin: 403 before any lookup (an unknown user answers the same).
    for target in ("@alice:hs.test", "@nobody:hs.test"):
        status, body = await _moderate(client, bob, action, target)
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
        status, body = await _moderate(client, bob, action, target, {flag: True})
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    await hs.auth.users.create_user("@other_admin:hs.test", password_hash=None, created_ts=1, admin=True)
    await register(client, "gone")
    await hs.auth.users.set_deactivated("@gone:hs.test", True)
    cases = [("@alice:elsewhere.test", None, 400, "M_INVALID_PARAM"),
             ("not-a-user-id", None, 400, "M_INVALID_PARAM"),
             ("@nobody:hs.test", None, 404, "M_NOT_FOUND"),
             ("@gone:hs.test", {flag: True}, 404, "M_NOT_FOUND"),
             ("@other_admin:hs.test", {flag: True}, 403, "M_FORBIDDEN"),
             ("@other_admin:hs.test", None, 403, "M_FORBIDDEN"),
             ("@root:hs.test", {flag: True}, 403, "M_FORBIDDEN"),
             ("@bob:hs.test", {flag: "yes"}, 400, "M_BAD_JSON"),
             ("@bob:hs.test", {}, 400, "M_BAD_JSON")]
    for target, body, status, errcode in cases:
        got_status, got = await _moderate(client, root, action, target, body)
        assert (got_status, got["errcode"]) == (status, errcode), (target, body)
    assert getattr(await hs.auth.users.get_user("@bob:hs.test"), flag) is False


async def test_a_locked_account(client, root, alice, bob):
    room = await bob.create_room(preset="public_chat")
    await alice.call("POST", f"/join/{room}", {})
    logged_in = await (await client.post(f"{C}/login", json={
        "type": "m.login.password", "user": "alice", "password": PASSWORD, "refresh_token": True})).json()
    second = User(client, logged_in)
    await _moderate(client, root, "lock", "@alice:hs.test", {"locked": True})
    locked = {"errcode": "M_USER_LOCKED", "error": "This account has been locked", "soft_logout": True}
    for method, path, body in (("GET", "/sync", None), ("GET", "/account/whoami", None),
                               ("PUT", f"/rooms/{room}/send/m.room.message/t1", {"msgtype": "m.text", "body": "x"}),
                               ("GET", "/capabilities", None), ("GET", f"/rooms/{room}/messages", None)):
        resp = await client.request(method, C + path, json=body, headers=auth_header(alice.token))
        assert (resp.status, await resp.json()) == (401, locked), path
    resp = await client.get(f"{V1}/media/config", headers=auth_header(alice.token))
    assert resp.status == 401 and (await resp.json())["errcode"] == "M_USER_LOCKED"
    # No new session while locked.
    resp = await client.post(f"{C}/login", json={"type": "m.login.password", "user": "alice", "password": PASSWORD})
    assert (resp.status, await resp.json()) == (401, locked)
    resp = await client.post(f"{C}/refresh", json={"refresh_token": logged_in["refresh_token"]})
    assert (resp.status, await resp.json()) == (401, locked)  # nor a refreshed one
    # Logging out still works (and ends that session only).
    assert (await client.post(f"{C}/logout", headers=auth_header(second.token), json={})).status == 200
    # Unlocked: the first session carries on, untouched.
    await _moderate(client, root, "lock", "@alice:hs.test", {"locked": False})
    assert (await alice.call("GET", "/account/whoami"))["user_id"] == "@alice:hs.test"
    assert (await second.call("GET", "/account/whoami", expect=401))["errcode"] == "M_UNKNOWN_TOKEN"
    await _moderate(client, root, "lock", "@alice:hs.test", {"locked": True})
    assert (await client.post(f"{C}/logout/all", headers=auth_header(alice.token), json={})).status == 200
    await _moderate(client, root, "lock", "@alice:hs.test", {"locked": False})
    assert (await alice.call("GET", "/account/whoami", expect=401))["errcode"] == "M_UNKNOWN_TOKEN"


async def test_a_suspended_account(client, root, alice, bob):
    room = await bob.create_room(preset="public_chat")
    await alice.call("POST", f"/join/{room}", {})
    own = await alice.send(room, "mine")
    bobs = await bob.send(room, "bob's")
    invited_to = await bob.create_room(invite=["@alice:hs.test"])
    other = await bob.create_room(preset="public_chat")
    await _moderate(client, root, "suspend", "@alice:hs.test", {"suspended": True})

    forbidden = [("POST", f"/join/{other}", {}), ("POST", f"/rooms/{invited_to}/join", {}),
                 ("POST", f"/knock/{other}", {}),
                 ("POST", f"/rooms/{room}/invite", {"user_id": "@carol:hs.test"}),
                 ("POST", f"/rooms/{room}/kick", {"user_id": "@bob:hs.test"}),
                 ("PUT", f"/rooms/{room}/send/m.room.message/s1", {"msgtype": "m.text", "body": "no"}),
                 ("POST", f"/rooms/{room}/send/m.room.message", {"msgtype": "m.text", "body": "no"}),
                 ("PUT", f"/rooms/{room}/state/m.room.topic", {"topic": "no"}),
                 ("PUT", f"/rooms/{room}/redact/{bobs}/r1", {}),
                 ("PUT", f"/rooms/{room}/send/m.room.redaction/r2", {"redacts": bobs}),
                 ("PUT", "/profile/@alice:hs.test/displayname", {"displayname": "No"}),
                 ("DELETE", "/profile/@alice:hs.test/avatar_url", None),
                 ("POST", "/createRoom", {}),
                 ("POST", f"/rooms/{room}/upgrade", {"new_version": "11"})]
    for method, path, body in forbidden:
        resp = await client.request(method, C + path, json=body, headers=auth_header(alice.token))
        assert (resp.status, await resp.json()) == (403, {"errcode": "M_USER_SUSPENDED", "error":
                                                          "You cannot perform this action while suspended."}), path

    # Reading, redacting their own events, leaving, rejecting invites and logging out still work.
    msgs = await alice.call("GET", f"/rooms/{room}/messages", dir="b")
    assert {"mine", "bob's"} <= {e["content"].get("body") for e in msgs["chunk"]}
    await alice.sync()
    await alice.call("PUT", f"/rooms/{room}/redact/{own}/r3", {})
    await alice.call("POST", f"/rooms/{invited_to}/leave", {})
    await alice.call("POST", f"/rooms/{room}/leave", {})
    await alice.call("GET", "/profile/@alice:hs.test")

    await _moderate(client, root, "suspend", "@alice:hs.test", {"suspended": False})
    await alice.call("POST", f"/join/{other}", {})
    await alice.send(other, "back")

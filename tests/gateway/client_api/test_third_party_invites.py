"""Inviting by e-mail address through a small identity server of our own on loopback
(tests/support/identity_server.py): a bound address is invited as its user; an unbound one
is stored at the identity server and announced with ``m.room.third_party_invite``; when it
gets bound, the identity server's ``/3pid/onbind`` turns it into an invite the invitee can
accept. Both engines. Between two servers: tests/interop/test_third_party_invites_gateways.py."""

from __future__ import annotations

import urllib.parse

import pytest

from federation.signing import generate_signing_key, sign_json
from tests.support.identity_server import ACCESS_TOKEN

from .conftest import auth_header, register
from .test_threepid_binding import ca, config_overrides, identity  # noqa: F401 (fixtures)

PASSWORD = "pw-" + "x" * 8


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


async def call(client, method: str, path: str, token: str, body: dict | None = None):
    resp = await client.request(method, f"/_matrix/client/v3{path}", headers=auth_header(token), json=body)
    return resp.status, await resp.json()


async def invite_by_address(client, token: str, room: str, identity, address: str, **extra):
    return await call(client, "POST", f"/rooms/{q(room)}/invite", token, {
        "id_server": identity.name, "id_access_token": ACCESS_TOKEN, "medium": "email", "address": address, **extra})


async def membership(client, token: str, room: str, user_id: str) -> dict | None:
    status, body = await call(client, "GET", f"/rooms/{q(room)}/state/m.room.member/{q(user_id)}", token)
    return body if status == 200 else None


@pytest.fixture
async def room(hs, client, identity):
    alice = await register(client, "alice", PASSWORD)
    await call(client, "PUT", "/profile/@alice:hs.test/displayname", alice["access_token"], {"displayname": "Alice"})
    status, body = await call(client, "POST", "/createRoom", alice["access_token"],
                              {"preset": "private_chat", "name": "Garden"})
    assert status == 200
    identity.onbind_urls["hs.test"] = str(client.make_url("")).rstrip("/")
    return alice, body["room_id"]


async def test_a_bound_address_is_invited_as_its_user(hs, client, identity, room):
    alice, room_id = room
    bob = await register(client, "bob", PASSWORD)
    identity.bindings[("email", "bob@example.org")] = bob["user_id"]
    assert await invite_by_address(client, alice["access_token"], room_id, identity, " Bob@Example.org") == (200, {})
    assert (await membership(client, alice["access_token"], room_id, bob["user_id"]))["membership"] == "invite"
    assert [p for _, p, _ in identity.requests][-2:] == ["/_matrix/identity/v2/hash_details",
                                                        "/_matrix/identity/v2/lookup"]
    assert not identity.invites


@pytest.mark.parametrize("method", ["PUT", "POST"])
async def test_an_unbound_address_gets_a_stored_invite_then_a_membership_once_bound(hs, client, identity, room,
                                                                                    method):
    alice, room_id = room
    identity.onbind_method = method
    assert await invite_by_address(client, alice["access_token"], room_id, identity, "carol@example.org") == (200, {})
    (stored,) = identity.invites
    assert stored["room_id"] == room_id and stored["sender"] == alice["user_id"]
    assert stored["room_name"] == "Garden" and stored["sender_display_name"] == "Alice"
    assert stored["room_join_rules"] == "invite"
    status, tpi = await call(client, "GET", f"/rooms/{q(room_id)}/state/m.room.third_party_invite/{q(stored['token'])}",
                             alice["access_token"])
    assert status == 200 and tpi["public_key"] == identity.public_key
    assert tpi["public_keys"][0]["key_validity_url"].startswith(f"https://{identity.name}/")
    assert tpi["display_name"] == "c...@e..."

    # Carol signs up and binds the address: the identity server tells us, the invite follows.
    carol = await register(client, "carol", PASSWORD)
    await identity.bind("email", "carol@example.org", carol["user_id"])
    assert identity.onbind_answers == [200]
    member = await membership(client, alice["access_token"], room_id, carol["user_id"])
    assert member["membership"] == "invite"
    assert member["third_party_invite"]["display_name"] == "c...@e..."
    assert member["third_party_invite"]["signed"]["token"] == stored["token"]
    status, _ = await call(client, "POST", f"/rooms/{q(room_id)}/join", carol["access_token"], {})
    assert status == 200
    assert (await membership(client, alice["access_token"], room_id, carol["user_id"]))["membership"] == "join"


async def test_a_forged_onbind_invites_nobody(hs, client, identity, room):
    alice, room_id = room
    await invite_by_address(client, alice["access_token"], room_id, identity, "dave@example.org")
    (stored,) = identity.invites
    dave = await register(client, "dave", PASSWORD)
    forger = generate_signing_key("0")
    invite = {"medium": "email", "address": "dave@example.org", "mxid": dave["user_id"], "room_id": room_id,
              "sender": alice["user_id"],
              "signed": sign_json({"mxid": dave["user_id"], "token": stored["token"]}, "evil.test", forger)}
    resp = await client.put("/_matrix/federation/v1/3pid/onbind", json={
        "medium": "email", "address": "dave@example.org", "mxid": dave["user_id"], "invites": [invite]})
    # Refused (as Synapse does: the identity server keeps the invite and may try again).
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"
    assert await membership(client, alice["access_token"], room_id, dave["user_id"]) is None
    # A user of another server, or no invites list: refused outright.
    resp = await client.put("/_matrix/federation/v1/3pid/onbind", json={
        "medium": "email", "address": "dave@example.org", "mxid": "@dave:elsewhere.test", "invites": []})
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_PARAM"
    resp = await client.put("/_matrix/federation/v1/3pid/onbind", json={"mxid": dave["user_id"], "invites": 5})
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_BAD_JSON"


async def test_bad_third_party_invites(hs, client, identity, room):
    alice, room_id = room
    token = alice["access_token"]
    status, body = await invite_by_address(client, token, room_id, identity, "x@example.org", id_access_token=None)
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"
    status, body = await invite_by_address(client, token, room_id, identity, "x@example.org", medium=None)
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"
    status, body = await invite_by_address(client, token, room_id, identity, "x@example.org", id_server="a/b")
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await invite_by_address(client, token, "!nowhere:hs.test", identity, "x@example.org")
    assert status == 404
    # Someone outside the room: refused before the identity server stores anything.
    eve = await register(client, "eve", PASSWORD)
    status, body = await invite_by_address(client, eve["access_token"], room_id, identity, "x@example.org")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    # The identity server's refusal comes back.
    status, body = await invite_by_address(client, token, room_id, identity, "x@example.org", id_access_token="bad")
    assert status == 401 and body["errcode"] == "M_UNAUTHORIZED"
    assert identity.invites == []


async def test_create_room_invites_by_address(hs, client, identity):
    """createRoom's ``invite_3pid``: each entry as ``/invite`` by address, once the room exists."""
    alice = await register(client, "alice", PASSWORD)
    bob = await register(client, "bob", PASSWORD)
    identity.bindings[("email", "bob@example.org")] = bob["user_id"]
    entry = {"id_server": identity.name, "id_access_token": ACCESS_TOKEN, "medium": "email"}
    status, body = await call(client, "POST", "/createRoom", alice["access_token"], {
        "preset": "private_chat",
        "invite_3pid": [{**entry, "address": "Bob@example.org"}, {**entry, "address": "carol@example.org"}]})
    assert status == 200
    room_id = body["room_id"]
    assert (await membership(client, alice["access_token"], room_id, bob["user_id"]))["membership"] == "invite"
    (stored,) = identity.invites
    assert (stored["address"], stored["room_id"], stored["sender"]) == ("carol@example.org", room_id, alice["user_id"])
    status, tpi = await call(client, "GET", f"/rooms/{q(room_id)}/state/m.room.third_party_invite/{q(stored['token'])}",
                             alice["access_token"])
    assert status == 200 and tpi["public_key"] == identity.public_key


async def test_create_room_with_a_bad_invite_3pid_makes_no_room(hs, client, identity):
    alice = await register(client, "alice", PASSWORD)
    for bad in ([{"id_server": identity.name, "medium": "email", "address": "x@example.org"}], [5], {"a": 1}):
        status, body = await call(client, "POST", "/createRoom", alice["access_token"], {"invite_3pid": bad})
        assert status == 400 and body["errcode"] in ("M_MISSING_PARAM", "M_BAD_JSON"), bad
    status, body = await call(client, "GET", "/joined_rooms", alice["access_token"])
    assert body["joined_rooms"] == []
    assert identity.requests == []


async def test_an_invite_whose_key_the_identity_server_revoked_invites_nobody(hs, client, identity, room):
    """The inviter's server checks the key at the invite's ``key_validity_url`` first."""
    alice, room_id = room
    await invite_by_address(client, alice["access_token"], room_id, identity, "erin@example.org")
    erin = await register(client, "erin", PASSWORD)
    identity.revoked = True
    await identity.bind("email", "erin@example.org", erin["user_id"])
    assert identity.onbind_answers == [403]
    assert identity.requests[-1][1] == "/_matrix/identity/v2/pubkey/isvalid"
    assert await membership(client, alice["access_token"], room_id, erin["user_id"]) is None


async def test_an_onbind_told_again_invites_once(hs, client, identity, room):
    """Two copies of one invite, the first with a forged signature: the second is done, the
    answer is the first one's error; told again, the invite (done) is not sent twice."""
    alice, room_id = room
    await invite_by_address(client, alice["access_token"], room_id, identity, "fay@example.org")
    fay = await register(client, "fay", PASSWORD)
    (stored,) = identity.invites
    good = {"medium": "email", "address": "fay@example.org", "mxid": fay["user_id"], "room_id": room_id,
            "sender": alice["user_id"], "signed": sign_json({"mxid": fay["user_id"], "token": stored["token"]},
                                                            identity.name, identity.key)}
    bad = {**good, "signed": sign_json({"mxid": fay["user_id"], "token": stored["token"]}, "evil.test",
                                       generate_signing_key("0"))}
    notice = {"medium": "email", "address": "fay@example.org", "mxid": fay["user_id"], "invites": [bad, good]}
    for expected in (403, 200):
        resp = await client.put("/_matrix/federation/v1/3pid/onbind", json=notice)
        assert resp.status == expected
    member = await membership(client, alice["access_token"], room_id, fay["user_id"])
    assert member["membership"] == "invite"
    status, page = await call(client, "GET", f"/rooms/{q(room_id)}/messages?dir=b&limit=50", alice["access_token"])
    assert [e["state_key"] for e in page["chunk"] if e["type"] == "m.room.member"].count(fay["user_id"]) == 1


"""Guest accounts over HTTP, on both engines: registration (only with
``allow_guest_access``), what guests may and may not call, joining only rooms whose
``m.room.guest_access`` is ``can_join``, leaving rooms that stop admitting guests,
peeking at world-readable rooms, and upgrading to a full account.

Spec: https://spec.matrix.org/latest/client-server-api/#guest-access
"""

from __future__ import annotations

import pytest

from .conftest import register
from .test_sync import C, User


@pytest.fixture
def config_overrides() -> dict:
    return {"allow_guest_access": True}


async def register_guest(client, body=None) -> User:
    resp = await client.post(f"{C}/register", params={"kind": "guest"}, json=body or {})
    data = await resp.json()
    assert resp.status == 200, data
    return User(client, data)


async def guest_room(user, **body) -> str:
    """A public room that admits guests."""
    return await user.create_room(preset="public_chat", initial_state=[
        {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "can_join"}}], **body)


@pytest.fixture
async def alice(client):
    return User(client, await register(client, "alice"))


@pytest.fixture
async def guest(client):
    return await register_guest(client)


async def test_registration_and_identity(client, guest):
    localpart, _, server = guest.user_id[1:].partition(":")
    assert localpart.isdigit() and server == "hs.test"
    assert await guest.call("GET", "/account/whoami") == {
        "user_id": guest.user_id, "is_guest": True, "device_id": guest.device_id}
    assert (await guest.call("GET", f"/profile/{guest.user_id}/displayname"))["displayname"] == localpart
    named = await register_guest(client, {"device_id": "KIOSK", "initial_device_display_name": "Kiosk"})
    assert named.device_id == "KIOSK" and named.user_id != guest.user_id
    assert (await named.call("GET", "/devices/KIOSK"))["display_name"] == "Kiosk"
    # A guest's numeric localpart is not for others to take.
    resp = await client.post(f"{C}/register", json={"username": localpart, "password": "pw-xxxxxxxx",
                                                     "auth": {"type": "m.login.dummy"}})
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_USERNAME"


@pytest.mark.parametrize("config_overrides", [{}])
async def test_guest_registration_is_off_by_default(client, config_overrides):
    resp = await client.post(f"{C}/register", params={"kind": "guest"}, json={})
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_GUEST_ACCESS_FORBIDDEN")


async def test_what_guests_may_not_do(guest, alice):
    room = await alice.create_room(preset="private_chat")
    refused = [("POST", "/createRoom", {}), ("POST", f"/rooms/{room}/invite", {"user_id": alice.user_id}),
               ("GET", "/initialSync", None), ("GET", "/events", None), ("GET", "/joined_rooms", None),
               ("PUT", f"/profile/{guest.user_id}/avatar_url", {"avatar_url": "mxc://hs.test/a"}),
               ("POST", "/account/password", {"new_password": "x"}), ("POST", f"/knock/{room}", {}),
               ("POST", "/keys/device_signing/upload", {})]
    for method, path, body in refused:
        err = await guest.call(method, path, body, expect=403)
        assert err["errcode"] == "M_GUEST_ACCESS_FORBIDDEN", path
    # ... and what they may.
    await guest.call("PUT", f"/profile/{guest.user_id}/displayname", {"displayname": "creeper"})
    assert (await guest.call("GET", f"/profile/{guest.user_id}/displayname"))["displayname"] == "creeper"
    assert "next_batch" in await guest.sync()
    assert [d["device_id"] for d in (await guest.call("GET", "/devices"))["devices"]] == [guest.device_id]
    filter_id = (await guest.call("POST", f"/user/{guest.user_id}/filter", {"room": {}}))["filter_id"]
    assert await guest.call("GET", f"/user/{guest.user_id}/filter/{filter_id}") == {"room": {}}
    await guest.call("POST", "/keys/query", {"device_keys": {alice.user_id: []}})


async def test_guests_join_only_rooms_that_admit_them(guest, alice):
    admitting = await guest_room(alice, room_alias_name="guests", power_level_content_override={"state_default": 0})
    closed = await alice.create_room(preset="public_chat")  # guest_access: forbidden
    assert (await guest.call("POST", f"/join/{closed}", {}, expect=403))["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
    await guest.call("POST", "/join/%23guests:hs.test", {})
    event_id = await guest.send(admitting, "hello from a guest")
    messages = await alice.call("GET", f"/rooms/{admitting}/messages", dir="b", limit="1")
    assert [(e["event_id"], e["sender"]) for e in messages["chunk"]] == [(event_id, guest.user_id)]
    await guest.state(admitting, "org.example.note", {"by": "a guest"})
    assert (await guest.call("GET", f"/rooms/{admitting}/state/m.room.member/{guest.user_id}"))["membership"] \
        == "join"
    await guest.call("POST", f"/rooms/{admitting}/leave", {})
    assert (await guest.call("GET", f"/rooms/{admitting}/state/m.room.member/{guest.user_id}"))["membership"] \
        == "leave"


async def test_guests_leave_rooms_that_stop_admitting_them(client, guest, alice):
    room = await guest_room(alice)
    other_guest = await register_guest(client)
    await guest.call("POST", f"/join/{room}", {})
    await other_guest.call("POST", f"/join/{room}", {})
    since = (await guest.sync())["next_batch"]
    # Another state change keeps them.
    await alice.state(room, "m.room.guest_access", {"guest_access": "can_join"})
    await alice.state(room, "m.room.guest_access", {"guest_access": "forbidden"})
    # The guest's own sync brings its leave (a long poll: woken by the leave).
    for _ in range(10):
        body = await guest.sync(since, timeout="10000")
        since = body["next_batch"]
        if room in body["rooms"]["leave"]:
            break
    leave = [e for e in body["rooms"]["leave"][room]["timeline"]["events"] if e["type"] == "m.room.member"]
    assert leave[-1]["sender"] == guest.user_id and leave[-1]["content"]["membership"] == "leave"
    members = await alice.call("GET", f"/rooms/{room}/members", membership="join")
    assert [m["state_key"] for m in members["chunk"]] == [alice.user_id]
    assert (await guest.call("POST", f"/join/{room}", {}, expect=403))["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"


async def test_guests_peek_at_world_readable_rooms(guest, alice):
    room = await alice.create_room(preset="public_chat")
    await alice.send(room, "private")
    assert (await guest.call("GET", f"/rooms/{room}/initialSync", expect=403))["errcode"] == "M_FORBIDDEN"
    await alice.state(room, "m.room.history_visibility", {"history_visibility": "world_readable"})
    public = await alice.send(room, "public")
    peek = await guest.call("GET", f"/rooms/{room}/initialSync")
    assert [e["event_id"] for e in peek["messages"]["chunk"]][-1] == public
    assert public in [e["event_id"] for e in (await guest.call("GET", f"/rooms/{room}/messages"))["chunk"]]
    since = peek["messages"]["end"]
    later = await alice.send(room, "later")
    chunk = (await guest.call("GET", "/events", room_id=room, timeout="0", **{"from": since}))["chunk"]
    assert [e["event_id"] for e in chunk if e["type"] == "m.room.message"] == [later]
    # Peeking is not joining: the guest still cannot send.
    err = await guest.call("PUT", f"/rooms/{room}/send/m.room.message/t1", {"body": "hi"}, expect=403)
    assert err["errcode"] == "M_FORBIDDEN"


async def test_upgrading_a_guest_to_a_full_account(client, guest, alice):
    room = await guest_room(alice)
    await guest.call("POST", f"/join/{room}", {})
    localpart = guest.user_id[1:].split(":")[0]
    upgrade = {"username": localpart, "password": "sir-arthur-david", "guest_access_token": guest.token}
    # Another guest's token does not upgrade this one; a username is needed.
    other = await register_guest(client)
    resp = await client.post(f"{C}/register", json={**upgrade, "guest_access_token": other.token})
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_FORBIDDEN")
    resp = await client.post(f"{C}/register", json={"password": "x", "guest_access_token": guest.token})
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_MISSING_PARAM")
    # User-interactive auth first, then the same user ID becomes a full account.
    resp = await client.post(f"{C}/register", json=upgrade)
    assert resp.status == 401 and "session" in await resp.json()
    resp = await client.post(f"{C}/register", json={**upgrade, "auth": {"type": "m.login.dummy"}})
    body = await resp.json()
    assert resp.status == 200 and body["user_id"] == guest.user_id
    full = User(client, body)
    assert (await full.call("GET", "/account/whoami"))["is_guest"] is False
    assert (await full.call("GET", "/joined_rooms"))["joined_rooms"] == [room]
    await full.call("POST", "/createRoom", {})
    login = await client.post(f"{C}/login", json={"type": "m.login.password", "password": "sir-arthur-david",
                                                 "identifier": {"type": "m.id.user", "user": localpart}})
    assert login.status == 200
    # It is no guest any more: its old token can upgrade nothing.
    resp = await client.post(f"{C}/register", json={**upgrade, "auth": {"type": "m.login.dummy"}})
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_FORBIDDEN")


async def test_admin_api_shows_guests(client, hs, guest):
    admin = await register(client, "admin")
    await hs.auth.users.set_admin(admin["user_id"], True)
    resp = await client.get(f"/_synapse/admin/v2/users/{guest.user_id}",
                            headers={"Authorization": f"Bearer {admin['access_token']}"})
    assert (await resp.json())["is_guest"] is True
    resp = await client.get(f"/_synapse/admin/v2/users/{admin['user_id']}",
                            headers={"Authorization": f"Bearer {admin['access_token']}"})
    assert (await resp.json())["is_guest"] is False

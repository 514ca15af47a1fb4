"""Attacks on client authentication (gateway/client_api/auth.py): what a locked or expired
account, a guest, or an application service's token can reach."""

from __future__ import annotations

from .conftest import auth_header, register
from .test_sync import User

C = "/_matrix/client/v3"


async def test_a_locked_account_cannot_act_through_a_path_ending_in_logout(client, hs):
    """Only /logout and /logout/all work while locked. The check was "the path ends with
    /logout", so a locked user could still send messages with the transaction ID "logout",
    state with the state key "logout", account data of type "logout"..."""
    alice = User(client, await register(client, "alice"))
    room = await alice.create_room()
    await hs.auth.users.set_flag(alice.user_id, "locked", True)
    for method, path, body in [
        ("PUT", f"/rooms/{room}/send/m.room.message/logout", {"msgtype": "m.text", "body": "still here"}),
        ("PUT", f"/rooms/{room}/state/m.room.topic/logout", {"topic": "locked"}),
        ("PUT", f"/user/{alice.user_id}/account_data/logout", {"a": 1}),
        ("GET", f"/user/{alice.user_id}/account_data/logout", None),
    ]:
        resp = await client.request(method, f"{C}{path}", json=body, headers=auth_header(alice.token))
        data = await resp.json()
        assert (resp.status, data.get("errcode")) == (401, "M_USER_LOCKED"), (path, resp.status, data)
    # The real logout still works while locked.
    resp = await client.post(f"{C}/logout", headers=auth_header(alice.token))
    assert resp.status == 200

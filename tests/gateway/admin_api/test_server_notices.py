"""Server notices over the admin API and the CLI: one room per user, invite (or auto-join),
the user can't speak or reject the invite, a new room after leaving; idempotent sends.
Both engines."""

from __future__ import annotations

import pytest
import yaml

from gateway.__main__ import main as cli_main
from tests.gateway.client_api.conftest import auth_header, register
from tests.gateway.client_api.test_rooms import get, post, send

A = "/_synapse/admin/v1"
NOTICES = {"system_mxid_localpart": "notices", "system_mxid_display_name": "Server Notices Bot",
           "room_name": "Important", "room_topic": "From your server"}


@pytest.fixture
def config_overrides():
    return {"server_notices": dict(NOTICES)}


async def notice(client, admin, user_id, text="Maintenance tonight", txn=None, **extra):
    body = {"user_id": user_id, "content": {"msgtype": "m.server_notice", "body": text, **extra}}
    if txn is None:
        resp = await client.post(f"{A}/send_server_notice", headers=admin, json=body)
    else:
        resp = await client.put(f"{A}/send_server_notice/{txn}", headers=admin, json=body)
    return resp.status, await resp.json()


async def test_notice_room_lifecycle(hs, client, admin):
    alice = (await register(client, "alice"))["access_token"]
    status, body = await notice(client, admin, "@alice:hs.test")
    assert status == 200, body
    first_event = body["event_id"]
    room_id = (await hs.events.store.get_event(first_event)).pdu.room_id
    # The user is invited to a room owned by the system user, with the configured name/topic.
    member = await hs.events.state.get_membership(room_id, "@alice:hs.test")
    assert member.membership == "invite" and member.sender == "@notices:hs.test"
    status, tags = await get(client, alice, f"/user/@alice:hs.test/rooms/{room_id}/tags")
    assert status == 200 and tags == {"tags": {"m.server_notice": {}}}
    state = await hs.room_admin.describe_rooms([room_id])
    assert state[0]["name"] == "Important" and state[0]["topic"] == "From your server"
    assert state[0]["federatable"] is False
    profile = await (await client.get("/_matrix/client/v3/profile/@notices:hs.test", headers=admin)).json()
    assert profile["displayname"] == "Server Notices Bot"
    # Rejecting the invite is refused with the notices error.
    status, err = await post(client, alice, f"/rooms/{room_id}/leave")
    assert status == 403 and err["errcode"] == "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM"
    # A second notice goes to the same room.
    status, body = await notice(client, admin, "@alice:hs.test", "Second", server_notice_type="m.server_notice.usage_limit_reached", limit_type="monthly_active_user")
    assert (await hs.events.store.get_event(body["event_id"])).pdu.room_id == room_id
    # Joined, she can read the notices but not write.
    assert (await post(client, alice, f"/rooms/{room_id}/join"))[0] == 200
    status, msgs = await get(client, alice, f"/rooms/{room_id}/messages", dir="b", limit="20")
    contents = [e["content"] for e in msgs["chunk"] if e["type"] == "m.room.message"]
    assert [c["body"] for c in contents] == ["Second", "Maintenance tonight"]
    assert contents[0]["server_notice_type"] == "m.server_notice.usage_limit_reached"
    assert all(c["msgtype"] == "m.server_notice" for c in contents)
    assert (await send(client, alice, room_id, "let me talk"))["status"] == 403
    # Leaving after joining is fine; the next notice opens a new room.
    assert (await post(client, alice, f"/rooms/{room_id}/leave"))[0] == 200
    status, body = await notice(client, admin, "@alice:hs.test", "Third")
    new_room = (await hs.events.store.get_event(body["event_id"])).pdu.room_id
    assert new_room != room_id
    assert (await hs.events.state.get_membership(new_room, "@alice:hs.test")).membership == "invite"
    # Each user has a room of their own.
    await register(client, "bob")
    status, body = await notice(client, admin, "@bob:hs.test", "Hi Bob")
    assert (await hs.events.store.get_event(body["event_id"])).pdu.room_id not in (room_id, new_room)


async def test_idempotent_sends(hs, client, admin):
    await register(client, "alice")
    first = await notice(client, admin, "@alice:hs.test", txn="t1")
    again = await notice(client, admin, "@alice:hs.test", txn="t1")
    other = await notice(client, admin, "@alice:hs.test", txn="t2")
    assert first[0] == again[0] == other[0] == 200
    assert first[1]["event_id"] == again[1]["event_id"] != other[1]["event_id"]


async def test_bad_requests(hs, client, admin):
    alice = (await register(client, "alice"))["access_token"]
    assert (await notice(client, admin, "@carol:elsewhere.test"))[0] == 400
    status, body = await notice(client, admin, "@ghost:hs.test")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    resp = await client.post(f"{A}/send_server_notice", headers=admin, json={"user_id": "@alice:hs.test"})
    assert resp.status == 400
    resp = await client.post(f"{A}/send_server_notice", headers=admin, json={"content": {}})
    assert resp.status == 400
    resp = await client.post(f"{A}/send_server_notice", headers=auth_header(alice),
                             json={"user_id": "@alice:hs.test", "content": {"body": "x"}})
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"


class TestAutoJoin:
    @pytest.fixture
    def config_overrides(self):
        return {"server_notices": {**NOTICES, "auto_join": True}}

    async def test_auto_join(self, hs, client, admin):
        await register(client, "alice")
        status, body = await notice(client, admin, "@alice:hs.test")
        room_id = (await hs.events.store.get_event(body["event_id"])).pdu.room_id
        assert (await hs.events.state.get_membership(room_id, "@alice:hs.test")).membership == "join"


class TestDisabled:
    @pytest.fixture
    def config_overrides(self):
        return {}

    async def test_notices_disabled(self, hs, client, admin):
        await register(client, "alice")
        status, body = await notice(client, admin, "@alice:hs.test")
        assert status == 400 and "not enabled" in body["error"]


async def test_cli_send_notice(tmp_path, database_config, capsys):
    db = {"name": "sqlite3", "args": {"database": database_config.args["database"]}} \
        if database_config.engine == "sqlite" else {"name": "psycopg2", "args": database_config.args}
    path = tmp_path / "homeserver.yaml"
    path.write_text(yaml.safe_dump({"server_name": "hs.test", "database": db, "server_notices": NOTICES,
                                    "signing_key_path": str(tmp_path / "key")}))
    import asyncio

    assert await asyncio.to_thread(cli_main, ["register-user", "-c", str(path), "-u", "alice", "-p", "pw-xxxxxxxx"]) == 0
    capsys.readouterr()
    code = await asyncio.to_thread(cli_main, ["send-notice", "-c", str(path), "--user", "@alice:hs.test", "Hello"])
    out = capsys.readouterr()
    assert code == 0 and out.out.strip().startswith("$")
    code = await asyncio.to_thread(cli_main, ["send-notice", "-c", str(path), "--user", "@nobody:hs.test", "Hi"])
    assert code == 1 and "Unknown user" in capsys.readouterr().err

"""Server notices seen by a real client (matrix-nio) on a running server: the invite arrives
in /sync, the room is tagged m.server_notice, rejecting the invite is refused, the user can
join and read but not write, can leave, and the next notice comes in a new room."""

from __future__ import annotations

import aiohttp
import nio

from gateway.server import HomeServer
from tests.support.gateway_server import running_gateway
from tests.support.tls import TestCA

CONFIG = {"enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4,
          "server_notices": {"system_mxid_localpart": "notices", "room_name": "Server Notices"}}
PASSWORD = "correct horse battery"


async def _client(url: str, name: str) -> nio.AsyncClient:
    client = nio.AsyncClient(url, name)
    assert isinstance(await client.register(name, PASSWORD), nio.RegisterResponse)
    return client


async def _sync(client: nio.AsyncClient) -> nio.SyncResponse:
    resp = await client.sync(timeout=0, since=client.next_batch)
    assert isinstance(resp, nio.SyncResponse), resp
    return resp


async def test_notices_with_nio(tmp_path):
    ca = TestCA(tmp_path / "ca")
    (tmp_path / "gw").mkdir()
    async with running_gateway(tmp_path / "gw", ca, CONFIG) as gw:
        root = await _client(gw.client_url, "root")
        alice = await _client(gw.client_url, "alice")
        # Make root a server admin through the database, as an operator would with the CLI.
        side = await HomeServer.open(gw.config)
        try:
            await side.auth.users.set_admin(root.user_id, True)
        finally:
            await side.close()

        async def notice(text: str) -> str:
            async with aiohttp.ClientSession() as http:
                resp = await http.post(f"{gw.client_url}/_synapse/admin/v1/send_server_notice",
                                       headers={"Authorization": f"Bearer {root.access_token}"},
                                       json={"user_id": alice.user_id,
                                             "content": {"msgtype": "m.server_notice", "body": text}})
                assert resp.status == 200, await resp.text()
                return (await resp.json())["event_id"]

        try:
            await _sync(alice)
            await notice("Welcome to the server")
            invited = await _sync(alice)
            (room_id,) = invited.rooms.invite
            assert any(isinstance(e, nio.InviteNameEvent) and e.name == "Server Notices"
                       for e in invited.rooms.invite[room_id].invite_state)
            # Rejecting the invite is refused.
            refused = await alice.room_leave(room_id)
            assert isinstance(refused, nio.RoomLeaveError) and refused.status_code == "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM"
            assert isinstance(await alice.join(room_id), nio.JoinResponse)
            joined = await _sync(alice)
            room = joined.rooms.join[room_id]
            bodies = [e.source["content"].get("body") for e in room.timeline.events if e.source["type"] == "m.room.message"]
            assert bodies == ["Welcome to the server"]
            assert any(isinstance(e, nio.TagEvent) and "m.server_notice" in e.tags for e in room.account_data)
            # The user can't write in the notices room.
            sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hello?"})
            assert isinstance(sent, nio.RoomSendError) and sent.status_code == "M_FORBIDDEN"
            # Leaving after joining is allowed; the next notice opens a new room.
            assert isinstance(await alice.room_leave(room_id), nio.RoomLeaveResponse)
            await _sync(alice)
            await notice("Second notice")
            again = await _sync(alice)
            (new_room,) = again.rooms.invite
            assert new_room != room_id
        finally:
            await root.close()
            await alice.close()

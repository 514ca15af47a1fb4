"""A second, independent client library (mautrix-python) against a running server: log in,
create a room (with an alias), invite and join, send, receive through /sync (its JSON parsed
into mautrix's own event types), read history, resolve the alias, log out."""

from __future__ import annotations

import aiohttp
from mautrix.api import HTTPAPI
from mautrix.client import ClientAPI
from mautrix.errors import MForbidden, MUnknownToken
from mautrix.types import (EventType, MessageEvent, PaginationDirection, RoomAlias, StateEvent, TextMessageEventContent,
                           UserID)

from tests.support.gateway_server import running_gateway
from tests.support.tls import TestCA

CONFIG = {"enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4}
PASSWORD = "correct horse battery"


async def _register(url: str, name: str) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{url}/_matrix/client/v3/register", json={
            "username": name, "password": PASSWORD, "auth": {"type": "m.login.dummy"}, "inhibit_login": True})
        assert resp.status == 200, await resp.text()


async def _login(url: str, name: str) -> ClientAPI:
    client = ClientAPI(api=HTTPAPI(base_url=url))
    resp = await client.login(identifier=name, password=PASSWORD, device_name="mautrix test")
    assert resp.user_id.startswith(f"@{name}:") and resp.access_token
    client.mxid = resp.user_id
    return client


def _timeline(sync: dict, room_id: str) -> list:
    room = sync["rooms"]["join"].get(room_id) or {}
    return [MessageEvent.deserialize({**e, "room_id": room_id}) for e in room.get("timeline", {}).get("events", [])
            if e["type"] == "m.room.message"]


async def test_mautrix_client(tmp_path):
    ca = TestCA(tmp_path / "ca")
    (tmp_path / "gw").mkdir()
    async with running_gateway(tmp_path / "gw", ca, CONFIG) as gw:
        await _register(gw.client_url, "alice")
        await _register(gw.client_url, "bob")
        alice = await _login(gw.client_url, "alice")
        bob = await _login(gw.client_url, "bob")
        try:
            assert await alice.whoami() and (await alice.whoami()).user_id == alice.mxid
            room_id = await alice.create_room(alias_localpart="mautrix", name="Mautrix room",
                                              invitees=[UserID(bob.mxid)])
            first = await bob.sync(timeout=0)
            assert room_id in first["rooms"]["invite"]
            assert await bob.join_room(RoomAlias(f"#mautrix:{gw.server_name}")) == room_id
            resolved = await bob.resolve_room_alias(RoomAlias(f"#mautrix:{gw.server_name}"))
            assert resolved.room_id == room_id
            event_id = await alice.send_text(room_id, "hello from mautrix")
            synced = await bob.sync(since=first["next_batch"], timeout=10_000)
            messages = _timeline(synced, room_id)
            assert [(m.sender, m.content.body, m.event_id) for m in messages] == [
                (alice.mxid, "hello from mautrix", event_id)]
            assert isinstance(messages[0].content, TextMessageEventContent)
            # State parses into mautrix's types too.
            name = await bob.get_state_event(room_id, EventType.ROOM_NAME)
            assert name.name == "Mautrix room"
            members = await bob.get_joined_members(room_id)
            assert set(members) == {alice.mxid, bob.mxid}
            state = await bob.get_state(room_id)
            assert all(isinstance(e, StateEvent) for e in state)
            history = await bob.get_messages(room_id, direction=PaginationDirection.BACKWARD, limit=50)
            assert any(e.type == EventType.ROOM_CREATE for e in history.events)
            # A forbidden action is a typed Matrix error in the client.
            try:
                await bob.send_state_event(room_id, EventType.ROOM_POWER_LEVELS, {"users": {bob.mxid: 100}})
                raise AssertionError("bob may not change the power levels")
            except MForbidden:
                pass
            old_token = bob.api.token
            await bob.logout()
            bob.api.token = old_token  # the client forgets it; a replay must be refused
            try:
                await bob.whoami()
                raise AssertionError("the token still works after logout")
            except MUnknownToken:
                pass
        finally:
            await alice.api.session.close()
            await bob.api.session.close()

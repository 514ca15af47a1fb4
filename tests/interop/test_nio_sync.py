"""A real client library (matrix-nio) against a real server process on loopback: two
users register, log in, create a room, invite, join, talk, see each other's messages and
typing through /sync (long-polling), redact, read receipts, paginate back to the create
event and leave; once in a room v12 (room IDs without a server part) and once in v11."""

from __future__ import annotations

import asyncio

import nio
import pytest

from tests.support.gateway_server import running_gateway
from tests.support.tls import TestCA

CONFIG = {"enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4}
PASSWORD = "correct horse battery"


async def _account(url: str, name: str) -> nio.AsyncClient:
    """Register with one client, then log in with a fresh one (a second device)."""
    reg = nio.AsyncClient(url, name)
    try:
        assert isinstance(await reg.register(name, PASSWORD), nio.RegisterResponse)
    finally:
        await reg.close()
    client = nio.AsyncClient(url, reg.user_id)
    login = await client.login(PASSWORD, device_name=f"{name}'s test device")
    assert isinstance(login, nio.LoginResponse), login
    return client


async def _sync(client: nio.AsyncClient, timeout: int = 0) -> nio.SyncResponse:
    resp = await client.sync(timeout=timeout, since=client.next_batch)
    assert isinstance(resp, nio.SyncResponse), resp
    return resp


def _texts(resp: nio.SyncResponse, room_id: str) -> list[tuple[str, str]]:
    room = resp.rooms.join.get(room_id)
    if room is None:
        return []
    return [(e.sender, e.body) for e in room.timeline.events if isinstance(e, nio.RoomMessageText)]


@pytest.mark.parametrize("version", ["12", "11"])
async def test_nio_conversation(tmp_path, version):
    ca = TestCA(tmp_path / "ca")
    (tmp_path / "gw").mkdir()
    async with running_gateway(tmp_path / "gw", ca, CONFIG) as gw:
        alice = await _account(gw.client_url, "alice")
        bob = await _account(gw.client_url, "bob")
        try:
            await _sync(alice)
            await _sync(bob)

            created = await alice.room_create(name="nio room", room_version=version, invite=[bob.user_id])
            assert isinstance(created, nio.RoomCreateResponse), created
            room_id = created.room_id
            assert (":" in room_id) == (version != "12")

            # Bob sees the invite with its stripped state, and joins.
            invite = await _sync(bob)
            assert room_id in invite.rooms.invite
            stripped = invite.rooms.invite[room_id].invite_state
            assert any(isinstance(e, nio.InviteNameEvent) and e.name == "nio room" for e in stripped)
            assert any(isinstance(e, nio.InviteMemberEvent) and e.state_key == bob.user_id
                       and e.membership == "invite" for e in stripped)
            assert isinstance(await bob.join(room_id), nio.JoinResponse)
            joined = await _sync(bob)
            assert room_id in joined.rooms.join and bob.rooms[room_id].name == "nio room"

            # Alice long-polls; Bob's message wakes her.
            await _sync(alice)
            waiting = asyncio.create_task(_sync(alice, timeout=30_000))
            sent = await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hi alice"})
            assert isinstance(sent, nio.RoomSendResponse), sent
            woke = await asyncio.wait_for(waiting, 20)
            assert (bob.user_id, "hi alice") in _texts(woke, room_id)
            assert alice.rooms[room_id].member_count == 2

            reply = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hello bob"})
            assert isinstance(reply, nio.RoomSendResponse)
            got = await _sync(bob)
            assert (alice.user_id, "hello bob") in _texts(got, room_id)
            # The sending device gets its transaction ID back, the other user does not.
            mine = await _sync(alice)
            own = [e for e in mine.rooms.join[room_id].timeline.events if isinstance(e, nio.RoomMessageText)]
            assert own and own[-1].transaction_id is not None
            bobs_view = [e for e in got.rooms.join[room_id].timeline.events if isinstance(e, nio.RoomMessageText)]
            assert bobs_view[-1].transaction_id is None

            # Typing: Alice types, Bob's long-poll sees it.
            waiting = asyncio.create_task(_sync(bob, timeout=30_000))
            assert isinstance(await alice.room_typing(room_id, True, 30_000), nio.RoomTypingResponse)
            typing = await asyncio.wait_for(waiting, 20)
            notices = [e for e in typing.rooms.join[room_id].ephemeral if isinstance(e, nio.TypingNoticeEvent)]
            assert notices and notices[-1].users == [alice.user_id]
            assert bob.rooms[room_id].typing_users == [alice.user_id]
            await alice.room_typing(room_id, False)

            # Read receipt: Bob read Alice's reply.
            assert isinstance(await bob.room_read_markers(room_id, reply.event_id, reply.event_id),
                              nio.RoomReadMarkersResponse)
            receipts = await _sync(alice)
            ephemeral = receipts.rooms.join[room_id].ephemeral
            assert any(isinstance(e, nio.ReceiptEvent) and any(r.event_id == reply.event_id and r.user_id == bob.user_id
                                                                for r in e.receipts) for e in ephemeral)

            # Redaction reaches the other side; /messages shows the redacted event.
            redacted = await bob.room_redact(room_id, sent.event_id, reason="oops")
            assert isinstance(redacted, nio.RoomRedactResponse), redacted
            seen = await _sync(alice)
            redactions = [e for e in seen.rooms.join[room_id].timeline.events if isinstance(e, nio.RedactionEvent)]
            assert redactions and redactions[0].redacts == sent.event_id

            # Paginate back from the sync's prev_batch to the create event.
            token, collected = seen.rooms.join[room_id].timeline.prev_batch, []
            for _ in range(20):
                page = await alice.room_messages(room_id, start=token, limit=3)
                assert isinstance(page, nio.RoomMessagesResponse), page
                collected += page.chunk
                if not page.chunk or page.end is None:
                    break
                token = page.end
            assert isinstance(collected[-1], nio.RoomCreateEvent)
            gone = [e for e in collected if getattr(e, "event_id", None) == sent.event_id]
            assert gone and isinstance(gone[0], nio.RedactedEvent)
            assert (alice.user_id, "hello bob") in [(e.sender, getattr(e, "body", None)) for e in collected]

            # Bob leaves: his next sync puts the room under "leave", Alice sees the leave.
            assert isinstance(await bob.room_leave(room_id), nio.RoomLeaveResponse)
            left = await _sync(bob)
            assert room_id in left.rooms.leave and room_id not in left.rooms.join
            after = await _sync(alice)
            members = [e for e in after.rooms.join[room_id].timeline.events if isinstance(e, nio.RoomMemberEvent)]
            assert members and members[-1].state_key == bob.user_id and members[-1].membership == "leave"
        finally:
            await alice.close()
            await bob.close()

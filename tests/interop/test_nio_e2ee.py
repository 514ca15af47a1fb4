"""Real end-to-end encryption with matrix-nio (its E2EE extra, vodozemac) against a real
server process: two users in an encrypted room upload keys, query each other's devices,
claim one-time keys, share a megolm session over to-device olm messages, and each
decrypts what the other sent. The server only stores and forwards the keys."""

from __future__ import annotations

import asyncio

import nio
import pytest

from tests.support.gateway_server import running_gateway
from tests.support.tls import TestCA

CONFIG = {"enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4}
PASSWORD = "correct horse battery"


async def _account(url: str, name: str, store) -> nio.AsyncClient:
    reg = nio.AsyncClient(url, name)
    try:
        assert isinstance(await reg.register(name, PASSWORD), nio.RegisterResponse)
    finally:
        await reg.close()
    store.mkdir()
    config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False)
    client = nio.AsyncClient(url, reg.user_id, store_path=str(store), config=config)
    login = await client.login(PASSWORD, device_name=f"{name}'s encrypted device")
    assert isinstance(login, nio.LoginResponse), login
    return client


async def _sync(client: nio.AsyncClient, timeout: int = 0) -> nio.SyncResponse:
    resp = await client.sync(timeout=timeout, since=client.next_batch, full_state=client.next_batch is None)
    assert isinstance(resp, nio.SyncResponse), resp
    return resp


async def _keys(client: nio.AsyncClient) -> None:
    if client.should_upload_keys:
        assert isinstance(await client.keys_upload(), nio.KeysUploadResponse)
    if client.should_query_keys:
        assert isinstance(await client.keys_query(), nio.KeysQueryResponse)


async def _decrypted_texts(client: nio.AsyncClient, room_id: str, want: str, rounds: int = 10) -> list:
    """Sync until a decrypted message with body ``want`` arrives (each sync waits for news)."""
    seen = []
    for _ in range(rounds):
        resp = await _sync(client, timeout=5000)
        room = resp.rooms.join.get(room_id)
        for e in room.timeline.events if room else []:
            seen.append(e)
            if isinstance(e, nio.RoomMessageText) and e.body == want:
                return seen
        await _keys(client)
    raise AssertionError(f"never decrypted {want!r}: {seen}")


async def test_megolm_messages_decrypt_on_the_other_side(tmp_path):
    ca = TestCA(tmp_path / "ca")
    (tmp_path / "gw").mkdir()
    async with running_gateway(tmp_path / "gw", ca, CONFIG) as gw:
        alice = await _account(gw.client_url, "alice", tmp_path / "alice")
        bob = await _account(gw.client_url, "bob", tmp_path / "bob")
        try:
            for c in (alice, bob):
                await _keys(c)
                await _sync(c)
                await _keys(c)
            # The server counts the one-time keys nio uploaded.
            assert alice.olm.account.max_one_time_keys > 0
            created = await alice.room_create(
                name="secret", invite=[bob.user_id],
                initial_state=[{"type": "m.room.encryption", "state_key": "",
                                "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
            assert isinstance(created, nio.RoomCreateResponse), created
            room_id = created.room_id
            await _sync(bob)
            assert isinstance(await bob.join(room_id), nio.JoinResponse)
            await _sync(bob)
            await _sync(alice)
            assert alice.rooms[room_id].encrypted and bob.rooms[room_id].encrypted
            await _keys(alice)
            await _keys(bob)
            # Each side now knows the other's device (from /keys/query).
            assert bob.device_id in alice.device_store[bob.user_id]
            assert alice.device_id in bob.device_store[alice.user_id]

            sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hello bob"},
                                         ignore_unverified_devices=True)
            assert isinstance(sent, nio.RoomSendResponse), sent
            # What the server stored is ciphertext.
            raw = await bob.room_get_event(room_id, sent.event_id)
            assert raw.event.source["type"] == "m.room.encrypted"
            assert "hello bob" not in str(raw.event.source)
            events = await _decrypted_texts(bob, room_id, "hello bob")
            got = [e for e in events if isinstance(e, nio.RoomMessageText)]
            assert got[-1].sender == alice.user_id and got[-1].decrypted

            # And back: bob's own session reaches alice.
            sent = await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hi alice"},
                                       ignore_unverified_devices=True)
            assert isinstance(sent, nio.RoomSendResponse), sent
            events = await _decrypted_texts(alice, room_id, "hi alice")
            assert [e for e in events if isinstance(e, nio.RoomMessageText)][-1].decrypted
            # The to-device messages that carried the room keys were acknowledged and deleted.
            await _sync(alice)
            await _sync(bob)
            assert await asyncio.wait_for(_inbox_size(gw), 10) == 0
        finally:
            await alice.close()
            await bob.close()


async def _inbox_size(gw) -> int:
    import aiosqlite

    async with aiosqlite.connect(gw.config.database.args["database"]) as db:
        async with db.execute("SELECT COUNT(*) FROM device_inbox") as cur:
            return (await cur.fetchone())[0]

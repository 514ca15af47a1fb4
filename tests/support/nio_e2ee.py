"""matrix-nio clients with end-to-end encryption (vodozemac) for interop tests: log in
with a crypto store, keep keys uploaded and devices queried, and sync until a message
decrypts."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import aiohttp

import nio


async def encrypted_client(url: str, user_id: str, password: str, store: Path) -> nio.AsyncClient:
    store.mkdir(parents=True, exist_ok=True)
    config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False)
    client = nio.AsyncClient(url, user_id, store_path=str(store), config=config)
    login = await client.login(password, device_name="encrypted test device")
    assert isinstance(login, nio.LoginResponse), login
    return client


async def sync(client: nio.AsyncClient, timeout: int = 0) -> nio.SyncResponse:
    resp = await client.sync(timeout=timeout, since=client.next_batch, full_state=client.next_batch is None)
    assert isinstance(resp, nio.SyncResponse), resp
    return resp


async def keys(client: nio.AsyncClient) -> None:
    """Upload what nio wants uploaded; query the devices it lacks."""
    if client.should_upload_keys:
        assert isinstance(await client.keys_upload(), nio.KeysUploadResponse)
    if client.should_query_keys:
        assert isinstance(await client.keys_query(), nio.KeysQueryResponse)


async def sync_until_decrypted(client: nio.AsyncClient, room_id: str, want: str, rounds: int = 20) -> nio.RoomMessageText:
    """Sync (each sync waits for news) until a decrypted message with body ``want`` arrives."""
    seen = []
    for _ in range(rounds):
        resp = await sync(client, timeout=3000)
        room = resp.rooms.join.get(room_id)
        for e in room.timeline.events if room else []:
            seen.append(e)
            if isinstance(e, nio.RoomMessageText) and e.body == want:
                assert e.decrypted
                return e
        await keys(client)
    raise AssertionError(f"never decrypted {want!r}: {seen}")


async def sync_until(client: nio.AsyncClient, predicate, rounds: int = 30) -> nio.SyncResponse:
    for _ in range(rounds):
        resp = await sync(client, timeout=3000)
        await keys(client)
        if predicate(resp):
            return resp
    raise AssertionError("sync condition never became true")


async def exchange_encrypted_messages(alice: nio.AsyncClient, bob: nio.AsyncClient, *,
                                      alias: str | None = None) -> str:
    """alice creates an encrypted room and invites bob (on her server or another) or, with
    ``alias``, publishes it under that alias for bob to join; bob joins; each sends a
    megolm message the other decrypts. Returns the room ID."""
    for c in (alice, bob):
        await keys(c)
        await sync(c)
        await keys(c)
    created = await alice.room_create(
        name="secret", invite=[] if alias else [bob.user_id], alias=alias,
        visibility=nio.RoomVisibility.public if alias else nio.RoomVisibility.private,
        preset=nio.RoomPreset.public_chat if alias else None,
        initial_state=[{"type": "m.room.encryption", "state_key": "",
                        "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
    assert isinstance(created, nio.RoomCreateResponse), created
    room_id = created.room_id
    if alias:
        joined = await bob.join(f"#{alias}:{alice.user_id.split(':', 1)[1]}")
    else:
        await sync_until(bob, lambda r: room_id in r.rooms.invite)
        joined = await bob.join(room_id)
    assert isinstance(joined, nio.JoinResponse), joined
    await sync_until(bob, lambda r: room_id in bob.rooms and bob.rooms[room_id].encrypted)
    await sync_until(alice, lambda r: bob.user_id in alice.rooms[room_id].users)
    # Each side learns the other's device from /keys/query (over federation if remote).
    await sync_until(alice, lambda r: bob.device_id in alice.device_store[bob.user_id])
    await sync_until(bob, lambda r: alice.device_id in bob.device_store[alice.user_id])

    sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hello bob"},
                                 ignore_unverified_devices=True)
    assert isinstance(sent, nio.RoomSendResponse), sent
    got = await sync_until_decrypted(bob, room_id, "hello bob")
    assert got.sender == alice.user_id
    # What the servers store and forward is ciphertext.
    async with aiohttp.ClientSession() as s, s.get(
            f"{bob.homeserver}/_matrix/client/v3/rooms/{quote(room_id)}/event/{quote(sent.event_id)}",
            headers={"Authorization": f"Bearer {bob.access_token}"}) as r:
        raw = await r.json()
    assert raw["type"] == "m.room.encrypted" and "hello bob" not in str(raw), raw

    sent = await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hi alice"},
                               ignore_unverified_devices=True)
    assert isinstance(sent, nio.RoomSendResponse), sent
    got = await sync_until_decrypted(alice, room_id, "hi alice")
    assert got.sender == bob.user_id
    return room_id

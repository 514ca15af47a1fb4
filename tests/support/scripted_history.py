"""A scripted run of two users on a homeserver (ours or Synapse) through the Client-Server
API and matrix-nio, and the check that another server, made from its database (``gateway
port-db``, ``gateway import-synapse``), serves what the run left behind.

The run: an encrypted room where megolm messages decrypt, a public room with an alias,
messages, an edit, a reaction, a thread reply, an uploaded file, a key backup, cross-signing
keys and a signed device, account data (``m.direct``, ignored users, secret storage, a room
note), a tag, push rules (a new one, a default one disabled), a pusher, a read receipt, a
display name, and a to-device message still waiting for its device.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from yarl import URL

from federation.signing import encode_verify_key, generate_signing_key, sign_json
from tests.support.client_api import Client, q
from tests.support.nio_e2ee import encrypted_client, exchange_encrypted_messages, keys, sync

BACKUP_ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"


@dataclass
class Account:
    user_id: str
    password: str
    access_token: str = ""
    device_id: str = ""


@dataclass
class History:
    """What the run left on the server: what the new server must serve the same."""

    alice: Account
    bob: Account
    encrypted_room: str = ""
    public_room: str = ""
    alias: str = ""
    messages: list[tuple[str, str]] = field(default_factory=list)  # (event ID, body) in order
    encrypted_event_ids: list[str] = field(default_factory=list)
    edited: str = ""
    edit: str = ""
    reaction: str = ""
    thread_root: str = ""
    thread_reply: str = ""
    media_mxc: str = ""
    media_bytes: bytes = b""
    backup_version: str = ""
    backup_auth_data: dict = field(default_factory=dict)
    backup_session: tuple[str, dict] = ("", {})  # (session ID, key data)
    alice_keys: dict = field(default_factory=dict)  # bob's /keys/query answer for alice
    otk_counts: dict = field(default_factory=dict)
    fallback_key_types: list = field(default_factory=list)
    account_data: dict = field(default_factory=dict)
    room_account_data: tuple[str, dict] = ("", {})
    pusher_key: str = ""
    displayname: str = ""
    to_device: dict = field(default_factory=dict)


async def make_history(client_url: str, alice: Account, bob: Account, store: Path) -> History:
    """Run the script as ``alice`` and ``bob`` (existing users, logged in here by password)."""
    h = History(alice, bob)
    nio_alice = await encrypted_client(client_url, alice.user_id, alice.password, store / "alice")
    nio_bob = await encrypted_client(client_url, bob.user_id, bob.password, store / "bob")
    try:
        h.encrypted_room = await exchange_encrypted_messages(nio_alice, nio_bob)
        for account, client in ((alice, nio_alice), (bob, nio_bob)):
            account.access_token, account.device_id = client.access_token, client.device_id
        await keys(nio_alice)
        await sync(nio_alice)
    finally:
        await nio_alice.close()
        await nio_bob.close()
    async with aiohttp.ClientSession() as session:
        a = Client(session, client_url, alice.access_token, alice.user_id)
        b = Client(session, client_url, bob.access_token, bob.user_id)
        await _rooms_and_messages(session, client_url, a, b, h)
        await _keys(a, h)
        await _account(a, h)
        # Last: a to-device message alice's device has not synced yet.
        h.to_device = {"nonce": secrets.token_hex(8)}
        await b.call("PUT", f"/sendToDevice/org.example.ping/{secrets.token_hex(6)}",
                     {"messages": {alice.user_id: {alice.device_id: h.to_device}}})
    return h


async def _rooms_and_messages(session: aiohttp.ClientSession, url: str, a: Client, b: Client, h: History) -> None:
    encrypted = await a.call("GET", f"/rooms/{q(h.encrypted_room)}/messages", params={"dir": "b", "limit": "50"})
    h.encrypted_event_ids = [e["event_id"] for e in encrypted["chunk"] if e["type"] == "m.room.encrypted"]
    assert len(h.encrypted_event_ids) == 2, encrypted
    localpart = f"ported{secrets.token_hex(3)}"
    created = await a.call("POST", "/createRoom", {"preset": "public_chat", "visibility": "public",
                                                    "room_alias_name": localpart, "name": "Ported room"})
    h.public_room, h.alias = created["room_id"], f"#{localpart}:{a.user_id.split(':', 1)[1]}"
    await b.call("POST", f"/join/{q(h.alias)}", {})
    for client, text in ((a, "first"), (b, "second"), (a, "third")):
        h.messages.append((await client.send_text(h.public_room, text), text))
    h.edited = h.messages[0][0]
    h.edit = (await a.call("PUT", f"/rooms/{q(h.public_room)}/send/m.room.message/edit1", {
        "msgtype": "m.text", "body": "* first, edited",
        "m.new_content": {"msgtype": "m.text", "body": "first, edited"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": h.edited}}))["event_id"]
    h.reaction = (await b.call("PUT", f"/rooms/{q(h.public_room)}/send/m.reaction/react1", {
        "m.relates_to": {"rel_type": "m.annotation", "event_id": h.messages[1][0], "key": "👍"}}))["event_id"]
    h.thread_root = h.messages[2][0]
    h.thread_reply = (await b.call("PUT", f"/rooms/{q(h.public_room)}/send/m.room.message/thread1", {
        "msgtype": "m.text", "body": "in the thread",
        "m.relates_to": {"rel_type": "m.thread", "event_id": h.thread_root}}))["event_id"]
    h.media_bytes = os.urandom(3000)
    async with session.post(f"{url}/_matrix/media/v3/upload", params={"filename": "notes.bin"},
                            data=h.media_bytes, headers={"Authorization": f"Bearer {a.token}",
                                                         "Content-Type": "application/octet-stream"}) as r:
        body = await r.json()
        assert r.status == 200, body
    h.media_mxc = body["content_uri"]
    file_event = await a.call("PUT", f"/rooms/{q(h.public_room)}/send/m.room.message/file1",
                              {"msgtype": "m.file", "body": "notes.bin", "url": h.media_mxc})
    h.messages.append((file_event["event_id"], "notes.bin"))
    await a.call("POST", f"/rooms/{q(h.public_room)}/receipt/m.read/{q(file_event['event_id'])}", {})


async def _keys(a: Client, h: History) -> None:
    """A key backup with one session, and cross-signing keys that sign alice's device."""
    h.backup_auth_data = {"public_key": base64.b64encode(os.urandom(32)).decode().rstrip("=")}
    h.backup_version = (await a.call("POST", "/room_keys/version", {
        "algorithm": BACKUP_ALGORITHM, "auth_data": h.backup_auth_data}))["version"]
    session_id = base64.b64encode(os.urandom(32)).decode().rstrip("=")
    key_data = {"first_message_index": 0, "forwarded_count": 0, "is_verified": False,
                "session_data": {"ephemeral": "ZXBoZW1lcmFs", "ciphertext": "Y2lwaGVydGV4dA", "mac": "bWFj"}}
    await a.call("PUT", f"/room_keys/keys/{q(h.encrypted_room)}/{q(session_id)}", key_data,
                 params={"version": h.backup_version})
    h.backup_session = (session_id, key_data)
    # A fallback key (nio uploads none); servers store it without checking its signature.
    fallback_id = f"signed_curve25519:{secrets.token_hex(4)}"
    await a.call("POST", "/keys/upload", {"fallback_keys": {fallback_id: {
        "key": base64.b64encode(os.urandom(32)).decode().rstrip("="), "fallback": True,
        "signatures": {a.user_id: {f"ed25519:{h.alice.device_id}": "c2lnbmF0dXJl"}}}}})

    def cross_signing_key(usage: str):
        key = generate_signing_key("x")
        key = type(key)(encode_verify_key(key.verify_key), key.signing_key)  # key ID ed25519:<public key>
        return key, {"user_id": a.user_id, "usage": [usage], "keys": {key.key_id: key.version}}

    master, master_json = cross_signing_key("master")
    self_signing, self_json = cross_signing_key("self_signing")
    _, user_json = cross_signing_key("user_signing")
    upload = {"master_key": master_json, "self_signing_key": sign_json(self_json, a.user_id, master),
              "user_signing_key": sign_json(user_json, a.user_id, master)}
    async with a.s.post(a.url("/keys/device_signing/upload"), json=upload,
                        headers={"Authorization": f"Bearer {a.token}"}) as r:
        body = await r.json()
    if r.status == 401:  # servers before MSC3967 (Synapse 1.100) want UI auth for the first keys too
        await a.call("POST", "/keys/device_signing/upload", {**upload, "auth": {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": a.user_id},
            "password": h.alice.password, "session": body["session"]}})
    else:
        assert r.status == 200, body
    query = await a.call("POST", "/keys/query", {"device_keys": {a.user_id: [h.alice.device_id]}})
    device = query["device_keys"][a.user_id][h.alice.device_id]
    device.pop("unsigned", None)
    signed = sign_json({k: v for k, v in device.items() if k != "signatures"}, a.user_id, self_signing)
    sig = signed["signatures"][a.user_id]
    await a.call("POST", "/keys/signatures/upload",
                 {a.user_id: {h.alice.device_id: {**device, "signatures": {a.user_id: sig}}}})
    h.alice_keys = await a.call("POST", "/keys/query", {"device_keys": {a.user_id: []}})
    assert self_signing.key_id in h.alice_keys["device_keys"][a.user_id][h.alice.device_id]["signatures"][a.user_id]


async def _account(a: Client, h: History) -> None:
    h.account_data = {
        "m.direct": {h.bob.user_id: [h.encrypted_room]},
        "m.ignored_user_list": {"ignored_users": {"@spammer:example.org": {}}},
        "m.secret_storage.default_key": {"key": "portkey"},
        "m.secret_storage.key.portkey": {"algorithm": "m.secret_storage.v1.aes-hmac-sha2", "iv": "aXY", "mac": "bWFj"},
    }
    for kind, content in h.account_data.items():
        await a.call("PUT", f"/user/{q(a.user_id)}/account_data/{kind}", content)
    h.room_account_data = ("org.example.note", {"note": "ported"})
    await a.call("PUT", f"/user/{q(a.user_id)}/rooms/{q(h.public_room)}/account_data/org.example.note",
                 h.room_account_data[1])
    await a.call("PUT", f"/user/{q(a.user_id)}/rooms/{q(h.public_room)}/tags/m.favourite", {"order": 0.25})
    await a.call("PUT", "/pushrules/global/content/ported_rule", {"pattern": "porting", "actions": ["notify"]})
    await a.call("PUT", "/pushrules/global/override/.m.rule.suppress_notices/enabled", {"enabled": False})
    h.pusher_key = f"pushkey-{secrets.token_hex(4)}"
    await a.call("POST", "/pushers/set", {
        "kind": "http", "app_id": "org.example.app", "pushkey": h.pusher_key, "app_display_name": "Example",
        "device_display_name": "Phone", "lang": "en", "data": {"url": "http://127.0.0.1:9/_matrix/push/v1/notify"}})
    h.displayname = "Alice, ported"
    await a.call("PUT", f"/profile/{q(a.user_id)}/displayname", {"displayname": h.displayname})
    state = await a.call("GET", "/sync", params={"filter": '{"room": {"rooms": []}}'})
    h.otk_counts = state.get("device_one_time_keys_count", {})
    h.fallback_key_types = sorted(state.get("device_unused_fallback_key_types", []))
    assert h.otk_counts.get("signed_curve25519") and h.fallback_key_types == ["signed_curve25519"], state


#: What ``check_history`` checks, in groups that an import may bring over one by one.
PARTS = frozenset({"accounts", "rooms", "media", "keys", "to_device", "account_data"})


async def check_history(client_url: str, h: History, parts: frozenset[str] = PARTS) -> None:
    """What ``make_history`` left (the ``parts`` of it) is served by the server at ``client_url``."""
    async with aiohttp.ClientSession() as session:
        a = Client(session, client_url, h.alice.access_token, h.alice.user_id)
        b = Client(session, client_url, h.bob.access_token, h.bob.user_id)
        # The same access tokens, devices and passwords.
        assert (await a.call("GET", "/account/whoami"))["device_id"] == h.alice.device_id
        assert (await b.call("GET", "/account/whoami"))["user_id"] == h.bob.user_id
        login = await a.call("POST", "/login", {"type": "m.login.password", "password": h.alice.password,
                                                "identifier": {"type": "m.id.user", "user": h.alice.user_id}})
        assert login["user_id"] == h.alice.user_id
        assert (await a.call("GET", f"/profile/{q(a.user_id)}/displayname"))["displayname"] == h.displayname
        # The first /sync of alice's old device: rooms, the waiting to-device message, key counts.
        first = await a.call("GET", "/sync")
        if "to_device" in parts:
            assert any(m["type"] == "org.example.ping" and m["content"] == h.to_device
                       and m["sender"] == h.bob.user_id
                       for m in first.get("to_device", {}).get("events", [])), first.get("to_device")
        if "keys" in parts:
            assert first.get("device_one_time_keys_count") == h.otk_counts
            assert sorted(first.get("device_unused_fallback_key_types", [])) == h.fallback_key_types
            await _check_keys(a, b, h)
        if "rooms" in parts:
            assert {h.public_room, h.encrypted_room} <= set(first["rooms"]["join"]), first["rooms"]
            await _check_history(a, h)
        if "account_data" in parts:
            public = first["rooms"]["join"][h.public_room]
            assert any(e["type"] == "m.tag" and e["content"]["tags"] == {"m.favourite": {"order": 0.25}}
                       for e in public["account_data"]["events"]), public["account_data"]
            receipts = [e for e in public["ephemeral"]["events"] if e["type"] == "m.receipt"]
            assert any(h.messages[-1][0] in e["content"]
                       and h.alice.user_id in e["content"][h.messages[-1][0]]["m.read"] for e in receipts), receipts
            await _check_account(a, h)
        if "media" in parts:
            server, media_id = h.media_mxc[len("mxc://"):].split("/", 1)
            async with session.get(f"{client_url}/_matrix/client/v1/media/download/{server}/{media_id}",
                                   headers={"Authorization": f"Bearer {a.token}"}) as r:
                assert r.status == 200 and await r.read() == h.media_bytes
        if "rooms" in parts:  # the room lives on: a new message reaches the other member
            text = f"after the move {secrets.token_hex(3)}"
            await b.send_text(h.public_room, text)
            a.since = first["next_batch"]
            await a.sync_until(lambda body: text in [e["content"].get("body") for e in body.get("rooms", {}).get(
                "join", {}).get(h.public_room, {}).get("timeline", {}).get("events", [])])


async def _v1(c: Client, path: str) -> dict:
    async with c.s.get(URL(f"{c.base}/_matrix/client/v1{path}", encoded=True),
                       headers={"Authorization": f"Bearer {c.token}"}) as r:
        body = await r.json()
        assert r.status == 200, (path, body)
        return body


async def _check_history(a: Client, h: History) -> None:
    chunk = (await a.call("GET", f"/rooms/{q(h.public_room)}/messages",
                          params={"dir": "b", "limit": "100"}))["chunk"]
    plain = [(e["event_id"], e["content"].get("body")) for e in reversed(chunk) if e["type"] == "m.room.message"
             and e["event_id"] not in (h.edit, h.thread_reply)]
    assert plain == h.messages, plain
    ids = {e["event_id"] for e in chunk}
    assert {h.edit, h.reaction, h.thread_reply} <= ids
    edits = await _v1(a, f"/rooms/{q(h.public_room)}/relations/{q(h.edited)}/m.replace")
    assert [e["event_id"] for e in edits["chunk"]] == [h.edit]
    reactions = await _v1(a, f"/rooms/{q(h.public_room)}/relations/{q(h.messages[1][0])}/m.annotation")
    assert [e["event_id"] for e in reactions["chunk"]] == [h.reaction]
    threads = await _v1(a, f"/rooms/{q(h.public_room)}/threads")
    assert [e["event_id"] for e in threads["chunk"]] == [h.thread_root]
    encrypted = (await a.call("GET", f"/rooms/{q(h.encrypted_room)}/messages",
                              params={"dir": "b", "limit": "50"}))["chunk"]
    assert [e["event_id"] for e in encrypted if e["type"] == "m.room.encrypted"] == h.encrypted_event_ids
    found = await a.call("POST", "/search", {"search_categories": {"room_events": {"search_term": "second"}}})
    assert [r["result"]["event_id"] for r in found["search_categories"]["room_events"]["results"]] == [
        h.messages[1][0]]
    resolved = await a.call("GET", f"/directory/room/{q(h.alias)}")
    assert resolved["room_id"] == h.public_room
    assert (await a.call("GET", f"/directory/list/room/{q(h.public_room)}"))["visibility"] == "public"


async def _check_keys(a: Client, b: Client, h: History) -> None:
    version = await a.call("GET", "/room_keys/version")
    assert (version["version"], version["algorithm"], version["auth_data"]) == (
        h.backup_version, BACKUP_ALGORITHM, h.backup_auth_data)
    session_id, key_data = h.backup_session
    got = await a.call("GET", f"/room_keys/keys/{q(h.encrypted_room)}/{q(session_id)}",
                       params={"version": h.backup_version})
    assert got == key_data
    query = await b.call("POST", "/keys/query", {"device_keys": {h.alice.user_id: []}})
    for section in ("master_keys", "self_signing_keys"):
        assert query[section] == h.alice_keys[section], section
    want = h.alice_keys["device_keys"][h.alice.user_id][h.alice.device_id]
    have = query["device_keys"][h.alice.user_id][h.alice.device_id]
    for k in ("keys", "signatures", "algorithms", "device_id", "user_id"):
        assert have[k] == want[k], k


async def _check_account(a: Client, h: History) -> None:
    for kind, content in h.account_data.items():
        assert await a.call("GET", f"/user/{q(a.user_id)}/account_data/{kind}") == content, kind
    kind, content = h.room_account_data
    assert await a.call("GET", f"/user/{q(a.user_id)}/rooms/{q(h.public_room)}/account_data/{kind}") == content
    tags = await a.call("GET", f"/user/{q(a.user_id)}/rooms/{q(h.public_room)}/tags")
    assert tags["tags"] == {"m.favourite": {"order": 0.25}}
    rule = await a.call("GET", "/pushrules/global/content/ported_rule")
    assert (rule["pattern"], rule["actions"]) == ("porting", ["notify"])
    assert (await a.call("GET", "/pushrules/global/override/.m.rule.suppress_notices/enabled"))["enabled"] is False
    pushers = (await a.call("GET", "/pushers"))["pushers"]
    assert [p["pushkey"] for p in pushers] == [h.pusher_key]

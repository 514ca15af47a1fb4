"""import-synapse, end-to-end encryption: device keys, one-time and fallback keys,
cross-signing keys and signatures, key backups, and the to-device messages still waiting
for a device (or for another server). The server only stores these; nothing is decrypted.

Device and cross-signing keys go through our key store (each new one is a device list
change, as an upload would be); the rest is inserted as rows.
"""

from __future__ import annotations

import json

from ..storage.e2e_keys import E2EKeyStore, StoredSignature
from ..storage.state import next_position
from .synapse_import import ImportContext, insert_rows, json_text, json_value


async def import_e2ee(ctx: ImportContext) -> None:
    devices = {(r[0], r[1]) for r in await ctx.target.fetch("SELECT user_id, device_id FROM devices")}
    await _device_keys(ctx, devices)
    await _cross_signing(ctx)
    await _key_backups(ctx)
    await _to_device(ctx, devices)


async def _device_keys(ctx: ImportContext, devices: set[tuple[str, str]]) -> None:
    store = E2EKeyStore(ctx.target)
    src = ctx.source
    n = 0
    for user_id, device_id, key_json in await src.fetch(
            "SELECT user_id, device_id, key_json FROM e2e_device_keys_json ORDER BY user_id, device_id"):
        keys = json_value(key_json)
        if (user_id, device_id) in devices and isinstance(keys, dict):
            await store.set_device_keys(user_id, device_id, keys)
            n += 1
    ctx.count("device keys", n)
    otks: dict[tuple[str, str], list[tuple[str, str, object]]] = {}
    for user_id, device_id, algorithm, key_id, key_json in await src.fetch(
            "SELECT user_id, device_id, algorithm, key_id, key_json FROM e2e_one_time_keys_json"):
        if (user_id, device_id) in devices:
            otks.setdefault((user_id, device_id), []).append((algorithm, key_id, json_value(key_json)))
    for (user_id, device_id), keys in sorted(otks.items()):
        await store.add_one_time_keys(user_id, device_id, keys)
    ctx.count("one-time keys", sum(len(k) for k in otks.values()))
    fallback = [(r[0], r[1], r[2], r[3], json_text(r[4]), bool(r[5])) for r in await src.fetch(
        "SELECT user_id, device_id, algorithm, key_id, key_json, used FROM e2e_fallback_keys_json")
        if (r[0], r[1]) in devices]
    await insert_rows(ctx, "e2e_fallback_keys", ("user_id", "device_id", "algorithm", "key_id", "key_json", "used"),
                      fallback, what="fallback keys")


async def _cross_signing(ctx: ImportContext) -> None:
    """Synapse keeps every cross-signing key a user ever had (by ``stream_id``): the
    latest of each type is the one in use."""
    store = E2EKeyStore(ctx.target)
    latest: dict[str, dict[str, dict]] = {}
    for user_id, key_type, key_data in await ctx.source.fetch(
            "SELECT user_id, keytype, keydata FROM e2e_cross_signing_keys ORDER BY stream_id"):
        if ctx.is_local(user_id):
            latest.setdefault(user_id, {})[key_type] = json_value(key_data)
    for user_id, keys in sorted(latest.items()):
        have = (await store.get_cross_signing_keys([user_id]))[user_id]
        if have != keys:
            await store.set_cross_signing_keys(user_id, keys)
    ctx.count("cross-signing keys", sum(len(k) for k in latest.values()))
    sigs = [StoredSignature(target_user_id=r[2], target_key_id=r[3], signer_user_id=r[0], signer_key_id=r[1],
                            signature=r[4]) for r in await ctx.source.fetch(
        "SELECT user_id, key_id, target_user_id, target_device_id, signature FROM e2e_cross_signing_signatures")
        if ctx.is_local(r[0])]
    await store.add_signatures(sigs)
    ctx.count("cross-signing signatures", len(sigs))


async def _key_backups(ctx: ImportContext) -> None:
    src = ctx.source
    versions = await src.fetch("SELECT user_id, version, algorithm, auth_data, etag, deleted FROM e2e_room_keys_versions")
    await insert_rows(ctx, "e2e_room_keys_versions", ("user_id", "version", "algorithm", "auth_data", "etag", "deleted"),
                      [(r[0], int(r[1]), r[2], json_text(r[3]), int(r[4] or 0), bool(r[5])) for r in versions],
                      what="key backup versions")
    keys = await src.fetch("SELECT user_id, version, room_id, session_id, first_message_index, forwarded_count,"
                           " is_verified, session_data FROM e2e_room_keys")
    await insert_rows(ctx, "e2e_room_keys", ("user_id", "version", "room_id", "session_id", "first_message_index",
                                             "forwarded_count", "is_verified", "session_data"),
                      [(r[0], int(r[1]), r[2], r[3], int(r[4] or 0), int(r[5] or 0), bool(r[6]), json_text(r[7]))
                       for r in keys], what="backed-up room keys")


async def _to_device(ctx: ImportContext, devices: set[tuple[str, str]]) -> None:
    """Messages waiting for local devices keep their order, at new positions of our
    to-device stream; those waiting for other servers go to our federation outbox."""
    rows = [(r[0], r[1], json_text(r[2])) for r in await ctx.source.fetch(
        "SELECT user_id, device_id, message_json FROM device_inbox ORDER BY stream_id") if (r[0], r[1]) in devices]
    have = {(r[0], r[1], r[2]) for r in await ctx.target.fetch(
        "SELECT user_id, device_id, message_json FROM device_inbox")}
    rows = [r for r in rows if r not in have]
    if rows:
        async with ctx.target.transaction() as txn:
            last = await next_position(txn, "to_device", len(rows))
            await txn.executemany(
                "INSERT INTO device_inbox (user_id, device_id, stream_id, message_json) VALUES ($1, $2, $3, $4)",
                [(u, d, last - len(rows) + 1 + i, m) for i, (u, d, m) in enumerate(rows)])
    ctx.count("to-device messages", len(rows))
    outbox = []
    for destination, queued_ts, messages in await ctx.source.fetch(
            "SELECT destination, queued_ts, messages_json FROM device_federation_outbox ORDER BY stream_id"):
        content = json_value(messages)
        if isinstance(content, dict) and isinstance(content.get("message_id"), str):
            outbox.append((destination, content["message_id"], json.dumps(content, separators=(",", ":")),
                           int(queued_ts or ctx.now_ms)))
    await insert_rows(ctx, "device_federation_outbox", ("destination", "message_id", "content", "created_ts"),
                      outbox, what="to-device messages for other servers")

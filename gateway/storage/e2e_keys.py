"""End-to-end encryption keys: device keys, one-time and fallback keys, cross-signing keys
and signatures, the device list stream, remote device list caches and to-device inboxes.

Spec: https://spec.matrix.org/latest/client-server-api/#end-to-end-encryption and
https://spec.matrix.org/latest/client-server-api/#send-to-device-messaging
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .database import Connection, Database
from .state import _placeholders, next_position

#: ``device_id`` of device list rows that stand for a cross-signing key change.
CROSS_SIGNING = ""
#: ``device_id`` prefix of rows only one user sees (``seen_only_by``): a change of a
#: user-signing key, or of the signatures a user made with it, is visible to that user
#: alone (spec: "Key and signature security").
PRIVATE = "\x01"


def seen_only_by(viewer: str) -> str:
    return PRIVATE + viewer


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class DeviceKeys:
    user_id: str
    device_id: str
    keys: dict[str, Any] | None
    display_name: str | None


@dataclass(frozen=True)
class StoredSignature:
    target_user_id: str
    target_key_id: str
    signer_user_id: str
    signer_key_id: str
    signature: str


async def add_device_list_change(conn: Connection, user_id: str, device_ids: Sequence[str]) -> int:
    """One position in the device list stream for changes of ``user_id``'s devices (or of
    their cross-signing keys: ``CROSS_SIGNING``); call inside a transaction."""
    pos = await next_position(conn, "device_lists")
    await conn.executemany("INSERT INTO device_lists_stream (stream_id, user_id, device_id) VALUES ($1, $2, $3)",
                           [(pos, user_id, d) for d in device_ids])
    return pos


class E2EKeyStore:
    def __init__(self, db: Database):
        self.db = db

    # --- device keys -----------------------------------------------------------------

    async def set_device_keys(self, user_id: str, device_id: str, keys: dict[str, Any]) -> int | None:
        """Store a local device's keys; the device list position if they changed."""
        raw = dumps(keys)
        async with self.db.transaction() as txn:
            old = await txn.fetchval("SELECT key_json FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2",
                                     user_id, device_id)
            if old is not None and json.loads(old) == keys:
                return None
            await txn.execute(
                "INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)"
                " ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = EXCLUDED.key_json",
                user_id, device_id, raw)
            return await add_device_list_change(txn, user_id, [device_id])

    async def get_device_keys(self, user_ids: Sequence[str]) -> dict[str, dict[str, DeviceKeys]]:
        """user -> device -> keys (local display names from ``devices``), in one query."""
        out: dict[str, dict[str, DeviceKeys]] = {u: {} for u in user_ids}
        if not user_ids:
            return out
        rows = await self.db.fetch(
            "SELECT k.user_id, k.device_id, k.key_json, COALESCE(d.display_name, k.display_name)"
            " FROM e2e_device_keys k LEFT JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id"
            f" WHERE k.user_id IN ({_placeholders(len(user_ids))})",
            *user_ids)
        for r in rows:
            out[r[0]][r[1]] = DeviceKeys(r[0], r[1], None if r[2] is None else json.loads(r[2]), r[3])
        return out

    async def delete_devices(self, user_id: str, device_ids: Sequence[str]) -> int | None:
        """A local user's devices are gone: their keys and inbox go, the device list changes."""
        if not device_ids:
            return None
        async with self.db.transaction() as txn:
            for table in ("e2e_device_keys", "e2e_one_time_keys", "e2e_fallback_keys", "device_inbox"):
                await txn.executemany(f"DELETE FROM {table} WHERE user_id = $1 AND device_id = $2",
                                      [(user_id, d) for d in device_ids])
            await txn.executemany("DELETE FROM e2e_signatures WHERE target_user_id = $1 AND target_key_id = $2",
                                  [(user_id, d) for d in device_ids])
            return await add_device_list_change(txn, user_id, list(device_ids))

    # --- one-time and fallback keys ---------------------------------------------------

    async def add_one_time_keys(self, user_id: str, device_id: str,
                                keys: Sequence[tuple[str, str, Any]]) -> list[str]:
        """Add (algorithm, key_id, key) triples; a key ID already stored with other content
        is refused (returned, nothing stored), with the same content it is a no-op."""
        if not keys:
            return []
        async with self.db.transaction() as txn:
            rows = await txn.fetch(
                "SELECT algorithm, key_id, key_json FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2"
                f" AND key_id IN ({_placeholders(len(keys), 3)})",
                user_id, device_id, *[k[1] for k in keys])
            existing = {(r[0], r[1]): json.loads(r[2]) for r in rows}
            conflicts = [f"{a}:{k}" for a, k, v in keys if (a, k) in existing and existing[(a, k)] != v]
            if conflicts:
                return conflicts
            new = [(user_id, device_id, a, k, dumps(v)) for a, k, v in keys if (a, k) not in existing]
            if new:
                await txn.executemany(
                    "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json)"
                    " VALUES ($1, $2, $3, $4, $5)", new)
        return []

    async def count_one_time_keys(self, user_id: str, device_id: str) -> dict[str, int]:
        rows = await self.db.fetch(
            "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2"
            " GROUP BY algorithm", user_id, device_id)
        return {r[0]: int(r[1]) for r in rows}

    async def get_key_counts(self, user_id: str, device_id: str) -> tuple[dict[str, int], list[str]]:
        """One-time key counts per algorithm and the unused fallback key algorithms, in one
        query (every /sync asks)."""
        rows = await self.db.fetch(
            "SELECT algorithm, COUNT(*), 0 FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2"
            " GROUP BY algorithm UNION ALL SELECT algorithm, 0, 1 FROM e2e_fallback_keys"
            " WHERE user_id = $1 AND device_id = $2 AND used = FALSE", user_id, device_id)
        counts = {r[0]: int(r[1]) for r in rows if int(r[2]) == 0}
        return counts, sorted(r[0] for r in rows if int(r[2]) == 1)

    async def set_fallback_key(self, user_id: str, device_id: str, algorithm: str, key_id: str, key: Any) -> None:
        """The device's fallback key for ``algorithm`` (a new one is unused again)."""
        raw = dumps(key)
        async with self.db.transaction() as txn:
            old = await txn.fetchrow(
                "SELECT key_id, key_json FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2"
                " AND algorithm = $3", user_id, device_id, algorithm)
            if old is not None and old[0] == key_id and json.loads(old[1]) == key:
                return
            await txn.execute(
                "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)"
                " VALUES ($1, $2, $3, $4, $5, FALSE) ON CONFLICT (user_id, device_id, algorithm) DO UPDATE"
                " SET key_id = EXCLUDED.key_id, key_json = EXCLUDED.key_json, used = FALSE",
                user_id, device_id, algorithm, key_id, raw)

    async def get_unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        rows = await self.db.fetch(
            "SELECT algorithm FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = FALSE"
            " ORDER BY algorithm", user_id, device_id)
        return [r[0] for r in rows]

    async def claim_keys(self, wanted: Sequence[tuple[str, str, str]]) -> dict[str, dict[str, dict[str, Any]]]:
        """Claim one key per (user, device, algorithm): a one-time key (deleted in the same
        transaction that picked it, so no two claims ever get the same one), else the
        fallback key (marked used). Returns user -> device -> {"algorithm:key_id": key}."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        if not wanted:
            return out
        if self.db.engine == "postgres":
            rows = await self._claim_postgres(wanted)
        else:
            rows = await self._claim_sqlite(wanted)
        for user_id, device_id, algorithm, key_id, raw in rows:
            out.setdefault(user_id, {}).setdefault(device_id, {})[f"{algorithm}:{key_id}"] = json.loads(raw)
        return out

    async def _claim_postgres(self, wanted: Sequence[tuple[str, str, str]]) -> list[tuple]:
        """Two statements for any number of devices: concurrent claims skip the one-time
        keys another claim holds (``SKIP LOCKED``) and take the next."""
        us, ds, algs = ([w[i] for w in wanted] for i in range(3))
        async with self.db.transaction() as txn:
            rows = [tuple(r) for r in await txn.fetch(
                "WITH picked AS (SELECT k.user_id, k.device_id, k.algorithm, k.key_id"
                " FROM unnest($1::text[], $2::text[], $3::text[]) AS w(u, d, a) CROSS JOIN LATERAL"
                " (SELECT user_id, device_id, algorithm, key_id FROM e2e_one_time_keys o WHERE o.user_id = w.u"
                "  AND o.device_id = w.d AND o.algorithm = w.a ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED) k)"
                " DELETE FROM e2e_one_time_keys o USING picked p WHERE o.user_id = p.user_id"
                " AND o.device_id = p.device_id AND o.algorithm = p.algorithm AND o.key_id = p.key_id"
                " RETURNING o.user_id, o.device_id, o.algorithm, o.key_id, o.key_json", us, ds, algs)]
            got = {(r[0], r[1], r[2]) for r in rows}
            rest = [w for w in wanted if tuple(w) not in got]
            if rest:
                us, ds, algs = ([w[i] for w in rest] for i in range(3))
                rows += [tuple(r) for r in await txn.fetch(
                    "UPDATE e2e_fallback_keys f SET used = TRUE FROM unnest($1::text[], $2::text[], $3::text[])"
                    " AS w(u, d, a) WHERE f.user_id = w.u AND f.device_id = w.d AND f.algorithm = w.a"
                    " RETURNING f.user_id, f.device_id, f.algorithm, f.key_id, f.key_json", us, ds, algs)]
        return rows

    async def _claim_sqlite(self, wanted: Sequence[tuple[str, str, str]]) -> list[tuple]:
        """SQLite: the transaction holds the only connection, so select-then-delete is atomic."""
        rows = []
        async with self.db.transaction() as txn:
            for user_id, device_id, algorithm in wanted:
                row = await txn.fetchrow(
                    "SELECT key_id, key_json FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2"
                    " AND algorithm = $3 ORDER BY key_id LIMIT 1", user_id, device_id, algorithm)
                if row is not None:
                    await txn.execute(
                        "DELETE FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3"
                        " AND key_id = $4", user_id, device_id, algorithm, row[0])
                else:
                    row = await txn.fetchrow(
                        "SELECT key_id, key_json FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2"
                        " AND algorithm = $3", user_id, device_id, algorithm)
                    if row is None:
                        continue
                    await txn.execute(
                        "UPDATE e2e_fallback_keys SET used = TRUE WHERE user_id = $1 AND device_id = $2"
                        " AND algorithm = $3", user_id, device_id, algorithm)
                rows.append((user_id, device_id, algorithm, row[0], row[1]))
        return rows

    # --- cross-signing keys and signatures --------------------------------------------

    async def get_cross_signing_keys(self, user_ids: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """user -> key type ('master', 'self_signing', 'user_signing') -> key."""
        out: dict[str, dict[str, dict[str, Any]]] = {u: {} for u in user_ids}
        if not user_ids:
            return out
        rows = await self.db.fetch(
            "SELECT user_id, key_type, key_json FROM e2e_cross_signing_keys"
            f" WHERE user_id IN ({_placeholders(len(user_ids))})", *user_ids)
        for r in rows:
            out[r[0]][r[1]] = json.loads(r[2])
        return out

    async def set_cross_signing_keys(self, user_id: str, keys: Mapping[str, dict[str, Any]], *,
                                     local: bool = True) -> int | None:
        """Store some of a user's cross-signing keys; the device list position when a
        local user's keys changed."""
        if not keys:
            return None
        async with self.db.transaction() as txn:
            await txn.executemany(
                "INSERT INTO e2e_cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3)"
                " ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = EXCLUDED.key_json",
                [(user_id, t, dumps(k)) for t, k in keys.items()])
            if not local:
                return None
            marker = seen_only_by(user_id) if set(keys) == {"user_signing"} else CROSS_SIGNING
            return await add_device_list_change(txn, user_id, [marker])

    async def add_signatures(self, sigs: Sequence[StoredSignature]) -> None:
        if not sigs:
            return
        async with self.db.transaction() as txn:
            await txn.executemany(
                "INSERT INTO e2e_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (target_user_id, target_key_id, signer_user_id,"
                " signer_key_id) DO UPDATE SET signature = EXCLUDED.signature",
                [(s.target_user_id, s.target_key_id, s.signer_user_id, s.signer_key_id, s.signature) for s in sigs])

    async def get_signatures(self, user_ids: Sequence[str]) -> list[StoredSignature]:
        if not user_ids:
            return []
        rows = await self.db.fetch(
            "SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature FROM e2e_signatures"
            f" WHERE target_user_id IN ({_placeholders(len(user_ids))})", *user_ids)
        return [StoredSignature(*r) for r in rows]

    async def mark_changed(self, user_id: str, device_ids: Sequence[str] = (CROSS_SIGNING,)) -> int:
        """A change of ``user_id``'s keys that is not a stored key (e.g. new signatures)."""
        async with self.db.transaction() as txn:
            return await add_device_list_change(txn, user_id, list(device_ids))

    # --- the device list stream ---------------------------------------------------------

    async def get_position(self, stream: str) -> int:
        value = await self.db.fetchval("SELECT position FROM stream_positions WHERE stream_name = $1", stream)
        return int(value or 0)

    async def get_changed_users(self, since: int, upto: int, viewer: str) -> set[str]:
        """Users with a device list change at positions ``(since, upto]`` that ``viewer``
        may see (a user-signing key change is only the owner's)."""
        if since >= upto:
            return set()
        rows = await self.db.fetch(
            "SELECT DISTINCT user_id FROM device_lists_stream WHERE stream_id > $1 AND stream_id <= $2"
            " AND (device_id NOT LIKE $3 OR device_id = $4)",
            since, upto, PRIVATE + "%", seen_only_by(viewer))
        return {r[0] for r in rows}

    async def get_last_device_stream_ids(self, user_id: str, n: int) -> list[int]:
        """The positions of a local user's last ``n`` device changes (not cross-signing),
        newest first: an m.device_list_update's stream_id and prev_id."""
        rows = await self.db.fetch(
            "SELECT DISTINCT stream_id FROM device_lists_stream WHERE user_id = $1 AND device_id <> $3"
            " AND device_id NOT LIKE $4 ORDER BY stream_id DESC LIMIT $2", user_id, n, CROSS_SIGNING, PRIVATE + "%")
        return [int(r[0]) for r in rows]

    async def get_last_device_stream_id(self, user_id: str, before: int | None = None) -> int | None:
        value = await self.db.fetchval(
            "SELECT MAX(stream_id) FROM device_lists_stream WHERE user_id = $1 AND device_id <> $3"
            " AND device_id NOT LIKE $4 AND stream_id < $2", user_id, before if before is not None else 2**62,
            CROSS_SIGNING, PRIVATE + "%")
        return None if value is None else int(value)

    # --- remote device list caches -------------------------------------------------------

    async def get_remote_cache(self, user_ids: Sequence[str]) -> dict[str, int | None]:
        """Of ``user_ids``, those whose device list we cache -> the stream_id we applied."""
        if not user_ids:
            return {}
        rows = await self.db.fetch(
            f"SELECT user_id, stream_id FROM device_lists_remote_cache WHERE user_id IN ({_placeholders(len(user_ids))})",
            *user_ids)
        return {r[0]: None if r[1] is None else int(r[1]) for r in rows}

    async def replace_remote_devices(self, user_id: str, devices: Sequence[DeviceKeys], stream_id: int | None,
                                     cross_signing: Mapping[str, dict[str, Any]]) -> int:
        """A remote user's whole device list (and cross-signing keys) as fetched; marks it
        changed for local clients. Returns the device list position."""
        async with self.db.transaction() as txn:
            await txn.execute("DELETE FROM e2e_device_keys WHERE user_id = $1", user_id)
            await txn.executemany(
                "INSERT INTO e2e_device_keys (user_id, device_id, key_json, display_name) VALUES ($1, $2, $3, $4)",
                [(user_id, d.device_id, None if d.keys is None else dumps(d.keys), d.display_name) for d in devices])
            await txn.execute("DELETE FROM e2e_cross_signing_keys WHERE user_id = $1", user_id)
            await txn.executemany(
                "INSERT INTO e2e_cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3)",
                [(user_id, t, dumps(k)) for t, k in cross_signing.items()])
            await txn.execute(
                "INSERT INTO device_lists_remote_cache (user_id, stream_id) VALUES ($1, $2)"
                " ON CONFLICT (user_id) DO UPDATE SET stream_id = EXCLUDED.stream_id", user_id, stream_id)
            return await add_device_list_change(txn, user_id, [d.device_id for d in devices] or [CROSS_SIGNING])

    async def apply_remote_device_update(self, user_id: str, device_id: str, keys: dict[str, Any] | None,
                                         display_name: str | None, deleted: bool, stream_id: int) -> int:
        async with self.db.transaction() as txn:
            if deleted:
                await txn.execute("DELETE FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2",
                                  user_id, device_id)
            else:
                await txn.execute(
                    "INSERT INTO e2e_device_keys (user_id, device_id, key_json, display_name) VALUES ($1, $2, $3, $4)"
                    " ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = EXCLUDED.key_json,"
                    " display_name = EXCLUDED.display_name",
                    user_id, device_id, None if keys is None else dumps(keys), display_name)
            await txn.execute("UPDATE device_lists_remote_cache SET stream_id = $2 WHERE user_id = $1",
                              user_id, stream_id)
            return await add_device_list_change(txn, user_id, [device_id])

    async def drop_remote_cache(self, user_ids: Iterable[str]) -> None:
        """Forget remote users' device lists (we no longer share a room: no more updates)."""
        users = list(user_ids)
        if not users:
            return
        async with self.db.transaction() as txn:
            for table in ("device_lists_remote_cache", "e2e_device_keys", "e2e_cross_signing_keys"):
                await txn.executemany(f"DELETE FROM {table} WHERE user_id = $1", [(u,) for u in users])

    async def mark_remote_changed(self, user_id: str) -> int:
        async with self.db.transaction() as txn:
            return await add_device_list_change(txn, user_id, [CROSS_SIGNING])

    # --- to-device messages -------------------------------------------------------------

    async def add_to_device_messages(
        self, txn_key: tuple[str, str, str] | None, messages: Sequence[tuple[str, str, dict[str, Any]]], now_ms: int,
        outbox: Sequence[tuple[str, str, dict[str, Any]]] = (),
    ) -> int | None:
        """Queue (user, device, message) for local devices under one stream position and
        (destination, message_id, EDU content) for other servers; with ``txn_key``
        (sender, device, txn ID) only once: a repeat returns None."""
        async with self.db.transaction() as txn:
            if txn_key is not None:
                n = await txn.execute(
                    "INSERT INTO device_message_txns (sender, device_id, txn_id, created_ts) VALUES ($1, $2, $3, $4)"
                    " ON CONFLICT (sender, device_id, txn_id) DO NOTHING", *txn_key, now_ms)
                if n == 0:
                    return None
            if outbox:
                await txn.executemany(
                    "INSERT INTO device_federation_outbox (destination, message_id, content, created_ts)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (destination, message_id) DO NOTHING",
                    [(d, m, dumps(c), now_ms) for d, m, c in outbox])
            if not messages:
                return 0
            pos = await next_position(txn, "to_device")
            await txn.executemany(
                "INSERT INTO device_inbox (user_id, device_id, stream_id, message_json) VALUES ($1, $2, $3, $4)",
                [(u, d, pos, dumps(m)) for u, d, m in messages])
            return pos

    async def get_to_device_messages(self, user_id: str, device_id: str, after: int, upto: int,
                                     limit: int) -> list[tuple[int, dict[str, Any]]]:
        rows = await self.db.fetch(
            "SELECT stream_id, message_json FROM device_inbox WHERE user_id = $1 AND device_id = $2"
            " AND stream_id > $3 AND stream_id <= $4 ORDER BY stream_id LIMIT $5",
            user_id, device_id, after, upto, limit)
        return [(int(r[0]), json.loads(r[1])) for r in rows]

    async def delete_to_device_messages(self, user_id: str, device_id: str, upto: int) -> int:
        """The client acknowledged everything up to ``upto``."""
        return await self.db.execute(
            "DELETE FROM device_inbox WHERE user_id = $1 AND device_id = $2 AND stream_id <= $3",
            user_id, device_id, upto)

    async def get_federation_outbox(self) -> list[tuple[str, str, dict[str, Any]]]:
        """To-device messages not yet taken by their destination: (destination, message_id, content)."""
        rows = await self.db.fetch(
            "SELECT destination, message_id, content FROM device_federation_outbox"
            " WHERE edu_type = 'm.direct_to_device' ORDER BY created_ts, message_id")
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    async def add_federation_outbox(self, edus: Sequence[tuple[str, str, str, dict[str, Any]]], now_ms: int) -> None:
        """Keep (destination, message_id, edu_type, content) until the destination took it."""
        if edus:
            await self.db.executemany(
                "INSERT INTO device_federation_outbox (destination, message_id, edu_type, content, created_ts)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (destination, message_id) DO NOTHING",
                [(d, m, t, dumps(c), now_ms) for d, m, t, c in edus])

    async def get_federation_outbox_edus(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        """Every EDU kept for a destination: (destination, message_id, edu_type, content),
        oldest first."""
        rows = await self.db.fetch(
            "SELECT destination, message_id, edu_type, content FROM device_federation_outbox"
            " ORDER BY created_ts, message_id")
        return [(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    async def delete_from_federation_outbox(self, destination: str, message_ids: Sequence[str]) -> None:
        if message_ids:
            await self.db.executemany(
                "DELETE FROM device_federation_outbox WHERE destination = $1 AND message_id = $2",
                [(destination, m) for m in message_ids])

    async def delete_old_message_txns(self, before_ms: int, outbox_before_ms: int | None = None) -> None:
        await self.db.execute("DELETE FROM device_message_txns WHERE created_ts < $1", before_ms)
        if outbox_before_ms is not None:
            await self.db.execute("DELETE FROM device_federation_outbox WHERE created_ts < $1", outbox_before_ms)

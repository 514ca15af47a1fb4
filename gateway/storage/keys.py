"""Cache of other servers' signing keys."""

from __future__ import annotations

import json
from typing import Any

from federation.keyring import ServerKey

from .database import Database


class ServerKeyStore:
    def __init__(self, db: Database):
        self.db = db

    async def store_keys(self, keys: list[ServerKey], key_json: dict[str, Any], fetched_ts: int) -> None:
        raw = json.dumps(key_json)
        await self.db.executemany(
            "INSERT INTO server_keys (server_name, key_id, verify_key, valid_until_ts, expired_ts, fetched_ts, key_json)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (server_name, key_id) DO UPDATE SET verify_key = EXCLUDED.verify_key,"
            " valid_until_ts = EXCLUDED.valid_until_ts, expired_ts = EXCLUDED.expired_ts,"
            " fetched_ts = EXCLUDED.fetched_ts, key_json = EXCLUDED.key_json",
            [(k.server_name, k.key_id, k.verify_key, k.valid_until_ts, k.expired_ts, fetched_ts, raw) for k in keys],
        )

    async def get_key(self, server_name: str, key_id: str) -> ServerKey | None:
        row = await self.db.fetchrow(
            "SELECT verify_key, valid_until_ts, expired_ts FROM server_keys WHERE server_name = $1 AND key_id = $2",
            server_name, key_id,
        )
        return ServerKey(server_name, key_id, row[0], row[1], row[2]) if row else None

    async def get_key_docs(self, server_name: str) -> list[dict[str, Any]]:
        """The signed key responses we hold for a server (newest first)."""
        rows = await self.db.fetch(
            "SELECT key_json, MAX(fetched_ts) AS f FROM server_keys WHERE server_name = $1"
            " GROUP BY key_json ORDER BY f DESC",
            server_name,
        )
        return [json.loads(r[0]) for r in rows]

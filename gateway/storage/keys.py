"""Cache of other servers' signing keys (table ``server_keys``), with the signed
response each came in so that we can serve it again as a notary."""

from __future__ import annotations

import json
from typing import Any

from federation.keyring import ServerKey, ServerKeyResponse

from .database import Database

_COLUMNS = "server_name, key_id, verify_key, valid_until_ts, expired_ts, fetched_ts"


def _row_to_key(row: Any) -> ServerKey:
    return ServerKey(row[0], row[1], row[2], row[3], row[4], row[5])


class ServerKeyStore:
    def __init__(self, db: Database):
        self.db = db

    async def store_keys(self, keys: list[ServerKey] | tuple[ServerKey, ...], key_json: dict[str, Any],
                         fetched_ts: int) -> None:
        """Remember ``keys`` (all from the response ``key_json``), replacing what we
        held for the same key IDs: the newest response wins, so a server can end a
        key's validity early."""
        raw = json.dumps(key_json)
        await self.db.executemany(
            f"INSERT INTO server_keys ({_COLUMNS}, key_json) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (server_name, key_id) DO UPDATE SET verify_key = EXCLUDED.verify_key,"
            " valid_until_ts = EXCLUDED.valid_until_ts, expired_ts = EXCLUDED.expired_ts,"
            " fetched_ts = EXCLUDED.fetched_ts, key_json = EXCLUDED.key_json",
            [(k.server_name, k.key_id, k.verify_key, k.valid_until_ts, k.expired_ts,
              k.fetched_ts if k.fetched_ts is not None else fetched_ts, raw) for k in keys],
        )

    async def store_response(self, response: ServerKeyResponse, fetched_ts: int) -> None:
        await self.store_keys(response.keys, response.doc, fetched_ts)

    async def get_key(self, server_name: str, key_id: str) -> ServerKey | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM server_keys WHERE server_name = $1 AND key_id = $2", server_name, key_id,
        )
        return _row_to_key(row) if row else None

    async def get_server_keys(self, server_name: str) -> list[ServerKey]:
        """Every key we hold for a server (current and old)."""
        rows = await self.db.fetch(f"SELECT {_COLUMNS} FROM server_keys WHERE server_name = $1", server_name)
        return [_row_to_key(r) for r in rows]

    async def get_key_docs(self, server_name: str) -> list[dict[str, Any]]:
        """The signed key responses we hold for a server (newest first)."""
        rows = await self.db.fetch(
            "SELECT key_json, MAX(fetched_ts) AS f FROM server_keys WHERE server_name = $1"
            " GROUP BY key_json ORDER BY f DESC",
            server_name,
        )
        return [json.loads(r[0]) for r in rows]

"""Received federation transactions and the answers given (for deduplication).

Spec: https://spec.matrix.org/latest/server-server-api/#transactions
"""

from __future__ import annotations

import json
from typing import Any

from .database import Database

#: Answers are kept this long (a sender retries for much less).
KEEP_MS = 24 * 3600 * 1000


#: Old answers are pruned at most this often (not with every transaction).
PRUNE_EVERY_MS = 60_000


class ReceivedTransactionStore:
    def __init__(self, db: Database):
        self.db = db
        self._pruned_at = 0

    async def get_response(self, origin: str, txn_id: str) -> dict[str, Any] | None:
        raw = await self.db.fetchval(
            "SELECT response_json FROM received_transactions WHERE origin = $1 AND txn_id = $2", origin, txn_id
        )
        return None if raw is None else json.loads(raw)

    async def set_response(self, origin: str, txn_id: str, response: dict[str, Any], now_ms: int) -> None:
        async with self.db.transaction() as txn:
            await txn.execute(
                "INSERT INTO received_transactions (origin, txn_id, response_json, received_ts) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (origin, txn_id) DO NOTHING",
                origin, txn_id, json.dumps(response), now_ms,
            )
            if now_ms - self._pruned_at >= PRUNE_EVERY_MS:
                await txn.execute("DELETE FROM received_transactions WHERE received_ts < $1", now_ms - KEEP_MS)
                self._pruned_at = now_ms

"""Receipts: the latest receipt of each (room, receipt type, user, thread), with
positions in the 'receipts' stream.

Spec: https://spec.matrix.org/latest/client-server-api/#receipts
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .database import Database
from .state import _placeholders, next_position

#: ``thread_id`` of an unthreaded receipt.
UNTHREADED = ""


@dataclass(frozen=True)
class ReceiptRow:
    room_id: str
    receipt_type: str
    user_id: str
    thread_id: str  # '' when unthreaded
    event_id: str
    data: dict[str, Any]
    stream_id: int


_COLUMNS = "room_id, receipt_type, user_id, thread_id, event_id, data, stream_id"


def _row(r: Any) -> ReceiptRow:
    return ReceiptRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), int(r[6]))


class ReceiptStore:
    def __init__(self, db: Database):
        self.db = db

    async def get_current_position(self) -> int:
        value = await self.db.fetchval("SELECT position FROM stream_positions WHERE stream_name = 'receipts'")
        return int(value or 0)

    async def put_receipt(
        self, *, room_id: str, receipt_type: str, user_id: str, thread_id: str, event_id: str,
        event_stream_ordering: int | None, data: dict[str, Any],
    ) -> int | None:
        """Store a receipt unless the user already has one of that kind (and thread) for
        a later event. Returns the new stream position, or None when it was older."""
        async with self.db.transaction() as txn:
            current = await txn.fetchrow(
                "SELECT event_id, event_stream_ordering FROM receipts WHERE room_id = $1 AND receipt_type = $2"
                " AND user_id = $3 AND thread_id = $4",
                room_id, receipt_type, user_id, thread_id,
            )
            if current is not None:
                if current[0] == event_id:
                    return None
                if (event_stream_ordering is not None and current[1] is not None
                        and int(current[1]) > event_stream_ordering):
                    return None
            pos = await next_position(txn, "receipts")
            await txn.execute(
                f"INSERT INTO receipts ({_COLUMNS}, event_stream_ordering) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                " ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET"
                " event_id = excluded.event_id, data = excluded.data, stream_id = excluded.stream_id,"
                " event_stream_ordering = excluded.event_stream_ordering",
                room_id, receipt_type, user_id, thread_id, event_id, json.dumps(data), pos, event_stream_ordering,
            )
        return pos

    async def get_changes(self, *, since: int, upto: int) -> list[ReceiptRow]:
        """Receipts written in ``(since, upto]`` in every room (one indexed range read)."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM receipts WHERE stream_id > $1 AND stream_id <= $2 ORDER BY stream_id",
            since, upto,
        )
        return [_row(r) for r in rows]

    async def get_for_rooms(self, room_ids: Sequence[str], *, upto: int) -> list[ReceiptRow]:
        """Every receipt in these rooms (for an initial sync)."""
        ids = list(room_ids)
        out: list[ReceiptRow] = []
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = await self.db.fetch(
                f"SELECT {_COLUMNS} FROM receipts WHERE stream_id <= $1"
                f" AND room_id IN ({_placeholders(len(chunk), 2)})",
                upto, *chunk,
            )
            out += [_row(r) for r in rows]
        return out

    async def get_read_positions(self, user_id: str, room_ids: Sequence[str]) -> dict[str, int]:
        """room -> position of the event of the user's latest unthreaded read receipt
        (public or private): unread counts start after it."""
        ids = list(room_ids)
        if not ids:
            return {}
        rows = await self.db.fetch(
            "SELECT room_id, MAX(event_stream_ordering) FROM receipts WHERE user_id = $1 AND thread_id = ''"
            " AND receipt_type IN ('m.read', 'm.read.private')"
            f" AND room_id IN ({_placeholders(len(ids), 2)}) GROUP BY room_id",
            user_id, *ids,
        )
        return {r[0]: int(r[1]) for r in rows if r[1] is not None}

    async def get_user_receipt(self, room_id: str, user_id: str, receipt_types: Sequence[str]) -> ReceiptRow | None:
        """The user's latest unthreaded receipt of these types in a room (by event position)."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM receipts WHERE room_id = $1 AND user_id = $2 AND thread_id = ''"
            f" AND receipt_type IN ({_placeholders(len(receipt_types), 3)})"
            " ORDER BY event_stream_ordering DESC",
            room_id, user_id, *receipt_types,
        )
        return _row(rows[0]) if rows else None

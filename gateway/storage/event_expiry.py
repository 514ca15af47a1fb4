"""When self-destructing events expire (MSC2228), and pruning them once they have."""

from __future__ import annotations

from federation.events import PDU

from .database import Database
from .events import encode_pdu_json
from .search import unindex_events


class EventExpiryStore:
    def __init__(self, db: Database):
        self.db = db

    async def add(self, event_id: str, expiry_ts: int) -> None:
        await self.db.execute("INSERT INTO event_expiry (event_id, expiry_ts) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                              event_id, expiry_ts)

    async def next_expiry(self) -> int | None:
        """The earliest expiry still to come (or past, not yet done)."""
        value = await self.db.fetchval("SELECT MIN(expiry_ts) FROM event_expiry")
        return None if value is None else int(value)

    async def due(self, now_ms: int, limit: int = 100) -> list[str]:
        rows = await self.db.fetch("SELECT event_id FROM event_expiry WHERE expiry_ts <= $1"
                                   " ORDER BY expiry_ts, event_id LIMIT $2", now_ms, limit)
        return [r[0] for r in rows]

    async def prune(self, event_id: str, pruned: PDU | None) -> None:
        """Replace the stored event by its pruned form (None: the event is gone) and take
        it out of the search index and of the schedule, in one transaction."""
        async with self.db.transaction() as txn:
            if pruned is not None:
                await unindex_events(txn, [event_id])
                await txn.execute("UPDATE events SET json = $2 WHERE event_id = $1", event_id,
                                  encode_pdu_json(pruned))
            await txn.execute("DELETE FROM event_expiry WHERE event_id = $1", event_id)

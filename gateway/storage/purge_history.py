"""Purging a room's old history: which events go, the rows that go with them, and the
purges' status (Synapse's purge history admin API).

What goes: timeline events (not outliers) deeper in the past than the purge point that are
not state, not a forward extremity, not (unless asked) sent by a local user, and not a
redaction of an event that stays. State events stay: the room's state, auth chains and
memberships do not change. Everything keyed by a purged event's ID goes in the same
transaction (``PURGED_WITH_EVENT``, and the search index); ``KEPT_ON_HISTORY_PURGE`` names
the tables with an ``event_id`` column that keep their rows, so a new table has to be placed
in one of them (tests/gateway/storage/test_purge_history.py checks).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from .database import Database
from .search import unindex_events
from .state import _placeholders

#: Table -> the column naming the purged event, for the rows that go with an event.
PURGED_WITH_EVENT: dict[str, tuple[str, ...]] = {
    "events": ("event_id",),
    "event_edges": ("event_id",),  # its own prev edges; edges to it from kept events mark the gap
    "event_auth_edges": ("event_id",),
    "redactions": ("event_id", "redacts"),
    "event_txn_ids": ("event_id",),
    "event_push_actions": ("event_id",),
    "event_relations": ("event_id",),
    "threads": ("root_id",),
}
#: The full-text search index: its rows go through ``search.unindex_events`` (on SQLite it
#: finds them by the events' positions, so before the events go).
SEARCH_INDEX = "event_search"
#: Tables with an ``event_id`` column whose rows stay: they name state events (never
#: purged), or are records about the event an admin may still need.
KEPT_ON_HISTORY_PURGE = frozenset({
    "event_forward_extremities",  # extremities are never purged
    "state_groups", "state_group_entries", "current_state", "current_state_deltas", "room_memberships",
    "receipts",  # a read position, still meaningful as a position
    "event_reports",  # the report outlives the reported event
})

#: Events deleted per transaction.
BATCH = 500


@dataclass(frozen=True)
class PurgeTask:
    purge_id: str
    room_id: str
    status: str
    error: str | None


class PurgeHistoryStore:
    def __init__(self, db: Database):
        self.db = db

    async def depth_before(self, room_id: str, before_ts: int) -> int | None:
        """The depth of the last timeline event this server received before ``before_ts``
        (received, not claimed: a sender's clock decides nothing here)."""
        depth = await self.db.fetchval(
            "SELECT depth FROM events WHERE room_id = $1 AND received_ts < $2 AND outlier = FALSE"
            " ORDER BY received_ts DESC, stream_ordering DESC LIMIT 1", room_id, before_ts)
        return None if depth is None else int(depth)

    async def events_to_purge(self, room_id: str, depth: int, *, local_server: str | None) -> list[str]:
        """The events a purge below ``depth`` deletes; ``local_server``: keep that
        server's users' events (None: delete them too)."""
        rows = await self.db.fetch(
            "SELECT e.event_id, e.sender, e.type FROM events e WHERE e.room_id = $1 AND e.depth < $2"
            " AND e.outlier = FALSE AND e.state_key IS NULL AND NOT EXISTS"
            " (SELECT 1 FROM event_forward_extremities f WHERE f.room_id = e.room_id AND f.event_id = e.event_id)"
            " ORDER BY e.stream_ordering", room_id, depth)
        doomed = [r[0] for r in rows if local_server is None or r[1].partition(":")[2] != local_server]
        gone = set(doomed)
        redactions = [r[0] for r in rows if r[2] == "m.room.redaction" and r[0] in gone]
        if redactions:
            # A redaction stays while the event it redacts does (else that event comes back).
            targets = await self._redaction_targets(redactions)
            kept_targets = await self._existing([t for t in targets.values() if t not in gone])
            doomed = [e for e in doomed if targets.get(e) not in kept_targets]
        return doomed

    async def _redaction_targets(self, redaction_ids: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(redaction_ids), BATCH):
            chunk = redaction_ids[i:i + BATCH]
            rows = await self.db.fetch(
                f"SELECT event_id, json FROM events WHERE event_id IN ({_placeholders(len(chunk))})", *chunk)
            for event_id, raw in rows:
                pdu = json.loads(raw)
                target = pdu.get("redacts") or (pdu.get("content") or {}).get("redacts")
                if isinstance(target, str):
                    out[event_id] = target
        return out

    async def _existing(self, event_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(event_ids), BATCH):
            chunk = list(event_ids[i:i + BATCH])
            rows = await self.db.fetch(f"SELECT event_id FROM events WHERE event_id IN ({_placeholders(len(chunk))})",
                                       *chunk)
            found |= {r[0] for r in rows}
        return found

    async def delete_events(self, event_ids: Sequence[str]) -> None:
        """Delete events and their rows, ``BATCH`` events per transaction."""
        for i in range(0, len(event_ids), BATCH):
            chunk = list(event_ids[i:i + BATCH])
            ph = _placeholders(len(chunk))
            async with self.db.transaction() as txn:
                await unindex_events(txn, chunk)
                for table, columns in PURGED_WITH_EVENT.items():
                    for column in columns:
                        await txn.execute(f"DELETE FROM {table} WHERE {column} IN ({ph})", *chunk)

    # --- status ----------------------------------------------------------------------

    async def add_task(self, purge_id: str, room_id: str, now_ms: int) -> None:
        await self.db.execute(
            "INSERT INTO purge_history_tasks (purge_id, room_id, status, error, created_ts, updated_ts)"
            " VALUES ($1, $2, 'active', NULL, $3, $3)", purge_id, room_id, now_ms)

    async def finish_task(self, purge_id: str, now_ms: int, error: str | None = None) -> None:
        await self.db.execute(
            "UPDATE purge_history_tasks SET status = $2, error = $3, updated_ts = $4 WHERE purge_id = $1",
            purge_id, "failed" if error is not None else "complete", error, now_ms)

    async def get_task(self, purge_id: str) -> PurgeTask | None:
        row = await self.db.fetchrow(
            "SELECT purge_id, room_id, status, error FROM purge_history_tasks WHERE purge_id = $1", purge_id)
        return None if row is None else PurgeTask(row[0], row[1], row[2], row[3])

    async def forget_tasks(self, finished_before_ms: int) -> None:
        await self.db.execute("DELETE FROM purge_history_tasks WHERE status <> 'active' AND updated_ts < $1",
                              finished_before_ms)

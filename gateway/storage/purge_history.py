"""Purging a room's old history: which events go, the rows that go with them, and the
purges' status (Synapse's purge history admin API).

Every event deeper in the past than the purge point leaves the room's timeline, except
the forward extremities (the room keeps its latest events). Of those, the ones deleted
are the messages (not state) of remote users, and of local users too when asked, except
a redaction of an event that stays (else that event would come back unredacted); the
others (the state, the local users' messages: perhaps the only copies) stay as outliers,
as Synapse keeps them: known by ID, out of /sync, /messages, search, threads and unread
counts, and backfilled into the timeline again if another server serves them. The room's
state, auth chains and memberships do not change.

Everything keyed by a deleted event's ID goes in the same transaction
(``PURGED_WITH_EVENT``, and the search index); ``KEPT_ON_HISTORY_PURGE`` names the tables
with an ``event_id`` column that keep their rows, so a new table has to be placed in one
of them (tests/gateway/storage/test_purge_history.py checks). An event that leaves the
timeline but stays loses what only timeline events have (``CLEARED_ON_HIDE``, the search
index).
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
    "event_expiry": ("event_id",),  # a deleted event has nothing left to self-destruct
}
#: What only timeline events have: cleared for those a purge keeps out of the timeline.
CLEARED_ON_HIDE: dict[str, tuple[str, ...]] = {
    "event_push_actions": ("event_id",),  # unread counts: nobody can read them any more
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
class PurgePlan:
    """What a purge does to the events below its point."""

    #: Deleted, with their rows.
    delete: list[str]
    #: Kept as outliers, out of the timeline.
    hide: list[str]


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
        """The purge point for a time: the depth of the room's first timeline event this
        server received at or after ``before_ts`` (of its latest event when none was),
        so that what came before goes (received, not claimed: a sender's clock decides
        nothing here). None when no event of the room is that old."""
        timeline = "room_id = $1 AND outlier = FALSE"
        if await self.db.fetchval(f"SELECT 1 FROM events WHERE {timeline} AND received_ts < $2 LIMIT 1",
                                  room_id, before_ts) is None:
            return None
        depth = await self.db.fetchval(
            f"SELECT depth FROM events WHERE {timeline} AND received_ts >= $2"
            " ORDER BY received_ts, stream_ordering LIMIT 1", room_id, before_ts)
        if depth is None:
            depth = await self.db.fetchval(
                f"SELECT depth FROM events WHERE {timeline} ORDER BY stream_ordering DESC LIMIT 1", room_id)
        return int(depth)

    async def events_to_purge(self, room_id: str, depth: int, *, local_server: str | None) -> PurgePlan:
        """What a purge below ``depth`` does; ``local_server``: keep that server's users'
        messages (None: delete them too). Outliers already out of the timeline (from an
        earlier purge, or a join's auth chain) are deleted by the same rule, never hidden."""
        rows = await self.db.fetch(
            "SELECT e.event_id, e.sender, e.type, e.state_key IS NOT NULL, e.outlier FROM events e"
            " WHERE e.room_id = $1 AND e.depth < $2 AND NOT EXISTS"
            " (SELECT 1 FROM event_forward_extremities f WHERE f.room_id = e.room_id AND f.event_id = e.event_id)"
            " ORDER BY e.stream_ordering", room_id, depth)
        deletable = {r[0] for r in rows
                     if not r[3] and (local_server is None or r[1].partition(":")[2] != local_server)}
        redactions = [r[0] for r in rows if r[2] == "m.room.redaction" and r[0] in deletable]
        if redactions:
            # A redaction stays while the event it redacts does (else that event comes back).
            targets = await self._redaction_targets(redactions)
            kept_targets = await self._existing([t for t in targets.values() if t not in deletable])
            deletable -= {e for e in redactions if targets.get(e) in kept_targets}
        return PurgePlan(delete=[r[0] for r in rows if r[0] in deletable],
                         hide=[r[0] for r in rows if r[0] not in deletable and not r[4]])

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
        await self._clear_in_batches(event_ids, PURGED_WITH_EVENT)

    async def hide_events(self, event_ids: Sequence[str]) -> None:
        """Take events out of the timeline (outliers from now on), ``BATCH`` per
        transaction, with what only timeline events have."""
        await self._clear_in_batches(event_ids, CLEARED_ON_HIDE,
                                     then="UPDATE events SET outlier = TRUE WHERE event_id IN ({ph})")

    async def _clear_in_batches(self, event_ids: Sequence[str], tables: dict[str, tuple[str, ...]], *,
                                then: str | None = None) -> None:
        """For each ``BATCH`` of ``event_ids``, in one transaction: their search index rows
        and the rows of ``tables`` naming them go, then ``then`` (``{ph}``: the IDs) runs."""
        for i in range(0, len(event_ids), BATCH):
            chunk = list(event_ids[i:i + BATCH])
            ph = _placeholders(len(chunk))
            async with self.db.transaction() as txn:
                await unindex_events(txn, chunk)
                for table, columns in tables.items():
                    for column in columns:
                        await txn.execute(f"DELETE FROM {table} WHERE {column} IN ({ph})", *chunk)
                if then is not None:
                    await txn.execute(then.format(ph=ph), *chunk)

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

"""Relationships between events (``event_relations``): written with the events, read
for ``/relations``, bundled aggregations, ``/threads`` and the duplicate-annotation check.

A row exists for every stored event whose content declares a relationship
(``federation.relations.relation_of``), written with it (``events.write_relations``)
unless it was rejected or soft-failed. Whether a child counts is decided when reading
(``_COUNTS``): it must be a timeline event of the room (not an outlier, rejected or
soft-failed: backfilled events become timeline events in place) and not redacted, so a
redaction breaks the relationship as the spec asks, whenever it arrives.

Spec: https://spec.matrix.org/latest/client-server-api/#forming-relationships-between-events
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from federation.relations import ANNOTATION, REFERENCE, REPLACE, THREAD

from .database import Database
from .events import _EVENT_COLUMNS, EventStore, StoredEvent, stream_range
from .state import _placeholders

#: The child counts: in the timeline and not redacted (``r`` relation, ``e`` its event).
_COUNTS = ("e.outlier = FALSE AND e.rejected_reason IS NULL AND e.soft_failed = FALSE"
           " AND NOT EXISTS (SELECT 1 FROM redactions rd WHERE rd.redacts = r.event_id)")
#: Event types whose visibility is not only their state group's (``filter_visible``).
_SPECIAL_TYPES = "('m.room.history_visibility', 'm.room.member')"


@dataclass(frozen=True)
class EditCandidate:
    parent_id: str
    event_id: str
    room_id: str
    sender: str
    type: str
    origin_server_ts: int


@dataclass(frozen=True)
class ThreadSummary:
    room_id: str
    count: int
    #: Position of the newest counted reply.
    latest_position: int
    participated: bool


class _Args:
    """Numbered placeholders as the arguments are added."""

    def __init__(self, *first: Any):
        self.values: list[Any] = list(first)

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"

    def many(self, values: Sequence[Any]) -> str:
        return ", ".join(self(v) for v in values)


class RelationStore:
    def __init__(self, db: Database, events: EventStore):
        self.db = db
        self.events = events

    # --- /relations -----------------------------------------------------------------

    async def get_children(
        self, room_id: str, parent_id: str, *, rel_type: str | None = None, event_type: str | None = None,
        from_pos: int | None = None, to_pos: int | None = None, backwards: bool = True, limit: int,
        depth: int = 1, not_senders: Sequence[str] = (),
    ) -> list[StoredEvent]:
        """Children of ``parent_id`` in ``room_id`` that count, up to ``depth`` relationships
        away (each one matching ``rel_type`` and ``event_type`` when given), in stream
        order: backwards ``<= from_pos`` and ``> to_pos`` newest first, forwards
        ``> from_pos`` and ``<= to_pos`` oldest first (the /messages token rules)."""
        a = _Args(parent_id, room_id)
        match = ""
        if rel_type is not None:
            match += f" AND r.rel_type = {a(rel_type)}"
        if event_type is not None:
            match += f" AND r.type = {a(event_type)}"
        if not_senders:
            match += f" AND r.sender NOT IN ({a.many(not_senders)})"
        walk = (
            "WITH RECURSIVE rel(event_id, depth) AS ("
            " SELECT r.event_id, 1 FROM event_relations r JOIN events e ON e.event_id = r.event_id"
            f" WHERE r.relates_to_id = $1 AND r.room_id = $2{match} AND {_COUNTS}"
            " UNION ALL"
            " SELECT r.event_id, rel.depth + 1 FROM rel JOIN event_relations r ON r.relates_to_id = rel.event_id"
            " JOIN events e ON e.event_id = r.event_id"
            f" WHERE rel.depth < {a(int(depth))} AND r.room_id = $2{match} AND {_COUNTS}"
            ")"
        )
        where = ["e.event_id IN (SELECT event_id FROM rel)", "e.event_id <> $1",
                 *stream_range(backwards, from_pos, to_pos, a, "e.stream_ordering")]
        order = "DESC" if backwards else "ASC"
        rows = await self.db.fetch(
            f"{walk} SELECT {_EVENT_COLUMNS} FROM events e JOIN rooms r ON r.room_id = e.room_id"
            f" WHERE {' AND '.join(where)} ORDER BY e.stream_ordering {order} LIMIT {a(int(limit))}",
            *a.values,
        )
        return [self.events._row_to_event(r) for r in rows]

    # --- bundled aggregations ---------------------------------------------------------

    async def _counted_children(self, columns: str, parent_ids: Sequence[str], rel_type: str,
                                not_senders: Sequence[str], tail: str = "", column_args: Sequence[Any] = ()) -> list[Any]:
        """Rows of ``columns`` (``r`` relation, ``e`` event; ``column_args`` are its
        ``$1``...) of the parents' counted children of one relationship type, leaving
        out ``not_senders``."""
        a = _Args(*column_args)
        ids = a.many(parent_ids)
        ignore = f" AND r.sender NOT IN ({a.many(not_senders)})" if not_senders else ""
        return await self.db.fetch(
            f"SELECT {columns} FROM event_relations r JOIN events e ON e.event_id = r.event_id"
            f" WHERE r.relates_to_id IN ({ids}) AND r.rel_type = {a(rel_type)}{ignore} AND {_COUNTS}{tail}",
            *a.values,
        )

    async def get_edit_candidates(self, parent_ids: Sequence[str],
                                  not_senders: Sequence[str] = ()) -> list[EditCandidate]:
        """Every counted ``m.replace`` child of the parents (validity is the caller's)."""
        if not parent_ids:
            return []
        rows = await self._counted_children(
            "r.relates_to_id, r.event_id, r.room_id, r.sender, r.type, e.origin_server_ts", parent_ids, REPLACE,
            not_senders)
        return [EditCandidate(r[0], r[1], r[2], r[3], r[4], int(r[5])) for r in rows]

    async def get_thread_summaries(self, parent_ids: Sequence[str], user_id: str,
                                   not_senders: Sequence[str] = ()) -> dict[str, ThreadSummary]:
        """Per thread root: the counted replies (room, count, newest position) and whether
        ``user_id`` sent one of them, in one query however many roots."""
        if not parent_ids:
            return {}
        rows = await self._counted_children(
            "r.relates_to_id, r.room_id, COUNT(*), MAX(e.stream_ordering),"
            " MAX(CASE WHEN r.sender = $1 THEN 1 ELSE 0 END)", parent_ids, THREAD, not_senders,
            " GROUP BY r.relates_to_id, r.room_id", column_args=[user_id])
        return {r[0]: ThreadSummary(r[1], int(r[2]), int(r[3]), bool(r[4])) for r in rows}

    async def get_thread_reply_groups(self, parent_ids: Sequence[str], not_senders: Sequence[str] = (),
                                      ) -> list[tuple[str, str, int | None, int]]:
        """(root ID, reply room, state group, replies) of the roots' counted ordinary thread replies
        (history visibility and membership events, whose visibility has rules of its own,
        are in ``get_thread_special_replies``): what a requester's count is made of."""
        if not parent_ids:
            return []
        rows = await self._counted_children(
            "r.relates_to_id, r.room_id, e.state_group, COUNT(*)", parent_ids, THREAD, not_senders,
            f" AND r.type NOT IN {_SPECIAL_TYPES} GROUP BY r.relates_to_id, r.room_id, e.state_group")
        return [(r[0], r[1], None if r[2] is None else int(r[2]), int(r[3])) for r in rows]

    async def get_thread_special_replies(self, parent_ids: Sequence[str],
                                         not_senders: Sequence[str] = ()) -> list[tuple[str, str, str]]:
        """(root ID, reply room, reply ID) of the counted thread replies left out of
        ``get_thread_reply_groups``."""
        if not parent_ids:
            return []
        rows = await self._counted_children("r.relates_to_id, r.room_id, r.event_id", parent_ids, THREAD,
                                            not_senders, f" AND r.type IN {_SPECIAL_TYPES}")
        return [(r[0], r[1], r[2]) for r in rows]

    async def get_references(self, parent_ids: Sequence[str],
                             not_senders: Sequence[str] = ()) -> list[tuple[str, str, str]]:
        """(parent ID, child ID, child's room) of counted ``m.reference`` children, oldest first."""
        if not parent_ids:
            return []
        rows = await self._counted_children("r.relates_to_id, r.event_id, r.room_id", parent_ids, REFERENCE,
                                            not_senders, " ORDER BY e.stream_ordering")
        return [(r[0], r[1], r[2]) for r in rows]

    # --- /threads -----------------------------------------------------------------------

    async def get_thread_roots(
        self, room_id: str, *, limit: int, before: int | None = None, participant: str | None = None,
    ) -> list[tuple[str, int]]:
        """(root ID, newest reply's position) of the room's threads, most recently active
        first (an index range of ``threads``; positions are unique, a reply being in one
        thread); ``before`` continues below a page's last position; ``participant`` keeps
        threads the user started or replied to. Roots must be timeline events of the room
        (a relationship across rooms is no thread): others are skipped."""
        out: list[tuple[str, int]] = []
        while len(out) < limit:
            a = _Args(room_id)
            where = ["t.room_id = $1"]
            if before is not None:
                where.append(f"t.latest_position < {a(before)}")
            if participant is not None:
                u = a(participant)
                where.append(f"(EXISTS (SELECT 1 FROM events root WHERE root.event_id = t.root_id AND root.sender = {u})"
                             " OR EXISTS (SELECT 1 FROM event_relations r JOIN events e ON e.event_id = r.event_id"
                             f" WHERE r.relates_to_id = t.root_id AND r.rel_type = '{THREAD}' AND r.room_id = $1"
                             f" AND r.sender = {u} AND {_COUNTS}))")
            batch = limit - len(out) + 10
            rows = await self.db.fetch(
                f"SELECT t.root_id, t.latest_position FROM threads t WHERE {' AND '.join(where)}"
                f" ORDER BY t.latest_position DESC LIMIT {a(batch)}",
                *a.values,
            )
            metas = await self.events.get_event_meta([r[0] for r in rows])
            for root_id, position in rows:
                m = metas.get(root_id)
                if m is not None and m.room_id == room_id and not m.outlier and m.rejected_reason is None \
                        and not m.soft_failed:
                    out.append((root_id, int(position)))
                    if len(out) == limit:
                        break
            if len(rows) < batch:
                break
            before = int(rows[-1][1])
        return out

    # --- sending ----------------------------------------------------------------------

    async def has_annotation(self, parent_id: str, sender: str, event_type: str, key: str) -> bool:
        """Whether ``sender`` already has a counted annotation of ``parent_id`` with this
        event type and key (spec "Avoiding duplicate annotations")."""
        row = await self.db.fetchrow(
            "SELECT 1 FROM event_relations r JOIN events e ON e.event_id = r.event_id"
            f" WHERE r.relates_to_id = $1 AND r.rel_type = '{ANNOTATION}' AND r.sender = $2 AND r.type = $3"
            f" AND r.aggregation_key = $4 AND {_COUNTS} LIMIT 1",
            parent_id, sender, event_type, key,
        )
        return row is not None

    async def get_parents(self, event_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Child ID -> (parent ID, rel_type) for the events among ``event_ids`` with a relationship."""
        if not event_ids:
            return {}
        rows = await self.db.fetch(
            "SELECT event_id, relates_to_id, rel_type FROM event_relations"
            f" WHERE event_id IN ({_placeholders(len(event_ids))})",
            *event_ids,
        )
        return {r[0]: (r[1], r[2]) for r in rows}

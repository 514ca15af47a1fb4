"""The reads /sync needs, batched over a user's rooms so that a sync costs a handful of
queries however many rooms the user is in.

Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3sync
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .database import Database
from .events import _EVENT_COLUMNS, EventStore, StoredEvent
from .state import _placeholders

#: The named counters a sync token carries (besides typing, which lives in memory).
STREAMS = ("events", "account_data", "receipts", "to_device", "device_lists", "presence")
#: Rooms whose timeline pages one statement reads (SQLite allows 500 terms in a UNION).
TIMELINE_PAGES_PER_QUERY = 100
#: Below every events-stream position (backfilled events have negative ones).
_BEFORE_ALL = -(2**62)


@dataclass(frozen=True)
class UserMembership:
    """One of the user's memberships, with the head of the room's timeline."""

    room_id: str
    membership: str
    event_id: str
    stream_ordering: int
    forgotten: bool
    room_head: int
    current_state_group: int | None = None
    #: Where the room got its full state after a partial join (None: never partial).
    full_state_at: int | None = None
    #: The room's state is still partial (a faster join whose resync is not done).
    partial: bool = False


@dataclass(frozen=True)
class TimelineEvent:
    """A timeline event with what serialising it needs: the requesting device's
    transaction ID (if it sent it) and the redaction that applies (if any)."""

    event: StoredEvent
    txn_id: str | None
    redacted_by: str | None


@dataclass(frozen=True)
class TimelineFilter:
    """What a timeline query keeps (types may use ``*``)."""

    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()
    #: Users the requester ignores: their events are left out, but for state events.
    ignored: tuple[str, ...] = ()


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


class _Where:
    def __init__(self, args: list[Any]):
        self.args = args
        self.parts: list[str] = []

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def type_condition(self, patterns: Sequence[str]) -> str:
        exact = [p for p in patterns if "*" not in p]
        wild = [p for p in patterns if "*" in p]
        ors = []
        if exact:
            ors.append(f"type IN ({', '.join(self.arg(t) for t in exact)})")
        ors += [f"type LIKE {self.arg(_like(p))} ESCAPE '\\'" for p in wild]
        return "(" + " OR ".join(ors) + ")" if ors else "FALSE"

    def add_filter(self, flt: TimelineFilter) -> bool:
        """Add the filter's conditions; False if nothing can match."""
        if flt.types is not None:
            if not flt.types:
                return False
            self.parts.append(self.type_condition(flt.types))
        if flt.not_types:
            self.parts.append("NOT " + self.type_condition(flt.not_types))
        if flt.senders is not None:
            if not flt.senders:
                return False
            self.parts.append(f"sender IN ({', '.join(self.arg(s) for s in flt.senders)})")
        if flt.not_senders:
            self.parts.append(f"sender NOT IN ({', '.join(self.arg(s) for s in flt.not_senders)})")
        if flt.ignored:
            self.parts.append(f"(state_key IS NOT NULL OR sender NOT IN ({', '.join(self.arg(s) for s in flt.ignored)}))")
        return True


_TIMELINE = "outlier = FALSE AND rejected_reason IS NULL AND soft_failed = FALSE"

_N_EVENT_COLUMNS = len(_EVENT_COLUMNS.split(","))
#: Extra columns of a timeline row; $1 and $2 are the requesting user and device. The
#: transaction ID is looked up by event only (the user and device are no condition the
#: planner could pick an index for: PostgreSQL would scan all the device's transactions
#: for each event, 0.2 ms an event once it sent a few hundred).
_EXTRAS = ("(SELECT MAX(CASE WHEN t.user_id = $1 AND t.device_id = $2 THEN t.txn_id END)"
           " FROM event_txn_ids t WHERE t.event_id = e.event_id) AS txn_id,"
           " (SELECT MIN(rd.event_id) FROM redactions rd WHERE rd.redacts = e.event_id) AS redacted_by")


def _newest_first(pages: dict[str, list[TimelineEvent]]) -> dict[str, list[TimelineEvent]]:
    for rows in pages.values():
        rows.sort(key=lambda t: t.event.stream_ordering, reverse=True)
    return pages


class SyncStore:
    def __init__(self, db: Database, events: EventStore):
        self.db = db
        #: Reads the events of each row (and keeps them parsed: ``EventStore._parsed``).
        self.events = events

    async def get_positions(self) -> dict[str, int]:
        rows = await self.db.fetch(
            f"SELECT stream_name, position FROM stream_positions WHERE stream_name IN ({_placeholders(len(STREAMS))})",
            *STREAMS,
        )
        found = {r[0]: int(r[1]) for r in rows}
        return {s: found.get(s, 0) for s in STREAMS}

    async def get_positions_and_memberships(self, user_id: str) -> tuple[dict[str, int], list[UserMembership]]:
        """The stream positions and the user's memberships, read in one statement (one
        snapshot: every membership is at or before the events position)."""
        rows = await self.db.fetch(
            "SELECT m.room_id, m.membership, m.event_id, m.stream_ordering, m.forgotten, r.head_stream_ordering,"
            " r.current_state_group, r.full_state_stream_ordering,"
            " EXISTS (SELECT 1 FROM partial_state_rooms p WHERE p.room_id = m.room_id)"
            " FROM room_memberships m JOIN rooms r ON r.room_id = m.room_id WHERE m.user_id = $1"
            " UNION ALL"
            " SELECT stream_name, NULL, NULL, position, NULL, NULL, NULL, NULL, NULL FROM stream_positions"
            f" WHERE stream_name IN ({_placeholders(len(STREAMS), 2)})",
            user_id, *STREAMS,
        )
        positions = {s: 0 for s in STREAMS}
        memberships = []
        for r in rows:
            if r[1] is None:
                positions[r[0]] = int(r[3])
            else:
                memberships.append(UserMembership(r[0], r[1], r[2], int(r[3]), bool(r[4]), int(r[5]),
                                                  None if r[6] is None else int(r[6]),
                                                  None if r[7] is None else int(r[7]), bool(r[8])))
        return positions, memberships

    async def get_memberships(self, user_id: str) -> list[UserMembership]:
        return (await self.get_positions_and_memberships(user_id))[1]

    def _timeline_row(self, r: Any) -> TimelineEvent:
        return TimelineEvent(self.events._row_to_event(r), r[_N_EVENT_COLUMNS], r[_N_EVENT_COLUMNS + 1])

    async def get_timeline(
        self, room_id: str, *, after: int | None, upto: int, limit: int, flt: TimelineFilter,
        device: tuple[str, str],
    ) -> list[TimelineEvent]:
        """Up to ``limit`` timeline events at positions in ``(after, upto]``, newest first."""
        args: list[Any] = [device[0], device[1], room_id, upto]
        where = _Where(args)
        where.parts += ["e.room_id = $3", "stream_ordering <= $4", _TIMELINE]
        if after is not None:
            where.parts.append(f"stream_ordering > {where.arg(after)}")
        if not where.add_filter(flt):
            return []
        rows = await self.db.fetch(
            f"SELECT {_EVENT_COLUMNS}, {_EXTRAS} FROM events e JOIN rooms r ON r.room_id = e.room_id"
            f" WHERE {' AND '.join(where.parts)} ORDER BY stream_ordering DESC LIMIT {where.arg(limit)}",
            *args,
        )
        return [self._timeline_row(r) for r in rows]

    async def get_timeline_pages(
        self, ranges: Sequence[tuple[str, int | None, int]], *, limit: int, flt: TimelineFilter,
        device: tuple[str, str],
    ) -> dict[str, list[TimelineEvent]]:
        """``get_timeline`` for many rooms, each over its own range ``(room, after, upto)``:
        one statement per ``TIMELINE_PAGES_PER_QUERY`` rooms, each room's page read
        through the ``(room_id, stream_ordering)`` index however long its history (a
        window function over all of it would not stop at the limit)."""
        out: dict[str, list[TimelineEvent]] = {r: [] for r, _, _ in ranges}
        if not ranges or limit <= 0:
            return out
        if self.db.engine == "postgres":
            # One short statement whatever the number of rooms (planned once and cached;
            # a UNION of a hundred pages costs more to plan than to run).
            args: list[Any] = [device[0], device[1], [r for r, _, _ in ranges],
                               [_BEFORE_ALL if a is None else a for _, a, _ in ranges], [u for _, _, u in ranges]]
            where = _Where(args)
            where.parts += ["e.room_id = q.room_id", "stream_ordering > q.after", "stream_ordering <= q.upto", _TIMELINE]
            if not where.add_filter(flt):
                return out
            rows = await self.db.fetch(
                "SELECT p.* FROM unnest($3::text[], $4::bigint[], $5::bigint[]) AS q(room_id, after, upto)"
                f" CROSS JOIN LATERAL (SELECT {_EVENT_COLUMNS}, {_EXTRAS} FROM events e JOIN rooms r"
                f" ON r.room_id = e.room_id WHERE {' AND '.join(where.parts)}"
                f" ORDER BY stream_ordering DESC LIMIT {where.arg(limit)}) AS p",
                *args,
            )
            for r in rows:
                ev = self._timeline_row(r)
                out[ev.event.pdu.room_id].append(ev)
            return _newest_first(out)
        for i in range(0, len(ranges), TIMELINE_PAGES_PER_QUERY):
            args: list[Any] = [device[0], device[1]]
            where = _Where(args)
            where.parts.append(_TIMELINE)
            if not where.add_filter(flt):
                return out
            common = " AND ".join(where.parts)
            lim = where.arg(limit)
            pages = []
            for room_id, after, upto in ranges[i:i + TIMELINE_PAGES_PER_QUERY]:
                cond = f"e.room_id = {where.arg(room_id)} AND stream_ordering <= {where.arg(upto)}"
                if after is not None:
                    cond += f" AND stream_ordering > {where.arg(after)}"
                pages.append(
                    f"SELECT * FROM (SELECT {_EVENT_COLUMNS}, {_EXTRAS} FROM events e JOIN rooms r"
                    f" ON r.room_id = e.room_id WHERE {cond} AND {common}"
                    f" ORDER BY stream_ordering DESC LIMIT {lim}) AS p{len(pages)}")
            for r in await self.db.fetch(" UNION ALL ".join(pages), *args):
                ev = self._timeline_row(r)
                out[ev.event.pdu.room_id].append(ev)
        return _newest_first(out)

    async def get_timelines(
        self, room_ids: Sequence[str], *, after: int, upto: int, limit: int, flt: TimelineFilter,
        device: tuple[str, str],
    ) -> dict[str, list[TimelineEvent]]:
        """``get_timeline`` for many rooms over one range, in one query (newest first)."""
        out: dict[str, list[TimelineEvent]] = {r: [] for r in room_ids}
        if not room_ids or limit <= 0:
            return out
        args: list[Any] = [device[0], device[1], after, upto]
        where = _Where(args)
        where.parts += ["stream_ordering > $3", "stream_ordering <= $4", _TIMELINE,
                        f"e.room_id IN ({', '.join(where.arg(r) for r in room_ids)})"]
        if not where.add_filter(flt):
            return out
        rows = await self.db.fetch(
            f"SELECT * FROM (SELECT {_EVENT_COLUMNS}, {_EXTRAS},"
            " ROW_NUMBER() OVER (PARTITION BY e.room_id ORDER BY stream_ordering DESC) AS rn"
            f" FROM events e JOIN rooms r ON r.room_id = e.room_id WHERE {' AND '.join(where.parts)}) t"
            f" WHERE rn <= {where.arg(limit)} ORDER BY stream_ordering DESC",
            *args,
        )
        for r in rows:
            ev = self._timeline_row(r)
            out[ev.event.pdu.room_id].append(ev)
        return out

    async def get_stream_events(
        self, room_ids: Sequence[str], *, after: int, upto: int, limit: int, device: tuple[str, str],
    ) -> list[TimelineEvent]:
        """Up to ``limit`` timeline events of these rooms at positions in ``(after, upto]``,
        oldest first, whatever their room (the v1 ``/events`` stream)."""
        if not room_ids or limit <= 0:
            return []
        args: list[Any] = [device[0], device[1], after, upto]
        where = _Where(args)
        where.parts += ["stream_ordering > $3", "stream_ordering <= $4", _TIMELINE,
                        f"e.room_id IN ({', '.join(where.arg(r) for r in room_ids)})"]
        rows = await self.db.fetch(
            f"SELECT {_EVENT_COLUMNS}, {_EXTRAS} FROM events e JOIN rooms r ON r.room_id = e.room_id"
            f" WHERE {' AND '.join(where.parts)} ORDER BY stream_ordering LIMIT {where.arg(limit)}",
            *args,
        )
        return [self._timeline_row(r) for r in rows]

    async def get_state_group_at(self, room_id: str, pos: int) -> int | None:
        """The state group after the last timeline event at or before ``pos``."""
        value = await self.db.fetchval(
            "SELECT state_group FROM events WHERE room_id = $1 AND stream_ordering <= $2 AND outlier = FALSE"
            " AND state_group IS NOT NULL ORDER BY stream_ordering DESC LIMIT 1",
            room_id, pos,
        )
        return None if value is None else int(value)

    async def get_member_counts(self, room_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """room -> {"join": n, "invite": m}."""
        out: dict[str, dict[str, int]] = {r: {"join": 0, "invite": 0} for r in room_ids}
        if not room_ids:
            return out
        rows = await self.db.fetch(
            "SELECT room_id, membership, COUNT(*) FROM room_memberships"
            f" WHERE room_id IN ({_placeholders(len(room_ids))}) AND membership IN ('join', 'invite')"
            " GROUP BY room_id, membership",
            *room_ids,
        )
        for r in rows:
            out[r[0]][r[1]] = int(r[2])
        return out

    async def get_hero_candidates(self, room_ids: Sequence[str], n: int) -> dict[str, list[tuple[str, str]]]:
        """Up to ``n`` members per room, joined and invited first, then those who left,
        each group in the order they got that membership: room -> [(user, membership)]."""
        out: dict[str, list[tuple[str, str]]] = {r: [] for r in room_ids}
        if not room_ids:
            return out
        rows = await self.db.fetch(
            "SELECT room_id, user_id, membership FROM (SELECT room_id, user_id, membership,"
            " ROW_NUMBER() OVER (PARTITION BY room_id ORDER BY"
            "  CASE WHEN membership IN ('join', 'invite') THEN 0 ELSE 1 END, stream_ordering, user_id) AS rn"
            f" FROM room_memberships WHERE room_id IN ({_placeholders(len(room_ids))})) t"
            f" WHERE rn <= {int(n)} ORDER BY room_id, rn",
            *room_ids,
        )
        for r in rows:
            out[r[0]].append((r[1], r[2]))
        return out

    async def get_unread_counts(self, user_id: str,
                                room_ids: Sequence[str]) -> dict[str, dict[str, tuple[int, int]]]:
        """room -> thread -> (notifications, highlights) from the push rules'
        ``event_push_actions``. An event counts while it comes after both the user's
        latest unthreaded read receipt and their latest receipt in its own thread
        (``main`` for the main timeline), public or private.
        https://spec.matrix.org/latest/client-server-api/#receiving-notifications"""
        if not room_ids:
            return {}
        rows = await self.db.fetch(
            "SELECT a.room_id, a.thread_id, SUM(CASE WHEN a.notif THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN a.highlight THEN 1 ELSE 0 END) FROM event_push_actions a"
            f" WHERE a.user_id = $1 AND a.room_id IN ({_placeholders(len(room_ids), 2)})"
            " AND a.stream_ordering > COALESCE((SELECT MAX(r.event_stream_ordering) FROM receipts r"
            "  WHERE r.user_id = a.user_id AND r.room_id = a.room_id AND r.thread_id IN ('', a.thread_id)"
            "  AND r.receipt_type IN ('m.read', 'm.read.private')), 0)"
            " GROUP BY a.room_id, a.thread_id",
            user_id, *room_ids,
        )
        out: dict[str, dict[str, tuple[int, int]]] = {}
        for r in rows:
            out.setdefault(r[0], {})[r[1]] = (int(r[2] or 0), int(r[3] or 0))
        return out

    async def get_membership_event_before(self, user_id: str, room_ids: Sequence[str], after: int) -> dict[str, str | None]:
        """room -> the user's member event ID in the current state just before their
        first membership change after position ``after`` (None: not a member then)."""
        if not room_ids:
            return {}
        rows = await self.db.fetch(
            "SELECT room_id, prev_event_id FROM current_state_deltas WHERE type = 'm.room.member'"
            f" AND state_key = $1 AND stream_ordering > $2 AND room_id IN ({_placeholders(len(room_ids), 3)})"
            " ORDER BY stream_ordering",
            user_id, after, *room_ids,
        )
        out: dict[str, str | None] = {}
        for r in rows:
            out.setdefault(r[0], r[1])
        return out

    async def get_member_event_targets(self, first: int, last: int) -> set[str]:
        """The users whose membership changed at positions ``[first, last]`` (to wake
        them: an invite concerns a user who is not in the room yet)."""
        rows = await self.db.fetch(
            "SELECT state_key FROM events WHERE stream_ordering >= $1 AND stream_ordering <= $2"
            " AND type = 'm.room.member'",
            first, last,
        )
        return {r[0] for r in rows if r[0]}

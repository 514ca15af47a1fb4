"""Reports of events, rooms and users (Synapse's ``event_reports``, ``room_reports`` and
``user_reports`` tables), and the admin listings over them: filters, offset pagination,
oldest or newest first.

Spec (filing): https://spec.matrix.org/latest/client-server-api/#reporting-content
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .database import Database
from .directory import like_pattern
from .state import next_position


@dataclass(frozen=True)
class ReportTable:
    """How one kind of report is read: its table (alias ``r``), what is joined to it,
    the columns as the admin API names them, and the filters (query parameter ->
    column, matched as a substring or exactly)."""

    table: str
    fields: tuple[tuple[str, str], ...]  # (admin API name, SQL expression)
    joins: str = ""
    contains: tuple[tuple[str, str], ...] = ()
    exact: tuple[tuple[str, str], ...] = ()


EVENT_REPORTS = ReportTable(
    "event_reports",
    (("id", "r.id"), ("received_ts", "r.received_ts"), ("room_id", "r.room_id"), ("event_id", "r.event_id"),
     ("user_id", "r.user_id"), ("reason", "r.reason"), ("score", "r.score"), ("sender", "e.sender"),
     ("name", "s.name"), ("canonical_alias", "s.canonical_alias")),
    joins=" LEFT JOIN events e ON e.event_id = r.event_id LEFT JOIN room_stats_state s ON s.room_id = r.room_id",
    contains=(("user_id", "r.user_id"), ("room_id", "r.room_id")),
    exact=(("event_sender_user_id", "e.sender"),),
)
ROOM_REPORTS = ReportTable(
    "room_reports",
    (("id", "r.id"), ("received_ts", "r.received_ts"), ("room_id", "r.room_id"), ("user_id", "r.user_id"),
     ("reason", "r.reason"), ("name", "s.name"), ("canonical_alias", "s.canonical_alias")),
    joins=" LEFT JOIN room_stats_state s ON s.room_id = r.room_id",
    contains=(("user_id", "r.user_id"), ("room_id", "r.room_id")),
)
USER_REPORTS = ReportTable(
    "user_reports",
    (("id", "r.id"), ("received_ts", "r.received_ts"), ("target_user_id", "r.target_user_id"),
     ("user_id", "r.user_id"), ("reason", "r.reason")),
    contains=(("user_id", "r.user_id"), ("target_user_id", "r.target_user_id")),
)
TABLES = {t.table: t for t in (EVENT_REPORTS, ROOM_REPORTS, USER_REPORTS)}


class ReportStore:
    def __init__(self, db: Database):
        self.db = db

    async def _insert(self, table: str, columns: dict[str, Any]) -> int:
        async with self.db.transaction() as txn:
            report_id = await next_position(txn, table)
            names = ["id", *columns]
            await txn.execute(
                f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(names)))})",
                report_id, *columns.values(),
            )
        return report_id

    async def add_event_report(self, *, room_id: str, event_id: str, user_id: str, reason: str | None,
                               score: int | None, received_ts: int) -> int:
        return await self._insert("event_reports", {"received_ts": received_ts, "room_id": room_id,
                                                    "event_id": event_id, "user_id": user_id, "reason": reason,
                                                    "score": score})

    async def add_room_report(self, *, room_id: str, user_id: str, reason: str, received_ts: int) -> int:
        return await self._insert("room_reports", {"received_ts": received_ts, "room_id": room_id,
                                                   "user_id": user_id, "reason": reason})

    async def add_user_report(self, *, target_user_id: str, user_id: str, reason: str, received_ts: int) -> int:
        return await self._insert("user_reports", {"received_ts": received_ts, "target_user_id": target_user_id,
                                                   "user_id": user_id, "reason": reason})

    async def list_reports(self, kind: ReportTable, *, start: int, limit: int, newest_first: bool,
                           filters: dict[str, str]) -> tuple[list[dict[str, Any]], int]:
        """One page (``limit`` from offset ``start``) and the total that match ``filters``
        (query parameter -> value; unknown names are ignored)."""
        where, args = [], []
        for name, column in kind.contains:
            if filters.get(name):
                args.append(like_pattern(filters[name]))
                where.append(f"{column} LIKE ${len(args)} ESCAPE '\\'")
        for name, column in kind.exact:
            if filters.get(name):
                args.append(filters[name])
                where.append(f"{column} = ${len(args)}")
        sql_where = f" WHERE {' AND '.join(where)}" if where else ""
        base = f" FROM {kind.table} r{kind.joins}{sql_where}"
        total = int(await self.db.fetchval(f"SELECT COUNT(*){base}", *args) or 0)
        order = "DESC" if newest_first else "ASC"
        columns = ", ".join(expr for _, expr in kind.fields)
        rows = await self.db.fetch(
            f"SELECT {columns}{base} ORDER BY r.received_ts {order}, r.id {order}"
            f" LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}",
            *args, limit, start,
        )
        return [self._row(kind, r) for r in rows], total

    async def get_report(self, kind: ReportTable, report_id: int) -> dict[str, Any] | None:
        columns = ", ".join(expr for _, expr in kind.fields)
        row = await self.db.fetchrow(f"SELECT {columns} FROM {kind.table} r{kind.joins} WHERE r.id = $1", report_id)
        return None if row is None else self._row(kind, row)

    async def delete_report(self, kind: ReportTable, report_id: int) -> bool:
        return await self.db.execute(f"DELETE FROM {kind.table} WHERE id = $1", report_id) == 1

    @staticmethod
    def _row(kind: ReportTable, row: Any) -> dict[str, Any]:
        out = {name: row[i] for i, (name, _) in enumerate(kind.fields)}
        for key in ("id", "received_ts", "score"):
            if out.get(key) is not None:
                out[key] = int(out[key])
        return out

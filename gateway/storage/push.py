"""Push rules (the user's own and their changes to server-default rules), the push
actions computed for each event, and pushers.

Spec: https://spec.matrix.org/latest/client-server-api/#push-notifications
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .database import Database
from .state import _placeholders


@dataclass(frozen=True)
class StoredRule:
    kind: str
    rule_id: str
    priority: int
    conditions: list[Any] | None
    pattern: str | None
    actions: list[Any]
    enabled: bool


@dataclass(frozen=True)
class DefaultRuleChange:
    kind: str
    rule_id: str
    enabled: bool | None
    actions: list[Any] | None


@dataclass(frozen=True)
class PushAction:
    room_id: str
    user_id: str
    event_id: str
    stream_ordering: int
    notif: bool
    highlight: bool
    thread_id: str
    actions: Sequence[Any]


@dataclass(frozen=True)
class Pusher:
    user_id: str
    device_id: str | None
    kind: str
    app_id: str
    pushkey: str
    app_display_name: str
    device_display_name: str
    profile_tag: str | None
    lang: str
    data: dict[str, Any]
    created_ts: int
    #: HTTP pushers: the stream position of the last notification sent (or skipped).
    last_stream_ordering: int = 0


_PUSHER_COLUMNS = ("user_id, device_id, kind, app_id, pushkey, app_display_name, device_display_name, profile_tag,"
                   " lang, data, created_ts, last_stream_ordering")


def _pusher(r: Any) -> Pusher:
    return Pusher(*r[:9], json.loads(r[9]), int(r[10]), int(r[11]))


class PushRuleStore:
    def __init__(self, db: Database):
        self.db = db

    async def get_user_rules(self, user_ids: Sequence[str]) -> dict[str, list[StoredRule]]:
        """Each user's own rules, most important first within a kind."""
        out: dict[str, list[StoredRule]] = {u: [] for u in user_ids}
        ids = list(user_ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = await self.db.fetch(
                "SELECT user_id, kind, rule_id, priority, conditions, pattern, actions, enabled FROM push_rules"
                f" WHERE user_id IN ({_placeholders(len(chunk))}) ORDER BY user_id, kind, priority DESC",
                *chunk,
            )
            for r in rows:
                out[r[0]].append(StoredRule(r[1], r[2], int(r[3]), None if r[4] is None else json.loads(r[4]), r[5],
                                            json.loads(r[6]), bool(r[7])))
        return out

    async def get_default_changes(self, user_ids: Sequence[str]) -> dict[str, list[DefaultRuleChange]]:
        out: dict[str, list[DefaultRuleChange]] = {u: [] for u in user_ids}
        ids = list(user_ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = await self.db.fetch(
                "SELECT user_id, kind, rule_id, enabled, actions FROM push_rules_defaults"
                f" WHERE user_id IN ({_placeholders(len(chunk))})",
                *chunk,
            )
            for r in rows:
                out[r[0]].append(DefaultRuleChange(r[1], r[2], None if r[3] is None else bool(r[3]),
                                                   None if r[4] is None else json.loads(r[4])))
        return out

    async def put_rule(
        self, user_id: str, kind: str, rule_id: str, *, conditions: list[Any] | None, pattern: str | None,
        actions: list[Any], before: str | None, after: str | None,
    ) -> None:
        """Add or replace a user rule. A new rule (or one given ``before``/``after``) is
        placed as asked; otherwise an updated rule keeps its place. Raises KeyError(rule)
        when ``before``/``after`` names no rule of this kind."""
        async with self.db.transaction() as txn:
            rows = await txn.fetch(
                "SELECT rule_id, priority FROM push_rules WHERE user_id = $1 AND kind = $2 ORDER BY priority DESC",
                user_id, kind,
            )
            order = [r[0] for r in rows if r[0] != rule_id]
            existing = any(r[0] == rule_id for r in rows)
            if before is not None or after is not None:
                anchor = before if before is not None else after
                if anchor not in order:
                    raise KeyError(anchor)
                index = order.index(anchor) + (0 if before is not None else 1)
                order.insert(index, rule_id)
            elif existing:
                order = [r[0] for r in rows]
            else:
                order.insert(0, rule_id)
            # Priorities: the first (most important) gets the highest number.
            n = len(order)
            if existing:
                await txn.execute(
                    "UPDATE push_rules SET conditions = $4, pattern = $5, actions = $6"
                    " WHERE user_id = $1 AND kind = $2 AND rule_id = $3",
                    user_id, kind, rule_id, None if conditions is None else json.dumps(conditions), pattern,
                    json.dumps(actions),
                )
            else:
                await txn.execute(
                    "INSERT INTO push_rules (user_id, kind, rule_id, priority, conditions, pattern, actions, enabled)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE)",
                    user_id, kind, rule_id, 0, None if conditions is None else json.dumps(conditions), pattern,
                    json.dumps(actions),
                )
            for i, rid in enumerate(order):
                await txn.execute(
                    "UPDATE push_rules SET priority = $4 WHERE user_id = $1 AND kind = $2 AND rule_id = $3",
                    user_id, kind, rid, n - i,
                )

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> bool:
        return await self.db.execute(
            "DELETE FROM push_rules WHERE user_id = $1 AND kind = $2 AND rule_id = $3", user_id, kind, rule_id
        ) == 1

    async def set_user_rule_field(self, user_id: str, kind: str, rule_id: str, *, enabled: bool | None = None,
                                  actions: list[Any] | None = None) -> bool:
        if enabled is not None:
            n = await self.db.execute(
                "UPDATE push_rules SET enabled = $4 WHERE user_id = $1 AND kind = $2 AND rule_id = $3",
                user_id, kind, rule_id, enabled,
            )
        else:
            n = await self.db.execute(
                "UPDATE push_rules SET actions = $4 WHERE user_id = $1 AND kind = $2 AND rule_id = $3",
                user_id, kind, rule_id, json.dumps(actions),
            )
        return n == 1

    async def change_default_rule(self, user_id: str, kind: str, rule_id: str, *, enabled: bool | None = None,
                                  actions: list[Any] | None = None) -> None:
        if enabled is not None:
            await self.db.execute(
                "INSERT INTO push_rules_defaults (user_id, kind, rule_id, enabled) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET enabled = excluded.enabled",
                user_id, kind, rule_id, enabled,
            )
        else:
            await self.db.execute(
                "INSERT INTO push_rules_defaults (user_id, kind, rule_id, actions) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET actions = excluded.actions",
                user_id, kind, rule_id, json.dumps(actions),
            )


class PushActionStore:
    def __init__(self, db: Database):
        self.db = db

    async def add(self, rows: Iterable[PushAction]) -> None:
        """One batched insert (events are evaluated once; a repeat is ignored)."""
        encoded: dict[int, str] = {}  # many users share one actions list

        def actions_json(actions: Any) -> str:
            found = encoded.get(id(actions))
            if found is None:
                found = encoded[id(actions)] = json.dumps(list(actions))
            return found

        values = [(a.room_id, a.user_id, a.event_id, a.stream_ordering, a.notif, a.highlight, a.thread_id,
                   actions_json(a.actions)) for a in rows]
        if not values:
            return
        await self.db.executemany(
            "INSERT INTO event_push_actions"
            " (room_id, user_id, event_id, stream_ordering, notif, highlight, thread_id, actions)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (user_id, event_id) DO NOTHING",
            values,
        )

    async def count_unread(self, user_id: str, room_id: str, after_stream_ordering: int) -> tuple[int, int]:
        row = await self.db.fetchrow(
            "SELECT COALESCE(SUM(CASE WHEN notif THEN 1 ELSE 0 END), 0),"
            " COALESCE(SUM(CASE WHEN highlight THEN 1 ELSE 0 END), 0)"
            " FROM event_push_actions WHERE user_id = $1 AND room_id = $2 AND stream_ordering > $3",
            user_id, room_id, after_stream_ordering,
        )
        return int(row[0]), int(row[1])

    async def checkpoint_and_prune(self, *, stream_ordering: int, now_ms: int, keep_ms: int) -> None:
        """Record that the stream reached ``stream_ordering`` at ``now_ms``, and delete the
        push actions of events older than ``keep_ms`` (by the newest checkpoint before)."""
        cutoff = now_ms - keep_ms
        async with self.db.transaction() as txn:
            await txn.execute("INSERT INTO push_action_checkpoints (stream_ordering, ts) VALUES ($1, $2)",
                              stream_ordering, now_ms)
            upto = await txn.fetchval("SELECT MAX(stream_ordering) FROM push_action_checkpoints WHERE ts < $1",
                                      cutoff)
            if upto is not None:
                await txn.execute("DELETE FROM event_push_actions WHERE stream_ordering <= $1", int(upto))
                await txn.execute("DELETE FROM push_action_checkpoints WHERE ts < $1", cutoff)

    async def count_unread_rooms(self, user_id: str) -> int:
        """Rooms with notifications after the user's read receipt there (the badge count
        pushers get, as Synapse's default ``group_unread_count_by_room``)."""
        value = await self.db.fetchval(
            "SELECT COUNT(DISTINCT e.room_id) FROM event_push_actions e"
            " LEFT JOIN (SELECT room_id, MAX(event_stream_ordering) AS pos FROM receipts"
            "  WHERE user_id = $1 AND thread_id = '' AND receipt_type IN ('m.read', 'm.read.private')"
            "  GROUP BY room_id) r ON r.room_id = e.room_id"
            " WHERE e.user_id = $1 AND e.notif = TRUE AND e.stream_ordering > COALESCE(r.pos, 0)",
            user_id,
        )
        return int(value or 0)

    async def get_at_positions(self, room_id: str, positions: Sequence[int]) -> list[PushAction]:
        """The push actions of the room's events at these stream positions (every user's)."""
        out: list[PushAction] = []
        ids = sorted(set(positions))
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = await self.db.fetch(
                "SELECT room_id, user_id, event_id, stream_ordering, notif, highlight, thread_id, actions"
                f" FROM event_push_actions WHERE room_id = $1 AND stream_ordering IN ({_placeholders(len(chunk), 2)})"
                " ORDER BY stream_ordering, user_id",
                room_id, *chunk,
            )
            out += [PushAction(r[0], r[1], r[2], int(r[3]), bool(r[4]), bool(r[5]), r[6], json.loads(r[7]))
                    for r in rows]
        return out

    async def unread_after(self, user_id: str, after: int, limit: int) -> list[PushAction]:
        """The user's notifications after stream position ``after`` that are still unread
        (after their read receipt in the room), oldest first: what an HTTP pusher sends."""
        rows = await self.db.fetch(
            "SELECT e.room_id, e.user_id, e.event_id, e.stream_ordering, e.notif, e.highlight, e.thread_id,"
            " e.actions FROM event_push_actions e"
            " LEFT JOIN (SELECT room_id, MAX(event_stream_ordering) AS pos FROM receipts"
            "  WHERE user_id = $1 AND thread_id = '' AND receipt_type IN ('m.read', 'm.read.private')"
            "  GROUP BY room_id) r ON r.room_id = e.room_id"
            " WHERE e.user_id = $1 AND e.notif = TRUE AND e.stream_ordering > $2"
            " AND e.stream_ordering > COALESCE(r.pos, 0) ORDER BY e.stream_ordering LIMIT $3",
            user_id, after, limit)
        return [PushAction(r[0], r[1], r[2], int(r[3]), bool(r[4]), bool(r[5]), r[6], json.loads(r[7]))
                for r in rows]

    async def get_for_user(self, user_id: str, *, before: int | None, limit: int,
                           only_highlight: bool = False) -> list[PushAction]:
        where = ["user_id = $1"]
        args: list[Any] = [user_id]
        if before is not None:
            args.append(before)
            where.append(f"stream_ordering < ${len(args)}")
        if only_highlight:
            where.append("highlight = TRUE")
        args.append(limit)
        rows = await self.db.fetch(
            "SELECT room_id, user_id, event_id, stream_ordering, notif, highlight, thread_id, actions"
            f" FROM event_push_actions WHERE {' AND '.join(where)} ORDER BY stream_ordering DESC LIMIT ${len(args)}",
            *args,
        )
        return [PushAction(r[0], r[1], r[2], int(r[3]), bool(r[4]), bool(r[5]), r[6], json.loads(r[7]))
                for r in rows]


class PusherStore:
    def __init__(self, db: Database):
        self.db = db

    async def get_pushers(self, user_id: str) -> list[Pusher]:
        rows = await self.db.fetch(
            f"SELECT {_PUSHER_COLUMNS} FROM pushers WHERE user_id = $1 ORDER BY created_ts, app_id, pushkey", user_id)
        return [_pusher(r) for r in rows]

    async def get_pusher(self, user_id: str, app_id: str, pushkey: str) -> Pusher | None:
        row = await self.db.fetchrow(
            f"SELECT {_PUSHER_COLUMNS} FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
            user_id, app_id, pushkey)
        return _pusher(row) if row is not None else None

    async def get_pushers_for_users(self, user_ids: Sequence[str]) -> list[Pusher]:
        ids = list(user_ids)
        out: list[Pusher] = []
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = await self.db.fetch(
                f"SELECT {_PUSHER_COLUMNS} FROM pushers WHERE user_id IN ({_placeholders(len(chunk))})", *chunk)
            out += [_pusher(r) for r in rows]
        return out

    async def get_http_pushers_behind(self) -> list[Pusher]:
        """HTTP pushers with notifications after their position (to push after a restart)."""
        rows = await self.db.fetch(
            f"SELECT {_PUSHER_COLUMNS} FROM pushers p WHERE p.kind = 'http' AND EXISTS (SELECT 1"
            " FROM event_push_actions e WHERE e.user_id = p.user_id AND e.notif = TRUE"
            " AND e.stream_ordering > p.last_stream_ordering)")
        return [_pusher(r) for r in rows]

    async def set_progress(self, user_id: str, app_id: str, pushkey: str, stream_ordering: int) -> None:
        """The pusher was sent (or skipped) the notifications up to ``stream_ordering``."""
        await self.db.execute(
            "UPDATE pushers SET last_stream_ordering = $4 WHERE user_id = $1 AND app_id = $2 AND pushkey = $3"
            " AND last_stream_ordering < $4", user_id, app_id, pushkey, stream_ordering)

    async def set_pusher(self, p: Pusher, *, append: bool) -> None:
        """Add or replace the user's pusher for (app_id, pushkey); unless ``append``, other
        users' pushers with the same app_id and pushkey go."""
        async with self.db.transaction() as txn:
            if not append:
                await txn.execute(
                    "DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3",
                    p.app_id, p.pushkey, p.user_id,
                )
            # A new pusher starts from the notifications stored so far (no history is
            # pushed); a changed one keeps its progress.
            await txn.execute(
                "INSERT INTO pushers (user_id, device_id, kind, app_id, pushkey, app_display_name,"
                " device_display_name, profile_tag, lang, data, created_ts, last_stream_ordering)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
                " (SELECT COALESCE(MAX(stream_ordering), 0) FROM event_push_actions))"
                " ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET device_id = excluded.device_id,"
                " kind = excluded.kind, app_display_name = excluded.app_display_name,"
                " device_display_name = excluded.device_display_name, profile_tag = excluded.profile_tag,"
                " lang = excluded.lang, data = excluded.data",
                p.user_id, p.device_id, p.kind, p.app_id, p.pushkey, p.app_display_name, p.device_display_name,
                p.profile_tag, p.lang, json.dumps(p.data), p.created_ts,
            )

    async def delete_pusher(self, user_id: str, app_id: str, pushkey: str) -> bool:
        return await self.db.execute(
            "DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3", user_id, app_id, pushkey
        ) == 1


"""Room aliases, the public room directory and the user directory.

Room summaries come from ``room_stats_state`` (kept in step with current state by
``state.apply_current_state_steps``) and member counts from ``room_memberships``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .database import Database, IntegrityError


class AliasExistsError(Exception):
    pass


@dataclass(frozen=True)
class AliasRow:
    room_alias: str
    room_id: str
    creator: str


@dataclass(frozen=True)
class RoomSummary:
    room_id: str
    name: str | None
    topic: str | None
    avatar: str | None
    canonical_alias: str | None
    join_rules: str | None
    history_visibility: str | None
    guest_access: str | None
    room_type: str | None
    num_joined_members: int
    encryption: str | None = None
    room_version: str | None = None


@dataclass(frozen=True)
class DirectoryUser:
    user_id: str
    displayname: str | None
    avatar_url: str | None


def like_pattern(term: str) -> str:
    """A LIKE pattern matching ``term`` anywhere (``\\`` escapes the wildcards)."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


_SUMMARY_COLUMNS = (
    "r.room_id, s.name, s.topic, s.avatar, s.canonical_alias, s.join_rules, s.history_visibility,"
    " s.guest_access, s.room_type,"
    " (SELECT COUNT(*) FROM room_memberships m WHERE m.room_id = r.room_id AND m.membership = 'join')"
)


class DirectoryStore:
    def __init__(self, db: Database):
        self.db = db

    # --- aliases -----------------------------------------------------------------

    async def create_alias(self, room_alias: str, room_id: str, creator: str, ts: int) -> None:
        try:
            await self.db.execute(
                "INSERT INTO room_aliases (room_alias, room_id, creator, created_ts) VALUES ($1, $2, $3, $4)",
                room_alias, room_id, creator, ts,
            )
        except IntegrityError:
            raise AliasExistsError(room_alias) from None

    async def get_alias(self, room_alias: str) -> AliasRow | None:
        row = await self.db.fetchrow(
            "SELECT room_alias, room_id, creator FROM room_aliases WHERE room_alias = $1", room_alias
        )
        return None if row is None else AliasRow(row[0], row[1], row[2])

    async def delete_alias(self, room_alias: str) -> bool:
        return await self.db.execute("DELETE FROM room_aliases WHERE room_alias = $1", room_alias) == 1

    async def get_aliases_for_room(self, room_id: str) -> list[str]:
        rows = await self.db.fetch(
            "SELECT room_alias FROM room_aliases WHERE room_id = $1 ORDER BY created_ts, room_alias", room_id
        )
        return [r[0] for r in rows]

    async def move_aliases(self, old_room_id: str, new_room_id: str) -> int:
        """Point every alias of one room at another (a room upgrade); returns how many."""
        return await self.db.execute("UPDATE room_aliases SET room_id = $2 WHERE room_id = $1",
                                     old_room_id, new_room_id)

    # --- public rooms --------------------------------------------------------------

    async def set_room_public(self, room_id: str, public: bool) -> None:
        await self.db.execute("UPDATE rooms SET is_public = $2 WHERE room_id = $1", room_id, public)

    async def get_public_rooms(
        self, *, offset: int, limit: int | None, search: str | None = None, room_types: list[str | None] | None = None,
        network: tuple[str, str] | None = None, all_networks: bool = False,
    ) -> list[RoomSummary]:
        """Published rooms, most joined members first (then by room ID), from ``offset``:
        the server's list, one application service network's list (``network``: service
        ID, network ID), or both kinds together (``all_networks``)."""
        args: list[Any] = []

        def arg(v: Any) -> str:
            args.append(v)
            return f"${len(args)}"

        if network is not None:
            where = [f"r.room_id IN (SELECT room_id FROM appservice_room_list WHERE as_id = {arg(network[0])}"
                     f" AND network_id = {arg(network[1])})"]
        elif all_networks:
            where = ["(r.is_public = TRUE OR r.room_id IN (SELECT room_id FROM appservice_room_list))"]
        else:
            where = ["r.is_public = TRUE"]

        if search:
            p = arg(like_pattern(search.lower()))
            where.append(f"(LOWER(COALESCE(s.name, '')) LIKE {p} ESCAPE '\\'"
                         f" OR LOWER(COALESCE(s.topic, '')) LIKE {p} ESCAPE '\\'"
                         f" OR LOWER(COALESCE(s.canonical_alias, '')) LIKE {p} ESCAPE '\\'"
                         f" OR LOWER(r.room_id) LIKE {p} ESCAPE '\\')")
        if room_types is not None:
            parts = []
            if None in room_types:
                parts.append("s.room_type IS NULL")
            named = [t for t in room_types if t is not None]
            if named:
                parts.append(f"s.room_type IN ({', '.join(arg(t) for t in named)})")
            where.append(f"({' OR '.join(parts) or 'FALSE'})")
        sql = (f"SELECT {_SUMMARY_COLUMNS} AS joined FROM rooms r LEFT JOIN room_stats_state s ON s.room_id = r.room_id"
               f" WHERE {' AND '.join(where)} ORDER BY joined DESC, r.room_id")
        sql += f" LIMIT {arg(int(limit) if limit is not None else 2**31)} OFFSET {arg(int(offset))}"
        rows = await self.db.fetch(sql, *args)
        return [RoomSummary(*r[:9], int(r[9])) for r in rows]

    async def get_room_summary(self, room_id: str) -> RoomSummary | None:
        """One room's summary (with its encryption and room version), published or not."""
        row = await self.db.fetchrow(
            f"SELECT {_SUMMARY_COLUMNS}, s.encryption, r.room_version FROM rooms r"
            " LEFT JOIN room_stats_state s ON s.room_id = r.room_id WHERE r.room_id = $1", room_id)
        return None if row is None else RoomSummary(*row[:9], int(row[9]), row[10], row[11])

    async def count_public_rooms(self) -> int:
        return int(await self.db.fetchval("SELECT COUNT(*) FROM rooms WHERE is_public = TRUE") or 0)

    # --- user directory -----------------------------------------------------------------

    async def search_users(
        self, searcher: str, term: str, *, limit: int, search_all_users: bool
    ) -> list[DirectoryUser]:
        """Users whose user ID or display name contains ``term`` (case insensitive) and
        who share a room with ``searcher`` or are joined to a public or world-readable
        room (any user we know of with ``search_all_users``). Local users are the
        active ones, with their profile; other servers' users are those joined to a room
        this server is still in (what we hold of a room we left is stale), with the name
        and avatar of their latest join event there (so a profile change they send into a
        room shows here). Returns up to ``limit``."""
        args: list[Any] = [like_pattern(term.lower()), searcher, int(limit)]

        def ours(room_column: str) -> str:
            # A room this server is still in: what we hold of a room we left is stale.
            return ("EXISTS (SELECT 1 FROM room_memberships lm JOIN users lu ON lu.user_id = lm.user_id"
                    f" WHERE lm.room_id = {room_column} AND lm.membership = 'join')")

        def visible(column: str) -> str:
            # (with search_all_users, $2 is still referenced so that both engines get the same arguments)
            if search_all_users:
                return f"({column} = $2 OR TRUE)"
            # The searcher is found only through a public room (as in Synapse: sharing a
            # room with oneself does not count).
            return (
                f"({column} IN (SELECT m2.user_id FROM room_memberships m1"
                "  JOIN room_memberships m2 ON m2.room_id = m1.room_id"
                "  WHERE m1.user_id = $2 AND m1.membership = 'join' AND m2.membership = 'join' AND m2.user_id <> $2)"
                f" OR {column} IN (SELECT m.user_id FROM room_memberships m"
                "  JOIN room_stats_state s ON s.room_id = m.room_id"
                "  WHERE m.membership = 'join' AND (s.join_rules = 'public' OR s.history_visibility = 'world_readable')"
                f"  AND {ours('m.room_id')}))"
            )

        def matches(user_column: str, name_column: str) -> str:
            return (f"(LOWER({user_column}) LIKE $1 ESCAPE '\\'"
                    f" OR LOWER(COALESCE({name_column}, '')) LIKE $1 ESCAPE '\\')")

        local = (
            "SELECT u.user_id, p.displayname, p.avatar_url FROM users u LEFT JOIN profiles p ON p.user_id = u.user_id"
            " WHERE u.deactivated = FALSE AND (u.user_type IS NULL OR u.user_type <> 'support')"
            f" AND {matches('u.user_id', 'p.displayname')} AND {visible('u.user_id')}"
        )
        remote = (
            "SELECT r.user_id, r.displayname, r.avatar_url FROM room_memberships r"
            " WHERE r.membership = 'join' AND NOT EXISTS (SELECT 1 FROM users l WHERE l.user_id = r.user_id)"
            f" AND {ours('r.room_id')}"
            " AND r.stream_ordering = (SELECT MAX(r2.stream_ordering) FROM room_memberships r2"
            f"  WHERE r2.user_id = r.user_id AND r2.membership = 'join' AND {ours('r2.room_id')})"
            f" AND {matches('r.user_id', 'r.displayname')} AND {visible('r.user_id')}"
        )
        rows = await self.db.fetch(
            f"SELECT user_id, displayname, avatar_url FROM ({local} UNION ALL {remote}) found"
            " ORDER BY (displayname IS NULL), LOWER(COALESCE(displayname, user_id)), user_id LIMIT $3",
            *args,
        )
        return [DirectoryUser(r[0], r[1], r[2]) for r in rows]

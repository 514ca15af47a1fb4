"""Application services: per-service stream positions, the unacknowledged transaction,
users registered by services, and services' published room lists.

Spec: https://spec.matrix.org/latest/application-service-api/#pushing-events
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .database import Connection, Database
from .state import _placeholders

#: The streams a service is sent, as columns of appservice_state and names in stream_positions.
STREAMS = ("events", "receipts", "presence", "to_device", "device_lists")


@dataclass(frozen=True)
class StoredTxn:
    """A transaction made for a service and not acknowledged yet."""

    txn_id: int
    event_ids: list[str]
    extra: dict[str, Any]


@dataclass(frozen=True)
class ToDeviceRow:
    user_id: str
    device_id: str
    stream_id: int
    message: dict[str, Any]


class AppServiceStore:
    def __init__(self, db: Database):
        self.db = db

    # --- positions and transactions ---------------------------------------------------------

    async def get_positions(self, as_id: str) -> dict[str, int]:
        """The service's positions; a service seen for the first time starts at the current
        positions (it is not sent the history of the server)."""
        columns = ", ".join(f"{s}_position" for s in STREAMS)
        row = await self.db.fetchrow(f"SELECT {columns} FROM appservice_state WHERE as_id = $1", as_id)
        if row is None:
            rows = await self.db.fetch("SELECT stream_name, position FROM stream_positions"
                                       f" WHERE stream_name IN ({_placeholders(len(STREAMS))})", *STREAMS)
            now = {s: 0 for s in STREAMS} | {r[0]: int(r[1]) for r in rows}
            await self.db.execute(
                f"INSERT INTO appservice_state (as_id, {columns}) VALUES ($1, {_placeholders(len(STREAMS), 2)})"
                " ON CONFLICT (as_id) DO NOTHING", as_id, *(now[s] for s in STREAMS))
            row = await self.db.fetchrow(f"SELECT {columns} FROM appservice_state WHERE as_id = $1", as_id)
        return {s: int(row[i]) for i, s in enumerate(STREAMS)}

    async def set_positions(self, as_id: str, positions: Mapping[str, int],
                            conn: Connection | None = None) -> None:
        """Move the service past stream items it was not interested in (or that are in a txn)."""
        names = [s for s in STREAMS if s in positions]
        if not names:
            return
        sets = ", ".join(f"{s}_position = ${i + 2}" for i, s in enumerate(names))
        await (conn or self.db).execute(f"UPDATE appservice_state SET {sets} WHERE as_id = $1",
                                        as_id, *(positions[s] for s in names))

    async def get_txn(self, as_id: str) -> StoredTxn | None:
        """The oldest transaction the service has not acknowledged."""
        row = await self.db.fetchrow(
            "SELECT txn_id, event_ids, extra FROM appservice_txns WHERE as_id = $1 ORDER BY txn_id LIMIT 1", as_id)
        if row is None:
            return None
        return StoredTxn(int(row[0]), json.loads(row[1]), json.loads(row[2]))

    async def create_txn(self, as_id: str, event_ids: Sequence[str], extra: Mapping[str, Any],
                         positions: Mapping[str, int], now_ms: int) -> StoredTxn:
        """Store a new transaction and move the service's positions past what it carries, in
        one database transaction: what is in it is in no later transaction, and a restart
        sends it again as it was."""
        async with self.db.transaction() as txn:
            txn_id = await txn.fetchval(
                "UPDATE appservice_state SET last_txn_id = last_txn_id + 1 WHERE as_id = $1 RETURNING last_txn_id",
                as_id)
            await txn.execute(
                "INSERT INTO appservice_txns (as_id, txn_id, event_ids, extra, created_ts) VALUES ($1, $2, $3, $4, $5)",
                as_id, int(txn_id), json.dumps(list(event_ids)), json.dumps(dict(extra)), now_ms)
            await self.set_positions(as_id, positions, txn)
        return StoredTxn(int(txn_id), list(event_ids), dict(extra))

    async def complete_txn(self, as_id: str, txn_id: int, to_device: Sequence[tuple[str, str, int]] = ()) -> None:
        """The service acknowledged the transaction: forget it, and the to-device messages
        (user, device, stream position) it delivered."""
        async with self.db.transaction() as txn:
            await txn.execute("DELETE FROM appservice_txns WHERE as_id = $1 AND txn_id = $2", as_id, txn_id)
            if to_device:
                await txn.executemany(
                    "DELETE FROM device_inbox WHERE user_id = $1 AND device_id = $2 AND stream_id = $3",
                    list(to_device))

    async def count_txns(self, as_id: str) -> int:
        return int(await self.db.fetchval("SELECT COUNT(*) FROM appservice_txns WHERE as_id = $1", as_id) or 0)

    # --- stream reads --------------------------------------------------------------------------

    async def get_aliases_for_rooms(self, room_ids: Iterable[str]) -> dict[str, list[str]]:
        rooms = sorted(set(room_ids))
        out: dict[str, list[str]] = {r: [] for r in rooms}
        for i in range(0, len(rooms), 500):
            chunk = rooms[i:i + 500]
            rows = await self.db.fetch(
                f"SELECT room_id, room_alias FROM room_aliases WHERE room_id IN ({_placeholders(len(chunk))})",
                *chunk)
            for r in rows:
                out[r[0]].append(r[1])
        return out

    async def get_joined_local_members(self, room_ids: Iterable[str], server_name: str) -> dict[str, set[str]]:
        """room -> its joined members of this server (services only act for local users)."""
        rooms = sorted(set(room_ids))
        out: dict[str, set[str]] = {r: set() for r in rooms}
        suffix = "%:" + server_name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        for i in range(0, len(rooms), 500):
            chunk = rooms[i:i + 500]
            rows = await self.db.fetch(
                "SELECT room_id, user_id FROM room_memberships WHERE membership = 'join'"
                f" AND user_id LIKE $1 ESCAPE '\\' AND room_id IN ({_placeholders(len(chunk), 2)})", suffix, *chunk)
            for r in rows:
                out[r[0]].add(r[1])
        return out

    async def get_to_device(self, after: int, positions: int) -> list[ToDeviceRow]:
        """To-device messages waiting for local devices at the next ``positions`` positions
        after ``after`` (all the messages of each: one position is one ``/sendToDevice``)."""
        rows = await self.db.fetch(
            "SELECT user_id, device_id, stream_id, message_json FROM device_inbox WHERE stream_id IN"
            " (SELECT DISTINCT stream_id FROM device_inbox WHERE stream_id > $1 ORDER BY stream_id LIMIT $2)"
            " ORDER BY stream_id, user_id, device_id", after, positions)
        return [ToDeviceRow(r[0], r[1], int(r[2]), json.loads(r[3])) for r in rows]

    async def get_device_list_changes(self, after: int, limit: int) -> list[tuple[str, int]]:
        """(user, position) of device list changes after ``after`` (private rows left out)."""
        rows = await self.db.fetch(
            "SELECT user_id, stream_id FROM device_lists_stream WHERE stream_id > $1 AND device_id NOT LIKE $2"
            " ORDER BY stream_id LIMIT $3", after, "private:%", limit)
        return [(r[0], int(r[1])) for r in rows]

    async def get_presence_changes(self, after: int, limit: int) -> list[tuple[Any, int]]:
        """(PresenceRow, position) of presence changes after ``after``."""
        from .presence import PresenceRow

        rows = await self.db.fetch(
            "SELECT user_id, presence, status_msg, last_active_ts, updated_ts, stream_id FROM presence"
            " WHERE stream_id > $1 ORDER BY stream_id LIMIT $2", after, limit)
        return [(PresenceRow(r[0], r[1], r[2], int(r[3]), int(r[4])), int(r[5])) for r in rows]

    async def get_local_device_ids(self, user_ids: Iterable[str]) -> dict[str, list[str]]:
        users = sorted(set(user_ids))
        out: dict[str, list[str]] = {}
        for i in range(0, len(users), 500):
            chunk = users[i:i + 500]
            rows = await self.db.fetch(
                f"SELECT user_id, device_id FROM devices WHERE user_id IN ({_placeholders(len(chunk))})"
                " ORDER BY user_id, device_id", *chunk)
            for r in rows:
                out.setdefault(r[0], []).append(r[1])
        return out

    async def get_joined_rooms(self, user_ids: Iterable[str]) -> dict[str, set[str]]:
        """user -> rooms the user is joined to."""
        users = sorted(set(user_ids))
        out: dict[str, set[str]] = {u: set() for u in users}
        for i in range(0, len(users), 500):
            chunk = users[i:i + 500]
            rows = await self.db.fetch(
                "SELECT user_id, room_id FROM room_memberships WHERE membership = 'join'"
                f" AND user_id IN ({_placeholders(len(chunk))})", *chunk)
            for r in rows:
                out[r[0]].add(r[1])
        return out

    # --- users ---------------------------------------------------------------------------------

    async def set_user_appservice(self, user_id: str, as_id: str) -> None:
        await self.db.execute("UPDATE users SET appservice_id = $2 WHERE user_id = $1", user_id, as_id)

    async def get_user_appservice(self, user_id: str) -> str | None:
        return await self.db.fetchval("SELECT appservice_id FROM users WHERE user_id = $1", user_id)

    # --- published room lists ---------------------------------------------------------------

    async def set_room_listed(self, as_id: str, network_id: str, room_id: str, listed: bool) -> None:
        if listed:
            await self.db.execute(
                "INSERT INTO appservice_room_list (as_id, network_id, room_id) VALUES ($1, $2, $3)"
                " ON CONFLICT (as_id, network_id, room_id) DO NOTHING", as_id, network_id, room_id)
        else:
            await self.db.execute(
                "DELETE FROM appservice_room_list WHERE as_id = $1 AND network_id = $2 AND room_id = $3",
                as_id, network_id, room_id)

    async def get_listed_rooms(self, as_id: str | None = None, network_id: str | None = None) -> list[str]:
        """Rooms published in one network's list (``as_id`` and ``network_id``), or in any."""
        if as_id is None:
            rows = await self.db.fetch("SELECT DISTINCT room_id FROM appservice_room_list ORDER BY room_id")
        else:
            rows = await self.db.fetch(
                "SELECT room_id FROM appservice_room_list WHERE as_id = $1 AND network_id = $2 ORDER BY room_id",
                as_id, network_id)
        return [r[0] for r in rows]

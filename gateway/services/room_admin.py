"""Room administration for server admins: room listings and details, blocking, shutting
down and purging rooms, making someone a room admin.

Follows Synapse's admin API (paths, fields, defaults), which operators' tools speak:
https://element-hq.github.io/synapse/latest/admin_api/rooms.html
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from federation.auth_rules import get_user_power_level

from ..http import MatrixError
from ..storage.room_admin import RoomAdminStore
from .events import EventSpec

log = logging.getLogger(__name__)

DEFAULT_ROOM_NAME = "Content Violation Notification"
DEFAULT_MESSAGE = "Sharing illegal content on this server is not permitted and rooms in violation will be blocked."
#: Finished deletions are reported for this long (as Synapse does).
DELETE_STATUS_KEEP_MS = 24 * 3600 * 1000

#: The state a room listing reads.
_LISTED_STATE = (
    ("m.room.create", ""), ("m.room.name", ""), ("m.room.topic", ""), ("m.room.avatar", ""),
    ("m.room.canonical_alias", ""), ("m.room.encryption", ""), ("m.room.join_rules", ""),
    ("m.room.guest_access", ""), ("m.room.history_visibility", ""),
)

#: order_by -> (field, largest first), with Synapse's deprecated aliases.
ORDERINGS: dict[str, tuple[str, bool]] = {
    "name": ("name", False), "alphabetical": ("name", False),
    "canonical_alias": ("canonical_alias", False),
    "joined_members": ("joined_members", True), "size": ("joined_members", True),
    "joined_local_members": ("joined_local_members", True),
    "version": ("version", True), "creator": ("creator", False), "encryption": ("encryption", False),
    "federatable": ("federatable", True), "public": ("public", True), "join_rules": ("join_rules", False),
    "guest_access": ("guest_access", False), "history_visibility": ("history_visibility", False),
    "state_events": ("state_events", True),
}


@dataclass(frozen=True)
class ShutdownOptions:
    new_room_user_id: str | None = None
    room_name: str = DEFAULT_ROOM_NAME
    message: str = DEFAULT_MESSAGE
    block: bool = False
    purge: bool = True
    force_purge: bool = False


def _str_or_none(content: Mapping[str, Any] | None, key: str) -> str | None:
    value = (content or {}).get(key)
    return value if isinstance(value, str) else None


class RoomAdminService:
    def __init__(self, hs):
        self.hs = hs
        self.store = RoomAdminStore(hs.db)
        self._running: dict[str, asyncio.Task] = {}

    def _is_local(self, user_id: str) -> bool:
        return user_id.partition(":")[2] == self.hs.server_name

    # --- reading -----------------------------------------------------------------

    async def describe_rooms(self, room_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The admin API's room objects, read in a few queries for all rooms at once."""
        events = self.hs.events
        counts = await self.store.get_counts(room_ids, self.hs.server_name)
        state_ids = await self.store.get_state_ids(room_ids, _LISTED_STATE)
        pdus = await events.get_pdus([e for ids in state_ids.values() for e in ids.values()])
        rooms = await events.store.get_rooms(room_ids)
        out = []
        for room_id in room_ids:
            room = rooms.get(room_id)
            if room is None:
                continue
            content = {k: pdus[e].content for k, e in state_ids.get(room_id, {}).items() if e in pdus}
            create = content.get(("m.room.create", ""), {})
            creator = room.creator or (pdus[state_ids[room_id][("m.room.create", "")]].sender
                                       if ("m.room.create", "") in content else None)
            c = counts[room_id]
            out.append({
                "room_id": room_id,
                "name": _str_or_none(content.get(("m.room.name", "")), "name"),
                "topic": _str_or_none(content.get(("m.room.topic", "")), "topic"),
                "avatar": _str_or_none(content.get(("m.room.avatar", "")), "url"),
                "canonical_alias": _str_or_none(content.get(("m.room.canonical_alias", "")), "alias"),
                "joined_members": c.joined_members,
                "joined_local_members": c.joined_local_members,
                "version": room.room_version.identifier,
                "creator": creator,
                "encryption": _str_or_none(content.get(("m.room.encryption", "")), "algorithm"),
                "federatable": create.get("m.federate", True) is not False,
                "public": room.is_public,
                "join_rules": _str_or_none(content.get(("m.room.join_rules", "")), "join_rule"),
                "guest_access": _str_or_none(content.get(("m.room.guest_access", "")), "guest_access"),
                "history_visibility": _str_or_none(content.get(("m.room.history_visibility", "")),
                                                   "history_visibility"),
                "state_events": c.state_events,
                "room_type": _str_or_none(create, "type"),
            })
        return out

    async def list_rooms(self, *, order_by: str, backwards: bool, search_term: str | None,
                         start: int, limit: int) -> dict[str, Any]:
        rooms = await self.describe_rooms(await self.store.list_room_ids())
        if search_term:
            rooms = [r for r in rooms if _matches(r, search_term)]
        field, largest_first = ORDERINGS[order_by]
        # Missing values sort last; ties keep room ID order.
        present = [r for r in rooms if r[field] is not None]
        absent = [r for r in rooms if r[field] is None]
        present.sort(key=lambda r: _sort_key(r[field]), reverse=largest_first)
        ordered = present + absent
        if backwards:
            ordered.reverse()
        page = ordered[start:start + limit]
        body: dict[str, Any] = {"rooms": [_listing(r) for r in page], "offset": start, "total_rooms": len(rooms)}
        if start + limit < len(ordered):
            body["next_batch"] = start + limit
        if start > 0:
            body["prev_batch"] = max(0, start - limit)
        return body

    async def room_details(self, room_id: str) -> dict[str, Any]:
        found = await self.describe_rooms([room_id])
        if not found:
            raise MatrixError.not_found("Room not found")
        details = found[0]
        details["joined_local_devices"] = await self.store.count_local_devices_in_room(room_id, self.hs.server_name)
        details["forgotten"] = await self._forgotten_by_all(room_id)
        return details

    async def _forgotten_by_all(self, room_id: str) -> bool:
        """Whether every local user who was in the room forgot it."""
        rows = await self.hs.db.fetch("SELECT user_id, forgotten FROM room_memberships WHERE room_id = $1", room_id)
        local = [bool(r[1]) for r in rows if self._is_local(r[0])]
        return bool(local) and all(local)

    async def members(self, room_id: str) -> list[str]:
        await self.hs.events.get_room(room_id)
        return sorted(m.user_id for m in await self.hs.events.state.get_members(room_id, "join"))

    async def state(self, room_id: str) -> list:
        await self.hs.events.get_room(room_id)
        current = await self.hs.events.state.get_current_state_ids(room_id)
        pdus = await self.hs.events.get_pdus(current.values())
        return [pdus[e] for _, e in sorted(current.items()) if e in pdus]

    # --- blocking ------------------------------------------------------------------

    async def is_blocked(self, room_id: str) -> bool:
        return await self.store.get_room_blocker(room_id) is not None

    async def check_not_blocked(self, room_id: str) -> None:
        if await self.is_blocked(room_id):
            raise MatrixError.forbidden("This room has been blocked on this server")

    # --- shutting down -------------------------------------------------------------

    def start_delete(self, room_id: str, admin: str, options: ShutdownOptions) -> str:
        """Start a deletion in the background (admin API v2); returns its delete_id."""
        if room_id in self._running:
            raise MatrixError(400, "M_UNKNOWN", f"A deletion of {room_id} is already running")
        delete_id = secrets.token_urlsafe(12)
        task = asyncio.get_running_loop().create_task(self._run_delete(delete_id, room_id, admin, options))
        self._running[room_id] = task
        task.add_done_callback(lambda _t: self._running.pop(room_id, None))
        return delete_id

    async def _run_delete(self, delete_id: str, room_id: str, admin: str, options: ShutdownOptions) -> None:
        now = self.hs.clock_ms
        try:
            result = await self.shutdown(room_id, admin, options, delete_id=delete_id)
        except MatrixError as e:
            await self.store.update_delete_task(delete_id, status="failed", error=e.error, now_ms=now())
        except Exception as e:  # the task must end with a status, never silently
            log.exception("deleting room %s failed", room_id)
            await self.store.update_delete_task(delete_id, status="failed", error=f"Internal error: {type(e).__name__}",
                                                now_ms=now())
        else:
            await self.store.update_delete_task(delete_id, status="complete", result=result, now_ms=now())

    async def shutdown(self, room_id: str, admin: str, options: ShutdownOptions,
                       delete_id: str | None = None) -> dict[str, Any]:
        """Move local users out of the room (into a new room if asked), block and purge it."""
        now = self.hs.clock_ms
        await self.hs.modules.callbacks.all_true("check_can_shutdown_room", "Shutting down this room", admin, room_id)
        if delete_id is not None:
            await self.store.add_delete_task(delete_id, room_id, "shutting_down", now())
        room = await self.hs.events.store.get_room(room_id)
        if options.block:
            await self.store.block_room(room_id, admin, now())
        result: dict[str, Any] = {"kicked_users": [], "failed_to_kick_users": [], "local_aliases": [],
                                  "new_room_id": None}
        if room is None:
            return result
        new_room_id = None
        if options.new_room_user_id is not None:
            new_room_id = await self._create_notice_room(options)
            result["new_room_id"] = new_room_id
        local = [m for m in await self.hs.events.state.get_members(room_id)
                 if m.membership in ("join", "invite", "knock") and self._is_local(m.user_id)]
        for member in local:
            try:
                # As Synapse: the user leaves (and forgets the room), then joins the public
                # notice room, where they cannot speak.
                await self.hs.rooms.leave(member.user_id, room_id)
                await self.hs.events.state.forget_room(room_id, member.user_id)
                if new_room_id is not None:
                    await self.hs.rooms.join(member.user_id, new_room_id, by_admin=True)
                result["kicked_users"].append(member.user_id)
            except MatrixError as e:
                log.warning("could not move %s out of %s: %s", member.user_id, room_id, e.error)
                result["failed_to_kick_users"].append(member.user_id)
        # Local aliases follow the users to the new room, or go with the room; it leaves
        # the public room list.
        directory = self.hs.directory.store
        result["local_aliases"] = await directory.get_aliases_for_room(room_id)
        if new_room_id is not None:
            await directory.move_aliases(room_id, new_room_id)
        else:
            for alias in result["local_aliases"]:
                await directory.delete_alias(alias)
        await directory.set_room_public(room_id, False)
        if delete_id is not None:
            await self.store.update_delete_task(delete_id, status="purging" if options.purge else "shutting_down",
                                                result=result, now_ms=now())
        if options.purge:
            still_in = [m.user_id for m in await self.hs.events.state.get_members(room_id, "join")
                        if self._is_local(m.user_id)]
            if still_in and not options.force_purge:
                raise MatrixError(400, "M_UNKNOWN", f"Local users are still in the room: {', '.join(still_in)}")
            await self.purge(room_id)
        return result

    async def _create_notice_room(self, options: ShutdownOptions) -> str:
        creator = options.new_room_user_id
        assert creator is not None
        room_id = await self.hs.rooms.create_room(creator, {
            "preset": "public_chat", "name": options.room_name,
            "power_level_content_override": {"users_default": -10},
        })
        await self.hs.events.send_event(room_id, EventSpec("m.room.message", creator,
                                                           {"msgtype": "m.text", "body": options.message}))
        return room_id

    async def purge(self, room_id: str) -> None:
        async with self.hs.events.room_lock(room_id):
            await self.store.purge_room(room_id)
            self.hs.events.forget_room(room_id)

    async def delete_status(self, *, room_id: str | None = None, delete_id: str | None = None) -> list[dict]:
        tasks = await self.store.get_delete_tasks(room_id=room_id, delete_id=delete_id,
                                                  since_ms=self.hs.clock_ms() - DELETE_STATUS_KEEP_MS)
        out = []
        for t in tasks:
            status, error = t.status, t.error
            if status in ("shutting_down", "purging") and t.room_id not in self._running:
                status, error = "failed", "The server restarted during the deletion"
            item: dict[str, Any] = {"delete_id": t.delete_id, "status": status, "shutdown_room": t.result}
            if error is not None:
                item["error"] = error
            out.append(item)
        return out

    # --- make_room_admin ---------------------------------------------------------------

    async def make_room_admin(self, room_id: str, user_id: str) -> None:
        """Give ``user_id`` the highest power a local member of the room has (Synapse's
        make_room_admin): a local admin of the room changes the power levels for them."""
        events = self.hs.events
        room = await events.get_room(room_id)
        current = await events.state.get_current_state_ids(room_id)
        keys = [("m.room.power_levels", ""), ("m.room.create", "")]
        pdus = await events.get_pdus([current[k] for k in keys if k in current])
        pl = pdus.get(current.get(("m.room.power_levels", ""), ""))
        create = pdus.get(current.get(("m.room.create", ""), ""))
        rv = room.room_version
        members = await events.state.get_members(room_id, "join")
        local = [m.user_id for m in members if self._is_local(m.user_id)]
        if not local:
            raise MatrixError(400, "M_UNKNOWN", "No local user is in the room: nobody here can grant power")

        def level(u: str) -> int | float:
            return get_user_power_level(u, pl.content if pl else None, create, rv)

        granter = max(local, key=level)
        target_level = level(granter)
        if target_level == float("inf"):  # room v12 creators: the most a PL event can give is 100 or more
            target_level = max([100, *[v for v in ((pl.content if pl else {}).get("users") or {}).values()
                                       if isinstance(v, int)]])
        if user_id != granter and level(user_id) < target_level:
            content = dict(pl.content) if pl else {}
            users = dict(content.get("users") or {})
            users[user_id] = int(target_level)
            content["users"] = users
            await events.send_event(room_id, EventSpec("m.room.power_levels", granter, content, ""))
        membership = await events.state.get_membership(room_id, user_id)
        if membership is None or membership.membership not in ("join", "invite"):
            join_rule = await events.state.get_current_state_event_id(room_id, "m.room.join_rules", "")
            rule = (await events.get_pdus([join_rule])).get(join_rule) if join_rule else None
            if rule is None or rule.content.get("join_rule") != "public":
                await self.hs.rooms.invite(granter, room_id, user_id)


def _sort_key(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        # Room versions sort numerically where they are numbers.
        return (0, int(value), "") if value.isdigit() else (1, 0, value.lower())
    return value


def _matches(room: Mapping[str, Any], term: str) -> bool:
    name = room.get("name") or ""
    alias = room.get("canonical_alias") or ""
    alias_local = alias[1:].split(":", 1)[0] if alias.startswith("#") else ""
    return term.lower() in name.lower() or term.lower() in alias_local.lower() or term in room["room_id"]


def _listing(room: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in room.items() if k not in ("topic", "avatar")}

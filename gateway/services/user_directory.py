"""The user directory and basic presence.

Spec: https://spec.matrix.org/latest/client-server-api/#user-directory and
https://spec.matrix.org/latest/client-server-api/#presence

Config (Synapse's keys): ``user_directory.enabled``, ``user_directory.search_all_users``,
``rc_presence.per_user`` (setting presence).
Searches read the membership and profile tables directly (no separate index to keep
in step). Presence is stored as each user sets it; /sync may read it with
``get_presence``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable

from federation.ids import is_valid_user_id

from ..http import MatrixError
from ..storage.destinations import presence_key
from ..storage.directory import DirectoryStore
from ..storage.presence import PresenceRow, PresenceStore
from ..storage.users import UserStore
from .stream_writers import WriterUnreachable

if TYPE_CHECKING:
    from ..config.directory import DirectoryConfig
    from ..modules import ModuleCallbacks
    from ..storage.database import Database
    from .events import EventsService
    from .federation.sender import FederationSender
    from .notifier import Notifier
    from .ratelimit import RateLimiter

log = logging.getLogger(__name__)

MAX_SEARCH_LIMIT = 50
PRESENCE_STATES = ("online", "offline", "unavailable")
MAX_STATUS_MSG = 1024
#: Presence entries per ``m.presence`` EDU when a join shares a room's presence (an EDU
#: stays well under the 64 KiB a server may take).
PRESENCE_PER_EDU = 200
#: A syncing user's last activity is stored at most this often (as Synapse's granularity).
LAST_ACTIVE_GRANULARITY_MS = 60_000


class UserDirectoryService:
    def __init__(self, *, config: DirectoryConfig, db: Database, server_name: str, events: EventsService,
                 notifier: Notifier, federation_sender: FederationSender, ratelimiter: RateLimiter,
                 modules: ModuleCallbacks, clock_ms: Callable[[], int]):
        """``events``: the rooms a user is in (who sees a presence change);
        ``federation_sender``: ``m.presence`` to other servers; ``ratelimiter``:
        ``rc_presence.per_user``."""
        self.config = config
        self.server_name = server_name
        self.directory = DirectoryStore(db)
        self.presence_store = PresenceStore(db)
        self.users = UserStore(db)
        self.events = events
        self.notifier = notifier
        self.federation_sender = federation_sender
        self.ratelimiter = ratelimiter
        self.modules = modules
        self.clock_ms = clock_ms
        self._tasks: set[asyncio.Task] = set()

    async def search(self, searcher: str, term: str, limit: int) -> dict[str, Any]:
        """``POST /user_directory/search``: ``{"results": [...], "limited": bool}``."""
        config = self.config
        if not config.user_directory_enabled or not term.strip():
            return {"results": [], "limited": False}
        limit = max(0, min(limit, MAX_SEARCH_LIMIT))
        found = await self.directory.search_users(searcher, term.strip(), limit=limit + 1,
                                                  search_all_users=config.user_directory_search_all_users)
        modules = self.modules
        results = []
        for u in found[:limit]:
            entry: dict[str, Any] = {"user_id": u.user_id}
            if u.displayname is not None:
                entry["display_name"] = u.displayname
            if u.avatar_url is not None:
                entry["avatar_url"] = u.avatar_url
            if modules.has("check_username_for_spam") and await modules.username_is_spam(
                    {"user_id": u.user_id, "display_name": u.displayname, "avatar_url": u.avatar_url}, searcher):
                continue  # a module hides this user from searches
            results.append(entry)
        return {"results": results, "limited": len(found) > limit}

    # --- presence -------------------------------------------------------------------

    async def set_presence(self, requester: str, user_id: str, presence: Any, status_msg: Any) -> None:
        if requester != user_id:
            raise MatrixError.forbidden("You can only set your own presence")
        if presence not in PRESENCE_STATES:
            raise MatrixError.invalid_param(f"'presence' must be one of {', '.join(PRESENCE_STATES)}")
        if status_msg is not None and (not isinstance(status_msg, str) or len(status_msg) > MAX_STATUS_MSG):
            raise MatrixError.invalid_param(f"'status_msg' must be a string of at most {MAX_STATUS_MSG} characters")
        self.ratelimiter.ratelimit(user_id)
        await self.presence_store.set_presence(user_id, presence, status_msg, self.clock_ms())
        await self._presence_changed(user_id)
        await self._send_presence_edu(user_id)

    async def user_syncing(self, user_id: str, set_presence: str) -> None:
        """A ``/sync`` (or ``/events``) with ``set_presence``: ``online`` makes the user
        online (and keeps ``last_active_ago`` fresh, within ``LAST_ACTIVE_GRANULARITY_MS``),
        ``unavailable`` takes an offline user to unavailable, ``offline`` changes nothing.
        With workers the change is the presence writer's: while it is unreachable the sync
        goes on without it (a later sync makes it), as a sync must not depend on presence.
        https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3sync"""
        if set_presence not in ("online", "unavailable"):
            return
        row = (await self.presence_store.get_presence([user_id])).get(user_id)
        now = self.clock_ms()
        if _changes_presence(row, set_presence):
            try:
                await self.mark_syncing(user_id, set_presence)  # the presence stream's writer's
            except WriterUnreachable as e:
                log.warning("%s's presence stays as it was: %s", user_id, e.error)
        elif set_presence == "online" and row is not None and now - row.last_active_ts > LAST_ACTIVE_GRANULARITY_MS:
            await self.presence_store.touch(user_id, now)

    async def mark_syncing(self, user_id: str, set_presence: str) -> None:
        """The presence change of a syncing user (``user_syncing`` saw one)."""
        row = (await self.presence_store.get_presence([user_id])).get(user_id)
        if not _changes_presence(row, set_presence):
            return  # another sync got there first
        status_msg = row.status_msg if row is not None else None
        await self.presence_store.set_presence(user_id, set_presence, status_msg, self.clock_ms())
        await self._presence_changed(user_id)
        await self._send_presence_edu(user_id)

    async def _presence_changed(self, user_id: str) -> None:
        """Wake the /sync requests that can see the user's presence."""
        notifier = self.notifier
        for room_id in await self.events.state.get_rooms_for_user(user_id):
            notifier.notify_room(room_id)
        notifier.notify_users([user_id])

    async def _send_presence_edu(self, user_id: str) -> None:
        """``m.presence`` to every server sharing a room with the user:
        https://spec.matrix.org/latest/server-server-api/#presence"""
        sender = self.federation_sender
        if not sender.federates():
            return
        servers: set[str] = set()
        for room_id in await self.events.state.get_rooms_for_user(user_id):
            servers |= await sender.joined_servers(room_id)
        if not servers:
            return
        row = (await self.presence_store.get_presence([user_id])).get(user_id)
        entry = {"user_id": user_id, **presence_json(row, self.clock_ms())}
        # Kept until each server took it: a sender that was down or restarts sends it then.
        await sender.keep_and_send(servers, "m.presence", {"push": [entry]}, presence_key(user_id))

    def on_new_state(self, room_id: str, pdus: Sequence[Any]) -> None:
        """Listener: joins to a room share presence at once, as Synapse does, so that the
        members see each other without waiting for the next change: a user of another
        server joining gets our members' presence; one of ours joining has theirs sent
        to the room's other servers (the sender hands each EDU to the process that sends
        to that server). https://spec.matrix.org/latest/server-server-api/#presence"""
        joined = [p.state_key for p in pdus if p.type == "m.room.member" and isinstance(p.content, dict)
                  and p.content.get("membership") == "join" and isinstance(p.state_key, str)]
        sender = self.federation_sender
        if not joined or not sender.started and all(i == sender.instance_name for i in sender.sender_instances):
            return  # nothing sends federation from here or elsewhere
        task = asyncio.get_running_loop().create_task(self._share_presence(room_id, joined))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _share_presence(self, room_id: str, joined: Sequence[str]) -> None:
        try:
            sender = self.federation_sender
            ours = ":" + self.server_name
            now = self.clock_ms()

            def send(servers: Sequence[str], rows: Sequence[PresenceRow]) -> None:
                entries = [{"user_id": r.user_id, **presence_json(r, now)} for r in rows]
                for i in range(0, len(entries), PRESENCE_PER_EDU):
                    sender.send_edu_to_servers(servers, "m.presence", {"push": entries[i:i + PRESENCE_PER_EDU]})

            newcomers = sorted({u.partition(":")[2] for u in joined if not u.endswith(ours)} - {self.server_name})
            if newcomers:
                present = await self.presence_store.get_present_members(room_id, self.server_name)
                if present:
                    send(newcomers, present)
            locals_ = [u for u in joined if u.endswith(ours)]
            if locals_:
                rows = await self.presence_store.get_presence(locals_)
                present = [rows[u] for u in locals_ if u in rows and rows[u].presence != "offline"]
                servers = await sender.joined_servers(room_id) if present else set()
                if servers:
                    send(sorted(servers), present)
        except Exception:
            log.exception("sharing presence with the servers of %s failed", room_id)

    async def on_presence_edu(self, origin: str, content: Any) -> None:
        """A remote server's ``m.presence`` of its own users: kept whether or not they share
        a room with ours yet (as Synapse does): the presence a server sends when one of our
        users joins its room arrives while the join is still being stored here. Who may
        see it is decided when it is read (room-mates only)."""
        pushes = content.get("push") if isinstance(content, dict) else None
        if not isinstance(pushes, list):
            return
        now = self.clock_ms()
        for entry in pushes[:1000]:
            if not isinstance(entry, dict):
                continue
            user_id, presence = entry.get("user_id"), entry.get("presence")
            if not isinstance(user_id, str) or user_id.partition(":")[2] != origin or presence not in PRESENCE_STATES:
                continue
            status_msg = entry.get("status_msg")
            if status_msg is not None and (not isinstance(status_msg, str) or len(status_msg) > MAX_STATUS_MSG):
                status_msg = None
            ago = entry.get("last_active_ago")
            ago = ago if isinstance(ago, int) and not isinstance(ago, bool) and 0 <= ago < 10**12 else 0
            await self.presence_store.set_presence(user_id, presence, status_msg, now - ago)
            await self._presence_changed(user_id)

    async def get_presence_for(self, requester: str, user_id: str) -> dict[str, Any]:
        """A user's presence, for themselves or users sharing a room with them."""
        if not is_valid_user_id(user_id):
            raise MatrixError.invalid_param(f"{user_id!r} is not a user ID")
        if requester != user_id and not await self.presence_store.share_a_room(requester, user_id):
            raise MatrixError.forbidden("You are not allowed to see their presence")
        if user_id.endswith(":" + self.server_name) and await self.users.get_user(user_id) is None:
            raise MatrixError.not_found("Unknown user")
        row = (await self.presence_store.get_presence([user_id])).get(user_id)
        return presence_json(row, self.clock_ms())

    async def get_presence(self, user_ids: Sequence[str]) -> dict[str, PresenceRow]:
        return await self.presence_store.get_presence(user_ids)


def presence_json(row: PresenceRow | None, now_ms: int) -> dict[str, Any]:
    if row is None:
        return {"presence": "offline"}
    out: dict[str, Any] = {"presence": row.presence, "last_active_ago": max(0, now_ms - row.last_active_ts),
                           "currently_active": row.presence == "online"}
    if row.status_msg is not None:
        out["status_msg"] = row.status_msg
    return out


def _changes_presence(row: PresenceRow | None, set_presence: str) -> bool:
    """Whether a sync's ``set_presence`` changes the stored presence: ``online`` unless
    online already, ``unavailable`` from offline."""
    current = row.presence if row is not None else "offline"
    return set_presence == "online" and current != "online" or set_presence == "unavailable" and current == "offline"

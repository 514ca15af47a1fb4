"""Server notices: messages from the server to a user, in a room of their own that the
system user owns.

Spec: https://spec.matrix.org/latest/client-server-api/#server-notices
Synapse's behaviour (what operators know): one notices room per user, created on the first
notice, tagged ``m.server_notice``; the user is invited (or joined, with ``auto_join``) and
cannot speak there; rejecting the invite is refused; after the user leaves, the next notice
opens a new room.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable

from federation.ids import is_valid_user_id

from ..http import MatrixError
from .events import EventSpec, SentEvent

if TYPE_CHECKING:
    from ..config.server_notices import ServerNoticesConfig
    from ..storage.database import Database
    from ..storage.users import UserStore
    from .account_data import AccountDataService
    from .events import EventsService
    from .rooms import RoomsService

log = logging.getLogger(__name__)

SERVER_NOTICE_TAG = "m.server_notice"
CANNOT_LEAVE = "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM"


class ServerNoticesService:
    def __init__(self, *, config: ServerNoticesConfig | None, db: Database, server_name: str, users: UserStore,
                 events: EventsService, rooms: RoomsService, account_data: AccountDataService,
                 clock_ms: Callable[[], int]):
        """``rooms`` creates the notices rooms and their memberships; ``account_data``
        tags them."""
        self.config = config
        self.db = db
        self.server_name = server_name
        self.users = users
        self.events = events
        self.rooms = rooms
        self.account_data = account_data
        self.clock_ms = clock_ms
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def enabled(self) -> bool:
        return self.config is not None

    @property
    def system_user_id(self) -> str | None:
        if self.config is None:
            return None
        return f"@{self.config.system_mxid_localpart}:{self.server_name}"

    def _lock(self, user_id: str) -> asyncio.Lock:
        lock = self._locks.get(user_id)
        if lock is None:
            lock = self._locks[user_id] = asyncio.Lock()
        return lock

    # --- sending -------------------------------------------------------------------

    async def send_notice(
        self, user_id: str, content: Mapping[str, Any], *, event_type: str = "m.room.message",
        state_key: str | None = None, txn: tuple[str, str, str] | None = None,
    ) -> SentEvent:
        """Send a notice to a local user (creating their notices room if needed);
        idempotent for ``txn``."""
        if self.config is None:
            raise MatrixError.bad_json("Server notices are not enabled on this server")
        if not is_valid_user_id(user_id) or user_id.partition(":")[2] != self.server_name:
            raise MatrixError.bad_json("Server notices can only be sent to local users")
        user = await self.users.get_user(user_id)
        if user is None or user.deactivated:
            raise MatrixError.not_found(f"Unknown user {user_id}")
        if txn is not None:
            known = await self.events.store.get_txn_event_id(*txn)
            if known is not None:
                stored = await self.events.store.get_event(known)
                assert stored is not None
                return SentEvent(stored.pdu, stored.stream_ordering)
        async with self._lock(user_id):
            room_id = await self.get_or_create_notice_room(user_id)
            spec = EventSpec(event_type, self.system_user_id, dict(content), state_key)
            return await self.events.send_event(room_id, spec, txn=txn)

    # --- the room --------------------------------------------------------------------

    async def find_notice_room(self, user_id: str) -> str | None:
        """The user's current notices room: created by the system user, which is still
        joined, with the user invited or joined."""
        system = self.system_user_id
        rows = await self.db.fetch(
            "SELECT s.room_id FROM room_memberships s JOIN room_memberships u ON u.room_id = s.room_id"
            " JOIN rooms r ON r.room_id = s.room_id"
            " WHERE s.user_id = $1 AND s.membership = 'join' AND u.user_id = $2"
            " AND u.membership IN ('invite', 'join') AND r.creator = $1"
            " ORDER BY r.created_ts DESC", system, user_id)
        return rows[0][0] if rows else None

    async def is_notice_room(self, room_id: str) -> bool:
        if self.config is None:
            return False
        room = await self.events.store.get_room(room_id)
        return room is not None and room.creator == self.system_user_id

    async def get_or_create_notice_room(self, user_id: str) -> str:
        existing = await self.find_notice_room(user_id)
        if existing is not None:
            await self._update_room_if_needed(existing)
            return existing
        config = self.config
        system = await self._ensure_system_user()
        body: dict[str, Any] = {
            "preset": "private_chat",
            "name": config.room_name,
            # Notices are local: the room never federates. The user may not speak.
            "creation_content": {"m.federate": False},
            "power_level_content_override": {"users_default": -10},
        }
        if config.room_topic:
            body["topic"] = config.room_topic
        if config.room_avatar_url:
            body["initial_state"] = [{"type": "m.room.avatar", "state_key": "", "content": {"url": config.room_avatar_url}}]
        room_id = await self.rooms.create_room(system, body)
        await self.rooms.invite(system, room_id, user_id)
        await self._tag_room(user_id, room_id)
        if config.auto_join:
            await self.rooms.join(user_id, room_id, by_admin=True)
        log.info("created server notices room %s for %s", room_id, user_id)
        return room_id

    async def _ensure_system_user(self) -> str:
        """The system user exists (without a password: nobody logs in as it) with the
        configured profile."""
        from ..storage.profiles import ProfileStore
        from ..storage.users import UserExistsError

        system = self.system_user_id
        config = self.config
        try:
            await self.users.create_user(system, password_hash=None, created_ts=self.clock_ms(),
                                                 displayname=config.system_mxid_display_name
                                                 or config.system_mxid_localpart)
        except UserExistsError:
            pass
        profiles = ProfileStore(self.db)
        if config.system_mxid_display_name is not None:
            await profiles.set_field(system, "displayname", config.system_mxid_display_name)
        if config.system_mxid_avatar_url is not None:
            await profiles.set_field(system, "avatar_url", config.system_mxid_avatar_url)
        return system

    async def _update_room_if_needed(self, room_id: str) -> None:
        """A changed ``room_name`` / avatar / topic in the config shows in existing rooms."""
        config = self.config
        wanted = {("m.room.name", "name"): config.room_name}
        if config.room_topic:
            wanted[("m.room.topic", "topic")] = config.room_topic
        if config.room_avatar_url:
            wanted[("m.room.avatar", "url")] = config.room_avatar_url
        current = await self.events.state.get_current_state_ids(room_id)
        pdus = await self.events.get_pdus([current[(t, "")] for (t, _) in wanted if (t, "") in current])
        for (etype, key), value in wanted.items():
            pdu = pdus.get(current.get((etype, ""), ""))
            if pdu is None or pdu.content.get(key) != value:
                await self.events.send_event(room_id, EventSpec(etype, self.system_user_id, {key: value}, ""))

    async def _tag_room(self, user_id: str, room_id: str) -> None:
        await self.account_data.add_tag(user_id, room_id, SERVER_NOTICE_TAG, {})

    # --- rules for users in notice rooms ------------------------------------------------

    async def check_may_leave(self, user_id: str, room_id: str) -> None:
        """Rejecting the invite to a notices room is refused (leaving after joining is fine)."""
        if not await self.is_notice_room(room_id):
            return
        member = await self.events.state.get_membership(room_id, user_id)
        if member is not None and member.membership == "invite":
            raise MatrixError(403, CANNOT_LEAVE, "You cannot reject this invite: it is for server notices")

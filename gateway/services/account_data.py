"""Account data (global and per room) and room tags.

Room tags are the room's ``m.tag`` account data (``{"tags": {tag: {"order": n}}}``), so
/sync sends them with the rest of the room's account data. ``m.fully_read`` and
``m.push_rules`` have their own APIs and cannot be set here.

Spec: https://spec.matrix.org/latest/client-server-api/#client-config and
https://spec.matrix.org/latest/client-server-api/#room-tagging
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..http import Codes, MatrixError
from ..storage.account_data import GLOBAL, AccountDataStore

if TYPE_CHECKING:
    from .events import EventsService
    from .notifier import Notifier

#: Types a client may not set through the account data API (spec: 405 for m.fully_read
#: on room data, and servers reject m.push_rules; both M_BAD_JSON).
SERVER_MANAGED = ("m.fully_read", "m.push_rules")
TAGS = "m.tag"
IGNORED_USERS = "m.ignored_user_list"
MAX_TAG_LENGTH = 255

_IGNORED_CACHE_SIZE = 10_000

E = TypeVar("E")  # a stored event (anything with a ``pdu``)


class AccountDataService:
    def __init__(self, *, store: AccountDataStore, events: EventsService, notifier: Notifier):
        """``events``: rooms and memberships (room account data needs a member)."""
        self.store = store
        self.events = events
        self.notifier = notifier
        #: user -> whom they ignore (read by every /sync; changed only through ``put``).
        self._ignored: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._ignored_changes = 0  # a read that raced with a change is not cached
        # Another process's change to someone's ignore list drops our copy too.
        notifier.on_data("ignored_users", self.forget_ignored)

    @staticmethod
    def _check_writable(data_type: str) -> None:
        if data_type in SERVER_MANAGED:
            raise MatrixError(405, Codes.BAD_JSON, f"Cannot set {data_type} through the account data API")

    async def _check_room(self, user_id: str, room_id: str) -> None:
        await self.events.get_room(room_id)
        member = await self.events.state.get_membership(room_id, user_id)
        if member is None:
            raise MatrixError.forbidden(f"You are not a member of {room_id}")

    async def get(self, user_id: str, room_id: str | None, data_type: str) -> dict[str, Any]:
        content = await self.store.get(user_id, room_id or GLOBAL, data_type)
        if content is None:
            raise MatrixError.not_found(f"No account data of type {data_type}")
        return content

    async def ignored_users(self, user_id: str) -> frozenset[str]:
        """The users ``user_id`` ignores (their ``m.ignored_user_list``).
        https://spec.matrix.org/latest/client-server-api/#ignoring-users"""
        hit = self._ignored.get(user_id)
        if hit is not None:
            self._ignored.move_to_end(user_id)
            return hit
        changes = self._ignored_changes
        content = await self.store.get(user_id, GLOBAL, IGNORED_USERS) or {}
        users = content.get("ignored_users")
        found = frozenset(u for u in users if isinstance(u, str)) if isinstance(users, dict) else frozenset()
        if changes == self._ignored_changes:
            self._ignored[user_id] = found
        while len(self._ignored) > _IGNORED_CACHE_SIZE:
            self._ignored.popitem(last=False)
        return found

    async def without_ignored(self, user_id: str, events: Sequence[E]) -> list[E]:
        """The events but those the user's ignored users sent, state events excepted (the
        spec: "Once ignored, the client will no longer receive events sent by that user,
        with the exception of state events")."""
        ignored = await self.ignored_users(user_id)
        if not ignored:
            return list(events)
        return [e for e in events if e.pdu.state_key is not None or e.pdu.sender not in ignored]

    async def put(self, user_id: str, room_id: str | None, data_type: str, content: dict[str, Any]) -> None:
        self._check_writable(data_type)
        if room_id is not None:
            await self._check_room(user_id, room_id)
        await self.store.put(user_id, room_id or GLOBAL, data_type, content)
        if data_type == IGNORED_USERS:
            self.forget_ignored(user_id)
            self.notifier.publish_data("ignored_users", user_id)
        self.notifier.notify_users([user_id])

    def forget_ignored(self, user_id: str) -> None:
        self._ignored_changes += 1
        self._ignored.pop(user_id, None)

    async def put_room_internal(self, user_id: str, room_id: str, data_type: str, content: dict[str, Any]) -> None:
        """Set server-managed room data (the read marker)."""
        await self.store.put(user_id, room_id, data_type, content)
        self.notifier.notify_users([user_id])

    # --- tags ----------------------------------------------------------------------

    async def get_tags(self, user_id: str, room_id: str) -> dict[str, Any]:
        content = await self.store.get(user_id, room_id, TAGS) or {}
        tags = content.get("tags")
        return tags if isinstance(tags, dict) else {}

    async def add_tag(self, user_id: str, room_id: str, tag: str, body: dict[str, Any]) -> None:
        if not tag or len(tag) > MAX_TAG_LENGTH:
            raise MatrixError.bad_json(f"A tag is 1 to {MAX_TAG_LENGTH} characters")
        order = body.get("order")
        if order is not None and (isinstance(order, bool) or not isinstance(order, (int, float))):
            raise MatrixError.bad_json("'order' must be a number")
        await self._check_room(user_id, room_id)

        def change(old: dict[str, Any] | None) -> dict[str, Any]:
            tags = dict((old or {}).get("tags") or {})
            tags[tag] = body
            return {"tags": tags}

        await self.store.update(user_id, room_id, TAGS, change)
        self.notifier.notify_users([user_id])

    async def remove_tag(self, user_id: str, room_id: str, tag: str) -> None:
        def change(old: dict[str, Any] | None) -> dict[str, Any]:
            tags = dict((old or {}).get("tags") or {})
            tags.pop(tag, None)
            return {"tags": tags}

        await self.store.update(user_id, room_id, TAGS, change)
        self.notifier.notify_users([user_id])

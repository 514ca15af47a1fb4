"""Typing notifications, kept in memory with an expiry (as the spec intends: they are
short-lived and not worth a write).

Positions: every change bumps an in-memory serial; a room's entry remembers the serial
of its last change, so /sync sends ``m.typing`` for the rooms changed since its token.
The serial restarts with the process, so tokens carry ``instance`` (random per process):
a token from another instance counts as "nothing seen", and the client gets the current
typing state of its rooms again (harmless: ``m.typing`` is a full replacement).

With workers, each change is published to the other processes (``Notifier.publish_data``)
and applied there as ``on_replicated_typing``, so a /sync on any process sees it; the
listeners below run only in the process that received the change.

Federation hooks:
- ``add_listener(cb)``: ``cb(room_id, user_id, typing)`` for every change made by a
  local user (the federation sender turns it into an ``m.typing`` EDU);
- ``on_remote_typing(room_id, user_id, typing, timeout_ms)``: apply an ``m.typing`` EDU.

Spec: https://spec.matrix.org/latest/client-server-api/#typing-notifications
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..http import MatrixError

if TYPE_CHECKING:
    from .events import EventsService
    from .notifier import Notifier

log = logging.getLogger(__name__)

#: Longest typing timeout a client may ask for (ms); longer requests are cut to this.
MAX_TYPING_TIMEOUT_MS = 120_000
#: Timeout for remote users whose server sends none (the federation EDU has none).
REMOTE_TYPING_TIMEOUT_MS = 30_000

TypingListener = Callable[[str, str, bool], None]


@dataclass
class _RoomTyping:
    serial: int = 0
    #: user -> expiry timer
    users: dict[str, asyncio.TimerHandle] = field(default_factory=dict)


class TypingService:
    def __init__(self, *, events: EventsService, notifier: Notifier):
        """``events``: rooms and memberships (only a joined user types)."""
        self.events = events
        self.notifier = notifier
        self.instance = secrets.token_hex(4)
        self.serial = 0
        self._rooms: dict[str, _RoomTyping] = {}
        self._listeners: list[tuple[TypingListener, bool]] = []
        notifier.on_data("typing", self.on_replicated_typing)

    def add_listener(self, listener: TypingListener, *, remote: bool = False) -> None:
        """``listener(room_id, user_id, typing)`` after a local user's typing changes
        (explicitly or by expiry); also other servers' users' with ``remote``."""
        self._listeners.append((listener, remote))

    # --- changes -------------------------------------------------------------------

    async def set_typing(self, user_id: str, room_id: str, typing: bool, timeout_ms: int | None) -> None:
        """A local user's PUT /typing: 403 unless joined to the room."""
        await self.check_may_type(user_id, room_id)
        timeout = min(max(0, timeout_ms or 30_000), MAX_TYPING_TIMEOUT_MS)
        self._apply(room_id, user_id, typing, timeout, local=True)

    async def check_may_type(self, user_id: str, room_id: str) -> None:
        """403 unless the user is joined to the room (404 for an unknown room)."""
        await self.events.get_room(room_id)
        member = await self.events.state.get_membership(room_id, user_id)
        if member is None or member.membership != "join":
            raise MatrixError.forbidden(f"You are not joined to {room_id}")

    async def on_remote_typing(self, room_id: str, user_id: str, typing: bool, timeout_ms: int | None = None) -> None:
        """An ``m.typing`` EDU from another server (checked by the caller: the user
        belongs to the origin and is in the room)."""
        timeout = min(max(0, timeout_ms or REMOTE_TYPING_TIMEOUT_MS), MAX_TYPING_TIMEOUT_MS)
        self._apply(room_id, user_id, typing, timeout, local=False)

    def on_replicated_typing(self, data: Any) -> None:
        """A change another process of this server received (it told the listeners)."""
        try:
            room_id, user_id, typing, timeout_ms = data["room"], data["user"], bool(data["typing"]), data["timeout"]
        except (TypeError, KeyError):
            log.warning("ignoring a malformed typing change from another process: %r", data)
            return
        self._apply(room_id, user_id, typing, min(max(0, int(timeout_ms)), MAX_TYPING_TIMEOUT_MS), local=False,
                    replicated=True)

    def _apply(self, room_id: str, user_id: str, typing: bool, timeout_ms: int, *, local: bool,
               replicated: bool = False) -> None:
        if not replicated:
            self.notifier.publish_data("typing", {"room": room_id, "user": user_id, "typing": typing,
                                                  "timeout": timeout_ms})
        room = self._rooms.setdefault(room_id, _RoomTyping())
        old = room.users.pop(user_id, None)
        if old is not None:
            old.cancel()
        if typing:
            loop = asyncio.get_running_loop()
            room.users[user_id] = loop.call_later(timeout_ms / 1000, self._expire, room_id, user_id, local,
                                                  replicated)
        elif old is None:
            if not room.users and room.serial == 0:
                del self._rooms[room_id]
            return  # stopped typing while not typing: no change
        if typing and old is not None:
            return  # still typing: only the expiry moved
        self._changed(room_id, user_id, typing, local, replicated)

    def _expire(self, room_id: str, user_id: str, local: bool, replicated: bool) -> None:
        """Each process expires its copy on the same timeout (the others' copies go too)."""
        room = self._rooms.get(room_id)
        if room is None or room.users.pop(user_id, None) is None:
            return
        self._changed(room_id, user_id, False, local, replicated)

    def _changed(self, room_id: str, user_id: str, typing: bool, local: bool, replicated: bool = False) -> None:
        self.serial += 1
        self._rooms[room_id].serial = self.serial
        if replicated:  # the process that received it tells its listeners; wake our syncs only
            self.notifier.wake_room(room_id)
            return
        self.notifier.notify_room(room_id)
        for listener, remote in self._listeners:
            if local or remote:
                try:
                    listener(room_id, user_id, typing)
                except Exception:
                    log.exception("typing listener failed")

    # --- reads ---------------------------------------------------------------------

    def current_position(self) -> int:
        return self.serial

    def get_typing(self, room_id: str) -> list[str]:
        room = self._rooms.get(room_id)
        return sorted(room.users) if room else []

    def changed_rooms(self, room_ids: Iterable[str], since: int, upto: int | None = None) -> dict[str, dict[str, Any]]:
        """``m.typing`` events for the rooms whose typing changed after ``since`` (and
        not after ``upto``, the position the answer's token names: a later change is the
        next answer's, else the client would get it twice under one token)."""
        out = {}
        for r in room_ids:
            room = self._rooms.get(r)
            if room is not None and room.serial > since and (upto is None or room.serial <= upto):
                out[r] = {"type": "m.typing", "content": {"user_ids": sorted(room.users)}}
        return out

    def close(self) -> None:
        for room in self._rooms.values():
            for handle in room.users.values():
                handle.cancel()
        self._rooms.clear()

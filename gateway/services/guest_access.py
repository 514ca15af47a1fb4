"""Guest accounts: registering them (``allow_guest_access``), which rooms they may join,
upgrading them to full accounts, and their removal from rooms that stop admitting guests.

Spec: https://spec.matrix.org/latest/client-server-api/#guest-access

- A guest gets a numeric user ID (the localparts ``/register`` refuses to others), that
  number as display name, and an access token, without a password or user-interactive auth.
- What a guest may call is decided per handler (``@guest_allowed``,
  gateway/http/auth.py).
- A guest joins a room only while its ``m.room.guest_access`` is ``can_join``; a room of
  another server that this server is not in yet cannot be checked, so guests cannot join it.
- When a room's ``m.room.guest_access`` stops being ``can_join`` (by one of our users or
  another server's), our guests in it leave it.
- A guest becomes a full account by registering with ``guest_access_token`` and their own
  localpart as ``username``: same user ID, rooms and devices, now with a password.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from federation.events import PDU

from ..http import Codes, MatrixError
from ..storage.users import UserExistsError

if TYPE_CHECKING:
    from .auth import AuthService
    from .events import EventsService
    from .rooms import RoomsService

log = logging.getLogger(__name__)

GUEST_ACCESS = "m.room.guest_access"
CAN_JOIN = "can_join"
#: Digits of a generated guest localpart.
GUEST_LOCALPART_DIGITS = 12


async def guest_can_join(events, room_id: str) -> bool:
    """Whether the room's current ``m.room.guest_access`` is ``can_join`` (False for a
    room whose state this server does not have)."""
    event_id = await events.state.get_current_state_event_id(room_id, GUEST_ACCESS, "")
    if event_id is None:
        return False
    pdu = (await events.get_pdus([event_id])).get(event_id)
    return pdu is not None and pdu.content.get("guest_access") == CAN_JOIN


class GuestAccessService:
    def __init__(self, *, enabled: bool, server_name: str, auth: AuthService, events: EventsService,
                 rooms: RoomsService, clock_ms: Callable[[], int]):
        """``enabled``: ``allow_guest_access``; ``auth`` makes guests' accounts and tokens;
        ``rooms`` takes them out of rooms that stop admitting them."""
        self.enabled = enabled
        self.server_name = server_name
        self.auth = auth
        self.events = events
        self.rooms = rooms
        self.clock_ms = clock_ms
        self._tasks: set[asyncio.Task] = set()

    async def register_guest(self, *, device_id: str | None, display_name: str | None,
                             refresh_token: bool = False) -> dict:
        """A new guest account and its first access token (``POST /register?kind=guest``);
        403 ``M_GUEST_ACCESS_FORBIDDEN`` unless ``allow_guest_access``."""
        if not self.enabled:
            raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guest access is disabled")
        users = self.auth.users
        smallest = 10 ** (GUEST_LOCALPART_DIGITS - 1)
        for _ in range(10):
            localpart = str(smallest + secrets.randbelow(9 * smallest))
            user_id = f"@{localpart}:{self.server_name}"
            try:
                await users.create_user(user_id, password_hash=None, created_ts=self.clock_ms(), is_guest=True,
                                        displayname=localpart)
            except UserExistsError:
                continue
            # A guest cannot log in again: its token lasts, unless it asked for a refresh token.
            return await self.auth.login_session(user_id, device_id=device_id, display_name=display_name,
                                                    refresh_token=refresh_token, expiring=False)
        raise MatrixError(500, Codes.UNKNOWN, "Could not allocate a guest user ID")

    async def check_upgrade(self, guest_access_token: object, localpart: str) -> str:
        """The guest's user ID when ``guest_access_token`` is the access token of the guest
        ``localpart`` names (registering it as a full account); 403 otherwise."""
        refused = MatrixError.forbidden("Cannot register a taken user ID without that guest's access token")
        if not isinstance(guest_access_token, str) or not guest_access_token:
            raise refused
        try:
            who = await self.auth.get_requester(guest_access_token)
        except MatrixError:
            raise refused from None
        if not who.is_guest or who.user_id != f"@{localpart}:{self.server_name}":
            raise refused
        return who.user_id

    async def check_may_join(self, room_id: str) -> None:
        """403 ``M_GUEST_ACCESS_FORBIDDEN`` unless the room admits guests."""
        if not await guest_can_join(self.events, room_id):
            raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, f"{room_id} does not admit guests")

    # --- removal when a room stops admitting guests ----------------------------------

    def on_new_state(self, room_id: str, pdus: Sequence[PDU]) -> None:
        """Listener for new state events (ours or received): a change of the room's
        ``m.room.guest_access`` sends our guests out unless it still admits them."""
        if any(p.type == GUEST_ACCESS and p.state_key == "" for p in pdus):
            task = asyncio.get_running_loop().create_task(self._remove_guests(room_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _remove_guests(self, room_id: str) -> None:
        try:
            if await guest_can_join(self.events, room_id):
                return
            for user_id in await self.auth.users.get_joined_guests(room_id):
                try:
                    await self.rooms.leave(user_id, room_id, None)
                except MatrixError as e:
                    log.warning("could not remove guest %s from %s: %s", user_id, room_id, e)
        except Exception:
            log.exception("removing guests from %s failed", room_id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

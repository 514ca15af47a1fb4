"""Account moderation: locked, suspended and shadow-banned accounts.

- Locking (https://spec.matrix.org/latest/client-server-api/#account-locking): every
  authenticated request but logging out is 401 ``M_USER_LOCKED`` with ``soft_logout``
  (``AuthService.get_requester``), and no new session can be made.
- Suspension (https://spec.matrix.org/latest/client-server-api/#account-suspension): the
  user keeps reading, leaving, redacting their own events and logging out; joining,
  knocking, inviting, sending, changing state or their profile and creating rooms are 403
  ``M_USER_SUSPENDED`` (``check_not_suspended`` in the handlers of those actions).
- Shadow-banning (Synapse's admin API): what the user sends into rooms is answered as if it
  was sent, with a made-up event ID, and dropped; nobody else ever sees it. As in Synapse,
  the answer to a dropped action comes after a random 1 to 10 s (``ShadowBanDelay``), so
  that its speed does not give the ban away.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import random
import secrets
from collections.abc import Awaitable, Callable

from federation.room_versions import EventFormat, RoomVersion

from .auth import Requester, user_suspended

#: Keys the made-up event IDs of shadow-banned users' transactions (a retry gets the same one).
_FAKE_ID_KEY = os.urandom(32)


class ShadowBanDelay:
    """Waits a random whole number of seconds (1 to 10, as Synapse) before a dropped action
    of a shadow-banned user is answered. The random source and the sleep are given, so that
    tests neither wait nor guess."""

    def __init__(self, *, rng: random.Random | None = None,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                 low_s: int = 1, high_s: int = 10):
        self._rng = rng or random.SystemRandom()
        self._sleep = sleep
        self.low_s, self.high_s = low_s, high_s

    async def __call__(self) -> None:
        await self._sleep(self._rng.randint(self.low_s, self.high_s))


def check_not_suspended(who: Requester) -> None:
    """403 ``M_USER_SUSPENDED`` for a suspended user (call it before the action)."""
    if who.suspended:
        raise user_suspended()


def fake_event_id(room_version: RoomVersion, server_name: str, txn: tuple[str, str, str] | None = None) -> str:
    """An event ID of the room version's format that names no event. The same transaction
    (user, device, transaction ID) gets the same ID, as a real retry would."""
    if txn is None:
        digest = secrets.token_bytes(32)
    else:
        digest = hmac.new(_FAKE_ID_KEY, "\0".join(txn).encode("utf-8"), hashlib.sha256).digest()
    if room_version.event_format is EventFormat.V1:
        return f"${base64.b32encode(digest[:15]).decode().lower()}:{server_name}"
    if room_version.event_format is EventFormat.V2:
        return "$" + base64.b64encode(digest).decode().rstrip("=")
    return "$" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def fake_room_id(server_name: str) -> str:
    return f"!{secrets.token_urlsafe(13)}:{server_name}"


def forbid_redacting_others(who: Requester, target_sender: str | None) -> None:
    """A suspended user may redact their own events only."""
    if who.suspended and target_sender != who.user_id:
        raise user_suspended()


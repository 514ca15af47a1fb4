"""Reporting content: users report events, rooms and users to the server's admins, who
read the reports through the admin API (gateway/admin_api/reports.py).

Spec: https://spec.matrix.org/latest/client-server-api/#reporting-content

What a reporter learns, as the spec allows:
- an event report needs the reporter to be joined and able to see the event; an unknown
  room, an unknown or redacted event, an event of another room and a room the reporter
  is not in all get the same 404;
- a room report is refused (404) only for a room this server does not know;
- a user report always succeeds (200), whether or not the user exists; one about a local
  user that does not exist is not stored. Reports of other servers' users are kept (an
  admin may want to act on a remote spammer here).
Reports are rate limited per reporter (``rc_reports``, Synapse's key) before anything is
looked up, and reasons are at most ``MAX_REASON_LENGTH`` characters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from federation.ids import is_valid_room_id, is_valid_user_id

from ..http import MatrixError
from ..storage.reports import ReportStore

#: The longest reason accepted (Synapse's limit for user reports, here for all three).
MAX_REASON_LENGTH = 1000
#: ``score`` (removed from the spec in v1.18, still sent by older clients): -100 (most
#: offensive) to 0.
SCORE_RANGE = (-100, 0)

_EVENT_NOT_FOUND = "The event was not found or you are not joined to the room"


def parse_reason(body: Mapping[str, Any], *, required: bool) -> str | None:
    """``reason``: a string (may be blank) of at most ``MAX_REASON_LENGTH`` characters."""
    if "reason" not in body or body["reason"] is None:
        if required:
            raise MatrixError.missing_param("'reason' is required")
        return None
    reason = body["reason"]
    if not isinstance(reason, str):
        raise MatrixError.bad_json("'reason' must be a string")
    if len(reason) > MAX_REASON_LENGTH:
        raise MatrixError.bad_json(f"'reason' must be at most {MAX_REASON_LENGTH} characters")
    return reason


def parse_score(body: Mapping[str, Any]) -> int | None:
    score = body.get("score")
    if score is None:
        return None
    low, high = SCORE_RANGE
    if isinstance(score, bool) or not isinstance(score, int) or not low <= score <= high:
        raise MatrixError.bad_json(f"'score' must be an integer from {low} to {high}")
    return score


class ReportsService:
    def __init__(self, *, server_name: str, db, events, users, ratelimiter, clock_ms):
        self.server_name = server_name
        self.store = ReportStore(db)
        self.events = events
        self.users = users
        self.ratelimiter = ratelimiter
        self.clock_ms = clock_ms

    async def report_event(self, user_id: str, room_id: str, event_id: str, reason: str | None,
                           score: int | None) -> int:
        self.ratelimiter.ratelimit(user_id)
        not_found = MatrixError.not_found(_EVENT_NOT_FOUND)
        room = await self.events.store.get_room(room_id) if is_valid_room_id(room_id) else None
        member = await self.events.state.get_membership(room_id, user_id) if room is not None else None
        if member is None or member.membership != "join":
            raise not_found
        stored = await self.events.store.get_event(event_id)
        if stored is None or stored.pdu.room_id != room_id or stored.outlier or stored.rejected_reason:
            raise not_found
        if not await self.events.filter_visible(user_id, [stored]):
            raise not_found
        if await self.events.store.get_redactions_for([event_id]):
            raise not_found
        return await self.store.add_event_report(room_id=room_id, event_id=event_id, user_id=user_id,
                                                 reason=reason, score=score, received_ts=self.clock_ms())

    async def report_room(self, user_id: str, room_id: str, reason: str) -> int:
        """Reporters need not be in the room (spec: servers MUST NOT require it)."""
        self.ratelimiter.ratelimit(user_id)
        if not is_valid_room_id(room_id) or await self.events.store.get_room(room_id) is None:
            raise MatrixError.not_found("The room was not found")
        return await self.store.add_room_report(room_id=room_id, user_id=user_id, reason=reason,
                                                received_ts=self.clock_ms())

    async def report_user(self, user_id: str, target_user_id: str, reason: str) -> int | None:
        """Stored unless the target is a local user that does not exist; the reporter is
        told the same either way. 400 for something that is not a user ID at all."""
        self.ratelimiter.ratelimit(user_id)
        if not is_valid_user_id(target_user_id):
            raise MatrixError.invalid_param(f"{target_user_id!r} is not a user ID")
        if target_user_id.partition(":")[2] == self.server_name \
                and await self.users.get_user(target_user_id) is None:
            return None
        return await self.store.add_user_report(target_user_id=target_user_id, user_id=user_id, reason=reason,
                                                received_ts=self.clock_ms())

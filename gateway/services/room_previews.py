"""Room previews: what a user who is not in a room may read of it.

Spec: https://spec.matrix.org/latest/client-server-api/#room-previews and
https://spec.matrix.org/latest/client-server-api/#room-history-visibility

A room whose current ``m.room.history_visibility`` is ``world_readable`` can be read by
any user of this server, guests included, without joining ("peeking"): its state, its
messages, the context of an event, a room initialSync and the ``/events?room_id=``
stream. Which events they see is still decided event by event, by the visibility at each
event (``EventsService.filter_visible``).
"""

from __future__ import annotations

from ..http import MatrixError
from ..storage.state import MemberRow

WORLD_READABLE = "world_readable"


async def is_world_readable(events, room_id: str) -> bool:
    """Whether the room's current history visibility is ``world_readable``."""
    event_id = await events.state.get_current_state_event_id(room_id, "m.room.history_visibility", "")
    if event_id is None:
        return False
    pdu = (await events.get_pdus([event_id])).get(event_id)
    return pdu is not None and pdu.content.get("history_visibility") == WORLD_READABLE


async def reader_membership(events, room_id: str, user_id: str, *, allow_departed: bool = True) -> MemberRow | None:
    """How ``user_id`` may read the room: their membership when they are joined (or, with
    ``allow_departed``, left: they read up to their departure); None when they may only
    peek because the room is world readable; 403 ``M_FORBIDDEN`` otherwise, a banned user
    included (as Synapse: the ban cuts them off) (404 for an unknown room)."""
    await events.get_room(room_id)
    member = await events.state.get_membership(room_id, user_id)
    if member is not None and (member.membership == "join"
                               or (allow_departed and member.membership == "leave")):
        return member
    if await is_world_readable(events, room_id):
        return None
    if member is not None and member.membership == "ban":
        raise MatrixError.forbidden(f"You are banned from {room_id}")
    raise MatrixError.forbidden(f"You are not a member of {room_id}, and it is not world readable")

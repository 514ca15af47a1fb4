"""Room pagination in topological order (``/messages``), with backfill at the gaps.

Spec: https://spec.matrix.org/latest/client-server-api/#syncing (a room's events in the
order of the DAG) and
https://spec.matrix.org/latest/server-server-api/#backfilling-and-retrieving-missing-events

A room's history is paged by each event's *topological key*: (depth, stream position).
Depth orders the DAG; the stream position breaks ties and places events that came
late (backfilled ones, with their decreasing positions) by depth among those we had.

Tokens, each a point between two keys ("the events up to here"):

- ``t<depth>-<stream>``: the point just after the key (depth, stream). Backwards from it
  come keys ``<=`` it, forwards keys ``>`` it. A backwards page's ``end`` is the point
  just before its last event: ``t<depth>-<stream - 1>``.
- ``s<stream>`` (a /sync ``prev_batch`` or ``next_batch``, /context's tokens, older
  /messages tokens): the point before every timeline event after that stream position
  (``EventStore.get_topological_key``), so paging back from a /sync ``prev_batch``
  never repeats an event of that timeline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..http import MatrixError

if TYPE_CHECKING:
    from ..storage.events import EventStore, StoredEvent
    from .federation.backfill import BackfillHandler

#: A topological key: (depth, stream position).
Key = tuple[int, int]

_TOPOLOGICAL = re.compile(r"t(-?\d+)-(-?\d+)")
_STREAM = re.compile(r"s(-?\d+)")
#: Backfill requests one page of /messages may make (each fills a gap or history).
MAX_BACKFILLS = 3


@dataclass(frozen=True)
class RoomToken:
    """A parsed pagination token: a stream position, and a depth for a topological one."""

    stream: int
    depth: int | None = None

    def __str__(self) -> str:
        return f"s{self.stream}" if self.depth is None else f"t{self.depth}-{self.stream}"


def parse_room_token(token: str) -> RoomToken:
    """``t<depth>-<stream>`` or ``s<stream>`` (a /sync token may carry more after ``_``)."""
    head = token.split("_", 1)[0]
    m = _TOPOLOGICAL.fullmatch(head)
    if m:
        return RoomToken(int(m.group(2)), int(m.group(1)))
    m = _STREAM.fullmatch(head)
    if m:
        return RoomToken(int(m.group(1)))
    raise MatrixError.invalid_param(f"Invalid pagination token {token!r}")


def token_before(event: StoredEvent) -> str:
    """The point just before an event: where a backwards page after it goes on."""
    return str(RoomToken(event.stream_ordering - 1, event.pdu.depth))


def token_after(event: StoredEvent) -> str:
    """The point just after an event: where a forwards page after it goes on."""
    return str(RoomToken(event.stream_ordering, event.pdu.depth))


class RoomPagination:
    """Pages of a room's timeline in topological order; paging back to a backward
    extremity fetches the missing history from the room's servers first."""

    def __init__(self, store: EventStore, backfill: BackfillHandler):
        self.store = store
        self.backfill = backfill

    async def key(self, room_id: str, token: RoomToken) -> Key:
        """The topological key a token stands for in the room."""
        if token.depth is not None:
            return (token.depth, token.stream)
        return await self.store.get_topological_key(room_id, token.stream)

    async def page(self, room_id: str, *, from_key: Key | None, backwards: bool, limit: int,
                   to_key: Key | None = None, conditions: dict[str, Any] | None = None) -> list[StoredEvent]:
        """Up to ``limit`` timeline events from ``from_key`` (None: the end the direction
        starts from) towards ``to_key`` (``EventStore.get_room_events_topological``).

        Backwards (without ``to_key``), a page that reaches a
        backward extremity first backfills it: the missing prev events of the events
        in the page's depth range, and of the room's oldest events once the page comes
        up short. Then the page is read again, the fetched events in their place."""
        conditions = conditions or {}

        async def read() -> list[StoredEvent]:
            return await self.store.get_room_events_topological(
                room_id, from_key=from_key, backwards=backwards, limit=limit, to_key=to_key, **conditions)

        found = await read()
        if not backwards or to_key is not None or limit <= 0:
            return found
        for _ in range(MAX_BACKFILLS):
            full = len(found) >= limit
            extremities = await self._extremities(room_id, from_key, found, full=full)
            if not extremities:
                break
            # A page that reaches before what we hold waits for a partial-state room's
            # full state (docs/faster-joins.md); a full one is answered with what we have.
            fetched = await self.backfill.backfill(room_id, extremities=extremities, wait_for_full_state=not full)
            found = await read()
            if not fetched:
                break
        return found

    async def _extremities(self, room_id: str, from_key: Key | None, found: list[StoredEvent],
                           *, full: bool) -> list[str]:
        """Backward extremities a backwards page from ``from_key`` could reach. An
        extremity's depth is unknown until it is fetched: it is taken as its child's,
        so a gap just after ``from_key`` (the first event a /sync timeline showed has
        a missing prev) counts too."""
        top = None if from_key is None else from_key[0]
        if full:
            # A prev event is below its child: a child at the page's last depth has none in it.
            return await self.store.get_backward_extremities(room_id, max_depth=top,
                                                             min_depth=found[-1].pdu.depth + 1)
        near = await self.store.get_backward_extremities(room_id, max_depth=top)
        oldest = await self.store.get_backward_extremities(room_id, max_depth=top, oldest=True)
        return sorted(set(near) | set(oldest))

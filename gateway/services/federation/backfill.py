"""Backfill as the requesting side: when a client paginates ``/messages`` back to a
*backward extremity*, a prev event of a timeline event that is not in the room's
timeline, ask a server in the room for it and earlier events
(``GET /_matrix/federation/v1/backfill``). Extremities are the history before our join,
and the gaps after it that ``get_missing_events`` left (``gateway/services/pagination.py`` finds
those near the page a client asks for). A forked past has several; all go in one
request, so every branch is followed back to the create event. A prev event we hold in
another room is none: history does not cross rooms.

Spec: https://spec.matrix.org/latest/server-server-api/#backfilling-and-retrieving-missing-events

The events are checked like any others from the past (format, signatures, hashes, auth
against their auth events: ``FederationEventHandler.persist_outliers``), then the
accepted ones join the timeline, prev events first, with positions from the decreasing
'backfill' stream (so they never look new to /sync) and a state group each (history
visibility reads it). The state before an event is, as for any event, the resolution
(the room version's algorithm) of the states after its prev events; when a prev event's
state is unknown to us (the edge of what we hold), the state before the event comes from
the serving server's ``/state_ids`` and its events are fetched and checked as outliers.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from federation.events import PDU
from federation.net.client import FederationRequestError
from federation.signing import quote_path_segment

from ...storage.events import note_timeline_events
from ...storage.state import EMPTY_STATE, StateKey, StateSnapshot, next_position
from .receive import PDUError

log = logging.getLogger(__name__)

#: Events asked for per backfill request.
BACKFILL_LIMIT = 100
#: Backward extremities named in one request.
MAX_EXTREMITIES = 20
#: Timeline events searched for backward extremities at each end of a room's timeline.
_EXTREMITY_SCAN = 1000
#: An extremity no server gave us is asked for again after this, doubling per failure...
RETRY_MS = 60_000
#: ... up to this.
MAX_RETRY_MS = 24 * 3600_000
#: Extremities remembered as resting (the oldest forgotten first).
MAX_RESTING = 10_000


class BackfillHandler:
    def __init__(self, hs):
        self.hs = hs
        #: Events asked for per request, whatever the client's page size (as Synapse
        #: does): fewer round trips, and a short history comes whole, down to the create
        #: event, with no state to ask for where it meets the join's state.
        self.batch_size = BACKFILL_LIMIT
        self.events = hs.events
        self.store = hs.events.store
        self.db = hs.db
        #: Extremities no server gave us: event ID -> (failures, when to ask again in
        #: ms). In memory: a restart only costs one more request per extremity.
        self._resting: dict[str, tuple[int, int]] = {}

    async def backward_extremities(self, room_id: str) -> list[str]:
        """The room's backward extremities near both ends of its timeline (the history
        before our join, the gaps among the newest events)."""
        found = await self.store.get_backward_extremities(room_id, oldest=True, scan=_EXTREMITY_SCAN)
        found += await self.store.get_backward_extremities(room_id, scan=_EXTREMITY_SCAN)
        return sorted(set(found))

    async def backfill(self, room_id: str, limit: int | None = None, *,
                       extremities: Sequence[str] | None = None, wait_for_full_state: bool = True) -> int:
        """Fetch and store up to ``limit`` (default ``batch_size``) events older than the
        room's backward ``extremities`` (default: ``backward_extremities``); returns how
        many joined the timeline (0: nothing more to get). Events we hold as outliers
        (the state a join brought) that come in the batch join the timeline with the
        others. An extremity no server gave us rests a while before it is asked for
        again (every page of /messages at a gap nobody can fill would ask).
        A partial-state room is backfilled once its full state is there (until then the
        state at our history's edge would cost a member-by-member fetch); without
        ``wait_for_full_state``, not at all until then."""
        if wait_for_full_state:
            if not await self.hs.partial_state.await_full_state(room_id):
                return 0
        elif await self.hs.partial_state.is_partial(room_id):
            return 0
        async with self.events.room_lock(room_id):
            if extremities is None:
                extremities = await self.backward_extremities(room_id)
            now = self.hs.clock_ms()

            def filled(meta) -> bool:
                return meta is not None and not meta.outlier and meta.room_id == room_id

            # (Another page may have filled some while this one waited for the lock.)
            metas = await self.store.get_event_meta(extremities)
            extremities = [e for e in extremities if not filled(metas.get(e))
                           and self._resting.get(e, (0, 0))[1] <= now][:MAX_EXTREMITIES]
            if not extremities:
                return 0
            stored = await self._fetch(room_id, extremities, limit)
            metas = await self.store.get_event_meta(extremities)
            for e in extremities:
                if filled(metas.get(e)):
                    self._resting.pop(e, None)
                    continue
                fails = self._resting.pop(e, (0, 0))[0] + 1
                self._resting[e] = (fails, now + min(RETRY_MS << min(fails - 1, 20), MAX_RETRY_MS))
                while len(self._resting) > MAX_RESTING:
                    del self._resting[next(iter(self._resting))]
            return stored

    async def _fetch(self, room_id: str, extremities: list[str], limit: int | None) -> int:
        """One ``/backfill`` from the extremities, to the room's servers in turn until one
        answers with events; stores them (``_store``)."""
        servers = [s for s in await self.hs.directory.servers_in_room(room_id) if s != self.hs.server_name]
        room_server = room_id.split(":", 1)[1] if ":" in room_id else None
        if room_server:
            servers.append(room_server)
        for server in dict.fromkeys(s for s in servers if s != self.hs.server_name):
            try:
                answer = await self.hs.federation_client.request(
                    "GET", server, f"/_matrix/federation/v1/backfill/{quote_path_segment(room_id)}",
                    query=[("v", p) for p in extremities] + [("limit", str(min(limit or self.batch_size, BACKFILL_LIMIT)))],
                )
            except FederationRequestError as e:
                log.info("backfill of %s from %s failed: %s", room_id, server, e)
                continue
            pdus = answer.get("pdus") if isinstance(answer, dict) else None
            if isinstance(pdus, list) and pdus:
                return await self._store(server, room_id, pdus)
        return 0

    async def _store(self, origin: str, room_id: str, pdus: list[Any]) -> int:
        fed = self.hs.federation_events
        room = await self.store.get_room(room_id)
        rv = room.room_version
        result = await fed.persist_outliers(origin, room_id, rv, pdus)
        metas = await self.store.get_event_meta(result.accepted)
        # Only events still outliers (not already in the timeline) join it.
        new = {e: p for e, p in result.accepted.items() if e in metas and metas[e].outlier}
        if not new:
            return 0
        outside = await self._outside_states(room_id, {p for e in new.values() for p in e.prev_event_ids if p not in new})
        after: dict[str, Mapping[StateKey, str]] = {}
        rows: list[tuple[PDU, dict[StateKey, str], str | None, StateSnapshot]] = []
        for pdu in _prev_order(new):
            prevs = list(dict.fromkeys(pdu.prev_event_ids))
            if any(p in new and p not in after for p in prevs):
                continue  # a prev event of this batch was left out: so is this one
            sets = [after[p] if p in after else outside[p].state for p in prevs if p in after or p in outside]
            try:
                if len(sets) == len(prevs):
                    before = await fed.resolve(rv, sets) if sets else {}
                else:
                    before = await fed.state_before_remote_event(origin, room, pdu.event_id)
            except PDUError as e:
                log.info("no state for backfilled %s in %s: %s", pdu.event_id, room_id, e)
                continue
            state = dict(before)
            replaces = None
            if pdu.state_key is not None:
                replaces = state.get((pdu.type, pdu.state_key))
                state[(pdu.type, pdu.state_key)] = pdu.event_id
            after[pdu.event_id] = state
            base = next((outside[p] for p in pdu.prev_event_ids if p in outside), EMPTY_STATE)
            rows.append((pdu, state, replaces, base))
        if not rows:
            return 0
        async with self.db.transaction() as txn:
            # Prev events first, so positions (all below any we hold) increase with history.
            last = await next_position(txn, "backfill", -len(rows))
            snaps: dict[str, StateSnapshot] = {}
            for i, (pdu, state, replaces, base) in enumerate(rows):
                base = next((snaps[p] for p in pdu.prev_event_ids if p in snaps), base)
                if base.group is not None and dict(base.state) == state:
                    snap = base
                else:
                    delta: dict[StateKey, str | None] = {k: v for k, v in state.items() if base.state.get(k) != v}
                    delta.update({k: None for k in base.state if k not in state})
                    snap = await self.events.state.store_state_group(
                        txn, room_id=room_id, event_id=None, prev=base, state=state, delta=delta)
                snaps[pdu.event_id] = snap
                await txn.execute(
                    "UPDATE events SET outlier = FALSE, stream_ordering = $2, state_group = $3, replaces_state = $4"
                    " WHERE event_id = $1 AND outlier = TRUE",
                    pdu.event_id, last + i, snap.group, replaces,
                )
                if pdu.prev_event_ids:
                    await txn.executemany(
                        "INSERT INTO event_edges (event_id, prev_event_id, room_id) VALUES ($1, $2, $3)"
                        " ON CONFLICT (event_id, prev_event_id) DO NOTHING",
                        [(pdu.event_id, e, room_id) for e in pdu.prev_event_ids],
                    )
            # Their relationships were written with the outliers; replies now count for /threads.
            await note_timeline_events(txn, [(pdu, last + i) for i, (pdu, *_rest) in enumerate(rows)])
        return len(rows)

    async def _outside_states(self, room_id: str, event_ids: set[str]) -> dict[str, StateSnapshot]:
        """The states after those of ``event_ids`` that are in the room's timeline (a
        prev event in another room is as unknown as a missing one)."""
        metas = await self.store.get_event_meta(event_ids)
        out = {}
        for e, m in metas.items():
            if not m.outlier and m.state_group is not None and m.room_id == room_id:
                out[e] = await self.events.state.get_state(m.state_group)
        return out


def _prev_order(events: Mapping[str, PDU]) -> list[PDU]:
    """The events with each after its prev events from the batch (ties: depth, ID)."""
    waiting = {e: sum(1 for p in set(pdu.prev_event_ids) if p in events) for e, pdu in events.items()}
    children: dict[str, list[str]] = {}
    for e, pdu in events.items():
        for p in set(pdu.prev_event_ids):
            if p in events:
                children.setdefault(p, []).append(e)
    heap = [(events[e].depth, e) for e, n in waiting.items() if n == 0]
    heapq.heapify(heap)
    out: list[PDU] = []
    while heap:
        _, e = heapq.heappop(heap)
        out.append(events[e])
        for c in children.get(e, ()):
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(heap, (events[c].depth, c))
    return out  # events in a prev cycle (impossible for valid hashes) are left out

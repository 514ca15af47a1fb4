"""Backfill as the requesting side: when a client paginates ``/messages`` back past the
oldest event we hold of a room we joined over federation, ask a server in the room for
earlier events (``GET /_matrix/federation/v1/backfill``).

Spec: https://spec.matrix.org/latest/server-server-api/#backfilling-and-retrieving-missing-events

Where from: the *backward extremities*, the prev events of our oldest timeline events
(those before the first event we received live, i.e. the join) that are not in our
timeline. A forked past has several; all go in one request, so every branch is
followed back to the create event.

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
from collections.abc import Mapping
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
#: Our oldest timeline events searched for backward extremities.
_EXTREMITY_SCAN = 1000


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

    async def backward_extremities(self, room_id: str) -> list[str]:
        """Prev events, not in our timeline, of the room's oldest timeline events up to
        the first one we received live (later gaps are not history to page through)."""
        first_live = await self.db.fetchval(
            "SELECT MIN(stream_ordering) FROM events WHERE room_id = $1 AND outlier = FALSE"
            " AND rejected_reason IS NULL AND soft_failed = FALSE AND stream_ordering > 0",
            room_id,
        )
        rows = await self.db.fetch(
            "SELECT DISTINCT ed.prev_event_id FROM (SELECT event_id FROM events WHERE room_id = $1"
            "  AND outlier = FALSE AND rejected_reason IS NULL AND soft_failed = FALSE AND stream_ordering <= $2"
            f"  ORDER BY stream_ordering LIMIT {_EXTREMITY_SCAN}) o"
            " JOIN event_edges ed ON ed.event_id = o.event_id"
            " WHERE NOT EXISTS (SELECT 1 FROM events p WHERE p.event_id = ed.prev_event_id AND p.outlier = FALSE)",
            room_id, first_live if first_live is not None else 0,
        )
        return sorted(r[0] for r in rows)

    async def backfill(self, room_id: str, limit: int | None = None) -> int:
        """Fetch and store up to ``limit`` (default ``batch_size``) events older than the
        oldest timeline events of the room; returns how many joined the timeline (0:
        nothing more to get). Events we hold as outliers (the state a join brought) that
        come in the batch join the timeline with the others.
        A partial-state room is backfilled once its full state is there (until then the
        state at our history's edge would cost a member-by-member fetch)."""
        if not await self.hs.partial_state.await_full_state(room_id):
            return 0
        async with self.events.room_lock(room_id):
            extremities = (await self.backward_extremities(room_id))[:MAX_EXTREMITIES]
            if not extremities:
                return 0
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
        outside = await self._outside_states({p for e in new.values() for p in e.prev_event_ids if p not in new})
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

    async def _outside_states(self, event_ids: set[str]) -> dict[str, StateSnapshot]:
        """The states after those of ``event_ids`` that are in our timeline."""
        metas = await self.store.get_event_meta(event_ids)
        out = {}
        for e, m in metas.items():
            if not m.outlier and m.state_group is not None:
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

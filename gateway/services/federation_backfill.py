"""Backfill as the requesting side: when a client paginates ``/messages`` back past the
oldest event we hold of a room we joined over federation, ask a server in the room for
earlier events (``GET /_matrix/federation/v1/backfill``).

Spec: https://spec.matrix.org/latest/server-server-api/#backfilling-and-retrieving-missing-events

The events are checked like any others from the past (format, signatures, hashes, auth
against their auth events: ``FederationEventHandler.persist_outliers``), then the
accepted ones join the timeline with positions from the decreasing 'backfill' stream (so
they never look new to /sync) and a state group each, for history visibility.

The state at a backfilled event is derived walking backwards from the oldest event we
knew: the state after an event is the state before its child; before a state event,
its key takes the earlier value found among its auth events (power levels, members,
join rules of a join...), else keeps the event itself. This assumes the linear history
most rooms have; a forked past is judged by the state of its later branch.
"""

from __future__ import annotations

import logging
from typing import Any

from federation.events import PDU
from federation.ids import get_domain_from_id
from federation.net.client import FederationRequestError
from federation.signing import quote_path_segment

from ..storage.state import EMPTY_STATE, StateKey, StateSnapshot, next_position

log = logging.getLogger(__name__)

#: Events asked for per backfill request.
BACKFILL_LIMIT = 100


class BackfillHandler:
    def __init__(self, hs):
        self.hs = hs
        self.events = hs.events
        self.store = hs.events.store
        self.db = hs.db

    async def _oldest_timeline_event(self, room_id: str):
        row = await self.db.fetchrow(
            "SELECT event_id FROM events WHERE room_id = $1 AND outlier = FALSE AND rejected_reason IS NULL"
            " AND soft_failed = FALSE ORDER BY stream_ordering ASC LIMIT 1",
            room_id,
        )
        return None if row is None else await self.store.get_event(row[0])

    async def backfill(self, room_id: str, limit: int = BACKFILL_LIMIT) -> int:
        """Fetch and store up to ``limit`` events older than the oldest timeline event
        of the room; returns how many joined the timeline (0: nothing more to get)."""
        async with self.events.room_lock(room_id):
            oldest = await self._oldest_timeline_event(room_id)
            if oldest is None or oldest.pdu.type == "m.room.create" or oldest.state_group is None:
                return 0
            prevs = list(oldest.pdu.prev_event_ids)
            if not prevs:
                return 0
            servers = [s for s in await self.hs.directory.servers_in_room(room_id) if s != self.hs.server_name]
            try:
                servers.append(get_domain_from_id(oldest.pdu.sender))
            except ValueError:
                pass
            for server in dict.fromkeys(s for s in servers if s != self.hs.server_name):
                try:
                    answer = await self.hs.federation_client.request(
                        "GET", server, f"/_matrix/federation/v1/backfill/{quote_path_segment(room_id)}",
                        query=[("v", p) for p in prevs] + [("limit", str(min(limit, BACKFILL_LIMIT)))],
                    )
                except FederationRequestError as e:
                    log.info("backfill of %s from %s failed: %s", room_id, server, e)
                    continue
                pdus = answer.get("pdus") if isinstance(answer, dict) else None
                if isinstance(pdus, list) and pdus:
                    return await self._store(server, room_id, oldest, pdus)
            return 0

    async def _store(self, origin: str, room_id: str, oldest, pdus: list[Any]) -> int:
        room = await self.store.get_room(room_id)
        rv = room.room_version
        result = await self.hs.federation_events.persist_outliers(origin, room_id, rv, pdus)
        metas = await self.store.get_event_meta(result.accepted)
        # Only events still outliers (not already in the timeline) join it.
        new = [p for e, p in result.accepted.items() if e in metas and metas[e].outlier]
        if not new:
            return 0
        new.sort(key=lambda p: (-p.depth, p.event_id))
        base = await self.events.state.get_state(oldest.state_group)
        state: dict[StateKey, str] = dict(base.state)
        o = oldest.pdu
        if o.state_key is not None and state.get((o.type, o.state_key)) == o.event_id:
            if oldest.replaces_state:
                state[(o.type, o.state_key)] = oldest.replaces_state
            else:
                del state[(o.type, o.state_key)]
        auth_pdus = await self.events.get_pdus({a for p in new for a in p.auth_event_ids})
        rows: list[tuple[PDU, dict[StateKey, str], str | None]] = []
        for p in new:
            if p.state_key is not None:
                state[(p.type, p.state_key)] = p.event_id
            after = dict(state)
            replaces = None
            if p.state_key is not None:
                key = (p.type, p.state_key)
                earlier = [a for a in p.auth_event_ids if a in auth_pdus
                           and (auth_pdus[a].type, auth_pdus[a].state_key) == key]
                if earlier:
                    replaces = earlier[0]
                    state[key] = replaces
                elif p.type == "m.room.create":
                    state = {}
            rows.append((p, after, replaces))
        async with self.db.transaction() as txn:
            last = await next_position(txn, "backfill", -len(rows))
            positions = range(last + len(rows) - 1, last - 1, -1)
            prev_snap: StateSnapshot = base
            for (p, after, replaces), pos in zip(rows, positions):
                if dict(prev_snap.state) != after:
                    delta: dict[StateKey, str | None] = {k: v for k, v in after.items() if prev_snap.state.get(k) != v}
                    delta.update({k: None for k in prev_snap.state if k not in after})
                    prev_snap = await self.events.state.store_state_group(
                        txn, room_id=room_id, event_id=None, prev=prev_snap if prev_snap.group else EMPTY_STATE,
                        state=after, delta=delta)
                await txn.execute(
                    "UPDATE events SET outlier = FALSE, stream_ordering = $2, state_group = $3, replaces_state = $4"
                    " WHERE event_id = $1 AND outlier = TRUE",
                    p.event_id, pos, prev_snap.group, replaces,
                )
                if p.prev_event_ids:
                    await txn.executemany(
                        "INSERT INTO event_edges (event_id, prev_event_id, room_id) VALUES ($1, $2, $3)"
                        " ON CONFLICT (event_id, prev_event_id) DO NOTHING",
                        [(p.event_id, e, room_id) for e in p.prev_event_ids],
                    )
        return len(rows)

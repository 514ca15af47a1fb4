"""Serving room data to other servers: single events, the state at an event, auth
chains, missing events and backfill, to the servers allowed to see them.

Spec: https://spec.matrix.org/latest/server-server-api/#retrieving-events (and
https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1timestamp_to_eventroomid),
https://spec.matrix.org/latest/server-server-api/#backfilling-and-retrieving-missing-events,
https://spec.matrix.org/latest/server-server-api/#retrieving-event-authorisation-information
and server ACLs (https://spec.matrix.org/latest/server-server-api/#server-access-control-lists-acls).

Who may see what:
- room-level requests (``/state``, ``/state_ids``, ``/event_auth``,
  ``/get_missing_events``, ``/backfill``): the server must pass the room's server ACL
  and have a joined member in the room (403 ``M_FORBIDDEN`` otherwise);
- each event, by the history visibility at it and the asking server's members in the
  state at it: ``world_readable`` and ``shared`` to any server; ``invited`` to a server
  with an invited or joined member then; ``joined`` to one with a joined member then.
  ``/event`` of an event the server may not see: 403; in ``/backfill`` and
  ``/get_missing_events`` such events are sent redacted, so the DAG stays whole;
- the events of a user who deactivated with ``erase: true``: redacted, to every server.
Rejected events are never served (404).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from federation.ids import InvalidIdentifierError, get_domain_from_id
from federation.redaction import redact
from federation.server_acl import server_is_allowed

from ...http import MatrixError
from ...storage.events import StoredEvent
from ...storage.state import StateKey
from ..spaces import check_room_id

#: Upper bounds of what one request may ask for.
MAX_BACKFILL = 100
MAX_MISSING = 100


def wire_json(pdu) -> dict[str, Any]:
    """An event as sent to other servers: without our local ``unsigned`` data."""
    body = pdu.get_pdu_json()
    unsigned = body.get("unsigned")
    if isinstance(unsigned, dict):
        kept = {k: v for k, v in unsigned.items() if k == "age_ts"}
        if kept:
            body["unsigned"] = kept
        else:
            body.pop("unsigned", None)
    return body


def wire_events_oldest_first(event_ids: Iterable[str], pdus: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``event_ids`` (those in ``pdus``) as sent to other servers, in depth order (then by
    ID): a receiver that applies an answer's state and auth chain in the order given,
    as SyTest's fake server does, ends with the newest of each (type, state_key), not
    with whichever old power levels an event ID's sort put last."""
    found = [pdus[e] for e in event_ids if e in pdus]
    found.sort(key=lambda pdu: (pdu.depth, pdu.event_id))
    return [wire_json(pdu) for pdu in found]


def _domain(user_id: str) -> str | None:
    try:
        return get_domain_from_id(user_id)
    except InvalidIdentifierError:
        return None


class RoomDataService:
    def __init__(self, hs):
        self.hs = hs
        self.events = hs.events
        self.store = hs.events.store
        self.state = hs.events.state

    # --- access ------------------------------------------------------------------

    async def check_server_acl(self, origin: str, room_id: str) -> None:
        """403 if the room's current server ACL denies ``origin``."""
        acl_id = await self.state.get_current_state_event_id(room_id, "m.room.server_acl", "")
        if acl_id is None:
            return
        acl = (await self.events.get_pdus([acl_id])).get(acl_id)
        if acl is not None and not server_is_allowed(acl.content, origin):
            raise MatrixError.forbidden("Server is denied by the room's server ACL")

    async def server_is_allowed(self, origin: str, room_id: str) -> bool:
        acl_id = await self.state.get_current_state_event_id(room_id, "m.room.server_acl", "")
        if acl_id is None:
            return True
        acl = (await self.events.get_pdus([acl_id])).get(acl_id)
        return acl is None or server_is_allowed(acl.content, origin)

    async def assert_server_in_room(self, origin: str, room_id: str, *, for_state: bool = False) -> None:
        """404 for an unknown room; 403 unless ``origin`` passes the ACL and has a
        joined member in the room now (in a partial-state room, or is one of the
        servers send_join named). ``for_state``: the state of a partial-state room is
        not ours to give (404: ask another server)."""
        if await self.store.get_room(room_id) is None:
            raise MatrixError.not_found(f"Unknown room {room_id}")
        partial = (await self.hs.partial_state.servers_for([room_id])).get(room_id)
        if partial is not None and for_state:
            raise MatrixError.not_found(f"This server does not have the full state of {room_id} yet")
        await self.check_server_acl(origin, room_id)
        if partial is not None and origin in partial:
            return
        escaped = origin.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        found = await self.hs.db.fetchval(
            "SELECT user_id FROM room_memberships WHERE room_id = $1 AND membership = 'join'"
            " AND user_id LIKE $2 ESCAPE '\\' LIMIT 1",
            room_id, "%:" + escaped,
        )
        if found is None:
            raise MatrixError.forbidden(f"{origin} is not in room {room_id}")

    async def visible_to_server(self, origin: str, events: Sequence[StoredEvent]) -> list[bool]:
        """For each event, whether ``origin`` may see it (history visibility and the
        server's members in the state after the event)."""
        verdicts: dict[int, bool] = {}
        out = []
        for e in events:
            group = e.state_group
            if group is None:
                out.append(False)
                continue
            if group not in verdicts:
                verdicts[group] = await self._group_visible(origin, group)
            out.append(verdicts[group])
        return out

    async def _group_visible(self, origin: str, group: int) -> bool:
        snap = await self.state.get_state(group)
        hv_id = snap.state.get(("m.room.history_visibility", ""))
        hv = "shared"
        if hv_id is not None:
            ev = (await self.events.get_pdus([hv_id])).get(hv_id)
            value = ev.content.get("history_visibility") if ev is not None else None
            if isinstance(value, str):
                hv = value
        if hv in ("world_readable", "shared") or hv not in ("invited", "joined"):
            return True
        member_ids = [eid for (t, sk), eid in snap.state.items() if t == "m.room.member" and _domain(sk) == origin]
        members = await self.events.get_pdus(member_ids)
        allowed = {"join"} if hv == "joined" else {"join", "invite"}
        return any(m.content.get("membership") in allowed for m in members.values())

    # --- reads ---------------------------------------------------------------------

    async def get_event(self, origin: str, event_id: str) -> dict[str, Any]:
        stored = await self.store.get_event(event_id)
        if stored is None or stored.rejected_reason is not None:
            raise MatrixError.not_found("Event not found")
        if not await self.server_is_allowed(origin, stored.pdu.room_id):
            raise MatrixError.forbidden("Server is denied by the room's server ACL")
        if stored.outlier:
            await self.assert_server_in_room(origin, stored.pdu.room_id)
        elif not (await self.visible_to_server(origin, [stored]))[0]:
            # An event of the room's history it may not read (it joined later): a server
            # in the room gets it redacted, as from backfill (as Synapse does), to build
            # the room's DAG and state; others are refused.
            await self.assert_server_in_room(origin, stored.pdu.room_id)
            return redact(wire_json(stored.pdu), stored.pdu.room_version)
        body = wire_json(stored.pdu)
        return redact(body, stored.pdu.room_version) if await self._erased([stored]) else body

    async def _erased(self, events: Sequence[StoredEvent]) -> set[str]:
        """The events whose sender deactivated with ``erase: true``: other servers are
        served them redacted (those that had them already keep their copy).
        https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3accountdeactivate"""
        suffix = ":" + self.hs.server_name
        senders = {e.pdu.sender for e in events if e.pdu.sender.endswith(suffix)}
        erased = await self.hs.auth.users.erased_among(senders) if senders else set()
        return {e.event_id for e in events if e.pdu.sender in erased}

    async def _event_in_room(self, room_id: str, event_id: str) -> StoredEvent:
        stored = await self.store.get_event(event_id)
        if stored is None or stored.pdu.room_id != room_id or stored.rejected_reason is not None:
            raise MatrixError.not_found("Event not found in this room")
        return stored

    async def state_ids_before(self, room_id: str, event_id: str) -> tuple[list[str], list[str]]:
        """(state event IDs, auth chain IDs) of the state before ``event_id``."""
        ids = sorted(set((await self.state_before(room_id, event_id)).values()))
        chain = await self.store.get_auth_chain_ids(ids)
        return ids, sorted(chain)

    async def state_before(self, room_id: str, event_id: str) -> dict[StateKey, str]:
        """The state before ``event_id``: (type, state_key) -> event ID."""
        stored = await self._event_in_room(room_id, event_id)
        if stored.outlier or stored.state_group is None:
            raise MatrixError.not_found("The state at this event is not known here")
        state: dict[StateKey, str] = dict((await self.state.get_state(stored.state_group)).state)
        pdu = stored.pdu
        if pdu.state_key is not None and state.get((pdu.type, pdu.state_key)) == pdu.event_id:
            key = (pdu.type, pdu.state_key)
            if stored.replaces_state:
                state[key] = stored.replaces_state
            else:
                del state[key]
        return state

    async def get_state(self, room_id: str, event_id: str) -> dict[str, Any]:
        state_ids, chain_ids = await self.state_ids_before(room_id, event_id)
        pdus = await self.events.get_pdus([*state_ids, *chain_ids])
        return {"pdus": wire_events_oldest_first(state_ids, pdus),
                "auth_chain": wire_events_oldest_first(chain_ids, pdus)}

    async def get_event_auth(self, room_id: str, event_id: str) -> dict[str, Any]:
        await self._event_in_room(room_id, event_id)
        chain = sorted(await self.store.get_auth_chain_ids([event_id]))
        pdus = await self.events.get_pdus(chain)
        return {"auth_chain": wire_events_oldest_first(chain, pdus)}

    async def _for_server(self, origin: str, events: Sequence[StoredEvent]) -> list[dict[str, Any]]:
        visible = await self.visible_to_server(origin, events)
        erased = await self._erased(events)
        out = []
        for e, ok in zip(events, visible):
            body = wire_json(e.pdu)
            out.append(body if ok and e.event_id not in erased else redact(body, e.pdu.room_version))
        return out

    async def _walk_back(self, starts: Iterable[str], stop: set[str], limit: int, min_depth: int,
                         include_starts: bool) -> list[str]:
        """Event IDs reached from ``starts`` over prev edges, deepest first (one query per
        step of the walk), not entering ``stop`` nor going below ``min_depth``."""
        starts = list(dict.fromkeys(starts))
        seen: set[str] = set(starts)
        heap: list[tuple[int, str]] = []
        out: list[str] = []
        if include_starts:
            metas = await self.store.get_event_meta(starts)
            for e in starts:
                if e in metas and not metas[e].outlier and e not in stop:
                    heapq.heappush(heap, (-metas[e].depth, e))
        else:
            edges = await self.store.get_prev_edges(starts)
            for e in starts:
                for p, depth in edges.get(e, ()):
                    if p not in seen and p not in stop and depth >= min_depth:
                        seen.add(p)
                        heapq.heappush(heap, (-depth, p))
        while heap and len(out) < limit:
            batch = []
            while heap and len(out) + len(batch) < limit:
                batch.append(heapq.heappop(heap)[1])
            out += batch
            edges = await self.store.get_prev_edges(batch)
            for e in batch:
                for p, depth in edges.get(e, ()):
                    if p not in seen and p not in stop and depth >= min_depth:
                        seen.add(p)
                        heapq.heappush(heap, (-depth, p))
        return out

    async def _load_timeline(self, room_id: str, ids: Sequence[str]) -> list[StoredEvent]:
        found = await self.store.get_events(ids)
        return [found[e] for e in ids
                if e in found and found[e].pdu.room_id == room_id and not found[e].outlier
                and found[e].rejected_reason is None]

    async def get_missing_events(self, origin: str, room_id: str, earliest: Sequence[str],
                                 latest: Sequence[str], limit: int, min_depth: int) -> list[dict[str, Any]]:
        """Events before ``latest`` back to (not including) ``earliest``, oldest first."""
        limit = max(0, min(limit, MAX_MISSING))
        ids = await self._walk_back(latest, set(earliest), limit, min_depth, include_starts=False)
        events = await self._load_timeline(room_id, ids)
        events.sort(key=lambda e: (e.pdu.depth, e.stream_ordering))
        return await self._for_server(origin, events)

    async def backfill(self, origin: str, room_id: str, from_ids: Sequence[str], limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` events from ``from_ids`` (included) backwards, newest first."""
        limit = max(0, min(limit, MAX_BACKFILL))
        ids = await self._walk_back(from_ids, set(), limit, 0, include_starts=True)
        events = await self._load_timeline(room_id, ids)
        return await self._for_server(origin, events)


    async def timestamp_to_event(self, origin: str, room_id: str, ts: int, *, forwards: bool) -> dict[str, Any]:
        """The first timeline event at or after ``ts`` (``forwards``) or the last at or
        before it, for a server in the room that may see it; 404 if there is none."""
        check_room_id(room_id)
        await self.assert_server_in_room(origin, room_id)
        found = await self.store.get_event_near_ts(room_id, ts, forwards=forwards)
        if found is None or not (await self.visible_to_server(origin, [found]))[0]:
            raise MatrixError.not_found(f"No event found {'after' if forwards else 'before'} {ts}")
        return {"event_id": found.event_id, "origin_server_ts": found.pdu.origin_server_ts}


def parse_limit(value: Any, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        raise MatrixError.invalid_param("limit must be an integer") from None


__all__ = ["RoomDataService", "wire_json", "parse_limit"]

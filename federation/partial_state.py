"""Partial-state ("faster") joins as the joining server: the pure parts.

Spec: ``send_join`` v2 with ``omit_members`` (the answer's ``members_omitted`` and
``servers_in_room``),
https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv2send_joinroomideventid;
background in MSC3706 (the API) and MSC3902 (the overview: how a partial-state room
handles events, and the resync that fetches the full state afterwards).

What lives here: reading the ``send_join`` answer's partial-state fields, the order in
which the resync asks servers and how long it waits between rounds, reading a
``/state_ids`` answer, turning a list of state events into a state map, the order in
which fetched events are checked and the events since the join recomputed, and which of them are forward
extremities afterwards. The service (``gateway/services/federation/partial_state.py``) does the I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .ids import is_valid_server_name

StateKey = tuple[str, str]

__all__ = [
    "BadStateAnswer",
    "forward_extremities",
    "parse_state_ids_answer",
    "auth_event_ids_of",
    "dependency_order",
    "partial_join_servers",
    "resync_servers",
    "retry_delay",
    "state_map_of",
]


class BadStateAnswer(ValueError):
    """A server's answer about the state at an event is unusable (try another server)."""


def partial_join_servers(answer: Any, *, joined_via: str, own_server: str) -> list[str] | None:
    """The servers to fetch the full state from after a ``send_join`` answer, or None
    if the answer is a full join (``members_omitted`` absent or not ``true``).

    ``servers_in_room`` is required with ``members_omitted``; entries that are not
    valid server names are left out, and so is our own name. ``joined_via`` (the server
    that answered, which certainly has the state) always comes first."""
    if not isinstance(answer, dict) or answer.get("members_omitted") is not True:
        return None
    listed = answer.get("servers_in_room")
    out = [joined_via]
    for s in listed if isinstance(listed, list) else []:
        if isinstance(s, str) and s not in out and s != own_server and is_valid_server_name(s):
            out.append(s)
    return out


def resync_servers(servers: Sequence[str], own_server: str) -> list[str]:
    """The order in which one resync round asks servers: as stored (the server we
    joined through first), each once, never ourselves."""
    return [s for s in dict.fromkeys(servers) if s and s != own_server]


def retry_delay(rounds_failed: int, *, base_s: float, cap_s: float) -> float:
    """Seconds to wait after ``rounds_failed`` rounds in which every server failed:
    doubling from ``base_s``, at most ``cap_s``."""
    if rounds_failed <= 0:
        return 0.0
    return min(cap_s, base_s * 2 ** min(rounds_failed - 1, 30))


def parse_state_ids_answer(answer: Any) -> tuple[list[str], list[str]]:
    """(state event IDs, auth chain event IDs) of a ``/state_ids`` answer.
    ``BadStateAnswer`` if it is not shaped as the spec says."""
    if not isinstance(answer, dict):
        raise BadStateAnswer("the /state_ids answer is not an object")
    pdu_ids, chain_ids = answer.get("pdu_ids"), answer.get("auth_chain_ids")
    if not isinstance(pdu_ids, list) or not isinstance(chain_ids, list):
        raise BadStateAnswer("the /state_ids answer lacks 'pdu_ids' or 'auth_chain_ids' lists")
    if not all(isinstance(e, str) for e in pdu_ids) or not all(isinstance(e, str) for e in chain_ids):
        raise BadStateAnswer("the /state_ids answer has event IDs that are not strings")
    return list(dict.fromkeys(pdu_ids)), list(dict.fromkeys(chain_ids))


def state_map_of(events: Iterable[Any]) -> dict[StateKey, str]:
    """The state map of ``events`` (objects with ``type``, ``state_key``, ``event_id``).
    ``BadStateAnswer`` if one is not a state event or two claim the same key, or if
    there is no create event: such an answer is not a room's state."""
    out: dict[StateKey, str] = {}
    for e in events:
        if e.state_key is None:
            raise BadStateAnswer(f"{e.event_id} in the state is not a state event")
        key = (e.type, e.state_key)
        if key in out and out[key] != e.event_id:
            raise BadStateAnswer(f"two events in the state for {key}: {out[key]} and {e.event_id}")
        out[key] = e.event_id
    if ("m.room.create", "") not in out:
        raise BadStateAnswer("the state has no (valid) create event")
    return out


def dependency_order(prevs: Mapping[str, Sequence[str]], sort_key: Mapping[str, Any]) -> list[str]:
    """The events of ``prevs`` (event ID -> the event IDs it depends on: its prev events,
    or its auth events) ordered so that each comes after those among them (ties by
    ``sort_key``, e.g. (depth, stream position)). Events in a cycle (impossible in a
    valid room) come last, by ``sort_key``."""
    children: dict[str, list[str]] = {}
    waiting: dict[str, int] = {}
    for eid, ps in prevs.items():
        inside = {p for p in ps if p in prevs and p != eid}
        waiting[eid] = len(inside)
        for p in inside:
            children.setdefault(p, []).append(eid)
    ready = [(sort_key[e], e) for e, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        _, eid = heapq.heappop(ready)
        out.append(eid)
        for c in children.get(eid, ()):
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(ready, (sort_key[c], c))
    if len(out) < len(prevs):
        placed = set(out)
        out += sorted((e for e in prevs if e not in placed), key=lambda e: (sort_key[e], e))
    return out


def auth_event_ids_of(pdu_json: Any) -> list[str]:
    """The ``auth_events`` IDs of an event as received (strings, or ``[id, hashes]``
    pairs in rooms 1 and 2), without checking the rest of it; [] if malformed."""
    listed = pdu_json.get("auth_events") if isinstance(pdu_json, dict) else None
    out = []
    for a in listed if isinstance(listed, list) else []:
        if isinstance(a, list) and a:
            a = a[0]
        if isinstance(a, str):
            out.append(a)
    return out


def forward_extremities(prevs: Mapping[str, Sequence[str]], in_timeline: Mapping[str, bool]) -> set[str]:
    """Of the events of ``prevs`` (all the events after a point of the DAG, with their
    prev events), those that are forward extremities: in the timeline (accepted, not
    soft-failed) and not a prev event of another event in the timeline."""
    referenced = {p for eid, ps in prevs.items() if in_timeline.get(eid) for p in ps}
    return {eid for eid in prevs if in_timeline.get(eid) and eid not in referenced}

"""State resolution: v1 (room v1), v2 (rooms v2 to v11) and v2.1 (room v12).

Spec: https://spec.matrix.org/latest/server-server-api/#room-state-resolution
- v1:   https://spec.matrix.org/latest/rooms/v1/#state-resolution
- v2:   https://spec.matrix.org/latest/rooms/v2/#state-resolution
- v2.1: https://spec.matrix.org/latest/rooms/v12/#state-resolution

Pure and synchronous: the caller passes the state sets (maps of
``(event_type, state_key) -> event_id``) and every event the resolution needs
(``missing_event_ids`` says which); the answer is the resolved state map.
Authorisation is delegated to ``federation.auth_rules``.

Where the spec text leaves room for reading, this module follows what the
deployed servers compute, so that our state converges with theirs:

- The "full auth chain" of a state set includes the state events themselves
  (the auth chain difference is "reachable from some state set but not from
  all", counting a state event as reachable from its own set).
- The reverse topological power ordering sorts the graph formed by the auth
  edges *between* events of the full conflicted set, reached from the power
  events by walking auth edges that stay inside the full conflicted set.
- v1 resolves each conflicted key separately against the unconflicted state
  plus the keys resolved in earlier passes (power levels, then join rules,
  then memberships, then everything else); if no candidate of a normal key
  passes auth, the one with the least depth is kept.
- Power levels and join rules events count as power events only with the
  empty state key (the only ones the auth rules read).

Rejected events (``rejected_event_ids``) are never used as auth events in the
iterative auth checks but are themselves re-checked like any other event, as
the spec says ("Rejected events"); Synapse instead keeps them out of the state.
Large resolutions are CPU-bound: async callers run them off the event loop.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Callable, Iterable, Mapping, Sequence, Set as AbstractSet
from typing import Any, Protocol

from federation import auth_rules as _auth_rules
from federation.auth_rules import get_user_power_level
from federation.room_versions import RoomVersion, StateResAlgorithm

__all__ = [
    "StateKey",
    "StateMap",
    "AuthChainProvider",
    "AuthRules",
    "StateResolutionError",
    "resolve_state",
    "separate_state",
    "missing_event_ids",
    "full_conflicted_set",
    "auth_difference",
    "conflicted_state_subgraph",
    "AuthChains",
    "is_power_event",
    "sender_power_level",
    "reverse_topological_power_order",
    "mainline_order",
    "iterative_auth_checks",
]

StateKey = tuple[str, str]
StateMap = Mapping[StateKey, str]
#: ``event_id -> auth chain of the event`` (its auth events, recursively; not itself).
AuthChainProvider = Callable[[str], AbstractSet[str]]

CREATE = "m.room.create"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
MEMBER = "m.room.member"
CREATE_KEY: StateKey = (CREATE, "")
POWER_KEY: StateKey = (POWER_LEVELS, "")


class StateResolutionError(ValueError):
    """The input cannot be resolved (e.g. the auth events form a cycle)."""


class AuthRules(Protocol):
    """What state resolution needs from the authorisation rules.

    ``federation.auth_rules`` (the module) satisfies it; tests may pass another.
    """

    AuthError: type[Exception]

    def check_auth_rules(
        self, room_version: RoomVersion, event: Any, auth_events: Mapping[StateKey, Any]
    ) -> None: ...

    def auth_types_for_event(
        self,
        room_version: RoomVersion,
        event_type: str,
        sender: str,
        state_key: str | None,
        content: Mapping[str, Any],
    ) -> Iterable[StateKey]: ...


def _default_auth_rules() -> AuthRules:
    return _auth_rules  # type: ignore[return-value]


# ---------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------


def resolve_state(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, Any],
    auth_chains: AuthChainProvider | AuthChains | None = None,
    *,
    rejected_event_ids: AbstractSet[str] = frozenset(),
    auth_rules: AuthRules | None = None,
) -> dict[StateKey, str]:
    """Resolve ``state_sets`` into one state map, by the room version's algorithm.

    ``event_map`` must hold the conflicted events and their auth chains; for
    v2/v2.1 without ``auth_chains``, also every event of the state sets (to walk
    the auth chains). ``auth_chains``, if given, answers the auth chain of an
    event (e.g. from a chain cover index); results are memoised per call. Pass
    one ``AuthChains`` object to keep its memo across several resolutions.
    ``rejected_event_ids`` are events rejected on receipt: they are never used
    as auth events during the iterative auth checks (spec, "Rejected events").
    Events named in the state sets but missing from ``event_map`` are ignored
    when they are conflicted.
    """
    if not state_sets:
        return {}
    rules = auth_rules if auth_rules is not None else _default_auth_rules()
    if room_version.state_res is StateResAlgorithm.V1:
        return _resolve_v1(room_version, state_sets, event_map, rules)
    return _resolve_v2(
        room_version, state_sets, event_map, auth_chains, rejected_event_ids, rules
    )


# ---------------------------------------------------------------------------
# Unconflicted / conflicted split
# ---------------------------------------------------------------------------


def separate_state(
    room_version: RoomVersion, state_sets: Sequence[StateMap]
) -> tuple[dict[StateKey, str], dict[StateKey, frozenset[str]]]:
    """Split the state sets into the unconflicted state map and the conflicted state.

    v2/v2.1: a key is unconflicted when every state set maps it to the same event
    (a key missing from some set is conflicted). v1: a key is conflicted only when
    two sets map it to different events.
    https://spec.matrix.org/latest/rooms/v2/#definitions
    """
    if room_version.state_res is StateResAlgorithm.V1:
        return _separate_v1(state_sets)
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, frozenset[str]] = {}
    if not state_sets:
        return unconflicted, conflicted
    unconflicted = dict(state_sets[0])
    for state_set in state_sets[1:]:
        get = state_set.get
        unconflicted = {k: v for k, v in unconflicted.items() if get(k) == v}
    for state_set in state_sets:
        for key in state_set.keys() - unconflicted.keys() - conflicted.keys():
            conflicted[key] = frozenset(
                event_id for s in state_sets if (event_id := s.get(key)) is not None
            )
    return unconflicted, conflicted


def _separate_v1(
    state_sets: Sequence[StateMap],
) -> tuple[dict[StateKey, str], dict[StateKey, frozenset[str]]]:
    values: dict[StateKey, set[str]] = {}
    for state_set in state_sets:
        for key, event_id in state_set.items():
            values.setdefault(key, set()).add(event_id)
    unconflicted = {k: next(iter(v)) for k, v in values.items() if len(v) == 1}
    conflicted = {k: frozenset(v) for k, v in values.items() if len(v) > 1}
    return unconflicted, conflicted


# ---------------------------------------------------------------------------
# Auth chains, auth difference, conflicted state subgraph
# ---------------------------------------------------------------------------


class AuthChains:
    """Auth chain walks over the loaded events, or over a caller's provider.

    Calling the object gives one event's auth chain (memoised), so it can itself
    serve as an ``AuthChainProvider`` across several resolutions of a room.
    Events missing from ``event_map`` are counted as reachable but not walked.
    """

    def __init__(
        self, event_map: Mapping[str, Any], provider: AuthChainProvider | None = None
    ) -> None:
        self._events = event_map
        self._provider = provider
        self._memo: dict[str, frozenset[str]] = {}

    @property
    def event_map(self) -> Mapping[str, Any]:
        return self._events

    @property
    def has_provider(self) -> bool:
        return self._provider is not None

    def __call__(self, event_id: str) -> frozenset[str]:
        chain = self._memo.get(event_id)
        if chain is None:
            if self._provider is not None:
                chain = frozenset(self._provider(event_id))
            else:
                chain = frozenset(self._walk(self._auth_ids(event_id), frozenset()))
            self._memo[event_id] = chain
        return chain

    def _auth_ids(self, event_id: str) -> Iterable[str]:
        event = self._events.get(event_id)
        return event.auth_event_ids if event is not None else ()

    def _walk(self, start: Iterable[str], stop: AbstractSet[str]) -> set[str]:
        seen: set[str] = set()
        stack = [e for e in start if e not in stop]
        events = self._events
        while stack:
            event_id = stack.pop()
            if event_id in seen:
                continue
            seen.add(event_id)
            event = events.get(event_id)
            if event is not None:
                for auth_id in event.auth_event_ids:
                    if auth_id not in seen and auth_id not in stop:
                        stack.append(auth_id)
        return seen

    def closure(
        self, event_ids: Iterable[str], stop: AbstractSet[str] = frozenset()
    ) -> set[str]:
        """``event_ids`` and their auth chains, without anything in ``stop``.

        ``stop`` must be closed under auth chains (walks do not enter it).
        """
        if self._provider is None:
            return self._walk(event_ids, stop)
        result: set[str] = set()
        for event_id in event_ids:
            if event_id not in stop:
                result.add(event_id)
                result.update(self(event_id))
        return result - stop if stop else result


def _chains(
    event_map: Mapping[str, Any], auth_chains: AuthChainProvider | AuthChains | None
) -> AuthChains:
    if isinstance(auth_chains, AuthChains):
        return auth_chains
    return AuthChains(event_map, auth_chains)


def auth_difference(
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, Any],
    auth_chains: AuthChainProvider | AuthChains | None = None,
) -> set[str]:
    """Events in some but not all of the state sets' full auth chains.

    The full auth chain of a state set is its events and their auth chains.
    https://spec.matrix.org/latest/rooms/v2/#definitions ("Auth difference")
    """
    chains = _chains(event_map, auth_chains)
    return _auth_difference(chains, [set(s.values()) for s in state_sets])


def _auth_difference(chains: AuthChains, id_sets: Sequence[set[str]]) -> set[str]:
    if len(id_sets) < 2:
        return set()
    # Events in every set, and everything in their auth chains, are in every
    # full auth chain: compute that common part once and keep walks out of it.
    common = set.intersection(*id_sets)
    common_closure = chains.closure(common)
    parts = [chains.closure(ids - common, stop=common_closure) for ids in id_sets]
    return set.union(*parts) - set.intersection(*parts)


def conflicted_state_subgraph(
    conflicted_event_ids: AbstractSet[str],
    event_map: Mapping[str, Any],
    auth_chains: AuthChainProvider | AuthChains | None = None,
) -> set[str]:
    """Events on auth-event paths between conflicted events, endpoints included.

    https://spec.matrix.org/latest/rooms/v12/#definitions ("Conflicted state subgraph")
    """
    chains = _chains(event_map, auth_chains)
    conflicted = set(conflicted_event_ids)
    reachable = chains.closure(conflicted)  # forward from the conflicted events
    if chains.has_provider:
        return {
            e for e in reachable if e in conflicted or not conflicted.isdisjoint(chains(e))
        }
    # Walk the auth edges backwards from the conflicted events, inside `reachable`.
    cited_by: dict[str, list[str]] = {}
    for event_id in reachable:
        event = event_map.get(event_id)
        if event is not None:
            for auth_id in event.auth_event_ids:
                if auth_id in reachable:
                    cited_by.setdefault(auth_id, []).append(event_id)
    result = set(conflicted)
    stack = list(conflicted)
    while stack:
        for citing in cited_by.get(stack.pop(), ()):
            if citing not in result:
                result.add(citing)
                stack.append(citing)
    return result


def full_conflicted_set(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, Any],
    auth_chains: AuthChainProvider | AuthChains | None = None,
) -> set[str]:
    """The conflicted events, the auth difference and (v2.1) the conflicted subgraph.

    Not filtered by ``event_map``: IDs the caller has not loaded are included.
    """
    chains = _chains(event_map, auth_chains)
    unconflicted, conflicted = separate_state(room_version, state_sets)
    return _full_conflicted(room_version, state_sets, unconflicted, conflicted, chains)


def _full_conflicted(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    unconflicted: Mapping[StateKey, str],
    conflicted: Mapping[StateKey, AbstractSet[str]],
    chains: AuthChains,
) -> set[str]:
    conflicted_ids = {e for ids in conflicted.values() for e in ids}
    result = conflicted_ids | _auth_difference(chains, [set(s.values()) for s in state_sets])
    if room_version.state_res is StateResAlgorithm.V2_1:
        result |= conflicted_state_subgraph(conflicted_ids, chains.event_map, chains)
    return result


# ---------------------------------------------------------------------------
# Power events and the senders' power levels
# ---------------------------------------------------------------------------


def is_power_event(event: Any) -> bool:
    """Power levels, join rules, or a kick/ban (leave/ban by someone else).

    https://spec.matrix.org/latest/rooms/v2/#definitions ("Power events")
    """
    if event.state_key is None:
        return False
    if event.type in (POWER_LEVELS, JOIN_RULES):
        return event.state_key == ""
    if event.type == MEMBER:
        membership = event.content.get("membership") if isinstance(event.content, Mapping) else None
        return membership in ("leave", "ban") and event.sender != event.state_key
    return False


def _create_event_id(room_id: str) -> str:
    """Room v12: the create event's ID is the room ID with a ``$`` sigil."""
    return "$" + room_id[1:]


def sender_power_level(
    room_version: RoomVersion, event: Any, event_map: Mapping[str, Any]
) -> int | float:
    """The sender's power level according to the event's own auth events.

    Used by the reverse topological power ordering; read as the auth rules read
    it: without a power levels auth event, the room creator has 100 and everyone
    else 0; room v12 creators have infinite power (``CREATOR_POWER_LEVEL``).
    """
    power_levels = create = None
    for auth_id in event.auth_event_ids:
        auth_event = event_map.get(auth_id)
        if auth_event is None or auth_event.state_key != "":
            continue
        if auth_event.type == POWER_LEVELS:
            power_levels = auth_event
        elif auth_event.type == CREATE:
            create = auth_event
    if room_version.room_id_from_create_event and create is None:
        create = event_map.get(_create_event_id(event.room_id))
    content = power_levels.content if power_levels is not None else None
    return get_user_power_level(event.sender, content, create, room_version)


# ---------------------------------------------------------------------------
# Orderings
# ---------------------------------------------------------------------------


def reverse_topological_power_order(
    room_version: RoomVersion,
    event_ids: Iterable[str],
    event_map: Mapping[str, Any],
    within: AbstractSet[str],
) -> list[str]:
    """``event_ids`` plus the events reached from them by auth edges inside ``within``,
    in the lexicographically smallest topological order (auth events first),
    ties broken by higher sender power, then lower ``origin_server_ts``, then
    lower event ID.

    https://spec.matrix.org/latest/rooms/v2/#definitions
    ("Reverse topological power ordering")
    """
    deps: dict[str, list[str]] = {}
    stack = [e for e in event_ids if e in event_map]
    while stack:
        event_id = stack.pop()
        if event_id in deps:
            continue
        auth_ids = [
            a
            for a in dict.fromkeys(event_map[event_id].auth_event_ids)
            if a in within and a in event_map
        ]
        deps[event_id] = auth_ids
        stack.extend(a for a in auth_ids if a not in deps)

    def key(event_id: str) -> tuple[float, int, str]:
        event = event_map[event_id]
        return (-sender_power_level(room_version, event, event_map), event.origin_server_ts, event_id)

    waiting = {e: len(a) for e, a in deps.items()}
    cited_by: dict[str, list[str]] = {}
    for event_id, auth_ids in deps.items():
        for auth_id in auth_ids:
            cited_by.setdefault(auth_id, []).append(event_id)
    heap = [(key(e), e) for e, n in waiting.items() if n == 0]
    heapq.heapify(heap)
    order: list[str] = []
    while heap:
        _, event_id = heapq.heappop(heap)
        order.append(event_id)
        for citing in cited_by.get(event_id, ()):
            waiting[citing] -= 1
            if waiting[citing] == 0:
                heapq.heappush(heap, (key(citing), citing))
    if len(order) != len(deps):
        raise StateResolutionError("the auth events of the conflicted events form a cycle")
    return order


def _power_levels_auth_event(event: Any, event_map: Mapping[str, Any]) -> str | None:
    for auth_id in event.auth_event_ids:
        auth_event = event_map.get(auth_id)
        if (
            auth_event is not None
            and auth_event.type == POWER_LEVELS
            and auth_event.state_key == ""
        ):
            return auth_id
    return None


def mainline_order(
    event_ids: Iterable[str],
    power_levels_event_id: str | None,
    event_map: Mapping[str, Any],
) -> list[str]:
    """``event_ids`` in mainline ordering based on ``power_levels_event_id``:
    events whose power levels chain meets the mainline earlier (older) first,
    then lower ``origin_server_ts``, then lower event ID.

    https://spec.matrix.org/latest/rooms/v2/#definitions ("Mainline ordering")
    """
    event_ids = list(event_ids)
    if not event_ids:
        return []
    parent: dict[str, str | None] = {}

    def pl_parent(event_id: str) -> str | None:
        if event_id not in parent:
            event = event_map.get(event_id)
            parent[event_id] = (
                _power_levels_auth_event(event, event_map) if event is not None else None
            )
        return parent[event_id]

    # position i of P_i in the mainline of P_0; memoised for other PL events too
    position: dict[str, float] = {}
    current = power_levels_event_id
    index = 0
    while current is not None and current not in position:
        position[current] = index
        index += 1
        current = pl_parent(current)
    on_mainline = set(position)

    def mainline_position(event_id: str) -> float:
        walked: list[str] = []
        current = pl_parent(event_id)
        while current is not None and current not in position:
            if current in walked:  # a cycle: never meets the mainline
                current = None
                break
            walked.append(current)
            current = pl_parent(current)
        found = position[current] if current is not None else math.inf
        for pl_id in walked:
            if pl_id not in on_mainline:
                position[pl_id] = found
        return found

    def key(event_id: str) -> tuple[float, int, str]:
        return (-mainline_position(event_id), event_map[event_id].origin_server_ts, event_id)

    return sorted(event_ids, key=key)


# ---------------------------------------------------------------------------
# Iterative auth checks
# ---------------------------------------------------------------------------


def iterative_auth_checks(
    room_version: RoomVersion,
    initial_state: StateMap,
    event_ids: Iterable[str],
    event_map: Mapping[str, Any],
    *,
    rejected_event_ids: AbstractSet[str] = frozenset(),
    auth_rules: AuthRules | None = None,
) -> dict[StateKey, str]:
    """Apply each event, in order, to the state if the auth rules allow it.

    Each key the auth rules need is taken from the state so far, else from the
    event's own auth events; rejected events are never used as auth events.
    https://spec.matrix.org/latest/rooms/v2/#definitions ("Iterative auth checks")
    """
    rules = auth_rules if auth_rules is not None else _default_auth_rules()
    state = dict(initial_state)
    for event_id in event_ids:
        event = event_map[event_id]
        own: dict[StateKey, Any] = {}
        for auth_id in event.auth_event_ids:
            auth_event = event_map.get(auth_id)
            if auth_event is not None and auth_id not in rejected_event_ids:
                own[(auth_event.type, auth_event.state_key)] = auth_event
        auth_events: dict[StateKey, Any] = {}
        if room_version.room_id_from_create_event and event.type != CREATE:
            create_id = _create_event_id(event.room_id)
            create = event_map.get(create_id)
            if create is not None and create_id not in rejected_event_ids:
                auth_events[CREATE_KEY] = create
        needed = rules.auth_types_for_event(
            room_version, event.type, event.sender, event.state_key, event.content
        )
        for key in needed:
            state_id = state.get(key)
            chosen = (
                event_map.get(state_id)
                if state_id is not None and state_id not in rejected_event_ids
                else None
            )
            if chosen is None:
                chosen = own.get(key)
            if chosen is not None:
                auth_events[key] = chosen
        try:
            rules.check_auth_rules(room_version, event, auth_events)
        except rules.AuthError:
            continue
        state[(event.type, event.state_key)] = event_id
    return state


# ---------------------------------------------------------------------------
# v2 and v2.1
# ---------------------------------------------------------------------------


def _resolve_v2(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, Any],
    auth_chains: AuthChainProvider | AuthChains | None,
    rejected: AbstractSet[str],
    rules: AuthRules,
) -> dict[StateKey, str]:
    unconflicted, conflicted = separate_state(room_version, state_sets)
    if not conflicted:
        return unconflicted
    chains = _chains(event_map, auth_chains)
    full = {
        e
        for e in _full_conflicted(room_version, state_sets, unconflicted, conflicted, chains)
        if e in event_map
    }

    # 1. power events of the full conflicted set, with their auth chains inside it
    power_ids = [e for e in full if is_power_event(event_map[e])]
    power_order = reverse_topological_power_order(room_version, power_ids, event_map, full)

    # 2. iterative auth checks from the unconflicted state (v2) or nothing (v2.1)
    start: StateMap = {} if room_version.state_res is StateResAlgorithm.V2_1 else unconflicted
    partial = iterative_auth_checks(
        room_version, start, power_order, event_map,
        rejected_event_ids=rejected, auth_rules=rules,
    )

    # 3. everything else by mainline ordering on the resolved power levels
    in_power_order = set(power_order)
    others = mainline_order(
        (e for e in full if e not in in_power_order), partial.get(POWER_KEY), event_map
    )

    # 4. iterative auth checks again
    resolved = iterative_auth_checks(
        room_version, partial, others, event_map,
        rejected_event_ids=rejected, auth_rules=rules,
    )

    # 5. the unconflicted state wins
    resolved.update(unconflicted)
    return resolved


# ---------------------------------------------------------------------------
# v1
# ---------------------------------------------------------------------------


def _v1_order(events: Iterable[Any]) -> list[Any]:
    """Highest depth first, then lowest sha1(event_id)."""
    return sorted(
        events,
        key=lambda e: (-int(e.depth), hashlib.sha1(e.event_id.encode("utf-8")).hexdigest()),
    )


def _resolve_v1(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, Any],
    rules: AuthRules,
) -> dict[StateKey, str]:
    if len(state_sets) == 1:
        return dict(state_sets[0])
    unconflicted, conflicted_ids = _separate_v1(state_sets)
    resolved = dict(unconflicted)
    conflicted: dict[StateKey, list[Any]] = {}
    for key, ids in conflicted_ids.items():
        events = [event_map[e] for e in sorted(ids) if e in event_map]
        if len(events) > 1:
            conflicted[key] = events
        elif events:
            resolved[key] = events[0].event_id

    def types_for(event: Any) -> Iterable[StateKey]:
        return rules.auth_types_for_event(
            room_version, event.type, event.sender, event.state_key, event.content
        )

    # R starts as the unconflicted events that can authorise the conflicted ones.
    auth_state: dict[StateKey, Any] = {}
    for events in conflicted.values():
        for event in events:
            for key in types_for(event):
                event_id = unconflicted.get(key)
                if key not in auth_state and event_id is not None and event_id in event_map:
                    auth_state[key] = event_map[event_id]

    def allowed(event: Any, auth_events: Mapping[StateKey, Any]) -> bool:
        try:
            rules.check_auth_rules(room_version, event, auth_events)
        except rules.AuthError:
            return False
        return True

    def resolve_auth_key(events: list[Any]) -> Any:
        # ascending depth, descending sha1: add the first, then each next one
        # while it passes auth against R; stop at the first failure.
        order = _v1_order(events)[::-1]
        keys = {k for e in events for k in types_for(e)}
        auth_events = {k: auth_state[k] for k in keys if k in auth_state}
        chosen = order[0]
        for event in order[1:]:
            auth_events[(chosen.type, chosen.state_key)] = chosen
            if not allowed(event, auth_events):
                break
            chosen = event
        return chosen

    picked: dict[StateKey, Any] = {}
    phases = (
        lambda k: k == POWER_KEY,
        lambda k: k[0] == JOIN_RULES,
        lambda k: k[0] == MEMBER,
    )
    for in_phase in phases:
        for key in sorted(conflicted):
            if in_phase(key) and key not in picked:
                picked[key] = resolve_auth_key(conflicted[key])
        auth_state.update(picked)
    for key in sorted(conflicted):
        if key in picked:
            continue
        ordered = _v1_order(conflicted[key])
        picked[key] = next((e for e in ordered if allowed(e, auth_state)), ordered[-1])
    for key, event in picked.items():
        resolved[key] = event.event_id
    return resolved


# ---------------------------------------------------------------------------
# What the caller must load
# ---------------------------------------------------------------------------


def missing_event_ids(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, Any],
    auth_chains: AuthChainProvider | AuthChains | None = None,
    *,
    auth_rules: AuthRules | None = None,
) -> set[str]:
    """IDs of events ``resolve_state`` will look at that ``event_map`` lacks.

    The answer depends on the events already loaded (auth events are only known
    once their citing event is): load what it names and ask again until the
    answer is empty (or no longer shrinks, when some events are unobtainable).
    """
    rules = auth_rules if auth_rules is not None else _default_auth_rules()
    unconflicted, conflicted = separate_state(room_version, state_sets)
    if not conflicted or (room_version.state_res is StateResAlgorithm.V1 and len(state_sets) < 2):
        return set()
    conflicted_ids = {e for ids in conflicted.values() for e in ids}
    needed: set[str] = set(conflicted_ids)
    if room_version.state_res is StateResAlgorithm.V1:
        considered = conflicted_ids
    else:
        chains = _chains(event_map, auth_chains)
        if not chains.has_provider:
            needed |= chains.closure(e for s in state_sets for e in s.values())
        full = _full_conflicted(room_version, state_sets, unconflicted, conflicted, chains)
        needed |= chains.closure(full)
        power_levels = unconflicted.get(POWER_KEY)
        if power_levels is not None:
            needed |= chains.closure([power_levels])
        if room_version.room_id_from_create_event:
            for event_id in full:
                if event_id in event_map:
                    needed.add(_create_event_id(event_map[event_id].room_id))
                    break
        considered = full
    for event_id in considered:
        event = event_map.get(event_id)
        if event is None:
            continue
        for key in rules.auth_types_for_event(
            room_version, event.type, event.sender, event.state_key, event.content
        ):
            if key in unconflicted:
                needed.add(unconflicted[key])
    return {e for e in needed if e not in event_map}

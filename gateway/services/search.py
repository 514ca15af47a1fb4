"""Server-side search: ``POST /search`` with the ``room_events`` category.

Spec: https://spec.matrix.org/latest/client-server-api/#server-side-search and
https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3search

The rooms searched are those the user is joined to or has left (or was banned from),
unless forgotten; in a room left, nothing after the leave. Which matches the user may
see is decided twice: in SQL, coarsely, from the history of the room's history
visibility and of the user's membership (``visible_ranges``), so that counts and pages
skip what is plainly hidden; then event by event with the rules /messages applies
(``EventsService.filter_visible``, on the state at each event).

Pagination (both orders, unlike Synapse, which pages only ``recent``): ``next_batch`` is
an opaque token holding the order, the last match read (its stream position, and for
``rank`` its rank: the next page starts below it) and, for a group's token, the group
(room or sender) it stays within. Errors follow the spec's codes: a malformed body is
``M_BAD_JSON`` (Synapse answers ``M_UNKNOWN``), a bad ``next_batch`` ``M_INVALID_PARAM``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from ..http import MatrixError
from ..storage.events import StoredEvent
from ..storage.search import (
    KEY_TYPES,
    RoomScope,
    SearchHit,
    SearchQuery,
    SearchStore,
    parse_search_term,
    searchable_text,
)
from .events import EventsService, may_see
from .filtering import EventFilter

DEFAULT_LIMIT = 10
#: Results per page at most (a filter's ``limit`` above is lowered to it).
MAX_LIMIT = 100
#: Context events on each side of a result at most.
MAX_CONTEXT = 100
DEFAULT_CONTEXT = 5
#: Rounds of reading matches for one page when many are hidden from the user; a page
#: that stops there still has a ``next_batch`` to go on from.
MAX_ROUNDS = 5
#: Above this many visible stretches in a room, SQL gets one stretch covering them all
#: (the event-by-event check still applies).
MAX_RANGES = 50
#: Room upgrades followed back from a room named in the filter.
MAX_PREDECESSORS = 20
_GROUP_KEYS = ("room_id", "sender")

#: Adds bundled aggregations (``unsigned["m.relations"]``) to client-format events in
#: place, as the user may see them: (events, user_id) -> None.
BundleAggregations = Callable[[list[dict[str, Any]], str], Awaitable[None]]


@dataclass(frozen=True)
class RoomEventsCriteria:
    """The ``room_events`` criteria of a search request, checked."""

    search_term: str
    keys: tuple[str, ...] = tuple(KEY_TYPES)
    filter: EventFilter = field(default_factory=EventFilter)
    order_by: str = "rank"
    #: (before_limit, after_limit, include_profile), or None for no context.
    event_context: tuple[int, int, bool] | None = None
    include_state: bool = False
    group_by: tuple[str, ...] = ()

    @property
    def limit(self) -> int:
        return max(1, min(self.filter.limit if self.filter.limit is not None else DEFAULT_LIMIT, MAX_LIMIT))

    @classmethod
    def parse_request(cls, body: Mapping[str, Any]) -> "RoomEventsCriteria":
        """From a request body; 400 ``M_BAD_JSON`` naming what is wrong."""
        categories = body.get("search_categories")
        if not isinstance(categories, dict):
            raise MatrixError.bad_json("'search_categories' must be an object")
        unknown = sorted(set(categories) - {"room_events"})
        if unknown:
            raise MatrixError.bad_json(f"Unknown search category: {unknown[0]!r} (only 'room_events' is supported)")
        room = categories.get("room_events")
        if not isinstance(room, dict):
            raise MatrixError.bad_json("'search_categories.room_events' must be an object")
        return cls.parse(room)

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> "RoomEventsCriteria":
        where = "search_categories.room_events."
        term = obj.get("search_term")
        if not isinstance(term, str):
            raise MatrixError.bad_json(f"'{where}search_term' must be a string")
        keys = obj.get("keys", list(KEY_TYPES))
        if not isinstance(keys, list) or not all(isinstance(k, str) and k in KEY_TYPES for k in keys):
            raise MatrixError.bad_json(f"'{where}keys' must be a list of {', '.join(KEY_TYPES)}")
        filter_obj = obj.get("filter")
        if filter_obj is not None and not isinstance(filter_obj, dict):
            raise MatrixError.bad_json(f"'{where}filter' must be an object")
        order_by = obj.get("order_by", "rank")
        if order_by not in ("rank", "recent"):
            raise MatrixError.bad_json(f"'{where}order_by' must be 'rank' or 'recent'")
        include_state = obj.get("include_state", False)
        if not isinstance(include_state, bool):
            raise MatrixError.bad_json(f"'{where}include_state' must be a boolean")
        return cls(
            search_term=term, keys=tuple(dict.fromkeys(keys)),
            filter=EventFilter.parse(filter_obj or {}, f"{where}filter."),
            order_by=order_by, event_context=_parse_context(obj.get("event_context"), where),
            include_state=include_state, group_by=_parse_groupings(obj.get("groupings"), where),
        )


def _non_negative_int(obj: Mapping[str, Any], key: str, where: str, default: int) -> int:
    value = obj.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MatrixError.bad_json(f"'{where}{key}' must be a non-negative integer")
    return min(value, MAX_CONTEXT)


def _parse_context(obj: Any, where: str) -> tuple[int, int, bool] | None:
    if obj is None:
        return None
    where += "event_context."
    if not isinstance(obj, dict):
        raise MatrixError.bad_json(f"'{where[:-1]}' must be an object")
    include_profile = obj.get("include_profile", False)
    if not isinstance(include_profile, bool):
        raise MatrixError.bad_json(f"'{where}include_profile' must be a boolean")
    return (_non_negative_int(obj, "before_limit", where, DEFAULT_CONTEXT),
            _non_negative_int(obj, "after_limit", where, DEFAULT_CONTEXT), include_profile)


def _parse_groupings(obj: Any, where: str) -> tuple[str, ...]:
    if obj is None:
        return ()
    if not isinstance(obj, dict):
        raise MatrixError.bad_json(f"'{where}groupings' must be an object")
    group_by = obj.get("group_by", [])
    if not isinstance(group_by, list) or not all(
            isinstance(g, dict) and g.get("key") in _GROUP_KEYS for g in group_by):
        raise MatrixError.bad_json(f"'{where}groupings.group_by' must be a list of"
                                   " {\"key\": \"room_id\" or \"sender\"}")
    return tuple(dict.fromkeys(g["key"] for g in group_by))


# --- tokens ------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchToken:
    """Where a page ended: the order, the last match read (its position; for ``rank``
    also its rank) and, for a group's token, the group (key, value) it stays within."""

    order: str
    position: int
    rank: float = 0.0
    group: tuple[str, str] | None = None

    @classmethod
    def after(cls, order: str, hit: SearchHit, group: tuple[str, str] | None) -> "BatchToken":
        return cls(order, hit.stream_ordering, hit.rank if order == "rank" else 0.0, group)

    @property
    def last(self) -> SearchHit:
        """The match to continue after (the store compares only position and rank)."""
        return SearchHit("", "", self.position, self.rank)

    def encode(self) -> str:
        raw: list[Any] = [self.order, self.position, self.rank] + (list(self.group) if self.group else [])
        return base64.urlsafe_b64encode(json.dumps(raw, separators=(",", ":")).encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> "BatchToken":
        bad = MatrixError.invalid_param("Invalid 'next_batch' token")
        try:
            raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        except (ValueError, binascii.Error, RecursionError):
            raise bad from None
        if not isinstance(raw, list) or len(raw) not in (3, 5) or raw[0] not in ("rank", "recent") \
                or not isinstance(raw[1], int) or isinstance(raw[1], bool) \
                or not isinstance(raw[2], (int, float)) or isinstance(raw[2], bool) or not math.isfinite(raw[2]):
            raise bad
        group = None
        if len(raw) == 5:
            if raw[3] not in _GROUP_KEYS or not isinstance(raw[4], str):
                raise bad
            group = (raw[3], raw[4])
        return cls(raw[0], raw[1], float(raw[2]), group)


# --- visibility --------------------------------------------------------------------


def visible_ranges(changes: Sequence[tuple[int, str, str | None]], *, currently_joined: bool,
                   until: int | None) -> tuple[tuple[int, int | None], ...] | None:
    """The stretches of (positive) stream positions whose events a user may see, from
    the changes to the room's current state that matter, oldest first: (position,
    "hv" or "member", the new history visibility or membership, None when unset). An
    event at position p sees the changes at positions <= p. ``until``: nothing after
    it (the user's leave). None when nothing is hidden."""
    hv, member = "shared", None
    ranges: list[tuple[int, int | None]] = []
    start: int | None = 1 if may_see(hv, member, "join" if currently_joined else None) else None
    i = 0
    while i < len(changes):
        pos = changes[i][0]
        while i < len(changes) and changes[i][0] == pos:
            _, kind, value = changes[i]
            if kind == "hv":
                hv = value if isinstance(value, str) else "shared"
            else:
                member = value
            i += 1
        now = may_see(hv, member, "join" if currently_joined else None)
        if now and start is None:
            start = pos
        elif not now and start is not None:
            if pos > start:
                ranges.append((start, pos))
            start = None
    if start is not None:
        ranges.append((start, None))
    if until is not None:
        ranges = [(lo, until + 1 if hi is None else min(hi, until + 1)) for lo, hi in ranges if lo <= until]
    if ranges == [(1, None)]:
        return None
    if len(ranges) > MAX_RANGES:
        ranges = [(ranges[0][0], ranges[-1][1])]
    return tuple(ranges)


# --- the service -------------------------------------------------------------------


class SearchService:
    def __init__(self, store: SearchStore, events: EventsService, bundle_aggregations: BundleAggregations, *,
                 ignored_users: Callable[[str], Awaitable[frozenset[str]]]):
        self.store = store
        self.events = events
        #: Applied to every event a response carries: results and their context.
        self.bundle_aggregations = bundle_aggregations
        #: The users a user ignores: their messages are not found (their state events are).
        self.ignored_users = ignored_users

    async def search(self, user_id: str, device_id: str | None, criteria: RoomEventsCriteria,
                     batch: str | None = None) -> dict[str, Any]:
        """The ``search_categories`` answer for ``room_events``."""
        token = BatchToken.decode(batch) if batch else None
        if token is not None and token.order != criteria.order_by:
            raise MatrixError.invalid_param("This 'next_batch' token is for another 'order_by'")
        group = token.group if token else None
        flt = criteria.filter
        keys = [k for k in criteria.keys if flt.allows_type(KEY_TYPES[k])]
        senders = flt.senders
        if group is not None and group[0] == "sender":
            allowed = group[1] not in flt.not_senders and (senders is None or group[1] in senders)
            senders = (group[1],) if allowed else ()
        query = parse_search_term(criteria.search_term)
        scopes, ignored = await asyncio.gather(
            self._scopes(user_id, flt, only_room=group[1] if group and group[0] == "room_id" else None),
            self.ignored_users(user_id))
        answer: dict[str, Any] = {"results": [], "count": 0, "highlights": []}
        if query is None or not scopes or not keys:
            return {"room_events": answer}
        where = {"scopes": scopes, "keys": keys, "senders": senders, "not_senders": flt.not_senders,
                 "ignored": sorted(ignored)}
        found, resume, read = await self._read(user_id, query, criteria, where, after=token.last if token else None)

        # The rest only reads (on PostgreSQL, over several connections at once).
        async def count() -> int:
            # Every match was read (from the first one): that is the count, no need to ask.
            return read if token is None and resume is None else await self.store.count(query, **where)

        async def state() -> dict[str, list[dict[str, Any]]] | None:
            return await self._states(user_id, {e.pdu.room_id for _, e in found}) if criteria.include_state else None

        texts = {}
        for hit, event in found:
            indexed = searchable_text(event.pdu)
            if indexed is not None:
                texts[hit.stream_ordering] = indexed[1]
        answer["count"], highlights, answer["results"], states = await asyncio.gather(
            count(), self.store.highlights(query, texts), self._results(user_id, device_id, criteria, found), state())
        answer["highlights"] = sorted(highlights)
        if states is not None:
            answer["state"] = states
        if resume is not None:
            answer["next_batch"] = BatchToken.after(criteria.order_by, resume, group).encode()
        groups = self._groups(criteria, found, resume)
        if groups:
            answer["groups"] = groups
        return {"room_events": answer}

    async def _results(self, user_id: str, device_id: str | None, criteria: RoomEventsCriteria,
                       found: Sequence[tuple[SearchHit, StoredEvent]]) -> list[dict[str, Any]]:
        """The results in the client format, with their context if asked and bundled
        aggregations on all of those events."""
        serialized = await self.events.serialize_for_client([e for _, e in found],
                                                           requester_device=(user_id, device_id))
        results = [{"rank": hit.rank, "result": body} for (hit, _), body in zip(found, serialized)]
        bundled = list(serialized)
        if criteria.event_context is not None:
            contexts = await asyncio.gather(*(self._context(user_id, device_id, event, *criteria.event_context)
                                              for _, event in found))
            for result, context in zip(results, contexts):
                result["context"] = context
                bundled += context["events_before"] + context["events_after"]
        await self.bundle_aggregations(bundled, user_id)
        return results

    async def _read(self, user_id: str, query: SearchQuery, criteria: RoomEventsCriteria, where: Mapping[str, Any],
                    *, after: SearchHit | None) -> tuple[list[tuple[SearchHit, StoredEvent]], SearchHit | None, int]:
        """Read matches after ``after``, a page at a time, until ``criteria.limit`` of them
        are visible (or ``MAX_ROUNDS`` pages were read). Returns the visible ones, the
        last match read if more may follow (else None), and how many were read."""
        limit, page = criteria.limit, max(2 * criteria.limit, 20)
        scope_rooms = {s.room_id for s in where["scopes"]}
        found: list[tuple[SearchHit, StoredEvent]] = []
        more, read_total = False, 0
        for _ in range(MAX_ROUNDS):
            hits = await self.store.search(query, order=criteria.order_by, after=after, limit=page, **where)
            stored = await self.events.store.get_events(h.event_id for h in hits)
            candidates = [stored[h.event_id] for h in hits if h.event_id in stored]
            candidates = [e for e in candidates if criteria.filter.allows(e.pdu.type, e.pdu.sender, e.pdu.content)]
            visible = {e.event_id for e in await self.events.filter_visible(user_id, candidates)}
            read = 0
            for hit in hits:
                read += 1
                after = hit
                if hit.event_id in visible and hit.room_id in scope_rooms:
                    found.append((hit, stored[hit.event_id]))
                    if len(found) == limit:
                        break
            read_total += read
            # More may follow if the page was full or the loop stopped inside it.
            more = len(hits) == page or read < len(hits)
            if len(found) == limit or not more:
                break
        return found, after if more else None, read_total

    async def _scopes(self, user_id: str, flt: EventFilter, only_room: str | None) -> list[RoomScope]:
        """The rooms to search, each with the stretches the user may see."""
        searchable = await self.store.searchable_rooms(user_id)
        allowed = set(searchable)
        if flt.rooms is not None:
            allowed &= set(flt.rooms) | await self._predecessors(flt.rooms)
        allowed -= set(flt.not_rooms)
        if only_room is not None:
            allowed &= {only_room}
        rooms = sorted(allowed)
        pdus = await self.events.get_pdus([e for r in rooms for _, _, e in searchable[r].changes if e])
        scopes = []
        for room_id in rooms:
            room = searchable[room_id]
            changes: list[tuple[int, str, str | None]] = []
            for position, event_type, event_id in room.changes:
                content = pdus[event_id].content if event_id in pdus else {}
                if event_type == "m.room.history_visibility":
                    changes.append((position, "hv", content.get("history_visibility")))
                else:
                    value = content.get("membership")
                    changes.append((position, "member", value if isinstance(value, str) else None))
            until = room.position if room.membership in ("leave", "ban") else None
            scopes.append(RoomScope(room_id, visible_ranges(changes, currently_joined=room.membership == "join",
                                                            until=until)))
        return scopes

    async def _predecessors(self, room_ids: Sequence[str]) -> set[str]:
        """The rooms that the given rooms replaced (room upgrades), followed back."""
        out: set[str] = set()
        todo = list(room_ids)
        while todo and len(out) < MAX_PREDECESSORS:
            room_id = todo.pop()
            create_id = await self.events.state.get_current_state_event_id(room_id, "m.room.create", "")
            create = (await self.events.get_pdus([create_id])).get(create_id) if create_id else None
            predecessor = create.content.get("predecessor") if create is not None else None
            old = predecessor.get("room_id") if isinstance(predecessor, dict) else None
            if isinstance(old, str) and old not in out and old not in room_ids:
                out.add(old)
                todo.append(old)
        return out

    async def _context(self, user_id: str, device_id: str | None, event: StoredEvent, before_limit: int,
                       after_limit: int, include_profile: bool) -> dict[str, Any]:
        around = await self.events.events_around(user_id, event, before=before_limit, after=after_limit)
        device = (user_id, device_id)
        context: dict[str, Any] = {
            "events_before": await self.events.serialize_for_client(around.before, requester_device=device),
            "events_after": await self.events.serialize_for_client(around.after, requester_device=device),
            "start": around.start,
            "end": around.end,
        }
        if include_profile:
            # The senders' member events in the state at the end of the context.
            senders = {e.pdu.sender for e in (*around.before, event, *around.after)}
            snap = await self.events.state.get_state(around.last.state_group)
            ids = {s: snap.state[("m.room.member", s)] for s in senders if ("m.room.member", s) in snap.state}
            pdus = await self.events.get_pdus(ids.values())
            profiles: dict[str, Any] = {}
            for sender, event_id in ids.items():
                if event_id in pdus:
                    content = pdus[event_id].content
                    profiles[sender] = {k: content[k] for k in ("displayname", "avatar_url")
                                        if isinstance(content.get(k), str)}
            context["profile_info"] = profiles
        return context

    def _groups(self, criteria: RoomEventsCriteria, found: Sequence[tuple[SearchHit, StoredEvent]],
                resume: SearchHit | None) -> dict[str, Any]:
        groups: dict[str, Any] = {}
        for key in criteria.group_by:
            values: dict[str, Any] = {}
            for _, event in found:
                value = event.pdu.room_id if key == "room_id" else event.pdu.sender
                entry = values.setdefault(value, {"results": [], "order": len(values) + 1})
                entry["results"].append(event.event_id)
            if resume is not None:
                for value, entry in values.items():
                    entry["next_batch"] = BatchToken.after(criteria.order_by, resume, (key, value)).encode()
            groups[key] = values
        return groups

    async def _states(self, user_id: str, room_ids: set[str]) -> dict[str, list[dict[str, Any]]]:
        """The current state of rooms the user is in; of a room left, the state at the leave."""
        out = {}
        for room_id in sorted(room_ids):
            member = await self.events.state.get_membership(room_id, user_id)
            if member is not None and member.membership == "join":
                state_ids = await self.events.state.get_current_state_ids(room_id)
            else:
                meta = (await self.events.store.get_event_meta([member.event_id])).get(member.event_id) \
                    if member is not None else None
                state_ids = (await self.events.state.get_state(meta.state_group)).state if meta else {}
            pdus = await self.events.get_pdus(state_ids.values())
            out[room_id] = await self.events.serialize_for_client([pdus[e] for e in state_ids.values() if e in pdus])
        return out

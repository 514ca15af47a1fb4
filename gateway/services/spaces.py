"""Spaces: the room hierarchy (for clients, and for other servers) and room summaries.

Spec: https://spec.matrix.org/latest/client-server-api/#spaces,
https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1roomsroomidhierarchy,
https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1hierarchyroomid,
https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1room_summaryroomidoralias

Rooms this server is in are described from our own state; the others are asked of
the servers their ``m.space.child`` event names (``via``), up to three, through the
federation client (signed, outbound IP rules), and the answers kept for a minute.

Who sees a room (the spec's list, for a user here or for another server):
- anyone: ``public`` join rules, ``knock``/``knock_restricted`` where the room version
  has them, or ``world_readable`` history;
- a user: joined or invited; for restricted rooms, joined to a room the join rules allow;
  never a user banned from the room (the spec's example of a 403 for the root);
- a server (federation): a joined or invited user of it in the room, or (restricted
  rooms) a joined user of it in an allowed room; never a server the room's server ACL
  denies.
A room another server described is shown to our user when its summary is open to
anyone, names an allowed room the user is joined to, or the user is invited or joined.

The client walk goes depth first, a room's children in the spec's order, each room at
most once (loops are cut), no deeper than ``max_depth`` (capped at ``MAX_DEPTH``). A page
that ends before the walk does stores the rest of the walk in the database under a
random ``next_batch`` token bound to the user and the request's parameters; each page
checks the root again and every room as it is reached, so a token never shows what the
user may not see.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from federation.ids import InvalidIdentifierError, RoomID, get_domain_from_id
from federation.net.client import FederationRequestError
from federation.room_membership import restricted_allow_room_ids
from federation.room_versions import RoomVersion, UnsupportedRoomVersion, get_room_version
from federation.signing import quote_path_segment
from federation.space_hierarchy import (
    SPACE_ROOM_TYPE,
    HierarchyAnswer,
    child_via,
    open_to_anyone,
    parse_hierarchy_answer,
    space_children,
    stripped_child,
)

from ..config import RateLimit
from ..http import MatrixError
from ..storage.directory import DirectoryStore
from ..storage.spaces import HierarchySession, SpacesStore
from .directory import room_chunk
from .ratelimit import RateLimiter

log = logging.getLogger(__name__)

#: Rooms per page of the client hierarchy (also the default).
MAX_ROOMS = 50
#: How deep the client walk goes at most (also the default).
MAX_DEPTH = 50
#: Children described in one federation answer.
MAX_CHILDREN_SERVED = 50
#: ``via`` servers asked for one room.
MAX_SERVERS_PER_ROOM = 3
#: Other servers' answers asked for in one client request (a page may end early).
MAX_REMOTE_FETCHES = 10
#: Seconds one remote hierarchy request may take.
REMOTE_TIMEOUT = 10.0
#: How long other servers' answers (and their silence) are kept.
REMOTE_CACHE_MS = 60_000
REMOTE_FAILURE_CACHE_MS = 15_000
REMOTE_CACHE_SIZE = 1000
#: How long a ``next_batch`` token stays usable.
SESSION_LIFETIME_MS = 5 * 60_000
#: Room summaries for clients without a token, per client address (they may make this
#: server ask others).
ANONYMOUS_SUMMARY_LIMIT = RateLimit(per_second=0.5, burst_count=10)


def check_room_id(room_id: str) -> None:
    """400 ``M_INVALID_PARAM`` unless ``room_id`` is a room ID."""
    try:
        RoomID.parse(room_id)
    except InvalidIdentifierError:
        raise MatrixError.invalid_param(f"{room_id!r} is not a room ID") from None


def _domain(identifier: str) -> str | None:
    try:
        return get_domain_from_id(identifier)
    except InvalidIdentifierError:
        return None


@dataclass(frozen=True)
class LocalRoom:
    """A room this server is in, as the hierarchy describes it."""

    room_id: str
    room_version: RoomVersion | None
    join_rule: str
    world_readable: bool
    #: The room IDs a restricted room's join rules allow (empty otherwise).
    allowed: tuple[str, ...]
    summary: dict[str, Any]

    @property
    def is_space(self) -> bool:
        return self.summary.get("room_type") == SPACE_ROOM_TYPE

    @property
    def open_to_anyone(self) -> bool:
        rv = self.room_version
        return (self.join_rule == "public" or self.world_readable
                or (self.join_rule == "knock" and rv is not None and rv.knock_join_rule)
                or (self.join_rule == "knock_restricted" and rv is not None and rv.knock_restricted_join_rule))


@dataclass
class _Queued:
    """A room still to visit: how to reach it and what its parent's server said of it."""

    room_id: str
    via: list[str]
    depth: int
    remote: dict[str, Any] | None = None

    def to_json(self) -> list[Any]:
        return [self.room_id, self.via, self.depth, self.remote]

    @classmethod
    def from_json(cls, value: Any) -> "_Queued":
        room_id, via, depth, remote = value
        return cls(room_id, list(via), int(depth), remote)


@dataclass
class _Visit:
    summary: dict[str, Any]
    children: list[dict[str, Any]] = field(default_factory=list)
    child_summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    inaccessible: frozenset[str] = frozenset()


class SpacesService:
    def __init__(self, *, server_name: str, store: SpacesStore, summaries: DirectoryStore, events, directory,
                 room_data, federation_client, clock_ms: Callable[[], int]):
        self.server_name = server_name
        self.room_data = room_data  # server ACLs
        self.store = store
        self.summaries = summaries
        self.events = events
        self.state = events.state
        self.directory = directory
        self.federation = federation_client
        self.clock_ms = clock_ms
        self._remote_cache: OrderedDict[tuple, tuple[int, HierarchyAnswer | None]] = OrderedDict()
        self.anonymous_summaries = RateLimiter(ANONYMOUS_SUMMARY_LIMIT)

    # --- rooms we are in --------------------------------------------------------------

    async def is_resident(self, room_id: str) -> bool:
        return await self.state.has_joined_member_of(room_id, self.server_name)

    async def local_room(self, room_id: str) -> LocalRoom | None:
        """The summary of a room we hold (None if unknown), ``allowed_room_ids`` included."""
        row = await self.summaries.get_room_summary(room_id)
        if row is None or row.room_version is None:
            return None
        try:
            rv: RoomVersion | None = get_room_version(row.room_version)
        except UnsupportedRoomVersion:
            rv = None
        join_rule = row.join_rules or "invite"
        allowed: list[str] = []
        restricted = rv is not None and ((join_rule == "restricted" and rv.restricted_join_rule)
                                         or (join_rule == "knock_restricted" and rv.knock_restricted_join_rule))
        if restricted:
            jr_id = await self.state.get_current_state_event_id(room_id, "m.room.join_rules", "")
            jr = (await self.events.get_pdus([jr_id])).get(jr_id) if jr_id else None
            allowed = restricted_allow_room_ids(jr.content) if jr is not None else []
        summary = room_chunk(row)  # the room directory's fields, then the summary's own
        summary["room_version"] = row.room_version
        if row.encryption is not None:
            summary["encryption"] = row.encryption
        if allowed:
            summary["allowed_room_ids"] = allowed
        return LocalRoom(room_id, rv, join_rule, row.history_visibility == "world_readable", tuple(allowed),
                         summary)

    async def visible_locally(self, room: LocalRoom, *, user_id: str | None = None,
                              origin: str | None = None) -> bool:
        """Whether a room we hold shows to ``user_id`` (of ours), to the server
        ``origin``, or (neither given) to anyone."""
        if origin is not None and not await self.room_data.server_is_allowed(origin, room.room_id):
            return False
        member = await self.state.get_membership(room.room_id, user_id) if user_id is not None else None
        if member is not None and member.membership == "ban":
            return False
        if room.open_to_anyone:
            return True
        if user_id is not None:
            if member is not None and member.membership in ("join", "invite"):
                return True
            return await self.store.user_joined_any(user_id, list(room.allowed))
        if origin is not None:
            if await self.store.server_has_member(room.room_id, origin, ("join", "invite")):
                return True
            for other in room.allowed:
                if await self.state.has_joined_member_of(other, origin):
                    return True
        return False

    async def local_children(self, room_id: str, *, suggested_only: bool) -> list[dict[str, Any]]:
        """The room's ``m.space.child`` events that count (a redacted one does not), in order."""
        ids = await self.store.get_child_event_ids(room_id)
        redacted = await self.events.store.get_redactions_for(ids)
        pdus = await self.events.get_pdus([e for e in ids if e not in redacted])
        stripped = (stripped_child(p.type, p.state_key, p.content, p.sender, p.origin_server_ts)
                    for p in pdus.values())
        return space_children([s for s in stripped if s is not None], suggested_only=suggested_only)

    # --- rooms we are not in -------------------------------------------------------------

    async def remote_hierarchy(self, room_id: str, via: Sequence[str], *, suggested_only: bool
                               ) -> HierarchyAnswer | None:
        """Another server's ``GET /hierarchy`` answer for the room: the first of up to
        ``MAX_SERVERS_PER_ROOM`` of ``via`` that gives a valid one (kept a minute); None
        if none does (kept 15 seconds: a browsing client does not hammer a dead server)."""
        servers = [s for s in dict.fromkeys(via) if s != self.server_name][:MAX_SERVERS_PER_ROOM]
        # Answers are kept per room; no answer per room and servers asked.
        ok_key, failed_key = (room_id, suggested_only), (room_id, suggested_only, tuple(servers))
        now = self.clock_ms()
        for key in (ok_key, failed_key):
            cached = self._remote_cache.get(key)
            if cached is not None and cached[0] > now:
                return cached[1]
        parsed: HierarchyAnswer | None = None
        for server in servers:
            try:
                answer = await self.federation.request(
                    "GET", server, f"/_matrix/federation/v1/hierarchy/{quote_path_segment(room_id)}",
                    query={"suggested_only": "true" if suggested_only else "false"}, timeout=REMOTE_TIMEOUT)
                parsed = parse_hierarchy_answer(answer, room_id, suggested_only=suggested_only)
                break
            except (FederationRequestError, ValueError) as e:
                log.info("hierarchy of %s from %s: %s", room_id, server, e)
        key, lifetime = (ok_key, REMOTE_CACHE_MS) if parsed else (failed_key, REMOTE_FAILURE_CACHE_MS)
        self._remote_cache[key] = (now + lifetime, parsed)
        self._remote_cache.move_to_end(key)
        while len(self._remote_cache) > REMOTE_CACHE_SIZE:
            self._remote_cache.popitem(last=False)
        return parsed

    async def visible_remotely(self, summary: dict[str, Any], user_id: str | None) -> bool:
        """Whether a room another server described shows to ``user_id`` (None: anyone)."""
        member = await self.state.get_membership(summary["room_id"], user_id) if user_id is not None else None
        if member is not None and member.membership == "ban":
            return False
        if open_to_anyone(summary):
            return True
        if user_id is None:
            return False
        if await self.store.user_joined_any(user_id, list(summary.get("allowed_room_ids", ()))):
            return True
        return member is not None and member.membership in ("join", "invite")

    async def _servers_for(self, room_id: str, user_id: str | None, via: Sequence[str]) -> list[str]:
        """Where to ask about a room we are not in: ``via``, the room ID's server (rooms
        before version 12), the server of whoever invited the user."""
        servers = list(via)
        domain = _domain(room_id)
        if domain:
            servers.append(domain)
        if user_id is not None:
            member = await self.state.get_membership(room_id, user_id)
            if member is not None and member.membership == "invite" and _domain(member.sender):
                servers.append(_domain(member.sender))
        return list(dict.fromkeys(servers))

    # --- GET /hierarchy for clients -------------------------------------------------------

    async def client_hierarchy(self, user_id: str, room_id: str, *, suggested_only: bool = False,
                               max_depth: int | None = None, limit: int | None = None,
                               from_token: str | None = None, via: Sequence[str] = ()) -> dict[str, Any]:
        check_room_id(room_id)
        max_depth = MAX_DEPTH if max_depth is None else min(max_depth, MAX_DEPTH)
        limit = MAX_ROOMS if limit is None else min(limit, MAX_ROOMS)
        root_via = await self._servers_for(room_id, user_id, via)
        forbidden = MatrixError.forbidden(f"You may not see the hierarchy of {room_id}")
        if await self.is_resident(room_id):
            root = await self.local_room(room_id)
            if root is None or not await self.visible_locally(root, user_id=user_id):
                raise forbidden
        else:
            answer = await self.remote_hierarchy(room_id, root_via, suggested_only=suggested_only)
            if answer is None or not await self.visible_remotely(answer.room, user_id):
                raise forbidden
        if from_token is not None:
            session = await self.store.get_session(from_token, now_ms=self.clock_ms())
            if session is None or (session.user_id, session.room_id, session.suggested_only, session.max_depth) \
                    != (user_id, room_id, suggested_only, max_depth):
                raise MatrixError.invalid_param("Unknown pagination token, or 'suggested_only' or 'max_depth'"
                                                " changed")
            queue = [_Queued.from_json(q) for q in session.walk["queue"]]
            done = set(session.walk["done"])
        else:
            queue, done = [_Queued(room_id, root_via, 0)], set()

        rooms: list[dict[str, Any]] = []
        fetches = 0
        while queue and len(rooms) < limit and fetches < MAX_REMOTE_FETCHES:
            entry = queue.pop()
            if entry.room_id in done:
                continue
            visit, fetched = await self._visit(entry, user_id, suggested_only=suggested_only, max_depth=max_depth)
            fetches += fetched
            done.add(entry.room_id)
            if visit is None:
                continue
            rooms.append({**visit.summary, "children_state": visit.children})
            if entry.depth < max_depth:
                queue.extend(_Queued(c["state_key"], child_via(c["content"]) or [], entry.depth + 1,
                                     visit.child_summaries.get(c["state_key"]))
                             for c in reversed(visit.children) if c["state_key"] not in visit.inaccessible)
        body: dict[str, Any] = {"rooms": rooms}
        if queue:
            token = secrets.token_urlsafe(18)
            now = self.clock_ms()
            walk = {"queue": [q.to_json() for q in queue], "done": sorted(done)}
            await self.store.create_session(token, HierarchySession(user_id, room_id, suggested_only, max_depth, walk),
                                            now_ms=now, expires_ts=now + SESSION_LIFETIME_MS)
            body["next_batch"] = token
        return body

    async def _visit(self, entry: _Queued, user_id: str, *, suggested_only: bool, max_depth: int
                     ) -> tuple[_Visit | None, int]:
        """A room of the walk, if the user may see it (with its children to follow),
        and how many remote requests that took (0 or 1)."""
        if await self.is_resident(entry.room_id):
            room = await self.local_room(entry.room_id)
            if room is None or not await self.visible_locally(room, user_id=user_id):
                return None, 0
            children = await self.local_children(entry.room_id, suggested_only=suggested_only) \
                if room.is_space else []
            return _Visit(room.summary, children), 0
        remote = entry.remote
        if remote is not None and (remote.get("room_type") != SPACE_ROOM_TYPE or entry.depth >= max_depth):
            visit, fetched = _Visit(remote), 0
        else:
            answer = await self.remote_hierarchy(entry.room_id, entry.via, suggested_only=suggested_only)
            fetched = 1
            if answer is None:
                return None, fetched
            visit = _Visit(answer.room, answer.children_state, answer.children, answer.inaccessible)
        if not await self.visible_remotely(visit.summary, user_id):
            return None, fetched
        return visit, fetched

    # --- GET /hierarchy for other servers ----------------------------------------------------

    async def federation_hierarchy(self, origin: str, room_id: str, *, suggested_only: bool) -> dict[str, Any]:
        """The room and the children we can describe to ``origin``: those it may see
        under ``children``, the others under ``inaccessible_children``; children we are
        not in are left out (``origin`` asks their ``via`` servers). 404 for a room we
        are not in or that ``origin`` may not see."""
        check_room_id(room_id)
        root = await self.local_room(room_id) if await self.is_resident(room_id) else None
        if root is None or not await self.visible_locally(root, origin=origin):
            raise MatrixError.not_found(f"Unknown room {room_id}")
        children = await self.local_children(room_id, suggested_only=suggested_only) if root.is_space else []
        described, inaccessible = [], []
        for child in children[:MAX_CHILDREN_SERVED]:
            child_id = child["state_key"]
            room = await self.local_room(child_id) if await self.is_resident(child_id) else None
            if room is None:
                continue
            if await self.visible_locally(room, origin=origin):
                described.append(room.summary)
            else:
                inaccessible.append(child_id)
        return {"room": {**root.summary, "children_state": children}, "children": described,
                "inaccessible_children": inaccessible}

    # --- room summaries -----------------------------------------------------------------

    async def room_summary(self, user_id: str | None, room_id_or_alias: str, via: Sequence[str]) -> dict[str, Any]:
        """``GET /room_summary``: the room's summary if ``user_id`` (None: an
        unauthenticated client) may see it, with the user's membership; 404 otherwise."""
        via = list(via)
        if room_id_or_alias.startswith("#"):
            room_id, servers = await self.directory.resolve_alias(room_id_or_alias)
            via += servers
        else:
            room_id = room_id_or_alias
            check_room_id(room_id)
        not_found = MatrixError.not_found("Room not found or is not accessible")
        if await self.is_resident(room_id):
            room = await self.local_room(room_id)
            if room is None or not await self.visible_locally(room, user_id=user_id):
                raise not_found
            summary = dict(room.summary)
        else:
            answer = await self.remote_hierarchy(room_id, await self._servers_for(room_id, user_id, via),
                                                 suggested_only=True)
            if answer is None or not await self.visible_remotely(answer.room, user_id):
                raise not_found
            summary = dict(answer.room)
        if user_id is not None:
            member = await self.state.get_membership(room_id, user_id)
            summary["membership"] = member.membership if member is not None else "leave"
        return summary

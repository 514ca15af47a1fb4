"""/sync: what changed for a user since a token, long-polling until something does.

Spec: https://spec.matrix.org/latest/client-server-api/#syncing and
https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3sync

Tokens: ``s<events>_<account_data>_<receipts>_<typing>_<instance>_<to_device>_<device_lists>``
(tokens without the last two, from before end-to-end encryption, still parse). All but
typing are database stream positions (they survive a restart); typing lives in memory, so its
position is only meaningful for the process ``instance`` that issued it (see
``typing.py``). A token starts with ``s<events position>``, so a client may also hand it
to /messages as a pagination token.

Cost: an incremental sync reads the stream positions, the user's memberships joined
with each room's head position, the receipts and account data written since the token,
and then only touches rooms whose head moved (one batched timeline query for all of
them). A sync with nothing new costs four queries however many rooms the user is in.

State in a room's section is the state at the start of its timeline: everything for an
initial sync, a newly joined room or ``full_state``; otherwise what changed between the
token and the timeline start (plus state changes the timeline filter hid).
With ``use_state_after`` (v1.16) a room has ``state_after`` instead: the state at the
end of the timeline, or what changed between the token and the timeline end, timeline
events included.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..http import MatrixError
from ..storage.events import StoredEvent
from ..storage.state import StateKey
from ..storage.sync import SyncStore, TimelineEvent, TimelineFilter, UserMembership
from .federation.room_data import wire_json
from .filtering import SyncFilter, only_fields
from .push import MAIN_THREAD
from .receipts import receipt_events

if TYPE_CHECKING:
    from ..storage.presence import PresenceStore
    from .account_data import AccountDataService
    from .e2e_keys import E2EKeysService
    from .events import EventsService
    from .notifier import Notifier
    from .push import PushService
    from .receipts import ReceiptsService
    from .relations import RelationsService
    from .typing import TypingService

#: Longest long-poll a client may ask for (ms).
MAX_TIMEOUT_MS = 10 * 60 * 1000
#: When history visibility hides events of a timeline page, older events are read
#: (pages of this many times the limit, at most this many pages) to fill it.
REFILL_PAGE_FACTOR = 2
REFILL_PAGES = 5
#: Members named in ``m.heroes``.
HEROES = 5
SUMMARY_CACHE_SIZE = 10_000
#: Longest a sync waits for the push rules' evaluation of new events (unread counts).
UNREAD_WAIT_S = 0.2
#: Devices whose lazy-loaded members are remembered (see ``_not_yet_sent_members``).
LAZY_CACHE_DEVICES = 10_000

_TOKEN = re.compile(r"^s(\d{1,18})_(\d{1,18})_(\d{1,18})_(\d{1,18})_([0-9a-f]{1,32})(?:_(\d{1,18})_(\d{1,18}))?"
                    r"(?:_(\d{1,18}))?$")

#: ``unread_counter(user_id, {room_id: after_stream_ordering})`` ->
#: ``{room_id: (notification_count, highlight_count, {thread_id: (notif, highlight)})}``;
#: ``after_stream_ordering`` is the position of the user's read receipt (0 if none).
UnreadCounter = Callable[[str, Mapping[str, int]], Awaitable[Mapping[str, tuple[int, int, Mapping[str, tuple[int, int]]]]]]


@dataclass(frozen=True)
class SyncToken:
    events: int
    account_data: int
    receipts: int
    typing: int
    instance: str
    to_device: int = 0
    #: None in an old token: device list changes are counted from "now".
    device_lists: int | None = None
    #: None in an old token: presence changes are counted from "now".
    presence: int | None = None

    def encode(self) -> str:
        return (f"s{self.events}_{self.account_data}_{self.receipts}_{self.typing}_{self.instance}"
                f"_{self.to_device}_{self.device_lists or 0}_{self.presence or 0}")

    @classmethod
    def parse(cls, token: str) -> "SyncToken":
        m = _TOKEN.match(token)
        if m is None:
            raise MatrixError.invalid_param(f"Invalid 'since' token {token[:64]!r}")
        return cls(int(m[1]), int(m[2]), int(m[3]), int(m[4]), m[5], int(m[6] or 0),
                   None if m[7] is None else int(m[7]), None if m[8] is None else int(m[8]))


@dataclass
class _RoomResult:
    membership: UserMembership
    timeline: list[TimelineEvent] = field(default_factory=list)
    limited: bool = False
    prev_batch: str = ""
    state: list[str] = field(default_factory=list)  # event IDs
    ephemeral: list[dict[str, Any]] = field(default_factory=list)
    account_data: list[dict[str, Any]] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.timeline or self.state or self.ephemeral or self.account_data)


class SyncService:
    def __init__(self, *, store: SyncStore, events: EventsService, notifier: Notifier, typing: TypingService,
                 receipts: ReceiptsService, account_data: AccountDataService, e2e_keys: E2EKeysService,
                 push: PushService, presence: PresenceStore, relations: RelationsService,
                 clock_ms: Callable[[], int]):
        """Each collaborator gives a section of the response; ``notifier`` wakes a
        waiting sync."""
        self.store = store
        self.events = events
        self.notifier = notifier
        self.typing = typing
        self.receipts = receipts
        self.account_data = account_data
        self.e2e_keys = e2e_keys
        self.push = push
        self.presence = presence
        self.relations = relations
        self.clock_ms = clock_ms
        self.unread_counter: UnreadCounter | None = None
        self._lazy_sent: OrderedDict[tuple[str, str], dict[str, set[str]]] = OrderedDict()
        self._summary_cache: OrderedDict[str, tuple[int, tuple[int, int, list[str]]]] = OrderedDict()

    # --- entry point ---------------------------------------------------------------

    async def sync(
        self, user_id: str, device_id: str | None, *, since: str | None, flt: SyncFilter, full_state: bool,
        timeout_ms: int, use_state_after: bool = False,
    ) -> dict[str, Any]:
        """One /sync response; with a ``since`` token and nothing new, waits up to
        ``timeout_ms`` for something to arrive. ``use_state_after`` (spec v1.16): each
        room's state up to the end of its timeline, in ``state_after``, instead of
        ``state``."""
        token = SyncToken.parse(since) if since is not None else None
        timeout_ms = max(0, min(timeout_ms, MAX_TIMEOUT_MS))
        deadline = time.monotonic() + timeout_ms / 1000
        notifier = self.notifier
        with notifier.waiter(user_id) as waiter:
            while True:
                waiter.event.clear()
                body, empty, rooms = await self._sync_once(user_id, device_id, token, flt, full_state,
                                                           use_state_after)
                if token is None or full_state or not empty:
                    return body
                remaining = deadline - time.monotonic()
                if remaining <= 0 or notifier.closing:
                    return body
                waiter.set_rooms(rooms)
                if not await waiter.wait(remaining):
                    return body

    # --- one pass --------------------------------------------------------------------

    async def _sync_once(
        self, user_id: str, device_id: str | None, since: SyncToken | None, flt: SyncFilter, full_state: bool,
        use_state_after: bool = False,
    ) -> tuple[dict[str, Any], bool, list[str]]:
        typing = self.typing
        typing_pos = typing.current_position()
        positions, memberships = await self.store.get_positions_and_memberships(user_id)
        # The push rules' evaluations of the events read here: the unread counts wait for
        # them (not for those of events stored later), while the rest is read.
        evaluations = self.push.evaluations([m.room_id for m in memberships if m.membership == "join"])
        evaluations_since = time.monotonic()
        upto = max([positions["events"]] + [m.stream_ordering for m in memberships])
        # The E2EE section needs only the positions: it is read beside the rooms (its
        # queries do not wait for the timelines', nor theirs for its).
        e2e_section = asyncio.ensure_future(self.e2e_keys.sync_section(
            user_id, device_id, initial=since is None, since_events=None if since is None else min(since.events, upto),
            since_to_device=0 if since is None else since.to_device,
            since_lists=None if since is None else since.device_lists, upto_events=upto, positions=positions))
        e2e_section.add_done_callback(_retrieve)
        # A token from the future (another database?) counts as "now".
        s_events = None if since is None else min(since.events, upto)
        s_account = None if since is None else min(since.account_data, positions["account_data"])
        s_receipts = None if since is None else min(since.receipts, positions["receipts"])
        s_typing = 0 if since is None or since.instance != typing.instance else min(since.typing, typing_pos)

        joined: list[UserMembership] = []
        invited: list[UserMembership] = []
        knocked: list[UserMembership] = []
        left: list[UserMembership] = []
        # A room still partial (a faster join) is only for clients that lazy-load members:
        # others cannot cope with a member list missing most members (as Synapse; MSC3706).
        # For them the room arrives, in full, once its state is complete.
        hide_partial = not flt.lazy_load_members
        for m in memberships:
            if not flt.allows_room(m.room_id):
                continue
            new_membership = s_events is None or m.stream_ordering > s_events
            if m.membership == "join":
                if hide_partial and m.partial:
                    continue
                joined.append(m)
            elif m.membership == "invite" and new_membership:
                invited.append(m)
            elif m.membership == "knock" and new_membership:
                knocked.append(m)
            elif m.membership in ("leave", "ban") and not m.forgotten:
                if (s_events is None and flt.include_leave) or (s_events is not None and new_membership) \
                        or (full_state and flt.include_leave):
                    left.append(m)
        joined_ids = [m.room_id for m in joined]

        # Timelines: rooms that are new to the client from scratch, the others from the token.
        results: dict[str, _RoomResult] = {}
        limit = flt.timeline_limit
        ignored = await self.account_data.ignored_users(user_id)
        tfilter = TimelineFilter(flt.timeline.types, flt.timeline.not_types, flt.timeline.senders,
                                 flt.timeline.not_senders, tuple(sorted(ignored)))
        if ignored and invited:
            # Invites from ignored users are not the client's (spec: "Ignoring Users").
            pdus = await self.events.get_pdus([m.event_id for m in invited])
            invited = [m for m in invited if m.event_id not in pdus or pdus[m.event_id].sender not in ignored]
        from_scratch: set[str] = set()
        batched: list[str] = []
        rejoined = await self._joined_since(user_id, [m for m in joined if s_events is not None
                                                      and m.stream_ordering > s_events], s_events)
        for m in joined:
            if s_events is None or m.room_id in rejoined or (
                    hide_partial and m.full_state_at is not None and m.full_state_at > s_events):
                from_scratch.add(m.room_id)
            elif m.room_head > s_events or full_state:
                batched.append(m.room_id)
        device = (user_id, device_id or "")
        timeline_rows: dict[str, list[TimelineEvent]] = {}
        #: room -> the range its timeline was read from, (after, upto].
        ranges: dict[str, tuple[int | None, int]] = {}
        if batched:
            rooms_for_timeline = [r for r in batched if flt.timeline.allows_room(r)]
            timeline_rows.update(await self.store.get_timelines(
                rooms_for_timeline, after=s_events or 0, upto=upto, limit=limit + 1, flt=tfilter, device=device))
            ranges.update((r, (s_events or 0, upto)) for r in batched)
        by_room = {m.room_id: m for m in memberships}
        # Rooms new to the client and left rooms: each its own range, read together.
        for room_id in sorted(from_scratch):
            ranges[room_id] = (None, upto)
        pages_left = []
        for m in left:
            after = None if s_events is None or full_state else s_events
            if after is None or m.stream_ordering > after:
                pages_left.append(m)
                ranges[m.room_id] = (after, m.stream_ordering)
        pages = await self.store.get_timeline_pages(
            [(r, *ranges[r]) for r in [*sorted(from_scratch), *(m.room_id for m in pages_left)]
             if flt.timeline.allows_room(r)], limit=limit + 1, flt=tfilter, device=device)
        for room_id in sorted(from_scratch):
            timeline_rows[room_id] = pages.get(room_id, [])
        for m in pages_left:
            rows = pages.get(m.room_id, [])
            if not rows and m.current_state_group is None and flt.timeline.allows_room(m.room_id):
                # A room this server is not in (a rejected invite, a retracted knock): the
                # leave event, made here or by the room's server, is its whole timeline.
                stored = await self.events.store.get_event(m.event_id)
                if stored is not None:
                    rows = [TimelineEvent(stored, None, None)]
            timeline_rows[m.room_id] = rows
        for room_id in batched:
            timeline_rows.setdefault(room_id, [])
        left_fresh = await self._joined_and_left(user_id, left, s_events) if not full_state else set()

        # History visibility: every room's newest page at once, older pages where needed.
        first = {room_id: rows[:limit][::-1] for room_id, rows in timeline_rows.items()}
        visible_first = await self.visible_timelines(user_id, {r: (by_room[r], page) for r, page in first.items()})
        for room_id, rows in timeline_rows.items():
            m = by_room[room_id]
            rows, more = await self._visible_page(user_id, m, len(rows) > limit, first[room_id], visible_first[room_id],
                                                  ranges.get(room_id), limit, tfilter, device)
            # A room joined since the token is new to the client: its timeline is a page of
            # history with a gap before it, so limited (as Synapse says: the client resets
            # the room's timeline and paginates back from prev_batch).
            limited = more or (s_events is not None and room_id in from_scratch)
            room_upto = m.stream_ordering if m.membership in ("leave", "ban") else upto
            prev = f"s{rows[0].event.stream_ordering - 1}" if rows else f"s{room_upto}"
            res = _RoomResult(m, rows, limited, prev)
            # A room whose full state arrived since the token (a partial join's resync) gets
            # its state in full, as on a join.
            resynced = m.full_state_at is not None and s_events is not None and m.full_state_at > s_events
            scratch = room_id in from_scratch or s_events is None or full_state or resynced or room_id in left_fresh
            state_of = self._state_after if use_state_after else self._state
            res.state = await state_of(
                room_id, [t.event for t in rows], since_pos=None if scratch else s_events, upto=room_upto, limited=limited,
                flt=flt, user_id=user_id, device=device)
            results[room_id] = res

        # Ephemeral events and account data.
        if flt.ephemeral.allows_type("m.typing"):
            for room_id, ev in typing.changed_rooms(joined_ids, s_typing, typing_pos).items():
                if flt.ephemeral.allows_room(room_id):
                    self._room(results, by_room[room_id]).ephemeral.append(ev)
        if flt.ephemeral.allows_type("m.receipt"):
            if s_receipts is None:
                rows_r = await self.store_receipts().get_for_rooms(joined_ids, upto=positions["receipts"])
            else:
                rows_r = [] if s_receipts >= positions["receipts"] else await self.store_receipts().get_changes(
                    since=s_receipts, upto=positions["receipts"])
                joined_set = set(joined_ids)
                rows_r = [r for r in rows_r if r.room_id in joined_set]
                # Rooms joined since the token get all their receipts.
                scratch_joined = [r for r in from_scratch if s_events is not None]
                if scratch_joined:
                    rows_r += await self.store_receipts().get_for_rooms(scratch_joined, upto=positions["receipts"])
            for room_id, ev in receipt_events(rows_r, user_id).items():
                if flt.ephemeral.allows_room(room_id):
                    self._room(results, by_room[room_id]).ephemeral.append(ev)

        global_data: list[dict[str, Any]] = []
        if s_account is None and flt.account_data.allows_type("m.push_rules"):
            global_data.append({"type": "m.push_rules",
                                "content": {"global": await self.push.get_ruleset(user_id)}})
        ad_rows = []
        if s_account is None or s_account < positions["account_data"]:
            ad_rows = await self.account_data.store.get_changes(user_id, since=s_account,
                                                                 upto=positions["account_data"])
        scratch = {r for r in from_scratch} if s_account is not None else set()
        if scratch:
            # Rooms joined since the token get all their account data (e.g. tags set while invited).
            seen = {(row.room_id, row.type) for row in ad_rows}
            ad_rows = list(ad_rows) + [
                row for row in await self.account_data.store.get_changes(user_id, since=None,
                                                                           upto=positions["account_data"])
                if row.room_id in scratch and (row.room_id, row.type) not in seen]
        if ad_rows:
            in_sections = {m.room_id for m in joined} | {m.room_id for m in left}
            for row in ad_rows:
                if row.type == "m.push_rules" and s_account is None:
                    continue  # an initial sync has the ruleset computed above
                ev = {"type": row.type, "content": row.content}
                if row.room_id == "":
                    if flt.account_data.allows_type(row.type):
                        global_data.append(ev)
                elif row.room_id in in_sections and flt.room_account_data.allows_type(row.type) \
                        and flt.room_account_data.allows_room(row.room_id):
                    m = by_room[row.room_id]
                    if m.membership == "join" or row.room_id in results:
                        self._room(results, m).account_data.append(ev)

        # Drop joined rooms with nothing to say (unless the client asked for everything).
        for room_id in list(results):
            res = results[room_id]
            if res.membership.membership == "join" and res.is_empty() and room_id not in from_scratch \
                    and not full_state:
                del results[room_id]

        presence = await self._presence(user_id, since, positions["presence"], flt, rooms_changed=bool(results))
        e2e, next_to_device, next_lists, e2e_news = await e2e_section
        next_token = SyncToken(upto, positions["account_data"], positions["receipts"], typing_pos, typing.instance,
                               next_to_device, next_lists, positions["presence"])
        body = await self._render(user_id, device_id, results, invited, knocked, global_data, next_token, flt,
                                  "state_after" if use_state_after else "state",
                                  evaluations=(evaluations, evaluations_since))
        body["presence"] = {"events": presence}
        body.update(e2e)
        empty = not results and not invited and not knocked and not global_data and not e2e_news and not presence
        return body, empty, joined_ids

    async def _presence(self, user_id: str, since: SyncToken | None, upto: int,
                        flt: SyncFilter, *, rooms_changed: bool = True) -> list[dict[str, Any]]:
        """``m.presence`` of the users the client shares a joined room with (and its own):
        all of them on an initial sync, the changes since the token otherwise, and those
        of the users newly sharing a room with it (only looked for when a room has news:
        ``rooms_changed``). https://spec.matrix.org/latest/client-server-api/#presence"""
        if not flt.presence.allows_type("m.presence"):
            return []
        start = None if since is None else min(upto, since.presence if since.presence is not None else upto)
        rows = [] if start is not None and start >= upto else \
            await self.presence.get_visible_changes(user_id, since=start, upto=upto)
        if since is not None and rooms_changed:
            # Someone the user shares a room with since the token: their presence as it is
            # now, even unchanged (the client has never been told it).
            seen = {r.user_id for r in rows}
            newly = [u for u in await self.presence.get_newly_shared(user_id, since_events=since.events)
                     if u not in seen]
            current = await self.presence.get_presence(newly) if newly else {}
        else:
            newly, current = [], {}
        from .user_directory import presence_json

        now = self.clock_ms()
        # Those never seen online are offline (as Synapse tells it too).
        return [{"type": "m.presence", "sender": u, "content": presence_json(row, now)}
                for u, row in [(r.user_id, r) for r in rows] + [(u, current.get(u)) for u in newly]
                if flt.presence.allows("m.presence", u)]

    async def _joined_since(self, user_id: str, changed: Sequence[UserMembership], since: int | None) -> set[str]:
        """Of the joined rooms whose membership event is newer than the token, those the
        user was not joined to at the token (a new display name is not a new room)."""
        if not changed or since is None:
            return set()
        before = await self.store.get_membership_event_before(user_id, [m.room_id for m in changed], since)
        pdus = await self.events.get_pdus([e for e in before.values() if e])
        out = set()
        for m in changed:
            prev = pdus.get(before.get(m.room_id) or "")
            if prev is None or prev.content.get("membership") != "join":
                out.add(m.room_id)
        return out

    async def _joined_and_left(self, user_id: str, left: Sequence[UserMembership], since: int | None) -> set[str]:
        """Of the rooms left since the token, those the user joined since the token too:
        the client never had their state, so it gets it in full (as for a join)."""
        if since is None:
            return set()
        recent = [m for m in left if m.stream_ordering > since]
        out = set()
        for m in recent:
            before = await self.store.get_membership_event_before(user_id, [m.room_id], m.stream_ordering - 1)
            stored = await self.events.store.get_event(before.get(m.room_id) or "")
            if stored is not None and stored.stream_ordering > since and stored.pdu.content.get("membership") == "join":
                out.add(m.room_id)
        return out

    def store_receipts(self):
        return self.receipts.store

    @staticmethod
    def _room(results: dict[str, _RoomResult], m: UserMembership) -> _RoomResult:
        res = results.get(m.room_id)
        if res is None:
            res = results[m.room_id] = _RoomResult(m, prev_batch="")
        return res

    async def _visible_page(self, user_id: str, m: UserMembership, more: bool, page: list[TimelineEvent],
                            visible: list[TimelineEvent], bounds: tuple[int | None, int] | None, limit: int,
                            tfilter: TimelineFilter, device: tuple[str, str]) -> tuple[list[TimelineEvent], bool]:
        """The last ``limit`` events of a room's timeline the user may see, oldest first,
        and whether more came before them in the range. ``page``: the range's newest
        ``limit`` events, oldest first, ``visible`` those the user may see, ``more``
        whether older ones are in the range. When history visibility hides some, older
        events are read too, ``REFILL_PAGE_FACTOR * limit`` at a time, up to
        ``REFILL_PAGES`` times (as Synapse), so that a client still gets a page of what it
        may see, such as a member's join among messages from before its own join."""
        size = max(limit * REFILL_PAGE_FACTOR, 10)
        for _ in range(REFILL_PAGES):
            if not more or len(visible) >= limit or not page or bounds is None:
                break
            older = await self.store.get_timeline(m.room_id, after=bounds[0], upto=page[0].event.stream_ordering - 1,
                                                  limit=size + 1, flt=tfilter, device=device)
            more = len(older) > size
            page = older[:size]
            page.reverse()
            visible = await self.visible_timeline(user_id, m, page) + visible
        if len(visible) > limit:
            visible, more = visible[-limit:], True
        return visible, more

    async def visible_timeline(self, user_id: str, m: UserMembership,
                               rows: list[TimelineEvent]) -> list[TimelineEvent]:
        """History visibility of one room's timeline (see ``visible_timelines``)."""
        return (await self.visible_timelines(user_id, {m.room_id: (m, rows)}))[m.room_id]

    async def visible_timelines(
        self, user_id: str, pages: Mapping[str, tuple[UserMembership, list[TimelineEvent]]],
    ) -> dict[str, list[TimelineEvent]]:
        """History visibility, room -> (membership, timeline) in, room -> visible timeline
        out (the rooms' events checked together): a joined user sees everything since
        their join; older events (and everything of a room they left) go through the
        visibility rules, except, for a joined user, the state events that are the room's
        current state (as Synapse: a client keeps its state from the timeline, and a
        member may know the room's current state however it came to be)."""
        old_by_room: dict[str, list[StoredEvent]] = {}
        for room_id, (m, rows) in pages.items():
            if m.membership == "join":
                old = [t.event for t in rows if t.event.stream_ordering < m.stream_ordering]
                if old:
                    old_by_room[room_id] = old
            else:
                old_by_room[room_id] = [t.event for t in rows]
        checked = [e for old in old_by_room.values() for e in old]
        allowed = {e.event_id for e in await self.events.filter_visible(user_id, checked)} if checked else set()
        out: dict[str, list[TimelineEvent]] = {}
        for room_id, (m, rows) in pages.items():
            old = old_by_room.get(room_id)
            if old is None:
                out[room_id] = rows
                continue
            room_allowed = allowed
            if m.membership == "join" and any(e.pdu.state_key is not None and e.event_id not in allowed for e in old):
                room_allowed = allowed | set((await self.events.state.get_current_state_ids(m.room_id)).values())
            out[room_id] = [t for t in rows if t.event.event_id in room_allowed
                            or (m.membership == "join" and t.event.stream_ordering >= m.stream_ordering)]
        return out

    # --- state -----------------------------------------------------------------------

    async def _state_at(self, room_id: str, pos: int) -> dict[StateKey, str]:
        group = await self.store.get_state_group_at(room_id, pos)
        return dict((await self.events.state.get_state(group)).state) if group is not None else {}

    async def _state_before(self, room_id: str, event: StoredEvent) -> dict[StateKey, str]:
        if event.state_group is None:
            return await self._state_at(room_id, event.stream_ordering - 1)
        state = dict((await self.events.state.get_state(event.state_group)).state)
        pdu = event.pdu
        if pdu.state_key is not None and event.rejected_reason is None:
            key = (pdu.type, pdu.state_key)
            if state.get(key) == pdu.event_id:
                if event.replaces_state:
                    state[key] = event.replaces_state
                else:
                    state.pop(key, None)
        return state

    async def _state(
        self, room_id: str, timeline: Sequence[StoredEvent], *, since_pos: int | None, upto: int, limited: bool,
        flt: SyncFilter, user_id: str, device: tuple[str, str] | None = None,
    ) -> list[str]:
        """Event IDs of the ``state`` section (see the module docstring)."""
        in_timeline = {e.event_id for e in timeline}
        restricted = not flt.timeline.is_unrestricted
        lazy = flt.lazy_load_members
        if since_pos is not None and not limited and not restricted:
            # Every state change since the token is in the timeline; lazy-loading adds
            # the senders' member events the device has not had yet.
            if not lazy or not timeline:
                return []
            start = await self._state_before(room_id, timeline[0])
            chosen: dict[StateKey, str] = {}
        else:
            start = await self._state_before(room_id, timeline[0]) if timeline else await self._state_at(room_id, upto)
            if since_pos is None:
                chosen = dict(start)
            else:
                before = await self._state_at(room_id, since_pos)
                chosen = {k: v for k, v in start.items() if before.get(k) != v}
                if restricted:
                    end = await self._state_at(room_id, upto)
                    chosen.update({k: v for k, v in end.items() if v != start.get(k) and before.get(k) != v})
        if lazy:
            # The user's own member event comes with a full or gapped state; an incremental
            # one only names the timeline's senders (as Synapse does).
            senders = {e.pdu.sender for e in timeline}
            if since_pos is None or limited or restricted:
                senders.add(user_id)
            if since_pos is None:
                chosen = {k: v for k, v in chosen.items() if k[0] != "m.room.member" or k[1] in senders}
            for s in senders:
                if ("m.room.member", s) in start:
                    chosen.setdefault(("m.room.member", s), start[("m.room.member", s)])
        sf = flt.state
        out = [v for k, v in chosen.items()
               if v not in in_timeline and sf.allows_type(k[0]) and sf.allows_room(room_id)]
        if lazy and not flt.state.include_redundant_members and device is not None:
            in_timeline_members = {e.event_id for e in timeline if e.pdu.type == "m.room.member"}
            out = self._not_yet_sent_members(device, room_id, out, chosen, in_timeline_members,
                                             reset=since_pos is None)
        return out

    async def _state_after(
        self, room_id: str, timeline: Sequence[StoredEvent], *, since_pos: int | None, upto: int, limited: bool,
        flt: SyncFilter, user_id: str, device: tuple[str, str] | None = None,
    ) -> list[str]:
        """Event IDs of the ``state_after`` section: the state at the end of the timeline
        (everything on an initial sync, a newly joined room or ``full_state``; otherwise
        what changed since the token), timeline events included: a client that asks for
        it takes no state from the timeline.
        https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3sync"""
        lazy = flt.lazy_load_members
        end_group = await self.store.get_state_group_at(room_id, upto)
        end = dict((await self.events.state.get_state(end_group)).state) if end_group is not None else {}
        if since_pos is None:
            chosen = dict(end)
            changed: set[str] = set()
        else:
            since_group = await self.store.get_state_group_at(room_id, since_pos)
            if since_group == end_group and not lazy:
                return []
            before = dict((await self.events.state.get_state(since_group)).state) if since_group is not None else {}
            chosen = {k: v for k, v in end.items() if before.get(k) != v}
            changed = set(chosen.values())
        if lazy:
            # The members of the timeline's senders (and the user's own on a full state);
            # an incremental sync also keeps every membership change since the token.
            senders = {e.pdu.sender for e in timeline}
            if since_pos is None:
                senders.add(user_id)
                chosen = {k: v for k, v in chosen.items() if k[0] != "m.room.member" or k[1] in senders}
            for s in senders:
                if ("m.room.member", s) in end:
                    chosen.setdefault(("m.room.member", s), end[("m.room.member", s)])
        sf = flt.state
        out = [v for k, v in chosen.items() if sf.allows_type(k[0]) and sf.allows_room(room_id)]
        if lazy and not flt.state.include_redundant_members and device is not None:
            out = self._not_yet_sent_members(device, room_id, out, chosen, set(), reset=since_pos is None,
                                             keep=frozenset(changed))
        return out

    def _not_yet_sent_members(self, device: tuple[str, str], room_id: str, event_ids: list[str],
                              chosen: Mapping[StateKey, str], in_timeline: set[str], *, reset: bool,
                              keep: frozenset[str] = frozenset()) -> list[str]:
        """Lazy-loading: leave out member events this device already got (remembered in
        memory per device; after a restart they are simply sent again), but those in
        ``keep``."""
        rooms = self._lazy_sent.get(device)
        if rooms is None:
            rooms = self._lazy_sent[device] = {}
        self._lazy_sent.move_to_end(device)
        while len(self._lazy_sent) > LAZY_CACHE_DEVICES:
            self._lazy_sent.popitem(last=False)
        sent = rooms.setdefault(room_id, set())
        if reset:
            sent.clear()
        members = {v for k, v in chosen.items() if k[0] == "m.room.member"}
        out = [e for e in event_ids if e not in members or e not in sent or e in keep]
        sent.update(e for e in out if e in members)
        sent.update(in_timeline)
        return out

    # --- the response ----------------------------------------------------------------

    async def _render(
        self, user_id: str, device_id: str | None, results: dict[str, _RoomResult], invited: list[UserMembership],
        knocked: list[UserMembership], global_data: list[dict[str, Any]], token: SyncToken, flt: SyncFilter,
        state_section: str = "state",
        evaluations: tuple[Mapping[str, asyncio.Task], float] | None = None,
    ) -> dict[str, Any]:
        events = self.events
        timeline = [t for r in results.values() for t in r.timeline]
        device = (user_id, device_id or "")
        serialized = await events.serialize_for_client(
            [t.event for t in timeline], requester_device=device,
            redactions={t.event.event_id: t.redacted_by for t in timeline if t.redacted_by},
            txn_ids={t.event.event_id: (*device, t.txn_id) for t in timeline if t.txn_id is not None},
        )
        by_id = {e["event_id"]: e for e in serialized}
        # Bundled aggregations only where the timeline is limited (spec): otherwise the
        # client has every child since its last sync and aggregates them itself.
        limited_ids = {t.event.event_id for r in results.values() if r.limited for t in r.timeline}
        if limited_ids:
            await self.relations.bundle_aggregations([by_id[e] for e in limited_ids if e in by_id], user_id)
        state_ids = [eid for r in results.values() for eid in r.state]
        state_stored = await events.store.get_events(state_ids) if state_ids else {}
        state_json = {e["event_id"]: e for e in await events.serialize_for_client(list(state_stored.values()))}
        if flt.event_format != "client" or flt.event_fields is not None:
            pdus = {t.event.event_id: t.event.pdu for t in timeline}
            pdus.update({e: s.pdu for e, s in state_stored.items()})
            by_id = {e: _shape(body, pdus[e], flt) for e, body in by_id.items()}
            state_json = {e: _shape(body, pdus[e], flt) for e, body in state_json.items()}
        sf = flt.state

        joined_rooms = [r for r, res in results.items() if res.membership.membership == "join"]
        summaries = await self._summaries([results[r].membership for r in joined_rooms])
        unread = await self.unread_counts(user_id, joined_rooms,
                                          threaded=flt.timeline.unread_thread_notifications, evaluations=evaluations)

        join: dict[str, Any] = {}
        leave: dict[str, Any] = {}
        for room_id, res in results.items():
            state_events = [state_json[e] for e in res.state if e in state_json
                            and (sf.senders is None or state_stored[e].pdu.sender in sf.senders)]
            section: dict[str, Any] = {
                "timeline": {
                    "events": [by_id[t.event.event_id] for t in res.timeline if t.event.event_id in by_id],
                    "limited": res.limited,
                    "prev_batch": res.prev_batch or f"s{token.events}",
                },
                state_section: {"events": state_events},
                "account_data": {"events": res.account_data},
            }
            if res.membership.membership == "join":
                notif, highlight, threads = unread.get(room_id, (0, 0, {}))
                section["ephemeral"] = {"events": res.ephemeral}
                joined_n, invited_n, candidates = summaries[room_id]
                section["summary"] = {
                    "m.joined_member_count": joined_n,
                    "m.invited_member_count": invited_n,
                }
                if candidates is not None:  # only for a room without a name or canonical alias
                    section["summary"]["m.heroes"] = [u for u in candidates if u != user_id][:HEROES]
                section["unread_notifications"] = {"notification_count": notif, "highlight_count": highlight}
                section["unread_thread_notifications"] = {
                    t: {"notification_count": n, "highlight_count": h} for t, (n, h) in threads.items()
                }
                join[room_id] = section
            else:
                leave[room_id] = section

        invite_pdus = await events.get_pdus([m.event_id for m in invited + knocked])
        invite: dict[str, Any] = {}
        knock: dict[str, Any] = {}
        for m in invited + knocked:
            pdu = invite_pdus.get(m.event_id)
            if pdu is None:
                continue
            stripped = [e for e in (pdu.unsigned.get("invite_room_state") or pdu.unsigned.get("knock_room_state")
                                    or []) if isinstance(e, dict)]
            own = {"type": pdu.type, "state_key": pdu.state_key, "content": pdu.content, "sender": pdu.sender,
                   "event_id": pdu.event_id, "origin_server_ts": pdu.origin_server_ts}
            stripped = [e for e in stripped if (e.get("type"), e.get("state_key")) != (pdu.type, pdu.state_key)]
            if m.membership == "invite":
                invite[m.room_id] = {"invite_state": {"events": stripped + [own]}}
            else:
                knock[m.room_id] = {"knock_state": {"events": stripped + [own]}}

        return {
            "next_batch": token.encode(),
            "rooms": {"join": join, "invite": invite, "leave": leave, "knock": knock},
            "account_data": {"events": global_data},
            "presence": {"events": []},
            "to_device": {"events": []},
            "device_lists": {"changed": [], "left": []},
            "device_one_time_keys_count": {},
        }

    async def _named(self, room_ids: Sequence[str]) -> set[str]:
        """The rooms with a non-empty ``m.room.name`` or canonical alias: their summary
        has no ``m.heroes`` (the spec requires them only for a room without either;
        Synapse leaves them out then, and clients name the room by its name)."""
        current = await self.events.state.get_current_state_of_rooms(
            room_ids, ("m.room.name", "m.room.canonical_alias"))
        pdus = await self.events.get_pdus([e for state in current.values() for e in state.values()])
        named = set()
        for room_id, state in current.items():
            name = pdus.get(state.get(("m.room.name", ""), ""))
            alias = pdus.get(state.get(("m.room.canonical_alias", ""), ""))
            if (name is not None and name.content.get("name")) or (alias is not None and alias.content.get("alias")):
                named.add(room_id)
        return named

    async def _summaries(self, rooms: Sequence[UserMembership]) -> dict[str, tuple[int, int, list[str] | None]]:
        """room -> (joined count, invited count, hero candidates or None for a named
        room): cached per room state group (memberships and names only change with the
        state), read in a few queries for the rest.
        https://spec.matrix.org/latest/client-server-api/#calculating-the-display-name-for-a-room"""
        out: dict[str, tuple[int, int, list[str] | None]] = {}
        missing = []
        for m in rooms:
            hit = self._summary_cache.get(m.room_id)
            if hit is not None and m.current_state_group is not None and hit[0] == m.current_state_group:
                out[m.room_id] = hit[1]
            else:
                missing.append(m)
        if missing:
            ids = [m.room_id for m in missing]
            counts = await self.store.get_member_counts(ids)
            heroes = await self.store.get_hero_candidates(ids, HEROES + 1)
            named = await self._named(ids)
            for m in missing:
                candidates = None if m.room_id in named else [u for u, _ in heroes.get(m.room_id, [])]
                value = (counts[m.room_id]["join"], counts[m.room_id]["invite"], candidates)
                out[m.room_id] = value
                if m.current_state_group is not None:
                    self._summary_cache[m.room_id] = (m.current_state_group, value)
                    self._summary_cache.move_to_end(m.room_id)
            while len(self._summary_cache) > SUMMARY_CACHE_SIZE:
                self._summary_cache.popitem(last=False)
        return out

    async def unread_counts(
        self, user_id: str, room_ids: Sequence[str], *, threaded: bool = False,
        evaluations: tuple[Mapping[str, asyncio.Task], float] | None = None,
    ) -> Mapping[str, tuple[int, int, Mapping[str, tuple[int, int]]]]:
        """Unread notification counts per room after the user's read receipts: the push
        rules' ``event_push_actions`` (after this process's pending evaluations of those
        rooms, waited for up to ``UNREAD_WAIT_S``), in one query; ``self.unread_counter``
        replaces this when plugged in. ``threaded`` (the filter's
        ``unread_thread_notifications``): the room counts are the main timeline's and
        each thread with unread notifications gets its own; otherwise the room counts
        are the sum of all threads.
        ``evaluations``: ``PushService.evaluations`` taken when the sync read the stream
        position, and when (``time.monotonic()``): only those are waited for, and the
        ``UNREAD_WAIT_S`` count from then (the wait overlaps the sync's other reads).
        https://spec.matrix.org/latest/client-server-api/#threading"""
        if not room_ids:
            return {}
        if self.unread_counter is not None:
            receipts = await self.receipts.store.get_read_positions(user_id, room_ids)
            return await self.unread_counter(user_id, {r: receipts.get(r, 0) for r in room_ids})
        # A quiet room's counts wait for the evaluation of its new events; a busy room's
        # backlog does not hold the sync (its next events bring the counts up to date).
        if evaluations is None:
            await self.push.wait_for_evaluations(room_ids, timeout=UNREAD_WAIT_S)
        else:
            tasks, since = evaluations
            if tasks:
                await self.push.wait_for_evaluations(
                    room_ids, timeout=max(0.0, UNREAD_WAIT_S - (time.monotonic() - since)), tasks=tasks)
        counts = await self.store.get_unread_counts(user_id, room_ids)
        out: dict[str, tuple[int, int, Mapping[str, tuple[int, int]]]] = {}
        for room_id in room_ids:
            per_thread = counts.get(room_id, {})
            if threaded:
                main = per_thread.get(MAIN_THREAD, (0, 0))
                threads = {t: c for t, c in per_thread.items() if t != MAIN_THREAD and c != (0, 0)}
                out[room_id] = (*main, threads)
            else:
                out[room_id] = (sum(c[0] for c in per_thread.values()),
                                sum(c[1] for c in per_thread.values()), {})
        return out


def _retrieve(task: asyncio.Future) -> None:
    """A task read beside the rest of a sync pass: if the pass failed (or was cancelled)
    before awaiting it, its outcome is dropped here, not reported as never retrieved."""
    if not task.cancelled():
        task.exception()


def _shape(body: dict[str, Any], pdu: Any, flt: SyncFilter) -> dict[str, Any]:
    """An event in the filter's ``event_format``, cut down to its ``event_fields``."""
    if flt.event_format == "federation":
        client = body
        body = wire_json(pdu)
        body["event_id"] = pdu.event_id
        body["content"] = client["content"]  # redactions applied
        body["unsigned"] = {**body.get("unsigned", {}), **client.get("unsigned", {})}
    if flt.event_fields is not None:
        body = only_fields(body, flt.event_fields)
    return body

"""Partial-state ("faster") joins as the joining server: the room's marker, the
background resync that fetches the full state, and what the rest of the server asks
while a room is partial.

Spec: ``send_join`` v2 ``omit_members`` / ``members_omitted`` / ``servers_in_room``
(https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv2send_joinroomideventid);
background: MSC3706, MSC3902. Switch: ``experimental_features.faster_joins`` (Synapse's
key; default on). The pure parts are in ``federation.partial_state``.

The flow:

1. ``FederationMembershipHandler.join_remote`` asks ``send_join`` with
   ``omit_members=true``. If the answer has ``members_omitted: true``, the state and auth
   chain it has go through ``persist_outliers`` as for a full join, the room is marked
   partial (:meth:`PartialStateService.mark`, before the join event is stored, so that a
   crash in between leaves a marker the startup cleans up), the join event is accepted
   against that state, and the client has its answer. :meth:`start_resync` then runs in
   the background.
2. The resync asks the servers of ``servers_in_room`` in turn (the one we joined through
   first) for ``/state_ids`` at the join event, fetches what we lack (``/event``, or one
   ``/state`` when many are lacking), and checks and stores them with
   ``persist_outliers`` (bad events dropped or rejected). A round in which every server
   failed is followed by a growing pause. Then, under the room lock, the state of the
   join event and of every event after it in the DAG is recomputed (state resolution at
   merges) and each is checked again against its full state before it (an event that now
   fails is marked rejected); the forward extremities and the room's current state
   follow, and the marker goes, in one transaction. ``/sync`` then sends the room's state
   in full again (``rooms.full_state_stream_ordering``). :meth:`start` resumes unfinished
   resyncs when the server starts.
3. While a room is partial: a received event is checked against the resolution of the
   partial state before it and its own auth events, and never soft-failed
   (:meth:`auth_state`); our events go to ``servers_in_room`` besides the servers we know
   members of (:meth:`servers_for`); ``/members`` and ``/joined_members`` wait for the full
   state (:meth:`await_full_state`), and so does backfill; as a resident we refuse
   make_join/send_join/make_leave/send_leave and ``/state``/``/state_ids`` (404, the asking
   server tries another one).

Not done (see README): events rejected while partial are not checked again (only
accepted ones are); soft failure is not applied afterwards; device list updates seen
while partial are not replayed; a second local user joining a partial room joins locally
against the partial state (a join the full state refuses is rejected by the resync).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from federation.auth_rules import auth_types_for_event
from federation.canonical_json import iter_list_items
from federation.events import PDU
from federation.keyring import key_requests_for_event
from federation.net.client import FederationRequestError
from federation.partial_state import (
    BadStateAnswer,
    auth_event_ids_of,
    dependency_order,
    forward_extremities,
    parse_state_ids_answer,
    resync_servers,
    retry_delay,
    state_map_of,
)
from federation.pdu_checks import Reject, check_auth_against_state_before
from federation.room_versions import RoomVersion
from federation.signing import SignatureError, quote_path_segment

from ...storage.partial_state import LaterEvent, PartialStateRoom, PartialStateStore
from ..background import KeyedTasks
from ..bulk_work import gc_paused
from .receive import OutlierResult, guess_event_id
from ...storage.state import StateKey, StateSnapshot

log = logging.getLogger(__name__)

#: Pause after the first round in which every server failed; it doubles up to the max.
RESYNC_RETRY_MIN_S = 2.0
RESYNC_RETRY_MAX_S = 600.0
#: More events lacking than this: one ``/state`` for all, instead of ``/event`` each.
BULK_FETCH_THRESHOLD = 200
#: ``/event`` requests in flight to one server during a resync.
EVENT_FETCH_CONCURRENCY = 10
#: How long ``/members``, ``/joined_members`` and backfill wait for the full state.
FULL_STATE_WAIT_S = 60.0


class PartialStateService:
    def __init__(self, hs):
        self.hs = hs
        self.store = PartialStateStore(hs.db, hs.events.state)
        #: The database's partial rooms, read once and kept in step by this process.
        self._rooms: dict[str, PartialStateRoom] | None = None
        self._load_lock = asyncio.Lock()
        self._tasks = KeyedTasks("resync")
        self._full: dict[str, asyncio.Event] = {}
        #: Requests waiting for a room's full state, per room.
        self._waiting: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        """Whether joins ask for partial state (``experimental_features.faster_joins``)."""
        return self.hs.config.federation.faster_joins

    # --- the marker ------------------------------------------------------------------

    async def _loaded(self) -> dict[str, PartialStateRoom]:
        if self._rooms is None:
            async with self._load_lock:
                if self._rooms is None:
                    self._rooms = await self.store.get_all()
        return self._rooms

    async def is_partial(self, room_id: str) -> bool:
        return room_id in await self._loaded()

    async def get(self, room_id: str) -> PartialStateRoom | None:
        return (await self._loaded()).get(room_id)

    async def mark(self, room_id: str, join_event_id: str, joined_via: str, servers: Sequence[str]) -> None:
        """The room is (again) partial since ``join_event_id``."""
        rooms = await self._loaded()
        now = self.hs.clock_ms()
        await self.store.mark(room_id, join_event_id, joined_via, servers, now)
        rooms[room_id] = PartialStateRoom(room_id, join_event_id, joined_via, now, tuple(dict.fromkeys(servers)))
        self._full.setdefault(room_id, asyncio.Event()).clear()
        self.hs.notifier.publish_data("partial_state", {"room": room_id, "partial": True})

    async def unmark(self, room_id: str, join_event_id: str | None = None) -> None:
        """The room is no longer partial (the join failed, or was a full one)."""
        rooms = await self._loaded()
        await self.store.unmark(room_id, join_event_id)
        row = rooms.get(room_id)
        if row is not None and (join_event_id is None or row.join_event_id == join_event_id):
            self._cleared(room_id)

    def _cleared(self, room_id: str) -> None:
        if self._rooms is not None:
            self._rooms.pop(room_id, None)
        event = self._full.pop(room_id, None)
        if event is not None:
            event.set()
        self.hs.notifier.publish_data("partial_state", {"room": room_id, "partial": False})

    def on_replicated(self, data: Any) -> None:
        """Another process marked a room partial, or finished its resync (workers): read
        the partial rooms again, and forget what the resync rewrote."""
        if not isinstance(data, dict) or not isinstance(data.get("room"), str):
            return
        room_id = data["room"]
        self._rooms = None
        if data.get("partial"):
            self._full.setdefault(room_id, asyncio.Event()).clear()
            return
        self.hs.federation_events.forget_room_events(room_id)
        self.hs.events.forget_head(room_id)
        event = self._full.pop(room_id, None)
        if event is not None:
            event.set()

    async def await_full_state(self, room_id: str, timeout_s: float = FULL_STATE_WAIT_S) -> bool:
        """Wait until the room is not partial (at most ``timeout_s``); False on timeout."""
        if not await self.is_partial(room_id):
            return True
        event = self._full.setdefault(room_id, asyncio.Event())
        self._waiting[room_id] = self._waiting.get(room_id, 0) + 1
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except asyncio.TimeoutError:
            return not await self.is_partial(room_id)
        finally:
            self._waiting[room_id] -= 1
            if not self._waiting[room_id]:
                del self._waiting[room_id]
        return True

    def waiting(self, room_id: str) -> int:
        """How many requests are waiting for the room's full state now."""
        return self._waiting.get(room_id, 0)

    async def servers_for(self, room_ids: Iterable[str]) -> dict[str, frozenset[str]]:
        """For the partial rooms among ``room_ids``: the servers of ``servers_in_room``
        (besides the ones we know members of, our events go to these)."""
        rooms = await self._loaded()
        own = self.hs.server_name
        return {r: frozenset(s for s in rooms[r].servers if s != own) for r in room_ids if r in rooms}

    # --- check 5 while partial -----------------------------------------------------------

    async def auth_state(self, rv: RoomVersion, pdu: PDU, state_before: Mapping[StateKey, str],
                         auth_events: Mapping[str, PDU], rejected: set[str]) -> dict[StateKey, PDU]:
        """The state the auth rules read for ``pdu`` in a partial-state room (MSC3902):
        the resolution of the (partial) state before it with its own auth events, over
        the keys the rules look at. A remote member we have no event for is then taken
        from the event's auth events (checked in step 4) instead of being "absent"."""
        keys = set(auth_types_for_event(rv, pdu.type, pdu.sender, pdu.state_key, pdu.content))
        keys.add(("m.room.create", ""))
        ours = {k: state_before[k] for k in keys if k in state_before}
        theirs = {(a.type, a.state_key): a.event_id for a in auth_events.values()
                  if a.state_key is not None and a.event_id not in rejected and (a.type, a.state_key) in keys}
        resolved = await self.hs.federation_events.resolve(rv, [ours, theirs], known=auth_events)
        pdus = await self.hs.events.get_pdus(resolved.values())
        return {k: pdus[e] for k, e in resolved.items() if e in pdus}

    # --- the resync: tasks -----------------------------------------------------------------

    async def start(self) -> None:
        """At startup: resume every unfinished resync."""
        for room_id in list(await self._loaded()):
            self.start_resync(room_id)

    def start_resync(self, room_id: str) -> None:
        """Run the room's resync in the background, now: one that was running (perhaps
        waiting out a pause, for an older join) is cancelled; its work is redone."""
        self._tasks.start(room_id, lambda: self._resync(room_id), replace=True)

    async def close(self) -> None:
        await self._tasks.close()

    async def _resync(self, room_id: str) -> None:
        rounds_failed = 0
        while not self._tasks.closing:
            row = await self.get(room_id)
            if row is None:
                return
            try:
                if not await self._still_wanted(row):
                    return
                outcome = await self._resync_round(row)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a bug must not end the resync for good
                log.exception("resync of %s failed", room_id)
                outcome = None
            if outcome is True:
                return
            if outcome is False:  # a newer join replaced the marker: again at once
                rounds_failed = 0
                continue
            rounds_failed += 1
            delay = retry_delay(rounds_failed, base_s=RESYNC_RETRY_MIN_S, cap_s=RESYNC_RETRY_MAX_S)
            log.info("resync of %s: no server could give the full state; again in %.0fs", room_id, delay)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))

    async def _still_wanted(self, row: PartialStateRoom) -> bool:
        """A marker whose join was never stored (a crash between the two), or for a room
        none of our users is in any more, is dropped: nothing reads that room's state."""
        meta = (await self.hs.events.store.get_event_meta([row.join_event_id])).get(row.join_event_id)
        if meta is None or meta.outlier or meta.rejected_reason is not None:
            log.info("partial join of %s never completed; dropping its marker", row.room_id)
        elif not await self.hs.federation_membership.is_resident(row.room_id):
            log.info("none of our users is in %s any more; its resync stops", row.room_id)
        else:
            return True
        await self.unmark(row.room_id, row.join_event_id)
        return False

    async def _resync_round(self, row: PartialStateRoom) -> bool | None:
        """Ask each server once. True: done; False: the marker changed meanwhile;
        None: every server failed."""
        room = await self.hs.events.store.get_room(row.room_id)
        if room is None:
            return None
        self.hs.federation_events.warm_checks()  # ready when /state's answer comes
        for server in resync_servers(row.servers, self.hs.server_name):
            try:
                full, known = await self._fetch_full_state(server, row.room_id, room.room_version,
                                                           row.join_event_id)
            except (FederationRequestError, BadStateAnswer) as e:
                log.info("resync of %s: %s could not give the state at our join: %s", row.room_id, server, e)
                continue
            with gc_paused():
                return await self._apply(row, room.room_version, full, known)
        return None

    # --- the resync: fetching ---------------------------------------------------------------

    async def _fetch_full_state(self, server: str, room_id: str, rv: RoomVersion,
                                join_event_id: str) -> tuple[dict[StateKey, str], Mapping[str, Any]]:
        """The full state before our join as ``server`` sees it, every event of it and of
        its auth chain checked and stored (bad ones left out); and what the memberships
        need of the events stored (``OutlierKey`` by event ID)."""
        fed = self.hs.federation_events
        answer = await self.hs.federation_client.request(
            "GET", server, f"/_matrix/federation/v1/state_ids/{quote_path_segment(room_id)}",
            query={"event_id": join_event_id})
        state_ids, chain_ids = parse_state_ids_answer(answer)
        wanted = list(dict.fromkeys([*chain_ids, *state_ids]))
        have = await self.hs.events.store.get_event_meta(wanted)
        lacking = [e for e in wanted if e not in have]
        fetched, absent, key_requests = await self._fetch_events(server, room_id, rv, join_event_id, lacking)
        if absent:
            # The server lists events it does not have: they are left out (as if it had not
            # listed them), and so are the events whose auth they are.
            log.warning("resync of %s: %s does not have %d events it listed (e.g. %s)", room_id, server,
                        len(absent), next(iter(absent)))
        with gc_paused():  # bulk work: see bulk_work
            stored = (await self._persist(server, room_id, rv, fetched, key_requests)).accepted
        del fetched
        # The state events just stored are known from memory; the others are read.
        rows = await self.store.get_state_rows([e for e in state_ids if e not in stored])
        usable = [stored[e] if e in stored else rows[e] for e in state_ids
                  if e in stored or (e in rows and rows[e].rejected_reason is None)]
        dropped = len(state_ids) - len(usable)
        if dropped:
            log.warning("resync of %s via %s: %d state events dropped or rejected", room_id, server, dropped)
        return state_map_of(usable), stored

    async def _fetch_events(self, server: str, room_id: str, rv: RoomVersion, join_event_id: str,
                            event_ids: Sequence[str]) -> tuple[dict[str, "Fetched"], set[str], set]:
        """The events asked for, by event ID, and those ``server`` says it does not have
        (404), and the keys their signatures need: all at once from ``/state`` when
        there are many, else (and for what
        ``/state`` lacked) ``/event`` each. ``BadStateAnswer`` on any other failure (a
        timeout, a 5xx): the events are not to be judged on a partial fetch."""
        wanted = set(event_ids)
        out: dict[str, Fetched] = {}
        key_requests: set = set()
        if len(wanted) > BULK_FETCH_THRESHOLD:
            try:
                answer = await self.hs.federation_client.request(
                    "GET", server, f"/_matrix/federation/v1/state/{quote_path_segment(room_id)}",
                    query={"event_id": join_event_id}, parse=False)
            except FederationRequestError as e:
                log.info("resync of %s: /state from %s failed (%s); asking event by event", room_id, server, e)
                answer = None
            if answer is not None:
                try:
                    answer = answer.decode("utf-8")  # the bytes go before the events are cut out
                    with gc_paused():  # bulk work: see bulk_work
                        out.update(await asyncio.to_thread(_pick, answer, rv, wanted, server, key_requests))
                except ValueError as e:
                    log.info("resync of %s: /state from %s is not JSON (%s); asking event by event",
                             room_id, server, e)
                del answer
        rest = [e for e in event_ids if e not in out]
        absent: set[str] = set()
        limit = asyncio.Semaphore(EVENT_FETCH_CONCURRENCY)

        async def one(event_id: str) -> None:
            async with limit:
                try:
                    answer = await self.hs.federation_client.request(
                        "GET", server, f"/_matrix/federation/v1/event/{quote_path_segment(event_id)}")
                except FederationRequestError as e:
                    if e.status == 404:
                        absent.add(event_id)
                        return
                    raise BadStateAnswer(f"fetching {event_id} failed: {e}") from None
            pdus = answer.get("pdus") if isinstance(answer, dict) else None
            item = pdus[0] if isinstance(pdus, list) and pdus else None
            if not isinstance(item, dict) or guess_event_id(item, rv) != event_id:
                raise BadStateAnswer(f"the answer for {event_id} is not that event")
            out[event_id] = _fetched(item, item, rv, server, key_requests, {})

        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels the rest
                for e in rest:
                    group.create_task(one(e))
        except* BadStateAnswer as failed:
            raise failed.exceptions[0] from None
        return out, absent, key_requests

    async def _persist(self, origin: str, room_id: str, rv: RoomVersion, events: dict[str, "Fetched"],
                       key_requests: Iterable[Any]) -> OutlierResult:
        """Check and store ``events`` (by event ID, as received) as outliers, given each
        after its auth events (``persist_outliers`` checks everything, a malformed event
        is dropped there). One stream: the room's lock is taken for each slice's write
        only, so the room's traffic goes on meanwhile; lean: only what the state map
        needs of each event comes back, and no event is held whole longer than from its
        check to its write (``events`` is handed over: emptied). Returns what became of
        them."""
        fed = self.hs.federation_events
        deps = {eid: f.auth_ids for eid, f in events.items()}
        depth = {eid: (f.depth, eid) for eid, f in events.items()}
        ordered = [events[e].item for e in dependency_order(deps, depth)]
        referenced = {a for ids in deps.values() for a in ids}
        requests = list(key_requests)
        del deps, depth
        events.clear()  # handed over: persist_outliers lets each event go once checked
        result = await fed.persist_outliers(origin, room_id, rv, ordered, lock_writes=True, lean=True,
                                            key_requests=requests, referenced=referenced)
        if result.dropped:
            log.warning("resync of %s via %s: %d events dropped (e.g. %s)", room_id, origin,
                        len(result.dropped), next(iter(result.dropped.items())))
        return result

    # --- the resync: recomputing ----------------------------------------------------------------

    async def _apply(self, row: PartialStateRoom, rv: RoomVersion, full_before_join: dict[StateKey, str],
                     known: Mapping[str, Any]) -> bool:
        """Under the room lock: the full state for the join and every event after it,
        then the room's current state; the marker goes. False if the marker changed."""
        room_id, join_id = row.room_id, row.join_event_id
        events, state, fed = self.hs.events, self.hs.events.state, self.hs.federation_events
        async with events.room_lock(room_id):
            current_row = await self.get(room_id)
            if current_row is None or current_row.join_event_id != join_id:
                return False
            later = await self.store.get_events_after(room_id, join_id)
            if join_id not in later:
                return False
            order = dependency_order({e: r.prev_event_ids for e, r in later.items()},
                                    {e: (r.depth, r.stream_ordering) for e, r in later.items()})
            outside = {p for r in later.values() for p in r.prev_event_ids if p not in later}
            outside_meta = await events.store.get_event_meta(outside)
            # Children left to recompute, so that a state is dropped once nothing needs it.
            waiting = {e: 0 for e in later}
            for r in later.values():
                for p in set(r.prev_event_ids):
                    if p in waiting:
                        waiting[p] += 1
            after: dict[str, StateSnapshot] = {}
            rejected: dict[str, str | None] = {e: r.rejected_reason for e, r in later.items()}
            newly_rejected = 0
            pdus = await events.get_pdus(order)
            for eid in order:
                r = later[eid]
                pdu = pdus.get(eid)
                if pdu is None:
                    continue
                prev_states = await self._prev_states(r, after, outside_meta)
                if eid == join_id:
                    before = full_before_join
                    base = await state.get_state(r.state_group) if r.state_group is not None else prev_states[0] \
                        if prev_states else None
                elif prev_states:
                    before = await fed.resolve(rv, [dict(s.state) for s in prev_states])
                    base = prev_states[0]
                else:
                    before, base = None, None
                if before is None or base is None:
                    log.warning("resync of %s: no state for the prev events of %s; left as it was", room_id, eid)
                    if r.state_group is not None:
                        after[eid] = await state.get_state(r.state_group)
                    continue
                reason = None
                if rejected[eid] is None:
                    decision = check_auth_against_state_before(rv, pdu, await fed.auth_state(rv, pdu, before))
                    if isinstance(decision, Reject):
                        reason = decision.reason
                        rejected[eid] = reason
                        newly_rejected += 1
                        log.warning("resync of %s: %s is refused by the full state: %s", room_id, eid, reason)
                state_after, replaces = before, None
                if pdu.state_key is not None and rejected[eid] is None:
                    key = (pdu.type, pdu.state_key)
                    replaces = before.get(key)
                    state_after = {**before, key: eid}
                after[eid] = await self.store.rewrite_event_state(room_id, eid, base=base, state=state_after,
                                                                  replaces=replaces, rejected_reason=reason)
                for p in set(r.prev_event_ids):  # forget states nothing needs any more
                    if p in waiting:
                        waiting[p] -= 1
                        if waiting[p] == 0 and p in after and p != eid:
                            del after[p]
            position = await self._finish(row, rv, later, after, rejected, known)
            fed.forget_events(list(later))
            fed.forget_room_head(room_id)
            events.forget_head(room_id)
        self._cleared(room_id)
        log.info("resync of %s done: %d events recomputed (%d now rejected)", room_id, len(later), newly_rejected)
        events.announce_stored(room_id, [position])
        return True

    async def _prev_states(self, r: LaterEvent, after: Mapping[str, StateSnapshot],
                           outside_meta: Mapping[str, Any]) -> list[StateSnapshot]:
        """The (new) states after the prev events of ``r`` that we have."""
        out = []
        for p in r.prev_event_ids:
            if p in after:
                out.append(after[p])
            elif p in outside_meta and outside_meta[p].state_group is not None and not outside_meta[p].outlier:
                out.append(await self.hs.events.state.get_state(outside_meta[p].state_group))
        return out

    async def _finish(self, row: PartialStateRoom, rv: RoomVersion, later: Mapping[str, LaterEvent],
                      after: Mapping[str, StateSnapshot], rejected: Mapping[str, str | None],
                      known: Mapping[str, Any]) -> int:
        """The forward extremities and current state after the recomputation, stored with
        the marker's removal. Returns the events position it took. ``known``: the events
        the resync stored (``OutlierKey``): the member events among them are not read
        back (thousands of PDUs) for the memberships."""
        events, state = self.hs.events, self.hs.events.state
        room_id = row.room_id
        in_timeline = {e: rejected[e] is None and not r.soft_failed for e, r in later.items()}
        ours = forward_extremities({e: r.prev_event_ids for e, r in later.items()}, in_timeline)
        old = set(await events.store.get_forward_extremities(room_id))
        removed = (old & set(later)) - ours
        added = ours - old
        final = (old - removed) | added
        snapshots: list[StateSnapshot] = []
        metas = await events.store.get_event_meta(final - set(after))
        for e in sorted(final):
            if e in after:
                snapshots.append(after[e])
            elif e in metas and metas[e].state_group is not None:
                snapshots.append(await state.get_state(metas[e].state_group))
        room = await events.store.get_room(room_id)
        current = await state.get_state(room.current_state_group)
        new_current = await self.hs.federation_events.resolve(rv, [dict(s.state) for s in snapshots]) \
            if snapshots else dict(current.state)
        same_as = next((s for s in snapshots if dict(s.state) == new_current), None)
        fresh = [v for k, v in new_current.items() if current.state.get(k) != v]
        members = {e: known[e] for e in fresh if e in known and known[e].type == "m.room.member"}
        state_events = {**await events.get_pdus([e for e in fresh if e not in members]), **members}
        position, _ = await self.store.finish(
            room_id, row.join_event_id, current=current, new_current=new_current, same_as=same_as,
            state_events=state_events, extremities_removed=sorted(removed), extremities_added=sorted(added))
        return position


class Fetched(NamedTuple):
    """An event fetched for the resync: as received (its JSON, or its JSON text from a
    big answer), and what the ordering needs of it."""

    item: Any
    auth_ids: list[str]
    depth: int


def _fetched(item: Any, parsed: Any, rv: RoomVersion, origin: str, key_requests: set,
             names: dict[str, str]) -> Fetched:
    """``key_requests`` gets the keys the event's signatures need; ``names``: one copy
    of each event ID named (thousands of events name the same few auth events)."""
    depth = parsed.get("depth") if isinstance(parsed, dict) else None
    try:
        key_requests.update(key_requests_for_event(parsed, rv, origin=origin))
    except SignatureError:
        pass  # the signature check reports it
    auth_ids = [names.setdefault(a, a) for a in auth_event_ids_of(parsed)]
    return Fetched(item, auth_ids, depth if isinstance(depth, int) else 0)


def _pick(text: str, rv: RoomVersion, wanted: set[str], origin: str, key_requests: set
          ) -> dict[str, Fetched]:
    """The events of a ``/state`` answer (``pdus`` and ``auth_chain``) among ``wanted``,
    by their event ID (computed: the answer's word is not taken for it), each kept as
    its JSON text: the answer is read an event at a time (never parsed whole), each
    parsed copy dropped once its ID, auth events, depth and keys are known.
    ``ValueError`` if the answer is not JSON."""
    out: dict[str, Fetched] = {}
    names: dict[str, str] = {}
    for _, item, raw in iter_list_items(text, ("auth_chain", "pdus")):
        eid = guess_event_id(item, rv)
        if eid in wanted:
            out[eid] = _fetched(raw, item, rv, origin, key_requests, names)
    return out


__all__ = ["PartialStateService", "FULL_STATE_WAIT_S"]

"""Events received over federation: the PDU receipt pipeline, gap filling, and the bulk
paths a join needs.

Spec: https://spec.matrix.org/latest/server-server-api/#checks-performed-on-receipt-of-a-pdu
(each step is a pure decision in ``federation.pdu_checks``; this module fetches what a
step needs and stores the outcome), soft failure
(https://spec.matrix.org/latest/server-server-api/#soft-failure), state resolution
(``federation.state_res``), and the gap-filling APIs ``get_missing_events``,
``/state_ids`` and ``/event`` as the requesting side.

Interface (``hs.federation_events``):

- :meth:`FederationEventHandler.receive_pdus` (origin, room, PDUs in order) -> per-event
  result; what ``PUT /send`` uses. Runs under the room's lock
  (``EventsService.room_lock``), the one local sends take.
- :meth:`FederationEventHandler.persist_outliers`: check and store a batch of events
  whose state we do not know (the state and auth chain a ``send_join`` returns): format,
  signatures, hashes, auth against their own auth events (each after its auth events,
  batch first), checked on every core and written while the rest is checked; bad ones
  are dropped or stored as rejected.
- :meth:`FederationEventHandler.persist_event_with_state`: check and store one event
  with an explicit state before it (the join event, with the state ``send_join``
  returned), making it the room's only forward extremity and its state the room's
  current state.

Outcomes: an event that passes is stored in the timeline, becomes a forward extremity,
and the room's current state becomes the resolution of the states at the forward
extremities; a soft-failed event is stored but kept out of timelines and extremities;
a rejected event is stored as rejected; a dropped event (bad format or signature) is
not stored. Only timeline events take new ('events' stream) positions and wake the
``EventsService`` listeners.

Where it is written: the checks run in the process that received the events; with event
persisters on workers (``stream_writers.events``), the batch then goes to the room's
persister, which writes it and runs the listeners
(``EventPersisters.persist_received``); one it cannot reach raises
``PersisterUnavailable`` (a 503: nothing acknowledged).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from federation.auth_rules import auth_types_for_event, redaction_allowed
from federation.events import PDU, compute_event_id
from federation.keyring import key_requests_for_event, merge_key_requests
from federation.net.client import FederationRequestError
from federation.pdu_checks import (
    Accept,
    Drop,
    Redacted,
    Reject,
    SoftFail,
    check_auth_against_auth_events,
    check_auth_against_state_before,
    check_format,
    check_signatures_and_hashes,
    check_soft_fail_against_current_state,
)
from federation.room_versions import RoomVersion, RoomVersions
from federation.server_acl import server_is_allowed
from federation.signing import SignatureError, quote_path_segment
from federation.state_res import StateResolutionError, missing_event_ids, resolve_state

from ...http import MatrixError
from ...modules.event import ModuleEvent
from ...storage.event_batch import EventBatch
from ...storage.events import EventMeta, RoomRow, StaleHeadError
from ...storage.state import StateKey, StateSnapshot
from .. import bulk_work
from ..bulk_work import CheckProcesses, WorkerGone, gc_paused

log = logging.getLogger(__name__)

#: At most this many events are asked for with one get_missing_events.
MISSING_EVENTS_LIMIT = 10
#: At most this many events are fetched one by one (``/event``) to learn the state at a
#: missing prev event; beyond that the event is refused (a join-sized gap needs a resync).
MAX_STATE_FETCH = 5000
#: Concurrent ``/event`` requests to one server.
FETCH_CONCURRENCY = 10
#: Auth events of one event fetched one by one when ``/event_auth`` did not bring them
#: (an event names a handful; more is not a real event's).
MAX_AUTH_EVENT_FETCH = 20
#: Attempts when another process moved the room's head meanwhile.
_RETRIES = 20


class PDUError(Exception):
    """A PDU was not accepted; the message goes back to the sending server."""


@dataclass
class PDUOutcome:
    """What became of one received PDU. ``error`` is None when it was stored
    (in the timeline, soft-failed or rejected: all "processed")."""

    event_id: str | None
    error: str | None = None
    rejected: str | None = None
    soft_failed: bool = False
    stream_ordering: int | None = None


class OutlierKey(NamedTuple):
    """An event stored by a lean ``persist_outliers``: what a state map and the room's
    memberships need of it (``content``: of a member event, its membership, display
    name and avatar; of other events, nothing)."""

    event_id: str
    type: str
    state_key: str | None
    sender: str
    content: dict


#: What the memberships table keeps of a member event's content.
_MEMBER_FIELDS = ("membership", "displayname", "avatar_url")


def _outlier_key(pdu: PDU) -> OutlierKey:
    content = {k: pdu.content[k] for k in _MEMBER_FIELDS if k in pdu.content} \
        if pdu.type == "m.room.member" else {}
    return OutlierKey(pdu.event_id, pdu.type, pdu.state_key, pdu.sender, content)


@dataclass
class OutlierResult:
    """``persist_outliers``: the events stored (and usable), those stored as rejected,
    and those dropped (not stored), with reasons. ``accepted`` holds the events (PDUs),
    or with ``lean`` only their ``OutlierKey``."""

    accepted: dict[str, PDU | OutlierKey] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    #: The event ID of each event given, in order (None where none could be made out).
    event_ids: list[str | None] = field(default_factory=list)


def guess_event_id(pdu_json: Any, room_version: RoomVersion | None) -> str | None:
    """The event ID of a PDU for reporting (also when the room is unknown to us)."""
    if not isinstance(pdu_json, dict):
        return None
    if isinstance(pdu_json.get("event_id"), str) and (room_version is None or room_version.event_id_in_event):
        return pdu_json["event_id"]
    try:
        return compute_event_id(pdu_json, room_version or RoomVersions.V12)
    except Exception:  # noqa: BLE001 - any malformed input: no ID to report
        return None


class _WriteFailed(Exception):
    """Writing a batch failed (not a stale head); the cause is chained."""


class PersisterUnavailable(MatrixError):
    """The room's event persister (another process) could not be asked to write: nothing
    of the run is acknowledged; the sending server tries the transaction again later."""

    def __init__(self, cause: MatrixError):
        super().__init__(503, cause.errcode, cause.error)


@dataclass
class _RoomBatch:
    """A room's received events decided but not written yet (under the room lock): the
    room row the batch builds on, the batch, and the outcome of each of its events."""

    room: RoomRow
    batch: EventBatch
    outcomes: dict[str, PDUOutcome] = field(default_factory=dict)
    #: Events a stored timeline event points at (not forward extremities), and the
    #: events asked about.
    late: set[str] = field(default_factory=set)
    late_checked: set[str] = field(default_factory=set)


class FederationEventHandler:
    def __init__(self, hs, *, check_processes: CheckProcesses | None = None):
        self.hs = hs
        #: Worker processes for steps 1-3 of big batches (None or disabled: threads).
        self.check_processes = check_processes
        self.events = hs.events
        self.store = hs.events.store
        self.state = hs.events.state
        self._fetch_sem: dict[str, asyncio.Semaphore] = {}
        #: What we know of stored events (a non-outlier's row never changes).
        self._meta_cache: OrderedDict[str, EventMeta] = OrderedDict()
        #: Each room's row and forward extremities as of our last write there. Only a
        #: hint: a local send drops it (listener), any other writer trips the store's head
        #: check, and it is reloaded.
        self._room_heads: OrderedDict[str, tuple[RoomRow, frozenset[str]]] = OrderedDict()
        self.events.add_new_events_listener(lambda room_id, positions: self._room_heads.pop(room_id, None))
        self.events.head_checked_listeners.append(self._check_room_head)
        #: Event IDs of the PDUs being processed that were not stored when the batch began
        #: (under the room lock, so only this batch can store them meanwhile).
        self._absent: dict[str, set[str]] = {}

    def warm_checks(self) -> None:
        """A big batch may come soon (a join, a resync): start the check worker
        processes now, so they are ready when it does."""
        if self.check_processes is not None and self.check_processes.enabled:
            self.check_processes.start()

    # --- caches ------------------------------------------------------------------

    def forget_room(self, room_id: str) -> None:
        """The room's extremities changed behind our back (an admin deleted some)."""
        self._room_heads.pop(room_id, None)

    def _check_room_head(self, room_id: str, head: int | None) -> None:
        """Under the room's lock shared with other processes: drop our copy of the
        room's head if another process wrote to the room since."""
        cached = self._room_heads.get(room_id)
        if cached is not None and cached[0].head_stream_ordering != head:
            del self._room_heads[room_id]

    def forget_room_head(self, room_id: str) -> None:
        """Another writer changed the room (a partial-state resync): read its head again."""
        self._room_heads.pop(room_id, None)

    def forget_room_events(self, room_id: str) -> None:
        """Another process rewrote the room's events (a partial-state resync): what we
        know of them and the room's head are read from the database again."""
        self._room_heads.pop(room_id, None)
        for event_id in [e for e, m in self._meta_cache.items() if m.room_id == room_id]:
            del self._meta_cache[event_id]

    def forget_events(self, event_ids: list[str]) -> None:
        """Purged events are unknown again (another server may send them back)."""
        for event_id in event_ids:
            self._meta_cache.pop(event_id, None)

    def _cache_meta(self, meta: EventMeta) -> None:
        self._meta_cache[meta.event_id] = meta
        self._meta_cache.move_to_end(meta.event_id)
        while len(self._meta_cache) > 50_000:
            self._meta_cache.popitem(last=False)

    async def _metas(self, event_ids: Iterable[str]) -> dict[str, EventMeta]:
        """Stored events' metadata, from memory when known (outliers are read again)."""
        out: dict[str, EventMeta] = {}
        missing = []
        for e in event_ids:
            m = self._meta_cache.get(e)
            if m is not None and not m.outlier:
                out[e] = m
            else:
                missing.append(e)
        if missing:
            for e, m in (await self.store.get_event_meta(missing)).items():
                out[e] = m
                self._cache_meta(m)
        return out

    def _stored_in_timeline(self, event_id: str | None) -> bool:
        """Known from memory to be stored (not as an outlier): its checks can be skipped."""
        meta = self._meta_cache.get(event_id) if event_id else None
        return meta is not None and not meta.outlier

    async def _room_head(self, room_id: str) -> tuple[RoomRow, frozenset[str]] | None:
        cached = self._room_heads.get(room_id)
        if cached is not None:
            return cached
        room = await self.store.get_room(room_id)
        if room is None:
            return None
        head = (room, frozenset(await self.store.get_forward_extremities(room_id)))
        self._room_heads[room_id] = head
        while len(self._room_heads) > 10_000:
            self._room_heads.popitem(last=False)
        return head

    # --- the public entry points ---------------------------------------------------

    async def receive_pdus(self, origin: str, room_id: str, pdus: Sequence[dict]) -> list[PDUOutcome]:
        """Run PDUs of one room (in the order given) through the receipt pipeline, under
        the room's lock, and store them in one transaction (see ``_receive_run``). One
        bad PDU never stops the others. A room without current state (only out-of-band
        invites, or our join still under way) counts as unknown: its events would be
        checked against a state we do not have yet."""
        head = await self._room_head(room_id)
        if head is None or head[0].current_state_group is None:
            rv = head[0].room_version if head is not None else None
            return [PDUOutcome(guess_event_id(p, rv), f"Unknown room {room_id}") for p in pdus]
        async with self.events.room_lock(room_id):
            try:
                return await self._receive_run(origin, room_id, pdus, batched=True)
            except _WriteFailed as e:  # one event spoils the batch: store each on its own
                log.warning("storing %d PDUs of %s from %s in one transaction failed (%s); one at a time",
                            len(pdus), room_id, origin, e.__cause__)
                self._room_heads.pop(room_id, None)
            return await self._receive_run(origin, room_id, pdus, batched=False)

    async def _receive_run(self, origin: str, room_id: str, pdus: Sequence[dict], *,
                           batched: bool) -> list[PDUOutcome]:
        """The PDUs through the pipeline into one ``EventBatch`` (``batched``; else one
        write per PDU), written at the end: one transaction and one commit for the run.
        The answers are given once it is written (acknowledged means stored). Each
        event's formats and signatures are checked first for the whole run (keys fetched
        once); auth, state and soft failure then go in order, each event seeing the ones
        before it in the batch. ``StaleHeadError`` (another process wrote to the room
        meanwhile): the run starts again on the new head (what was written is known)."""
        for _ in range(_RETRIES):
            try:
                return await self._receive_once(origin, room_id, pdus, batched=batched)
            except StaleHeadError:
                log.info("room %s moved on while we stored PDUs from %s; again", room_id, origin)
                self._room_heads.pop(room_id, None)
            finally:
                self._absent.pop(room_id, None)
        return [PDUOutcome(guess_event_id(p, None), "The room is too busy; try again") for p in pdus]

    async def _receive_once(self, origin: str, room_id: str, pdus: Sequence[dict], *,
                            batched: bool) -> list[PDUOutcome]:
        rb = await self._open_batch(room_id)
        if rb is None or rb.room.current_state_group is None:
            return [PDUOutcome(guess_event_id(p, None), f"Unknown room {room_id}") for p in pdus]
        rv = rb.room.room_version
        # 1. format (and event IDs, computed once) for the whole run.
        formats = [check_format(p, rv) for p in pdus]
        event_ids = [d.pdu.event_id if isinstance(d, Accept) else guess_event_id(p, rv)
                     for p, d in zip(pdus, formats)]
        ids = [e for e in event_ids if e]
        # The run's two reads (which events are stored; which a stored event already
        # points at) go to the database while the signatures are checked here: the
        # checks are CPU work, the reads mostly waiting.
        reads = asyncio.gather(self._metas(ids), self.store.get_timeline_children(ids) if ids else _no_ids())
        modules = self.hs.modules.callbacks
        filtered = modules.has("should_drop_federated_event")
        candidates = [i for i, d in enumerate(formats) if isinstance(d, Accept) and d.pdu.room_id == room_id
                      and not self._stored_in_timeline(event_ids[i])]
        checked_early: dict[int, Any] = {}
        try:
            if candidates and not filtered:
                await asyncio.sleep(0)  # the reads are sent before the CPU work starts
                checked_early = dict(zip(candidates, await self.check_signatures(
                    [pdus[i] for i in candidates], rv, origin, [formats[i].signed_bytes for i in candidates])))
        except BaseException:
            reads.cancel()
            raise
        found, children = await reads
        self._absent[room_id] = absent = {e for e in ids if e not in found}
        rb.late = children & absent
        rb.late_checked = set(absent)
        # 2, 3. signatures and hashes of the new ones, keys fetched once for all.
        todo = [i for i, d in enumerate(formats) if isinstance(d, Accept) and d.pdu.room_id == room_id
                and not (event_ids[i] in found and not found[event_ids[i]].outlier)]
        if filtered:
            todo = [i for i in todo if not await modules.first_true(
                "should_drop_federated_event", ModuleEvent(formats[i].pdu))]
        late_checks = [i for i in todo if i not in checked_early]
        checked_early.update(zip(late_checks, await self.check_signatures(
            [pdus[i] for i in late_checks], rv, origin, [formats[i].signed_bytes for i in late_checks])))
        pre = {i: (formats[i], checked_early[i]) for i in todo}
        out: list[PDUOutcome] = []
        for i, (pdu_json, event_id) in enumerate(zip(pdus, event_ids)):
            try:
                if i not in pre:
                    out.append(await self._without_checks(origin, rb, pdu_json, formats[i]))
                else:
                    out.append(await self._receive(origin, rb, pdu_json, gap_fill=True, check_acl=True,
                                                   checked=pre[i]))
                if not batched:
                    await self._flush(rb)
            except PDUError as e:
                out.append(PDUOutcome(event_id, str(e)))
            except (StaleHeadError, PersisterUnavailable):
                raise
            except _WriteFailed as e:
                if batched:
                    raise
                log.error("storing PDU %s from %s failed: %r", event_id, origin, e.__cause__)
                out.append(PDUOutcome(event_id, "Internal error storing the event"))
                rb = await self._reopen(rb)
            except Exception as e:  # noqa: BLE001 - never fail the whole transaction
                log.exception("processing PDU %s from %s failed", event_id, origin)
                out.append(PDUOutcome(event_id, f"Internal error processing the event: {type(e).__name__}"))
        await self._flush(rb)
        return out

    async def _without_checks(self, origin: str, rb: "_RoomBatch", pdu_json: Any, fmt: Any) -> PDUOutcome:
        """A PDU the run's checks left out: malformed, for another room, known, or
        dropped by a module."""
        if isinstance(fmt, Drop):
            raise PDUError(fmt.reason)
        if fmt.pdu.room_id != rb.room.room_id:
            raise PDUError("The event is not for this room")
        known, _ = await self._known(rb, fmt.pdu.event_id)
        if known is None:
            raise PDUError("The event was dropped by the server's policy")
        return known

    async def persist_outliers(self, origin: str | None, room_id: str, room_version: RoomVersion,
                               pdus: Sequence[Any], *, lock_writes: bool = False, lean: bool = False,
                               key_requests: Sequence[Any] | None = None,
                               referenced: Collection[str] | None = None) -> OutlierResult:
        """Check and store a batch of events as outliers (their state unknown): format,
        signatures (keys fetched once for the batch), content hashes (the redacted copy
        is kept on a mismatch), and auth against their own auth events, taken from the
        batch (accepted ones, each event after its auth events) or the database. Events
        whose auth events are missing or fail are stored as rejected; bad format or
        signatures: dropped.

        A stream, so that a big batch (a join's state and auth chain) is checked on both
        cores and written while the rest is checked: slices of the batch, in the order
        given, go through format, signatures and hashes in worker threads; each event
        whose auth events are decided is then checked against them (one given before its
        auth events waits for them; what never comes is checked last, in auth order, and
        rejected), and the decided events are written a slice at a time behind the checks.

        The room row must exist (``EventStore.ensure_room`` for a room being joined).
        Events already stored are reported as accepted (or rejected) as stored. The
        caller holds the room's lock, unless ``lock_writes``: then each slice's write
        takes it (a long resync lets the room's traffic in between).
        Returns what became of each event.

        Each of ``pdus`` is a PDU, its JSON, or its JSON text (an item of a big answer,
        parsed when its turn comes: see ``bulk_work``). ``lean`` (a resync's tens of
        thousands of events): ``accepted`` holds only each event's ``OutlierKey``, the
        events are not kept in the event cache, and the auth checks keep, of the events
        decided, only those ``referenced`` (every auth event ID the batch names: the
        caller read them), members in a slim form; so that an event is held whole from
        its check to its write only. ``key_requests``: the keys the batch's signatures
        need, if the caller made them out already. With ``lean`` a list ``pdus`` is
        handed over (emptied here).
        """
        rv = room_version
        result = OutlierResult()
        items = [p.get_pdu_json() if isinstance(p, PDU) else p for p in pdus]
        if lean and isinstance(pdus, list):
            pdus.clear()  # handed over: each event is let go once checked (see top_up)
        result.event_ids = [None] * len(items)
        if not items:
            return result
        with gc_paused():
            return await self._persist_outliers(origin, room_id, rv, items, result, lock_writes=lock_writes,
                                                lean=lean, key_requests=key_requests, referenced=referenced)

    async def _persist_outliers(self, origin: str | None, room_id: str, rv: RoomVersion, items: list,
                                result: OutlierResult, *, lock_writes: bool, lean: bool,
                                key_requests: Sequence[Any] | None, referenced: Collection[str] | None
                                ) -> OutlierResult:
        if key_requests is not None:
            keys_for = await self._keys_for(merge_key_requests(key_requests))
        else:
            keys_for = await self._keys_lookup([_parsed(j) for j in items], rv, origin)
        if rv.room_id_from_create_event:
            carried = {guess_event_id(j, rv) for j in map(_parsed, items)
                       if isinstance(j, dict) and j.get("type") == "m.room.create"}
            await self._fetch_create_event(origin, room_id, rv, carried, lock_writes=lock_writes)
        stream = _AuthStream(rv, room_id, keep=referenced if lean else None)
        recent: deque[PDU] = deque(maxlen=0 if lean else self.events.PDU_CACHE_SIZE)
        keep: Callable[[PDU], PDU | OutlierKey] = (
            _outlier_key if lean else (lambda p: p))
        writing: asyncio.Task | None = None
        pending: list[tuple[PDU, str | None]] = []
        seen: set[str] = set()

        def decided(writes: list[tuple[PDU, str | None]]) -> None:
            for pdu, reason in writes:
                if reason is not None:
                    result.rejected[pdu.event_id] = reason
                else:
                    result.accepted[pdu.event_id] = keep(pdu)
                recent.append(pdu)
            pending.extend(writes)

        async def write(writes: list[tuple[PDU, str | None]]) -> None:
            if lock_writes:
                async with self.events.room_lock(room_id):
                    await self._write_outliers(room_id, writes)
            else:
                await self._write_outliers(room_id, writes)

        async def flush(final: bool) -> None:
            """One write in flight; while it runs, decided events gather for the next
            (the database is kept busy with as much as the checks produced meanwhile),
            up to WRITE_BACKLOG: then the checks wait for the write (events waiting to
            be written are held whole)."""
            nonlocal writing, pending
            if writing is not None and (final or writing.done() or len(pending) >= WRITE_BACKLOG):
                await writing
                writing = None
            if pending and writing is None and (final or len(pending) >= WRITE_SLICE):
                writing = asyncio.ensure_future(write(pending))
                pending = []
            if final and writing is not None:
                await writing
                writing = None

        jobs = deque(self._check_slices(items, rv, room_id, keys_for, origin))
        # The checks run ahead of the auth checks and writes by a few slices only: a
        # checked slice holds its events parsed until they are written.
        ahead = (self.check_processes.count if self.check_processes and self.check_processes.enabled
                 else os.cpu_count() or 1) + 2
        slices: deque[tuple[int, asyncio.Future]] = deque()

        def top_up() -> None:
            while jobs and len(slices) < ahead:
                start, job = jobs.popleft()
                slices.append((start, asyncio.ensure_future(job())))
                if lean:  # the slice has its own list: the batch's goes as it is taken
                    items[start:start + CHECK_CHUNK] = [None] * len(items[start:start + CHECK_CHUNK])

        try:
            top_up()
            while slices:
                start, task = slices.popleft()
                checked_slice = await task
                top_up()
                fresh: list[tuple[PDU, PDU | None, str | None]] = []
                for offset, (eid, pdu, use, reason) in enumerate(checked_slice):
                    result.event_ids[start + offset] = eid
                    if pdu is None:
                        if eid:
                            result.dropped[eid] = reason
                    elif eid not in seen:
                        seen.add(eid)
                        fresh.append((pdu, use, reason))
                if not fresh:
                    continue
                # Stored already (reported as stored), and the auth events from the database.
                checked = [use for _, use, _ in fresh if use is not None]
                metas = await self.store.get_event_meta({p.event_id for p, _, _ in fresh}
                                                        | stream.unknown_refs(checked))
                new: list[PDU] = []
                for pdu, use, reason in fresh:
                    meta = metas.get(pdu.event_id)
                    if meta is not None:
                        if meta.rejected_reason is not None:
                            result.rejected[pdu.event_id] = meta.rejected_reason
                        else:
                            result.accepted[pdu.event_id] = keep(pdu)
                    elif use is None:
                        result.dropped[pdu.event_id] = reason
                    else:
                        new.append(use)
                if metas:
                    stream.know(await self.events.get_pdus(metas),
                                {e for e, m in metas.items() if m.rejected_reason is not None})
                if len(new) > CHECK_CHUNK:
                    decided(await asyncio.to_thread(stream.add, new))
                else:
                    decided(stream.add(new))
                await flush(False)
            decided(await asyncio.to_thread(stream.rest) if stream.parked > CHECK_CHUNK else stream.rest())
            await flush(True)
        finally:
            for _, task in slices:
                task.cancel()
            if writing is not None:
                await writing
        for pdu in recent:
            self.events.remember(pdu)
        return result

    async def _write_outliers(self, room_id: str, writes: list[tuple[PDU, str | None]]) -> None:
        written = await self.store.persist_outliers(room_id, writes, received_ts=self.hs.clock_ms())
        absent = self._absent.get(room_id)
        if absent:
            absent.difference_update(written)

    async def _keys_lookup(self, pdu_jsons: Sequence[Any], rv: RoomVersion, origin: str | None):
        """The keys the events' signatures need, fetched once for all: ``keys_for``."""
        requests = merge_key_requests(
            r for part in await _map_chunks(lambda part: [_key_requests(j, rv, origin) for j in part], pdu_jsons)
            for r in part)
        return await self._keys_for(requests)

    async def _keys_for(self, requests: Sequence[Any]):
        keys = await self.hs.keyring.get_keys(requests) if requests else {}
        lookup = {k: key.known_key() for k, key in keys.items()}

        def keys_for(server: str, key_id: str):
            return lookup.get((server, key_id))

        keys_for.table = lookup  # for worker processes
        return keys_for

    def _check_slices(self, items: Sequence[Any], rv: RoomVersion, room_id: str, keys_for,
                      origin: str | None) -> list[tuple[int, Callable[[], Any]]]:
        """Steps 1-3 over ``items``, CHECK_CHUNK at a time: in the worker processes
        (``bulk_work.CheckProcesses``) when there are any, else in worker threads, one per
        core at a time (ed25519 runs without the GIL, so one slice's Python work overlaps
        another's verification): (index of the slice's first item, a coroutine function
        giving its results, see ``_check_outliers``), in order."""
        procs = self.check_processes
        sem = asyncio.Semaphore(os.cpu_count() or 1)

        async def one(part: Sequence[Any]) -> list:
            if len(items) <= CHECK_CHUNK:
                return _check_outliers(part, rv, room_id, keys_for, origin)
            if procs is not None and procs.enabled:
                try:
                    verdicts = await procs.check(part, rv, room_id, keys_for.table, origin)
                except WorkerGone as e:
                    log.warning("checking %d events in this process: %s", len(part), e)
                else:
                    return _from_verdicts(part, verdicts, rv)
            async with sem:
                return await asyncio.to_thread(_check_outliers, part, rv, room_id, keys_for, origin)

        def job(start: int) -> Any:
            return one(items[start:start + CHECK_CHUNK])

        return [(i, functools.partial(job, i)) for i in range(0, len(items), CHECK_CHUNK)]

    async def _fetch_create_event(self, origin: str | None, room_id: str, rv: RoomVersion,
                                  known: Iterable[str], *, lock_writes: bool = False) -> bool:
        """Rooms 12+: the create event is in no event's ``auth_events`` (its ID is the
        room's), so a batch may come without it. When neither ``known`` nor the database
        has it, fetch it from ``origin`` (``/event``; the ID is its hash, so no other
        event can pass for it) and store it as a checked outlier. Whether it was."""
        if not rv.room_id_from_create_event or origin is None:
            return False
        create_id = "$" + room_id[1:]
        if create_id in known or await self.store.get_event_meta([create_id]):
            return False
        fetched = await self._fetch_events(origin, rv, [create_id])
        if not fetched:
            log.info("could not fetch the create event of %s from %s", room_id, origin)
            return False
        await self.persist_outliers(origin, room_id, rv, fetched, lock_writes=lock_writes)
        return True

    async def persist_event_with_state(self, origin: str | None, room_id: str, pdu_json: Any,
                                       state: Mapping[StateKey, str], *,
                                       known_events: Mapping[str, PDU] | None = None) -> PDUOutcome:
        """Check and store one event whose state before it is given (``state``: (type,
        state_key) -> event ID, events already stored, e.g. by ``persist_outliers``):
        the join event of a ``send_join``. Format, signatures, hashes, auth against its
        auth events and against ``state``; then stored in the timeline as the room's
        only forward extremity (the prev events are not part of our DAG), and the
        state after it becomes the room's current state (current_state, its deltas,
        room_memberships; listeners woken). ``PDUError`` if refused before storing
        (bad format or signature, unknown room); an event the rules refuse is stored as
        rejected and comes back with ``outcome.rejected`` set: the join failed.
        ``origin`` (None for our own event) is where missing auth events are fetched.
        ``known_events``: events of ``state`` the caller holds (saves reading them back,
        e.g. the ``accepted`` of ``persist_outliers``)."""
        async with self.events.room_lock(room_id):
            return await self.persist_event_with_state_locked(origin, room_id, pdu_json, state,
                                                              known_events=known_events)

    async def persist_event_with_state_locked(self, origin: str | None, room_id: str, pdu_json: Any,
                                              state: Mapping[StateKey, str], *,
                                              known_events: Mapping[str, PDU] | None = None) -> PDUOutcome:
        """``persist_event_with_state`` for a caller that holds the room's lock."""
        for _ in range(_RETRIES):
            rb = await self._open_batch(room_id)
            if rb is None:
                raise PDUError(f"Unknown room {room_id}")
            try:
                outcome = await self._receive(origin, rb, pdu_json, gap_fill=False, check_acl=False,
                                              explicit_state=dict(state), known_events=known_events)
                await self._flush(rb)
                return outcome
            except StaleHeadError:
                log.info("room %s moved on while we stored a join; again", room_id)
                self._room_heads.pop(room_id, None)
            except _WriteFailed as e:
                raise e.__cause__ from None
        raise PDUError("The room is too busy; try again")

    # --- the batch of a room's events being received -------------------------------

    async def _open_batch(self, room_id: str) -> "_RoomBatch | None":
        """A new, empty batch on the room's head (None for an unknown room)."""
        head = await self._room_head(room_id)
        if head is None:
            return None
        room, extremities = head
        current = await self.state.get_state(room.current_state_group)
        batch = EventBatch(self.state, room_id, head=room.head_stream_ordering, current=current,
                           extremities=extremities)
        return _RoomBatch(room, batch)

    async def _reopen(self, rb: "_RoomBatch") -> "_RoomBatch":
        """After a failed write: a new batch on what the database says."""
        self._room_heads.pop(rb.room.room_id, None)
        fresh = await self._open_batch(rb.room.room_id)
        assert fresh is not None
        fresh.late, fresh.late_checked = rb.late, rb.late_checked
        return fresh

    async def _flush(self, rb: "_RoomBatch") -> None:
        """Write the batch (one transaction) and carry on with an empty one on the new
        head: caches, outcomes' positions, listeners (once, with every timeline
        position). ``StaleHeadError`` if another writer moved the room's head;
        ``_WriteFailed`` if the write failed otherwise (nothing of the batch stored)."""
        batch = rb.batch
        if not batch.events:
            return
        room_id = batch.room_id
        persisters = self.events.persisters
        # With event persisters on workers, the room's writer writes the batch (and runs the
        # listeners); the caller holds the room's lock until it answers.
        elsewhere = persisters is not None and not persisters.is_local(room_id)
        try:
            if elsewhere:
                positions = await persisters.persist_received(batch, rb.room.room_version,
                                                              received_ts=self.hs.clock_ms())
            else:
                positions = await self.store.persist_batch(batch, received_ts=self.hs.clock_ms())
        except StaleHeadError:
            raise
        except MatrixError as e:
            if e.status == 503:  # unreachable, or not the room's writer after all
                raise PersisterUnavailable(e) from e
            raise _WriteFailed() from e
        except Exception as e:
            raise _WriteFailed() from e
        if elsewhere:
            for group in batch.groups:  # as persist_batch does for a write of ours
                self.state.cache_snapshot(group.snapshot)
        absent = self._absent.get(room_id, set())
        timeline: list[PDU] = []
        timeline_positions: list[int] = []
        for ev, position in zip(batch.events, positions):
            pdu = ev.pdu
            self.events.remember(pdu)
            absent.discard(pdu.event_id)
            self._cache_meta(EventMeta(pdu.event_id, room_id, pdu.depth, False, ev.rejected_reason, ev.soft_failed,
                                       ev.state_after.group, position))
            rb.outcomes[pdu.event_id].stream_ordering = position
            if ev.timeline:
                timeline.append(pdu)
                timeline_positions.append(position)
        self.events.forget_head(room_id)  # the local pipeline reloads the head
        room = rb.room
        if timeline:
            room = replace(room, head_stream_ordering=timeline_positions[-1], current_state_group=batch.current.group)
            if not elsewhere:  # else the writer told the listeners (and the others over Redis)
                self.events.announce_stored(room_id, timeline_positions, received=timeline)
            self._room_heads[room_id] = (room, frozenset(batch.extremities))  # after the listeners: they drop it
        rb.room = room
        rb.batch = EventBatch(self.state, room_id, head=room.head_stream_ordering, current=batch.current,
                              extremities=batch.extremities)
        rb.outcomes = {}

    async def _known(self, rb: "_RoomBatch", event_id: str) -> tuple[PDUOutcome | None, bool]:
        """The outcome of an event stored or in the batch already (None if it is new),
        and whether an outlier row for it may exist."""
        if rb.batch.get(event_id) is not None:
            return rb.outcomes[event_id], False
        known = self._meta_cache.get(event_id)
        absent = event_id in self._absent.get(rb.room.room_id, ())
        if (known is None and not absent) or (known is not None and known.outlier):
            known = (await self.store.get_event_meta([event_id])).get(event_id)
        if known is not None and not known.outlier:
            return PDUOutcome(event_id, rejected=known.rejected_reason, soft_failed=known.soft_failed,
                              stream_ordering=known.stream_ordering), False
        return None, known is not None

    async def _metas_in(self, rb: "_RoomBatch", event_ids: Iterable[str]) -> dict[str, EventMeta]:
        """``_metas``, the batch's events included (their positions unknown yet: 0)."""
        out: dict[str, EventMeta] = {}
        rest = []
        for e in event_ids:
            ev = rb.batch.get(e)
            if ev is None:
                rest.append(e)
            else:
                out[e] = EventMeta(e, rb.room.room_id, ev.pdu.depth, False, ev.rejected_reason, ev.soft_failed,
                                   ev.state_after.group, 0)
        out.update(await self._metas(rest))
        return out

    async def _pdus_in(self, rb: "_RoomBatch | None", event_ids: Iterable[str]) -> dict[str, PDU]:
        """Events by ID, the batch's included."""
        ids = list(event_ids)
        if rb is None:
            return await self.events.get_pdus(ids)
        out = rb.batch.pdus(ids)
        out.update(await self.events.get_pdus([e for e in ids if e not in out]))
        return out

    async def _snapshot(self, rb: "_RoomBatch", group: int | None) -> StateSnapshot:
        return rb.batch.snapshot(group) or await self.state.get_state(group)

    # --- the pipeline ------------------------------------------------------------

    async def _receive(self, origin: str | None, rb: "_RoomBatch", pdu_json: Any, *, gap_fill: bool,
                       check_acl: bool, explicit_state: dict[StateKey, str] | None = None,
                       known_events: Mapping[str, PDU] | None = None, checked: tuple | None = None) -> PDUOutcome:
        """One PDU through the pipeline into the batch (stored when the batch is
        written). ``checked``: its format and signature decisions, when the caller made
        them for a whole run."""
        room = rb.room
        rv = room.room_version
        room_id = room.room_id
        # 1. format
        decision = checked[0] if checked is not None else check_format(pdu_json, rv)
        if isinstance(decision, Drop):
            raise PDUError(decision.reason)
        pdu: PDU = decision.pdu
        if pdu.room_id != room_id:
            raise PDUError("The event is not for this room")
        modules = self.hs.modules.callbacks
        if checked is None and modules.has("should_drop_federated_event") and await modules.first_true(
                "should_drop_federated_event", ModuleEvent(pdu)):
            raise PDUError("The event was dropped by the server's policy")
        known, outlier_row = await self._known(rb, pdu.event_id)
        if known is not None:
            return known
        if check_acl and origin is not None:
            acl_id = rb.batch.current.state.get(("m.room.server_acl", ""))
            if acl_id is not None:
                acl = (await self._pdus_in(rb, [acl_id])).get(acl_id)
                if acl is not None and not server_is_allowed(acl.content, origin):
                    raise PDUError(f"Server {origin} is denied by the room's server ACL")
        # 2, 3. signatures and hashes
        if checked is None:
            (signed,) = await self.check_signatures([pdu_json], rv, origin, [decision.signed_bytes])
        else:
            signed = checked[1]
        if isinstance(signed, Drop):
            raise PDUError(signed.reason)
        if isinstance(signed, Redacted):
            pdu = signed.pdu
        # 4. auth against its auth events (fetching the ones we lack)
        auth_map, rejected_auth = await self._auth_events_for(origin, rb, pdu)
        rejected_reason: str | None = None
        create = auth_map.get("$" + room_id[1:]) if rv.room_id_from_create_event else None
        decision = check_auth_against_auth_events(
            rv, pdu, auth_map, create_event=create, is_rejected=lambda e: e.event_id in rejected_auth,
        )
        if isinstance(decision, Reject):
            rejected_reason = decision.reason
        # The state before the event.
        if explicit_state is not None:
            state_before: Mapping[StateKey, str] = explicit_state
            before_snapshot: StateSnapshot | None = None
            base = None
        else:
            state_before, before_snapshot, base = await self._state_before(origin, rb, pdu, gap_fill=gap_fill)
        # A partial-state room (faster joins): the state before lacks most members; the
        # rules read its resolution with the event's auth events, and nothing soft-fails.
        partial = await self.hs.partial_state.is_partial(room_id)
        if partial:
            await self._flush(rb)  # what follows reads the database only
            state_events = await self.hs.partial_state.auth_state(rv, pdu, state_before, auth_map, rejected_auth)
        else:
            state_events = await self.auth_state(rv, pdu, state_before, rb)
        # 5. auth against the state before it
        if rejected_reason is None:
            decision = check_auth_against_state_before(rv, pdu, state_events)
            if isinstance(decision, Reject):
                rejected_reason = decision.reason
        # 6. soft failure against the current state (not for an explicit state: a join
        # replaces whatever we had).
        soft_failed = False
        if rejected_reason is None and explicit_state is None and not partial:
            current = rb.batch.current.state
            decision = check_soft_fail_against_current_state(rv, pdu, await self.auth_state(rv, pdu, current, rb))
            if isinstance(decision, SoftFail):
                soft_failed = True
                log.info("soft-failed %s: %s", pdu.event_id, decision.reason)
            elif modules.has("check_event_for_spam") and not await self._passes_spam_check(pdu):
                soft_failed = True  # kept out of the timeline, as Synapse does with spam
                log.info("soft-failed %s: a spam checker refused it", pdu.event_id)
        redaction_target = None
        if rejected_reason is None and pdu.redacts is not None:
            target = (await self._pdus_in(rb, [pdu.redacts])).get(pdu.redacts)
            if target is not None and target.room_id != room_id:
                # A redaction of another room's event is nothing of this room: kept out of
                # its timeline (as Synapse does), and it redacts nothing.
                soft_failed = True
                log.info("soft-failed %s: it redacts an event of another room", pdu.event_id)
            elif target is not None and redaction_allowed(rv, pdu, target, state_events):
                redaction_target = target.event_id
        return await self._add(rb, pdu, state_before, before_snapshot, base, rejected_reason=rejected_reason,
                               soft_failed=soft_failed, redaction_target=redaction_target, outlier_row=outlier_row,
                               explicit=explicit_state is not None, known_events=known_events)

    async def _add(self, rb: "_RoomBatch", pdu: PDU, state_before: Mapping[StateKey, str],
                   before_snapshot: StateSnapshot | None, base: StateSnapshot | None, *,
                   rejected_reason: str | None, soft_failed: bool, redaction_target: str | None, outlier_row: bool,
                   explicit: bool, known_events: Mapping[str, PDU] | None) -> PDUOutcome:
        """The event into the batch: its state groups, and for a timeline event the
        room's new current state (the state after it, or the resolution of the states
        at the forward extremities it leaves) and extremities (an explicit state: it is
        the only one)."""
        batch = rb.batch
        if before_snapshot is None:
            before_snapshot = await batch.state_group_for(state_before, base)
        new_current = None
        if rejected_reason is None and not soft_failed:
            if explicit:
                batch.replace_extremities = True
                batch.extremities.clear()
            else:
                new_current = await self._current_state_with(rb, pdu, state_before)
            if before_snapshot.group != batch.current.group or new_current is not None:
                # Not a linear step: member events of other branches (or of an explicit
                # state) may enter the current state; the membership table needs them.
                target = new_current if new_current is not None else _with_event(state_before, pdu)
                current = batch.current.state
                changed = [e for k, e in target.items()
                           if k[0] == "m.room.member" and current.get(k) != e and e != pdu.event_id]
                known = {e: known_events[e] for e in changed if known_events and e in known_events}
                known.update(await self._pdus_in(rb, [e for e in changed if e not in known]))
                known_events = known
        if pdu.event_id not in rb.late_checked:
            rb.late_checked.add(pdu.event_id)
            rb.late |= await self.store.get_timeline_children([pdu.event_id])
        await batch.add(pdu, before=before_snapshot, rejected_reason=rejected_reason, soft_failed=soft_failed,
                        redaction_applies_to=redaction_target, may_be_outlier=outlier_row, new_current=new_current,
                        is_extremity=pdu.event_id not in rb.late, state_events=known_events)
        outcome = PDUOutcome(pdu.event_id, rejected=rejected_reason, soft_failed=soft_failed)
        rb.outcomes[pdu.event_id] = outcome
        return outcome

    async def _passes_spam_check(self, pdu: PDU) -> bool:
        """Modules' ``check_event_for_spam`` on an event of another server (a callback
        that fails counts as a refusal)."""
        try:
            await self.hs.modules.callbacks.spam_check("check_event_for_spam", "This event", ModuleEvent(pdu))
        except MatrixError:
            return False
        return True

    async def _current_state_with(self, rb: "_RoomBatch", pdu: PDU,
                                  state_before: Mapping[StateKey, str]) -> dict[StateKey, str] | None:
        """The room's current state once ``pdu`` (with ``state_before``) is a forward
        extremity: the resolution of the states at the resulting extremities; None when
        it leaves no other extremity (then it is the state after it: no resolution)."""
        remaining = rb.batch.extremities - set(pdu.prev_event_ids) - {pdu.event_id}
        if not remaining:
            return None
        metas = await self._metas_in(rb, remaining)
        sets = [_with_event(state_before, pdu)]
        for eid in sorted(remaining):
            meta = metas.get(eid)
            if meta is None or meta.state_group is None:
                continue
            sets.append((await self._snapshot(rb, meta.state_group)).state)
        if len(sets) == 1:
            return None
        known = rb.batch.pdus(e.pdu.event_id for e in rb.batch.events)
        known[pdu.event_id] = pdu
        return await self.resolve(rb.room.room_version, sets, known=known)

    async def resolve(self, rv: RoomVersion, state_sets: Sequence[Mapping[StateKey, str]], *,
                      known: Mapping[str, PDU] | None = None) -> dict[StateKey, str]:
        """State resolution with the events loaded from the database (in rounds, as
        ``missing_event_ids`` asks; ``known``: events not stored yet); big resolutions
        run in a thread."""
        unique: list[Mapping[StateKey, str]] = []
        for s in state_sets:
            if not any(s is u or s == u for u in unique):
                unique.append(s)
        if len(unique) == 1:
            return dict(unique[0])
        event_map: dict[str, PDU] = dict(known or {})
        while True:
            missing = missing_event_ids(rv, unique, event_map)
            if not missing:
                break
            found = await self.events.get_pdus(missing)
            if not found:
                break
            event_map.update(found)
        metas = await self.store.get_event_meta(event_map)
        rejected = frozenset(e for e, m in metas.items() if m.rejected_reason is not None)
        try:
            if len(event_map) > 500:
                return await asyncio.to_thread(resolve_state, rv, unique, event_map, rejected_event_ids=rejected)
            return resolve_state(rv, unique, event_map, rejected_event_ids=rejected)
        except StateResolutionError as e:
            raise PDUError(f"State resolution failed: {e}") from None

    async def auth_state(self, rv: RoomVersion, pdu: PDU, state: Mapping[StateKey, str],
                         rb: "_RoomBatch | None" = None) -> dict[StateKey, PDU]:
        """The events of ``state`` the auth rules read for ``pdu`` (not the whole room)."""
        keys = auth_types_for_event(rv, pdu.type, pdu.sender, pdu.state_key, pdu.content)
        keys.add(("m.room.create", ""))
        ids = {k: state[k] for k in keys if k in state}
        pdus = await self._pdus_in(rb, ids.values())
        return {k: pdus[e] for k, e in ids.items() if e in pdus}

    # --- signatures --------------------------------------------------------------

    async def check_signatures(self, pdu_jsons: Sequence[dict], rv: RoomVersion, origin: str | None,
                                signed_bytes: Sequence[bytes | None] | None = None) -> list:
        """Steps 2 and 3 for a batch: the keys are fetched once for all of them, and a
        big batch is verified in worker threads. ``signed_bytes``: what ``check_format``
        returned for each event (None: computed here)."""
        keys_for = await self._keys_lookup(pdu_jsons, rv, origin)
        items = list(zip(pdu_jsons, signed_bytes or [None] * len(pdu_jsons)))
        return await _map_chunks(
            lambda part: [check_signatures_and_hashes(j, rv, keys_for, origin=origin, signed_bytes=b)
                          for j, b in part], items, parallel=True)

    # --- auth events ---------------------------------------------------------------

    async def _auth_events_for(self, origin: str | None, rb: "_RoomBatch", pdu: PDU
                               ) -> tuple[dict[str, PDU], set[str]]:
        """The event's auth events (and, rooms 12+, the create event) by ID, fetching
        missing ones from ``origin`` (``/event_auth``, then ``/event`` for any the chain
        lacked) as checked outliers; plus the IDs of those that were rejected."""
        room = rb.room
        rv = room.room_version
        wanted = list(pdu.auth_event_ids)
        if rv.room_id_from_create_event and pdu.type != "m.room.create":
            wanted.append("$" + room.room_id[1:])
        metas = await self._metas_in(rb, wanted)
        missing = [e for e in wanted if e not in metas]
        if missing and origin is not None:
            await self._flush(rb)  # what is fetched is stored beside it
            try:
                answer = await self.hs.federation_client.request(
                    "GET", origin,
                    f"/_matrix/federation/v1/event_auth/{quote_path_segment(room.room_id)}/"
                    f"{quote_path_segment(pdu.event_id)}",
                )
                chain = answer.get("auth_chain") if isinstance(answer, dict) else None
                if isinstance(chain, list):
                    await self.persist_outliers(origin, room.room_id, rv, chain)
            except FederationRequestError as e:
                log.info("could not fetch the auth chain of %s from %s: %s", pdu.event_id, origin, e)
            await self._fetch_create_event(origin, room.room_id, rv, {})
            metas = await self.store.get_event_meta(wanted)
            # What the chain did not bring (a server without /event_auth, or a short
            # answer): the few auth events still missing, one /event each.
            still = [e for e in wanted if e not in metas][:MAX_AUTH_EVENT_FETCH]
            if still:
                fetched = await self._fetch_events(origin, rv, still)
                if fetched:
                    await self.persist_outliers(origin, room.room_id, rv, fetched)
                    metas = await self.store.get_event_meta(wanted)
        pdus = await self._pdus_in(rb, metas)
        rejected = {e for e, m in metas.items() if m.rejected_reason is not None}
        return pdus, rejected

    # --- the state before an event -------------------------------------------------

    async def _state_before(self, origin: str | None, rb: "_RoomBatch", pdu: PDU, *, gap_fill: bool
                            ) -> tuple[Mapping[StateKey, str], StateSnapshot | None, StateSnapshot | None]:
        """The state before ``pdu``: the resolution of the states after its prev events
        (one prev event: its state, nothing to resolve). Missing prev events of a pushed
        event (``gap_fill``) are fetched with get_missing_events (once, bounded), and the
        event is refused if some are still missing; for a pulled event, the state at a
        missing one is fetched with /state_ids. Returns the map, the group equal to it
        (if any), and a group to write a delta against."""
        room = rb.room
        prevs = list(dict.fromkeys(pdu.prev_event_ids))
        metas = await self._metas_in(rb, prevs)
        missing = [p for p in prevs if p not in metas or metas[p].state_group is None]
        if missing and origin is not None:
            await self._flush(rb)  # what is fetched below is stored beside it
        if missing and gap_fill and origin is not None:
            await self._get_missing_events(origin, rb, pdu)
            metas = await self._metas_in(rb, prevs)
            missing = [p for p in prevs if p not in metas or metas[p].state_group is None]
            if missing:
                # An event pushed to us whose prev events its server does not give: not
                # taken with a state that server would choose (/state_ids) -- it could
                # become our only forward extremity. Events pulled to fill a gap (from
                # get_missing_events) do get that state, as Synapse does.
                await self._flush(rb)
                raise PDUError(f"Its prev events {', '.join(missing[:3])} could not be fetched from {origin}")
        snapshots: list[StateSnapshot] = []
        for p in prevs:
            meta = metas.get(p)
            if meta is not None and meta.state_group is not None:
                snapshots.append(await self._snapshot(rb, meta.state_group))
        if len(snapshots) == 1 and not missing:  # a linear room: the state after its prev event
            return snapshots[0].state, snapshots[0], None
        sets: list[Mapping[StateKey, str]] = [snap.state for snap in snapshots]
        for p in missing:
            if origin is None:
                raise PDUError(f"Prev event {p} is unknown")
            sets.append(await self._state_after_remote_event(origin, room, p))
        if not sets:
            raise PDUError("The event has no prev events we can use")
        known = rb.batch.pdus(e.pdu.event_id for e in rb.batch.events)
        resolved = await self.resolve(room.room_version, sets, known=known)
        for snap in snapshots:
            if snap.state == resolved:
                return resolved, snap, None
        return resolved, None, snapshots[0] if snapshots else None

    async def _get_missing_events(self, origin: str, rb: "_RoomBatch", pdu: PDU) -> None:
        """Ask ``origin`` for the events between our forward extremities and ``pdu``
        (at most ``MISSING_EVENTS_LIMIT``) and run them through the pipeline into the
        batch, oldest first, without further gap filling."""
        room = rb.room
        extremities = sorted(rb.batch.extremities)
        depths = await self.store.get_depths(extremities)
        min_depth = min(depths.values(), default=0)
        try:
            answer = await self.hs.federation_client.request(
                "POST", origin, f"/_matrix/federation/v1/get_missing_events/{quote_path_segment(room.room_id)}",
                content={"earliest_events": extremities, "latest_events": [pdu.event_id],
                         "limit": MISSING_EVENTS_LIMIT, "min_depth": min_depth},
            )
        except FederationRequestError as e:
            log.info("get_missing_events for %s from %s failed: %s", pdu.event_id, origin, e)
            return
        got = answer.get("events") if isinstance(answer, dict) else None
        if not isinstance(got, list):
            return
        events = [e for e in got if isinstance(e, dict)][:MISSING_EVENTS_LIMIT * 2]
        events.sort(key=lambda e: e.get("depth") if isinstance(e.get("depth"), int) else 0)
        for e in events:
            if guess_event_id(e, room.room_version) == pdu.event_id:
                continue
            try:
                await self._receive(origin, rb, e, gap_fill=False, check_acl=False)
            except PDUError as err:
                log.info("missing event from %s not accepted: %s", origin, err)

    async def _state_after_remote_event(self, origin: str, room: RoomRow, event_id: str) -> dict[StateKey, str]:
        """The state after an event we lack: the state before it (as
        ``state_before_remote_event``) plus the event itself."""
        state = await self.state_before_remote_event(origin, room, event_id)
        meta = (await self.store.get_event_meta([event_id]))[event_id]
        prev = (await self.events.get_pdus([event_id])).get(event_id)
        if prev is not None and prev.state_key is not None and meta.rejected_reason is None:
            state[(prev.type, prev.state_key)] = event_id
        return state

    async def state_before_remote_event(self, origin: str, room: RoomRow, event_id: str) -> dict[StateKey, str]:
        """The state before an event, from ``origin``'s ``/state_ids``; every event of that
        state and its auth chain we lack (and the event itself) is fetched with ``/event``
        and stored as a checked outlier; rejected ones are left out. PDUError if it fails."""
        rv = room.room_version
        try:
            answer = await self.hs.federation_client.request(
                "GET", origin, f"/_matrix/federation/v1/state_ids/{quote_path_segment(room.room_id)}",
                query={"event_id": event_id},
            )
        except FederationRequestError as e:
            raise PDUError(f"Could not get the state at prev event {event_id}: {e}") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("pdu_ids"), list) \
                or not isinstance(answer.get("auth_chain_ids"), list):
            raise PDUError(f"Bad /state_ids answer for {event_id}")
        state_ids = [e for e in answer["pdu_ids"] if isinstance(e, str)]
        auth_ids = [e for e in answer["auth_chain_ids"] if isinstance(e, str)]
        wanted = list(dict.fromkeys([*auth_ids, *state_ids, event_id]))
        have = await self.store.get_event_meta(wanted)
        lacking = [e for e in wanted if e not in have]
        if len(lacking) > MAX_STATE_FETCH:
            raise PDUError(f"The state at {event_id} is too large to fetch event by event")
        fetched = await self._fetch_events(origin, rv, lacking)
        if fetched:
            await self.persist_outliers(origin, room.room_id, rv, fetched)
        metas = await self.store.get_event_meta(wanted)
        if event_id not in metas:
            raise PDUError(f"Could not fetch prev event {event_id}")
        usable = [e for e in state_ids if e in metas and metas[e].rejected_reason is None]
        pdus = await self.events.get_pdus(usable)
        state: dict[StateKey, str] = {}
        for e in usable:
            p = pdus.get(e)
            if p is not None and p.state_key is not None:
                state[(p.type, p.state_key)] = e
        return state

    async def fetch_event(self, origin: str, rv: RoomVersion, event_id: str) -> dict | None:
        """``GET /event/{id}`` of one event from ``origin``: its PDU JSON (unchecked), or None."""
        found = await self._fetch_events(origin, rv, [event_id])
        return found[0] if found else None

    async def _fetch_events(self, origin: str, rv: RoomVersion, event_ids: Iterable[str]) -> list[dict]:
        """``GET /event/{id}`` for each ID, a few at a time; failures are skipped."""
        sem = self._fetch_sem.setdefault(origin, asyncio.Semaphore(FETCH_CONCURRENCY))

        async def one(event_id: str) -> dict | None:
            async with sem:
                try:
                    answer = await self.hs.federation_client.request(
                        "GET", origin, f"/_matrix/federation/v1/event/{quote_path_segment(event_id)}")
                except FederationRequestError as e:
                    log.info("could not fetch %s from %s: %s", event_id, origin, e)
                    return None
            pdus = answer.get("pdus") if isinstance(answer, dict) else None
            if isinstance(pdus, list) and pdus and isinstance(pdus[0], dict) \
                    and guess_event_id(pdus[0], rv) == event_id:
                return pdus[0]
            return None

        results = await asyncio.gather(*(one(e) for e in event_ids))
        return [r for r in results if r is not None]


def _with_event(state: Mapping[StateKey, str], pdu: PDU) -> Mapping[StateKey, str]:
    """The state after an accepted event, given the state before it."""
    if pdu.state_key is None:
        return state
    return {**state, (pdu.type, pdu.state_key): pdu.event_id}


#: Outliers decided (checked) are written once this many have gathered, or as soon as
#: the write before is done: one write in flight, while the checks go on.
WRITE_SLICE = 500
#: Decided outliers waiting for the write in flight: beyond this many, the checks wait.
WRITE_BACKLOG = 2000
#: Batches bigger than this are checked in worker threads, this many events a task: the
#: event loop stays free.
CHECK_CHUNK = 500


async def _map_chunks(fn: Callable[[Sequence[Any]], list], items: Sequence[Any], *, parallel: bool = False) -> list:
    """``fn`` (a pure function of a list, returning one result per item) over
    ``items``; results in order. ``parallel``: one task per core at a time, for work
    that mostly runs without the GIL (ed25519 verification); pure Python work runs
    one task at a time (threads would only fight over the GIL)."""
    if len(items) <= CHECK_CHUNK:
        return fn(items)
    sem = asyncio.Semaphore((os.cpu_count() or 1) if parallel else 1)

    async def one(part: Sequence[Any]) -> list:
        async with sem:
            return await asyncio.to_thread(fn, part)

    parts = await asyncio.gather(*(one(items[i:i + CHECK_CHUNK]) for i in range(0, len(items), CHECK_CHUNK)))
    return [r for part in parts for r in part]


async def _no_ids() -> set[str]:
    return set()


def _key_requests(pdu_json: Any, rv: RoomVersion, origin: str | None) -> list:
    try:
        return key_requests_for_event(pdu_json, rv, origin=origin)
    except SignatureError:
        return []  # check_signatures_and_hashes reports it


def _check_outliers(items: Sequence[Any], rv: RoomVersion, room_id: str, keys_for,
                    origin: str | None) -> list[tuple[str | None, PDU | None, PDU | None, str | None]]:
    """Steps 1-3 for each event of a batch of outliers, in this process: (event ID or
    None, the event as parsed or None when dropped before that, the event to go on with
    or None when dropped, why it was dropped or None)."""
    items = [_parsed(j) for j in items]
    return _from_verdicts(items, bulk_work.check_batch(items, rv, room_id, keys_for, origin), rv)


def _parsed(item: Any) -> Any:
    """An event given as its JSON text, parsed (None if it is not JSON); others as given."""
    if isinstance(item, (str, bytes)):
        try:
            return bulk_work.decode_event(item)
        except ValueError:
            return None
    return item


def _from_verdicts(items: Sequence[Any], verdicts: Sequence[bulk_work.Verdict], rv: RoomVersion
                   ) -> list[tuple[str | None, PDU | None, PDU | None, str | None]]:
    """A worker's verdicts on ``items`` (``bulk_work.check_batch``) in the form of
    ``_check_outliers``. The PDUs are built from our own copy of each event, which the
    worker checked (the same JSON): the format is known good, the event ID computed."""
    out: list[tuple[str | None, PDU | None, PDU | None, str | None]] = []
    for pdu_json, (eid, outcome, reason, redacted_json) in zip(items, verdicts):
        if outcome != bulk_work.OTHER_ROOM:
            pdu_json = _parsed(pdu_json)
        if outcome == bulk_work.MALFORMED:
            out.append((guess_event_id(pdu_json, rv), None, None, reason))
        elif outcome == bulk_work.OTHER_ROOM:
            out.append((eid, None, None, reason))
        else:
            pdu = PDU(pdu_json, rv, eid)
            if outcome == bulk_work.BAD_SIGNATURE:
                out.append((eid, pdu, None, reason))
            elif outcome == bulk_work.REDACTED:
                out.append((eid, pdu, PDU(redacted_json, rv, eid), None))
            else:
                out.append((eid, pdu, pdu, None))
    return out


class _AuthStream:
    """Step 4 for outliers as they come (``persist_outliers``): an event is checked
    against its auth events once each is decided, from the batch or the database
    (``know``); until then it waits. Its verdicts are those of checking the whole batch
    in auth order: each event sees the same auth events, decided the same way."""

    def __init__(self, rv: RoomVersion, room_id: str, *, keep: Collection[str] | None = None):
        """``keep``: the only events of the batch that may be named as auth events (all
        the batch names): the others are not kept once decided, members are kept slim."""
        self.rv, self.room_id = rv, room_id
        self._keep = keep
        #: Decided events of the batch and stored ones (rejected ones too: see rejected_ids).
        self.usable: dict[str, PDU] = {}
        self.rejected_ids: set[str] = set()
        self._create_id = "$" + room_id[1:] if rv.room_id_from_create_event else None
        #: An auth event not decided yet -> the events waiting for it.
        self._waiting: dict[str, list[str]] = {}
        #: A waiting event -> [it, how many of its auth events it still waits for].
        self._parked: dict[str, list] = {}
        self._ready: deque[PDU] = deque()

    @property
    def parked(self) -> int:
        return len(self._parked)

    def _refs(self, pdu: PDU) -> set[str]:
        refs = set(pdu.auth_event_ids)
        if self._create_id is not None and pdu.type != "m.room.create":
            refs.add(self._create_id)  # rooms 12+: not listed, but read by the rules
        return refs

    def unknown_refs(self, pdus: Iterable[PDU]) -> set[str]:
        """Auth events of ``pdus`` neither decided nor known to be waited for: the ones
        to look for in the database."""
        return {a for p in pdus for a in self._refs(p)
                if a not in self.usable and a not in self._waiting and a not in self._parked}

    def know(self, stored: Mapping[str, PDU], rejected: set[str]) -> None:
        """Stored events (``rejected``: those stored as rejected) that events may name."""
        self.rejected_ids |= rejected
        for eid, pdu in stored.items():
            self.usable[eid] = pdu
            self._release(eid)

    def _release(self, eid: str) -> None:
        for waiter in self._waiting.pop(eid, ()):
            entry = self._parked.get(waiter)
            if entry is not None:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._parked[waiter]
                    self._ready.append(entry[0])

    def add(self, pdus: Sequence[PDU]) -> list[tuple[PDU, str | None]]:
        """Take new events of the batch: (event, rejection reason or None) for each one
        decided now (these and the ones that waited for them), in the order decided."""
        out: list[tuple[PDU, str | None]] = []
        for pdu in pdus:
            missing = [a for a in self._refs(pdu) if a not in self.usable]
            if missing:
                self._parked[pdu.event_id] = [pdu, len(missing)]
                for a in missing:
                    self._waiting.setdefault(a, []).append(pdu.event_id)
            else:
                self._ready.append(pdu)
            while self._ready:
                ready = self._ready.popleft()
                out += _auth_batch(self.rv, self.room_id, [ready], self.usable, self.rejected_ids)
                self._release(ready.event_id)
                if self._keep is not None:
                    self._slim(ready)
        return out

    def _slim(self, pdu: PDU) -> None:
        """Keep of a decided event what an event it authorises may read."""
        eid = pdu.event_id
        if eid not in self._keep and eid != self._create_id:
            del self.usable[eid]
        elif pdu.type == "m.room.member":
            self.usable[eid] = _slim_member(pdu)

    def rest(self) -> list[tuple[PDU, str | None]]:
        """The events still waiting at the end (an auth event never came, or they name
        each other): checked in auth order with what there is (missing: rejected)."""
        left = {e: entry[0] for e, entry in self._parked.items()}
        self._parked.clear()
        self._waiting.clear()
        return _auth_batch(self.rv, self.room_id, _auth_order(left), self.usable, self.rejected_ids)


def _slim_member(pdu: PDU) -> PDU:
    """A member event as an auth event of others: what the authorisation rules read of
    it (type, state key, sender, content, room), not its signatures, hashes, edges."""
    source = pdu._json
    slim = {k: source[k] for k in ("type", "state_key", "sender", "content", "room_id", "depth",
                                   "origin_server_ts") if k in source}
    slim.update(prev_events=[], auth_events=[], hashes={}, signatures={})
    return PDU(slim, pdu.room_version, pdu.event_id)


def _auth_batch(rv: RoomVersion, room_id: str, ordered: Sequence[PDU], usable: dict[str, PDU],
                rejected_ids: set[str]) -> list[tuple[PDU, str | None]]:
    """Step 4 for outliers given in auth order: each event against its auth events,
    taken from ``usable`` (stored events and the batch so far; each event is added
    once checked) with ``rejected_ids`` (those rejected, updated here). Returns (event,
    rejection reason or None) for each event."""
    out: list[tuple[PDU, str | None]] = []
    for pdu in ordered:
        create = None
        if rv.room_id_from_create_event and pdu.type != "m.room.create":
            create = usable.get("$" + room_id[1:])
        missing = [a for a in pdu.auth_event_ids if a not in usable]
        if missing:
            reason = f"auth events not available: {', '.join(missing[:5])}"
        else:
            decision = check_auth_against_auth_events(
                rv, pdu, {a: usable[a] for a in pdu.auth_event_ids}, create_event=create,
                is_rejected=lambda e: e.event_id in rejected_ids,
            )
            reason = decision.reason if isinstance(decision, Reject) else None
        if reason is None and create is None and rv.room_id_from_create_event and pdu.type != "m.room.create":
            reason = "the room's create event is not available"
        usable[pdu.event_id] = pdu
        if reason is not None:
            rejected_ids.add(pdu.event_id)
        out.append((pdu, reason))
    return out


def _auth_order(events: Mapping[str, PDU]) -> list[PDU]:
    """The events ordered so that each comes after its auth events from the batch
    (Kahn's algorithm, ties by depth then ID); events in an auth cycle come last."""
    import heapq

    indegree = {e: 0 for e in events}
    children: dict[str, list[str]] = {}
    for eid, pdu in events.items():
        for a in set(pdu.auth_event_ids):
            if a in events:
                indegree[eid] += 1
                children.setdefault(a, []).append(eid)
    # The create event first (rooms 12+ do not list it in auth_events, whatever depths say).
    heap = [(events[e].type != "m.room.create", events[e].depth, e) for e, n in indegree.items() if n == 0]
    heapq.heapify(heap)
    out: list[PDU] = []
    while heap:
        *_, eid = heapq.heappop(heap)
        out.append(events[eid])
        for c in children.get(eid, ()):
            indegree[c] -= 1
            if indegree[c] == 0:
                heapq.heappush(heap, (events[c].type != "m.room.create", events[c].depth, c))
    if len(out) < len(events):
        placed = {p.event_id for p in out}
        out += [events[e] for e in sorted(events, key=lambda e: (events[e].depth, e)) if e not in placed]
    return out


__all__ = [
    "FederationEventHandler",
    "OutlierResult",
    "PDUError",
    "PDUOutcome",
    "guess_event_id",
]

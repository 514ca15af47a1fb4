"""Creating local events: build -> authorise against current state -> sign -> persist
with their state, under a per-room lock. Also what clients see of events: the client
format and history visibility.

Spec:
- building and signing: https://spec.matrix.org/latest/server-server-api/#pdus and
  https://spec.matrix.org/latest/server-server-api/#auth-events-selection
- authorisation: https://spec.matrix.org/latest/rooms/v12/#authorisation-rules (per version)
- client format: https://spec.matrix.org/latest/client-server-api/#room-event-format
- visibility: https://spec.matrix.org/latest/client-server-api/#history-visibility

Concurrency: one ``asyncio.Lock`` per room serialises writers in this process, and with
workers the database's named lock of the room those of every process; the store's
conditional head update (``StaleHeadError``) also protects against a writer in another
process, in which case the batch is built again on the new head. With event
persisters on workers, a process that is not the room's writer hands what it built (under
the room's lock) to the writer to store (gateway/services/event_persisters.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import secrets
import string
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from federation.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_auth_rules,
    get_named_level,
    get_user_power_level,
    redaction_allowed,
)
from federation.canonical_json import encode_canonical_json
from federation.events import MAX_PDU_SIZE, PDU, InvalidEventError, build_event
from federation.room_versions import EventFormat, RoomVersion
from federation.signing import ServerSigningKey, sign_event

from ..http import Codes, MatrixError
from ..storage.database import Database, IntegrityError
from ..storage.events import EventStore, EventWrite, PersistResult, RoomExistsError, RoomRow, StaleHeadError, \
    StoredEvent
from ..storage.state import EMPTY_STATE, StateKey, StateSnapshot, StateStore
from ..storage.users import UserStore

if TYPE_CHECKING:
    from ..modules import ModuleCallbacks
    from .event_persisters import EventPersisters

log = logging.getLogger(__name__)

#: How often a v12+ room whose create event names an existing room is built again.
_CREATE_ATTEMPTS = 5

#: At most this many forward extremities become the prev_events of a new event.
MAX_PREV_EVENTS = 10
#: Attempts when another writer (another process) moved the room's head meanwhile.
_RETRIES = 100

NewEventsListener = Callable[[str, Sequence[int]], None]
#: ``listener(room_id, state_pdus)``: new state events of a room (accepted ones).
NewStateListener = Callable[[str, Sequence[PDU]], None]
BeforePersist = Callable[[PDU], Awaitable[PDU]]


@dataclass(frozen=True)
class EventSpec:
    """What a local event should say; the pipeline fills in the rest."""

    type: str
    sender: str
    content: Mapping[str, Any]
    state_key: str | None = None
    redacts: str | None = None
    #: Extra ``unsigned`` data kept with the stored event (e.g. ``invite_room_state``).
    unsigned: Mapping[str, Any] = field(default_factory=dict)
    #: ``origin_server_ts`` other than now (an application service's ``ts``: timestamp massaging).
    origin_server_ts: int | None = None


@dataclass(frozen=True)
class _Head:
    """A room's latest events as the next local event will see them."""

    room: RoomRow
    head_stream_ordering: int
    state: StateSnapshot
    prev_ids: tuple[str, ...]
    depth: int


@dataclass(frozen=True)
class SentEvent:
    pdu: PDU
    stream_ordering: int


@dataclass
class _Pending:
    """A caller's events waiting for the room's next write, and where its answer goes."""

    specs: Sequence[EventSpec]
    txn: tuple[str, str, str] | None
    done: asyncio.Future


class EventsService:
    #: PDUs kept in memory by event ID.
    PDU_CACHE_SIZE = 10_000

    def __init__(self, *, db: Database, server_name: str, signing_key: ServerSigningKey, modules: ModuleCallbacks,
                 clock_ms: Callable[[], int], shared_room_locks: bool = False,
                 persisters: "EventPersisters | None" = None):
        """``signing_key`` signs our events; ``modules``: their event checks and
        ``on_new_event``. ``shared_room_locks``: other processes write to rooms too
        (workers): a room's lock is also the database's named lock of the room.
        ``persisters``: the rooms' writers, when some are other processes."""
        self._db = db
        self.shared_room_locks = shared_room_locks
        self.persisters = persisters
        self.server_name = server_name
        self.signing_key = signing_key
        self.modules = modules
        self.clock_ms = clock_ms
        self.state = StateStore(db)
        self.store = EventStore(db, self.state)
        self._users = UserStore(db)  # who asked for erasure
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._pdu_cache: OrderedDict[str, PDU] = OrderedDict()
        self._listeners: list[NewEventsListener] = []
        self._state_listeners: list[NewStateListener] = []
        #: What this process last wrote to each room. Only a hint: the store's head
        #: check catches any other writer, and the entry is then dropped.
        self._heads: OrderedDict[str, _Head] = OrderedDict()
        #: Modules' on_new_event runs, kept until they finish.
        self._module_tasks: set[asyncio.Task] = set()
        #: ``listener(room_id, head_stream_ordering)`` when a room's lock shared with other
        #: processes is taken: the room's head in the database (None: no such room), for
        #: caches of the room's head to check themselves against.
        self.head_checked_listeners: list[Callable[[str, int | None], None]] = []
        #: Callers waiting for each room's next write (group commit).
        self._waiting: dict[str, list[_Pending]] = {}

    # --- hooks and caches ------------------------------------------------------

    def add_new_events_listener(self, listener: NewEventsListener) -> None:
        """Call ``listener(room_id, stream_orderings)`` after new events are stored
        (for /sync's notifier and the federation sender)."""
        self._listeners.append(listener)

    def add_new_state_listener(self, listener: NewStateListener) -> None:
        """Call ``listener(room_id, pdus)`` after new state events (of ours, accepted, or
        received in the timeline) are stored."""
        self._state_listeners.append(listener)

    def room_lock(self, room_id: str) -> contextlib.AbstractAsyncContextManager[Any]:
        """The room's writers' lock: held while a batch of the room's events is built and
        stored, so that they see each other's writes. With workers it is also the named
        lock ``room:<room_id>`` of the database, which every process takes: a room's
        events are then ordered across processes too (the head check stays as a guard)."""
        lock = self._locks.get(room_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[room_id] = lock
        if not self.shared_room_locks:
            return lock
        return self._shared_room_lock(room_id, lock)

    @contextlib.asynccontextmanager
    async def _shared_room_lock(self, room_id: str, local: asyncio.Lock) -> AsyncIterator[None]:
        """This process's lock, then every process's; once held, what this process
        remembers of the room's head is checked against the database (another process
        may have written since): a stale copy is dropped here and by the
        ``head_checked_listeners``, before anything is judged on it."""
        async with local:
            async with self._db.named_lock(f"room:{room_id}"):
                head = await self._db.fetchval("SELECT head_stream_ordering FROM rooms WHERE room_id = $1", room_id)
                cached = self._heads.get(room_id)
                if cached is not None and cached.head_stream_ordering != head:
                    self._heads.pop(room_id, None)
                for listener in self.head_checked_listeners:
                    listener(room_id, head)
                yield

    def remember(self, pdu: PDU) -> None:
        """Keep a stored PDU in memory (for writers other than this service)."""
        self._pdu_cache[pdu.event_id] = pdu
        self._pdu_cache.move_to_end(pdu.event_id)
        while len(self._pdu_cache) > self.PDU_CACHE_SIZE:
            self._pdu_cache.popitem(last=False)

    async def get_pdus(self, event_ids: Iterable[str]) -> dict[str, PDU]:
        """Events by ID (cached: a PDU never changes)."""
        out: dict[str, PDU] = {}
        missing = []
        for eid in event_ids:
            pdu = self._pdu_cache.get(eid)
            if pdu is None:
                missing.append(eid)
            else:
                out[eid] = pdu
        if missing:
            for eid, stored in (await self.store.get_events(missing)).items():
                self.remember(stored.pdu)
                out[eid] = stored.pdu
        return out

    # --- reading rooms ---------------------------------------------------------

    async def get_room(self, room_id: str) -> RoomRow:
        room = await self.store.get_room(room_id)
        if room is None:
            raise MatrixError.not_found(f"Unknown room {room_id}")
        return room

    async def get_state_events(self, state: Mapping[StateKey, str]) -> dict[StateKey, PDU]:
        pdus = await self.get_pdus(state.values())
        return {k: pdus[e] for k, e in state.items() if e in pdus}

    # --- creating events -------------------------------------------------------

    async def send_event(self, room_id: str, spec: EventSpec, *, txn: tuple[str, str, str] | None = None,
                         before_persist: BeforePersist | None = None,
                         ratelimit: Callable[[], Awaitable[None]] | None = None) -> SentEvent:
        """Create, authorise, sign and store one event; idempotent for a ``txn``
        (user_id, device_id, txn_id). ``M_FORBIDDEN`` with the auth rule's reason.
        ``before_persist(pdu)`` runs (under the room lock) once the event is built and
        authorised and returns the event to store (same event ID, e.g. with another
        server's signature added: a remote invite); if it raises, nothing is stored.
        ``ratelimit()`` runs unless the ``txn`` was seen before (a retry is free)."""
        if txn is not None:
            known = await self.store.get_txn_event_id(*txn)
            if known is not None:
                return await self._already_sent(known)
        if spec.redacts is not None:
            # An event we know of in another room is not this room's to redact (an unknown
            # one may still arrive: a redaction can come first).
            target = await self.store.get_event(spec.redacts)
            if target is not None and target.pdu.room_id != room_id:
                raise MatrixError.invalid_param(f"{spec.redacts} is not an event of {room_id}")
        if ratelimit is not None:
            await ratelimit()
        try:
            return (await self.send_events(room_id, [spec], txn=txn, before_persist=before_persist))[0]
        except IntegrityError:
            if txn is not None:  # the same transaction ID raced with itself
                known = await self.store.get_txn_event_id(*txn)
                if known is not None:
                    return await self._already_sent(known)
            raise

    async def send_state_event(self, room_id: str, spec: EventSpec, *,
                               ratelimit: Callable[[], Awaitable[None]] | None = None) -> SentEvent:
        """A client's state event (``PUT /state``, a join): when the room's current state
        already holds that event from the same sender with the same content, it is the
        answer and no new event is made (as Synapse does: a client retrying, or setting
        what is already set, does not fill the timeline)."""
        assert spec.state_key is not None
        current = await self.state.get_current_state_event_id(room_id, spec.type, spec.state_key)
        if current is not None:
            stored = await self.store.get_event(current)
            if stored is not None and stored.pdu.sender == spec.sender and stored.pdu.content == spec.content:
                return SentEvent(stored.pdu, stored.stream_ordering)
        return await self.send_event(room_id, spec, ratelimit=ratelimit)

    async def _already_sent(self, event_id: str) -> SentEvent:
        stored = await self.store.get_event(event_id)
        assert stored is not None
        return SentEvent(stored.pdu, stored.stream_ordering)

    async def send_events(
        self, room_id: str, specs: Sequence[EventSpec], *, txn: tuple[str, str, str] | None = None,
        before_persist: BeforePersist | None = None,
    ) -> list[SentEvent]:
        """Append events to a room's timeline, in order, in one transaction.

        Group commit: callers sending to the same room at the same time wait for the
        room's lock; whoever gets it builds every waiting caller's events (each on the
        ones before) and writes them all in one transaction. A caller whose events the
        rules refuse gets its error and leaves the others alone. A ``before_persist``
        caller (a remote invite: a network call under the lock) is written alone."""
        for spec in specs:
            _check_local_content(room_id, spec)
        pending = _Pending(specs, txn, asyncio.get_running_loop().create_future())
        if before_persist is not None:
            async with self.room_lock(room_id):
                await self._write_group(room_id, [pending], before_persist)
            return pending.done.result()
        self._waiting.setdefault(room_id, []).append(pending)
        async with self.room_lock(room_id):
            if not pending.done.done():
                group = self._waiting.pop(room_id, [])
                try:
                    await self._write_group(room_id, group)
                finally:
                    for other in group:  # cancelled mid-write: nothing said is stored
                        if not other.done.done():
                            other.done.set_exception(MatrixError(503, Codes.UNKNOWN, "Not stored; try again"))
        return pending.done.result()

    async def _write_group(self, room_id: str, group: list["_Pending"],
                           before_persist: BeforePersist | None = None) -> None:
        """Build and store the events of ``group`` (under the room's lock) in one
        transaction, and settle each caller's future with its events or its error."""
        for attempt in range(_RETRIES):
            cached = self._heads.get(room_id)
            try:
                head = cached or await self._load_head(room_id)
            except MatrixError as e:
                for p in group:
                    p.done.set_exception(e)
                return
            built = await self._build_group(room_id, head, group)
            if cached is not None and any(isinstance(b, MatrixError) for b in built):
                self._heads.pop(room_id, None)  # judge again on what the database says
                continue
            ok = [(p, b) for p, b in zip(group, built) if not isinstance(b, MatrixError)]
            for p, b in zip(group, built):
                if isinstance(b, MatrixError):
                    p.done.set_exception(b)
            if not ok:
                return
            writes = [w for _, b in ok for w in b]
            if before_persist is not None:
                try:
                    replaced = await before_persist(writes[-1].pdu)
                except BaseException as e:
                    group[0].done.set_exception(e)
                    if not isinstance(e, Exception):
                        raise
                    return
                if replaced.event_id != writes[-1].pdu.event_id:
                    group[0].done.set_exception(
                        MatrixError(502, Codes.UNKNOWN, "The event changed before it was stored"))
                    return
                writes[-1].pdu = replaced
            local = self.persisters is None or self.persisters.is_local(room_id)
            try:
                if local:
                    result = await self.store.persist_events(
                        room_id, writes, state_before=head.state, expected_head=head.head_stream_ordering,
                        received_ts=self.clock_ms(),
                    )
                else:  # the room's writer stores them (and tells the listeners)
                    result = await self.persisters.persist_events(
                        room_id, head.room.room_version, writes, state_before_group=head.state.group,
                        expected_head=head.head_stream_ordering, load_state=self._load_state)
            except StaleHeadError:
                self._heads.pop(room_id, None)
                log.info("room %s moved on while we built an event; building again", room_id)
                await asyncio.sleep(random.uniform(0, 0.001 * min(attempt + 1, 20)))  # spread the writers
                continue
            except IntegrityError as e:
                if len(ok) == 1:  # e.g. its transaction ID raced with itself: send_event looks again
                    ok[0][0].done.set_exception(e)
                    return
                for p, _ in ok:  # one caller spoils the group: each on its own
                    await self._write_group(room_id, [p])
                return
            last = writes[-1].pdu
            self._set_head(room_id, _Head(head.room, result.stream_orderings[-1], result.state_after,
                                          (last.event_id,), last.depth))
            sent = self._after_persist(room_id, writes, result.stream_orderings) if local else \
                self._stored_elsewhere(writes, result.stream_orderings)
            for p, b in ok:
                p.done.set_result(sent[:len(b)])
                sent = sent[len(b):]
            return
        for p in group:
            p.done.set_exception(MatrixError(503, Codes.UNKNOWN, "The room is too busy; try again"))

    async def _build_group(self, room_id: str, head: "_Head", group: Sequence["_Pending"]
                           ) -> list[list[EventWrite] | MatrixError]:
        """Each caller's events on top of the ones before (its transaction ID on its
        last event), or the error that refuses them (the next caller then builds on
        what came before)."""
        rv = head.room.room_version
        current: dict[StateKey, str] = dict(head.state.state)
        known = await self.get_pdus(_auth_relevant(current, [s for p in group for s in p.specs]))
        prev_ids, depth = list(head.prev_ids), head.depth
        out: list[list[EventWrite] | MatrixError] = []
        for p in group:
            keys = {(s.type, s.state_key) for s in p.specs if s.state_key is not None}
            saved = {k: current.get(k) for k in keys}
            try:
                writes = await self._build_chain(room_id, rv, p.specs, current, known, prev_ids, depth,
                                                 spam_check=True)
            except MatrixError as e:
                for k, v in saved.items():  # as before this caller
                    if v is None:
                        current.pop(k, None)
                    else:
                        current[k] = v
                out.append(e)
                continue
            if p.txn is not None:
                writes[-1].txn = p.txn
            prev_ids, depth = [writes[-1].pdu.event_id], writes[-1].pdu.depth
            out.append(writes)
        return out

    async def _load_head(self, room_id: str) -> "_Head":
        room = await self.get_room(room_id)
        state = await self.state.get_state(room.current_state_group)
        prev_ids = await self.store.get_forward_extremities(room_id)
        depths = await self.store.get_depths(prev_ids)
        prev_ids = sorted(prev_ids, key=lambda e: -depths.get(e, 0))[:MAX_PREV_EVENTS]
        depth = max((depths.get(e, 0) for e in prev_ids), default=0)
        return _Head(room, room.head_stream_ordering, state, tuple(prev_ids), depth)

    def forget_room(self, room_id: str) -> None:
        """Drop what this process remembers of a room (after a purge)."""
        self._heads.pop(room_id, None)
        for event_id in [e for e, p in self._pdu_cache.items() if p.room_id == room_id]:
            del self._pdu_cache[event_id]

    def forget_events(self, event_ids: list[str]) -> None:
        """Drop purged events from memory (the rooms' heads are reloaded too)."""
        for event_id in event_ids:
            pdu = self._pdu_cache.pop(event_id, None)
            if pdu is not None:
                self._heads.pop(pdu.room_id, None)

    def _set_head(self, room_id: str, head: "_Head") -> None:
        self._heads[room_id] = head
        self._heads.move_to_end(room_id)
        while len(self._heads) > 10_000:
            self._heads.popitem(last=False)

    async def create_room(
        self, room_version: RoomVersion, specs: Sequence[EventSpec], *, creator: str, is_public: bool,
        room_id: str | None,
    ) -> tuple[str, list[SentEvent]]:
        """Build and store a new room's first events (``specs[0]`` is the create event).
        ``room_id`` is None for rooms v12+ (it comes from the create event)."""
        attempts = 0
        while True:
            writes = await self._build_chain(room_id, room_version, specs, {}, {}, [], 0)
            real_room_id = writes[0].pdu.room_id
            try:
                if self.persisters is not None and not self.persisters.is_local(real_room_id):
                    positions = await self.persisters.create_room(
                        real_room_id, room_version, writes, creator=creator, created_ts=self.clock_ms(),
                        is_public=is_public)
                    return real_room_id, self._stored_elsewhere(writes, positions)
                return real_room_id, await self.store_new_room(real_room_id, room_version, writes, creator=creator,
                                                               created_ts=self.clock_ms(), is_public=is_public)
            except RoomExistsError:
                # v12+: the room ID is the create event's hash, so the same creator asking
                # twice for the same room in one millisecond names one room twice. Build it
                # again a moment later (a new origin_server_ts, a new ID).
                attempts += 1
                if room_id is not None or attempts == _CREATE_ATTEMPTS:
                    raise
                await asyncio.sleep(0.001)

    async def store_new_room(self, room_id: str, room_version: RoomVersion, writes: Sequence[EventWrite], *,
                             creator: str, created_ts: int, is_public: bool) -> list[SentEvent]:
        """Store a new room's first events (built here or by another process)."""
        async with self.room_lock(room_id):
            result = await self.store.create_room_and_persist(
                room_id=room_id, room_version=room_version, creator=creator, created_ts=created_ts,
                is_public=is_public, writes=writes)
        return self._after_persist(room_id, writes, result.stream_orderings)

    async def store_built(self, room_id: str, writes: Sequence[EventWrite], *, state_before: StateSnapshot,
                          expected_head: int) -> PersistResult:
        """Store events another process built on the room head ``expected_head`` (this
        process is the room's writer): ``StaleHeadError`` if the room moved on. The caller
        holds the room's lock, which is the database's named lock with workers: taking it
        here would wait for the caller, who waits for this."""
        self._heads.pop(room_id, None)  # ours, if any, is no longer the head
        result = await self.store.persist_events(room_id, writes, state_before=state_before,
                                                 expected_head=expected_head, received_ts=self.clock_ms())
        self._after_persist(room_id, writes, result.stream_orderings)
        return result

    async def _load_state(self, group: int | None) -> StateSnapshot:
        return EMPTY_STATE if group is None else await self.state.get_state(group)

    def _stored_elsewhere(self, writes: Sequence[EventWrite], positions: Sequence[int]) -> list[SentEvent]:
        """Events the room's writer stored for us: its listeners ran there."""
        for w in writes:
            self.remember(w.pdu)
        return [SentEvent(w.pdu, p) for w, p in zip(writes, positions)]

    def forget_head(self, room_id: str) -> None:
        """Another writer changed the room (a received event, a partial-state resync): the
        next local event reads the room's head from the database again."""
        self._heads.pop(room_id, None)

    def announce_stored(self, room_id: str, positions: Sequence[int], received: Sequence[PDU] = ()) -> None:
        """Events another pipeline stored in the room's timeline (at ``positions``;
        ``received``: those of other servers): listeners and modules hear of them as of
        ours."""
        self._after_persist(room_id, [], positions, received)

    def _after_persist(self, room_id: str, writes: Sequence[EventWrite], positions: Sequence[int],
                       received: Sequence[PDU] = ()) -> list[SentEvent]:
        """Wake the listeners and modules after events were stored: ``writes`` of ours,
        or ``received`` events of other servers (in the timeline)."""
        for w in writes:
            self.remember(w.pdu)
        modules = self.modules
        if modules.has("on_new_event"):
            task = asyncio.get_running_loop().create_task(
                self._notify_modules(room_id, [w.pdu for w in writes if w.rejected_reason is None] + list(received)))
            self._module_tasks.add(task)
            task.add_done_callback(self._module_tasks.discard)
        for listener in self._listeners:
            try:
                listener(room_id, positions)
            except Exception:
                log.exception("new-events listener failed")
        state = [w.pdu for w in writes if w.rejected_reason is None and w.pdu.state_key is not None]
        state += [p for p in received if p.state_key is not None]
        for state_listener in self._state_listeners if state else ():
            try:
                state_listener(room_id, state)
            except Exception:
                log.exception("new-state listener failed")
        return [SentEvent(w.pdu, p) for w, p in zip(writes, positions)]

    async def _notify_modules(self, room_id: str, pdus: Sequence[PDU]) -> None:
        """Modules' ``on_new_event``, with the room's state after each event."""
        from ..modules import ModuleEvent

        state = await self.module_state_map(await self.state.get_current_state_ids(room_id))
        for pdu in pdus:
            await self.modules.notify("on_new_event", ModuleEvent(pdu), state)

    async def module_state_map(self, state_ids: Mapping[StateKey, str]) -> dict:
        from ..modules import ModuleEvent

        pdus = await self.get_pdus(state_ids.values())
        return {k: ModuleEvent(pdus[e]) for k, e in state_ids.items() if e in pdus}

    async def _module_checks(self, spec: EventSpec, pdu: PDU, current: Mapping[StateKey, str],
                             spam_check: bool) -> EventSpec | None:
        """Modules' verdict on a local event: raises the refusal; returns a replacement
        spec when a third-party rules module rewrote the event's content."""
        from ..modules import ModuleEvent

        modules = self.modules
        event = ModuleEvent(pdu)
        if spam_check and pdu.type != "m.room.member":
            await modules.spam_check("check_event_for_spam", "This event", event)
        if modules.has("check_event_allowed"):
            allowed, new = await modules.check_event_allowed(event, await self.module_state_map(current))
            if not allowed:
                raise MatrixError.forbidden("This event is not allowed in this room (server policy)")
            if new is not None and isinstance(new.get("content"), dict) and new["content"] != pdu.content:
                return dataclasses.replace(spec, content=new["content"])
        return None

    async def _build_chain(
        self,
        room_id: str | None,
        rv: RoomVersion,
        specs: Sequence[EventSpec],
        current: dict[StateKey, str],
        known: dict[str, PDU],
        prev_ids: list[str],
        depth: int,
        *,
        spam_check: bool = False,
    ) -> list[EventWrite]:
        """Build, sign and authorise each event on top of the one before (and let modules
        check it; ``spam_check`` for events clients send, not a new room's first events).
        ``current`` (the room's state) follows the events' state changes; ``known`` holds
        the events read so far (auth events) and the new ones."""
        writes: list[EventWrite] = []
        for spec in specs:
            pdu = self._build_one(rv, room_id, spec, current, prev_ids, depth)
            room_id = pdu.room_id
            auth_map = await self._auth_map(rv, pdu, current, known)
            try:
                check_auth_rules(rv, pdu, auth_map)
            except AuthError as e:
                raise MatrixError.forbidden(str(e)) from None
            if self.modules.has_event_checks:
                replacement = await self._module_checks(spec, pdu, current, spam_check)
                if replacement is not None:  # rebuilt and judged again by the auth rules only
                    pdu = self._build_one(rv, room_id, replacement, current, prev_ids, depth)
                    auth_map = await self._auth_map(rv, pdu, current, known)
                    try:
                        check_auth_rules(rv, pdu, auth_map)
                    except AuthError as e:
                        raise MatrixError.forbidden(str(e)) from None
            redaction_target = await self._check_redaction(rv, pdu, auth_map)
            delta: dict[StateKey, str] = {}
            if pdu.state_key is not None:
                delta[(pdu.type, pdu.state_key)] = pdu.event_id
                current[(pdu.type, pdu.state_key)] = pdu.event_id
            known[pdu.event_id] = pdu
            writes.append(EventWrite(pdu, state_delta=delta, redaction_applies_to=redaction_target))
            prev_ids, depth = [pdu.event_id], pdu.depth
        return writes

    def _build_one(
        self, rv: RoomVersion, room_id: str | None, spec: EventSpec, current: Mapping[StateKey, str],
        prev_ids: Sequence[str], depth: int,
    ) -> PDU:
        auth_keys = auth_types_for_event(rv, spec.type, spec.sender, spec.state_key, spec.content)
        auth_ids = [current[k] for k in sorted(auth_keys) if k in current]
        event_id = None
        if rv.event_format is EventFormat.V1:
            rand = "".join(secrets.choice(string.ascii_letters) for _ in range(18))
            event_id = f"${rand}:{self.server_name}"
        try:
            pdu_json = build_event(
                rv, type=spec.type, sender=spec.sender, room_id=room_id, content=dict(spec.content),
                prev_event_ids=prev_ids, auth_event_ids=auth_ids, depth=depth + 1,
                origin_server_ts=spec.origin_server_ts if spec.origin_server_ts is not None else self.clock_ms(),
                state_key=spec.state_key, redacts=spec.redacts,
                origin=self.server_name, event_id=event_id,
            )
            signed = sign_event(pdu_json, self.server_name, self.signing_key, room_version=rv)
            if spec.unsigned:
                signed["unsigned"] = dict(spec.unsigned)
            size = len(encode_canonical_json(signed))
            if size > MAX_PDU_SIZE:
                raise MatrixError(413, Codes.TOO_LARGE, f"Event is {size} bytes; the limit is {MAX_PDU_SIZE}")
            return PDU.from_pdu_json(signed, rv)
        except InvalidEventError as e:
            raise MatrixError.bad_json(f"Invalid event: {e}") from None
        except ValueError as e:  # canonical JSON rules (e.g. integers out of range)
            raise MatrixError.bad_json(f"Invalid event content: {e}") from None

    async def _auth_map(
        self, rv: RoomVersion, pdu: PDU, current: Mapping[StateKey, str], known: dict[str, PDU]
    ) -> dict[StateKey, PDU]:
        keys = auth_types_for_event(rv, pdu.type, pdu.sender, pdu.state_key, pdu.content)
        keys.add(("m.room.create", ""))
        ids = {k: current[k] for k in keys if k in current}
        missing = [e for e in ids.values() if e not in known]
        if missing:
            known.update(await self.get_pdus(missing))
        return {k: known[e] for k, e in ids.items() if e in known}

    async def _check_redaction(self, rv: RoomVersion, pdu: PDU, auth_map: Mapping[StateKey, PDU]) -> str | None:
        """For a redaction: the event it applies to, or M_FORBIDDEN if the sender may not
        redact it. Redactions of unknown events are stored and applied to nothing."""
        if pdu.type != "m.room.redaction" or pdu.redacts is None:
            return None
        target = (await self.get_pdus([pdu.redacts])).get(pdu.redacts)
        if target is None or target.room_id != pdu.room_id:
            return None
        # Clients: anyone may redact their own events; others' need the redact level.
        # https://spec.matrix.org/latest/client-server-api/#put_matrixclientv3roomsroomidredacteventidtxnid
        if target.sender != pdu.sender:
            pl = auth_map.get(("m.room.power_levels", ""))
            content = pl.content if pl is not None else None
            level = get_user_power_level(pdu.sender, content, auth_map.get(("m.room.create", "")), rv)
            if level < get_named_level("redact", content, rv):
                raise MatrixError.forbidden("You need the 'redact' power level to redact other users' events")
        if not redaction_allowed(rv, pdu, target, auth_map):
            raise MatrixError.forbidden("You do not have permission to redact this event")
        return target.event_id

    # --- what clients see ------------------------------------------------------

    async def serialize_for_client(
        self, events: Sequence[StoredEvent | PDU], *, requester_device: tuple[str, str | None] | None = None,
        redactions: Mapping[str, str] | None = None, txn_ids: Mapping[str, tuple[str, str, str]] | None = None,
    ) -> list[dict[str, Any]]:
        """The client format of events, with redactions applied, ``unsigned.age``,
        ``prev_content`` for state events and ``transaction_id`` for the sending device.
        A caller that read the redactions and transaction IDs along with the events
        (/sync does) passes them in and saves two reads."""
        stored = [e for e in events if isinstance(e, StoredEvent)]
        pdus = [e.pdu if isinstance(e, StoredEvent) else e for e in events]
        ids = [p.event_id for p in pdus]
        if redactions is None:
            redactions = await self.store.get_redactions_for(ids)
        replaces = {s.event_id: s.replaces_state for s in stored if s.replaces_state}
        related = await self.get_pdus(list(redactions.values()) + list(replaces.values()))
        if not requester_device:
            txns: Mapping[str, tuple[str, str, str]] = {}
        elif txn_ids is not None:
            txns = txn_ids
        else:
            txns = await self.store.get_txn_ids_for_events(ids)
        erased = await self._erased_for(requester_device[0], stored) if requester_device else set()
        now = self.clock_ms()
        out = []
        for pdu in pdus:
            red = related.get(redactions.get(pdu.event_id, ""))
            if red is not None:
                pdu = pdu.redacted(client_event(red, now))
            elif pdu.event_id in erased:
                pdu = pdu.redacted()
            body = client_event(pdu, now)
            if red is not None:
                body["unsigned"]["redacted_by"] = red.event_id  # beside redacted_because, as Synapse
            prev = related.get(replaces.get(pdu.event_id, ""))
            if prev is not None:
                body["unsigned"]["prev_content"] = prev.content
                body["unsigned"]["replaces_state"] = prev.event_id
            sent = txns.get(pdu.event_id)
            if sent is not None and requester_device is not None and sent[:2] == requester_device:
                body["unsigned"]["transaction_id"] = sent[2]
            out.append(body)
        return out

    async def _erased_for(self, viewer: str, events: Sequence[StoredEvent]) -> set[str]:
        """The events ``viewer`` is served redacted because their sender deactivated with
        ``erase: true`` and the viewer was not joined when they were sent: "users (or
        servers) which join the room after the erasure request are served redacted copies".
        https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3accountdeactivate"""
        suffix = ":" + self.server_name
        senders = {e.pdu.sender for e in events if e.pdu.sender.endswith(suffix) and e.pdu.sender != viewer}
        erased = await self._users.erased_among(senders) if senders else set()
        if not erased:
            return set()
        theirs = [e for e in events if e.pdu.sender in erased]
        verdicts = await self._group_verdicts(viewer, {e.state_group for e in theirs if e.state_group is not None})
        return {e.event_id for e in theirs if e.state_group is None or verdicts[e.state_group][1] != "join"}

    async def events_around(self, user_id: str | None, target: StoredEvent, *, before: int, after: int,
                            filters: Mapping[str, Any] | None = None) -> "EventsAround":
        """The timeline around ``target`` as ``user_id`` may see it (for /context and search
        results; None: all of it, for a server admin): up to ``before`` events before it and
        ``after`` after it (``filters``: ``get_room_events``' type and sender conditions), with
        ``s<position>`` tokens that paginate on from either end. A member who left sees
        nothing after leaving."""
        room_id, pos = target.pdu.room_id, target.stream_ordering
        member = await self.state.get_membership(room_id, user_id) if user_id is not None else None
        cap = member.stream_ordering if member is not None and member.membership in ("leave", "ban") else None
        found_before = await self.store.get_room_events(room_id, from_pos=pos - 1, backwards=True, limit=before,
                                                        **(filters or {}))
        found_after = await self.store.get_room_events(room_id, from_pos=pos, backwards=False, limit=after,
                                                       to_pos=cap, **(filters or {}))
        return EventsAround(
            before=found_before if user_id is None else await self.filter_visible(user_id, found_before),
            after=found_after if user_id is None else await self.filter_visible(user_id, found_after),
            start=f"s{(found_before[-1].stream_ordering if found_before else pos) - 1}",
            end=f"s{found_after[-1].stream_ordering if found_after else pos}",
            last=found_after[-1] if found_after else target,
        )

    async def filter_visible(self, user_id: str, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        """The events ``user_id`` may see, by the history visibility and the user's
        membership at each event (state after the event); a user always sees their own
        membership events, and an ``m.room.history_visibility`` event when the visibility
        before or after it lets them.
        https://spec.matrix.org/latest/client-server-api/#room-history-visibility"""
        verdicts = await self._group_verdicts(user_id, {e.state_group for e in events if e.state_group is not None})
        rows = await self.state.get_user_memberships(user_id, [e.pdu.room_id for e in events]) if events else {}
        current_membership = {r: row.membership for r, row in rows.items()}
        # The visibility before each history visibility change (the state it replaced).
        changes = [e for e in events if e.pdu.type == "m.room.history_visibility" and e.pdu.state_key == ""]
        replaced = await self.get_pdus([e.replaces_state for e in changes if e.replaces_state])
        change_ids = {e.event_id for e in changes}
        out = []
        for e in events:
            if e.pdu.type == "m.room.member" and e.pdu.state_key == user_id:
                out.append(e)
                continue
            if e.state_group is None:
                continue
            hv, mem = verdicts[e.state_group]
            current = current_membership.get(e.pdu.room_id)
            if may_see(hv, mem, current):
                out.append(e)
            elif e.event_id in change_ids:
                before = replaced.get(e.replaces_state or "")
                hv_before = before.content.get("history_visibility") if before is not None else None
                if may_see(hv_before if isinstance(hv_before, str) else "shared", mem, current):
                    out.append(e)
        return out


    async def visible_state_groups(self, user_id: str, room_id: str, groups: Iterable[int]) -> set[int]:
        """Of the room's state groups, those at which an ordinary event (not a history
        visibility change, not the user's own membership) is visible to ``user_id``: the
        rule of ``filter_visible`` without loading the events (counting a thread's
        replies, say)."""
        verdicts = await self._group_verdicts(user_id, set(groups))
        row = await self.state.get_membership(room_id, user_id)
        current = row.membership if row else None
        return {g for g, (hv, mem) in verdicts.items() if may_see(hv, mem, current)}

    async def _group_verdicts(self, user_id: str, groups: set[int]) -> dict[int, tuple[str, str | None]]:
        """Per state group: the history visibility and the user's membership in it."""
        verdicts: dict[int, tuple[str, str | None]] = {}
        for g in groups:
            snap = await self.state.get_state(g)
            hv_id = snap.state.get(("m.room.history_visibility", ""))
            mem_id = snap.state.get(("m.room.member", user_id))
            pdus = await self.get_pdus([i for i in (hv_id, mem_id) if i])
            hv = pdus[hv_id].content.get("history_visibility") if hv_id in pdus else None
            mem = pdus[mem_id].content.get("membership") if mem_id in pdus else None
            verdicts[g] = (hv if isinstance(hv, str) else "shared", mem if isinstance(mem, str) else None)
        return verdicts


def _check_local_content(room_id: str, spec: EventSpec) -> None:
    """What this server refuses to send whatever the auth rules say: a tombstone is a
    state event naming a replacement room other than its own (as Synapse checks).
    https://spec.matrix.org/latest/client-server-api/#mroomtombstone"""
    if spec.type == "m.room.tombstone":
        if spec.state_key is None:
            raise MatrixError.bad_json("m.room.tombstone must be a state event")
        target = spec.content.get("replacement_room")
        if not isinstance(target, str):
            raise MatrixError.bad_json("A tombstone needs a 'replacement_room'")
        if target == room_id:
            raise MatrixError.bad_json("A tombstone cannot point at the room it is sent in")


def may_see(history_visibility: str, membership: str | None, current_membership: str | None) -> bool:
    """The spec's rules for one event: the history visibility and the user's membership
    at the event, and whether they are joined now (for ``shared``)."""
    return (history_visibility == "world_readable" or membership == "join"
            or (history_visibility == "shared" and current_membership == "join")
            or (history_visibility == "invited" and membership == "invite"))


@dataclass(frozen=True)
class EventsAround:
    """What ``EventsService.events_around`` found."""

    #: Visible events before the target, newest first; and after it, oldest first.
    before: list[StoredEvent]
    after: list[StoredEvent]
    #: Tokens: ``start`` paginates backwards from the oldest event read, ``end`` forwards.
    start: str
    end: str
    #: The newest event read (the state after it is the state at the end of the context).
    last: StoredEvent


def _auth_relevant(current: Mapping[StateKey, str], specs: Sequence[EventSpec]) -> set[str]:
    """The state events an event batch can need for auth (not every member of a big room)."""
    wanted = {"m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.third_party_invite"}
    users = {s.sender for s in specs} | {s.state_key for s in specs if s.type == "m.room.member" and s.state_key}
    return {e for (t, sk), e in current.items() if t in wanted or (t == "m.room.member" and sk in users)}


def client_event(pdu: PDU, now_ms: int) -> dict[str, Any]:
    """The client-server format of an event (ClientEvent)."""
    body: dict[str, Any] = {
        "content": pdu.content,
        "event_id": pdu.event_id,
        "origin_server_ts": pdu.origin_server_ts,
        "room_id": pdu.room_id,
        "sender": pdu.sender,
        "type": pdu.type,
        "unsigned": {k: v for k, v in pdu.unsigned.items() if k != "age_ts"},
    }
    body["unsigned"]["age"] = max(0, now_ms - pdu.origin_server_ts)
    if pdu.state_key is not None:
        body["state_key"] = pdu.state_key
    if pdu.redacts is not None:
        body["redacts"] = pdu.redacts  # also top-level for clients of rooms 11+
    return body

"""A batch of one room's events, with everything they change computed in memory, for
the events store to write in one transaction (``EventStore.persist_batch``).

This is the write API of the events store: local sends, a new room's first events and
the PDUs of a ``/send`` transaction all go through it. A caller adds events in order,
each with the state before it; the batch works out, in memory, the state groups (IDs
reserved ahead, so later events of the batch can refer to them), each event's state
after it, the room's current state and its changes at each event, and the forward
extremities. While it is being built, the batch answers for its events as the database
would once they are written (``meta``, ``pdu``, ``snapshot``), so that the next event
can be checked against them. Nothing is visible to anyone else until the transaction
commits; if it fails, nothing was written (the reserved group IDs are simply unused).

Spec background: rooms are DAGs of events with a state at each event
(https://spec.matrix.org/latest/server-server-api/#room-state-resolution); the "state
group" idea is in Synapse's documentation ("How do State Groups work?").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from federation.events import PDU

from .state import EMPTY_STATE, NewStateGroup, StateKey, StateSnapshot, StateStore


@dataclass
class PersistEvent:
    """One event of a batch, as it will be stored."""

    pdu: PDU
    #: The state after the event (for a rejected or non-state event, the state before it).
    state_after: StateSnapshot
    #: The event it replaces in the state (for ``prev_content``), if a state event.
    replaces_state: str | None = None
    rejected_reason: str | None = None
    soft_failed: bool = False
    #: The event this redaction applies to (checked by the caller).
    redaction_applies_to: str | None = None
    #: (user_id, device_id, txn_id) of the client request that created it.
    txn: tuple[str, str, str] | None = None
    #: Whether a row for it may exist as an outlier (replaced; False saves a statement).
    may_be_outlier: bool = False
    #: What it changes in the room's current state (a timeline event), recorded at its position.
    current_state_changes: dict[StateKey, str | None] = field(default_factory=dict)

    @property
    def timeline(self) -> bool:
        """Timeline events take 'events' positions; rejected and soft-failed ones do not."""
        return self.rejected_reason is None and not self.soft_failed


class EventBatch:
    """Events of one room to write together. ``head`` is the room's head position the
    batch builds on (the write fails with ``StaleHeadError`` if it moved), ``current``
    the room's current state then, ``extremities`` its forward extremities."""

    def __init__(self, state: StateStore, room_id: str, *, head: int, current: StateSnapshot = EMPTY_STATE,
                 extremities: Iterable[str] = ()):
        self._state = state
        self.room_id = room_id
        self.head = head
        self.current_before = current
        #: The room's current state and forward extremities once the events so far are in.
        self.current = current
        self.extremities: set[str] = set(extremities)
        #: The room's forward extremities are replaced, not extended (a join's event).
        self.replace_extremities = False
        self.events: list[PersistEvent] = []
        self.groups: list[NewStateGroup] = []
        self._by_id: dict[str, PersistEvent] = {}
        #: Prev events of the batch's timeline events.
        self._referenced: set[str] = set()
        self._snapshots: dict[int, StateSnapshot] = {}
        #: PDUs (not in the batch) of member events newly in the current state.
        self.state_events: dict[str, PDU] = {}

    def __len__(self) -> int:
        return len(self.events)

    @classmethod
    def prepared(cls, state: StateStore, room_id: str, *, head: int, current_before: StateSnapshot,
                 current: StateSnapshot, extremities: Iterable[str], replace_extremities: bool,
                 events: Iterable[PersistEvent], groups: Iterable[NewStateGroup],
                 state_events: Mapping[str, PDU]) -> "EventBatch":
        """A batch another process built, to write as it is (the room's event persister
        writing received events: ``gateway/services/event_persisters.py``)."""
        batch = cls(state, room_id, head=head, current=current_before, extremities=extremities)
        batch.current = current
        batch.replace_extremities = replace_extremities
        batch.groups = list(groups)
        batch.state_events = dict(state_events)
        for event in events:
            batch.events.append(event)
            batch._by_id[event.pdu.event_id] = event
        return batch

    # --- what the batch holds, as the database will -----------------------------------

    def get(self, event_id: str) -> PersistEvent | None:
        return self._by_id.get(event_id)

    def pdus(self, event_ids: Iterable[str]) -> dict[str, PDU]:
        """The batch's events among ``event_ids``."""
        return {e: self._by_id[e].pdu for e in event_ids if e in self._by_id}

    def snapshot(self, group: int | None) -> StateSnapshot | None:
        """A state group built by this batch (None if it is not one of them)."""
        return self._snapshots.get(group) if group is not None else None

    # --- building ----------------------------------------------------------------------

    async def new_group(self, *, event_id: str | None, prev: StateSnapshot, state: Mapping[StateKey, str],
                        delta: Mapping[StateKey, str | None]) -> StateSnapshot:
        """A new state group (the full map ``state``, which differs from ``prev`` by
        ``delta``) written with the batch."""
        new = await self._state.plan_state_group(room_id=self.room_id, event_id=event_id, prev=prev, state=state,
                                                 delta=delta)
        self.groups.append(new)
        self._snapshots[new.snapshot.group] = new.snapshot
        return new.snapshot

    async def state_group_for(self, state: Mapping[StateKey, str], base: StateSnapshot | None) -> StateSnapshot:
        """A new group for a state computed by resolution (no event's), as a delta
        against ``base`` (a close group; None: written in full)."""
        base = base or EMPTY_STATE
        delta: dict[StateKey, str | None] = {k: v for k, v in state.items() if base.state.get(k) != v}
        delta.update({k: None for k in base.state if k not in state})
        return await self.new_group(event_id=None, prev=base, state=state, delta=delta)

    async def add(
        self,
        pdu: PDU,
        *,
        before: StateSnapshot,
        rejected_reason: str | None = None,
        soft_failed: bool = False,
        redaction_applies_to: str | None = None,
        txn: tuple[str, str, str] | None = None,
        may_be_outlier: bool = False,
        new_current: Mapping[StateKey, str] | None = None,
        is_extremity: bool = True,
        state_events: Mapping[str, PDU] | None = None,
    ) -> PersistEvent:
        """Add the next event, whose state before it is ``before`` (a stored group or one
        of this batch's). A timeline event (neither rejected nor soft-failed) replaces
        its prev events among the forward extremities (and becomes one, unless
        ``is_extremity`` is False: a stored event already points at it, or an earlier
        event of the batch does) and moves the
        current state to ``new_current`` (None: the state after it, the case of a room
        that did not fork). ``state_events``: the PDUs of member events of
        ``new_current`` that are neither stored in the current state yet nor in the batch."""
        after, replaces = before, None
        if pdu.state_key is not None and rejected_reason is None:
            key = (pdu.type, pdu.state_key)
            replaces = before.state.get(key)
            state = dict(before.state)
            state[key] = pdu.event_id
            after = await self.new_group(event_id=pdu.event_id, prev=before, state=state, delta={key: pdu.event_id})
        event = PersistEvent(pdu, after, replaces, rejected_reason, soft_failed, redaction_applies_to, txn,
                             may_be_outlier)
        if event.timeline:
            current = self.current
            if new_current is None:
                new = after
                if before.group == current.group:  # linear: only the event's own change
                    changes: dict[StateKey, str | None] = {} if after is before else {
                        (pdu.type, pdu.state_key): pdu.event_id}  # type: ignore[dict-item]
                else:
                    changes = _diff(current.state, after.state)
            else:
                changes = _diff(current.state, new_current)
                if not changes:
                    new = current
                elif after.state == new_current:
                    new = after
                else:
                    new = await self.new_group(event_id=None, prev=current, state=new_current, delta=changes)
            event.current_state_changes = changes
            self.current = new
            if state_events:
                self.state_events.update((e, state_events[e]) for e in changes.values() if e in state_events)
            self.extremities.difference_update(pdu.prev_event_ids)
            self._referenced.update(pdu.prev_event_ids)
            if is_extremity and pdu.event_id not in self._referenced:
                self.extremities.add(pdu.event_id)
        self.events.append(event)
        self._by_id[pdu.event_id] = event
        return event


def _diff(old: Mapping[StateKey, str], new: Mapping[StateKey, str]) -> dict[StateKey, str | None]:
    """The changes from ``old`` to ``new`` (None: the key goes)."""
    changes: dict[StateKey, str | None] = {k: v for k, v in new.items() if old.get(k) != v}
    changes.update({k: None for k in old if k not in new})
    return changes

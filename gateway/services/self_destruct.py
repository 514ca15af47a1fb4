"""Self-destructing events (MSC2228, Synapse's ``enable_ephemeral_messages``): a message
whose content carries ``org.matrix.self_destruct_after`` (a timestamp, ms since the
epoch) has its content pruned, as by a redaction but with no redaction event, once that
time has passed: for messages of our users and those received from other servers alike.

https://github.com/matrix-org/matrix-spec-proposals/pull/2228

Every process that stores events writes the expiry of those that carry one; the process
that runs background tasks (gateway/roles.py) prunes them when due (looking again at
least every minute, for expiries that other processes wrote).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..storage.event_expiry import EventExpiryStore

log = logging.getLogger(__name__)

#: The content key (MSC2228's unstable name) and how often the pruner looks at least.
SELF_DESTRUCT_AFTER = "org.matrix.self_destruct_after"
POLL_MS = 60_000


def expiry_of(pdu: Any) -> int | None:
    """When the event is to self-destruct: an integer ``self_destruct_after`` of a
    non-state event (as Synapse reads it), else None."""
    value = pdu.content.get(SELF_DESTRUCT_AFTER)
    if pdu.is_state or isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


class SelfDestructingEvents:
    def __init__(self, *, db, events, clock_ms: Callable[[], int]):
        self.store = EventExpiryStore(db)
        self.events = events
        self.clock_ms = clock_ms
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        #: Writes of expiries in flight (new-event listeners are not awaited).
        self._writes: set[asyncio.Task] = set()

    def on_new_events(self, room_id: str, positions: Sequence[int]) -> None:
        """The EventsService listener: note the expiries of the new events."""
        task = asyncio.get_running_loop().create_task(self._note(list(positions)))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _note(self, positions: list[int]) -> None:
        try:
            for stored in await self.events.store.get_events_at_positions(positions):
                when = expiry_of(stored.pdu)
                if when is not None:
                    await self.store.add(stored.pdu.event_id, when)
                    self._wake.set()
        except Exception:
            log.exception("noting self-destructing events failed")

    async def flush(self) -> None:
        """Wait for the expiries being written (tests)."""
        while self._writes:
            await asyncio.wait(list(self._writes))

    async def expire_due(self) -> int:
        """Prune every event whose time has come; how many were."""
        done = 0
        while due := await self.store.due(self.clock_ms()):
            found = await self.events.store.get_events(due)
            for event_id in due:
                stored = found.get(event_id)
                await self.store.prune(event_id, stored.pdu.redacted() if stored is not None else None)
            self.events.forget_events(due)
            done += len(due)
        return done

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.expire_due()
                upcoming = await self.store.next_expiry()
            except Exception:
                log.exception("pruning self-destructing events failed")
                upcoming = None
            wait_ms = POLL_MS if upcoming is None else min(POLL_MS, max(0, upcoming - self.clock_ms()))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), wait_ms / 1000)
            except TimeoutError:
                pass

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

"""Wakes long-polling /sync requests when something they can see happens.

A waiting sync registers a ``Waiter`` for its user before it reads the streams; the
notifier marks it woken on a change for that user or, once the waiter knows its rooms,
for one of them. Changes that come before the rooms are known are remembered, so
nothing that happens between the read and the wait is lost. No polling: a waiter is an
``asyncio.Event``.

Feeds: new events (``EventsService.add_new_events_listener``), typing and receipts (per
room), account data (per user). With workers, every change fed here is also handed to
``publish`` (gateway/services/replication.py sends it over Redis) and other processes'
changes come back through ``apply_remote``, so a /sync waiting on any process wakes.

Spec: https://spec.matrix.org/latest/client-server-api/#syncing (the ``timeout``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge

if TYPE_CHECKING:
    from ..storage.sync import SyncStore

log = logging.getLogger(__name__)

#: Long-polling /sync requests parked, waiting for a change (Synapse: synapse_notifier_listeners).
WAITING = Gauge("gateway_notifier_waiting_syncs", "Long-polling /sync requests waiting for a change")


class Waiter:
    def __init__(self, notifier: "Notifier", user_id: str):
        self.notifier = notifier
        self.user_id = user_id
        self.rooms: frozenset[str] | None = None
        self.pending_rooms: set[str] = set()
        self.event = asyncio.Event()

    def set_rooms(self, rooms: Iterable[str]) -> None:
        """Route room changes from now on; wakes at once if one of them already changed."""
        self.notifier._route(self, frozenset(rooms))

    async def wait(self, timeout_s: float) -> bool:
        """True if woken, False on timeout."""
        if self.event.is_set():
            return True
        WAITING.inc()
        try:
            await asyncio.wait_for(self.event.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            WAITING.dec()

    def close(self) -> None:
        self.notifier._remove(self)

    def __enter__(self) -> "Waiter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Notifier:
    def __init__(self, sync_store: SyncStore):
        """``sync_store``: who a batch of membership events concerns."""
        self.sync_store = sync_store
        self._by_user: dict[str, set[Waiter]] = {}
        self._by_room: dict[str, set[Waiter]] = {}
        self._unrouted: set[Waiter] = set()
        self._member_range: tuple[int, int] | None = None
        self.closing = False
        self._member_task: asyncio.Task | None = None
        #: Called (no arguments) on every room or user change fed here (application
        #: services' ephemeral data: typing, receipts, presence, to-device, device lists).
        self.change_listeners: list[Callable[[], None]] = []
        #: Tells other processes of a change (a JSON-able dict); set by the replication.
        self.publish: Callable[[dict], None] | None = None
        #: ``listener(room_id, positions)`` for events another process stored (the
        #: federation sender on a worker wakes its distributor).
        self.remote_events_listeners: list[Callable[[str, Sequence[int]], None]] = []
        #: Called (no arguments) when other processes' changes may have been missed (every
        #: Redis subscription, the first included, and a publisher that lost messages): read
        #: the database again. A listener may be a coroutine function (run as a task).
        self.missed_listeners: list[Callable[[], Awaitable[None] | None]] = []
        self._missed_tasks: set[asyncio.Task] = set()
        #: Data other processes publish beside wake-ups (``publish_data``), by kind.
        self._data_handlers: dict[str, Callable[[Any], None]] = {}

    def waiter(self, user_id: str) -> Waiter:
        w = Waiter(self, user_id)
        self._by_user.setdefault(user_id, set()).add(w)
        self._unrouted.add(w)
        return w

    def _route(self, w: Waiter, rooms: frozenset[str]) -> None:
        for r in w.rooms or ():
            self._discard(self._by_room, r, w)
        w.rooms = rooms
        self._unrouted.discard(w)
        for r in rooms:
            self._by_room.setdefault(r, set()).add(w)
        if w.pending_rooms & rooms:
            w.event.set()
        w.pending_rooms.clear()

    @staticmethod
    def _discard(index: dict[str, set[Waiter]], key: str, w: Waiter) -> None:
        found = index.get(key)
        if found is not None:
            found.discard(w)
            if not found:
                del index[key]

    def _remove(self, w: Waiter) -> None:
        self._discard(self._by_user, w.user_id, w)
        for r in w.rooms or ():
            self._discard(self._by_room, r, w)
        self._unrouted.discard(w)

    # --- feeds ---------------------------------------------------------------------

    def notify_room(self, room_id: str) -> None:
        self._publish({"room": room_id})
        self.wake_room(room_id)

    def notify_users(self, user_ids: Iterable[str]) -> None:
        user_ids = list(user_ids)
        self._publish({"users": user_ids})
        self._wake_users(user_ids)

    def publish_data(self, kind: str, data: Any) -> None:
        """Hand ``data`` to the ``kind`` handler of every other process (state kept in
        memory, such as typing, that the database does not carry)."""
        self._publish({"kind": kind, "data": data})

    def on_data(self, kind: str, handler: Callable[[Any], None]) -> None:
        """``handler(data)`` for what other processes ``publish_data`` under ``kind``."""
        self._data_handlers[kind] = handler

    def apply_remote(self, change: dict) -> None:
        """A change another process published (the replication's subscriber calls this)."""
        if change.get("kind") is not None:
            handler = self._data_handlers.get(change["kind"])
            if handler is not None:
                handler(change.get("data"))
        elif change.get("positions") is not None:
            self._on_new_events(change["room"], change["positions"])
            for listener in self.remote_events_listeners:
                try:
                    listener(change["room"], change["positions"])
                except Exception:
                    log.exception("listener for other processes' events failed")
        elif change.get("room") is not None:
            self.wake_room(change["room"])
        elif change.get("users") is not None:
            self._wake_users(change["users"])

    def wake_all(self) -> None:
        """Every waiting sync reads the database again (after a Redis reconnection, when
        changes published meanwhile may have been missed)."""
        for waiters in self._by_user.values():
            for w in waiters:
                w.event.set()
        for listener in self.missed_listeners:
            try:
                result = listener()
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(self._run_missed(result))
                    self._missed_tasks.add(task)
                    task.add_done_callback(self._missed_tasks.discard)
            except Exception:
                log.exception("listener for missed changes failed")
        self._changed()

    @staticmethod
    async def _run_missed(work: Awaitable[None]) -> None:
        try:
            await work
        except Exception:
            log.exception("listener for missed changes failed")

    def _publish(self, change: dict) -> None:
        if self.publish is not None:
            try:
                self.publish(change)
            except Exception:
                log.exception("publishing a change to other processes failed")

    def wake_room(self, room_id: str) -> None:
        """Wake this process's syncs for the room, without telling the other processes."""
        for w in self._by_room.get(room_id, ()):
            w.event.set()
        for w in self._unrouted:
            w.pending_rooms.add(room_id)
        self._changed()

    def _wake_users(self, user_ids: Iterable[str]) -> None:
        for u in user_ids:
            for w in self._by_user.get(u, ()):
                w.event.set()
        self._changed()

    def _changed(self) -> None:
        for listener in self.change_listeners:
            try:
                listener()
            except Exception:
                log.exception("notifier change listener failed")

    def on_new_events(self, room_id: str, positions: Sequence[int]) -> None:
        """Listener for new events: wake the room's waiters now, and the users whose
        membership the events changed (an invitee is not in the room yet) after a
        lookup. Lookups are coalesced: one query covers every batch stored meanwhile."""
        self._publish({"room": room_id, "positions": list(positions)})
        self._on_new_events(room_id, positions)

    def _on_new_events(self, room_id: str, positions: Sequence[int]) -> None:
        self.wake_room(room_id)
        if not positions or not self._by_user:
            return
        lo, hi = min(positions), max(positions)
        if self._member_range is None:
            self._member_range = (lo, hi)
        else:
            self._member_range = (min(lo, self._member_range[0]), max(hi, self._member_range[1]))
        if self._member_task is None:
            self._member_task = asyncio.get_running_loop().create_task(self._wake_member_targets())

    async def _wake_member_targets(self) -> None:
        try:
            while self._member_range is not None:
                (first, last), self._member_range = self._member_range, None
                try:
                    targets = await self.sync_store.get_member_event_targets(first, last)
                except Exception:
                    log.exception("looking up membership changes for the notifier failed")
                    continue
                self._wake_users(targets)
        finally:
            self._member_task = None

    def shutdown(self) -> None:
        """The server is stopping: every waiting sync answers now with what it has
        (instead of holding the shutdown for its whole timeout)."""
        self.closing = True
        for waiters in self._by_user.values():
            for w in waiters:
                w.event.set()

    async def close(self) -> None:
        self.shutdown()
        if self._member_task is not None:
            self._member_task.cancel()
        for task in list(self._missed_tasks):
            task.cancel()
        await asyncio.gather(*self._missed_tasks, return_exceptions=True)

"""Purging a room's old history (Synapse's admin API: ``POST
/_synapse/admin/v1/purge_history/{roomId}[/{eventId}]`` and ``purge_history_status``).

The purge point is an event (kept, with every event as deep as it) or a time (the first
event this server received at or after it). Below it, the room's history is gone for clients:
messages of remote users are deleted, and of local users too with
``delete_local_events``; the state and the local users' messages are otherwise kept out
of the timeline (see gateway/storage/purge_history.py). The room's latest events stay,
so the room keeps working: new events, /sync and /messages (which then stops where the
history does, or backfills it again from the room's other servers).
https://element-hq.github.io/synapse/latest/admin_api/purge_history_api.html
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from ..http import Codes, MatrixError
from ..storage.purge_history import PurgeHistoryStore

log = logging.getLogger(__name__)

#: Finished purges are reported for this long (Synapse keeps them a day).
STATUS_KEEP_MS = 24 * 3600 * 1000


class PurgeHistoryService:
    def __init__(self, *, server_name: str, store: PurgeHistoryStore, events: Any,
                 forget: Iterable[Callable[[list[str]], None]], clock_ms: Callable[[], int]):
        """``events``: the events service (rooms, depths, room locks); ``forget``: what
        drops purged events from in-memory caches."""
        self.server_name = server_name
        self.store = store
        self.events = events
        self._forget = list(forget)
        self.clock_ms = clock_ms
        #: room ID -> the purge running there (one per room at a time).
        self._running: dict[str, asyncio.Task] = {}
        self._starting = asyncio.Lock()

    async def purge_point(self, room_id: str, *, event_id: str | None, before_ts: int | None) -> int:
        """The depth below which events go: the given event's, or that of the first event
        received at or after ``before_ts`` (as Synapse: what came before goes)."""
        store = self.events.store
        if event_id is not None:
            stored = await store.get_event(event_id)
            if stored is None or stored.outlier:
                raise MatrixError.not_found(f"Unknown event {event_id}")
            if stored.pdu.room_id != room_id:
                raise MatrixError(400, Codes.INVALID_PARAM, "Event is for wrong room.")
            return stored.pdu.depth
        assert before_ts is not None
        depth = await self.store.depth_before(room_id, before_ts)
        if depth is None:
            raise MatrixError.not_found("There is no event to purge before the given timestamp")
        return depth

    async def start(self, room_id: str, *, event_id: str | None, before_ts: int | None,
                    delete_local_events: bool) -> str:
        """Check the request, then purge in the background; the ``purge_id`` to follow it."""
        await self.events.get_room(room_id)
        async with self._starting:  # one purge per room: checked and registered together
            if room_id in self._running:
                raise MatrixError(400, Codes.UNKNOWN, f"History purge already in progress for {room_id}")
            depth = await self.purge_point(room_id, event_id=event_id, before_ts=before_ts)
            extremities = await self.events.store.get_forward_extremities(room_id)
            depths = await self.events.store.get_depths(extremities)
            if depths and max(depths.values()) < depth:  # the room must keep its latest event
                raise MatrixError(400, Codes.UNKNOWN, "Try purging less history")
            purge_id = secrets.token_urlsafe(12)
            now = self.clock_ms()
            await self.store.forget_tasks(now - STATUS_KEEP_MS)
            await self.store.add_task(purge_id, room_id, now)
            task = asyncio.get_running_loop().create_task(self._run(purge_id, room_id, depth, delete_local_events))
            self._running[room_id] = task
            task.add_done_callback(lambda _t: self._running.pop(room_id, None))
        return purge_id

    async def _run(self, purge_id: str, room_id: str, depth: int, delete_local_events: bool) -> None:
        try:
            deleted = await self.purge(room_id, depth, delete_local_events=delete_local_events)
        except Exception as e:  # the purge must end with a status, never silently
            log.exception("purging the history of %s failed", room_id)
            await self.store.finish_task(purge_id, self.clock_ms(), error=f"{type(e).__name__}: {e}")
        else:
            log.info("purged %d events of %s below depth %d", deleted, room_id, depth)
            await self.store.finish_task(purge_id, self.clock_ms())

    async def purge(self, room_id: str, depth: int, *, delete_local_events: bool) -> int:
        """Take the room's events below ``depth`` out of its timeline, deleting those the
        store says go; how many left the timeline."""
        plan = await self.store.events_to_purge(
            room_id, depth, local_server=None if delete_local_events else self.server_name)
        try:
            await self.store.delete_events(plan.delete)
            await self.store.hide_events(plan.hide)
        finally:
            for forget in self._forget:
                forget([*plan.delete, *plan.hide])
        return len(plan.delete) + len(plan.hide)

    async def status(self, purge_id: str) -> dict[str, Any]:
        task = await self.store.get_task(purge_id)
        if task is None:
            raise MatrixError.not_found("No such purge")
        status, error = task.status, task.error
        if status == "active" and task.room_id not in self._running:
            status, error = "failed", "The server restarted during the purge"
        return {"status": status, **({"error": error} if error is not None else {})}

"""Receipts and read markers.

``m.read`` and ``m.read.private`` are receipts (stored, shown in /sync as ``m.receipt``;
private ones only to their owner); ``m.fully_read`` is the read marker, kept as the
room's ``m.fully_read`` account data.

Federation hooks:
- ``add_listener(cb)``: ``cb(room_id, receipt_type, user_id, event_id, data)`` after a
  local user's public receipt is stored (``data`` has ``ts`` and maybe ``thread_id``);
  the federation sender turns it into an ``m.receipt`` EDU;
- ``on_remote_receipt(room_id, receipt_type, user_id, event_ids, data)``: store a
  receipt from an ``m.receipt`` EDU (checked by the caller).

Spec: https://spec.matrix.org/latest/client-server-api/#receipts and
https://spec.matrix.org/latest/client-server-api/#fully-read-markers
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..http import MatrixError
from ..storage.receipts import UNTHREADED, ReceiptRow, ReceiptStore

if TYPE_CHECKING:
    from .account_data import AccountDataService
    from .events import EventsService
    from .notifier import Notifier

log = logging.getLogger(__name__)

RECEIPT_TYPES = ("m.read", "m.read.private")
FULLY_READ = "m.fully_read"
#: Receipts only their owner sees.
PRIVATE_TYPES = ("m.read.private",)

ReceiptListener = Callable[[str, str, str, str, dict[str, Any]], None]


class ReceiptsService:
    def __init__(self, *, store: ReceiptStore, events: EventsService, account_data: AccountDataService,
                 notifier: Notifier, clock_ms: Callable[[], int]):
        """``events``: rooms, memberships and the events receipts point at;
        ``account_data``: where the read marker lives."""
        self.store = store
        self.events = events
        self.account_data = account_data
        self.notifier = notifier
        self.clock_ms = clock_ms
        self._listeners: list[ReceiptListener] = []

    def add_listener(self, listener: ReceiptListener) -> None:
        self._listeners.append(listener)

    async def _check_event(self, user_id: str, room_id: str, event_id: str) -> int:
        await self.events.get_room(room_id)
        member = await self.events.state.get_membership(room_id, user_id)
        if member is None or member.membership != "join":
            raise MatrixError.forbidden(f"You are not joined to {room_id}")
        stored = await self.events.store.get_event(event_id)
        if stored is None or stored.pdu.room_id != room_id or stored.outlier:
            raise MatrixError.not_found(f"Unknown event {event_id} in {room_id}")
        return stored.stream_ordering

    async def send_receipt(self, user_id: str, room_id: str, receipt_type: str, event_id: str,
                           thread_id: str | None) -> None:
        """A local user's receipt or read marker (POST /receipt)."""
        if receipt_type == FULLY_READ:
            if thread_id is not None:
                raise MatrixError.bad_json("m.fully_read takes no thread_id")
            await self.set_read_markers(user_id, room_id, fully_read=event_id)
            return
        if receipt_type not in RECEIPT_TYPES:
            raise MatrixError.bad_json(f"Unknown receipt type {receipt_type!r}")
        position = await self._check_event(user_id, room_id, event_id)
        await self._store(user_id, room_id, receipt_type, event_id, position, thread_id, local=True)

    async def set_read_markers(self, user_id: str, room_id: str, *, fully_read: str | None = None,
                               read: str | None = None, read_private: str | None = None) -> None:
        """POST /read_markers: any of the three, each checked before any is stored."""
        checked = {}
        for kind, event_id in ((FULLY_READ, fully_read), ("m.read", read), ("m.read.private", read_private)):
            if event_id is not None:
                checked[kind] = (event_id, await self._check_event(user_id, room_id, event_id))
        if FULLY_READ in checked:
            await self.account_data.put_room_internal(user_id, room_id, FULLY_READ,
                                                         {"event_id": checked[FULLY_READ][0]})
        for kind in RECEIPT_TYPES:
            if kind in checked:
                await self._store(user_id, room_id, kind, checked[kind][0], checked[kind][1], None, local=True)

    async def on_remote_receipt(self, room_id: str, receipt_type: str, user_id: str, event_ids: Sequence[str],
                                data: dict[str, Any]) -> None:
        """A receipt from another server's ``m.receipt`` EDU (unknown events are kept:
        the event may arrive later)."""
        if receipt_type not in RECEIPT_TYPES or receipt_type in PRIVATE_TYPES or not event_ids:
            return
        stored = await self.events.store.get_events(event_ids)
        # One receipt per (type, user, thread): the latest of the events we know.
        known = sorted((s.stream_ordering, eid) for eid, s in stored.items() if s.pdu.room_id == room_id)
        event_id, position = (known[-1][1], known[-1][0]) if known else (event_ids[-1], None)
        thread_id = data.get("thread_id") if isinstance(data.get("thread_id"), str) else None
        await self._store(user_id, room_id, receipt_type, event_id, position, thread_id, local=False,
                          ts=data.get("ts"))

    async def _store(self, user_id: str, room_id: str, receipt_type: str, event_id: str, position: int | None,
                     thread_id: str | None, *, local: bool, ts: Any = None) -> None:
        data: dict[str, Any] = {"ts": ts if isinstance(ts, int) else self.clock_ms()}
        if thread_id is not None:
            data["thread_id"] = thread_id
        stream_id = await self.store.put_receipt(
            room_id=room_id, receipt_type=receipt_type, user_id=user_id, thread_id=thread_id or UNTHREADED,
            event_id=event_id, event_stream_ordering=position, data=data,
        )
        if stream_id is None:
            return
        self.notifier.notify_room(room_id)
        if local and receipt_type not in PRIVATE_TYPES:
            for listener in self._listeners:
                try:
                    listener(room_id, receipt_type, user_id, event_id, data)
                except Exception:
                    log.exception("receipt listener failed")


def receipt_events(rows: Iterable[ReceiptRow], user_id: str) -> dict[str, dict[str, Any]]:
    """``m.receipt`` ephemeral events per room from receipt rows, private receipts of
    other users left out."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.receipt_type in PRIVATE_TYPES and r.user_id != user_id:
            continue
        content = out.setdefault(r.room_id, {"type": "m.receipt", "content": {}})["content"]
        content.setdefault(r.event_id, {}).setdefault(r.receipt_type, {})[r.user_id] = r.data
    return out

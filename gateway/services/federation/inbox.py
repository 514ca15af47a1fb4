"""Incoming federation transactions: limits, deduplication, PDUs per room in order,
EDUs to registered handlers.

Spec: https://spec.matrix.org/latest/server-server-api/#transactions and
https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv1sendtxnid

- At most 50 PDUs and 100 EDUs per transaction (else 400, nothing processed).
- One transaction per origin at a time, also across processes when inbound federation
  runs on several workers (the database's named lock ``txn:<origin>``); a transaction ID
  already answered gets the same answer again without being processed twice (answers
  kept a day, in the database).
- PDUs are grouped by room; each room's PDUs are processed in the order sent, rooms
  concurrently. The answer is given once every PDU is stored (or refused); when the
  room's event persister (a worker) cannot be reached, the transaction is answered 503
  and its answer not kept, so that the sender tries it again. A leave or
  ban ending a local user's invite or knock in a room we are not in goes to
  ``hs.federation_membership.take_out_of_band`` instead.
- EDUs go to ``hs.edu_handlers``: ``register(edu_type, async handler(origin, content))``;
  unknown types are ignored, a failing handler is logged and does not fail the rest.
  Room-scoped EDUs (typing, receipts) must honour server ACLs: handlers call
  ``await hs.federation_room_data.server_is_allowed(origin, room_id)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from ...http import Codes, MatrixError
from ...storage.transactions import ReceivedTransactionStore
from .receive import PersisterUnavailable, guess_event_id

log = logging.getLogger(__name__)

MAX_PDUS = 50
MAX_EDUS = 100
#: Rooms of one transaction processed at the same time.
ROOM_CONCURRENCY = 10

EduHandler = Callable[[str, Any], Awaitable[None]]


class EduHandlers:
    """The EDU registry: ``hs.edu_handlers.register("m.typing", handler)``."""

    def __init__(self) -> None:
        self._handlers: dict[str, EduHandler] = {}

    def register(self, edu_type: str, handler: EduHandler) -> None:
        self._handlers[edu_type] = handler

    async def dispatch(self, origin: str, edus: list[Any]) -> None:
        for edu in edus:
            if not isinstance(edu, dict):
                continue
            edu_type = edu.get("edu_type")
            handler = self._handlers.get(edu_type) if isinstance(edu_type, str) else None
            if handler is None:
                continue
            try:
                await handler(origin, edu.get("content"))
            except Exception:  # noqa: BLE001 - one bad EDU never fails the transaction
                log.exception("EDU handler for %s failed (from %s)", edu_type, origin)


class TransactionHandler:
    def __init__(self, hs, *, shared_locks: bool = False):
        """``shared_locks``: other processes take transactions too (workers)."""
        self.hs = hs
        self.store = ReceivedTransactionStore(hs.db)
        self.shared_locks = shared_locks
        self._origin_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, origin: str) -> contextlib.AbstractAsyncContextManager[Any]:
        if self.shared_locks:
            return self.hs.db.named_lock(f"txn:{origin}")
        lock = self._origin_locks.get(origin)
        if lock is None:
            lock = asyncio.Lock()
            self._origin_locks[origin] = lock
        return lock

    async def on_transaction(self, origin: str, txn_id: str, body: Any) -> dict[str, Any]:
        """Process one transaction from ``origin`` (authenticated) and return the answer."""
        if not isinstance(body, dict):
            raise MatrixError.bad_json("The transaction must be a JSON object")
        pdus = body.get("pdus", [])
        edus = body.get("edus", [])
        if not isinstance(pdus, list) or not isinstance(edus, list):
            raise MatrixError.bad_json("pdus and edus must be lists")
        if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
            raise MatrixError(400, Codes.BAD_JSON,
                              f"A transaction carries at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs")
        async with self._lock(origin):
            answered = await self.store.get_response(origin, txn_id)
            if answered is not None:
                return answered
            results = await self._process_pdus(origin, pdus)
            await self.hs.edu_handlers.dispatch(origin, edus)
            response = {"pdus": results}
            await self.store.set_response(origin, txn_id, response, self.hs.clock_ms())
            return response

    async def _process_pdus(self, origin: str, pdus: list[Any]) -> dict[str, dict]:
        results: dict[str, dict] = {}
        by_room: dict[str, list[dict]] = {}
        for pdu in pdus:
            room_id = pdu.get("room_id") if isinstance(pdu, dict) else None
            if not isinstance(room_id, str):
                event_id = guess_event_id(pdu, None)
                if event_id is not None:
                    results[event_id] = {"error": "The PDU has no room_id"}
                continue
            by_room.setdefault(room_id, []).append(pdu)
        sem = asyncio.Semaphore(ROOM_CONCURRENCY)
        fed_events = self.hs.federation_events

        async def one_room(room_id: str, room_pdus: list[dict]) -> None:
            async with sem:
                try:
                    # A rescinded invite or denied knock for a room we are not in is
                    # stored as the user's out-of-band membership; the rest as usual.
                    outcomes, rest = await self.hs.federation_membership.take_out_of_band(origin, room_id, room_pdus)
                    if rest:
                        outcomes += await fed_events.receive_pdus(origin, room_id, rest)
                except PersisterUnavailable:
                    raise  # a 503: nothing acknowledged, the sender tries again
                except Exception as e:  # noqa: BLE001 - never a stack trace to the sender
                    log.exception("processing PDUs of %s from %s failed", room_id, origin)
                    for p in room_pdus:
                        eid = guess_event_id(p, None)
                        if eid is not None:
                            results[eid] = {"error": f"Internal error: {type(e).__name__}"}
                    return
            for outcome in outcomes:
                if outcome.event_id is None:
                    continue
                if outcome.error is not None:
                    results[outcome.event_id] = {"error": outcome.error}
                else:
                    # Stored: accepted, soft-failed or rejected alike. A rejected PDU was
                    # handled (kept as rejected, as the auth rules say), so like Synapse we
                    # answer {}: senders (SyTest's among them) treat an error as a failed
                    # delivery, and there is nothing for them to retry. The reason is logged.
                    if outcome.rejected is not None:
                        log.info("rejected PDU %s from %s: %s", outcome.event_id, origin, outcome.rejected)
                    results[outcome.event_id] = {}

        await asyncio.gather(*(one_room(r, p) for r, p in by_room.items()))
        return results

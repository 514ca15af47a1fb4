"""Sending to other servers: per-destination transaction queues, retries with exponential
backoff, catch-up after an outage, and EDUs.

Spec: server-server API, "Transactions" (``PUT /_matrix/federation/v1/send/{txnId}``) and
"PDUs": https://spec.matrix.org/latest/server-server-api/#transactions

How it works:

- The *distributor* reads new timeline events from the database in batches (from its
  position in ``federation_sender_position``), keeps ours, and works out each event's
  destinations: the servers with a joined member in the room *at that event* (current
  memberships rolled back through ``current_state_deltas``), plus the server of a remote
  user whose membership the event changes (an invite, kick or ban). It records per
  (destination, room) the newest position (``destination_rooms``) and its own new
  position in one transaction, then hands the events to the destinations' queues. The
  new-events listener only wakes it; a restart resumes from the stored position.
- Each destination has one worker, so one transaction is in flight at a time: at most
  50 PDUs and 100 EDUs. After a success ``last_successful_stream_ordering`` moves on.
- A destination that fails gets ``retry_interval`` (min, then times the multiplier, up to
  the max, with jitter) and drops its in-memory PDUs: it is now *catching up*. When the
  wait is over (a timer), or when the server contacts us (``on_inbound_request``), or an
  admin resets it, the worker reads from ``destination_rooms`` the rooms it missed. If
  only a few events are missing (at most one transaction's worth, after the server's
  join), they are sent in order; otherwise only the newest event of each room, and the
  receiver fills the gap itself with ``/get_missing_events`` (as the spec intends).
- Several senders (``federation_sender_instances``, issue 18): each destination belongs
  to one of them (``instance_for``: a hash of its server name, the same on every
  process). Every sender's distributor reads all new events, from a position of its own,
  and keeps only its destinations. An EDU made on another process (typing and receipts on
  the main process, to-device messages, device lists, presence) is handed to the
  destination's sender over Redis (``forward``, set by the wiring); an EDU for every
  server of a room goes to every sender, each sending it to its own destinations.
- Typing EDUs live in memory only: lost on a restart, dropped when a destination fails.
  To-device messages, device list updates, receipts and presence are also kept in the
  database (``device_federation_outbox``) until a transaction carrying them succeeds
  (``edus_sent_hooks``; receipts and presence here) and queued again when the sender
  starts or may have missed some (``started_hooks``, ``hs.e2e_keys.resend_outbox``). A
  receipt or presence change is kept by the process that makes it, for the servers it
  goes to, before it is handed to their senders; a newer receipt of the same user, type
  and thread, or a newer presence of the user, replaces it. Presence is dropped from
  memory while a destination backs off, and queued again from the database once it
  answers.
  Local typing changes and public receipts (``hs.typing`` / ``hs.receipts`` listeners)
  become ``m.typing`` / ``m.receipt`` EDUs to the room's other servers.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import random
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import Counter

from federation.net.client import FederationRequestError
from federation.signing import quote_path_segment
from federation.transactions import (
    EPHEMERAL_EDU_TYPES,
    MAX_EDUS_PER_TRANSACTION,
    MAX_PDUS_PER_TRANSACTION,
    EduQueue,
    RetryPolicy,
    build_transaction,
    pdu_errors,
)

from ...config.workers import instance_for
from ...storage.destinations import (
    DestinationRow,
    DestinationStore,
    KeptEduStore,
    MemberDelta,
    NewEventRow,
    receipt_key,
)

log = logging.getLogger(__name__)

#: Transactions a destination took from this process (with several senders, each
#: destination's count grows on its sender only).
SENT_TRANSACTIONS = Counter("gateway_federation_sent_transactions", "Transactions a destination took, per destination",
                            ["destination"])

#: Events read per distributor batch.
BATCH_SIZE = 500
#: A destination holding more PDUs than this in memory switches to catch-up (bounded memory).
MAX_PENDING_PDUS = 1000
#: Transactions in flight at once, over all destinations.
MAX_CONCURRENT_TRANSACTIONS = 100
#: Catch-up sends all missed events of a room only if there are at most this many.
CATCH_UP_REPLAY_LIMIT = MAX_PDUS_PER_TRANSACTION


#: How often a process that is not a destination's sender checks, when the destination
#: contacts it, whether its sender should hear that it is up (ms).
UP_CHECK_INTERVAL_MS = 10_000

#: Rooms whose joined servers the distributor keeps counted in memory.
ROOM_SERVERS_CACHE_SIZE = 5000


def server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


class _RoomServers:
    """Joined members of a room counted per server, as of a stream position."""

    __slots__ = ("position", "counts")

    def __init__(self, position: int, counts: dict[str, int]):
        self.position = position
        self.counts = counts

    def apply(self, server: str, change: int) -> None:
        if change:
            self.counts[server] = self.counts.get(server, 0) + change

    def servers(self, allowed: Callable[[str], bool]) -> frozenset[str]:
        return frozenset(s for s, n in self.counts.items() if n > 0 and allowed(s))


class _DestinationQueue:
    """What is waiting for one destination, its retry state, and its worker task."""

    def __init__(self, sender: "FederationSender", destination: str):
        self.sender = sender
        self.destination = destination
        self.pdus: list[tuple[int, str]] = []  # (stream position, event ID), in order
        self.edus = EduQueue()
        self.catching_up = False
        #: Events arrived while catching up (they are in the database: look again).
        self.missed = False
        self.retry_last_ts = 0
        self.retry_interval = 0
        self.failure_ts: int | None = None
        self.task: asyncio.Task | None = None
        self.timer: asyncio.TimerHandle | None = None

    # --- state ---------------------------------------------------------------------

    def set_retry(self, row: DestinationRow | None) -> None:
        if row is not None:
            self.retry_last_ts, self.retry_interval, self.failure_ts = (
                row.retry_last_ts, row.retry_interval, row.failure_ts)

    def retry_at(self) -> int | None:
        """When the destination may be tried again, if it is backing off."""
        return self.retry_last_ts + self.retry_interval if self.retry_interval > 0 else None

    def backing_off(self) -> bool:
        at = self.retry_at()
        return at is not None and self.sender.hs.clock_ms() < at

    def has_work(self) -> bool:
        return self.catching_up or bool(self.pdus) or len(self.edus) > 0

    # --- feeding ---------------------------------------------------------------------

    def add_pdus(self, items: Sequence[tuple[int, str]]) -> None:
        if self.catching_up or self.backing_off():
            self.catching_up = True
            self.missed = True
            self.pdus.clear()
        else:
            self.pdus.extend(items)
            if len(self.pdus) > MAX_PENDING_PDUS:
                log.info("%s: %d PDUs waiting; switching to catch-up", self.destination, len(self.pdus))
                self.pdus.clear()
                self.catching_up = True
        self.wake()

    def wake(self) -> None:
        if self.sender.stopped or not self.sender.started:
            return
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name=f"federation-sender:{self.destination}")

    # --- the worker ------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                at = self.retry_at()
                now = self.sender.hs.clock_ms()
                if at is not None and now < at:
                    if self.has_work():
                        if self.pdus:
                            self.pdus.clear()
                            self.catching_up = True
                        self._schedule(at - now)
                    return
                if self.catching_up:
                    progress = await self._catch_up_once()
                    if progress is None or progress:
                        continue  # failed (backing off now) or sent something: look again
                    if self.missed:
                        continue
                    self.catching_up = False
                if not self.pdus and not len(self.edus):
                    return
                batch = self.pdus[:MAX_PDUS_PER_TRANSACTION]
                del self.pdus[:MAX_PDUS_PER_TRANSACTION]
                edus = self.edus.take(MAX_EDUS_PER_TRANSACTION)
                pdus = await self.sender.hs.events.get_pdus([e for _, e in batch])
                ok = await self._transmit([pdus[e] for _, e in batch if e in pdus], edus)
                if ok:
                    if batch:
                        await self.sender.store.set_last_successful(self.destination, batch[-1][0])
                else:
                    self.pdus.clear()
                    self.catching_up = True
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("federation sender for %s failed; trying again later", self.destination)
            self.catching_up = True
            self._schedule(max(1000, self.sender.retry.min_interval_ms))

    def _schedule(self, delay_ms: int) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(max(0, delay_ms) / 1000, self._timer_fired)

    def _timer_fired(self) -> None:
        self.timer = None
        self.wake()

    async def _catch_up_once(self) -> bool | None:
        """Send one transaction of what the destination missed, from the database.
        True: sent; False: nothing is missing; None: the destination failed."""
        sender = self.sender
        self.missed = False
        row = await sender.store.get_destination(self.destination)
        after = (row.last_successful_stream_ordering if row else None) or 0
        rooms = await sender.store.get_catch_up_rooms(self.destination, after, MAX_PDUS_PER_TRANSACTION)
        if not rooms:
            return False
        upto = max(p for _, p in rooms)
        event_ids = await sender.catch_up_events(self.destination, after, rooms)
        pdus = await sender.hs.events.get_pdus(event_ids)
        if not pdus:  # those rooms' events are gone (a purge): nothing to send for them
            await sender.store.set_last_successful(self.destination, upto)
            return True
        edus = self.edus.take(MAX_EDUS_PER_TRANSACTION)
        log.info("%s: catching up %d room(s) with %d event(s)", self.destination, len(rooms), len(pdus))
        if not await self._transmit([pdus[e] for e in event_ids if e in pdus], edus):
            return None
        await sender.store.set_last_successful(self.destination, upto)
        return True

    async def _transmit(self, pdus: Sequence[Any], edus: Sequence[tuple[Hashable, dict[str, Any]]]) -> bool:
        """Send one transaction. False (and the retry state updated) if the destination
        could not take it; EDUs worth resending go back in the queue then."""
        sender = self.sender
        txn_id = sender.next_txn_id()
        body = build_transaction(sender.hs.server_name, sender.hs.clock_ms(), [p.get_pdu_json() for p in pdus],
                                 [e for _, e in edus])
        path = f"/_matrix/federation/v1/send/{quote_path_segment(txn_id)}"
        try:
            async with sender.concurrency:
                response = await sender.hs.federation_client.request("PUT", self.destination, path, content=body)
        except FederationRequestError as e:
            retryable = e.status is None or e.status >= 500 or e.status in (408, 429)
            if retryable:
                await self._failed(str(e))
                self.edus.put_back(edus)
                return False
            # The server answered but refuses this transaction: resending will not help.
            log.warning("%s refused transaction %s (%d PDUs): %s", self.destination, txn_id, len(pdus), e)
            await self._succeeded()
            await self._edus_sent(edus)
            return True
        for event_id, error in pdu_errors(response).items():
            log.info("%s rejected %s: %s", self.destination, event_id, error)
        SENT_TRANSACTIONS.labels(self.destination).inc()
        await self._succeeded()
        await self._edus_sent(edus)
        return True

    async def _edus_sent(self, edus: Sequence[tuple[Hashable, dict[str, Any]]]) -> None:
        if not edus:
            return
        kept = [(slot[2], e["content"]) for slot, e in edus if e["edu_type"] in KEPT_HERE
                and isinstance(slot, tuple) and slot[0] == "k" and isinstance(slot[2], str)]
        if kept:
            try:
                await self.sender.kept.forget(self.destination, kept)
            except Exception:
                log.exception("forgetting the EDUs %s took failed", self.destination)
        for hook in self.sender.edus_sent_hooks:
            try:
                await hook(self.destination, [e for _, e in edus])
            except Exception:
                log.exception("EDUs-sent hook failed for %s", self.destination)

    async def _failed(self, reason: str) -> None:
        now = self.sender.hs.clock_ms()
        interval = self.sender.retry.next_interval(self.retry_interval, random.uniform(0.8, 1.2))
        self.retry_last_ts, self.retry_interval = now, interval
        self.failure_ts = self.failure_ts or now
        self.edus.drop_ephemeral()
        log.info("%s unreachable (%s); next try in %d ms", self.destination, reason, interval)
        await self.sender.store.set_retry_timings(self.destination, retry_last_ts=now, retry_interval=interval,
                                                  failure_ts=self.failure_ts)

    async def _succeeded(self) -> None:
        if self.retry_interval or self.retry_last_ts or self.failure_ts is not None:
            self.reset_retry()
            await self.sender.store.reset_retry_timings(self.destination)
            log.info("%s is reachable again", self.destination)
            # Presence dropped while it backed off: the newest kept per user.
            for key, content in await self.sender.kept.get(self.destination, "m.presence"):
                self.sender._queue_edu(self.destination, "m.presence", content, key)

    def reset_retry(self) -> None:
        self.retry_last_ts, self.retry_interval, self.failure_ts = 0, 0, None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class FederationSender:
    """``hs.federation_sender``. Started by the server process (``start``); until then
    ``send_edu`` does nothing and new events wait in the database."""

    def __init__(self, hs, *, retry: RetryPolicy | None = None, batch_size: int = BATCH_SIZE,
                 instance_name: str = "main", sender_instances: Sequence[str] = ()):
        """``sender_instances``: the processes that send (every process is told the same
        list); each destination has one of them (``owner_of``). Empty: this process
        sends to every destination once started."""
        self.hs = hs
        self.instance_name = instance_name
        self.sender_instances = tuple(sender_instances)
        #: Hands a message to the other processes (their ``on_forwarded``); set by the
        #: wiring when there is Redis. Without it, EDUs for another sender's destinations
        #: are dropped.
        self.forward: Callable[[dict[str, Any]], None] | None = None
        self.store = DestinationStore(hs.db)
        self.kept = KeptEduStore(hs.db)
        #: Local receipts to keep for their rooms' servers, then send (in order, one task).
        self._receipts: deque[tuple[str, dict[str, Any], str]] = deque()
        self._receipt_task: asyncio.Task | None = None
        fed = hs.config.federation
        self.retry = retry or RetryPolicy(fed.destination_min_retry_interval_ms, fed.destination_max_retry_interval_ms,
                                          fed.destination_retry_multiplier)
        self.batch_size = batch_size
        self.concurrency = asyncio.Semaphore(MAX_CONCURRENT_TRANSACTIONS)
        self.started = False
        self.stopped = False
        self._queues: dict[str, _DestinationQueue] = {}
        self._wake = asyncio.Event()
        self._distributor: asyncio.Task | None = None
        self._position = 0
        #: Events up to here were routed by this sender before it restarted (sharded).
        self._replay_upto = 0
        #: Positions of senders no longer in the list, forgotten once routed past.
        self._removed: dict[str, int] = {}
        self._room_servers: OrderedDict[str, _RoomServers] = OrderedDict()
        # Transaction IDs differ between senders (they share the origin: a destination
        # that moves to another sender, or two started in the same millisecond, must not
        # see an ID again and answer from its record of the old transaction).
        self._txn_prefix = str(hs.clock_ms()) if len(self.sender_instances) <= 1 else \
            f"{hs.clock_ms()}{hashlib.sha256(instance_name.encode()).hexdigest()[:6]}"
        self._txn_counter = itertools.count(1)
        self._background: set[asyncio.Task] = set()
        #: ``async hook(destination, edus)`` after a destination took a transaction with
        #: these EDUs (e.g. to forget a stored to-device message), and ``async hook()`` once
        #: the sender has started (e.g. to queue again what a restart lost).
        self.edus_sent_hooks: list[Callable[[str, list[dict[str, Any]]], Awaitable[None]]] = []
        self.started_hooks: list[Callable[[], Awaitable[None]]] = []
        #: EDUs for every server in a room, fanned out in order by one task.
        self._room_edus: asyncio.Queue[tuple[str, str, dict[str, Any], Hashable]] = asyncio.Queue()
        self._room_edu_task: asyncio.Task | None = None
        #: When this process last looked whether another sender's destination that
        #: contacted us was backing off (``on_inbound_request``).
        self._up_checked: dict[str, int] = {}

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Resume: destinations backing off keep their wait, those with a backlog catch up,
        events not yet distributed are read from the stored position."""
        if self.started:
            return
        self.started = True
        self._position = await self.store.get_sender_position(self._position_key)
        if self._position_key is not None:
            await self._resume_shard()
        for row in await self.store.get_backing_off():
            if self.owns(row.destination):
                self._queue(row.destination).set_retry(row)
        for destination in await self.store.get_destinations_with_backlog():
            if self.owns(destination):
                q = self._queue(destination)
                q.catching_up = True
                q.wake()
        self.hs.events.add_new_events_listener(self._on_new_events)
        self._distributor = asyncio.create_task(self._distribute_loop(), name="federation-sender-distributor")
        self._room_edu_task = asyncio.create_task(self._room_edu_loop(), name="federation-sender-room-edus")
        self._wake.set()
        for hook in self.started_hooks:
            try:
                await hook()
            except Exception:
                log.exception("federation sender start hook failed")

    async def _resume_shard(self) -> None:
        """One of several senders: start from the slowest sender's position (a
        destination this one owns now may have been another's, which had not routed as
        far), sending the events up to its own old position only to destinations that
        have not taken them (``last_successful_stream_ordering``); the positions of
        senders no longer in the list are forgotten once this one has routed past them."""
        positions = await self.store.get_instance_positions()
        own = positions.get(self.instance_name)
        if own is None or not positions:
            return
        self._replay_upto = own
        self._position = min(positions.values())
        self._removed = {i: p for i, p in positions.items() if i not in self.sender_instances}
        if self._position < own:
            log.info("federation sender %s: routing events %d..%d again for destinations that moved here",
                     self.instance_name, self._position, own)

    async def stop(self) -> None:
        self.stopped = True
        tasks = [t for t in [self._distributor, self._room_edu_task, self._receipt_task,
                             *(q.task for q in self._queues.values()),
                             *self._background] if t]
        for q in self._queues.values():
            if q.timer is not None:
                q.timer.cancel()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_new_events(self, room_id: str, stream_orderings: Sequence[int]) -> None:
        self._wake.set()

    def notify_new_events(self) -> None:
        """Look for new events now (for writers that do not go through the events service)."""
        self._wake.set()

    # --- shards ------------------------------------------------------------------------

    @property
    def _position_key(self) -> str | None:
        """The instance whose position the distributor keeps: None for a single sender."""
        return self.instance_name if len(self.sender_instances) > 1 else None

    def owner_of(self, destination: str) -> str:
        """The instance that sends to ``destination`` (``instance_for``)."""
        if not self.sender_instances:
            return self.instance_name
        return instance_for(destination, self.sender_instances)

    def owns(self, destination: str) -> bool:
        return self.owner_of(destination) == self.instance_name

    def _sends_to(self, destination: str) -> bool:
        return self._may_send_to(destination) and self.owns(destination)

    def _forward_to(self, message: dict[str, Any]) -> None:
        if self.forward is not None:
            self.forward(message)
        else:
            log.warning("federation sender: no Redis to reach %s; dropping %s", message.get("to", "the senders"),
                        message.get("op"))

    def on_forwarded(self, message: Any) -> None:
        """What another process handed to the senders (``forward``): an EDU for one of
        our destinations, a room's EDU, or news that a destination is up again."""
        if not isinstance(message, dict) or message.get("to", self.instance_name) != self.instance_name:
            return
        if not self.started or self.stopped:
            return
        op = message.get("op")
        try:
            if op == "edu" and self._sends_to(message["destination"]):
                self._queue_edu(message["destination"], message["edu_type"], message["content"],
                                _key_from_json(message.get("key")))
            elif op == "room_edu":
                self._room_edus.put_nowait((message["room_id"], message["edu_type"], message["content"],
                                            _key_from_json(message.get("key"))))
            elif op == "up" and self.owns(message["destination"]):
                self.on_inbound_request(message["destination"])
            elif op == "reset" and self.owns(message["destination"]):
                q = self._queue(message["destination"])
                q.reset_retry()
                q.catching_up = True
                q.wake()
        except (KeyError, TypeError):
            log.warning("federation sender: ignoring a malformed forwarded message %r", message)

    def next_txn_id(self) -> str:
        return f"{self._txn_prefix}_{next(self._txn_counter)}"

    def _queue(self, destination: str) -> _DestinationQueue:
        q = self._queues.get(destination)
        if q is None:
            q = self._queues[destination] = _DestinationQueue(self, destination)
        return q

    def may_send_to(self, destination: str) -> bool:
        """Not our own name, and allowed by ``federation_domain_whitelist``."""
        return self._may_send_to(destination)

    def _may_send_to(self, destination: str) -> bool:
        if destination == self.hs.server_name or not destination:
            return False
        whitelist = self.hs.config.federation.federation_domain_whitelist
        return whitelist is None or destination in whitelist

    # --- EDUs and room destinations (for typing, receipts, presence, to-device) ---------

    def send_edu(self, destination: str, edu_type: str, content: Mapping[str, Any],
                 key: Hashable | None = None) -> None:
        """Queue an EDU for ``destination`` (sent with the next transaction, soon). With a
        ``key``, it replaces a queued EDU of the same type and key (e.g. key=room_id for
        m.typing). Nothing happens for our own name, a server outside
        ``federation_domain_whitelist``, or before ``start``; typing and presence for a
        server that is backing off are dropped. Another sender's destination: handed to it."""
        if not self._may_send_to(destination):
            return
        owner = self.owner_of(destination)
        if owner != self.instance_name:
            self._forward_to({"to": owner, "op": "edu", "destination": destination, "edu_type": edu_type,
                              "content": dict(content), "key": _key_to_json(key)})
            return
        self._queue_edu(destination, edu_type, content, key)

    def _queue_edu(self, destination: str, edu_type: str, content: Mapping[str, Any], key: Hashable | None) -> None:
        if not self.started or self.stopped:
            return
        q = self._queue(destination)
        if edu_type in EPHEMERAL_EDU_TYPES and q.backing_off():
            return
        q.edus.add(edu_type, content, key)
        q.wake()

    def send_edu_to_servers(self, destinations: Iterable[str], edu_type: str, content: Mapping[str, Any],
                            key: Hashable | None = None) -> None:
        for d in destinations:
            self.send_edu(d, edu_type, content, key)

    async def joined_servers(self, room_id: str) -> set[str]:
        """Other servers with a joined member in the room now (our own name excluded);
        in a partial-state room also those of ``servers_in_room``."""
        partial = (await self.hs.partial_state.servers_for([room_id])).get(room_id, frozenset())
        return {s for s in {*await self.store.get_joined_servers(room_id), *partial} if self._may_send_to(s)}

    def send_edu_to_room(self, room_id: str, edu_type: str, content: Mapping[str, Any],
                         key: Hashable | None = None) -> None:
        """Queue an EDU for every other server in the room (``joined_servers`` at the time
        it is sent out); EDUs given here go out in the order given. With several senders,
        each gets it and sends it to its own destinations."""
        if self.started and not self.stopped:
            self._room_edus.put_nowait((room_id, edu_type, dict(content), key))
        if any(i != self.instance_name for i in self.sender_instances):
            self._forward_to({"op": "room_edu", "room_id": room_id, "edu_type": edu_type, "content": dict(content),
                              "key": _key_to_json(key)})

    async def _room_edu_loop(self) -> None:
        while True:
            room_id, edu_type, content, key = await self._room_edus.get()
            try:
                for d in await self.joined_servers(room_id):
                    if self.owns(d):
                        self._queue_edu(d, edu_type, content, key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("federation sender: could not send %s to the servers of %s", edu_type, room_id)

    def on_local_typing(self, room_id: str, user_id: str, typing: bool) -> None:
        """``m.typing``: https://spec.matrix.org/latest/server-server-api/#typing-notifications"""
        self.send_edu_to_room(room_id, "m.typing", {"room_id": room_id, "user_id": user_id, "typing": typing},
                              key=(room_id, user_id))

    def on_local_receipt(self, room_id: str, receipt_type: str, user_id: str, event_id: str,
                          data: Mapping[str, Any]) -> None:
        """``m.receipt``: https://spec.matrix.org/latest/server-server-api/#receipts"""
        content = {room_id: {receipt_type: {user_id: {"data": dict(data), "event_ids": [event_id]}}}}
        if self.stopped or not self.federates():
            return
        self._receipts.append((room_id, content, receipt_key(room_id, receipt_type, user_id, data.get("thread_id"))))
        if self._receipt_task is None or self._receipt_task.done():
            self._receipt_task = asyncio.get_running_loop().create_task(self._keep_receipts(),
                                                                        name="federation-sender-receipts")

    def federates(self) -> bool:
        """Whether some process sends to other servers (this one, started, or the
        configured senders): else nothing is kept for them."""
        return self.started or bool(self.sender_instances)

    async def keep_and_send(self, destinations: Iterable[str], edu_type: str, content: Mapping[str, Any],
                            key: str) -> None:
        """Keep the EDU for each destination until it took it (a newer one with the same
        key replaces it), then queue it for them (``send_edu``)."""
        destinations = sorted(d for d in destinations if self._may_send_to(d))
        await self.kept.keep([(d, key, edu_type, content) for d in destinations], self.hs.clock_ms())
        self.send_edu_to_servers(destinations, edu_type, content, key)

    async def _keep_receipts(self) -> None:
        """Keep each receipt for the room's servers until they took it (a sender that was
        down or restarts sends it then), then hand it to the senders."""
        while self._receipts:
            room_id, content, key = self._receipts.popleft()
            try:
                servers = sorted(await self.joined_servers(room_id))
                await self.kept.keep([(d, key, "m.receipt", content) for d in servers], self.hs.clock_ms())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("federation sender: could not keep a receipt of %s", room_id)
            self.send_edu_to_room(room_id, "m.receipt", content, key=key)

    # --- backoff reset ---------------------------------------------------------------

    def on_inbound_request(self, origin: str) -> None:
        """A server just made a signed request to us: it is up. If we were backing off from
        it, forget that and send what it missed now. Cheap when it was not backing off.
        Another sender's destination: that sender is told, if the database says it is
        backing off."""
        owner = self.owner_of(origin)
        if owner != self.instance_name:
            if self.forward is not None and not self.stopped:
                self._spawn(self._tell_up(owner, origin))
            return
        q = self._queues.get(origin)
        if q is None or not (q.retry_interval or q.failure_ts is not None) or self.stopped:
            return
        q.reset_retry()
        q.catching_up = True
        task = asyncio.create_task(self._reset_and_wake(q))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reset_and_wake(self, q: _DestinationQueue) -> None:
        try:
            await self.store.reset_retry_timings(q.destination)
        finally:
            q.wake()

    async def _tell_up(self, owner: str, origin: str) -> None:
        now = self.hs.clock_ms()
        if self._up_checked.get(origin, 0) > now - UP_CHECK_INTERVAL_MS:
            return
        self._up_checked[origin] = now
        if len(self._up_checked) > 10000:
            self._up_checked.clear()
        row = await self.store.get_destination(origin)
        if row is not None and (row.retry_interval or row.failure_ts is not None):
            self._forward_to({"to": owner, "op": "up", "destination": origin})

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def reset_connection(self, destination: str) -> None:
        """Admin: forget the destination's failures and try it again now."""
        await self.store.reset_retry_timings(destination)
        owner = self.owner_of(destination)
        if owner != self.instance_name:
            self._forward_to({"to": owner, "op": "reset", "destination": destination})
            return
        q = self._queue(destination)
        q.reset_retry()
        q.catching_up = True
        q.wake()

    def is_backing_off(self, destination: str) -> bool:
        q = self._queues.get(destination)
        return q is not None and q.backing_off()

    # --- the distributor -------------------------------------------------------------

    async def _distribute_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while await self._distribute_batch():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("federation sender: distributing new events failed; trying again soon")
                self._room_servers.clear()  # it may have moved past the batch that failed
                await asyncio.sleep(1)
                self._wake.set()

    async def _distribute_batch(self) -> bool:
        """Route one batch of new events; True if there may be more."""
        rows = await self.store.get_new_events(self._position, self.batch_size)
        if not rows:
            return False
        new_position = rows[-1].stream_ordering
        ours = [r for r in rows if server_of(r.sender) == self.hs.server_name]
        per_destination: dict[str, list[tuple[int, str]]] = {}
        destination_rooms: dict[tuple[str, str], int] = {}
        if ours:
            for event, servers in await self._destinations_of(ours, rows):
                for d in servers:
                    per_destination.setdefault(d, []).append((event.stream_ordering, event.event_id))
                    destination_rooms[(d, event.room_id)] = event.stream_ordering
        log.debug("routed events %d..%d (%d ours) to %s", rows[0].stream_ordering, new_position, len(ours),
                  {d: len(v) for d, v in per_destination.items()})
        if rows[0].stream_ordering <= self._replay_upto and per_destination:
            # Routed before by this sender: only what a destination has not taken.
            taken = await self.store.get_destinations(per_destination)
            for d in list(per_destination):
                done = taken[d].last_successful_stream_ordering if d in taken else None
                if done is not None:
                    per_destination[d] = [item for item in per_destination[d] if item[0] > done]
        await self.store.save_batch(new_position, destination_rooms, self._position_key)
        self._position = new_position
        if self._removed and new_position >= max(self._removed.values()):
            await self.store.delete_instance_positions(list(self._removed))
            self._removed = {}
        for d, items in per_destination.items():
            if items:
                self._queue(d).add_pdus(items)
        return len(rows) >= self.batch_size

    async def _destinations_of(self, ours: Sequence[NewEventRow],
                               batch: Sequence[NewEventRow]) -> list[tuple[NewEventRow, frozenset[str]]]:
        """Each event's destinations: servers with a joined member after the event, plus the
        server of a remote user whose membership the event changes (but for an invite,
        which went through /invite).

        Per room, joined members are counted per server as of a stream position and kept
        (``_room_servers``); a batch only reads the membership changes since then. A room
        seen for the first time is read once: its members now, rolled back through the
        changes since just before its first event in the batch."""
        batch_end = batch[-1].stream_ordering
        rooms = sorted({e.room_id for e in ours})
        first = {}
        for e in ours:
            first.setdefault(e.room_id, e.stream_ordering)
        new_rooms = [r for r in rooms if r not in self._room_servers]
        # Members now, then the changes, in that order: a change committed in between is
        # among the changes, and the roll back below does not depend on which read saw it.
        joined_now = await self.store.get_joined_members(new_rooms) if new_rooms else {}
        starts = {r: (first[r] - 1 if r in joined_now else self._room_servers[r].position) for r in rooms}
        deltas = await self.store.get_member_deltas_after(rooms, min(starts.values()))
        pdus = await self.hs.events.get_pdus({i for d in deltas for i in (d.prev_event_id, d.event_id) if i})

        def joins(event_id: str | None) -> int:
            pdu = pdus.get(event_id or "")
            return 1 if pdu is not None and pdu.content.get("membership") == "join" else 0

        deltas_by_room: dict[str, list[MemberDelta]] = {}
        for d in reversed(deltas):  # oldest first
            if d.stream_ordering > starts[d.room_id]:
                deltas_by_room.setdefault(d.room_id, []).append(d)
        events_by_room: dict[str, list[NewEventRow]] = {}
        for e in ours:
            events_by_room.setdefault(e.room_id, []).append(e)

        member_pdus = await self.hs.events.get_pdus([e.event_id for e in ours if e.type == "m.room.member"])

        def is_invite(event_id: str) -> bool:
            pdu = member_pdus.get(event_id)
            return pdu is not None and pdu.content.get("membership") == "invite"

        # Partial-state rooms: we know few members; the joined servers of send_join count too.
        partial = await self.hs.partial_state.servers_for(rooms)
        out: list[tuple[NewEventRow, frozenset[str]]] = []
        for room_id in rooms:
            changes = deltas_by_room.get(room_id, [])
            if room_id in joined_now:
                # Roll back to just before the room's first event here: each user's state
                # becomes the one before their oldest change since then (whether or not the
                # members read above already had that change).
                joined = set(joined_now[room_id])
                for d in reversed(changes):  # newest first
                    if joins(d.prev_event_id):
                        joined.add(d.user_id)
                    else:
                        joined.discard(d.user_id)
                counts: dict[str, int] = {}
                for u in joined:
                    counts[server_of(u)] = counts.get(server_of(u), 0) + 1
                entry = _RoomServers(starts[room_id], counts)
            else:
                entry = self._room_servers.pop(room_id)
            servers = entry.servers(self._sends_to)
            i = 0
            for e in events_by_room[room_id]:  # oldest first
                changed = False
                while i < len(changes) and changes[i].stream_ordering <= e.stream_ordering:
                    entry.apply(server_of(changes[i].user_id), joins(changes[i].event_id) - joins(changes[i].prev_event_id))
                    i += 1
                    changed = True
                if changed:
                    servers = entry.servers(self._sends_to)
                targets = servers
                if room_id in partial:
                    targets = servers | {s for s in partial[room_id] if self._sends_to(s)}
                if e.type == "m.room.member" and e.state_key and not is_invite(e.event_id):
                    # A kick, ban, denied knock or rescinded invite reaches its target's server
                    # though it has no member left; an invite got there through /invite (a
                    # server not in the room is sent no events of the room).
                    target = server_of(e.state_key)
                    if target not in targets and self._sends_to(target):
                        targets = targets | {target}
                if targets:
                    out.append((e, targets))
            for d in changes[i:]:
                if d.stream_ordering <= batch_end:
                    entry.apply(server_of(d.user_id), joins(d.event_id) - joins(d.prev_event_id))
            entry.position = batch_end
            self._room_servers[room_id] = entry
            while len(self._room_servers) > ROOM_SERVERS_CACHE_SIZE:
                self._room_servers.popitem(last=False)
        out.sort(key=lambda pair: pair[0].stream_ordering)
        return out

    async def catch_up_events(self, destination: str, after: int, rooms: Sequence[tuple[str, int]]) -> list[str]:
        """What to send a destination that missed ``rooms`` [(room, newest position for
        it)] since ``after``: all our events there since it joined if they fit in one
        transaction, else the newest event of each room (the receiver fetches the rest)."""
        newest = dict(rooms)
        room_ids = sorted(newest)
        upto = max(newest.values())
        limit = 4 * CATCH_UP_REPLAY_LIMIT
        events = await self.store.get_room_events_between(room_ids, after, upto, limit)
        joined = await self.store.get_joined_members(room_ids)
        joined_at: dict[str, int] = {}
        for room_id, members in joined.items():
            positions = [p for u, p in members.items() if server_of(u) == destination]
            if positions:
                joined_at[room_id] = min(positions)
        chosen = [
            e for e in events
            if server_of(e.sender) == self.hs.server_name and e.stream_ordering <= newest[e.room_id]
            and (e.stream_ordering == newest[e.room_id]
                 or (e.room_id in joined_at and e.stream_ordering > joined_at[e.room_id]))
        ]
        chosen_at = {e.stream_ordering for e in chosen}
        if len(events) < limit and len(chosen) <= CATCH_UP_REPLAY_LIMIT and chosen_at.issuperset(newest.values()):
            return [e.event_id for e in chosen]
        at = await self.store.get_event_ids_at(newest.values())
        return [at[p] for p in sorted(newest.values()) if p in at]


#: EDUs kept in the database by the sender itself (``keep_and_send``, receipts), forgotten
#: once the destination took them.
KEPT_HERE = frozenset({"m.receipt", "m.presence"})


def _key_to_json(key: Hashable | None) -> Any:
    """An EDU's queue key as JSON (tuples become lists) to forward it to another process."""
    return [_key_to_json(k) for k in key] if isinstance(key, tuple) else key


def _key_from_json(key: Any) -> Hashable | None:
    return tuple(_key_from_json(k) for k in key) if isinstance(key, list) else key

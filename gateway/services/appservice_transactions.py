"""Pushing events to application services: ``PUT /_matrix/app/v1/transactions/{txnId}``.

Spec: https://spec.matrix.org/latest/application-service-api/#pushing-events (and
"Pushing ephemeral data"; MSC2409 to-device messages and MSC3202 device lists and key
counts under the unstable keys bridges read).

How it works, per service:

- The service has a position in each stream it is sent (timeline events, receipts,
  presence, to-device messages, device list changes), stored in ``appservice_state``.
  Everything up to a position is in a transaction already.
- Its worker reads what comes after its positions, keeps what the service is interested
  in (below), and stores it as a new transaction with the next transaction ID while moving
  the positions past it, in one database transaction. So no event is in two transactions,
  and nothing the server acknowledged to a client is lost for the service by a restart.
- It sends that transaction until the service answers 2xx: the same ID and the same
  events every time, backing off exponentially (1 s doubling to 5 min) while the service
  is down. Only then is the next transaction made, from the positions on: a service
  that was down for an hour gets everything since, in order, in transactions of at most
  100 events. A service that pings us (or uses its ``as_token``) is tried again at once.
- New events wake the workers; ephemeral changes (typing, receipts, presence, to-device,
  device lists) wake the workers of the services that take them.

Interest in a timeline event (spec: "Registration"): the sender or, for a member event,
its target is the service's sender or a local user of its namespace; or the room's ID or
one of its local aliases is in its namespaces; or one of those users is joined to the room
at the event (the members now, rolled back through the membership changes since).
Rejected, soft-failed and outlier events are never sent; backfilled history is not new.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..config.appservice import AppServiceConfig, ApplicationService
from ..storage.appservice import AppServiceStore, StoredTxn
from ..storage.destinations import DestinationStore, MemberDelta, NewEventRow
from ..storage.e2e_keys import E2EKeyStore
from ..storage.receipts import ReceiptStore
from .appservice_api import AppServiceApi, AppServiceRequestError

log = logging.getLogger(__name__)

#: At most this many timeline events, and of each kind of ephemeral data, per transaction.
MAX_EVENTS = 100
MAX_EPHEMERAL = 100
#: Timeline rows read per look at the events stream.
SCAN_LIMIT = 500
MIN_BACKOFF_MS = 1000
MAX_BACKOFF_MS = 5 * 60 * 1000
#: A backing-off service's own requests bring its retry forward at most this often.
ALIVE_RETRY_MS = 10_000
PRIVATE_RECEIPTS = ("m.read.private", "org.matrix.msc2285.read.private")


# --- interest (pure) -------------------------------------------------------------------------


def room_in_namespaces(service: ApplicationService, room_id: str, aliases: Iterable[str]) -> bool:
    return service.is_room_in_namespace(room_id) or any(service.is_alias_in_namespace(a) for a in aliases)


def events_of_interest(service: ApplicationService, events: Sequence[NewEventRow], *,
                       joined_now: Mapping[str, set[str]], deltas: Sequence[MemberDelta],
                       was_join: Mapping[str, bool], aliases: Mapping[str, Sequence[str]]) -> list[NewEventRow]:
    """The events (oldest first) the service is interested in.

    ``joined_now``: room -> the service's users joined now; ``deltas``: membership changes
    in current state after the first event of ``events`` (newest first); ``was_join``:
    event ID -> whether that member event was a join (for the deltas' events)."""
    interested = service.is_interested_in_user
    rooms = {e.room_id for e in events}
    first = {}
    for e in events:
        first.setdefault(e.room_id, e.stream_ordering)
    # Each room's membership (of the service's users) just before its first event here.
    members: dict[str, set[str]] = {r: set(joined_now.get(r, ())) for r in rooms}
    ahead: dict[str, list[MemberDelta]] = {r: [] for r in rooms}
    for d in deltas:  # newest first: undo
        if d.room_id in rooms and d.stream_ordering >= first[d.room_id] and interested(d.user_id):
            if was_join.get(d.prev_event_id or "", False):
                members[d.room_id].add(d.user_id)
            else:
                members[d.room_id].discard(d.user_id)
            ahead[d.room_id].append(d)
    for changes in ahead.values():
        changes.reverse()  # oldest first: redo as the events go by
    out = []
    for e in events:
        room_changes = ahead[e.room_id]
        while room_changes and room_changes[0].stream_ordering <= e.stream_ordering:
            d = room_changes.pop(0)
            if was_join.get(d.event_id or "", False):
                members[e.room_id].add(d.user_id)
            else:
                members[e.room_id].discard(d.user_id)
        if (interested(e.sender) or (e.type == "m.room.member" and e.state_key is not None and interested(e.state_key))
                or room_in_namespaces(service, e.room_id, aliases.get(e.room_id, ()))
                or members[e.room_id]):
            out.append(e)
    return out


def backoff_ms(failures: int) -> int:
    """1 s doubling to 5 min, with up to 10 % jitter."""
    base = min(MAX_BACKOFF_MS, MIN_BACKOFF_MS * 2 ** max(0, failures - 1))
    return int(base * random.uniform(0.9, 1.0))


# --- the sender ------------------------------------------------------------------------------


class AppServiceTransactions:
    """The transaction workers of every service that has a URL."""

    def __init__(self, *, server_name: str, config: AppServiceConfig, api: AppServiceApi, store: AppServiceStore,
                 destinations: DestinationStore, e2e_store: E2EKeyStore, receipts: ReceiptStore, events,
                 get_typing: Callable[[str], list[str]], clock_ms: Callable[[], int]):
        self.server_name = server_name
        self.config = config
        self.api = api
        self.store = store
        self.destinations = destinations
        self.e2e_store = e2e_store
        self.receipts = receipts
        self.events = events
        self.get_typing = get_typing
        self.clock_ms = clock_ms
        self.queues: dict[str, _ServiceQueue] = {
            s.id: _ServiceQueue(self, s) for s in config.services if s.url is not None}
        self.started = False
        self.stopped = False

    def wants_to_device(self, service: ApplicationService) -> bool:
        return self.config.to_device_messages and service.receive_ephemeral

    def wants_msc3202(self, service: ApplicationService) -> bool:
        return self.config.msc3202_transaction_extensions and service.msc3202

    async def start(self) -> None:
        if self.started:
            return
        self.started = True
        for q in self.queues.values():
            q.wake()

    async def stop(self) -> None:
        self.stopped = True
        tasks = []
        for q in self.queues.values():
            q.cancel_timer()
            if q.task is not None and not q.task.done():
                q.task.cancel()
                tasks.append(q.task)
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- feeds ---------------------------------------------------------------------------

    def on_new_events(self, room_id: str, positions: Sequence[int]) -> None:
        for q in self.queues.values():
            q.wake()

    def on_ephemeral_change(self) -> None:
        """Something ephemeral changed (typing, receipts, presence, to-device, device lists)."""
        for q in self.queues.values():
            if q.service.receive_ephemeral or self.wants_msc3202(q.service):
                q.wake()

    def on_typing(self, room_id: str) -> None:
        for q in self.queues.values():
            if q.service.receive_ephemeral:
                q.typing_rooms.add(room_id)
                q.wake()

    def on_keys_claimed(self, devices: Iterable[tuple[str, str]]) -> None:
        """One-time keys of these local devices were claimed: their counts changed."""
        devices = list(devices)
        for q in self.queues.values():
            if self.wants_msc3202(q.service):
                mine = {(u, d) for u, d in devices if q.service.is_interested_in_user(u)}
                if mine:
                    q.claimed |= mine
                    q.wake()

    def on_alive(self, service: ApplicationService, pinged: bool) -> None:
        """A backing-off service is tried again now after a successful ping; after its
        other requests at most every ``ALIVE_RETRY_MS`` (a service whose transaction
        endpoint keeps failing must not be retried at the pace of its own requests)."""
        q = self.queues.get(service.id)
        if q is None or not q.failures:
            return
        now = self.clock_ms()
        if pinged or now - q.alive_retry_ts >= ALIVE_RETRY_MS:
            q.alive_retry_ts = now
            q.retry_now()


class _ServiceQueue:
    def __init__(self, sender: AppServiceTransactions, service: ApplicationService):
        self.sender = sender
        self.service = service
        self.task: asyncio.Task | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.dirty = False
        self.failures = 0
        self.retry_at = 0
        self.alive_retry_ts = 0
        self.typing_rooms: set[str] = set()
        self.claimed: set[tuple[str, str]] = set()
        #: The stored positions and unacknowledged transaction, read once (this worker is
        #: their only writer); None: not read yet.
        self.positions: dict[str, int] | None = None
        self.pending: StoredTxn | None = None

    # --- scheduling ----------------------------------------------------------------------

    def wake(self) -> None:
        if self.sender.stopped or not self.sender.started:
            return
        self.dirty = True
        if self.sender.clock_ms() < self.retry_at:
            return  # backing off: the timer runs the worker
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name=f"appservice:{self.service.id}")

    def retry_now(self) -> None:
        self.retry_at = 0
        self.cancel_timer()
        self.wake()

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _schedule(self, delay_ms: int) -> None:
        self.cancel_timer()
        self.timer = asyncio.get_running_loop().call_later(delay_ms / 1000, self._timer_fired)

    def _timer_fired(self) -> None:
        self.timer = None
        self.retry_at = 0
        self.wake()

    # --- the worker ----------------------------------------------------------------------

    async def _run(self) -> None:
        store = self.sender.store
        try:
            while not self.sender.stopped:
                self.dirty = False
                if self.positions is None:
                    self.positions = await store.get_positions(self.service.id)
                    self.pending = await store.get_txn(self.service.id)
                txn = self.pending
                if txn is None:
                    txn = await self._make_txn()
                    if txn is None:
                        if self.dirty:
                            continue
                        return
                if not await self._send(txn):
                    self.failures += 1
                    delay = backoff_ms(self.failures)
                    self.retry_at = self.sender.clock_ms() + delay
                    log.info("application service %s: transaction %d not acknowledged (attempt %d); trying again "
                             "in %.1f s", self.service.id, txn.txn_id, self.failures, delay / 1000)
                    self._schedule(delay)
                    return
                if self.failures:
                    log.info("application service %s is back", self.service.id)
                self.failures = 0
                await store.complete_txn(self.service.id, txn.txn_id, [
                    (m["to_user_id"], m["to_device_id"], m["_stream_id"])
                    for m in txn.extra.get("to_device", []) if "_stream_id" in m])
                self.pending = None
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("application service %s: sending failed; trying again later", self.service.id)
            self.positions = self.pending = None  # read them again
            self.retry_at = self.sender.clock_ms() + MIN_BACKOFF_MS * 5
            self._schedule(MIN_BACKOFF_MS * 5)

    async def _send(self, txn: StoredTxn) -> bool:
        body = await self._body(txn)
        try:
            await self.sender.api.push_transaction(self.service, txn.txn_id, body)
            return True
        except AppServiceRequestError as e:
            log.info("application service %s: %s", self.service.id, e)
            return False

    async def _body(self, txn: StoredTxn) -> dict[str, Any]:
        """The request body: the events as they are now (a redaction meanwhile shows), the
        rest as stored."""
        events = self.sender.events
        stored = await events.store.get_events(txn.event_ids)
        serialized = await events.serialize_for_client([stored[e] for e in txn.event_ids if e in stored])
        body: dict[str, Any] = {"events": serialized}
        extra = txn.extra
        service = self.service
        if service.receive_ephemeral_stable:
            body["ephemeral"] = extra.get("ephemeral", [])
        if service.receive_ephemeral_unstable:
            body["de.sorunome.msc2409.ephemeral"] = extra.get("ephemeral", [])
        if "to_device" in extra:
            body["de.sorunome.msc2409.to_device"] = [
                {k: v for k, v in m.items() if k != "_stream_id"} for m in extra["to_device"]]
        if extra.get("device_lists"):
            body["org.matrix.msc3202.device_lists"] = extra["device_lists"]
        if extra.get("otk_counts"):
            # Both spellings Synapse sends (the MSC renamed the key).
            body["org.matrix.msc3202.device_one_time_keys_count"] = extra["otk_counts"]
            body["org.matrix.msc3202.device_one_time_key_counts"] = extra["otk_counts"]
        if extra.get("fallback_keys"):
            body["org.matrix.msc3202.device_unused_fallback_key_types"] = extra["fallback_keys"]
        return body

    # --- making a transaction ----------------------------------------------------------

    async def _make_txn(self) -> StoredTxn | None:
        """A new transaction of what came since the service's positions (stored with the
        positions moved past it), or None when there is nothing for it (positions moved
        past what it does not want)."""
        s, service = self.sender, self.service
        positions = self.positions
        assert positions is not None
        new_positions: dict[str, int] = {}
        extra: dict[str, Any] = {}

        event_ids, events_pos = await self._events(positions["events"])
        new_positions["events"] = events_pos
        if service.receive_ephemeral:
            ephemeral = self._typing(await self._typing_rooms())
            receipts, new_positions["receipts"] = await self._receipts(positions["receipts"])
            presence, new_positions["presence"] = await self._presence(positions["presence"])
            if ephemeral or receipts or presence:
                extra["ephemeral"] = ephemeral + receipts + presence
        if s.wants_to_device(service):
            to_device, new_positions["to_device"] = await self._to_device(positions["to_device"])
            if to_device:
                extra["to_device"] = to_device
        if s.wants_msc3202(service):
            changed, new_positions["device_lists"] = await self._device_lists(positions["device_lists"])
            left = await self._left(event_ids)
            if changed or left:
                extra["device_lists"] = {"changed": changed, "left": left}
            counts, fallback = await self._key_counts(extra.get("to_device", []))
            if counts:
                extra["otk_counts"] = counts
            if fallback:
                extra["fallback_keys"] = fallback
        moved = {k: v for k, v in new_positions.items() if v != positions[k]}
        if not event_ids and not extra:
            if moved:
                await s.store.set_positions(service.id, moved)
                positions.update(moved)
                self.dirty = True  # there may be more to read after what was skipped
            return None
        self.pending = await s.store.create_txn(service.id, event_ids, extra, moved, s.clock_ms())
        positions.update(moved)
        return self.pending

    async def _events(self, after: int) -> tuple[list[str], int]:
        s, service = self.sender, self.service
        rows = await s.destinations.get_new_events(after, SCAN_LIMIT)
        if not rows:
            return [], after
        rooms = {r.room_id for r in rows}
        aliases = await s.store.get_aliases_for_rooms(rooms)
        joined = await s.store.get_joined_local_members(rooms, s.server_name)
        joined = {r: {u for u in users if service.is_interested_in_user(u)} for r, users in joined.items()}
        deltas = [d for d in await s.destinations.get_member_deltas_after(rooms, rows[0].stream_ordering - 1)
                  if service.is_interested_in_user(d.user_id)]
        pdus = await s.events.get_pdus({i for d in deltas for i in (d.event_id, d.prev_event_id) if i})
        was_join = {i: p.content.get("membership") == "join" for i, p in pdus.items()}
        chosen = events_of_interest(service, rows, joined_now=joined, deltas=deltas, was_join=was_join,
                                    aliases=aliases)
        if len(chosen) > MAX_EVENTS:
            chosen = chosen[:MAX_EVENTS]
            return [e.event_id for e in chosen], chosen[-1].stream_ordering
        return [e.event_id for e in chosen], rows[-1].stream_ordering

    async def _rooms_of_interest(self, room_ids: Iterable[str]) -> set[str]:
        """Of ``room_ids``, those in the service's namespaces or with one of its users joined."""
        s, service = self.sender, self.service
        rooms = set(room_ids)
        if not rooms:
            return set()
        aliases = await s.store.get_aliases_for_rooms(rooms)
        joined = await s.store.get_joined_local_members(rooms, s.server_name)
        return {r for r in rooms if room_in_namespaces(service, r, aliases.get(r, ()))
                or any(service.is_interested_in_user(u) for u in joined.get(r, ()))}

    async def _shares_room(self, user_ids: Iterable[str]) -> set[str]:
        """Of ``user_ids``, the service's users and those joined to a room it is interested in."""
        users = set(user_ids)
        mine = {u for u in users if self.service.is_interested_in_user(u)}
        others = users - mine
        if not others:
            return mine
        rooms = await self.sender.store.get_joined_rooms(others)
        wanted = await self._rooms_of_interest({r for rs in rooms.values() for r in rs})
        return mine | {u for u in others if rooms.get(u, set()) & wanted}

    async def _typing_rooms(self) -> list[str]:
        rooms, self.typing_rooms = self.typing_rooms, set()
        return sorted(await self._rooms_of_interest(rooms))

    def _typing(self, rooms: Sequence[str]) -> list[dict[str, Any]]:
        return [{"type": "m.typing", "room_id": r, "content": {"user_ids": self.sender.get_typing(r)}}
                for r in rooms]

    async def _receipts(self, after: int) -> tuple[list[dict[str, Any]], int]:
        s = self.sender
        upto = await s.receipts.get_current_position()
        if upto <= after:
            return [], after
        rows = (await s.receipts.get_changes(since=after, upto=upto))[:MAX_EPHEMERAL]
        wanted = await self._rooms_of_interest({r.room_id for r in rows})
        by_room: dict[str, dict[str, Any]] = {}
        for r in rows:
            if r.room_id not in wanted:
                continue
            if r.receipt_type in PRIVATE_RECEIPTS and not self.service.is_interested_in_user(r.user_id):
                continue  # private receipts only of the service's own users (spec)
            event = by_room.setdefault(r.room_id, {"type": "m.receipt", "room_id": r.room_id, "content": {}})
            event["content"].setdefault(r.event_id, {}).setdefault(r.receipt_type, {})[r.user_id] = r.data
        return list(by_room.values()), rows[-1].stream_id if rows else upto

    async def _presence(self, after: int) -> tuple[list[dict[str, Any]], int]:
        from .user_directory import presence_json

        rows = await self.sender.store.get_presence_changes(after, MAX_EPHEMERAL)
        if not rows:
            return [], after
        wanted = await self._shares_room({row.user_id for row, _ in rows})
        now = self.sender.clock_ms()
        out = [{"type": "m.presence", "sender": row.user_id, "content": presence_json(row, now)}
               for row, _ in rows if row.user_id in wanted]
        return out, rows[-1][1]

    async def _to_device(self, after: int) -> tuple[list[dict[str, Any]], int]:
        rows = await self.sender.store.get_to_device(after, MAX_EPHEMERAL)
        if not rows:
            return [], after
        out = [{**r.message, "to_user_id": r.user_id, "to_device_id": r.device_id, "_stream_id": r.stream_id}
               for r in rows if self.service.is_interested_in_user(r.user_id)]
        return out, rows[-1].stream_id

    async def _device_lists(self, after: int) -> tuple[list[str], int]:
        rows = await self.sender.store.get_device_list_changes(after, MAX_EPHEMERAL * 5)
        if not rows:
            return [], after
        wanted = await self._shares_room({u for u, _ in rows})
        return sorted(wanted), rows[-1][1]

    async def _left(self, event_ids: Sequence[str]) -> list[str]:
        """Users whose leaving (in these events) means they share no room with the
        service's users any more."""
        pdus = await self.sender.events.get_pdus(event_ids)
        leavers = {p.state_key for p in pdus.values() if p.type == "m.room.member" and p.state_key
                   and p.content.get("membership") in ("leave", "ban")
                   and not self.service.is_interested_in_user(p.state_key)}
        if not leavers:
            return []
        return sorted(leavers - await self._shares_room(leavers))

    async def _key_counts(self, to_device: Sequence[Mapping[str, Any]]) -> tuple[dict, dict]:
        """One-time key counts and unused fallback key types of the service's devices
        whose keys were claimed, or that get to-device messages in this transaction."""
        devices = set(self.claimed) | {(m["to_user_id"], m["to_device_id"]) for m in to_device}
        self.claimed = set()
        counts: dict[str, dict[str, dict[str, int]]] = {}
        fallback: dict[str, dict[str, list[str]]] = {}
        for user_id, device_id in sorted(devices):
            otks, unused = await self.sender.e2e_store.get_key_counts(user_id, device_id)
            otks.setdefault("signed_curve25519", 0)
            counts.setdefault(user_id, {})[device_id] = otks
            fallback.setdefault(user_id, {})[device_id] = unused
        return counts, fallback

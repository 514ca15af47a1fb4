"""Push rules (the rules API), their evaluation for every new event, unread counts,
and pushers.

Spec: https://spec.matrix.org/latest/client-server-api/#push-notifications

Evaluation: ``EventsService`` calls ``on_new_events(room_id, positions)`` after it stores
events. For each event, every local joined member other than the sender (and a local
invitee of an invite) is evaluated with the pure ``federation.push_rules`` module;
events that notify or highlight get one ``event_push_actions`` row per user, in one
batched insert per batch of events. The work runs in a task per room, in order;
``get_unread_counts`` first waits for this process's pending work on the room, so a
count never misses an event that was already stored.

HTTP pushers (https://spec.matrix.org/latest/push-gateway-api/): each pusher keeps the
stream position of the last notification it was sent (``pushers.last_stream_ordering``,
as Synapse's). New notifications wake the pusher's one sender task, which reads the
user's unread notifications after that position from the database, sends them one by one
in order, and stores the position after each. A pusher process that restarts, was down,
or missed a hand-over (Redis was away) does the same from the stored positions
(``start``, ``on_missed``): what was stored meanwhile is pushed, nothing twice (but the one
notification in flight at a crash). A gateway that is down or answers 5xx is tried again
(``RETRY_DELAYS_S``), the pusher waiting meanwhile, then that notification is skipped.

Push actions older than 30 days are deleted (checkpoints of the stream position, about
once an hour, tell which positions are that old).

Interface for /sync: ``await push.get_unread_counts(user_id, room_id, after)`` ->
``(notification_count, highlight_count)`` over events after stream position ``after``
(the position of the user's read receipt; 0 for none). ``await push.get_ruleset(user_id)``
is the content of the ``m.push_rules`` account data event.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Callable

from federation.auth_rules import get_notification_level, get_user_power_level
from federation.ids import is_valid_user_id
from federation.room_upgrades import push_rule_for_room
from federation.push_rules import (
    KINDS,
    CompiledRule,
    PushContext,
    default_rules,
    compile_ruleset,
    evaluate_compiled,
    is_default_rule_id,
    merge_ruleset,
    notify_and_highlight,
    valid_action,
)

from ..http import Codes, MatrixError
from .push_gateway import PushGatewayClient, build_badge, build_notification
from ..storage.push import DefaultRuleChange, PushAction, PushActionStore, Pusher, PushRuleStore, PusherStore, StoredRule

if TYPE_CHECKING:
    from ..storage.account_data import AccountDataStore
    from ..storage.database import Database
    from .events import EventsService
    from .notifier import Notifier

log = logging.getLogger(__name__)

Ruleset = dict[str, list[dict[str, Any]]]

#: Users whose merged rulesets are kept in memory (changes made here drop the entry).
_RULESET_CACHE_SIZE = 10_000

#: Push actions (unread counts, /notifications) are kept this long (as Synapse: 30 days).
PUSH_ACTIONS_KEEP_MS = 30 * 86_400_000
CHECKPOINT_EVERY_MS = 3_600_000

MAX_APP_ID = 64
MAX_PUSHKEY_BYTES = 512
PUSHER_KINDS = ("http", "email")

#: What ``notifier.publish_data`` hands to the pusher processes (workers): notifications
#: stored for events, a read receipt (the badge), an invite to a room we are not in.
PUSH, BADGE, INVITE = "push", "push_badge", "push_invite"
#: A pusher's sender task reads this many notifications at a time.
PUSH_BATCH = 100
#: Waits before sending a notification again to a gateway that did not take it; after
#: the last, the notification is skipped (the pusher goes on with the next).
RETRY_DELAYS_S = (2.0, 10.0, 60.0, 300.0)


def _rule_json(kind: str, r: StoredRule) -> dict[str, Any]:
    out: dict[str, Any] = {"rule_id": r.rule_id, "default": False, "enabled": r.enabled, "actions": r.actions}
    if kind in ("override", "underride"):
        out["conditions"] = r.conditions or []
    if kind == "content" and r.pattern is not None:
        out["pattern"] = r.pattern
    return out


def build_ruleset(user_id: str, own: Sequence[StoredRule], changes: Sequence[DefaultRuleChange]) -> Ruleset:
    """A user's full ruleset in the client format (defaults with their changes applied)."""
    defaults = default_rules(user_id)
    changed = {(c.kind, c.rule_id): c for c in changes}
    for kind, rules in defaults.items():
        for rule in rules:
            c = changed.get((kind, rule["rule_id"]))
            if c is not None:
                if c.enabled is not None:
                    rule["enabled"] = c.enabled
                if c.actions is not None:
                    rule["actions"] = c.actions
    mine: Ruleset = {k: [] for k in KINDS}
    for r in own:
        mine.setdefault(r.kind, []).append(_rule_json(r.kind, r))
    return merge_ruleset(defaults, mine)


def by_user_ids(pushers: Sequence[Pusher]) -> list[str]:
    return sorted({p.user_id for p in pushers})


#: ``thread_id`` of an event that is not in a thread (as threaded receipts name it).
MAIN_THREAD = "main"


def thread_id_of(content: Mapping[str, Any], event_id: str) -> str:
    rel = content.get("m.relates_to")
    if isinstance(rel, Mapping) and rel.get("rel_type") == "m.thread" and isinstance(rel.get("event_id"), str):
        return rel["event_id"]
    return MAIN_THREAD


class PushService:
    def __init__(self, *, db: Database, server_name: str, events: EventsService, account_data_store: AccountDataStore,
                 notifier: Notifier, gateway: PushGatewayClient, clock_ms: Callable[[], int],
                 pushes_here: Callable[[str], bool] = lambda user_id: True):
        """``events``: the events rules are evaluated on, rooms' members and state;
        ``account_data_store``: ``m.push_rules`` (clients read it there);
        ``gateway`` sends notifications to pushers; ``pushes_here(user_id)``: whether this
        process sends the user's pushes (gateway/roles.py, ``pusher_for_user``): the others'
        are handed over with ``notifier.publish_data`` (``on_remote_push``)."""
        self.server_name = server_name
        self.events = events
        self.account_data_store = account_data_store
        self.notifier = notifier
        self.clock_ms = clock_ms
        self.rules = PushRuleStore(db)
        self.actions = PushActionStore(db)
        self.pushers = PusherStore(db)
        self._rulesets: OrderedDict[str, Ruleset] = OrderedDict()
        self._compiled: dict[str, tuple[Ruleset, tuple[CompiledRule, ...]]] = {}
        self._pending: dict[str, asyncio.Task] = {}
        #: room -> the positions of its latest evaluation task while that task has not
        #: started: events stored meanwhile join it (see ``on_new_events``).
        self._queued: dict[str, list[int]] = {}
        self._sending: set[asyncio.Task] = set()
        self._room_contexts: OrderedDict[str, tuple[int | None, Any]] = OrderedDict()
        self._last_checkpoint_ms = 0
        self.gateway = gateway
        self.pushes_here = pushes_here
        #: The sender task of each HTTP pusher that has one, by (user, app, pushkey), and
        #: the pushers woken while theirs ran (it looks again).
        self._pusher_tasks: dict[tuple[str, str, str], asyncio.Task] = {}
        self._woken_again: set[tuple[str, str, str]] = set()
        #: Failed attempts at each pusher's next notification, and the timers of the
        #: pushers waiting to try it again.
        self._attempts: dict[tuple[str, str, str], int] = {}
        self._retry_timers: dict[tuple[str, str, str], asyncio.TimerHandle] = {}
        #: Called with the users with email pushers among those a batch of events notified.
        self.email_listeners: list[Callable[[list[str]], None]] = []
        #: The badge (unread rooms) each HTTP pusher was last sent, by (user, app, pushkey).
        self._badges: dict[tuple[str, str, str], int] = {}
        # Rules changed by another process (the push_rules writer): our cached copy goes.
        notifier.on_data("push_rules", self._forget)

    # --- the rules API -----------------------------------------------------------------

    async def get_ruleset(self, user_id: str) -> Ruleset:
        return (await self._get_rulesets([user_id]))[user_id]

    async def _get_rulesets(self, user_ids: Sequence[str]) -> dict[str, Ruleset]:
        out: dict[str, Ruleset] = {}
        missing = []
        for u in user_ids:
            hit = self._rulesets.get(u)
            if hit is None:
                missing.append(u)
            else:
                self._rulesets.move_to_end(u)
                out[u] = hit
        if missing:
            own = await self.rules.get_user_rules(missing)
            changes = await self.rules.get_default_changes(missing)
            for u in missing:
                out[u] = build_ruleset(u, own[u], changes[u])
                self._rulesets[u] = out[u]
            while len(self._rulesets) > _RULESET_CACHE_SIZE:
                self._rulesets.popitem(last=False)
        return out

    async def _get_compiled(self, user_ids: Sequence[str]) -> dict[str, tuple[CompiledRule, ...]]:
        rulesets = await self._get_rulesets(user_ids)
        out = {}
        for u in user_ids:
            hit = self._compiled.get(u)
            if hit is None or hit[0] is not rulesets[u]:
                hit = self._compiled[u] = (rulesets[u], compile_ruleset(rulesets[u]))
            out[u] = hit[1]
        while len(self._compiled) > _RULESET_CACHE_SIZE:
            self._compiled.pop(next(iter(self._compiled)))
        return out

    async def _changed(self, user_id: str) -> None:
        """After a change: drop the cached rules, and store the new ruleset as the user's
        ``m.push_rules`` account data so that incremental /sync sends it."""
        self._forget(user_id)
        self.notifier.publish_data("push_rules", user_id)
        from ..storage.account_data import GLOBAL

        await self.account_data_store.put(user_id, GLOBAL, "m.push_rules",
                                             {"global": await self.get_ruleset(user_id)})
        self.notifier.notify_users([user_id])

    def _forget(self, user_id: str) -> None:
        self._rulesets.pop(user_id, None)
        self._compiled.pop(user_id, None)

    @staticmethod
    def check_scope_kind(scope: str, kind: str | None) -> None:
        """``kind`` None: the scope alone (``/pushrules/global/``)."""
        if scope != "global":
            raise MatrixError.invalid_param("The only push rule scope is 'global'")
        if kind is not None and kind not in KINDS:
            raise MatrixError.invalid_param(f"Unknown push rule kind {kind!r}")

    async def get_rule(self, user_id: str, kind: str, rule_id: str) -> dict[str, Any]:
        for rule in (await self.get_ruleset(user_id)).get(kind, []):
            if rule["rule_id"] == rule_id:
                return rule
        raise MatrixError.not_found("The push rule was not found")

    async def put_rule(self, user_id: str, kind: str, rule_id: str, body: Mapping[str, Any], *,
                       before: str | None, after: str | None) -> None:
        """Add or change a user-defined rule (enabled when new)."""
        if is_default_rule_id(rule_id):
            raise MatrixError.invalid_param("Rule IDs starting with '.' are reserved for server-default rules")
        if not rule_id or "/" in rule_id or "\\" in rule_id:
            raise MatrixError.invalid_param("Rule IDs may not be empty or contain '/' or '\\'")
        for anchor in (before, after):
            if anchor is not None and is_default_rule_id(anchor):
                raise MatrixError.invalid_param("Rules cannot be placed relative to server-default rules")
        actions = self._check_actions(body.get("actions"))
        conditions = None
        pattern = None
        if kind in ("override", "underride"):
            conditions = body.get("conditions", [])
            if not isinstance(conditions, list) or not all(
                    isinstance(c, dict) and isinstance(c.get("kind"), str) for c in conditions):
                raise MatrixError.invalid_param("'conditions' must be a list of objects with a 'kind'")
        elif kind == "content":
            pattern = body.get("pattern")
            if not isinstance(pattern, str) or not pattern:
                raise MatrixError.invalid_param("Content rules need a 'pattern' string")
        elif kind == "sender" and not is_valid_user_id(rule_id):
            raise MatrixError.invalid_param("The rule ID of a sender rule is a user ID")
        try:
            await self.rules.put_rule(user_id, kind, rule_id, conditions=conditions, pattern=pattern,
                                      actions=actions, before=before, after=after)
        except KeyError as e:
            raise MatrixError(400, Codes.UNKNOWN, f"before/after rule not found: {e.args[0]}") from None
        await self._changed(user_id)

    @staticmethod
    def _check_actions(actions: Any) -> list[Any]:
        """Actions are kept as the client sent them (it reads them back the same); the
        historical ``dont_notify`` and ``coalesce`` are ignored when rules are evaluated."""
        if not isinstance(actions, list) or not all(valid_action(a) for a in actions):
            raise MatrixError.invalid_param("'actions' must be a list of actions ('notify' or set_tweak objects)")
        return list(actions)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> None:
        if is_default_rule_id(rule_id):
            await self.get_rule(user_id, kind, rule_id)  # M_NOT_FOUND for unknown ones
            raise MatrixError.invalid_param("Server-default rules cannot be deleted (disable them instead)")
        if not await self.rules.delete_rule(user_id, kind, rule_id):
            raise MatrixError.not_found("The push rule was not found")
        await self._changed(user_id)

    async def set_enabled(self, user_id: str, kind: str, rule_id: str, enabled: Any) -> None:
        if not isinstance(enabled, bool):
            raise MatrixError.bad_json("'enabled' must be true or false")
        await self._set_field(user_id, kind, rule_id, enabled=enabled)

    async def set_actions(self, user_id: str, kind: str, rule_id: str, actions: Any) -> None:
        await self._set_field(user_id, kind, rule_id, actions=self._check_actions(actions))

    async def _set_field(self, user_id: str, kind: str, rule_id: str, **change: Any) -> None:
        await self.get_rule(user_id, kind, rule_id)  # M_NOT_FOUND
        if is_default_rule_id(rule_id):
            await self.rules.change_default_rule(user_id, kind, rule_id, **change)
        elif not await self.rules.set_user_rule_field(user_id, kind, rule_id, **change):
            raise MatrixError.not_found("The push rule was not found")
        await self._changed(user_id)

    async def copy_room_rules(self, user_id: str, old_room_id: str, new_room_id: str) -> None:
        """A room upgrade: the user's rules about the old room get copies about the new
        one, placed just before them (rules the user already has are left alone)."""
        own = (await self.rules.get_user_rules([user_id]))[user_id]
        existing = {(r.kind, r.rule_id) for r in own}
        copied = False
        for rule in own:
            copy = push_rule_for_room(rule.kind, rule.rule_id, rule.conditions, old_room_id, new_room_id)
            if copy is None or (rule.kind, copy[0]) in existing:
                continue
            new_id, conditions = copy
            await self.rules.put_rule(user_id, rule.kind, new_id, conditions=conditions, pattern=rule.pattern,
                                      actions=rule.actions, before=rule.rule_id, after=None)
            if not rule.enabled:
                await self.rules.set_user_rule_field(user_id, rule.kind, new_id, enabled=False)
            existing.add((rule.kind, new_id))
            copied = True
        if copied:
            await self._changed(user_id)

    # --- evaluation ------------------------------------------------------------------

    def on_new_events(self, room_id: str, positions: Sequence[int]) -> None:
        """The EventsService listener: evaluate in a task, after earlier work on the room.
        Batches stored while the room's latest task has not started yet join that task,
        so a busy room has at most one evaluation running and one waiting, whatever the
        rate (one read of the events and one write of the actions for all of them)
        instead of a queue growing by one task a batch."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        queued = self._queued.get(room_id)
        if queued is not None:
            queued.extend(positions)
            return
        batch = list(positions)
        self._queued[room_id] = batch
        previous = self._pending.get(room_id)
        task = loop.create_task(self._evaluate_after(previous, room_id, batch))
        self._pending[room_id] = task

        def done(t: asyncio.Task) -> None:
            if self._pending.get(room_id) is t:
                del self._pending[room_id]
            if self._queued.get(room_id) is batch:  # cancelled before it started
                del self._queued[room_id]

        task.add_done_callback(done)

    async def _evaluate_after(self, previous: asyncio.Task | None, room_id: str, positions: list[int]) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        if self._queued.get(room_id) is positions:
            del self._queued[room_id]  # from here on, new events go to a new task
        try:
            await self.evaluate_events(room_id, positions)
        except Exception:
            log.exception("push rule evaluation failed for room %s", room_id)

    async def flush(self, room_id: str | None = None) -> None:
        """Wait for this process's pending evaluations (of one room, or all)."""
        while True:
            tasks = [t for r, t in self._pending.items() if room_id is None or r == room_id]
            if not tasks:
                return
            await asyncio.wait(tasks)

    def evaluations(self, room_ids: Iterable[str]) -> dict[str, asyncio.Task]:
        """room -> the task that evaluates the events stored so far in it, for the rooms
        with evaluations pending (each room's latest task runs after all earlier ones):
        taken when a reader reads the stream position, to wait later for exactly the
        events it read (``wait_for_evaluations(..., tasks=...)``)."""
        pending = self._pending
        return {r: pending[r] for r in room_ids if r in pending}

    async def wait_for_evaluations(self, room_ids: Sequence[str], timeout: float | None = None, *,
                                   tasks: Mapping[str, asyncio.Task] | None = None) -> None:
        """Wait (at most ``timeout`` seconds) for the evaluation of the events stored so
        far in these rooms, not for those stored meanwhile (``flush`` would wait as long
        as a room stays busy): each room's latest task runs after all earlier ones.
        ``tasks``: those of ``evaluations``, taken earlier (the events stored up to then)."""
        source = self._pending if tasks is None else tasks
        waiting = [t for t in (source.get(r) for r in room_ids) if t is not None and not t.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)

    async def evaluate_events(self, room_id: str, positions: Sequence[int]) -> None:
        events = await self.events.store.get_events_at_positions(positions)
        events = [e for e in events if e.pdu.room_id == room_id and not e.outlier and not e.rejected_reason
                  and not e.soft_failed]
        if not events:
            return
        suffix = ":" + self.server_name
        room = await self.events.get_room(room_id)
        members, pl_content, create = await self._room_context(room_id, room.current_state_group)
        member_count = len(members)
        local = {m.user_id: m.displayname for m in members if m.user_id.endswith(suffix)}
        levels = {}
        if pl_content is not None and isinstance(pl_content.get("notifications"), dict):
            levels = {k: get_notification_level(k, pl_content, room.room_version)
                      for k in pl_content["notifications"]}
        levels.setdefault("room", get_notification_level("room", pl_content, room.room_version))
        rows: list[PushAction] = []
        for e in events:
            pdu = e.pdu
            targets = dict(local)
            if pdu.type == "m.room.member" and pdu.content.get("membership") == "invite" \
                    and pdu.state_key and pdu.state_key.endswith(suffix):
                targets.setdefault(pdu.state_key, None)
            targets.pop(pdu.sender, None)
            if not targets:
                continue
            compiled = await self._get_compiled(sorted(targets))
            event_dict: dict[str, Any] = {"type": pdu.type, "content": pdu.content, "sender": pdu.sender,
                                          "room_id": pdu.room_id, "event_id": pdu.event_id}
            if pdu.state_key is not None:
                event_dict["state_key"] = pdu.state_key
            sender_level = get_user_power_level(pdu.sender, pl_content, create, room.room_version)
            thread = thread_id_of(pdu.content, pdu.event_id)
            memo: dict[Any, bool] = {}  # user-independent condition results, shared by the members
            for user_id, display_name in targets.items():
                ctx = PushContext(user_id=user_id, display_name=display_name, member_count=member_count,
                                  sender_power_level=sender_level, notification_levels=levels)
                actions = evaluate_compiled(compiled[user_id], event_dict, ctx, memo)
                notify, highlight = notify_and_highlight(actions)
                if notify or highlight:
                    rows.append(PushAction(room_id, user_id, pdu.event_id, e.stream_ordering, notify, highlight,
                                           thread, actions or []))
        await self.actions.add(rows)
        await self._maybe_prune(events[-1].stream_ordering)
        notified = {r.user_id for r in rows if r.notif}
        here = sorted(u for u in notified if self.pushes_here(u))
        if here:
            await self._wake_pushers(here)
        elsewhere = [r for r in rows if r.notif and not self.pushes_here(r.user_id)]
        if elsewhere:  # the pusher processes read these rows from the database
            self.notifier.publish_data(PUSH, {"room": room_id,
                                              "positions": sorted({r.stream_ordering for r in elsewhere}),
                                              "users": sorted({r.user_id for r in elsewhere})})

    # --- pushes handed over by other processes (workers) ------------------------------

    def on_remote_push(self, data: Any) -> None:
        """Another process stored notifications (``PUSH``: the room, the positions of the
        events and the users notified): wake the pushers of the users whose pushes this
        process sends (they read what is new from the database)."""
        if isinstance(data, dict) and isinstance(data.get("room"), str) and isinstance(data.get("positions"), list) \
                and data["positions"]:
            self._in_background(lambda: self._wake_for_hand_over(data))

    async def _wake_for_hand_over(self, data: dict[str, Any]) -> None:
        try:
            users = data.get("users")
            if not isinstance(users, list):  # from an older process: the rows say who
                rows = await self.actions.get_at_positions(data["room"], [int(p) for p in data["positions"]])
                users = [r.user_id for r in rows if r.notif]
            mine = sorted({u for u in users if isinstance(u, str) and self.pushes_here(u)})
            if mine:
                await self._wake_pushers(mine)
        except Exception:
            log.exception("waking the pushers of room %s failed", data.get("room"))

    async def start(self) -> None:
        """On a pusher process: push what the pushers of this process's users were not sent
        yet (stored while no process pushed for them, or before a restart)."""
        await self._wake_pushers_behind()

    async def on_missed(self) -> None:
        """Hand-overs may have been missed (a Redis subscription, a publisher's reset):
        wake the pushers with notifications after their position."""
        await self._wake_pushers_behind()

    async def _wake_pushers_behind(self) -> None:
        try:
            for p in await self.pushers.get_http_pushers_behind():
                if self.pushes_here(p.user_id):
                    self._wake_pusher((p.user_id, p.app_id, p.pushkey))
        except Exception:
            log.exception("looking for pushers with notifications to send failed")

    def on_remote_badge(self, data: Any) -> None:
        """Another process stored a read receipt (``BADGE``: room and user)."""
        if isinstance(data, dict) and isinstance(data.get("user"), str) and self.pushes_here(data["user"]):
            self._in_background(lambda: self._update_badges(str(data.get("room")), data["user"]))

    def on_remote_invite(self, data: Any) -> None:
        """Another process received an invite to a room this server is not in (``INVITE``)."""
        if isinstance(data, dict) and isinstance(data.get("event"), dict) and isinstance(data.get("stripped"), list) \
                and self.pushes_here(str(data["event"].get("state_key"))):
            self._in_background(lambda: self._push_out_of_band_invite(data["event"], data["stripped"]))

    # --- push gateways ---------------------------------------------------------------

    def on_out_of_band_invite(self, pdu: Any, stripped_state: Sequence[Mapping[str, Any]]) -> None:
        """An invite of a local user to a room this server is not in: evaluate the
        invitee's rules (the room is known only by the invite's stripped state) and push
        it, in the background. It has no place in the room's stream, so it counts no
        unread notification."""
        event = {"type": pdu.type, "content": pdu.content, "sender": pdu.sender, "room_id": pdu.room_id,
                 "event_id": pdu.event_id, "state_key": pdu.state_key}
        if self.pushes_here(pdu.state_key):
            self._in_background(lambda: self._push_out_of_band_invite(event, stripped_state))
        else:
            self.notifier.publish_data(INVITE, {"event": event, "stripped": list(stripped_state)})

    def _in_background(self, work: Callable[[], Any]) -> None:
        """Run ``work()`` (a coroutine) as a task ``flush_pushes`` waits for (nothing
        when no event loop runs)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(work())
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _push_out_of_band_invite(self, event: dict[str, Any], stripped_state: Sequence[Mapping[str, Any]]) -> None:
        room_id = event["room_id"]
        try:
            user_id = event["state_key"]
            state = {(e.get("type"), e.get("state_key")): e.get("content") or {} for e in stripped_state}
            joined = sum(1 for (t, _), c in state.items() if t == "m.room.member" and c.get("membership") == "join")
            ctx = PushContext(user_id=user_id, display_name=None, member_count=joined, sender_power_level=0,
                              notification_levels={"room": 50})
            actions = evaluate_compiled((await self._get_compiled([user_id]))[user_id], event, ctx, {})
            if not notify_and_highlight(actions)[0]:
                return

            def field(event_type: str, key: str) -> str | None:
                value = state.get((event_type, ""), {}).get(key)
                return value if isinstance(value, str) and value else None

            alias = field("m.room.canonical_alias", "alias")
            sender_name = state.get(("m.room.member", event["sender"]), {}).get("displayname")
            # Not in any stream (no position to resume from): one attempt per pusher.
            pushers = [p for p in await self.pushers.get_pushers(user_id) if p.kind == "http"]
            unread = await self.actions.count_unread_rooms(user_id) if pushers else 0
            for p in pushers:
                body = build_notification(p, event, list(actions),
                                          sender_display_name=sender_name if isinstance(sender_name, str) else None,
                                          room_name=field("m.room.name", "name") or alias, room_alias=alias,
                                          user_is_target=True, unread=unread)
                if await self._deliver(p, body):
                    self._badges[(p.user_id, p.app_id, p.pushkey)] = unread
        except Exception:
            log.exception("pushing an invite to %s failed", room_id)

    async def _wake_pushers(self, user_ids: Sequence[str]) -> None:
        """These users (pushed from here) have new notifications: wake their HTTP pushers;
        tell the email listeners which of them have email pushers."""
        found = await self.pushers.get_pushers_for_users(user_ids)
        emailed = sorted({p.user_id for p in found if p.kind == "email"})
        if emailed:
            for listener in self.email_listeners:
                listener(emailed)
        for p in found:
            if p.kind == "http":
                self._wake_pusher((p.user_id, p.app_id, p.pushkey))

    def _wake_pusher(self, key: tuple[str, str, str]) -> None:
        """Start the pusher's sender task, or have the running one look again; one that
        waits to retry a notification sends it (and what followed) when the wait is over."""
        if key in self._retry_timers:
            return
        if key in self._pusher_tasks:
            self._woken_again.add(key)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._run_pusher(key))
        self._pusher_tasks[key] = task
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _run_pusher(self, key: tuple[str, str, str]) -> None:
        try:
            while True:
                self._woken_again.discard(key)
                if not await self._push_pending(key) or key not in self._woken_again:
                    return
        except Exception:
            log.exception("pushing to a pusher of %s failed", key[0])
        finally:
            del self._pusher_tasks[key]

    async def _push_pending(self, key: tuple[str, str, str]) -> bool:
        """Send the pusher its unread notifications after its position, in order, storing
        the position after each. False: the gateway did not take one; a retry is set."""
        user_id, app_id, pushkey = key
        pusher = await self.pushers.get_pusher(user_id, app_id, pushkey)
        if pusher is None or pusher.kind != "http":
            self._attempts.pop(key, None)
            return True
        position = pusher.last_stream_ordering
        while True:
            rows = await self.actions.unread_after(user_id, position, PUSH_BATCH)
            if not rows:
                return True
            pdus = await self.events.get_pdus(sorted({r.event_id for r in rows}))
            unread = await self.actions.count_unread_rooms(user_id)
            rooms: dict[str, tuple[tuple[str | None, str | None], dict[str, str | None]]] = {}
            for row in rows:
                pdu = pdus.get(row.event_id)
                if pdu is not None:  # else gone (purged): skipped
                    if row.room_id not in rooms:
                        room = await self.events.get_room(row.room_id)
                        members, _, _ = await self._room_context(row.room_id, room.current_state_group)
                        rooms[row.room_id] = (await self._room_names(row.room_id),
                                              {m.user_id: m.displayname for m in members})
                    (room_name, room_alias), names = rooms[row.room_id]
                    event = {"type": pdu.type, "content": pdu.content, "sender": pdu.sender,
                             "room_id": pdu.room_id, "event_id": pdu.event_id}
                    if pdu.state_key is not None:
                        event["state_key"] = pdu.state_key
                    body = build_notification(pusher, event, row.actions, sender_display_name=names.get(pdu.sender),
                                              room_name=room_name, room_alias=room_alias,
                                              user_is_target=pdu.state_key == user_id, unread=unread)
                    outcome = await self._deliver(pusher, body)
                    if outcome is None and self._retry_later(key):
                        return False
                    self._attempts.pop(key, None)
                    if outcome is False:
                        return True  # the pusher is gone
                    if outcome:
                        self._badges[key] = unread
                position = row.stream_ordering
                await self.pushers.set_progress(user_id, app_id, pushkey, position)
            if len(rows) < PUSH_BATCH:
                return True

    def _retry_later(self, key: tuple[str, str, str]) -> bool:
        """The gateway did not take the pusher's next notification: True, try again after
        the next of ``RETRY_DELAYS_S``; False (past the last): skip it."""
        attempts = self._attempts.get(key, 0)
        if attempts >= len(RETRY_DELAYS_S):
            log.warning("the push gateway of %s did not take a notification in %d attempts; skipped",
                        key[0], attempts + 1)
            return False
        self._attempts[key] = attempts + 1
        self._retry_timers[key] = asyncio.get_running_loop().call_later(RETRY_DELAYS_S[attempts],
                                                                          self._retry_due, key)
        return True

    def _retry_due(self, key: tuple[str, str, str]) -> None:
        self._retry_timers.pop(key, None)
        self._wake_pusher(key)

    async def _deliver(self, pusher: Pusher, body: Mapping[str, Any]) -> bool | None:
        """Send one notification. True: taken; False: the gateway rejected the push key
        (the pusher is removed); None: not taken, worth trying again."""
        rejected = await self.gateway.notify(pusher, body)
        if rejected is None:
            return None
        if pusher.pushkey in rejected:
            log.info("push gateway rejected a push key of %s: pusher removed", pusher.user_id)
            await self.pushers.delete_pusher(pusher.user_id, pusher.app_id, pusher.pushkey)
            return False
        return True

    def on_receipt(self, room_id: str, receipt_type: str, user_id: str, event_id: str, data: Any) -> None:
        """The ReceiptsService listener (a local user's public read receipt): their badge
        may have gone down, so send it to their HTTP pushers, in the background (or have
        the process that sends their pushes do it)."""
        if self.pushes_here(user_id):
            self._in_background(lambda: self._update_badges(room_id, user_id))
        else:
            self.notifier.publish_data(BADGE, {"room": room_id, "user": user_id})

    async def _update_badges(self, room_id: str, user_id: str) -> None:
        """Send each of the user's HTTP pushers the user's badge (rooms with unread
        notifications) if it differs from the last one it was sent (Synapse's convention:
        the push gateway's app can clear the notification the user read elsewhere)."""
        try:
            pushers = [p for p in await self.pushers.get_pushers(user_id) if p.kind == "http"]
            if not pushers:
                return
            await self.wait_for_evaluations([room_id])
            badge = await self.actions.count_unread_rooms(user_id)
            for p in pushers:
                key = (p.user_id, p.app_id, p.pushkey)
                if self._badges.get(key) == badge:
                    continue
                self._badges[key] = badge
                await self._deliver(p, build_badge(p, badge))
        except Exception:
            log.exception("updating the badge of %s failed", user_id)

    async def _room_names(self, room_id: str) -> tuple[str | None, str | None]:
        """(room_name, room_alias) for a notification: the room's name, else its canonical
        alias (what a client would show), and the canonical alias."""
        state = self.events.state
        ids = {t: await state.get_current_state_event_id(room_id, t, "")
               for t in ("m.room.name", "m.room.canonical_alias")}
        pdus = await self.events.get_pdus([i for i in ids.values() if i])

        def field(event_type: str, key: str) -> str | None:
            pdu = pdus.get(ids[event_type] or "")
            value = pdu.content.get(key) if pdu is not None else None
            return value if isinstance(value, str) and value else None

        alias = field("m.room.canonical_alias", "alias")
        return field("m.room.name", "name") or alias, alias

    async def flush_pushes(self) -> None:
        """Wait for the notifications being sent to push gateways."""
        while self._sending:
            await asyncio.wait(list(self._sending))

    async def close(self) -> None:
        for timer in self._retry_timers.values():
            timer.cancel()
        self._retry_timers.clear()
        await self.flush()
        await self.flush_pushes()
        await self.gateway.close()

    async def _maybe_prune(self, stream_ordering: int) -> None:
        """About once an hour: a checkpoint, and push actions older than
        ``PUSH_ACTIONS_KEEP_MS`` go (the table does not grow without bound)."""
        now = self.clock_ms()
        if now - self._last_checkpoint_ms < CHECKPOINT_EVERY_MS:
            return
        self._last_checkpoint_ms = now
        await self.actions.checkpoint_and_prune(stream_ordering=stream_ordering, now_ms=now,
                                                keep_ms=PUSH_ACTIONS_KEEP_MS)

    async def _room_context(self, room_id: str, state_group: int | None):
        """The joined members, power levels content and create event of the room's
        current state (cached per state group: a run of messages costs no reads)."""
        hit = self._room_contexts.get(room_id)
        if hit is not None and hit[0] == state_group:
            self._room_contexts.move_to_end(room_id)
            return hit[1]
        members = await self.events.state.get_members(room_id, "join")
        pl_content, create = await self._power_state(room_id)
        value = (members, pl_content, create)
        self._room_contexts[room_id] = (state_group, value)
        while len(self._room_contexts) > 1000:
            self._room_contexts.popitem(last=False)
        return value

    async def _power_state(self, room_id: str):
        pl_id = await self.events.state.get_current_state_event_id(room_id, "m.room.power_levels", "")
        create_id = await self.events.state.get_current_state_event_id(room_id, "m.room.create", "")
        pdus = await self.events.get_pdus([i for i in (pl_id, create_id) if i])
        pl = pdus.get(pl_id or "")
        return (pl.content if pl is not None else None), pdus.get(create_id or "")

    async def get_unread_counts(self, user_id: str, room_id: str, after_stream_ordering: int) -> tuple[int, int]:
        """(notification_count, highlight_count) of the user's events in the room after
        the stream position (their read receipt's)."""
        await self.flush(room_id)
        return await self.actions.count_unread(user_id, room_id, after_stream_ordering)

    async def get_notifications(self, user_id: str, *, before: int | None, limit: int,
                                only_highlight: bool) -> list[PushAction]:
        await self.flush()
        return await self.actions.get_for_user(user_id, before=before, limit=limit, only_highlight=only_highlight)

    # --- pushers -----------------------------------------------------------------------

    async def get_pushers(self, user_id: str) -> list[Pusher]:
        return await self.pushers.get_pushers(user_id)

    async def set_pusher(self, user_id: str, device_id: str | None, body: Mapping[str, Any]) -> None:
        """``POST /pushers/set``: add, replace, or (kind null) delete a pusher."""
        app_id, pushkey = body.get("app_id"), body.get("pushkey")
        if not isinstance(app_id, str) or not app_id:
            raise MatrixError.missing_param("'app_id' is required")
        if not isinstance(pushkey, str) or not pushkey:
            raise MatrixError.missing_param("'pushkey' is required")
        if len(app_id) > MAX_APP_ID:
            raise MatrixError.invalid_param(f"'app_id' may be at most {MAX_APP_ID} characters")
        if len(pushkey.encode("utf-8")) > MAX_PUSHKEY_BYTES:
            raise MatrixError.invalid_param(f"'pushkey' may be at most {MAX_PUSHKEY_BYTES} bytes")
        if "kind" not in body:
            raise MatrixError.missing_param("'kind' is required")
        kind = body["kind"]
        if kind is None:
            await self.pushers.delete_pusher(user_id, app_id, pushkey)
            return
        if kind not in PUSHER_KINDS:
            raise MatrixError.invalid_param("'kind' must be 'http', 'email' or null")
        fields = {}
        for key in ("app_display_name", "device_display_name", "lang"):
            value = body.get(key)
            if not isinstance(value, str):
                raise MatrixError.missing_param(f"'{key}' is required")
            fields[key] = value
        profile_tag = body.get("profile_tag")
        if profile_tag is not None and not isinstance(profile_tag, str):
            raise MatrixError.invalid_param("'profile_tag' must be a string")
        data = body.get("data")
        if not isinstance(data, dict):
            raise MatrixError.missing_param("'data' is required")
        if kind == "http":
            url = data.get("url")
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                raise MatrixError.invalid_param("'data.url' must be an http(s) URL for an http pusher")
            if not url.split("?", 1)[0].endswith("/_matrix/push/v1/notify"):
                raise MatrixError.invalid_param("'data.url' must have the path /_matrix/push/v1/notify")
            fmt = data.get("format")
            if fmt is not None and not isinstance(fmt, str):
                raise MatrixError.invalid_param("'data.format' must be a string")
            # 'event_id_only' is the one format the spec names; any other gets the full
            # notification (as from Synapse), so a client's newer format still gets pushes.
        append = body.get("append", False)
        if not isinstance(append, bool):
            raise MatrixError.invalid_param("'append' must be true or false")
        await self.pushers.set_pusher(
            Pusher(user_id, device_id, kind, app_id, pushkey, fields["app_display_name"],
                   fields["device_display_name"], profile_tag, fields["lang"], data, self.clock_ms()),
            append=append,
        )


def pusher_json(p: Pusher) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": p.kind, "app_id": p.app_id, "pushkey": p.pushkey, "app_display_name": p.app_display_name,
        "device_display_name": p.device_display_name, "lang": p.lang, "data": p.data,
    }
    if p.profile_tag is not None:
        out["profile_tag"] = p.profile_tag
    return out


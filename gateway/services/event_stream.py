"""The v1 event stream, ``GET /events``: everything new for a user since a token, as one
list of events, long-polling until something arrives; with ``room_id``, one room, which a
user who is not in it may follow when it is world readable (room previews).

Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3events
(deprecated in favour of /sync) and
https://spec.matrix.org/latest/client-server-api/#peeking_get_matrixclientv3events

It reads the streams /sync reads and its tokens are /sync tokens (``SyncToken``): the
room events of the user's rooms, their own membership changes, presence, typing,
receipts and account data, each from its position in the token. The chunk holds, in this
order: room events (oldest first; at most ``limit``, and then the token's events position
stops at the last one given), presence (``content.user_id`` as in the v1 format, plus the
presence of whoever joins a room in the chunk: the joiner's, or everyone's in the room for
the user's own join, as Synapse sends it), typing, receipts (with their ``room_id``) and
account data (room data with its ``room_id``; none while peeking).

Events are in the v1 client format Synapse's v1 APIs use: the ClientEvent plus
``user_id`` (the sender) and ``age``, ``prev_content``, ``replaces_state``,
``redacted_because`` copied up from ``unsigned``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from ..storage.sync import TimelineEvent, UserMembership
from .receipts import receipt_events
from .room_previews import reader_membership
from .sync import MAX_TIMEOUT_MS, SyncToken
from .user_directory import presence_json

#: Room events a chunk holds when the client gives no ``limit``, and at most.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: ``unsigned`` keys the v1 format also has at the top level.
_V1_COPIED = ("age", "redacted_because", "replaces_state", "prev_content", "invite_room_state", "knock_room_state")


def v1_event(body: dict[str, Any]) -> dict[str, Any]:
    """A serialized client event in the v1 format (see the module docstring)."""
    body["user_id"] = body["sender"]
    unsigned = body.get("unsigned") or {}
    for key in _V1_COPIED:
        if key in unsigned:
            body[key] = unsigned[key]
    return body


def presence_event(user_id: str, row: Any, now_ms: int) -> dict[str, Any]:
    """An ``m.presence`` event as the v1 APIs send it (``content.user_id``) with the
    ``sender`` of the current format."""
    return {"type": "m.presence", "sender": user_id, "content": {"user_id": user_id, **presence_json(row, now_ms)}}


class EventStreamService:
    def __init__(self, hs):
        self.hs = hs

    async def current_token(self) -> SyncToken:
        positions = await self.hs.sync.store.get_positions()
        return self.token_at(positions)

    def token_at(self, positions: dict[str, int]) -> SyncToken:
        """The token of these stream positions (and of typing now)."""
        typing = self.hs.typing
        return SyncToken(positions["events"], positions["account_data"], positions["receipts"],
                         typing.current_position(), typing.instance, positions["to_device"],
                         positions["device_lists"], positions["presence"])

    async def get_events(self, user_id: str, device_id: str | None, *, from_token: str | None, timeout_ms: int,
                         limit: int, room_id: str | None = None) -> dict[str, Any]:
        """``{"chunk", "start", "end"}``: the events after ``from_token`` (after now when
        None), waiting up to ``timeout_ms`` for one. With ``room_id``: that room only,
        which the user must be joined to or the room world readable (else 403)."""
        since = SyncToken.parse(from_token) if from_token else await self.current_token()
        peeking = False
        if room_id is not None:
            member = await reader_membership(self.hs.events, room_id, user_id, allow_departed=False)
            peeking = member is None
        deadline = time.monotonic() + max(0, min(timeout_ms, MAX_TIMEOUT_MS)) / 1000
        notifier = self.hs.notifier
        with notifier.waiter(user_id) as waiter:
            while True:
                waiter.event.clear()
                chunk, end, rooms = await self._once(user_id, device_id, since, limit, room_id, peeking)
                remaining = deadline - time.monotonic()
                if chunk or remaining <= 0 or notifier.closing:
                    return {"chunk": chunk, "start": since.encode(), "end": end.encode()}
                waiter.set_rooms(rooms)
                if not await waiter.wait(remaining):
                    return {"chunk": [], "start": since.encode(), "end": end.encode()}

    async def _once(self, user_id: str, device_id: str | None, since: SyncToken, limit: int, room_id: str | None,
                    peeking: bool) -> tuple[list[dict[str, Any]], SyncToken, list[str]]:
        store = self.hs.sync.store
        positions, memberships = await store.get_positions_and_memberships(user_id)
        # As /sync: no membership of the user is beyond the token's events position.
        positions = {**positions, "events": max([positions["events"]] + [m.stream_ordering for m in memberships])}
        now = self.token_at(positions)
        after = min(since.events, now.events)
        by_room = {m.room_id: m for m in memberships}
        if room_id is not None:
            rooms = [room_id]
            # The user's own membership changes elsewhere are not part of one room's stream.
            changed: list[UserMembership] = []
        else:
            rooms = [m.room_id for m in memberships if m.membership == "join"]
            changed = [m for m in memberships if m.membership != "join" and after < m.stream_ordering <= now.events]
        device = (user_id, device_id or "")

        # Room events: joined rooms (or the peeked one); rooms the user left, was
        # invited to or knocked on since the token, up to that membership change.
        queried = rooms + [m.room_id for m in changed]
        rows = await store.get_stream_events(queried, after=after, upto=now.events, limit=limit + 1, device=device)
        end_events = now.events
        if len(rows) > limit:
            rows = rows[:limit]
            end_events = rows[-1].event.stream_ordering if rows else after
        caps = {m.room_id: m.stream_ordering for m in changed}
        rows = [t for t in rows if t.event.stream_ordering <= caps.get(t.event.pdu.room_id, end_events)]
        visible = await self._visible(user_id, rows, by_room, peeking)
        # Own membership events that are not timeline events (a remote invite).
        have = {t.event.event_id for t in visible}
        extra_ids = [m.event_id for m in changed if m.stream_ordering <= end_events and m.event_id not in have]
        extra = list((await self.hs.events.store.get_events(extra_ids)).values()) if extra_ids else []
        chunk = await self._serialize(visible, extra, device)

        ephemeral_rooms = rooms
        now_ms = self.hs.clock_ms()
        chunk += await self._presence(user_id, since, now, room_id if peeking else None, chunk, now_ms)
        typing = self.hs.typing
        s_typing = min(since.typing, now.typing) if since.instance == typing.instance else 0
        for r, ev in typing.changed_rooms(ephemeral_rooms, s_typing, now.typing).items():
            chunk.append({**ev, "room_id": r})
        if since.receipts < now.receipts:
            wanted = set(ephemeral_rooms)
            rows_r = [r for r in await self.hs.receipts.store.get_changes(since=since.receipts, upto=now.receipts)
                      if r.room_id in wanted]
            chunk += [{**ev, "room_id": r} for r, ev in receipt_events(rows_r, user_id).items()]
        if not peeking and since.account_data < now.account_data:
            for row in await self.hs.account_data.store.get_changes(user_id, since=since.account_data,
                                                                   upto=now.account_data):
                ev: dict[str, Any] = {"type": row.type, "content": row.content}
                if row.room_id:
                    ev["room_id"] = row.room_id
                chunk.append(ev)
        return chunk, replace(now, events=end_events), rooms

    async def _visible(self, user_id: str, rows: list[TimelineEvent], by_room: dict[str, UserMembership],
                       peeking: bool) -> list[TimelineEvent]:
        """History visibility, room by room (a peeker has no membership to go by)."""
        if peeking:
            allowed = {e.event_id for e in await self.hs.events.filter_visible(user_id, [t.event for t in rows])}
            return [t for t in rows if t.event.event_id in allowed]
        keep: set[str] = set()
        for room_id in {t.event.pdu.room_id for t in rows}:
            in_room = [t for t in rows if t.event.pdu.room_id == room_id]
            keep |= {t.event.event_id for t in await self.hs.sync.visible_timeline(user_id, by_room[room_id], in_room)}
        return [t for t in rows if t.event.event_id in keep]

    async def _serialize(self, rows: list[TimelineEvent], extra: list[Any],
                         device: tuple[str, str]) -> list[dict[str, Any]]:
        events = self.hs.events
        stored = sorted([t.event for t in rows] + extra, key=lambda e: e.stream_ordering)
        redactions = {t.event.event_id: t.redacted_by for t in rows if t.redacted_by}
        if extra:
            redactions.update(await events.store.get_redactions_for([e.event_id for e in extra]))
        serialized = await events.serialize_for_client(
            stored, requester_device=device, redactions=redactions,
            txn_ids={t.event.event_id: (*device, t.txn_id) for t in rows if t.txn_id is not None})
        return [v1_event(body) for body in serialized]

    async def _presence(self, user_id: str, since: SyncToken, now: SyncToken, peeked_room: str | None,
                        chunk: list[dict[str, Any]], now_ms: int) -> list[dict[str, Any]]:
        """Presence changes the user may see since the token, then the presence of those
        who joined a room in the chunk (everyone in it for the user's own join)."""
        store = self.hs.user_directory.presence_store
        rows: dict[str, Any] = {}
        start = since.presence if since.presence is not None else now.presence
        if now.presence is not None and start < now.presence:
            if peeked_room is not None:
                found = await store.get_room_changes(peeked_room, since=start, upto=now.presence)
            else:
                found = await store.get_visible_changes(user_id, since=start, upto=now.presence)
            rows.update((r.user_id, r) for r in found)
        joiners: set[str] = set()
        for ev in chunk:
            if ev.get("type") != "m.room.member" or ev.get("content", {}).get("membership") != "join":
                continue
            if ev.get("state_key") == user_id:
                joiners |= {m.user_id for m in await self.hs.events.state.get_members(ev["room_id"], "join")}
            elif isinstance(ev.get("state_key"), str):
                joiners.add(ev["state_key"])
        joiners -= set(rows)
        out = [presence_event(u, r, now_ms) for u, r in rows.items()]
        if joiners:
            found_rows = await store.get_presence(sorted(joiners))
            out += [presence_event(u, found_rows.get(u), now_ms) for u in sorted(joiners)]
        return out


"""The v1 initial syncs: ``GET /initialSync`` (a snapshot of every room of the user) and
``GET /rooms/{roomId}/initialSync`` (one room; also how a user who is not in a world
readable room starts peeking at it).

Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3initialsync
(deprecated in favour of /sync) and
https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3roomsroomidinitialsync

A room's ``messages`` are its latest ``limit`` events the user may see, oldest first:
``start`` is a /messages token for what came before them, ``end`` a /sync token of now
that /events continues from (for a room the user left: the /messages token of their
departure). ``state`` is the current state (for a room the user left, the state at their
departure). Events are in the v1 format of ``event_stream.v1_event``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..storage.account_data import AccountDataRow
from ..storage.sync import TimelineFilter, UserMembership
from .event_stream import presence_event, v1_event
from .receipts import receipt_events
from .room_previews import reader_membership
from .sync import SyncToken

#: Messages per room when the client gives no ``limit``.
DEFAULT_LIMIT = 10


class InitialSyncService:
    def __init__(self, hs):
        self.hs = hs

    async def initial_sync(self, user_id: str, device_id: str | None, *, limit: int | None,
                           archived: bool) -> dict[str, Any]:
        """Every room the user is joined or invited to (and, with ``archived``, left or
        banned from), with presence, receipts and account data."""
        limit = DEFAULT_LIMIT if limit is None else limit
        positions, memberships = await self.hs.sync.store.get_positions_and_memberships(user_id)
        token = self.hs.event_stream.token_at(positions)
        account_data = await self.hs.account_data.store.get_changes(user_id, since=None, upto=token.account_data)
        device = (user_id, device_id or "")
        rooms: list[dict[str, Any]] = []
        joined: list[str] = []
        for m in sorted(memberships, key=lambda m: m.stream_ordering):
            if m.membership == "invite":
                rooms.append(await self._invite(m))
            elif m.membership == "join" or (archived and m.membership in ("leave", "ban") and not m.forgotten):
                if m.membership == "join":
                    joined.append(m.room_id)
                rooms.append(await self._room(user_id, m.room_id, m, limit, token, device, account_data))
        receipts = await self.hs.receipts.store.get_for_rooms(joined, upto=token.receipts) if joined else []
        return {
            "end": token.encode(),
            "rooms": rooms,
            "presence": await self._presence(user_id, token),
            "account_data": [{"type": r.type, "content": r.content} for r in account_data if not r.room_id],
            "receipts": [{**ev, "room_id": r} for r, ev in receipt_events(receipts, user_id).items()],
        }

    async def room_initial_sync(self, user_id: str, device_id: str | None, room_id: str, *,
                                limit: int | None) -> dict[str, Any]:
        """One room, for a member (joined, or up to their departure) or, when the room
        is world readable, anyone (then without ``membership``); 403 otherwise."""
        limit = DEFAULT_LIMIT if limit is None else limit
        member = await reader_membership(self.hs.events, room_id, user_id)
        positions, memberships = await self.hs.sync.store.get_positions_and_memberships(user_id)
        m = next((x for x in memberships if x.room_id == room_id), None) if member is not None else None
        token = self.hs.event_stream.token_at(positions)
        account_data = await self.hs.account_data.store.get_changes(user_id, since=None, upto=token.account_data,
                                                                    room_ids=[room_id])
        return await self._room(user_id, room_id, m, limit, token, (user_id, device_id or ""), account_data,
                                with_ephemeral=True)

    async def _room(self, user_id: str, room_id: str, m: UserMembership | None, limit: int, token: SyncToken,
                    device: tuple[str, str], account_data: Sequence[AccountDataRow], *,
                    with_ephemeral: bool = False) -> dict[str, Any]:
        events = self.hs.events
        live = m is None or m.membership == "join"
        upto = token.events if live else m.stream_ordering
        rows = await self.hs.sync.store.get_timeline(room_id, after=None, upto=upto, limit=limit, flt=TimelineFilter(),
                                                     device=device)
        rows.reverse()
        if m is not None:
            rows = await self.hs.sync.visible_timeline(user_id, m, rows)
        else:
            allowed = {e.event_id for e in await events.filter_visible(user_id, [t.event for t in rows])}
            rows = [t for t in rows if t.event.event_id in allowed]
        chunk = await events.serialize_for_client(
            [t.event for t in rows], requester_device=device,
            redactions={t.event.event_id: t.redacted_by for t in rows if t.redacted_by},
            txn_ids={t.event.event_id: (*device, t.txn_id) for t in rows if t.txn_id is not None})
        if live:
            state_ids = await events.state.get_current_state_ids(room_id)
        else:
            departure = await events.store.get_event(m.event_id)
            group = departure.state_group if departure is not None else None
            state_ids = dict((await events.state.get_state(group)).state) if group is not None else {}
        state_pdus = await events.get_pdus(state_ids.values())
        state = await events.serialize_for_client([state_pdus[e] for e in state_ids.values() if e in state_pdus])
        out: dict[str, Any] = {
            "room_id": room_id,
            "messages": {
                "chunk": [v1_event(e) for e in chunk],
                "start": f"s{rows[0].event.stream_ordering - 1}" if rows else f"s{upto}",
                "end": token.encode() if live else f"s{upto}",
            },
            "state": [v1_event(e) for e in state],
            "visibility": await self.hs.directory.get_visibility(room_id),
            "account_data": [{"type": r.type, "content": r.content} for r in account_data if r.room_id == room_id],
        }
        if m is not None:
            out["membership"] = m.membership
        if with_ephemeral:
            out["presence"], out["receipts"] = [], []
            if live:
                members = [x.user_id for x in await events.state.get_members(room_id, "join")]
                found = await self.hs.user_directory.get_presence(members)
                now_ms = self.hs.clock_ms()
                out["presence"] = [presence_event(u, found.get(u), now_ms) for u in members]
                receipts = await self.hs.receipts.store.get_for_rooms([room_id], upto=token.receipts)
                out["receipts"] = [{**ev, "room_id": r} for r, ev in receipt_events(receipts, user_id).items()]
        return out

    async def _invite(self, m: UserMembership) -> dict[str, Any]:
        """An invited room: the invite event (with the room's stripped state in
        ``invite_room_state``) and who sent it."""
        out: dict[str, Any] = {"room_id": m.room_id, "membership": "invite",
                               "visibility": await self.hs.directory.get_visibility(m.room_id)}
        stored = await self.hs.events.store.get_event(m.event_id)
        if stored is not None:
            out["invite"] = v1_event((await self.hs.events.serialize_for_client([stored]))[0])
            out["inviter"] = stored.pdu.sender
        return out

    async def _presence(self, user_id: str, token: SyncToken) -> list[dict[str, Any]]:
        """The presence of everyone sharing a room with the user, and the user's own."""
        store = self.hs.user_directory.presence_store
        now_ms = self.hs.clock_ms()
        rows = {r.user_id: r for r in await store.get_visible_changes(user_id, since=None, upto=token.presence or 0)}
        out = [presence_event(u, r, now_ms) for u, r in rows.items()]
        if user_id not in rows:
            out.append(presence_event(user_id, None, now_ms))
        return out

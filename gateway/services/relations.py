"""Relationships between events: ``/relations``, bundled aggregations, ``/threads`` and
the checks on new events that relate to others.

Spec:
- https://spec.matrix.org/latest/client-server-api/#forming-relationships-between-events
- https://spec.matrix.org/latest/client-server-api/#aggregations-of-child-events
- https://spec.matrix.org/latest/client-server-api/#server-side-aggregation-of-mreplace-relationships
- https://spec.matrix.org/latest/client-server-api/#server-side-aggregation-of-mthread-relationships
- https://spec.matrix.org/latest/client-server-api/#server-side-aggregation-of-mreference
- https://spec.matrix.org/latest/client-server-api/#avoiding-duplicate-annotations
- https://spec.matrix.org/latest/client-server-api/#querying-threads-in-a-room

Aggregations leave out children that do not count (outliers, rejected, soft-failed,
redacted), children in another room than their parent, children from users the
requester ignores, and children the requester may not see (history visibility).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from federation.events import PDU
from federation.relations import (
    ANNOTATION,
    THREAD,
    can_start_thread_from,
    edit_order,
    gets_bundled_aggregations,
    is_valid_edit,
    relation_of,
)

from ..http import Codes, MatrixError
from ..storage.events import StoredEvent
from ..storage.relations import RelationStore

#: ``recurse=true`` follows relationships this many levels down (the spec asks for at least 3).
RECURSION_DEPTH = 3
#: Replies looked at, newest first, for a thread's latest event the requester may see.
_LATEST_SCAN = 50

IgnoredUsers = Callable[[str], Awaitable[frozenset[str]]]


@dataclass(frozen=True)
class RelationsPage:
    events: list[dict[str, Any]]
    #: Position to continue from (None: no more), in the /messages token sense.
    next_position: int | None


@dataclass(frozen=True)
class ThreadsPage:
    roots: list[dict[str, Any]]
    #: The last thread's latest position, to continue below (None: no more).
    next_position: int | None


class RelationsService:
    def __init__(self, events, store: RelationStore, ignored_users: IgnoredUsers):
        """``events``: the EventsService (reads, visibility, the client format);
        ``ignored_users(user_id)``: whom the user ignores."""
        self.events = events
        self.store = store
        self.ignored_users = ignored_users

    # --- checks on new local events --------------------------------------------------

    async def check_new_event(self, pdu: PDU) -> PDU:
        """Refuse a second identical annotation (400 ``M_DUPLICATE_ANNOTATION``) and a
        thread started from an event that is itself a child (400 ``M_UNKNOWN``). Runs
        under the room's lock (``EventsService.send_event``'s ``before_persist``), so two
        identical reactions sent at once cannot both pass. Other relationships, also of
        unknown types or to unknown events or events of other rooms, are accepted."""
        rel = relation_of(pdu.content)
        if rel is None:
            return pdu
        if rel.rel_type == ANNOTATION and rel.key is not None:
            if await self.store.has_annotation(rel.event_id, pdu.sender, pdu.type, rel.key):
                raise MatrixError(400, Codes.DUPLICATE_ANNOTATION, "You already sent this annotation to this event")
        elif rel.rel_type == THREAD:
            parent = (await self.events.get_pdus([rel.event_id])).get(rel.event_id)
            if parent is not None and parent.room_id == pdu.room_id and not can_start_thread_from(parent.content):
                raise MatrixError(400, Codes.UNKNOWN, "Cannot start a thread from an event with a relationship")
        return pdu

    # --- /relations ----------------------------------------------------------------------

    async def visible_event(self, user_id: str, room_id: str, event_id: str) -> StoredEvent:
        """A timeline event of the room the user may see, else 404 (as for /event)."""
        await self.events.get_room(room_id)
        stored = await self.events.store.get_event(event_id)
        if stored is None or stored.pdu.room_id != room_id or stored.outlier or stored.rejected_reason \
                or stored.soft_failed or not await self.events.filter_visible(user_id, [stored]):
            raise MatrixError.not_found("Event not found")
        return stored

    async def get_relations(
        self, user_id: str, device: tuple[str, str] | None, room_id: str, event_id: str, *,
        rel_type: str | None, event_type: str | None, from_pos: int | None, to_pos: int | None,
        backwards: bool, limit: int, recurse: bool,
    ) -> RelationsPage:
        """The children of an event the user may see, with their bundled aggregations."""
        await self.visible_event(user_id, room_id, event_id)
        ignored = sorted(await self.ignored_users(user_id))
        found = await self.store.get_children(
            room_id, event_id, rel_type=rel_type, event_type=event_type, from_pos=from_pos, to_pos=to_pos,
            backwards=backwards, limit=limit + 1, depth=RECURSION_DEPTH if recurse else 1, not_senders=ignored)
        more = len(found) > limit
        found = found[:limit]
        visible = await self.events.filter_visible(user_id, found)
        chunk = await self.events.serialize_for_client(visible, requester_device=device)
        await self.bundle_aggregations(chunk, user_id)
        next_position = None
        if more and found:
            last = found[-1].stream_ordering
            next_position = last - 1 if backwards else last
        return RelationsPage(chunk, next_position)

    # --- bundled aggregations ----------------------------------------------------------

    async def bundle_aggregations(self, events: Sequence[dict[str, Any]], user_id: str) -> None:
        """Add ``unsigned["m.relations"]`` to the client-format ``events`` (in place) that
        have aggregated children as ``user_id`` may see them: ``m.replace`` (the latest
        valid edit, not for a redacted event), ``m.thread`` (``latest_event`` with its
        own aggregations, ``count``, ``current_user_participated``) and ``m.reference``
        (``chunk``). For any endpoint that serves events (/search results too)."""
        await self._bundle(events, user_id, sorted(await self.ignored_users(user_id)), with_threads=True)

    async def _bundle(self, events: Sequence[dict[str, Any]], user_id: str, ignored: Sequence[str], *,
                      with_threads: bool) -> None:
        parents = {e["event_id"]: e for e in events
                   if isinstance(e.get("event_id"), str) and gets_bundled_aggregations(e)}
        if not parents:
            return
        ids = list(parents)
        found: dict[str, dict[str, Any]] = {}
        for parent_id, edit in (await self._latest_edits(parents, ids, ignored, user_id)).items():
            found.setdefault(parent_id, {})["m.replace"] = edit
        if with_threads:
            for parent_id, thread in (await self._threads(parents, ids, ignored, user_id)).items():
                found.setdefault(parent_id, {})["m.thread"] = thread
        for parent_id, chunk in (await self._references(parents, ids, ignored, user_id)).items():
            found.setdefault(parent_id, {})["m.reference"] = {"chunk": chunk}
        for parent_id, relations in found.items():
            unsigned = parents[parent_id].setdefault("unsigned", {})
            unsigned["m.relations"] = {**(unsigned.get("m.relations") or {}), **relations}

    async def _latest_edits(self, parents: Mapping[str, dict], ids: Sequence[str], ignored: Sequence[str],
                            user_id: str) -> dict[str, dict[str, Any]]:
        unredacted = [i for i in ids if "redacted_because" not in (parents[i].get("unsigned") or {})]
        candidates = [c for c in await self.store.get_edit_candidates(unredacted, ignored)
                      if c.room_id == parents[c.parent_id].get("room_id")
                      and c.sender == parents[c.parent_id].get("sender") and c.type == parents[c.parent_id].get("type")]
        if not candidates:
            return {}
        stored = await self.events.store.get_events([c.event_id for c in candidates])
        visible = await self.events.filter_visible(user_id, list(stored.values()))
        edits = await self.events.serialize_for_client(visible)
        best: dict[str, dict[str, Any]] = {}
        for edit in edits:
            parent_id = relation_of(edit.get("content") or {}).event_id  # type: ignore[union-attr]
            if not is_valid_edit(parents[parent_id], edit):
                continue
            if parent_id not in best or edit_order(edit) > edit_order(best[parent_id]):
                best[parent_id] = edit
        return best

    async def _threads(self, parents: Mapping[str, dict], ids: Sequence[str], ignored: Sequence[str],
                       user_id: str) -> dict[str, dict[str, Any]]:
        summaries = {p: s for p, s in (await self.store.get_thread_summaries(ids, user_id, ignored)).items()
                     if s.room_id == parents[p].get("room_id")}
        if not summaries:
            return {}
        latest = {e.stream_ordering: e for e in await self.events.store.get_events_at_positions(
            [s.latest_position for s in summaries.values()])}
        visible = {e.event_id for e in await self.events.filter_visible(user_id, list(latest.values()))}
        chosen: dict[str, StoredEvent] = {}
        for parent_id, summary in summaries.items():
            event = latest.get(summary.latest_position)
            if event is not None and event.event_id in visible:
                chosen[parent_id] = event
                continue
            # The newest reply is hidden from this user (e.g. sent after they left): the
            # newest one they may see.
            older = await self.store.get_children(summary.room_id, parent_id, rel_type=THREAD, limit=_LATEST_SCAN,
                                                  not_senders=ignored)
            seen = await self.events.filter_visible(user_id, older)
            if seen:
                chosen[parent_id] = seen[0]
        counts = await self._visible_reply_counts(list(chosen), {p: summaries[p].room_id for p in chosen},
                                                  ignored, user_id)
        serialized = await self.events.serialize_for_client(list(chosen.values()))
        # The latest events get their own aggregations (edits, references; threads do not nest).
        await self._bundle(serialized, user_id, ignored, with_threads=False)
        by_id = {e["event_id"]: e for e in serialized}
        out: dict[str, dict[str, Any]] = {}
        for parent_id, event in chosen.items():
            summary = summaries[parent_id]
            out[parent_id] = {
                "latest_event": by_id[event.event_id],
                "count": counts.get(parent_id, 0),
                "current_user_participated": summary.participated or parents[parent_id].get("sender") == user_id,
            }
        return out

    async def _visible_reply_counts(self, roots: Sequence[str], rooms: Mapping[str, str], ignored: Sequence[str],
                                    user_id: str) -> dict[str, int]:
        """Per thread root, the replies ``user_id`` may see (history visibility), counted
        by the state group they were sent at: the replies themselves are not loaded."""
        if not roots:
            return {}
        rows = [(root, group, n) for root, room, group, n in await self.store.get_thread_reply_groups(roots, ignored)
                if room == rooms[root]]
        by_room: dict[str, set[int]] = {}
        for root, group, _ in rows:
            if group is not None:
                by_room.setdefault(rooms[root], set()).add(group)
        visible = {room: await self.events.visible_state_groups(user_id, room, groups)
                   for room, groups in by_room.items()}
        counts: dict[str, int] = {}
        for root, group, n in rows:
            if group is not None and group in visible[rooms[root]]:
                counts[root] = counts.get(root, 0) + n
        special = [(root, reply) for root, room, reply in await self.store.get_thread_special_replies(roots, ignored)
                   if room == rooms[root]]
        if special:
            stored = await self.events.store.get_events([reply for _, reply in special])
            seen = {e.event_id for e in await self.events.filter_visible(user_id, list(stored.values()))}
            for root, reply in special:
                if reply in seen:
                    counts[root] = counts.get(root, 0) + 1
        return counts

    async def _references(self, parents: Mapping[str, dict], ids: Sequence[str], ignored: Sequence[str],
                          user_id: str) -> dict[str, list[dict[str, str]]]:
        rows = [(p, c) for p, c, room in await self.store.get_references(ids, ignored)
                if room == parents[p].get("room_id")]
        if not rows:
            return {}
        stored = await self.events.store.get_events([c for _, c in rows])
        visible = {e.event_id for e in await self.events.filter_visible(user_id, list(stored.values()))}
        out: dict[str, list[dict[str, str]]] = {}
        for parent_id, child_id in rows:
            if child_id in visible:
                out.setdefault(parent_id, []).append({"event_id": child_id})
        return out

    # --- /threads -----------------------------------------------------------------------

    async def list_threads(self, user_id: str, device: tuple[str, str] | None, room_id: str, *,
                           participated: bool, limit: int, before: int | None) -> ThreadsPage:
        """The room's thread roots the user may see, most recently active first, with
        their bundled aggregations. 403 for a user who was never in the room. A root by
        an ignored user is served redacted (spec)."""
        await self.events.get_room(room_id)
        member = await self.events.state.get_membership(room_id, user_id)
        if member is None:
            raise MatrixError.forbidden(f"You are not a member of {room_id}")
        rows = await self.store.get_thread_roots(room_id, limit=limit + 1, before=before,
                                                 participant=user_id if participated else None)
        more = len(rows) > limit
        rows = rows[:limit]
        stored = await self.events.store.get_events([root for root, _ in rows])
        visible = {e.event_id: e for e in await self.events.filter_visible(user_id, list(stored.values()))}
        ignored = await self.ignored_users(user_id)
        roots = [visible[root] for root, _ in rows if root in visible]
        roots = [r if r.pdu.sender not in ignored else _redacted(r) for r in roots]
        serialized = await self.events.serialize_for_client(roots, requester_device=device)
        await self.bundle_aggregations(serialized, user_id)
        return ThreadsPage(serialized, rows[-1][1] if more and rows else None)


def _redacted(event: StoredEvent) -> StoredEvent:
    """The event with its content pruned as by a redaction (no ``redacted_because``)."""
    return replace(event, pdu=event.pdu.redacted())

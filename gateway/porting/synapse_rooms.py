"""import-synapse, rooms: every room a local user has a membership in, with the events
Synapse holds (stored as they are: same event IDs, signatures intact), its state groups,
current state and memberships, forward extremities, transaction IDs, aliases, directory
visibility and blocks. Invites to (and rejections of invites to) rooms Synapse is not in
come over as out-of-band memberships.

Each room is read whole from Synapse and written in one transaction (gateway/porting/
room_writer.py); a room that is there already is skipped, so a rerun finishes the job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from federation.events import PDU
from federation.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion

from ..storage.events import EventStore
from ..storage.out_of_band import OutOfBandStore
from ..storage.state import StateStore
from . import PortingError
from .room_writer import ImportedEvent, RoomHistory, SourceStateGroup, write_room
from .synapse_import import ImportContext, insert_rows, json_value

#: ``unsigned`` keys of stored events that mean something to us (the rest is Synapse's own).
_KEPT_UNSIGNED = ("age_ts", "invite_room_state", "knock_room_state")


@dataclass
class SynapseRoom:
    room_id: str
    room_version: RoomVersion
    is_public: bool


async def import_rooms(ctx: ImportContext) -> None:
    src = ctx.source
    rooms = await _rooms_of_local_users(ctx)
    await _check_our_rooms(ctx, {r.room_id for r in rooms})
    await _move_counters(ctx)
    partial = {r[0] for r in await src.fetch("SELECT room_id FROM partial_state_rooms")}
    ours = {r[0] for r in await ctx.target.fetch("SELECT room_id FROM rooms")}
    for room in rooms:
        has_state = await src.fetchval("SELECT 1 FROM current_state_events WHERE room_id = $1 LIMIT 1", room.room_id)
        if not has_state:
            await _out_of_band_memberships(ctx, room)
            continue
        if room.room_id in ours:
            continue
        if room.room_id in partial:
            ctx.report(f"room {room.room_id}: Synapse had not finished joining it (partial state): "
                       "join it again once the server runs")
            ctx.count("rooms left out (partial state)", 1)
            continue
        history = await read_room(ctx, room)
        await write_room(ctx.target, history)
        ctx.count("rooms", 1)
        ctx.count("events", len(history.events))
    imported = {r[0] for r in await ctx.target.fetch("SELECT room_id FROM rooms")}
    aliases = await src.fetch("SELECT room_alias, room_id, creator FROM room_aliases")
    await insert_rows(ctx, "room_aliases", ("room_alias", "room_id", "creator", "created_ts"), [
        (r[0], r[1], r[2] or "", ctx.now_ms) for r in aliases if r[1] in imported], what="aliases")
    blocked = await src.fetch("SELECT room_id, user_id FROM blocked_rooms")
    await insert_rows(ctx, "blocked_rooms", ("room_id", "user_id", "blocked_ts"),
                      [(r[0], r[1], ctx.now_ms) for r in blocked], what="blocked rooms")


async def _rooms_of_local_users(ctx: ImportContext) -> list[SynapseRoom]:
    rows = await ctx.source.fetch(
        "SELECT r.room_id, r.room_version, r.is_public FROM rooms r"
        " WHERE r.room_id IN (SELECT room_id FROM local_current_membership) ORDER BY r.room_id")
    out = []
    for room_id, version, is_public in rows:
        rv = KNOWN_ROOM_VERSIONS.get(version or "1")
        if rv is None:
            ctx.report(f"room {room_id}: room version {version!r} is not one we implement: left out")
            ctx.count("rooms left out (room version)", 1)
            continue
        out.append(SynapseRoom(room_id, rv, bool(is_public)))
    return out


async def _check_our_rooms(ctx: ImportContext, synapse_rooms: set[str]) -> None:
    """Synapse's event positions are kept: our database may hold no rooms of its own."""
    own = [r[0] for r in await ctx.target.fetch("SELECT room_id FROM rooms") if r[0] not in synapse_rooms]
    if own:
        raise PortingError(f"our database already has rooms of its own ({own[0]} and {len(own) - 1} more): "
                           "import into a new database")


async def _move_counters(ctx: ImportContext) -> None:
    """Imported timeline events keep Synapse's positions: our counters move past them
    (new events above the highest, the past below the lowest), and the federation sender
    starts after them (they were sent by Synapse)."""
    low, high = await ctx.source.fetchrow("SELECT MIN(stream_ordering), MAX(stream_ordering) FROM events")
    low, high = min(int(low or 0), 0), max(int(high or 0), 0)
    async with ctx.target.transaction() as txn:
        await txn.execute("UPDATE stream_positions SET position = $1 WHERE stream_name = 'events' AND position < $1",
                          high)
        await txn.execute("UPDATE stream_positions SET position = $1 WHERE stream_name = 'backfill' "
                          "AND position > $1", low)
        await txn.execute("UPDATE federation_sender_position SET stream_ordering = $1 WHERE stream_ordering < $1",
                          high)


async def read_room(ctx: ImportContext, room: SynapseRoom) -> RoomHistory:
    """Everything of one room that Synapse holds and we keep."""
    src, room_id = ctx.source, room.room_id
    rows = await src.fetch(
        "SELECT e.event_id, e.stream_ordering, e.outlier, e.received_ts, j.json, j.internal_metadata, r.reason,"
        " s.state_group FROM events e JOIN event_json j ON j.event_id = e.event_id"
        " LEFT JOIN rejections r ON r.event_id = e.event_id"
        " LEFT JOIN event_to_state_groups s ON s.event_id = e.event_id"
        " WHERE e.room_id = $1 ORDER BY e.stream_ordering", room_id)
    txns = {r[0]: (r[1], r[2], r[3], int(r[4] or 0)) for r in await src.fetch(
        "SELECT event_id, user_id, device_id, txn_id, inserted_ts FROM event_txn_id_device_id WHERE room_id = $1",
        room_id)}
    events = []
    for event_id, position, outlier, received_ts, raw, meta, rejected, group in rows:
        pdu = _pdu(event_id, raw, room.room_version)
        metadata = json_value(meta) or {}
        events.append(ImportedEvent(
            pdu=pdu, position=int(position), outlier=bool(outlier), rejected_reason=rejected,
            soft_failed=bool(metadata.get("soft_failed")), synapse_group=group,
            received_ts=int(received_ts or pdu.origin_server_ts), txn=txns.get(event_id)))
    groups = await _state_groups(ctx, room_id)
    current = {(r[0], r[1]): r[2] for r in await src.fetch(
        "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = $1", room_id)}
    extremities = [r[0] for r in await src.fetch(
        "SELECT event_id FROM event_forward_extremities WHERE room_id = $1", room_id)]
    forgotten = {r[0] for r in await src.fetch(
        "SELECT user_id FROM room_memberships WHERE room_id = $1 AND forgotten = 1", room_id)}
    return RoomHistory(room_id=room_id, room_version=room.room_version, is_public=room.is_public, events=events,
                       groups=groups, current_state=current, forward_extremities=extremities, forgotten=forgotten)


def _pdu(event_id: str, raw, room_version: RoomVersion) -> PDU:
    """The event as Synapse stored it, under Synapse's event ID, with Synapse's own
    ``unsigned`` data dropped (it is covered by no hash or signature)."""
    body = json_value(raw)
    if not isinstance(body, dict):
        raise PortingError(f"event {event_id}: Synapse's stored JSON is not an object")
    unsigned = body.get("unsigned")
    if isinstance(unsigned, dict):
        kept = {k: v for k, v in unsigned.items() if k in _KEPT_UNSIGNED}
        if kept:
            body["unsigned"] = kept
        else:
            body.pop("unsigned")
    try:
        return PDU(body, room_version, event_id)
    except (KeyError, TypeError, IndexError) as e:
        raise PortingError(f"event {event_id}: Synapse's stored JSON lacks {e}") from None


async def _state_groups(ctx: ImportContext, room_id: str) -> Mapping[int, SourceStateGroup]:
    """A room's state groups: each a full snapshot, or a delta against its ``prev``."""
    src = ctx.source
    groups = {int(r[0]): SourceStateGroup(None, r[1]) for r in await src.fetch(
        "SELECT id, event_id FROM state_groups WHERE room_id = $1", room_id)}
    for group, prev in await src.fetch(
            "SELECT e.state_group, e.prev_state_group FROM state_group_edges e"
            " JOIN state_groups g ON g.id = e.state_group WHERE g.room_id = $1", room_id):
        if int(group) in groups:
            groups[int(group)].prev = int(prev)
    for group, etype, state_key, event_id in await src.fetch(
            "SELECT state_group, type, state_key, event_id FROM state_groups_state WHERE room_id = $1", room_id):
        if int(group) in groups:
            groups[int(group)].delta[(etype, state_key)] = event_id
    return groups


async def _out_of_band_memberships(ctx: ImportContext, room: SynapseRoom) -> None:
    """Invites to rooms Synapse is not in (and their rejections): the membership event
    (an outlier in Synapse, with the room's stripped state in ``unsigned``)."""
    rows = await ctx.source.fetch(
        "SELECT m.user_id, m.event_id, j.json FROM local_current_membership m"
        " JOIN event_json j ON j.event_id = m.event_id WHERE m.room_id = $1", room.room_id)
    store = OutOfBandStore(ctx.target)
    for user_id, event_id, raw in rows:
        have = await ctx.target.fetchval(
            "SELECT event_id FROM room_memberships WHERE room_id = $1 AND user_id = $2", room.room_id, user_id)
        if have == event_id:
            continue
        # As our own invites from other servers: a room row (its version) without state.
        await EventStore(ctx.target, StateStore(ctx.target)).ensure_room(
            room.room_id, room.room_version, creator=None, created_ts=ctx.now_ms)
        await store.store_membership(_pdu(event_id, raw, room.room_version), received_ts=ctx.now_ms)
        ctx.count("out-of-band memberships", 1)

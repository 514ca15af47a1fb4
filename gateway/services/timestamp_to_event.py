"""The event closest to a timestamp, asking the other servers of the room when our copy
may lack it.

Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1roomsroomidtimestamp_to_event
and https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1timestamp_to_eventroomid

Our copy may lack the answer when it has no event past the timestamp in that direction,
or when the event it found borders a gap: looking forwards, an event whose prev events we
do not hold (our join's, with the room's history before it); looking backwards, a forward
extremity (newer events may not have reached us). Then the other servers of the room are
asked (``GET /_matrix/federation/v1/timestamp_to_event``) in turn; an answer closer to the
timestamp than ours is fetched into our timeline, so that clients can use it with
``/context`` and ``/messages``: by backfill when it is older than our history, through the
receipt pipeline (gaps filled) when newer. An event we cannot obtain is not returned.
"""

from __future__ import annotations

import logging
from federation.net.client import FederationRequestError
from federation.signing import quote_path_segment

from ..storage.events import StoredEvent

log = logging.getLogger(__name__)

#: Other servers asked, in turn, at most.
MAX_SERVERS = 5
#: Seconds each may take.
REMOTE_TIMEOUT = 10.0
#: Backfill requests made to reach an older event, at most.
MAX_BACKFILL_ROUNDS = 10


class TimestampToEvent:
    def __init__(self, *, server_name: str, db, events, directory, federation_client, federation_events, backfill):
        self.server_name = server_name
        self.db = db
        self.events = events
        self.store = events.store
        self.directory = directory  # the servers of a room
        self.federation = federation_client
        self.federation_events = federation_events
        self.backfill = backfill

    async def find(self, room_id: str, ts: int, *, forwards: bool) -> StoredEvent | None:
        """The first timeline event at or after ``ts`` (``forwards``), or the last at or
        before it: ours, or a closer one another server knows."""
        local = await self.store.get_event_near_ts(room_id, ts, forwards=forwards)
        if local is not None and not await self._borders_gap(local, forwards=forwards):
            return local
        for server in await self._other_servers(room_id):
            answer = await self._ask(server, room_id, ts, forwards=forwards)
            if answer is None:
                continue
            event_id, claimed_ts = answer
            if local is not None and (event_id == local.event_id
                                      or abs(claimed_ts - ts) >= abs(local.pdu.origin_server_ts - ts)):
                return local
            obtained = await self._obtain(server, room_id, event_id)
            on_the_right_side = obtained is not None and (
                obtained.pdu.origin_server_ts >= ts if forwards else obtained.pdu.origin_server_ts <= ts)
            if on_the_right_side and (local is None or abs(obtained.pdu.origin_server_ts - ts)
                                      < abs(local.pdu.origin_server_ts - ts)):
                return obtained
            break  # one server's answer is enough (as Synapse does); ours stands
        return local

    async def _borders_gap(self, event: StoredEvent, *, forwards: bool) -> bool:
        if forwards:
            prevs = await self.store.get_prev_event_ids(event.event_id)
            metas = await self.store.get_event_meta(prevs)
            return any(p not in metas or metas[p].outlier for p in prevs)
        return event.event_id in await self.store.get_forward_extremities(event.pdu.room_id)

    async def _other_servers(self, room_id: str) -> list[str]:
        servers = [s for s in await self.directory.servers_in_room(room_id) if s != self.server_name]
        return servers[:MAX_SERVERS]

    async def _ask(self, server: str, room_id: str, ts: int, *, forwards: bool) -> tuple[str, int] | None:
        try:
            answer = await self.federation.request(
                "GET", server, f"/_matrix/federation/v1/timestamp_to_event/{quote_path_segment(room_id)}",
                query={"ts": str(ts), "dir": "f" if forwards else "b"}, timeout=REMOTE_TIMEOUT)
        except FederationRequestError as e:
            log.info("timestamp_to_event in %s from %s: %s", room_id, server, e)
            return None
        event_id = answer.get("event_id") if isinstance(answer, dict) else None
        claimed = answer.get("origin_server_ts") if isinstance(answer, dict) else None
        if not isinstance(event_id, str) or not event_id.startswith("$") \
                or not isinstance(claimed, int) or isinstance(claimed, bool):
            log.info("timestamp_to_event in %s from %s: a malformed answer", room_id, server)
            return None
        return event_id, claimed

    async def _in_timeline(self, event_id: str, room_id: str) -> StoredEvent | None:
        stored = await self.store.get_event(event_id)
        if stored is None or stored.pdu.room_id != room_id or stored.outlier or stored.rejected_reason \
                or stored.soft_failed:
            return None
        return stored

    async def _obtain(self, server: str, room_id: str, event_id: str) -> StoredEvent | None:
        """The event in our timeline: already there, backfilled (older than our
        history) or received (newer); None if that fails."""
        found = await self._in_timeline(event_id, room_id)
        if found is not None:
            return found
        room = await self.store.get_room(room_id)
        pdu_json = await self.federation_events.fetch_event(server, room.room_version, event_id)
        if pdu_json is None or pdu_json.get("room_id") != room_id:
            return None
        oldest = await self.db.fetchval(
            "SELECT MIN(depth) FROM events WHERE room_id = $1 AND outlier = FALSE", room_id)
        depth = pdu_json.get("depth")
        if isinstance(depth, int) and oldest is not None and depth < int(oldest):
            for _ in range(MAX_BACKFILL_ROUNDS):
                if not await self.backfill.backfill(room_id):
                    break
                found = await self._in_timeline(event_id, room_id)
                if found is not None:
                    return found
            return None
        await self.federation_events.receive_pdus(server, room_id, [pdu_json])
        return await self._in_timeline(event_id, room_id)

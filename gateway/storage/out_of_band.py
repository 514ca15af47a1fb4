"""Out-of-band memberships: an invite to (or the rejection of an invite to) a room this
server is not in. The event is stored as an outlier (no state, not in any timeline), and
the user's ``room_memberships`` row points at it with a new events-stream position, so
that /sync reports the invite (or the leave) like any other membership change.

Spec: https://spec.matrix.org/latest/server-server-api/#inviting-to-a-room
"""

from __future__ import annotations

from federation.events import PDU

from .database import Database
from .events import encode_pdu_json
from .state import next_position, upsert_membership


class OutOfBandStore:
    def __init__(self, db: Database):
        self.db = db

    async def store_membership(self, pdu: PDU, *, received_ts: int) -> int:
        """Store the membership event (replacing an outlier copy) and point the target's
        membership row at it; returns the events-stream position taken."""
        async with self.db.transaction() as txn:
            position = await next_position(txn, "events", 1)
            await txn.execute("DELETE FROM events WHERE event_id = $1 AND outlier = TRUE", pdu.event_id)
            await txn.execute(
                "INSERT INTO events (event_id, stream_ordering, room_id, type, state_key, sender, depth,"
                " origin_server_ts, received_ts, json, outlier)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, TRUE) ON CONFLICT (event_id) DO NOTHING",
                pdu.event_id, position, pdu.room_id, pdu.type, pdu.state_key, pdu.sender, pdu.depth,
                pdu.origin_server_ts, received_ts, encode_pdu_json(pdu),
            )
            await upsert_membership(txn, room_id=pdu.room_id, user_id=pdu.state_key, event_id=pdu.event_id,
                                    sender=pdu.sender, stream_ordering=position, content=pdu.content)
        return position

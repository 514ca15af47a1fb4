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
from .state import next_position


class OutOfBandStore:
    def __init__(self, db: Database):
        self.db = db

    async def store_membership(self, pdu: PDU, *, received_ts: int) -> int:
        """Store the membership event (replacing an outlier copy) and point the target's
        membership row at it; returns the events-stream position taken."""
        content = pdu.content
        membership = content.get("membership")
        displayname, avatar_url = content.get("displayname"), content.get("avatar_url")
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
            await txn.execute(
                "INSERT INTO room_memberships"
                " (room_id, user_id, membership, event_id, sender, stream_ordering, displayname, avatar_url)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                " ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,"
                " event_id = excluded.event_id, sender = excluded.sender,"
                " stream_ordering = excluded.stream_ordering, displayname = excluded.displayname,"
                " avatar_url = excluded.avatar_url, forgotten = FALSE",
                pdu.room_id, pdu.state_key, membership if isinstance(membership, str) else "leave", pdu.event_id,
                pdu.sender, position, displayname if isinstance(displayname, str) else None,
                avatar_url if isinstance(avatar_url, str) else None,
            )
        return position

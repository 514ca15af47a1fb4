"""What missed-message mails need from the database: each email pusher's progress, and the
unread notifications after it (gateway/services/email_notifs.py)."""

from __future__ import annotations

from dataclasses import dataclass

from .database import Database


@dataclass(frozen=True)
class UnreadNotification:
    room_id: str
    event_id: str
    stream_ordering: int
    highlight: bool


class EmailPusherStore:
    def __init__(self, db: Database):
        self.db = db

    async def progress(self, user_id: str, app_id: str, pushkey: str) -> int:
        value = await self.db.fetchval(
            "SELECT last_stream_ordering FROM email_pusher_progress WHERE user_id = $1 AND app_id = $2"
            " AND pushkey = $3", user_id, app_id, pushkey)
        return int(value or 0)

    async def set_progress(self, user_id: str, app_id: str, pushkey: str, stream_ordering: int,
                           mailed_ts: int | None) -> None:
        await self.db.execute(
            "INSERT INTO email_pusher_progress (user_id, app_id, pushkey, last_stream_ordering, last_mail_ts)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET"
            " last_stream_ordering = excluded.last_stream_ordering,"
            " last_mail_ts = COALESCE(excluded.last_mail_ts, email_pusher_progress.last_mail_ts)",
            user_id, app_id, pushkey, stream_ordering, mailed_ts)

    async def latest_notification(self, user_id: str) -> int:
        value = await self.db.fetchval("SELECT MAX(stream_ordering) FROM event_push_actions WHERE user_id = $1"
                                       " AND notif = TRUE", user_id)
        return int(value or 0)

    async def unread_after(self, user_id: str, after: int, upto: int, limit: int) -> list[UnreadNotification]:
        """The user's notifications after position ``after`` (up to ``upto``) that are still
        unread (after their read receipt in the room), oldest first."""
        rows = await self.db.fetch(
            "SELECT e.room_id, e.event_id, e.stream_ordering, e.highlight FROM event_push_actions e"
            " LEFT JOIN (SELECT room_id, MAX(event_stream_ordering) AS pos FROM receipts"
            "  WHERE user_id = $1 AND thread_id = '' AND receipt_type IN ('m.read', 'm.read.private')"
            "  GROUP BY room_id) r ON r.room_id = e.room_id"
            " WHERE e.user_id = $1 AND e.notif = TRUE AND e.stream_ordering > $2 AND e.stream_ordering <= $3"
            " AND e.stream_ordering > COALESCE(r.pos, 0) ORDER BY e.stream_ordering LIMIT $4",
            user_id, after, upto, limit)
        return [UnreadNotification(r[0], r[1], int(r[2]), bool(r[3])) for r in rows]

    async def users_with_pending_notifications(self) -> list[str]:
        """Users with an email pusher and notifications after its progress."""
        rows = await self.db.fetch(
            "SELECT DISTINCT p.user_id FROM pushers p"
            " LEFT JOIN email_pusher_progress g ON g.user_id = p.user_id AND g.app_id = p.app_id"
            "  AND g.pushkey = p.pushkey"
            " WHERE p.kind = 'email' AND EXISTS (SELECT 1 FROM event_push_actions e WHERE e.user_id = p.user_id"
            "  AND e.notif = TRUE AND e.stream_ordering > COALESCE(g.last_stream_ordering, 0))")
        return [r[0] for r in rows]

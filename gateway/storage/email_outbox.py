"""Mail waiting to be sent: each row is a whole message, retried until the SMTP server takes it."""

from __future__ import annotations

from dataclasses import dataclass

from .database import Database


@dataclass(frozen=True)
class OutgoingMail:
    mail_id: str
    recipient: str
    message: str
    created_ts: int
    attempts: int


class EmailOutboxStore:
    def __init__(self, db: Database):
        self.db = db

    async def add(self, mail_id: str, recipient: str, message: str, now_ms: int) -> None:
        await self.db.execute("INSERT INTO email_outbox (mail_id, recipient, message, created_ts, next_attempt_ts)"
                              " VALUES ($1, $2, $3, $4, $4)", mail_id, recipient, message, now_ms)

    async def due(self, now_ms: int, limit: int = 20) -> list[OutgoingMail]:
        rows = await self.db.fetch("SELECT mail_id, recipient, message, created_ts, attempts FROM email_outbox"
                                   " WHERE next_attempt_ts <= $1 ORDER BY next_attempt_ts, created_ts LIMIT $2",
                                   now_ms, limit)
        return [OutgoingMail(*r) for r in rows]

    async def next_attempt_ts(self) -> int | None:
        return await self.db.fetchval("SELECT MIN(next_attempt_ts) FROM email_outbox")

    async def sent(self, mail_id: str) -> None:
        await self.db.execute("DELETE FROM email_outbox WHERE mail_id = $1", mail_id)

    async def failed(self, mail_id: str, next_attempt_ts: int, error: str) -> None:
        await self.db.execute("UPDATE email_outbox SET attempts = attempts + 1, next_attempt_ts = $2, last_error = $3"
                              " WHERE mail_id = $1", mail_id, next_attempt_ts, error[:1000])

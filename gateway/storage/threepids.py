"""Adding and removing 3PIDs of accounts, their identity server bindings, and address validation sessions."""

from __future__ import annotations

from dataclasses import dataclass

from .database import Database, IntegrityError

_SESSION_COLUMNS = ("session_id, medium, address, client_secret, purpose, last_send_attempt, token_hash,"
                    " token_expires_ts, next_link, created_ts, validated_at, uia_session_id")


@dataclass(frozen=True)
class ValidationSession:
    session_id: str
    medium: str
    address: str
    client_secret: str
    purpose: str
    last_send_attempt: int
    token_hash: str
    token_expires_ts: int
    next_link: str | None
    created_ts: int
    validated_at: int | None
    uia_session_id: str | None


class ThreepidInUseError(Exception):
    """The address is on another account already."""


class ThreepidStore:
    def __init__(self, db: Database):
        self.db = db

    # --- 3PIDs of accounts (reads: UserStore.get_threepids, get_user_by_threepid) ---------

    async def add_threepid(self, user_id: str, medium: str, address: str, validated_at: int, now_ms: int) -> None:
        """Raises ThreepidInUseError when another account has it (adding it again is fine)."""
        try:
            await self.db.execute("INSERT INTO user_threepids (user_id, medium, address, validated_at, added_at)"
                                  " VALUES ($1, $2, $3, $4, $5)", user_id, medium, address, validated_at, now_ms)
        except IntegrityError:
            owner = await self.db.fetchval("SELECT user_id FROM user_threepids WHERE medium = $1 AND address = $2",
                                           medium, address)
            if owner != user_id:
                raise ThreepidInUseError(address) from None

    async def remove_threepid(self, user_id: str, medium: str, address: str) -> bool:
        n = await self.db.execute("DELETE FROM user_threepids WHERE user_id = $1 AND medium = $2 AND address = $3",
                                  user_id, medium, address)
        return n > 0

    # --- identity server bindings ----------------------------------------------------------

    async def add_binding(self, user_id: str, medium: str, address: str, id_server: str) -> None:
        await self.db.execute("INSERT INTO user_threepid_id_servers (user_id, medium, address, id_server)"
                              " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING", user_id, medium, address, id_server)

    async def bindings(self, user_id: str, medium: str | None = None, address: str | None = None) -> list[tuple]:
        """(medium, address, id_server) of the user's bindings, optionally of one address."""
        if medium is None:
            rows = await self.db.fetch("SELECT medium, address, id_server FROM user_threepid_id_servers"
                                       " WHERE user_id = $1", user_id)
        else:
            rows = await self.db.fetch("SELECT medium, address, id_server FROM user_threepid_id_servers"
                                       " WHERE user_id = $1 AND medium = $2 AND address = $3", user_id, medium, address)
        return [tuple(r) for r in rows]

    async def remove_binding(self, user_id: str, medium: str, address: str, id_server: str) -> None:
        await self.db.execute("DELETE FROM user_threepid_id_servers WHERE user_id = $1 AND medium = $2"
                              " AND address = $3 AND id_server = $4", user_id, medium, address, id_server)

    # --- validation sessions ---------------------------------------------------------------

    async def find_session(self, client_secret: str, medium: str, address: str, purpose: str,
                           now_ms: int) -> ValidationSession | None:
        """The unvalidated, unexpired session these parameters started (a requestToken retry)."""
        row = await self.db.fetchrow(
            f"SELECT {_SESSION_COLUMNS} FROM threepid_validation_sessions WHERE client_secret = $1 AND medium = $2"
            " AND address = $3 AND purpose = $4 AND validated_at IS NULL AND token_expires_ts > $5"
            " ORDER BY created_ts DESC LIMIT 1", client_secret, medium, address, purpose, now_ms)
        return ValidationSession(*row) if row else None

    async def get_session(self, session_id: str) -> ValidationSession | None:
        row = await self.db.fetchrow(f"SELECT {_SESSION_COLUMNS} FROM threepid_validation_sessions"
                                     " WHERE session_id = $1", session_id)
        return ValidationSession(*row) if row else None

    async def add_session(self, session: ValidationSession) -> None:
        await self.db.execute(
            f"INSERT INTO threepid_validation_sessions ({_SESSION_COLUMNS}) VALUES"
            " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            session.session_id, session.medium, session.address, session.client_secret, session.purpose,
            session.last_send_attempt, session.token_hash, session.token_expires_ts, session.next_link,
            session.created_ts, session.validated_at, session.uia_session_id)

    async def resend(self, session_id: str, send_attempt: int, token_hash: str, expires_ts: int,
                     next_link: str | None) -> None:
        await self.db.execute("UPDATE threepid_validation_sessions SET last_send_attempt = $2, token_hash = $3,"
                              " token_expires_ts = $4, next_link = $5 WHERE session_id = $1",
                              session_id, send_attempt, token_hash, expires_ts, next_link)

    async def mark_validated(self, session_id: str, now_ms: int) -> None:
        await self.db.execute("UPDATE threepid_validation_sessions SET validated_at = $2 WHERE session_id = $1"
                              " AND validated_at IS NULL", session_id, now_ms)

    async def set_uia_session(self, session_id: str, uia_session_id: str) -> None:
        await self.db.execute("UPDATE threepid_validation_sessions SET uia_session_id = $2 WHERE session_id = $1",
                              session_id, uia_session_id)

    async def session_of_uia(self, uia_session_id: str) -> ValidationSession | None:
        row = await self.db.fetchrow(f"SELECT {_SESSION_COLUMNS} FROM threepid_validation_sessions"
                                     " WHERE uia_session_id = $1 AND validated_at IS NOT NULL"
                                     " ORDER BY validated_at DESC LIMIT 1", uia_session_id)
        return ValidationSession(*row) if row else None

    async def delete_session(self, session_id: str) -> None:
        await self.db.execute("DELETE FROM threepid_validation_sessions WHERE session_id = $1", session_id)

    async def delete_expired_sessions(self, now_ms: int, validated_for_ms: int) -> None:
        """Sessions whose token expired unvalidated, and validated ones too old to use."""
        await self.db.execute("DELETE FROM threepid_validation_sessions WHERE (validated_at IS NULL"
                              " AND token_expires_ts < $1) OR validated_at < $2", now_ms, now_ms - validated_for_ms)

"""Where and with which client each device used its access tokens (``client_ips``), and
the device's ``last_seen_*`` columns kept in step.

Read by ``GET /_matrix/client/v3/admin/whois/{userId}`` and the admin API's whois;
written by the access-token middleware (throttled in gateway/services/client_ips.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from .database import Database


@dataclass(frozen=True)
class ClientConnection:
    device_id: str
    ip: str
    user_agent: str
    last_seen: int


class ClientIpStore:
    def __init__(self, db: Database):
        self.db = db

    async def record(self, user_id: str, device_id: str | None, ip: str, user_agent: str, now_ms: int,
                     *, max_age_ms: int) -> None:
        """Note a use of ``device_id`` (None: a token without a device) from ``ip`` with
        ``user_agent``; the user's rows not seen for ``max_age_ms`` go."""
        async with self.db.transaction() as txn:
            await txn.execute(
                "INSERT INTO client_ips (user_id, device_id, ip, user_agent, last_seen) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (user_id, device_id, ip, user_agent) DO UPDATE SET last_seen = excluded.last_seen",
                user_id, device_id or "", ip, user_agent, now_ms,
            )
            if device_id is not None:
                await txn.execute(
                    "UPDATE devices SET last_seen_ts = $3, last_seen_ip = $4 WHERE user_id = $1 AND device_id = $2",
                    user_id, device_id, now_ms, ip,
                )
            await txn.execute("DELETE FROM client_ips WHERE user_id = $1 AND last_seen < $2",
                              user_id, now_ms - max_age_ms)

    async def connections(self, user_id: str) -> list[ClientConnection]:
        """The user's connections, newest first."""
        rows = await self.db.fetch(
            "SELECT device_id, ip, user_agent, last_seen FROM client_ips WHERE user_id = $1"
            " ORDER BY last_seen DESC, device_id, ip, user_agent",
            user_id,
        )
        return [ClientConnection(r[0], r[1], r[2], int(r[3])) for r in rows]

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        await self.db.executemany("DELETE FROM client_ips WHERE user_id = $1 AND device_id = $2",
                                  [(user_id, d) for d in device_ids])

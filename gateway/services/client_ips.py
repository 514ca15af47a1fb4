"""Client connections (IP address, user agent, last seen) per device, and whois.

Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3adminwhoisuserid

Every authenticated request reports its connection; a (device, IP, user agent) seen
again within ``LAST_SEEN_GRANULARITY_MS`` is not written again (Synapse keeps the same
granularity), so a busy client costs one write every few minutes, not one per request.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Callable

from ..storage.client_ips import ClientIpStore
from ..storage.devices import DeviceStore

log = logging.getLogger(__name__)

#: A connection already written less than this long ago is not written again.
LAST_SEEN_GRANULARITY_MS = 120_000
#: Connections not seen for this long are forgotten (Synapse's ``user_ips_max_age`` default).
MAX_AGE_MS = 28 * 24 * 3600 * 1000
#: Connections remembered in memory to skip their writes.
_REMEMBERED = 10_000


class ClientIps:
    def __init__(self, store: ClientIpStore, devices: DeviceStore, clock_ms: Callable[[], int]):
        self.store = store
        self.devices = devices
        self.clock_ms = clock_ms
        self._written: OrderedDict[tuple[str, str | None, str, str], int] = OrderedDict()
        devices.deleted_listeners.append(self.on_devices_deleted)

    async def seen(self, user_id: str, device_id: str | None, ip: str | None, user_agent: str | None) -> None:
        """A request of ``user_id``'s ``device_id`` came from ``ip`` with ``user_agent``.
        A failed write is logged, never the request's failure."""
        if not ip:
            return
        key = (user_id, device_id, ip, user_agent or "")
        now = self.clock_ms()
        last = self._written.get(key)
        if last is not None and now - last < LAST_SEEN_GRANULARITY_MS:
            return
        self._written[key] = now
        self._written.move_to_end(key)
        while len(self._written) > _REMEMBERED:
            self._written.popitem(last=False)
        try:
            await self.store.record(user_id, device_id, ip, user_agent or "", now, max_age_ms=MAX_AGE_MS)
        except Exception:  # noqa: BLE001 - bookkeeping must not fail the request
            self._written.pop(key, None)
            log.exception("could not record the connection of %s", user_id)

    async def on_devices_deleted(self, user_id: str, device_ids: list[str]) -> None:
        await self.store.delete_devices(user_id, device_ids)
        for key in [k for k in self._written if k[0] == user_id and k[1] in device_ids]:
            del self._written[key]

    async def whois(self, user_id: str) -> dict[str, Any]:
        """The ``GET /admin/whois`` answer: each device of the user with one session
        (a device is one login) holding its connections, newest first."""
        connections = await self.store.connections(user_id)
        devices: dict[str, Any] = {}
        for d in await self.devices.list_devices(user_id):
            devices[d.device_id] = {"sessions": [{"connections": [
                {"ip": c.ip, "last_seen": c.last_seen, "user_agent": c.user_agent}
                for c in connections if c.device_id == d.device_id
            ]}]}
        return {"user_id": user_id, "devices": devices}

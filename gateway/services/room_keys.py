"""Server-side key backup: the client's encrypted room keys, stored per backup version.

Spec: https://spec.matrix.org/latest/client-server-api/#server-side-key-backups
The server never sees the keys in clear: ``session_data`` is encrypted by the client.
Only the newest (current) version accepts keys; uploads to another answer
``M_WRONG_ROOM_KEYS_VERSION`` with the current version.
"""

from __future__ import annotations

from typing import Any

from ..http import MatrixError
from ..storage.room_keys import BackupVersion, RoomKey, RoomKeyStore

WRONG_VERSION = "M_WRONG_ROOM_KEYS_VERSION"


def parse_version(raw: Any) -> int:
    if not isinstance(raw, str) or not raw.isdigit() or len(raw) > 18:
        raise MatrixError.not_found("Unknown backup version")
    return int(raw)


def _key(room_id: str, session_id: str, data: Any) -> RoomKey:
    if not isinstance(data, dict):
        raise MatrixError.bad_json("key backup data must be an object")
    fmi, fc, verified, session = (data.get("first_message_index"), data.get("forwarded_count"),
                                  data.get("is_verified"), data.get("session_data"))
    if not isinstance(fmi, int) or isinstance(fmi, bool) or fmi < 0 or not isinstance(fc, int) \
            or isinstance(fc, bool) or fc < 0:
        raise MatrixError.bad_json("first_message_index and forwarded_count must be non-negative integers")
    if not isinstance(verified, bool) or session is None:
        # session_data is the algorithm's, opaque here (an object for m.megolm_backup.v1)
        raise MatrixError.bad_json("is_verified must be a boolean, and session_data is required")
    return RoomKey(room_id, session_id, fmi, fc, verified, session)


class RoomKeysService:
    def __init__(self, store: RoomKeyStore):
        self.store = store

    async def create_version(self, user_id: str, body: dict[str, Any]) -> str:
        """``auth_data`` is the algorithm's, opaque to the server: kept as sent, whatever
        its JSON type (the spec describes an object; clients in the field, and Synapse,
        also use other values)."""
        algorithm, auth_data = body.get("algorithm"), body.get("auth_data")
        if not isinstance(algorithm, str) or auth_data is None:
            raise MatrixError.bad_json("algorithm (a string) and auth_data are required")
        return str(await self.store.create_version(user_id, algorithm, auth_data))

    async def version_json(self, user_id: str, raw_version: str | None) -> dict[str, Any]:
        v = await self.store.get_version(user_id, None if raw_version is None else parse_version(raw_version))
        if v is None:
            raise MatrixError.not_found("No current backup version" if raw_version is None else "Unknown backup version")
        return {"algorithm": v.algorithm, "auth_data": v.auth_data, "count": await self.store.count(user_id, v.version),
                "etag": str(v.etag), "version": str(v.version)}

    async def update_version(self, user_id: str, raw_version: str, body: dict[str, Any]) -> None:
        version = parse_version(raw_version)
        v = await self.store.get_version(user_id, version)
        if v is None:
            raise MatrixError.not_found("Unknown backup version")
        if "version" in body and body["version"] != raw_version:
            raise MatrixError.invalid_param("version in the body does not match the path")
        algorithm, auth_data = body.get("algorithm"), body.get("auth_data")
        if auth_data is None:
            raise MatrixError.bad_json("auth_data is required")
        if algorithm != v.algorithm:
            raise MatrixError.invalid_param("A backup version's algorithm cannot change")
        await self.store.update_version(user_id, version, auth_data)

    async def delete_version(self, user_id: str, raw_version: str) -> None:
        if not await self.store.delete_version(user_id, parse_version(raw_version)):
            raise MatrixError.not_found("Unknown backup version")

    async def _existing(self, user_id: str, raw_version: str | None) -> BackupVersion:
        if raw_version is None:
            raise MatrixError.missing_param("version is required")
        v = await self.store.get_version(user_id, parse_version(raw_version))
        if v is None:
            raise MatrixError.not_found("Unknown backup version")
        return v

    async def put_keys(self, user_id: str, raw_version: str | None, body: dict[str, Any],
                       room_id: str | None, session_id: str | None) -> dict[str, Any]:
        if raw_version is None:
            raise MatrixError.missing_param("version is required")
        version = parse_version(raw_version)
        keys: list[RoomKey] = []
        if session_id is not None and room_id is not None:
            keys.append(_key(room_id, session_id, body))
        else:
            rooms = {room_id: body} if room_id is not None else body.get("rooms")
            if not isinstance(rooms, dict):
                raise MatrixError.bad_json("rooms must be an object")
            for r, section in rooms.items():
                sessions = section.get("sessions") if isinstance(section, dict) else None
                if not isinstance(sessions, dict):
                    raise MatrixError.bad_json("each room needs a sessions object")
                keys += [_key(r, s, data) for s, data in sessions.items()]
        result = await self.store.put_keys(user_id, version, keys)
        if result is None:
            current = await self.store.get_version(user_id)
            if current is None:
                raise MatrixError.not_found("Unknown backup version")
            raise MatrixError(403, WRONG_VERSION, "That is not the current backup version",
                              current_version=str(current.version))
        return {"etag": str(result[0]), "count": result[1]}

    async def get_keys(self, user_id: str, raw_version: str | None, room_id: str | None,
                       session_id: str | None) -> dict[str, Any]:
        v = await self._existing(user_id, raw_version)
        keys = await self.store.get_keys(user_id, v.version, room_id, session_id)
        if session_id is not None:
            if not keys:
                raise MatrixError.not_found("No such session in the backup")
            return keys[0].to_json()
        rooms: dict[str, Any] = {}
        for k in keys:
            rooms.setdefault(k.room_id, {"sessions": {}})["sessions"][k.session_id] = k.to_json()
        if room_id is not None:
            return rooms.get(room_id, {"sessions": {}})
        return {"rooms": rooms}

    async def delete_keys(self, user_id: str, raw_version: str | None, room_id: str | None,
                          session_id: str | None) -> dict[str, Any]:
        v = await self._existing(user_id, raw_version)
        etag, count = await self.store.delete_keys(user_id, v.version, room_id, session_id)
        return {"etag": str(etag), "count": count}

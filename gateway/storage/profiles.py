"""User profiles (display name, avatar, extended fields), their propagation into rooms, and
client filters."""

from __future__ import annotations

import json
from typing import Any

from federation.canonical_json import encode_canonical_json

from .database import Database


#: The columns of the two fields that live in member events; others are in ``fields``.
MEMBER_FIELDS = ("displayname", "avatar_url")


class ProfileTooLargeError(Exception):
    """The profile would exceed the size limit (spec: 64 KiB, ``M_PROFILE_TOO_LARGE``)."""


class ProfileStore:
    """Profiles (display name and avatar columns, other fields as one JSON object) and
    the pending propagation of display name and avatar changes into rooms."""

    def __init__(self, db: Database):
        self.db = db

    async def get_profile(self, user_id: str) -> dict[str, Any] | None:
        """Every field that is set (None when the user has no profile row)."""
        row = await self.db.fetchrow(
            "SELECT displayname, avatar_url, fields FROM profiles WHERE user_id = $1", user_id)
        if row is None:
            return None
        return _profile_of(row[0], row[1], row[2])

    async def get_member_profile(self, user_id: str) -> dict[str, str]:
        """The display name and avatar (those that are set): what member events carry."""
        row = await self.db.fetchrow("SELECT displayname, avatar_url FROM profiles WHERE user_id = $1", user_id)
        if row is None:
            return {}
        return {k: v for k, v in zip(MEMBER_FIELDS, row) if v is not None}

    async def set_field(self, user_id: str, field: str, value: Any, *, max_size: int | None = None,
                        propagate: bool = False) -> bool:
        """Set one field (``None`` clears a display name or avatar; other fields store
        JSON null). With ``max_size``, ProfileTooLargeError when the whole profile as
        canonical JSON would be larger. With ``propagate``, the change is queued for the
        user's rooms in the same transaction. False when the user has no profile row."""
        return await self._change(user_id, field, value, delete=False, max_size=max_size, propagate=propagate)

    async def delete_field(self, user_id: str, field: str, *, propagate: bool = False) -> bool:
        """Remove one field (clears a display name or avatar). False when the user has no profile row."""
        return await self._change(user_id, field, None, delete=True, max_size=None, propagate=propagate)

    async def _change(self, user_id: str, field: str, value: Any, *, delete: bool, max_size: int | None,
                      propagate: bool) -> bool:
        async with self.db.transaction() as txn:
            # The no-op update takes the row lock first (PostgreSQL): concurrent changes
            # of one profile's fields object do not lose each other's writes.
            if not await txn.execute("UPDATE profiles SET user_id = user_id WHERE user_id = $1", user_id):
                return False
            row = await txn.fetchrow("SELECT displayname, avatar_url, fields FROM profiles WHERE user_id = $1",
                                     user_id)
            profile = _profile_of(row[0], row[1], row[2])
            if delete or (field in MEMBER_FIELDS and value is None):
                profile.pop(field, None)
            else:
                profile[field] = value
            if max_size is not None and len(encode_canonical_json(profile)) > max_size:
                raise ProfileTooLargeError(field)
            if field in MEMBER_FIELDS:
                await txn.execute(f"UPDATE profiles SET {field} = $2 WHERE user_id = $1", user_id, profile.get(field))
            else:
                others = {k: v for k, v in profile.items() if k not in MEMBER_FIELDS}
                await txn.execute("UPDATE profiles SET fields = $2 WHERE user_id = $1", user_id,
                                  json.dumps(others, ensure_ascii=False) if others else None)
            if propagate:
                await txn.execute(
                    "INSERT INTO profile_propagation (user_id, generation, last_room_id) VALUES ($1, 1, NULL)"
                    " ON CONFLICT (user_id) DO UPDATE SET generation = profile_propagation.generation + 1,"
                    " last_room_id = NULL", user_id)
        return True

    # --- propagation into rooms ---------------------------------------------------------

    async def pending_propagations(self) -> list[str]:
        return [r[0] for r in await self.db.fetch("SELECT user_id FROM profile_propagation ORDER BY user_id")]

    async def get_propagation(self, user_id: str) -> tuple[int, str | None] | None:
        """(generation, last room done) of the user's pending propagation."""
        row = await self.db.fetchrow(
            "SELECT generation, last_room_id FROM profile_propagation WHERE user_id = $1", user_id)
        return None if row is None else (int(row[0]), row[1])

    async def advance_propagation(self, user_id: str, generation: int, room_id: str) -> bool:
        """Record ``room_id`` as done; False when a newer change started the job over."""
        return bool(await self.db.execute(
            "UPDATE profile_propagation SET last_room_id = $3 WHERE user_id = $1 AND generation = $2",
            user_id, generation, room_id))

    async def finish_propagation(self, user_id: str, generation: int) -> bool:
        """Drop the job; False when a newer change started it over."""
        return bool(await self.db.execute(
            "DELETE FROM profile_propagation WHERE user_id = $1 AND generation = $2", user_id, generation))


def _profile_of(displayname: str | None, avatar_url: str | None, fields: str | None) -> dict[str, Any]:
    profile: dict[str, Any] = json.loads(fields) if fields else {}
    for key, value in (("displayname", displayname), ("avatar_url", avatar_url)):
        if value is not None:
            profile[key] = value
    return profile


class FilterStore:
    def __init__(self, db: Database):
        self.db = db

    async def add_filter(self, user_id: str, filter_json: dict[str, Any]) -> int:
        async with self.db.transaction() as txn:
            current = await txn.fetchval("SELECT MAX(filter_id) FROM user_filters WHERE user_id = $1", user_id)
            filter_id = 0 if current is None else current + 1
            await txn.execute(
                "INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES ($1, $2, $3)",
                user_id, filter_id, json.dumps(filter_json),
            )
        return filter_id

    async def get_filter(self, user_id: str, filter_id: int) -> dict[str, Any] | None:
        raw = await self.db.fetchval(
            "SELECT filter_json FROM user_filters WHERE user_id = $1 AND filter_id = $2", user_id, filter_id
        )
        return None if raw is None else json.loads(raw)

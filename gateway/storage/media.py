"""Media repository metadata: local media, the remote media cache, thumbnails.

The bytes live on disk (gateway/services/media_files.py); rows here are written only
after the file they name is completely on disk.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .database import Database, IntegrityError


@dataclass(frozen=True)
class MediaInfo:
    """One piece of media, local or cached remote, as the download code needs it."""

    origin: str
    media_id: str
    media_type: str | None
    media_length: int | None
    upload_name: str | None
    filesystem_id: str | None
    created_ts: int
    quarantined_by: str | None = None
    user_id: str | None = None  # local media only
    unused_expires_ts: int | None = None  # pending async uploads only
    sha256: str | None = None
    safe_from_quarantine: bool = False  # local media only
    last_access_ts: int | None = None

    @property
    def uploaded(self) -> bool:
        return self.filesystem_id is not None


@dataclass(frozen=True)
class ThumbnailInfo:
    width: int  # requested (or configured) size and method: the cache key
    height: int
    method: str
    media_type: str
    thumbnail_width: int
    thumbnail_height: int
    length: int
    filesystem_id: str


_LOCAL_COLUMNS = ("media_id, user_id, created_ts, unused_expires_ts, media_type, media_length, upload_name, "
                  "filesystem_id, quarantined_by, sha256, safe_from_quarantine, last_access_ts")

#: ``order_by`` of the admin API's user media listing -> column (ties: media ID).
USER_MEDIA_ORDERINGS = {
    "media_id": "media_id", "upload_name": "upload_name", "created_ts": "created_ts",
    "last_access_ts": "last_access_ts", "media_length": "media_length", "media_type": "media_type",
    "quarantined_by": "quarantined_by", "safe_from_quarantine": "safe_from_quarantine",
}
#: ``order_by`` of the users' media statistics -> column.
MEDIA_STATISTICS_ORDERINGS = {"user_id": "user_id", "displayname": "displayname",
                              "media_length": "media_length", "media_count": "media_count"}


class MediaStore:
    def __init__(self, db: Database, server_name: str):
        self.db = db
        self.server_name = server_name

    # --- local media ---------------------------------------------------------------

    def _local(self, row) -> MediaInfo:
        return MediaInfo(origin=self.server_name, media_id=row["media_id"], user_id=row["user_id"],
                         created_ts=row["created_ts"], unused_expires_ts=row["unused_expires_ts"],
                         media_type=row["media_type"], media_length=row["media_length"],
                         upload_name=row["upload_name"], filesystem_id=row["filesystem_id"],
                         quarantined_by=row["quarantined_by"], sha256=row["sha256"],
                         safe_from_quarantine=bool(row["safe_from_quarantine"]), last_access_ts=row["last_access_ts"])

    async def store_local_media(self, *, media_id: str, user_id: str, now_ms: int, media_type: str, length: int,
                                upload_name: str | None, filesystem_id: str, sha256: str) -> None:
        await self.db.execute(
            "INSERT INTO local_media (media_id, user_id, created_ts, upload_ts, media_type, media_length, "
            "upload_name, filesystem_id, sha256) VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8)",
            media_id, user_id, now_ms, media_type, length, upload_name, filesystem_id, sha256,
        )

    async def create_pending(self, *, media_id: str, user_id: str, now_ms: int, expires_ts: int,
                             max_pending: int) -> bool:
        """Reserve ``media_id`` for a later upload; False when the user already has
        ``max_pending`` unexpired pending uploads."""
        async with self.db.transaction() as txn:
            # The user's expired reservations go now (they can never be used), so the
            # table does not grow with abandoned uploads.
            await txn.execute("DELETE FROM local_media WHERE user_id = $1 AND filesystem_id IS NULL "
                              "AND unused_expires_ts <= $2", user_id, now_ms)
            count = await txn.fetchval(
                "SELECT COUNT(*) FROM local_media WHERE user_id = $1 AND filesystem_id IS NULL "
                "AND unused_expires_ts > $2", user_id, now_ms)
            if count >= max_pending:
                return False
            await txn.execute(
                "INSERT INTO local_media (media_id, user_id, created_ts, unused_expires_ts) VALUES ($1, $2, $3, $4)",
                media_id, user_id, now_ms, expires_ts)
        return True

    async def complete_pending(self, *, media_id: str, user_id: str, now_ms: int, media_type: str, length: int,
                               upload_name: str | None, filesystem_id: str, sha256: str) -> bool:
        """Attach uploaded content to a pending media ID: only its creator, only once,
        only before it expires. False when any of that does not hold (nothing changed)."""
        changed = await self.db.execute(
            "UPDATE local_media SET upload_ts = $3, media_type = $4, media_length = $5, upload_name = $6, "
            "filesystem_id = $7, sha256 = $8, unused_expires_ts = NULL "
            "WHERE media_id = $1 AND user_id = $2 AND filesystem_id IS NULL AND unused_expires_ts > $3",
            media_id, user_id, now_ms, media_type, length, upload_name, filesystem_id, sha256,
        )
        return changed == 1

    async def get_local_media(self, media_id: str) -> MediaInfo | None:
        row = await self.db.fetchrow(f"SELECT {_LOCAL_COLUMNS} FROM local_media WHERE media_id = $1", media_id)
        return None if row is None else self._local(row)

    async def delete_expired_pending(self, now_ms: int) -> int:
        return await self.db.execute(
            "DELETE FROM local_media WHERE filesystem_id IS NULL AND unused_expires_ts <= $1", now_ms)

    # --- remote media cache ----------------------------------------------------------

    async def get_remote_media(self, origin: str, media_id: str) -> MediaInfo | None:
        row = await self.db.fetchrow(
            "SELECT media_type, media_length, upload_name, filesystem_id, created_ts, quarantined_by, sha256, "
            "last_access_ts FROM remote_media_cache WHERE media_origin = $1 AND media_id = $2", origin, media_id)
        if row is None:
            return None
        return MediaInfo(origin=origin, media_id=media_id, media_type=row["media_type"],
                         media_length=row["media_length"], upload_name=row["upload_name"],
                         filesystem_id=row["filesystem_id"], created_ts=row["created_ts"],
                         quarantined_by=row["quarantined_by"], sha256=row["sha256"],
                         last_access_ts=row["last_access_ts"])

    async def store_remote_media(self, *, origin: str, media_id: str, now_ms: int, media_type: str, length: int,
                                 upload_name: str | None, filesystem_id: str, sha256: str) -> bool:
        """False if another fetch stored it first (the caller then uses that copy)."""
        try:
            await self.db.execute(
                "INSERT INTO remote_media_cache (media_origin, media_id, media_type, media_length, upload_name, "
                "filesystem_id, created_ts, sha256) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                origin, media_id, media_type, length, upload_name, filesystem_id, now_ms, sha256)
        except IntegrityError:
            return False
        return True

    # --- either ----------------------------------------------------------------------

    async def get_media(self, origin: str, media_id: str) -> MediaInfo | None:
        if origin == self.server_name:
            return await self.get_local_media(media_id)
        return await self.get_remote_media(origin, media_id)

    async def set_quarantined(self, origin: str, media_id: str, by: str | None) -> bool:
        """Quarantine (``by`` = the admin) or release (``by`` None); False if unknown local
        media. Local media protected from quarantine stays as it is (True: it exists).
        Remote media can be quarantined before we ever fetch it."""
        if origin == self.server_name:
            async with self.db.transaction() as txn:
                protected = await txn.fetchval("SELECT safe_from_quarantine FROM local_media WHERE media_id = $1",
                                               media_id)
                if protected is None:
                    return False
                if not (protected and by is not None):
                    await txn.execute("UPDATE local_media SET quarantined_by = $2 WHERE media_id = $1", media_id, by)
                return True
        async with self.db.transaction() as txn:
            if by is None:  # releasing media we never fetched: forget the placeholder
                if await txn.execute("DELETE FROM remote_media_cache WHERE media_origin = $1 AND media_id = $2 "
                                     "AND filesystem_id = ''", origin, media_id):
                    return True
            if await txn.execute("UPDATE remote_media_cache SET quarantined_by = $3 "
                                 "WHERE media_origin = $1 AND media_id = $2", origin, media_id, by):
                return True
            if by is None:
                return False
            # Not fetched (yet, or only thumbnails): a placeholder row keeps it out for good.
            await txn.execute(
                "INSERT INTO remote_media_cache (media_origin, media_id, media_type, media_length, filesystem_id, "
                "created_ts, quarantined_by) VALUES ($1, $2, 'application/octet-stream', 0, '', 0, $3)",
                origin, media_id, by)
            return True

    async def delete_media(self, origin: str, media_id: str) -> list[str] | None:
        """Forget a piece of media and its thumbnails; returns the filesystem IDs to
        delete (None when the media was unknown)."""
        async with self.db.transaction() as txn:
            if origin == self.server_name:
                row = await txn.fetchrow("SELECT filesystem_id FROM local_media WHERE media_id = $1", media_id)
                if row is None:
                    return None
                await txn.execute("DELETE FROM local_media WHERE media_id = $1", media_id)
            else:
                row = await txn.fetchrow(
                    "SELECT filesystem_id FROM remote_media_cache WHERE media_origin = $1 AND media_id = $2",
                    origin, media_id)
                if row is None:
                    return None
                await txn.execute("DELETE FROM remote_media_cache WHERE media_origin = $1 AND media_id = $2",
                                  origin, media_id)
            thumbs = await txn.fetch(
                "SELECT filesystem_id FROM media_thumbnails WHERE media_origin = $1 AND media_id = $2",
                origin, media_id)
            await txn.execute("DELETE FROM media_thumbnails WHERE media_origin = $1 AND media_id = $2",
                              origin, media_id)
        return [fid for fid in [row["filesystem_id"], *(t["filesystem_id"] for t in thumbs)] if fid]

    async def touch(self, origin: str, media_id: str, now_ms: int, *, thumbnail_only: bool = False) -> None:
        """Note that media was served now (its ``last_access_ts``)."""
        if thumbnail_only:
            await self.db.execute("UPDATE media_thumbnails SET last_access_ts = $3 WHERE media_origin = $1"
                                  " AND media_id = $2", origin, media_id, now_ms)
        elif origin == self.server_name:
            await self.db.execute("UPDATE local_media SET last_access_ts = $2 WHERE media_id = $1", media_id, now_ms)
        else:
            await self.db.execute("UPDATE remote_media_cache SET last_access_ts = $3 WHERE media_origin = $1"
                                  " AND media_id = $2", origin, media_id, now_ms)

    # --- administration ----------------------------------------------------------------

    async def set_protected(self, media_id: str, protected: bool) -> bool:
        """Protect local media from quarantine, or not; False if it is unknown."""
        return await self.db.execute("UPDATE local_media SET safe_from_quarantine = $2 WHERE media_id = $1",
                                     media_id, protected) == 1

    async def quarantine_user_media(self, user_id: str, by: str) -> int:
        """Quarantine every upload of a local user but the protected ones; how many."""
        return await self.db.execute(
            "UPDATE local_media SET quarantined_by = $2 WHERE user_id = $1 AND safe_from_quarantine = FALSE"
            " AND filesystem_id IS NOT NULL", user_id, by)

    async def list_user_media(self, user_id: str, *, order_by: str, backwards: bool, offset: int,
                              limit: int) -> tuple[list[MediaInfo], int]:
        """A page of a local user's uploads (pending ones left out) and how many there are."""
        column = USER_MEDIA_ORDERINGS[order_by]
        direction = "DESC" if backwards else "ASC"
        # NULLs sort as the smallest values on both engines.
        order = f"{column} IS NOT NULL {direction}, {column} {direction}, media_id ASC"
        where = "user_id = $1 AND filesystem_id IS NOT NULL"
        total = await self.db.fetchval(f"SELECT COUNT(*) FROM local_media WHERE {where}", user_id)
        rows = await self.db.fetch(
            f"SELECT {_LOCAL_COLUMNS} FROM local_media WHERE {where} ORDER BY {order} LIMIT $2 OFFSET $3",
            user_id, limit, offset)
        return [self._local(r) for r in rows], int(total)

    async def user_media_statistics(self, *, order_by: str, backwards: bool, offset: int, limit: int,
                                    from_ts: int | None, until_ts: int | None,
                                    search_term: str | None) -> tuple[list[dict[str, Any]], int]:
        """Per local user with uploads: count and bytes of their media created in
        ``[from_ts, until_ts]``, filtered by a substring of the localpart or display name."""
        where, args = ["m.filesystem_id IS NOT NULL"], []
        if from_ts is not None:
            args.append(from_ts)
            where.append(f"m.created_ts >= ${len(args)}")
        if until_ts is not None:
            args.append(until_ts)
            where.append(f"m.created_ts <= ${len(args)}")
        having = ""
        if search_term:
            term = _like_escape(search_term.lower())
            args += [f"@%{term}%:%", f"%{term}%"]  # the localpart (no ':' in it), or the display name
            having = (f" WHERE LOWER(s.user_id) LIKE ${len(args) - 1} ESCAPE '\\'"
                      f" OR LOWER(COALESCE(s.displayname, '')) LIKE ${len(args)} ESCAPE '\\'")
        column = MEDIA_STATISTICS_ORDERINGS[order_by]
        direction = "DESC" if backwards else "ASC"
        inner = (
            "SELECT m.user_id AS user_id, p.displayname AS displayname, COUNT(*) AS media_count,"
            " SUM(m.media_length) AS media_length FROM local_media m LEFT JOIN profiles p ON p.user_id = m.user_id"
            f" WHERE {' AND '.join(where)} GROUP BY m.user_id, p.displayname")
        total = await self.db.fetchval(f"SELECT COUNT(*) FROM ({inner}) s{having}", *args)
        rows = await self.db.fetch(
            f"SELECT s.user_id, s.displayname, s.media_count, s.media_length FROM ({inner}) s{having}"
            f" ORDER BY s.{column} IS NOT NULL {direction}, s.{column} {direction}, s.user_id ASC"
            f" LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}", *args, limit, offset)
        users = [{"user_id": r[0], "displayname": r[1], "media_count": int(r[2]), "media_length": int(r[3] or 0)}
                 for r in rows]
        return users, int(total)

    async def old_local_media(self, *, before_ts: int, size_gt: int, keep_profiles: bool) -> list[str]:
        """Local media last served (or, never served, uploaded) before ``before_ts`` and
        larger than ``size_gt`` bytes, neither quarantined nor protected; with
        ``keep_profiles``, not an avatar of a user, a member or a room."""
        sql = ("SELECT media_id FROM local_media m WHERE filesystem_id IS NOT NULL"
               " AND COALESCE(last_access_ts, created_ts) < $1 AND COALESCE(media_length, 0) > $2"
               " AND quarantined_by IS NULL AND safe_from_quarantine = FALSE")
        args: list[Any] = [before_ts, size_gt]
        if keep_profiles:
            args.append(f"mxc://{self.server_name}/")
            sql += (" AND NOT EXISTS (SELECT 1 FROM profiles p WHERE p.avatar_url = $3 || m.media_id)"
                    " AND NOT EXISTS (SELECT 1 FROM room_memberships r WHERE r.avatar_url = $3 || m.media_id)"
                    " AND NOT EXISTS (SELECT 1 FROM room_stats_state s WHERE s.avatar = $3 || m.media_id)")
        return [r[0] for r in await self.db.fetch(sql + " ORDER BY media_id", *args)]

    async def old_remote_media(self, before_ts: int) -> list[tuple[str, str]]:
        """Cached remote media (and remote thumbnails fetched alone) last served before
        ``before_ts``; quarantined media stays (its row is what keeps it out)."""
        cached = await self.db.fetch(
            "SELECT media_origin, media_id FROM remote_media_cache WHERE COALESCE(last_access_ts, created_ts) < $1"
            " AND quarantined_by IS NULL ORDER BY media_origin, media_id", before_ts)
        thumbnails = await self.db.fetch(
            "SELECT DISTINCT t.media_origin, t.media_id FROM media_thumbnails t WHERE t.media_origin <> $1"
            " AND COALESCE(t.last_access_ts, 0) < $2 AND NOT EXISTS (SELECT 1 FROM remote_media_cache c"
            " WHERE c.media_origin = t.media_origin AND c.media_id = t.media_id)"
            " ORDER BY t.media_origin, t.media_id", self.server_name, before_ts)
        return [(r[0], r[1]) for r in (*cached, *thumbnails)]

    async def delete_thumbnails(self, origin: str, media_id: str) -> list[str]:
        """Forget the thumbnails of media without a row of its own; their filesystem IDs."""
        async with self.db.transaction() as txn:
            rows = await txn.fetch("SELECT filesystem_id FROM media_thumbnails WHERE media_origin = $1"
                                   " AND media_id = $2", origin, media_id)
            await txn.execute("DELETE FROM media_thumbnails WHERE media_origin = $1 AND media_id = $2",
                              origin, media_id)
        return [r[0] for r in rows]

    async def mxc_uris_in_room(self, room_id: str, batch: int = 500) -> set[tuple[str, str]]:
        """(server name, media ID) of every mxc:// URI in the room's events' content
        (``url``, ``info.thumbnail_url``, avatars, ...), read in batches."""
        found: set[tuple[str, str]] = set()
        after = -(2 ** 62)  # events from the past have negative positions
        while True:
            rows = await self.db.fetch(
                "SELECT stream_ordering, json FROM events WHERE room_id = $1 AND json LIKE '%mxc://%' "
                "AND stream_ordering > $2 ORDER BY stream_ordering LIMIT $3",
                room_id, after, batch)
            for row in rows:
                _collect_mxc(json.loads(row["json"]).get("content"), found)
            if len(rows) < batch:
                return found
            after = rows[-1]["stream_ordering"]

    # --- thumbnails ------------------------------------------------------------------

    async def get_thumbnail(self, origin: str, media_id: str, width: int, height: int,
                            method: str) -> ThumbnailInfo | None:
        row = await self.db.fetchrow(
            "SELECT thumbnail_type, thumbnail_width, thumbnail_height, thumbnail_length, filesystem_id "
            "FROM media_thumbnails WHERE media_origin = $1 AND media_id = $2 AND width = $3 AND height = $4 "
            "AND method = $5", origin, media_id, width, height, method)
        if row is None:
            return None
        return ThumbnailInfo(width, height, method, row["thumbnail_type"], row["thumbnail_width"],
                             row["thumbnail_height"], row["thumbnail_length"], row["filesystem_id"])

    async def store_thumbnail(self, origin: str, media_id: str, thumb: ThumbnailInfo) -> bool:
        """False if the same thumbnail was stored concurrently (keep the stored one)."""
        try:
            await self.db.execute(
                "INSERT INTO media_thumbnails (media_origin, media_id, width, height, method, thumbnail_type, "
                "thumbnail_width, thumbnail_height, thumbnail_length, filesystem_id) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                origin, media_id, thumb.width, thumb.height, thumb.method, thumb.media_type,
                thumb.thumbnail_width, thumb.thumbnail_height, thumb.length, thumb.filesystem_id)
        except IntegrityError:
            return False
        return True


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_MXC = re.compile(r"^mxc://([^/]+)/([A-Za-z0-9_-]+)$")


def _collect_mxc(value: Any, found: set[tuple[str, str]], depth: int = 0) -> None:
    if depth > 20:
        return
    if isinstance(value, str):
        m = _MXC.match(value)
        if m:
            found.add((m.group(1), m.group(2)))
    elif isinstance(value, dict):
        for v in value.values():
            _collect_mxc(v, found, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _collect_mxc(v, found, depth + 1)

"""import-synapse, media: what local users uploaded, its metadata and its files.

Synapse keeps a local upload at ``<media_store_path>/local_content/ab/cd/efgh...`` (the
media ID cut after two and four characters); ours are named by a filesystem ID of our
own (gateway/services/media_files.py), so each file is copied into our store. Thumbnails
are not copied (ours are made again when asked for), nor is the cache of other servers'
media (fetched again when asked for), nor URL preview downloads.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from ..services.media_files import MediaFiles
from .synapse_import import ImportContext

_CHUNK = 1 << 20


async def import_media(ctx: ImportContext) -> None:
    files = MediaFiles(ctx.config.media.media_store_path)
    have = {r[0] for r in await ctx.target.fetch("SELECT media_id FROM local_media")}
    rows = await ctx.source.fetch(
        "SELECT media_id, media_type, media_length, created_ts, upload_name, user_id, quarantined_by,"
        " safe_from_quarantine, last_access_ts FROM local_media_repository WHERE url_cache IS NULL"
        " ORDER BY created_ts")
    copied = missing = 0
    for media_id, media_type, length, created_ts, upload_name, user_id, quarantined_by, safe, accessed in rows:
        if media_id in have:
            continue
        path = synapse_local_path(ctx.deployment.media_store_path, media_id)
        if path is None or not os.path.isfile(path):
            missing += 1
            continue
        written = await files.write_stream(_read(path), max_size=os.path.getsize(path))
        try:
            await ctx.target.execute(
                "INSERT INTO local_media (media_id, user_id, created_ts, upload_ts, media_type, media_length,"
                " upload_name, filesystem_id, sha256, quarantined_by, safe_from_quarantine, last_access_ts)"
                " VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                media_id, user_id or "", int(created_ts or ctx.now_ms), media_type or "application/octet-stream",
                written.length, upload_name, written.filesystem_id, written.sha256, quarantined_by, bool(safe),
                accessed)
        except BaseException:
            files.delete(written.filesystem_id)
            raise
        copied += 1
    ctx.count("media files", copied)
    if missing:
        ctx.report(f"media: {missing} uploads have no file under {ctx.deployment.media_store_path}/local_content "
                   "(unfinished uploads, or kept by a storage provider): left out")
        ctx.count("media without a file", missing)


def synapse_local_path(media_store: str, media_id: str) -> str | None:
    """Where Synapse keeps a local upload (None for an ID that could leave the store)."""
    if len(media_id) < 5 or not all(c.isalnum() or c in "_-" for c in media_id):
        return None
    return os.path.join(media_store, "local_content", media_id[:2], media_id[2:4], media_id[4:])


async def _read(path: str) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:
        while chunk := await asyncio.to_thread(f.read, _CHUNK):
            yield chunk

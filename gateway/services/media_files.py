"""Media bytes on disk under ``media_store_path``.

Every file is named by a filesystem ID that this server chose (random, URL-safe
base64), never by a media ID or a name a client or remote server sent, so no request
can steer a path (no traversal). Writes go to a temporary file in the store, are
flushed to disk and only then renamed into place: a file that has a name is complete.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterable

_FILESYSTEM_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


class TooLargeError(Exception):
    """The content is larger than the limit (nothing was kept)."""


def new_id() -> str:
    """A random, unguessable ID of 24 URL-safe characters (144 bits)."""
    return secrets.token_urlsafe(18)


@dataclass(frozen=True)
class WrittenFile:
    filesystem_id: str
    length: int
    sha256: str


class MediaFiles:
    def __init__(self, root: str):
        self.root = Path(root)

    def path(self, filesystem_id: str) -> Path:
        if not _FILESYSTEM_ID.match(filesystem_id):
            raise ValueError(f"bad filesystem id {filesystem_id!r}")
        return self.root / "files" / filesystem_id[:2] / filesystem_id[2:4] / filesystem_id[4:]

    def _tmp_dir(self) -> Path:
        d = self.root / "tmp"
        d.mkdir(parents=True, exist_ok=True)
        return d

    async def write_stream(self, chunks: AsyncIterable[bytes], *, max_size: int) -> WrittenFile:
        """Store a stream; TooLargeError (and nothing kept) once it passes ``max_size``."""
        fd, tmp = tempfile.mkstemp(dir=self._tmp_dir(), prefix="upload-")
        digest = hashlib.sha256()
        length = 0
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    length += len(chunk)
                    if length > max_size:
                        raise TooLargeError(f"more than {max_size} bytes")
                    digest.update(chunk)
                    f.write(chunk)
                f.flush()
                await asyncio.to_thread(os.fsync, f.fileno())
            return WrittenFile(await self._place(tmp), length, digest.hexdigest())
        except BaseException:
            _unlink(tmp)
            raise

    async def write_bytes(self, data: bytes) -> WrittenFile:
        async def one():
            yield data

        return await self.write_stream(one(), max_size=len(data))

    async def _place(self, tmp: str) -> str:
        filesystem_id = new_id()
        final = self.path(filesystem_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        await asyncio.to_thread(_fsync_dir, final.parent)  # the rename itself survives a crash
        return filesystem_id

    def delete(self, filesystem_id: str) -> None:
        _unlink(self.path(filesystem_id))

    def read(self, filesystem_id: str) -> bytes:
        return self.path(filesystem_id).read_bytes()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

"""The media repository: uploads (direct and asynchronous), downloads, thumbnails and the
cache of remote media fetched over federation.

Spec: https://spec.matrix.org/latest/client-server-api/#content-repository and
https://spec.matrix.org/latest/server-server-api/#content-repository
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterable, AsyncIterator, Callable, Iterable

import aiohttp
from aiohttp.multipart import BadContentDispositionHeader, content_disposition_filename, parse_content_disposition

from federation.ids import parse_server_name
from federation.net.client import FederationRequestError
from federation.signing import quote_path_segment
from federation.canonical_json import parse_json

from ..http import Codes, MatrixError
from ..storage.media import MediaInfo, MediaStore, ThumbnailInfo
from . import thumbnailer
from .media_files import MediaFiles, TooLargeError, new_id

if TYPE_CHECKING:
    from federation.net.client import FederationClient

    from ..config import MediaConfig, SsoSections

log = logging.getLogger(__name__)

#: Spec: a media ID is made of A-Za-z0-9, "_" and "-" only (this also rules out traversal).
MEDIA_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
#: type/subtype with optional parameters; no control characters.
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(\s*;[\x20-\x7e]*)?$")

DEFAULT_TIMEOUT_MS = 20_000
MAX_TIMEOUT_MS = 60_000
#: Whole-request time limit for fetching remote media (seconds).
REMOTE_FETCH_TIMEOUT = 120.0
#: Serving media again within this long does not write its ``last_access_ts`` again.
ACCESS_GRANULARITY_MS = 60_000

NOT_YET_UPLOADED = "M_NOT_YET_UPLOADED"
CANNOT_OVERWRITE = "M_CANNOT_OVERWRITE_MEDIA"


@dataclass(frozen=True)
class ServedFile:
    """What a download or thumbnail answer sends: a complete file on disk."""

    path: Path
    media_type: str
    length: int
    upload_name: str | None


def check_media_id(media_id: str) -> str:
    if not MEDIA_ID.match(media_id):
        raise MatrixError.not_found("Unknown media ID")
    return media_id


def check_server_name(server_name: str) -> str:
    try:
        parse_server_name(server_name)
    except ValueError:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid server name {server_name!r}") from None
    return server_name


def check_upload(content_type: str | None, upload_name: str | None) -> tuple[str, str | None]:
    """The content type to store (default application/octet-stream) and upload name."""
    media_type = (content_type or "").strip() or "application/octet-stream"
    if len(media_type) > 255 or not _CONTENT_TYPE.match(media_type):
        raise MatrixError(400, Codes.INVALID_PARAM, "Invalid Content-Type header")
    if upload_name is not None:
        if upload_name == "":
            upload_name = None
        elif len(upload_name) > 255 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in upload_name):
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid filename")
    return media_type, upload_name


def timeout_ms_param(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_TIMEOUT_MS
    try:
        value = int(raw)
    except ValueError:
        raise MatrixError(400, Codes.INVALID_PARAM, "timeout_ms must be an integer") from None
    return max(0, min(value, MAX_TIMEOUT_MS))


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self):
        self._locks: dict[object, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def __call__(self, key: object) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


#: How often the media background jobs run (seconds).
BACKGROUND_EVERY_S = 3600


class MediaService:
    def __init__(self, *, config: MediaConfig, store: MediaStore, server_name: str,
                 federation_client: FederationClient, outbound_connector: Callable[[], aiohttp.BaseConnector],
                 public_media: Iterable[tuple[str, str]], clock_ms: Callable[[], int]):
        """``federation_client`` fetches remote media; ``outbound_connector()`` makes the
        connector (outbound IP rules) of the session for legacy media URLs;
        ``public_media``: (server, media ID) the unauthenticated endpoints keep serving."""
        self.config = config
        self.store = store
        self.server_name = server_name
        self.federation_client = federation_client
        self.outbound_connector = outbound_connector
        self.clock_ms = clock_ms
        self.files = MediaFiles(self.config.media_store_path)
        self._uploaded: dict[str, asyncio.Event] = {}
        self._remote_locks = KeyedLocks()
        self._thumbnail_locks = KeyedLocks()
        self._http: aiohttp.ClientSession | None = None
        self._background: asyncio.Task | None = None
        #: (origin, media ID, thumbnails only) -> when this process last wrote its access time.
        self._accessed: OrderedDict[tuple[str, str, bool], int] = OrderedDict()
        #: Media the deprecated unauthenticated endpoints keep serving even when
        #: authenticated media is enforced: the IdP icons of the login pages (as the spec
        #: advises), which browsers load without an access token.
        self.public_media = frozenset(public_media)

    def start_background_jobs(self) -> None:
        """In the one process with the ``media_background`` role (gateway/roles.py,
        ``media_instance_running_background_jobs``): about every ``BACKGROUND_EVERY_S``,
        reservations of ``POST /create`` that expired unused go."""
        if self._background is None:
            self._background = asyncio.get_running_loop().create_task(self._background_jobs(), name="media-jobs")

    async def _background_jobs(self) -> None:
        while True:
            try:
                gone = await self.store.delete_expired_pending(self.clock_ms())
                if gone:
                    log.info("deleted %d expired media reservations", gone)
            except Exception:
                log.exception("media background jobs failed")
            await asyncio.sleep(BACKGROUND_EVERY_S)

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
            await asyncio.gather(self._background, return_exceptions=True)
            self._background = None
        if self._http is not None:
            await self._http.close()

    def mxc(self, media_id: str) -> str:
        return f"mxc://{self.server_name}/{media_id}"

    # --- uploads ---------------------------------------------------------------------

    async def upload(self, user_id: str, content_type: str | None, upload_name: str | None,
                     chunks: AsyncIterable[bytes]) -> str:
        """Store the content and return its mxc:// URI (only once it is on disk and recorded)."""
        media_type, upload_name = check_upload(content_type, upload_name)
        written = await self._write(chunks)
        media_id = new_id()
        await self.store.store_local_media(media_id=media_id, user_id=user_id, now_ms=self.clock_ms(),
                                           media_type=media_type, length=written.length, upload_name=upload_name,
                                           filesystem_id=written.filesystem_id, sha256=written.sha256)
        return self.mxc(media_id)

    async def _write(self, chunks: AsyncIterable[bytes]):
        try:
            return await self.files.write_stream(chunks, max_size=self.config.max_upload_size)
        except TooLargeError:
            raise MatrixError(413, Codes.TOO_LARGE,
                              f"Upload is larger than the limit of {self.config.max_upload_size} bytes") from None

    async def create(self, user_id: str) -> tuple[str, int]:
        """Reserve an mxc:// URI for a later upload: (URI, unused_expires_at)."""
        now = self.clock_ms()
        media_id = new_id()
        expires = now + self.config.unused_expiration_time_ms
        ok = await self.store.create_pending(media_id=media_id, user_id=user_id, now_ms=now, expires_ts=expires,
                                             max_pending=self.config.max_pending_media_uploads)
        if not ok:
            raise MatrixError(429, Codes.LIMIT_EXCEEDED, "You have too many pending media uploads",
                              retry_after_ms=60_000)
        return self.mxc(media_id), expires

    async def upload_to(self, user_id: str, server_name: str, media_id: str, content_type: str | None,
                        upload_name: str | None, chunks: AsyncIterable[bytes]) -> None:
        """PUT content to a created mxc:// URI: its creator only, once, before it expires."""
        media_type, upload_name = check_upload(content_type, upload_name)
        if server_name != self.server_name or not MEDIA_ID.match(media_id):
            raise MatrixError.not_found("Unknown media ID")
        info = await self._check_pending(user_id, media_id)
        written = await self._write(chunks)
        ok = await self.store.complete_pending(media_id=info.media_id, user_id=user_id, now_ms=self.clock_ms(),
                                               media_type=media_type, length=written.length,
                                               upload_name=upload_name, filesystem_id=written.filesystem_id,
                                               sha256=written.sha256)
        if not ok:  # lost a race with another upload (or it expired meanwhile)
            self.files.delete(written.filesystem_id)
            await self._check_pending(user_id, media_id)
            raise MatrixError(409, CANNOT_OVERWRITE, "Media ID already has content")
        event = self._uploaded.pop(media_id, None)
        if event is not None:
            event.set()

    async def _check_pending(self, user_id: str, media_id: str) -> MediaInfo:
        info = await self.store.get_local_media(media_id)
        if info is None:
            raise MatrixError.not_found("Unknown media ID")
        if info.user_id != user_id:
            raise MatrixError.forbidden("Only the user who created this media ID can upload to it")
        if info.uploaded:
            raise MatrixError(409, CANNOT_OVERWRITE, "Media ID already has content")
        if info.unused_expires_ts is not None and info.unused_expires_ts <= self.clock_ms():
            raise MatrixError.not_found("Media ID has expired")
        return info

    # --- downloads -------------------------------------------------------------------

    async def get_local(self, media_id: str, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> MediaInfo:
        """Uploaded, unquarantined local media; waits up to ``timeout_ms`` for a pending
        upload (then 504 M_NOT_YET_UPLOADED)."""
        check_media_id(media_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while True:
            info = await self.store.get_local_media(media_id)
            if info is None or info.quarantined_by is not None:
                self._uploaded.pop(media_id, None)
                raise MatrixError.not_found("Unknown media ID")
            if info.uploaded:
                await self._touch(info.origin, media_id)
                return info
            if info.unused_expires_ts is not None and info.unused_expires_ts <= self.clock_ms():
                self._uploaded.pop(media_id, None)
                raise MatrixError.not_found("Unknown media ID")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise MatrixError(504, NOT_YET_UPLOADED, "Content has not yet been uploaded")
            event = self._uploaded.setdefault(media_id, asyncio.Event())
            # Woken by an upload in this process; the periodic re-read covers other processes.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 1.0))

    async def get_media(self, server_name: str, media_id: str, *, timeout_ms: int = DEFAULT_TIMEOUT_MS,
                        allow_remote: bool = True) -> MediaInfo:
        """Local media, or remote media from the cache (fetched over federation first if
        needed and ``allow_remote``)."""
        check_server_name(server_name)
        check_media_id(media_id)
        if server_name == self.server_name:
            return await self.get_local(media_id, timeout_ms)
        info = await self.store.get_remote_media(server_name, media_id)
        if info is None:
            if not allow_remote:
                raise MatrixError.not_found("Unknown media ID")
            async with self._remote_locks((server_name, media_id)):
                info = await self.store.get_remote_media(server_name, media_id)
                if info is None:
                    info = await self._fetch_remote(server_name, media_id, timeout_ms)
        if info.quarantined_by is not None:
            raise MatrixError.not_found("Unknown media ID")
        await self._touch(server_name, media_id)
        return info

    async def _touch(self, origin: str, media_id: str, *, thumbnail_only: bool = False) -> None:
        """Record that media is being served (``last_access_ts``: what deleting old local
        media and purging the remote cache go by), at most once a minute per item."""
        key, now = (origin, media_id, thumbnail_only), self.clock_ms()
        last = self._accessed.get(key)
        if last is not None and now - last < ACCESS_GRANULARITY_MS:
            return
        self._accessed[key] = now
        self._accessed.move_to_end(key)
        while len(self._accessed) > 10_000:
            self._accessed.popitem(last=False)
        await self.store.touch(origin, media_id, now, thumbnail_only=thumbnail_only)

    def served(self, info: MediaInfo) -> ServedFile:
        assert info.filesystem_id is not None
        return ServedFile(self.files.path(info.filesystem_id), info.media_type or "application/octet-stream",
                          info.media_length or 0, info.upload_name)

    # --- thumbnails ------------------------------------------------------------------

    async def thumbnail(self, info: MediaInfo, width: int, height: int, method: str) -> ServedFile:
        """A thumbnail of media already found with get_media/get_local (cached on disk)."""
        if not thumbnailer.can_thumbnail(info.media_type):
            raise MatrixError(400, Codes.UNKNOWN, "Cannot generate thumbnails for the requested content")
        if not self.config.dynamic_thumbnails:
            size = thumbnailer.choose_size(width, height, method, self.config.thumbnail_sizes)
            width, height, method = size.width, size.height, size.method
        key = (info.origin, info.media_id, width, height, method)
        async with self._thumbnail_locks(key):
            thumb = await self.store.get_thumbnail(*key)
            if thumb is None:
                thumb = await self._generate_thumbnail(info, width, height, method)
        return ServedFile(self.files.path(thumb.filesystem_id), thumb.media_type, thumb.length,
                          f"thumbnail.{thumb.media_type.split('/')[-1]}")

    async def thumbnail_of(self, server_name: str, media_id: str, width: int, height: int, method: str, *,
                           timeout_ms: int = DEFAULT_TIMEOUT_MS, allow_remote: bool = True) -> ServedFile:
        """A thumbnail of local or remote media. Remote media we have not cached is not
        downloaded whole: its server's thumbnail is fetched (and kept) instead."""
        check_server_name(server_name)
        check_media_id(media_id)
        if server_name == self.server_name:
            return await self.thumbnail(await self.get_local(media_id, timeout_ms), width, height, method)
        cached = await self.store.get_remote_media(server_name, media_id)
        if cached is not None:
            if cached.quarantined_by is not None:
                raise MatrixError.not_found("Unknown media ID")
            await self._touch(server_name, media_id)
            return await self.thumbnail(cached, width, height, method)
        if not self.config.dynamic_thumbnails:
            size = thumbnailer.choose_size(width, height, method, self.config.thumbnail_sizes)
            width, height, method = size.width, size.height, size.method
        key = (server_name, media_id, width, height, method)
        async with self._thumbnail_locks(key):
            thumb = await self.store.get_thumbnail(*key)
            if thumb is None:
                if not allow_remote:
                    raise MatrixError.not_found("Unknown media ID")
                thumb = await self._fetch_remote_thumbnail(server_name, media_id, width, height, method,
                                                           timeout_ms)
            await self._touch(server_name, media_id, thumbnail_only=True)
        return ServedFile(self.files.path(thumb.filesystem_id), thumb.media_type, thumb.length,
                          f"thumbnail.{thumb.media_type.split('/')[-1]}")

    async def _fetch_remote_thumbnail(self, origin: str, media_id: str, width: int, height: int, method: str,
                                      timeout_ms: int) -> ThumbnailInfo:
        query = {"width": str(width), "height": str(height), "method": method, "timeout_ms": str(timeout_ms),
                 "animated": "false"}
        media_type, _name, written = await self._federation_fetch(origin, media_id, "thumbnail", query)
        try:
            if not thumbnailer.can_thumbnail(media_type):
                raise thumbnailer.ThumbnailError(f"not an image type we serve as a thumbnail: {media_type}")
            w, h = await asyncio.to_thread(thumbnailer.image_size, str(self.files.path(written.filesystem_id)),
                                           self.config.max_image_pixels)
        except thumbnailer.ThumbnailError as e:
            self.files.delete(written.filesystem_id)
            log.warning("thumbnail of mxc://%s/%s from its server is unusable: %s", origin, media_id, e)
            raise MatrixError(502, Codes.UNKNOWN, "Failed to fetch remote media") from None
        thumb = ThumbnailInfo(width, height, method, media_type.split(";")[0].strip(), w, h, written.length,
                              written.filesystem_id)
        if not await self.store.store_thumbnail(origin, media_id, thumb):
            self.files.delete(written.filesystem_id)
            stored = await self.store.get_thumbnail(origin, media_id, width, height, method)
            assert stored is not None
            return stored
        return thumb

    async def _generate_thumbnail(self, info: MediaInfo, width: int, height: int, method: str) -> ThumbnailInfo:
        source = self.served(info)
        try:
            made = await asyncio.to_thread(thumbnailer.make_thumbnail, str(source.path), source.media_type,
                                           width, height, method, self.config.max_image_pixels)
        except thumbnailer.ImageTooLargeError:
            if info.origin == self.server_name:
                raise MatrixError(413, Codes.TOO_LARGE, "Content is too large to thumbnail") from None
            raise MatrixError(502, Codes.TOO_LARGE, "Content is too large to thumbnail") from None
        except thumbnailer.ThumbnailError:
            raise MatrixError(400, Codes.UNKNOWN, "Cannot generate thumbnails for the requested content") from None
        if made is None:  # the image already fits: the original is the thumbnail
            w, h = await asyncio.to_thread(thumbnailer.image_size, str(source.path), self.config.max_image_pixels)
            thumb = ThumbnailInfo(width, height, method, source.media_type, w, h, source.length,
                                  info.filesystem_id)  # type: ignore[arg-type]
        else:
            written = await self.files.write_bytes(made.data)
            thumb = ThumbnailInfo(width, height, method, made.media_type, made.width, made.height, written.length,
                                  written.filesystem_id)
        await self.store.store_thumbnail(info.origin, info.media_id, thumb)
        return thumb

    # --- remote media ----------------------------------------------------------------

    async def _fetch_remote(self, origin: str, media_id: str, timeout_ms: int) -> MediaInfo:
        """Download remote media over federation into the cache."""
        media_type, upload_name, written = await self._federation_fetch(
            origin, media_id, "download", {"timeout_ms": str(timeout_ms)})
        return await self._cache_remote(origin, media_id, media_type, upload_name, written)

    async def _federation_fetch(self, origin: str, media_id: str, kind: str, query: dict[str, str]):
        """GET /_matrix/federation/v1/media/{kind}/{mediaId} (multipart), then, for older
        servers, the deprecated /_matrix/media/v3/{kind}/{origin}/{mediaId} with
        allow_remote=false. (media type, file name, written file); errors as Synapse maps them."""
        client = self.federation_client
        try:
            async with client.stream("GET", origin, f"/_matrix/federation/v1/media/{kind}/{media_id}",
                                     query=query, timeout=REMOTE_FETCH_TIMEOUT) as resp:
                if resp.status == 200:
                    return await self._read_multipart(origin, resp)
                error = await _error_body(resp)
                if not _is_unrecognized(resp.status, error):
                    raise _remote_error(origin, resp.status, error)
            # An older server: the deprecated endpoint, never letting it go to a third server.
            legacy = f"/_matrix/media/v3/{kind}/{quote_path_segment(origin)}/{media_id}"
            async with client.stream("GET", origin, legacy, query={**query, "allow_remote": "false"},
                                     timeout=REMOTE_FETCH_TIMEOUT) as resp:
                if resp.status != 200:
                    raise _remote_error(origin, resp.status, await _error_body(resp))
                media_type, upload_name = _type_and_name(resp.headers)
                written = await self._write_remote(resp.content.iter_chunked(65536), resp.content_length)
                return media_type, upload_name, written
        except FederationRequestError as e:
            log.warning("fetching mxc://%s/%s (%s) failed: %s", origin, media_id, kind, e)
            raise MatrixError(502, Codes.UNKNOWN, "Failed to fetch remote media") from None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
            log.warning("fetching mxc://%s/%s (%s) failed: %r", origin, media_id, kind, e)
            raise MatrixError(502, Codes.UNKNOWN, "Failed to fetch remote media") from None

    async def _read_multipart(self, origin: str, resp: aiohttp.ClientResponse):
        """The multipart/mixed answer of /federation/v1/media/download: a JSON part, then
        the bytes or a Location to fetch them from."""
        reader = aiohttp.MultipartReader.from_response(resp)
        meta = await reader.next()
        if meta is None or not isinstance(meta, aiohttp.BodyPartReader):
            raise ValueError("multipart answer without a metadata part")
        await meta.read()  # metadata: an empty object today; must be read to reach the next part
        part = await reader.next()
        if part is None or not isinstance(part, aiohttp.BodyPartReader):
            raise ValueError("multipart answer without a content part")
        location = part.headers.get("Location")
        if location:
            return await self._fetch_location(location)
        media_type, upload_name = _type_and_name(part.headers)

        async def chunks():
            while chunk := await part.read_chunk(65536):
                yield chunk

        written = await self._write_remote(chunks(), None)
        return media_type, upload_name, written

    async def _fetch_location(self, url: str):
        """Follow a Location part: a plain HTTPS GET, under the federation IP rules."""
        if not url.startswith("https://"):
            raise ValueError("redirect to a non-https URL")
        async with self._http_session().get(url, max_redirects=5,
                                            timeout=aiohttp.ClientTimeout(total=REMOTE_FETCH_TIMEOUT)) as resp:
            if resp.status != 200:
                raise MatrixError(502, Codes.UNKNOWN, "Failed to fetch remote media")
            media_type, upload_name = _type_and_name(resp.headers)
            written = await self._write_remote(resp.content.iter_chunked(65536), resp.content_length)
            return media_type, upload_name, written

    def _http_session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(connector=self.outbound_connector(), headers={"User-Agent": "Gateway"})
        return self._http

    async def _write_remote(self, chunks: AsyncIterable[bytes], declared: int | None):
        limit = self.config.max_upload_size
        if declared is not None and declared > limit:
            raise MatrixError(502, Codes.TOO_LARGE, f"Remote media is larger than {limit} bytes")
        try:
            return await self.files.write_stream(chunks, max_size=limit)
        except TooLargeError:
            raise MatrixError(502, Codes.TOO_LARGE, f"Remote media is larger than {limit} bytes") from None

    async def _cache_remote(self, origin: str, media_id: str, media_type: str, upload_name: str | None,
                            written) -> MediaInfo:
        stored = await self.store.store_remote_media(
            origin=origin, media_id=media_id, now_ms=self.clock_ms(), media_type=media_type,
            length=written.length, upload_name=upload_name, filesystem_id=written.filesystem_id,
            sha256=written.sha256)
        if not stored:
            self.files.delete(written.filesystem_id)
        info = await self.store.get_remote_media(origin, media_id)
        assert info is not None
        return info

    # --- images from the web (SSO avatars) ---------------------------------------------

    async def upload_image_from_url(self, user_id: str, url: str, upload_name: str) -> str:
        """Download an image (http/https, under the outbound IP rules, at most
        ``max_upload_size``) and store it as media of ``user_id``; its mxc:// URI.
        Raises MatrixError when the URL is not an image or cannot be fetched."""
        if not url.startswith(("https://", "http://")):
            raise MatrixError(400, Codes.INVALID_PARAM, "Only http and https URLs can be fetched")
        try:
            async with self._http_session().get(url, max_redirects=5,
                                                timeout=aiohttp.ClientTimeout(total=30)) as resp:
                if resp.status != 200:
                    raise MatrixError(502, Codes.UNKNOWN, f"HTTP {resp.status} from {url}")
                media_type, _ = _type_and_name(resp.headers)
                if not media_type.startswith("image/"):
                    raise MatrixError(400, Codes.INVALID_PARAM, f"{url} is not an image ({media_type})")
                written = await self._write_remote(resp.content.iter_chunked(65536), resp.content_length)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError) as e:
            raise MatrixError(502, Codes.UNKNOWN, f"Failed to fetch {url}: {e}") from None
        media_id = new_id()
        await self.store.store_local_media(media_id=media_id, user_id=user_id, now_ms=self.clock_ms(),
                                           media_type=media_type, length=written.length, upload_name=upload_name,
                                           filesystem_id=written.filesystem_id, sha256=written.sha256)
        return self.mxc(media_id)

    # --- administration --------------------------------------------------------------

    async def quarantine(self, server_name: str, media_id: str, by: str | None) -> bool:
        return await self.store.set_quarantined(server_name, media_id, by)

    async def delete(self, server_name: str, media_id: str) -> bool:
        """Delete media (row, file and thumbnails). False if it was unknown."""
        filesystem_ids = await self.store.delete_media(server_name, media_id)
        if filesystem_ids is None:
            return False
        self._delete_files(filesystem_ids)
        return True

    def _delete_files(self, filesystem_ids: list[str]) -> None:
        """The files of rows already gone (a file goes only once nothing names it)."""
        for fid in set(filesystem_ids):
            self.files.delete(fid)

    async def delete_local(self, media_ids: list[str]) -> list[str]:
        """Delete local media; the IDs that were there and are gone."""
        return [m for m in media_ids if await self.delete(self.server_name, m)]

    async def delete_old_local(self, *, before_ts: int, size_gt: int, keep_profiles: bool) -> list[str]:
        """Delete local media last served before ``before_ts`` (see MediaStore.old_local_media)."""
        return await self.delete_local(await self.store.old_local_media(
            before_ts=before_ts, size_gt=size_gt, keep_profiles=keep_profiles))

    async def purge_remote_cache(self, before_ts: int) -> int:
        """Drop cached remote media (and remote thumbnails) last served before ``before_ts``;
        a later download fetches it again. Quarantined media is kept. How many went."""
        count = 0
        for origin, media_id in await self.store.old_remote_media(before_ts):
            filesystem_ids = await self.store.delete_media(origin, media_id)
            if filesystem_ids is None:  # thumbnails only: no cache row of its own
                filesystem_ids = await self.store.delete_thumbnails(origin, media_id)
            self._delete_files(filesystem_ids)
            count += 1
        return count


def idp_icons(sso: SsoSections) -> set[tuple[str, str]]:
    """The (server, media ID) of the IdP icons of the login pages given as mxc URIs."""
    providers = [*sso.oidc_providers, sso.saml2_config, sso.cas_config]
    icons = set()
    for provider in providers:
        icon = getattr(provider, "idp_icon", None)
        if icon and icon.startswith("mxc://"):
            server_name, _, media_id = icon[len("mxc://"):].partition("/")
            icons.add((server_name, media_id))
    return icons


def _type_and_name(headers) -> tuple[str, str | None]:
    media_type = headers.get("Content-Type") or "application/octet-stream"
    name = None
    disposition = headers.get("Content-Disposition")
    if disposition:
        try:
            _kind, params = parse_content_disposition(disposition)
            name = content_disposition_filename(params)
        except (BadContentDispositionHeader, ValueError):
            name = None
    try:
        media_type, name = check_upload(media_type, name)
    except MatrixError:
        media_type, name = "application/octet-stream", None
    return media_type, name


async def _error_body(resp: aiohttp.ClientResponse) -> dict:
    try:
        raw = b""
        async for chunk in resp.content.iter_chunked(65536):
            raw += chunk
            if len(raw) > 65536:
                return {}
        body = parse_json(raw, allow_constants=True)
        return body if isinstance(body, dict) else {}
    except (ValueError, aiohttp.ClientError, asyncio.TimeoutError):
        return {}


def _is_unrecognized(status: int, error: dict) -> bool:
    """The spec: fall back to the legacy endpoint on 404 M_UNRECOGNIZED (and on the
    answers of servers that do not know the path at all)."""
    if status in (404, 405, 400, 501) and error.get("errcode") == Codes.UNRECOGNIZED:
        return True
    return status in (404, 405, 501) and not error.get("errcode")


def _remote_error(origin: str, status: int, error: dict) -> MatrixError:
    log.warning("remote media from %s: HTTP %s %s", origin, status, error.get("errcode"))
    if status == 404:
        return MatrixError.not_found("Remote media not found")
    if status == 504 and error.get("errcode") == NOT_YET_UPLOADED:
        return MatrixError(504, NOT_YET_UPLOADED, "Content has not yet been uploaded")
    if error.get("errcode") == Codes.TOO_LARGE:
        return MatrixError(502, Codes.TOO_LARGE, "Remote media is too large")
    return MatrixError(502, Codes.UNKNOWN, "Failed to fetch remote media")

"""URL previews: OpenGraph data of a web page, its image stored as local media.

Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1mediapreview_url
Config (Synapse): ``url_preview_enabled``, ``url_preview_ip_range_blacklist`` /
``_whitelist``, ``max_spider_size``, ``url_preview_accept_language``.

Every request (and every redirect hop) goes through a connector that applies the IP
range policy to the address actually connected to (federation/net/ip_ranges.py), so a
name that resolves to a blocked address, or a redirect to one, is refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from federation.net.ip_ranges import BlockedAddressError, IPRangePolicy
from federation.net.resolver import create_connector

from ..http import Codes, MatrixError
from . import thumbnailer

if TYPE_CHECKING:
    from .media import MediaService

log = logging.getLogger(__name__)

CACHE_SECONDS = 3600
MAX_REDIRECTS = 5
FETCH_TIMEOUT = 30.0
_KEEP_PREFIXES = ("og:", "twitter:", "article:", "profile:", "book:", "music:", "video:")


class _OpenGraphParser(HTMLParser):
    """Collects <meta property/name=... content=...>, the <title>, <meta charset>."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.title: str | None = None
        self._in_title = False
        self._title_parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "meta":
            key = (a.get("property") or a.get("name") or "").strip()
            if key and "content" in a:
                low = key.lower()
                if low.startswith(_KEEP_PREFIXES) or low == "description":
                    self.meta.setdefault(key if low.startswith(_KEEP_PREFIXES) else low, a["content"].strip())
        elif tag == "title" and self.title is None:
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            self.title = " ".join("".join(self._title_parts).split())[:1000]

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self._title_parts.append(data)


def parse_open_graph(html: str) -> dict[str, Any]:
    """OpenGraph properties of a page, with <title> and the description meta as fallbacks."""
    parser = _OpenGraphParser()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # malformed HTML: keep what was parsed  # noqa: BLE001
        pass
    og: dict[str, Any] = {k: v[:2000] for k, v in parser.meta.items() if k != "description"}
    if "og:title" not in og and parser.title:
        og["og:title"] = parser.title
    if "og:description" not in og and parser.meta.get("description"):
        og["og:description"] = parser.meta["description"][:2000]
    return og


def _charset(content_type: str, raw: bytes) -> str:
    for param in content_type.split(";")[1:]:
        k, _, v = param.partition("=")
        if k.strip().lower() == "charset" and v.strip():
            return v.strip().strip('"')
    head = raw[:2048].lower()
    i = head.find(b"charset=")
    if i >= 0:
        value = head[i + 8:i + 40].strip(b"\"' ").split(b'"')[0].split(b"'")[0].split(b";")[0].split(b" ")[0]
        value = value.split(b">")[0].split(b"/")[0]
        if value:
            return value.decode("ascii", "replace")
    return "utf-8"


class UrlPreviewer:
    def __init__(self, media: "MediaService"):
        self.media = media
        config = media.config
        self.policy = IPRangePolicy(blacklist=config.url_preview_ip_range_blacklist,
                                    whitelist=config.url_preview_ip_range_whitelist)
        self.max_size = config.max_spider_size
        self.accept_language = ", ".join(config.url_preview_accept_language)
        self._session: aiohttp.ClientSession | None = None
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=create_connector(policy=self.policy),
                timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT, connect=10),
                headers={"User-Agent": "Gateway (URL preview; Matrix homeserver)",
                         "Accept-Language": self.accept_language})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def preview(self, url: str, user_id: str) -> dict[str, Any]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MatrixError(400, Codes.INVALID_PARAM, "Only http and https URLs can be previewed")
        now = time.monotonic()
        cached = self._cache.get(url)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        media_type, raw, final_url = await self._fetch(url)
        base_type = media_type.split(";", 1)[0].strip().lower()
        if base_type.startswith("image/"):
            og = await self._image_fields(base_type, raw, user_id)
        elif base_type in ("text/html", "application/xhtml+xml"):
            og = parse_open_graph(raw.decode(_charset(media_type, raw), errors="replace"))
            image_url = og.pop("og:image", None) or og.pop("og:image:url", None)
            for key in ("og:image:secure_url", "og:image:type", "og:image:width", "og:image:height"):
                og.pop(key, None)
            if image_url:
                try:
                    img_type, img_raw, _ = await self._fetch(urljoin(final_url, image_url))
                    if img_type.split(";")[0].strip().lower().startswith("image/"):
                        og.update(await self._image_fields(img_type.split(";")[0].strip().lower(), img_raw, user_id))
                except MatrixError as e:
                    log.info("preview of %s: its image could not be fetched: %s", url, e.error)
        else:
            og = {}
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[url] = (now, og)
        return og

    async def _image_fields(self, media_type: str, raw: bytes, user_id: str) -> dict[str, Any]:
        async def chunks():
            yield raw

        mxc = await self.media.upload(user_id, media_type, None, chunks())
        out: dict[str, Any] = {"og:image": mxc, "og:image:type": media_type, "matrix:image:size": len(raw)}
        if thumbnailer.can_thumbnail(media_type):
            path = self.media.served(await self.media.get_local(mxc.rsplit("/", 1)[1])).path
            try:
                w, h = await asyncio.to_thread(thumbnailer.image_size, str(path), self.media.config.max_image_pixels)
                out["og:image:width"], out["og:image:height"] = w, h
            except thumbnailer.ThumbnailError:
                pass
        return out

    async def _fetch(self, url: str) -> tuple[str, bytes, str]:
        """GET a URL (redirects followed, each hop under the IP policy) up to max_spider_size."""
        try:
            async with self._get_session().get(url, max_redirects=MAX_REDIRECTS) as resp:
                if resp.status != 200:
                    raise MatrixError(502, Codes.UNKNOWN, f"The page answered HTTP {resp.status}")
                if resp.content_length is not None and resp.content_length > self.max_size:
                    raise MatrixError(502, Codes.TOO_LARGE, "The page is too large to preview")
                chunks, size = [], 0
                async for chunk in resp.content.iter_chunked(65536):
                    size += len(chunk)
                    if size > self.max_size:
                        raise MatrixError(502, Codes.TOO_LARGE, "The page is too large to preview")
                    chunks.append(chunk)
                return resp.headers.get("Content-Type", "application/octet-stream"), b"".join(chunks), str(resp.url)
        except MatrixError:
            raise
        except aiohttp.TooManyRedirects:
            raise MatrixError(502, Codes.UNKNOWN, "Too many redirects") from None
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError) as e:
            if _blocked(e):
                raise MatrixError(403, Codes.FORBIDDEN, "IP address blocked (url_preview_ip_range_blacklist)") from None
            log.info("preview of %s failed: %r", url, e)
            raise MatrixError(502, Codes.UNKNOWN, "Failed to download the page") from None


def _blocked(error: BaseException | None) -> bool:
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, BlockedAddressError):
            return True
        error = getattr(error, "os_error", None) or error.__cause__ or error.__context__
        seen += 1
    return False

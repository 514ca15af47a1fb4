"""Serving media bytes safely: Content-Disposition, Content-Security-Policy, CORP.

Spec: https://spec.matrix.org/latest/client-server-api/#serving-inline-content
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from aiohttp import web

#: Types that may be shown inline (the spec's list); everything else is an attachment.
INLINE_TYPES = frozenset({
    "text/css", "text/plain", "text/csv", "application/json", "application/ld+json",
    "image/jpeg", "image/gif", "image/png", "image/apng", "image/webp", "image/avif",
    "video/mp4", "video/webm", "video/ogg", "video/quicktime",
    "audio/mp4", "audio/webm", "audio/aac", "audio/mpeg", "audio/ogg", "audio/wave", "audio/wav",
    "audio/x-wav", "audio/x-pn-wav", "audio/flac", "audio/x-flac",
})

#: The policy the spec recommends for served content.
CONTENT_SECURITY_POLICY = ("sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
                           "style-src 'unsafe-inline'; object-src 'self';")

_TOKEN_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&+-.^_`|~ ()[]{}@,;:=/?'")


def content_disposition(media_type: str, filename: str | None) -> str:
    """``inline`` only for the safe types, ``attachment`` otherwise; the file name as a
    quoted string when it is plain printable ASCII, else RFC 6266/5987 ``filename*``."""
    base = media_type.split(";", 1)[0].strip().lower()
    kind = "inline" if base in INLINE_TYPES else "attachment"
    if not filename:
        return kind
    if all(c in _TOKEN_SAFE for c in filename):
        return f'{kind}; filename="{filename}"'
    return f"{kind}; filename*=utf-8''{quote(filename, safe='')}"


def media_headers(media_type: str, filename: str | None) -> dict[str, str]:
    if media_type.lower().startswith("text/") and "charset" not in media_type.lower():
        media_type += "; charset=utf-8"  # no guessing (UTF-7 and friends)
    return {
        "Content-Type": media_type,
        "Content-Disposition": content_disposition(media_type, filename),
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=86400",
    }


def file_response(path: Path, media_type: str, filename: str | None) -> web.FileResponse:
    """The file (Range requests supported), with the media headers."""
    return web.FileResponse(path, headers=media_headers(media_type, filename))

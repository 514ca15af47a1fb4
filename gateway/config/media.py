"""The media repository section of homeserver.yaml (Synapse's key names).

Docs: https://element-hq.github.io/synapse/latest/usage/configuration/config_documentation.html#media-store
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Callable

from ._values import ConfigError, Section, string_item

__all__ = ["MediaConfig", "ThumbnailSize", "parse_media_config", "DEFAULT_THUMBNAIL_SIZES"]

METHODS = ("crop", "scale")


@dataclass(frozen=True)
class ThumbnailSize:
    width: int
    height: int
    method: str  # "crop" or "scale"


#: The sizes the spec recommends (and Synapse's default ``thumbnail_sizes``).
DEFAULT_THUMBNAIL_SIZES: tuple[ThumbnailSize, ...] = (
    ThumbnailSize(32, 32, "crop"),
    ThumbnailSize(96, 96, "crop"),
    ThumbnailSize(320, 240, "scale"),
    ThumbnailSize(640, 480, "scale"),
    ThumbnailSize(800, 600, "scale"),
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class MediaConfig:
    media_store_path: str = "media_store"
    max_upload_size: int = 50 * 1024 * 1024
    max_image_pixels: int = 32 * 1024 * 1024
    dynamic_thumbnails: bool = False
    thumbnail_sizes: tuple[ThumbnailSize, ...] = DEFAULT_THUMBNAIL_SIZES
    #: When true (Synapse's default) only the authenticated /_matrix/client/v1/media
    #: endpoints serve downloads; the legacy /_matrix/media/v3 ones answer 404.
    enable_authenticated_media: bool = True
    unused_expiration_time_ms: int = 24 * 3_600_000
    max_pending_media_uploads: int = 5
    url_preview_enabled: bool = False
    url_preview_ip_range_blacklist: tuple[IPNetwork, ...] = ()
    url_preview_ip_range_whitelist: tuple[IPNetwork, ...] = ()
    max_spider_size: int = 10 * 1024 * 1024
    url_preview_accept_language: tuple[str, ...] = ("en",)
    warnings: tuple[str, ...] = field(default=(), compare=False)


def _networks(s: Section, name: str) -> tuple[IPNetwork, ...]:
    out = []
    for i, v in enumerate(s.list(name, [], of=string_item)):
        try:
            out.append(ipaddress.ip_network(v, strict=False))
        except ValueError:
            raise ConfigError(f"{s.key(name)}[{i}]", f"expected an IP range like 10.0.0.0/8, got {v!r}") from None
    return tuple(out)


def _thumbnail_sizes(s: Section) -> tuple[ThumbnailSize, ...]:
    items = s.list("thumbnail_sizes", None)
    if items is None:
        return DEFAULT_THUMBNAIL_SIZES
    sizes = []
    for i, item in enumerate(items):
        ts = Section(item, f"thumbnail_sizes[{i}]")
        sizes.append(ThumbnailSize(
            width=ts.int("width", minimum=1, maximum=10_000),
            height=ts.int("height", minimum=1, maximum=10_000),
            method=ts.str("method", "scale", choices=METHODS),
        ))
    return tuple(sizes)


def parse_media_config(root: Section, resolve_path: Callable[[str], str]) -> MediaConfig:
    """Read the media keys from the top level of homeserver.yaml."""
    enabled = root.bool("url_preview_enabled", False)
    if enabled and not root.has("url_preview_ip_range_blacklist"):
        raise ConfigError("url_preview_ip_range_blacklist",
                          "is required when url_preview_enabled is true (list the ranges the preview "
                          "spider must never contact, e.g. the default ip_range_blacklist)")
    for ignored in ("media_retention", "enable_media_repo", "media_storage_providers", "url_preview_url_blacklist",
                    "oembed", "prevent_media_downloads_from", "remote_media_download_burst_count",
                    "remote_media_download_per_second", "media_upload_limits"):
        root.ignore(ignored)
    langs = root.raw("url_preview_accept_language", ["en"])
    if not isinstance(langs, list) or not all(isinstance(x, str) for x in langs):
        raise ConfigError("url_preview_accept_language", "expected a list of language tags")
    return MediaConfig(
        media_store_path=resolve_path(root.str("media_store_path", "media_store")),
        max_upload_size=root.size_bytes("max_upload_size", 50 * 1024 * 1024),
        max_image_pixels=root.size_bytes("max_image_pixels", 32 * 1024 * 1024),
        dynamic_thumbnails=root.bool("dynamic_thumbnails", False),
        thumbnail_sizes=_thumbnail_sizes(root),
        enable_authenticated_media=root.bool("enable_authenticated_media", True),
        unused_expiration_time_ms=root.duration_ms("unused_expiration_time", 24 * 3_600_000),
        max_pending_media_uploads=root.int("max_pending_media_uploads", 5, minimum=1),
        url_preview_enabled=enabled,
        url_preview_ip_range_blacklist=_networks(root, "url_preview_ip_range_blacklist"),
        url_preview_ip_range_whitelist=_networks(root, "url_preview_ip_range_whitelist"),
        max_spider_size=root.size_bytes("max_spider_size", 10 * 1024 * 1024),
        url_preview_accept_language=tuple(langs),
    )


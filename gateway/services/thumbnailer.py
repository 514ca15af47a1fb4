"""Thumbnails with Pillow: "scale" and "crop", never upscaled.

Spec: https://spec.matrix.org/latest/client-server-api/#thumbnails
Pure functions over bytes on disk; the media service runs them in a worker thread.
Pillow is imported by the first call, not with the module: a server that never thumbnails
does not carry it (docs/performance.md, "Memory").
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Sequence

from ..config.media import ThumbnailSize

#: Content types we can read and thumbnail (Synapse's list).
THUMBNAILABLE_TYPES = frozenset({"image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/apng", "image/gif",
                                 "image/webp"})


class ThumbnailError(Exception):
    """The content cannot be thumbnailed (not an image we can decode)."""


class ImageTooLargeError(ThumbnailError):
    """More pixels than ``max_image_pixels``."""


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    media_type: str
    width: int
    height: int


def can_thumbnail(media_type: str | None) -> bool:
    return (media_type or "").split(";", 1)[0].strip().lower() in THUMBNAILABLE_TYPES


def choose_size(want_width: int, want_height: int, method: str,
                sizes: Sequence[ThumbnailSize]) -> ThumbnailSize:
    """The configured size to serve for a request (``dynamic_thumbnails: false``): the
    smallest of the requested method that is at least as big as asked, else the
    biggest one (of that method if there is one)."""
    same = [s for s in sizes if s.method == method] or list(sizes)
    big_enough = [s for s in same if s.width >= want_width and s.height >= want_height]
    if big_enough:
        return min(big_enough, key=lambda s: (s.width * s.height, s.width))
    return max(same, key=lambda s: (s.width * s.height, s.width))


def _needed_ratio(ow: int, oh: int, width: int, height: int, method: str) -> float:
    """How far the image will be scaled down (either orientation: EXIF may rotate it)."""
    def one(w: int, h: int) -> float:
        return max(width / w, height / h) if method == "crop" else min(width / w, height / h)

    return min(1.0, max(one(ow, oh), one(oh, ow)))


def _open(path: str, max_pixels: int, target: tuple[int, int, str] | None = None) -> Image.Image:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLargeError(f"{width}x{height} is more than max_image_pixels")
            if target is not None and image.format == "JPEG":
                # Let the JPEG decoder scale down by 1/2..1/8 (never below what is needed).
                ratio = _needed_ratio(width, height, *target)
                image.draft(None, (math.ceil(width * ratio), math.ceil(height * ratio)))
            image.load()
    except ThumbnailError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ThumbnailError(f"cannot decode image: {e}") from None
    return image


def image_size(path: str, max_pixels: int) -> tuple[int, int]:
    """Width and height, without decoding more than the header."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError, ValueError) as e:
        raise ThumbnailError(f"cannot decode image: {e}") from None


def make_thumbnail(path: str, source_type: str, width: int, height: int, method: str,
                   max_pixels: int) -> Thumbnail | None:
    """A thumbnail of at most (crop: exactly, when the image is big enough) ``width`` x
    ``height``; None when the image already fits (serve the original instead)."""
    from PIL import Image, ImageOps

    image = _open(path, max_pixels, (width, height, method))
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block is no reason to fail  # noqa: BLE001
        pass
    if image.mode == "CMYK":
        image = image.convert("RGB")
    elif image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA")
    ow, oh = image.size
    if ow <= width and oh <= height:
        return None
    if method == "crop":
        ratio = min(1.0, max(width / ow, height / oh))
        sw, sh = max(1, round(ow * ratio)), max(1, round(oh * ratio))
        resized = image.resize((sw, sh), Image.Resampling.LANCZOS) if (sw, sh) != (ow, oh) else image
        cw, ch = min(width, sw), min(height, sh)
        left, top = (sw - cw) // 2, (sh - ch) // 2
        out = resized.crop((left, top, left + cw, top + ch))
    else:
        ratio = min(width / ow, height / oh)
        out = image.resize((max(1, round(ow * ratio)), max(1, round(oh * ratio))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if source_type.split(";")[0].strip().lower() in ("image/jpeg", "image/jpg", "image/pjpeg"):
        out.convert("RGB").save(buf, "JPEG", quality=80)
        out_type = "image/jpeg"
    else:
        if out.mode not in ("RGB", "RGBA", "L", "LA"):
            out = out.convert("RGBA")
        out.save(buf, "PNG")
        out_type = "image/png"
    return Thumbnail(buf.getvalue(), out_type, out.size[0], out.size[1])

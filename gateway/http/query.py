"""Query string parameters: booleans and integers, 400 ``M_INVALID_PARAM`` naming the
parameter when they are not what the spec says; those that more than one API parses the
same way (client and federation routes for timestamp_to_event and thumbnails)."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from .errors import Codes, MatrixError

MAX_THUMBNAIL_DIMENSION = 10_000


def parse_bool(value: str | None, name: str) -> bool:
    """``true`` or ``false`` (absent: false)."""
    if value is None:
        return False
    if value not in ("true", "false"):
        raise MatrixError.invalid_param(f"'{name}' must be 'true' or 'false'")
    return value == "true"


def parse_int(value: str | None, name: str, *, minimum: int) -> int | None:
    """An integer of at least ``minimum`` (absent: None)."""
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise MatrixError.invalid_param(f"'{name}' must be an integer") from None
    if number < minimum:
        raise MatrixError.invalid_param(f"'{name}' must be at least {minimum}")
    return number


def parse_timestamp_query(query: Mapping[str, str]) -> tuple[int, bool]:
    """``ts`` and ``dir`` of a timestamp_to_event request: (timestamp, forwards)."""
    try:
        ts = int(query["ts"])
    except KeyError:
        raise MatrixError.missing_param("'ts' is required") from None
    except ValueError:
        raise MatrixError.invalid_param("'ts' must be an integer") from None
    direction = query.get("dir")
    if direction not in ("f", "b"):
        raise MatrixError.invalid_param("'dir' must be 'f' or 'b'")
    return ts, direction == "f"


def _dimension(request: web.Request, name: str) -> int:
    raw = request.query.get(name)
    if raw is None:
        raise MatrixError(400, Codes.MISSING_PARAM, f"Missing integer query parameter {name!r}")
    try:
        value = int(raw)
    except ValueError:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Query parameter {name!r} must be an integer") from None
    if not 0 < value <= MAX_THUMBNAIL_DIMENSION:
        raise MatrixError(400, Codes.INVALID_PARAM,
                          f"Query parameter {name!r} must be between 1 and {MAX_THUMBNAIL_DIMENSION}")
    return value


def thumbnail_params(request: web.Request) -> tuple[int, int, str]:
    """``width``, ``height`` and ``method`` of a thumbnail request (``animated`` checked)."""
    width, height = _dimension(request, "width"), _dimension(request, "height")
    method = request.query.get("method", "scale")
    if method not in ("crop", "scale"):
        raise MatrixError(400, Codes.INVALID_PARAM, "Query parameter 'method' must be 'crop' or 'scale'")
    animated = request.query.get("animated")
    if animated is not None and animated not in ("true", "false"):
        raise MatrixError(400, Codes.INVALID_PARAM, "Query parameter 'animated' must be 'true' or 'false'")
    return width, height, method

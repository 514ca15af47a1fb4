"""Query string parameters: booleans and integers, 400 ``M_INVALID_PARAM`` naming the
parameter when they are not what the spec says."""

from __future__ import annotations

from .errors import MatrixError


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

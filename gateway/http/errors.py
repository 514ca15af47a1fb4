"""Matrix error responses.

Spec: client-server API, "Standard error response".
https://spec.matrix.org/latest/client-server-api/#standard-error-response
"""

from __future__ import annotations

from typing import Any


class Codes:
    UNKNOWN = "M_UNKNOWN"
    UNRECOGNIZED = "M_UNRECOGNIZED"
    FORBIDDEN = "M_FORBIDDEN"
    UNAUTHORIZED = "M_UNAUTHORIZED"
    CAPTCHA_NEEDED = "M_CAPTCHA_NEEDED"
    MISSING_TOKEN = "M_MISSING_TOKEN"
    UNKNOWN_TOKEN = "M_UNKNOWN_TOKEN"
    NOT_JSON = "M_NOT_JSON"
    BAD_JSON = "M_BAD_JSON"
    NOT_FOUND = "M_NOT_FOUND"
    TOO_LARGE = "M_TOO_LARGE"
    LIMIT_EXCEEDED = "M_LIMIT_EXCEEDED"
    MISSING_PARAM = "M_MISSING_PARAM"
    INVALID_PARAM = "M_INVALID_PARAM"
    USER_IN_USE = "M_USER_IN_USE"
    INVALID_USERNAME = "M_INVALID_USERNAME"
    UNSUPPORTED_ROOM_VERSION = "M_UNSUPPORTED_ROOM_VERSION"
    INCOMPATIBLE_ROOM_VERSION = "M_INCOMPATIBLE_ROOM_VERSION"
    USER_DEACTIVATED = "M_USER_DEACTIVATED"
    ROOM_IN_USE = "M_ROOM_IN_USE"
    BAD_ALIAS = "M_BAD_ALIAS"
    UNABLE_TO_AUTHORISE_JOIN = "M_UNABLE_TO_AUTHORISE_JOIN"
    UNABLE_TO_GRANT_JOIN = "M_UNABLE_TO_GRANT_JOIN"
    DUPLICATE_ANNOTATION = "M_DUPLICATE_ANNOTATION"
    GUEST_ACCESS_FORBIDDEN = "M_GUEST_ACCESS_FORBIDDEN"
    PROFILE_TOO_LARGE = "M_PROFILE_TOO_LARGE"
    KEY_TOO_LARGE = "M_KEY_TOO_LARGE"
    THREEPID_IN_USE = "M_THREEPID_IN_USE"
    USER_LOCKED = "M_USER_LOCKED"
    USER_SUSPENDED = "M_USER_SUSPENDED"
    THREEPID_NOT_FOUND = "M_THREEPID_NOT_FOUND"
    THREEPID_AUTH_FAILED = "M_THREEPID_AUTH_FAILED"
    THREEPID_DENIED = "M_THREEPID_DENIED"
    THREEPID_MEDIUM_NOT_SUPPORTED = "M_THREEPID_MEDIUM_NOT_SUPPORTED"
    SERVER_NOT_TRUSTED = "M_SERVER_NOT_TRUSTED"


class MatrixError(Exception):
    """An error to send to the client as ``{"errcode": ..., "error": ...}``."""

    def __init__(self, status: int, errcode: str, error: str, **extra: Any):
        super().__init__(f"{status} {errcode}: {error}")
        self.status = status
        self.errcode = errcode
        self.error = error
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"errcode": self.errcode, "error": self.error, **self.extra}

    # Shorthands for the common cases.
    @classmethod
    def not_found(cls, error: str = "Not found") -> "MatrixError":
        return cls(404, Codes.NOT_FOUND, error)

    @classmethod
    def forbidden(cls, error: str) -> "MatrixError":
        return cls(403, Codes.FORBIDDEN, error)

    @classmethod
    def bad_json(cls, error: str) -> "MatrixError":
        return cls(400, Codes.BAD_JSON, error)

    @classmethod
    def missing_param(cls, error: str) -> "MatrixError":
        return cls(400, Codes.MISSING_PARAM, error)

    @classmethod
    def invalid_param(cls, error: str) -> "MatrixError":
        return cls(400, Codes.INVALID_PARAM, error)

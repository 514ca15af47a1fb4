"""Errors and error codes for modules, under the names Synapse modules use
(``module_api.errors``), so that porting a Synapse module is mostly an import change."""

from __future__ import annotations

from typing import Any

from ..config import ConfigError as _GatewayConfigError
from ..http import Codes as _Codes
from ..http import MatrixError


class Codes(_Codes):
    """Matrix error codes (a module returns one to refuse an operation)."""

    EXPIRED_ACCOUNT = "ORG_MATRIX_EXPIRED_ACCOUNT"
    RESOURCE_LIMIT_EXCEEDED = "M_RESOURCE_LIMIT_EXCEEDED"
    ROOM_IN_USE = "M_ROOM_IN_USE"


class SynapseError(MatrixError):
    """Raise it from a callback that may refuse an operation (e.g. ``on_create_room``)."""

    def __init__(self, code: int, msg: str, errcode: str = Codes.UNKNOWN, additional_fields: dict | None = None):
        super().__init__(code, errcode, msg, **(additional_fields or {}))


class ConfigError(_GatewayConfigError):
    """Raise it from ``parse_config`` when the module's configuration is wrong."""

    def __init__(self, msg: str, path: Any = None):
        super().__init__("", msg)

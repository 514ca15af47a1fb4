"""Typed readers for YAML values, each raising ConfigError that names the key."""

from __future__ import annotations

import re
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """A problem in homeserver.yaml. ``path`` is the dotted key, e.g. ``listeners[0].port``."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class KeyRead:
    """One key a parser read, as the config reference (gateway/config/reference.py) sees it.

    ``path`` has ``[]`` for list items (``listeners[].port``); ``default`` is ``...`` for a
    required key; ``kind`` is the getter's type (``string``, ``duration``, ``ignored``...), or
    ``probe`` for ``Section.has``.
    """

    path: str
    kind: str
    default: Any = None
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    value: Any = None


_recorder: ContextVar[Callable[[KeyRead], None] | None] = ContextVar("config_key_recorder", default=None)
_LIST_INDEX = re.compile(r"\[\d+\]")


@contextmanager
def recording_reads(callback: Callable[[KeyRead], None]) -> Iterator[None]:
    """Report every key the parsers read to ``callback`` while the block runs."""
    token = _recorder.set(callback)
    try:
        yield
    finally:
        _recorder.reset(token)


class Section:
    """A mapping from the config file, remembering its path and which keys were read."""

    def __init__(self, data: Any, path: str = ""):
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(path, f"expected a mapping, got {_type_name(data)}")
        for k in data:
            if not isinstance(k, str):
                raise ConfigError(path, f"keys must be strings, got {k!r}")
        self.data: dict[str, Any] = data
        self.path = path
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        self._note(name, "probe")
        return name in self.data and self.data[name] is not None

    def raw(self, name: str, default: Any = None) -> Any:
        """The value as YAML gave it (the caller checks it)."""
        v = self._lookup(name, "any", default)
        return default if v is None else v

    def ignore(self, name: str) -> None:
        """A key Synapse has that we accept without acting on it (no unknown-key warning)."""
        self._lookup(name, "ignored", None)

    def unknown_keys(self) -> list[str]:
        return [self.key(k) for k in self.data if k not in self.used]

    # --- typed getters -------------------------------------------------------

    def str(self, name: str, default: Any = ..., *, choices: tuple[str, ...] | None = None) -> Any:
        v = self._lookup(name, "string", default, choices=choices)
        if v is None:
            return self._default(name, default)
        if not isinstance(v, str):
            raise ConfigError(self.key(name), f"expected a string, got {_type_name(v)}")
        if choices is not None and v not in choices:
            raise ConfigError(self.key(name), f"expected one of {', '.join(choices)}, got {v!r}")
        return v

    def bool(self, name: str, default: Any = ...) -> Any:
        v = self._lookup(name, "boolean", default)
        if v is None:
            return self._default(name, default)
        if not isinstance(v, bool):
            raise ConfigError(self.key(name), f"expected true or false, got {_type_name(v)}")
        return v

    def int(self, name: str, default: Any = ..., *, minimum: int | None = None,
            maximum: int | None = None) -> Any:
        v = self._lookup(name, "integer", default, minimum=minimum, maximum=maximum)
        if v is None:
            return self._default(name, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(self.key(name), f"expected an integer, got {_type_name(v)}")
        if minimum is not None and v < minimum or maximum is not None and v > maximum:
            raise ConfigError(self.key(name), f"expected an integer between {minimum} and {maximum}, got {v}")
        return v

    def number(self, name: str, default: Any = ..., *, minimum: float | None = None) -> Any:
        v = self._lookup(name, "number", default, minimum=minimum)
        if v is None:
            return self._default(name, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(self.key(name), f"expected a number, got {_type_name(v)}")
        if minimum is not None and v < minimum:
            raise ConfigError(self.key(name), f"expected a number >= {minimum}, got {v}")
        return float(v)

    def list(self, name: str, default: Any = ..., *, of: Callable[[Any, str], T] | None = None) -> Any:
        v = self._lookup(name, "list of strings" if of is string_item else "list", default)
        if v is None:
            return self._default(name, default)
        if not isinstance(v, list):
            raise ConfigError(self.key(name), f"expected a list, got {_type_name(v)}")
        if of is None:
            return list(v)
        return [of(item, f"{self.key(name)}[{i}]") for i, item in enumerate(v)]

    def section(self, name: str) -> "Section":
        return Section(self._lookup(name, "mapping", None), self.key(name))

    def duration_ms(self, name: str, default: Any = ...) -> Any:
        v = self._lookup(name, "duration", default)
        if v is None:
            return self._default(name, default)
        return parse_duration_ms(v, self.key(name))

    def size_bytes(self, name: str, default: Any = ...) -> Any:
        v = self._lookup(name, "size", default)
        if v is None:
            return self._default(name, default)
        return parse_size(v, self.key(name))

    def _lookup(self, name: str, kind: str, default: Any, **limits: Any) -> Any:
        self.used.add(name)
        self._note(name, kind, default, **limits)
        return self.data.get(name)

    def _note(self, name: str, kind: str, default: Any = None, **limits: Any) -> None:
        record = _recorder.get()
        if record is not None:
            record(KeyRead(_LIST_INDEX.sub("[]", self.key(name)), kind, default, value=self.data.get(name),
                           **limits))

    def _default(self, name: str, default: Any) -> Any:
        if default is ...:
            raise ConfigError(self.key(name), "is required but missing")
        return default


def string_item(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a string, got {_type_name(value)}")
    return value


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)?\s*$")
_DURATION_UNITS = {
    None: 1, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
    "w": 7 * 86_400_000, "y": 365 * 86_400_000,
}


def parse_duration_ms(value: Any, path: str) -> int:
    """Synapse durations: a number of milliseconds, or a string like ``"1d"``, ``"30s"``."""
    if isinstance(value, bool):
        raise ConfigError(path, f"expected a duration like 30s, 5m or 1d, got {_type_name(value)}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ConfigError(path, "a duration cannot be negative")
        return int(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return int(float(m.group(1)) * _DURATION_UNITS[m.group(2)])
    raise ConfigError(path, f"expected a duration like 30s, 5m or 1d, got {value!r}")


_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)B?\s*$", re.IGNORECASE)


def parse_size(value: Any, path: str) -> int:
    """Synapse sizes: bytes, or a string like ``"50M"``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(m.group(1)) * 1024 ** "_KMGT".index(m.group(2).upper() or "_")
    raise ConfigError(path, f"expected a size like 50M or a number of bytes, got {value!r}")

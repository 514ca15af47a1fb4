"""Canonical JSON and unpadded Base64.

Spec: appendices, "Canonical JSON" and "Unpadded Base64".
https://spec.matrix.org/latest/appendices/#canonical-json

Pure functions over plain data; no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Collection, Iterator
from typing import Any

import orjson

__all__ = [
    "CanonicalJSONError",
    "MIN_SAFE_INTEGER",
    "MAX_SAFE_INTEGER",
    "encode_canonical_json",
    "encode_pretty_json",
    "check_strict_values",
    "encode_base64",
    "encode_base64_urlsafe",
    "decode_base64",
    "parse_json",
    "iter_list_items",
]

#: Integer range allowed by canonical JSON (and by room versions 6 and later).
MIN_SAFE_INTEGER = -(2**53) + 1
MAX_SAFE_INTEGER = 2**53 - 1


class CanonicalJSONError(ValueError):
    """The value cannot be represented in canonical JSON."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: str | bytes | bytearray, *, allow_constants: bool = False) -> Any:
    """JSON from outside (a request body, a query parameter, a remote's answer).

    Anything unparsable raises ``ValueError``, including nesting too deep for the parser
    (which raises ``RecursionError``) and, unless ``allow_constants``, the non-JSON
    constants ``NaN``/``Infinity`` that Python's parser takes.
    """
    try:
        if allow_constants:
            return json.loads(raw)
        return json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def iter_list_items(text: str, keys: Collection[str]) -> Iterator[tuple[str, Any, str]]:
    """The items of the lists under ``keys`` of the JSON object ``text``, one at a time:
    (key, the item parsed, the item's own text). A big answer (the events of a room's
    state) is read without holding all of it parsed at once; other members' values are
    parsed and dropped, a key whose value is not a list is skipped. ``ValueError``
    (as ``parse_json`` with ``allow_constants``) if ``text`` is not one JSON object.
    """
    scan, ws = _DECODER.raw_decode, _WHITESPACE.match
    try:
        pos = ws(text, 0).end()
        if text[pos:pos + 1] != "{":
            raise ValueError("not a JSON object")
        pos = ws(text, pos + 1).end()
        if text[pos:pos + 1] == "}":
            pos = ws(text, pos + 1).end()
        else:
            while True:
                if text[pos:pos + 1] != '"':
                    raise ValueError(f"expected a key at {pos}")
                key, pos = scan(text, pos)
                pos = ws(text, pos).end()
                if text[pos:pos + 1] != ":":
                    raise ValueError(f"expected ':' at {pos}")
                pos = ws(text, pos + 1).end()
                if key in keys and text[pos:pos + 1] == "[":
                    pos = ws(text, pos + 1).end()
                    if text[pos:pos + 1] == "]":
                        pos += 1
                    else:
                        while True:
                            item, end = scan(text, pos)
                            yield key, item, text[pos:end]
                            pos = ws(text, end).end()
                            sep = text[pos:pos + 1]
                            pos = ws(text, pos + 1).end()
                            if sep == "]":
                                break
                            if sep != ",":
                                raise ValueError(f"expected ',' or ']' at {pos}")
                else:
                    _, pos = scan(text, pos)
                pos = ws(text, pos).end()
                sep = text[pos:pos + 1]
                pos = ws(text, pos + 1).end()
                if sep == "}":
                    break
                if sep != ",":
                    raise ValueError(f"expected ',' or '}}' at {pos}")
        if pos != len(text):
            raise ValueError(f"extra data at {pos}")
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _normalise(value: Any, leftover: list[bool]) -> Any:
    """Turn floats with an integral value into ints (1e10 -> 10000000000, -0.0 -> 0).

    Returns the same object when nothing changes, so the common case (no floats)
    costs one walk and no copies. Appends to ``leftover`` when a non-integral float
    remains (those are written as Python writes them, as other servers do).
    """
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise CanonicalJSONError("NaN and infinity are not allowed in JSON")
        if value.is_integer():
            return int(value)
        leftover.append(True)
        return value
    if isinstance(value, dict):
        changed = None
        for k, v in value.items():
            nv = _normalise(v, leftover)
            if nv is not v:
                if changed is None:
                    changed = dict(value)
                changed[k] = nv
        return value if changed is None else changed
    if isinstance(value, (list, tuple)):
        out = None
        for i, v in enumerate(value):
            nv = _normalise(v, leftover)
            if nv is not v:
                if out is None:
                    out = list(value)
                out[i] = nv
        return value if out is None else out
    return value


_encoder = json.JSONEncoder(
    ensure_ascii=False,
    allow_nan=False,
    separators=(",", ":"),
    sort_keys=True,
)


def _encode_stdlib(value: Any) -> bytes:
    try:
        return _encoder.encode(value).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as e:
        raise CanonicalJSONError(str(e)) from e


def encode_canonical_json(value: Any, *, assume_no_floats: bool = False) -> bytes:
    """Encode ``value`` as canonical JSON (UTF-8 bytes).

    Keys sorted by code point, no insignificant whitespace, UTF-8 rather than
    ``\\u`` escapes, integral floats written as integers. orjson does the encoding
    (its output is byte-identical to the standard library's for these settings; a
    property test checks this); the standard library takes over for what orjson
    refuses (integers beyond 64 bits) and for non-integral floats.

    ``assume_no_floats`` skips the float walk: for room versions where floats make an
    event invalid anyway (6+), so the walk would only cost time.
    """
    if not assume_no_floats:
        leftover: list[bool] = []
        value = _normalise(value, leftover)
        if leftover:
            return _encode_stdlib(value)
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        return _encode_stdlib(value)


def encode_pretty_json(value: Any) -> bytes:
    """Human-readable JSON (for logs and CLI output), still UTF-8."""
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True).encode("utf-8")


def check_strict_values(value: Any, path: str = "") -> None:
    """Raise CanonicalJSONError unless every number is an integer in the safe range.

    Room versions 6 and later require this of events (spec: rooms v6, "Canonical JSON").
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not MIN_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalJSONError(f"integer out of range at {path or '/'}")
        return
    if isinstance(value, float):
        raise CanonicalJSONError(f"floats are not allowed at {path or '/'}")
    if isinstance(value, dict):
        for k, v in value.items():
            check_strict_values(v, f"{path}/{k}")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_strict_values(v, f"{path}/{i}")
        return
    raise CanonicalJSONError(f"unsupported type {type(value).__name__} at {path or '/'}")


def encode_base64(data: bytes) -> str:
    """Unpadded standard Base64."""
    return base64.b64encode(data).rstrip(b"=").decode("ascii")


def encode_base64_urlsafe(data: bytes) -> str:
    """Unpadded URL-safe Base64 (used by event IDs from room version 4)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_base64(data: str) -> bytes:
    """Decode Base64, padded or not, standard or URL-safe alphabet.

    Raises ValueError on malformed input.
    """
    if not isinstance(data, str):
        raise ValueError("base64 data must be a string")
    s = data.rstrip("=")
    if len(s) % 4 == 1:
        raise ValueError("invalid base64 length")
    s = s + "=" * (-len(s) % 4)
    try:
        if "-" in s or "_" in s:
            return base64.urlsafe_b64decode(s.encode("ascii"))
        return base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise ValueError(f"invalid base64: {e}") from e

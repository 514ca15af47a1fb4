"""Server keys: checking a key response and deciding whether a key is usable (pure).

Spec: server-server API, "Retrieving server keys"
https://spec.matrix.org/latest/server-server-api/#retrieving-server-keys
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .signing import SignatureError, decode_verify_key, verify_json_signature

__all__ = ["KeyResponseError", "ServerKey", "parse_key_response"]


class KeyResponseError(ValueError):
    """A key response that must not be trusted."""


@dataclass(frozen=True)
class ServerKey:
    server_name: str
    key_id: str
    verify_key: str  # unpadded base64
    valid_until_ts: int
    expired_ts: int | None  # set for old_verify_keys


def parse_key_response(doc: Any, expected_server: str) -> list[ServerKey]:
    """The keys of a ``/_matrix/key/v2/server`` document (also one entry of a notary
    answer), after checking it names ``expected_server`` and is signed by every key in
    ``verify_keys``. Raises KeyResponseError."""
    if not isinstance(doc, dict):
        raise KeyResponseError("key response is not a JSON object")
    if doc.get("server_name") != expected_server:
        raise KeyResponseError(f"key response is for {doc.get('server_name')!r}, not {expected_server!r}")
    valid_until = doc.get("valid_until_ts")
    if isinstance(valid_until, bool) or not isinstance(valid_until, int):
        raise KeyResponseError("valid_until_ts must be an integer")
    verify_keys = doc.get("verify_keys")
    if not isinstance(verify_keys, dict) or not verify_keys:
        raise KeyResponseError("verify_keys must be a non-empty object")
    keys: list[ServerKey] = []
    for key_id, entry in verify_keys.items():
        if not key_id.startswith("ed25519:"):
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise KeyResponseError(f"verify_keys.{key_id} has no key")
        try:
            verify_json_signature(doc, expected_server, key_id, decode_verify_key(entry["key"]))
        except (SignatureError, ValueError) as e:
            raise KeyResponseError(f"key response not signed by {key_id}: {e}") from None
        keys.append(ServerKey(expected_server, key_id, entry["key"], valid_until, None))
    if not keys:
        raise KeyResponseError("no ed25519 key in verify_keys")
    old = doc.get("old_verify_keys")
    if isinstance(old, dict):
        for key_id, entry in old.items():
            if (key_id.startswith("ed25519:") and isinstance(entry, dict) and isinstance(entry.get("key"), str)
                    and isinstance(entry.get("expired_ts"), int)):
                keys.append(ServerKey(expected_server, key_id, entry["key"], entry["expired_ts"], entry["expired_ts"]))
    return keys

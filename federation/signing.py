"""Signing keys, signed JSON, signed events and the X-Matrix request signature.

Spec: appendices, "Signing JSON" and "Signing Events"; server-server API,
"Request Authentication" and "Validating hashes and signatures on received events".
https://spec.matrix.org/latest/appendices/#signing-json
https://spec.matrix.org/latest/server-server-api/#request-authentication

Pure functions: keys, times and lookups are arguments; nothing here reads a clock
or a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing

from .canonical_json import decode_base64, encode_base64, encode_canonical_json

__all__ = [
    "ED25519",
    "SignatureError",
    "ServerSigningKey",
    "generate_signing_key",
    "signing_key_from_seed",
    "parse_signing_keys",
    "format_signing_keys",
    "encode_verify_key",
    "decode_verify_key",
    "sign_json",
    "verify_json_signature",
]

#: The only signing algorithm the spec defines.
ED25519 = "ed25519"


class SignatureError(ValueError):
    """A signature is missing, malformed or does not verify."""


@dataclass(frozen=True, slots=True)
class ServerSigningKey:
    """An ed25519 key with its version (``key_id`` is ``ed25519:<version>``)."""

    version: str
    signing_key: nacl.signing.SigningKey

    @property
    def alg(self) -> str:
        return ED25519

    @property
    def key_id(self) -> str:
        return f"{ED25519}:{self.version}"

    @property
    def verify_key(self) -> nacl.signing.VerifyKey:
        return self.signing_key.verify_key

    @property
    def seed(self) -> bytes:
        return bytes(self.signing_key)


def _check_version(version: str) -> None:
    # Key IDs are "algorithm:identifier"; the identifier is [a-zA-Z0-9_].
    # https://spec.matrix.org/latest/appendices/#common-namespaced-identifier-grammar
    if not isinstance(version, str) or not version:
        raise ValueError("key version must be a non-empty string")
    for ch in version:
        if not (ch.isascii() and (ch.isalnum() or ch == "_")):
            raise ValueError(f"key version {version!r} may only contain a-z, A-Z, 0-9 and _")


def generate_signing_key(version: str) -> ServerSigningKey:
    """A new random ed25519 key with the given version."""
    _check_version(version)
    return ServerSigningKey(version, nacl.signing.SigningKey.generate())


def signing_key_from_seed(version: str, seed: bytes | str) -> ServerSigningKey:
    """A key from its 32-byte seed (raw bytes or unpadded base64)."""
    _check_version(version)
    if isinstance(seed, str):
        seed = decode_base64(seed)
    if len(seed) != 32:
        raise ValueError(f"an ed25519 seed is 32 bytes, got {len(seed)}")
    return ServerSigningKey(version, nacl.signing.SigningKey(seed))


def parse_signing_keys(text: str) -> list[ServerSigningKey]:
    """Parse Synapse's key file: lines ``ed25519 <version> <unpadded base64 seed>``.

    Blank lines and lines starting with ``#`` are ignored. Raises ValueError naming
    the offending line.
    """
    keys: list[ServerSigningKey] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(
                f"line {lineno}: expected 'ed25519 <version> <base64 seed>', got {len(parts)} fields"
            )
        alg, version, seed = parts
        if alg != ED25519:
            raise ValueError(f"line {lineno}: unsupported key algorithm {alg!r}")
        try:
            keys.append(signing_key_from_seed(version, seed))
        except ValueError as e:
            raise ValueError(f"line {lineno}: {e}") from None
    return keys


def format_signing_keys(keys: list[ServerSigningKey] | tuple[ServerSigningKey, ...]) -> str:
    """The key file text for ``keys`` (inverse of :func:`parse_signing_keys`)."""
    return "".join(f"{k.alg} {k.version} {encode_base64(k.seed)}\n" for k in keys)


def encode_verify_key(verify_key: nacl.signing.VerifyKey) -> str:
    """The public key as unpadded base64, as published in ``verify_keys``."""
    return encode_base64(bytes(verify_key))


def decode_verify_key(key_base64: str) -> nacl.signing.VerifyKey:
    """A public key from unpadded base64; raises ValueError if it is not 32 bytes."""
    raw = decode_base64(key_base64)
    if len(raw) != 32:
        raise ValueError(f"an ed25519 public key is 32 bytes, got {len(raw)}")
    return nacl.signing.VerifyKey(raw)


# --- JSON signing: https://spec.matrix.org/latest/appendices/#signing-json


def _signing_bytes(obj: dict[str, Any]) -> bytes:
    """Canonical JSON of ``obj`` without ``signatures`` and ``unsigned``."""
    if "signatures" in obj or "unsigned" in obj:
        obj = {k: v for k, v in obj.items() if k != "signatures" and k != "unsigned"}
    return encode_canonical_json(obj)


def sign_json(obj: dict[str, Any], server_name: str, key: ServerSigningKey) -> dict[str, Any]:
    """A copy of ``obj`` with ``signatures[server_name][key.key_id]`` added.

    Existing signatures are kept; ``unsigned`` is kept but not signed.
    """
    if not isinstance(obj, dict):
        raise TypeError("only JSON objects can be signed")
    signature = key.signing_key.sign(_signing_bytes(obj)).signature
    out = dict(obj)
    sigs = {s: dict(v) for s, v in (obj.get("signatures") or {}).items()}
    sigs.setdefault(server_name, {})[key.key_id] = encode_base64(signature)
    out["signatures"] = sigs
    return out


def _get_signature(obj: dict[str, Any], server_name: str, key_id: str) -> bytes:
    sigs = obj.get("signatures")
    if not isinstance(sigs, dict):
        raise SignatureError("no signatures")
    by_server = sigs.get(server_name)
    if not isinstance(by_server, dict):
        raise SignatureError(f"not signed by {server_name}")
    sig_b64 = by_server.get(key_id)
    if sig_b64 is None:
        raise SignatureError(f"not signed by {server_name} with key {key_id}")
    if not isinstance(sig_b64, str):
        raise SignatureError(f"signature of {server_name} {key_id} is not a string")
    try:
        sig = decode_base64(sig_b64)
    except ValueError:
        raise SignatureError(f"signature of {server_name} {key_id} is not valid base64") from None
    if len(sig) != 64:
        raise SignatureError(f"signature of {server_name} {key_id} is {len(sig)} bytes, not 64")
    return sig


def _verify_bytes(
    message: bytes, signature: bytes, verify_key: nacl.signing.VerifyKey, who: str
) -> None:
    try:
        verify_key.verify(message, signature)
    except nacl.exceptions.BadSignatureError:
        raise SignatureError(f"bad signature from {who}") from None


def verify_json_signature(
    obj: dict[str, Any],
    server_name: str,
    key_id: str,
    verify_key: nacl.signing.VerifyKey,
) -> None:
    """Check ``obj``'s signature by ``server_name`` with ``key_id``.

    Raises SignatureError if the signature is missing, malformed or wrong.
    """
    if not key_id.startswith(ED25519 + ":"):
        raise SignatureError(f"unsupported key algorithm in {key_id!r}")
    sig = _get_signature(obj, server_name, key_id)
    _verify_bytes(_signing_bytes(obj), sig, verify_key, f"{server_name} {key_id}")

"""Signing keys, signed JSON, signed events and the X-Matrix request signature.

Spec: appendices, "Signing JSON" and "Signing Events"; server-server API,
"Request Authentication" and "Validating hashes and signatures on received events".
https://spec.matrix.org/latest/appendices/#signing-json
https://spec.matrix.org/latest/server-server-api/#request-authentication

Pure functions: keys, times and lookups are arguments; nothing here reads a clock
or a file.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping
from urllib.parse import quote

import nacl.exceptions
import nacl.signing

from .canonical_json import (
    CanonicalJSONError,
    decode_base64,
    encode_base64,
    encode_canonical_json,
)
from .ids import InvalidIdentifierError, get_domain_from_id, parse_server_name
from .redaction import redact

if TYPE_CHECKING:
    from .room_versions import RoomVersion

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
    "KnownKey",
    "KeyLookup",
    "MAX_KEY_VALIDITY_MS",
    "key_valid_at",
    "compute_content_hash",
    "add_content_hash",
    "check_content_hash",
    "sign_event",
    "servers_that_must_sign",
    "verify_event_signatures",
    "redacted_signing_bytes",
    "POLICY_SERVER_KEY_ID",
    "verify_policy_server_signature",
    "XMatrixAuth",
    "XMatrixParseError",
    "quote_path_segment",
    "build_x_matrix_authorization",
    "parse_x_matrix_authorization",
    "verify_request",
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


def _canonical(obj: Any, no_floats: bool) -> bytes:
    """Canonical JSON; ``no_floats`` (room versions 6+, where floats make an event
    invalid) skips the float normalisation walk."""
    return encode_canonical_json(obj, assume_no_floats=no_floats)


def _signing_bytes(obj: Mapping[str, Any], no_floats: bool = False) -> bytes:
    """Canonical JSON of ``obj`` without ``signatures`` and ``unsigned``."""
    if "signatures" in obj or "unsigned" in obj:
        obj = {k: v for k, v in obj.items() if k != "signatures" and k != "unsigned"}
    return _canonical(obj, no_floats)


def _decode_b64(data: str) -> bytes:
    """decode_base64, with a fast path for the unpadded standard alphabet."""
    try:
        return binascii.a2b_base64(data + "=" * (-len(data) % 4), strict_mode=True)
    except (binascii.Error, ValueError):
        return decode_base64(data)


def _decode_signature(sig_b64: object, who: str) -> bytes:
    if not isinstance(sig_b64, str):
        raise SignatureError(f"signature of {who} is not a string")
    try:
        sig = _decode_b64(sig_b64)
    except ValueError:
        raise SignatureError(f"signature of {who} is not valid base64") from None
    if len(sig) != 64:
        raise SignatureError(f"signature of {who} is {len(sig)} bytes, not 64")
    return sig


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
    return _decode_signature(sig_b64, f"{server_name} {key_id}")


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


# --- Keys of other servers and their validity
# https://spec.matrix.org/latest/rooms/v5/#signing-key-validity-period

#: A key's published ``valid_until_ts`` is trusted for at most this long.
MAX_KEY_VALIDITY_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class KnownKey:
    """A remote server's verify key as the keyring knows it.

    ``valid_until_ts``: the key response's ``valid_until_ts`` (or an old key's
    ``expired_ts``); None if unbounded (e.g. our own current key).
    ``fetched_ts``: when the key response was obtained; the published validity is
    capped at seven days after it. None if unknown.
    """

    verify_key: nacl.signing.VerifyKey
    valid_until_ts: int | None = None
    fetched_ts: int | None = None


#: ``keys_for(server_name, key_id)``: the key if known, else None. A bare VerifyKey
#: is treated as valid at any time.
KeyLookup = Callable[[str, str], "nacl.signing.VerifyKey | KnownKey | None"]


def key_valid_at(valid_until_ts: int | None, origin_server_ts: int, now: int | None) -> bool:
    """Whether a key may verify an event sent at ``origin_server_ts`` (room v5+).

    The key's validity is the lesser of ``valid_until_ts`` and ``now`` + 7 days, and
    must be at least ``origin_server_ts``. Pass as ``now`` the time the key was
    fetched (what the keyring records), or the current time if that is unknown.
    ``valid_until_ts=None`` means no published limit.
    """
    limit = valid_until_ts
    if now is not None:
        cap = now + MAX_KEY_VALIDITY_MS
        limit = cap if limit is None else min(limit, cap)
    return limit is None or origin_server_ts <= limit


# --- Event hashes: https://spec.matrix.org/latest/server-server-api/#calculating-the-content-hash-for-an-event


def compute_content_hash(
    pdu_json: Mapping[str, Any], room_version: "RoomVersion | None" = None
) -> bytes:
    """SHA-256 of the canonical JSON of the event without ``unsigned``, ``signatures``, ``hashes``.

    With a ``room_version`` of strict canonical JSON (6+), floats are not normalised
    (they make the event invalid there; see :func:`_canonical`).
    """
    stripped = dict(pdu_json)
    stripped.pop("unsigned", None)
    stripped.pop("signatures", None)
    stripped.pop("hashes", None)
    no_floats = room_version is not None and room_version.strict_canonicaljson
    return hashlib.sha256(_canonical(stripped, no_floats)).digest()


def add_content_hash(pdu_json: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the event with ``hashes.sha256`` set to its content hash."""
    out = dict(pdu_json)
    hashes = dict(out.get("hashes") or {})
    hashes["sha256"] = encode_base64(compute_content_hash(pdu_json))
    out["hashes"] = hashes
    return out


def check_content_hash(
    pdu_json: Mapping[str, Any], room_version: "RoomVersion | None" = None
) -> bool:
    """Whether ``hashes.sha256`` matches the event (False if missing or malformed)."""
    hashes = pdu_json.get("hashes")
    if not isinstance(hashes, dict):
        return False
    expected = hashes.get("sha256")
    if not isinstance(expected, str):
        return False
    try:
        claimed = _decode_b64(expected)
    except ValueError:
        return False
    try:
        return claimed == compute_content_hash(pdu_json, room_version)
    except CanonicalJSONError:
        return False


# --- Event signatures: https://spec.matrix.org/latest/server-server-api/#signing-events


def _redact(pdu_json: Mapping[str, Any], room_version: "RoomVersion") -> dict[str, Any]:
    # redact() never changes its input and returns new dicts.
    return redact(pdu_json, room_version)  # type: ignore[arg-type]


def redacted_signing_bytes(pdu_json: Mapping[str, Any], room_version: "RoomVersion") -> bytes:
    """What event signatures cover: the canonical JSON of the redacted event without
    ``signatures``/``unsigned``. Its SHA-256 is also the event's reference hash (the
    event ID from room version 3), so a receiver computes it once for both
    (``federation.events.parse_pdu``). SignatureError if it cannot be encoded."""
    redacted = _redact(pdu_json, room_version)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    try:
        return _canonical(redacted, room_version.strict_canonicaljson)
    except CanonicalJSONError as e:
        raise SignatureError(f"event cannot be encoded as canonical JSON: {e}") from None


def sign_event(
    pdu_json: Mapping[str, Any],
    server_name: str,
    key: ServerSigningKey,
    *,
    room_version: "RoomVersion",
) -> dict[str, Any]:
    """Hash (if not hashed yet) and sign an event; returns a new dict.

    The content hash is added when ``hashes.sha256`` is missing (an event we build);
    an existing hash is kept (co-signing someone else's event, e.g. an invite or a
    restricted join). The signature covers the redacted event and is copied back to
    the full event, next to any existing signatures.
    """
    hashes = pdu_json.get("hashes")
    if isinstance(hashes, dict) and isinstance(hashes.get("sha256"), str):
        event = dict(pdu_json)
    else:
        event = add_content_hash(pdu_json)
    redacted = _redact(event, room_version)
    signature = key.signing_key.sign(_signing_bytes(redacted)).signature
    sigs = {s: dict(v) for s, v in (event.get("signatures") or {}).items()}
    sigs.setdefault(server_name, {})[key.key_id] = encode_base64(signature)
    event["signatures"] = sigs
    return event


# Senders repeat a lot; parsing their server name is worth remembering.
_cached_domain = functools.lru_cache(maxsize=65536)(get_domain_from_id)


def _is_third_party_invite(pdu_json: Mapping[str, Any]) -> bool:
    content = pdu_json.get("content")
    return (
        pdu_json.get("type") == "m.room.member"
        and isinstance(content, dict)
        and content.get("membership") == "invite"
        and "third_party_invite" in content
    )


def servers_that_must_sign(
    pdu_json: Mapping[str, Any], room_version: "RoomVersion", *, origin: str | None = None
) -> set[str]:
    """The servers whose signatures an event needs.

    - the ``sender``'s server; for an invite made from a third-party invite, which
      another server may have built, ``origin`` (that server, when the caller
      knows it) replaces it;
    - room v1/v2: the server of the ``event_id`` too;
    - room v8+: for a join with ``join_authorised_via_users_server``, that user's server.

    Raises SignatureError if a needed ID is missing or malformed.
    """
    def domain(field: str, value: object) -> str:
        if not isinstance(value, str):
            raise SignatureError(f"event has no valid {field}")
        try:
            return _cached_domain(value)
        except InvalidIdentifierError as e:
            raise SignatureError(f"{field}: {e}") from None

    servers: set[str] = set()
    if origin is not None and _is_third_party_invite(pdu_json):
        servers.add(origin)
    else:
        servers.add(domain("sender", pdu_json.get("sender")))
    if room_version.event_id_in_event:
        servers.add(domain("event_id", pdu_json.get("event_id")))
    if room_version.restricted_join_rule and pdu_json.get("type") == "m.room.member":
        content = pdu_json.get("content")
        if isinstance(content, dict) and content.get("membership") == "join":
            authoriser = content.get("join_authorised_via_users_server")
            if authoriser is not None:
                servers.add(domain("join_authorised_via_users_server", authoriser))
    return servers


def _unpack_key(found: "nacl.signing.VerifyKey | KnownKey") -> tuple[nacl.signing.VerifyKey, int | None, int | None]:
    if isinstance(found, KnownKey):
        return found.verify_key, found.valid_until_ts, found.fetched_ts
    return found, None, None


def _verify_server_signatures(
    message: bytes,
    signatures: Mapping[str, Any],
    server: str,
    keys_for: KeyLookup,
    check_validity_at: int | None,
) -> None:
    """Every known, valid key of ``server`` that signed must verify; at least one must."""
    by_server = signatures.get(server)
    if not isinstance(by_server, dict) or not by_server:
        raise SignatureError(f"event is not signed by {server}")
    checked = 0
    for key_id, sig_b64 in by_server.items():
        if not isinstance(key_id, str) or not key_id.startswith(ED25519 + ":"):
            continue  # an algorithm we do not understand
        found = keys_for(server, key_id)
        if found is None:
            continue  # unknown key
        verify_key, valid_until_ts, fetched_ts = _unpack_key(found)
        if check_validity_at is not None and not key_valid_at(
            valid_until_ts, check_validity_at, fetched_ts
        ):
            continue  # expired at the event's origin_server_ts
        sig = _decode_signature(sig_b64, f"{server} {key_id}")
        _verify_bytes(message, sig, verify_key, f"{server} {key_id}")
        checked += 1
    if not checked:
        raise SignatureError(f"no known, valid key of {server} signed the event")


def verify_event_signatures(
    pdu_json: Mapping[str, Any],
    room_version: "RoomVersion",
    keys_for: KeyLookup,
    *,
    origin: str | None = None,
    signed_bytes: bytes | None = None,
) -> None:
    """Check the signatures an event needs (see :func:`servers_that_must_sign`).

    Verifies the redacted event, so a redacted copy passes as well as the full one.
    Keys ``keys_for`` does not know are skipped, as are (room v5+) keys not valid at
    the event's ``origin_server_ts``; each required server needs at least one
    signature from a usable key, and all of those must verify.
    For an invite from a third-party invite, ``origin``'s signature is accepted in
    place of the sender's server's (the spec's exception).
    ``signed_bytes``: :func:`redacted_signing_bytes` of this very ``pdu_json``, when the
    caller computed them already (for its event ID).
    Raises SignatureError. Does not check the content hash (:func:`check_content_hash`).
    """
    try:
        _verify_event_signatures(pdu_json, room_version, keys_for, None, signed_bytes)
    except SignatureError:
        if origin is None or not _is_third_party_invite(pdu_json):
            raise
        _verify_event_signatures(pdu_json, room_version, keys_for, origin, signed_bytes)


def _verify_event_signatures(
    pdu_json: Mapping[str, Any],
    room_version: "RoomVersion",
    keys_for: KeyLookup,
    origin: str | None,
    signed_bytes: bytes | None = None,
) -> None:
    required = servers_that_must_sign(pdu_json, room_version, origin=origin)
    signatures = pdu_json.get("signatures")
    if not isinstance(signatures, dict):
        raise SignatureError("event has no signatures")
    validity_at: int | None = None
    if room_version.enforce_key_validity:
        ts = pdu_json.get("origin_server_ts")
        if not isinstance(ts, int) or isinstance(ts, bool):
            raise SignatureError("event has no valid origin_server_ts")
        validity_at = ts
    message = redacted_signing_bytes(pdu_json, room_version) if signed_bytes is None else signed_bytes
    for server in sorted(required):
        _verify_server_signatures(message, signatures, server, keys_for, validity_at)


# --- Policy servers: https://spec.matrix.org/latest/server-server-api/#validating-policy-server-signatures

#: The key ID of the ed25519 key in ``m.room.policy`` is always this.
POLICY_SERVER_KEY_ID = "ed25519:policy_server"


def verify_policy_server_signature(
    pdu_json: Mapping[str, Any],
    room_version: "RoomVersion",
    policy_server: str,
    public_key: str | nacl.signing.VerifyKey,
) -> None:
    """Check the policy server's ``ed25519:policy_server`` signature on an event.

    ``policy_server`` is ``via`` and ``public_key`` is ``public_keys.ed25519`` of the
    room's ``m.room.policy`` state. Raises SignatureError.
    """
    if isinstance(public_key, str):
        try:
            public_key = decode_verify_key(public_key)
        except ValueError as e:
            raise SignatureError(f"policy server public key: {e}") from None
    sig = _get_signature(dict(pdu_json), policy_server, POLICY_SERVER_KEY_ID)
    message = redacted_signing_bytes(pdu_json, room_version)
    _verify_bytes(message, sig, public_key, f"policy server {policy_server}")


# --- X-Matrix request authentication: https://spec.matrix.org/latest/server-server-api/#request-authentication


class XMatrixParseError(SignatureError):
    """The ``Authorization`` header is not a well-formed X-Matrix header."""


@dataclass(frozen=True, slots=True)
class XMatrixAuth:
    origin: str
    #: None when an older server left it out (accepted for compatibility).
    destination: str | None
    key_id: str
    #: The unpadded base64 signature, as sent.
    signature: str


def quote_path_segment(value: str) -> str:
    """Percent-encode one path segment (IDs with ``$ / + : ! @ #``) as it goes on the wire."""
    return quote(value, safe="")


def _request_json(
    method: str, uri: str, origin: str, destination: str, content: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "method": method.upper(),
        "uri": uri,
        "origin": origin,
        "destination": destination,
    }
    if content is not None:
        obj["content"] = content
    return obj


def _quote_param(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_x_matrix_authorization(
    method: str,
    uri: str,
    origin: str,
    destination: str,
    content: Any,
    key: ServerSigningKey,
) -> str:
    """The ``Authorization`` header value for a federation request.

    ``uri`` is the request target exactly as sent: the encoded path starting at
    ``/_matrix`` plus ``?query`` if any. ``content`` is the parsed JSON body, or
    None for a request without one.
    """
    message = encode_canonical_json(_request_json(method, uri, origin, destination, content))
    sig = encode_base64(key.signing_key.sign(message).signature)
    return (
        f"X-Matrix origin={_quote_param(origin)},destination={_quote_param(destination)},"
        f"key={_quote_param(key.key_id)},sig={_quote_param(sig)}"
    )


# RFC 9110 token characters; ':' is also accepted unquoted for old servers.
_TOKEN_CHARS = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z:]+")
_OWS = " \t"


def _parse_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while True:
        while i < n and (text[i] in _OWS or text[i] == ","):
            i += 1
        if i >= n:
            return params
        m = _TOKEN_CHARS.match(text, i)
        if not m or ":" in m.group(0):
            raise XMatrixParseError(f"expected a parameter name at position {i}")
        name = m.group(0).lower()
        i = m.end()
        while i < n and text[i] in _OWS:
            i += 1
        if i >= n or text[i] != "=":
            raise XMatrixParseError(f"parameter {name!r} has no '=value'")
        i += 1
        while i < n and text[i] in _OWS:
            i += 1
        if i < n and text[i] == '"':
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise XMatrixParseError(f"unterminated quoted value for {name!r}")
                ch = text[i]
                if ch == "\\":
                    if i + 1 >= n:
                        raise XMatrixParseError(f"dangling backslash in {name!r}")
                    chars.append(text[i + 1])
                    i += 2
                elif ch == '"':
                    i += 1
                    break
                else:
                    chars.append(ch)
                    i += 1
            value = "".join(chars)
        else:
            m = _TOKEN_CHARS.match(text, i)
            if not m:
                raise XMatrixParseError(f"parameter {name!r} has an empty or invalid value")
            value = m.group(0)
            i = m.end()
        if name in params:
            raise XMatrixParseError(f"parameter {name!r} given twice")
        params[name] = value
        while i < n and text[i] in _OWS:
            i += 1
        if i < n and text[i] != ",":
            raise XMatrixParseError(f"expected ',' after parameter {name!r}")


def parse_x_matrix_authorization(header_value: str) -> XMatrixAuth:
    """Parse an ``Authorization: X-Matrix ...`` header value (RFC 9110 auth-params).

    Scheme is case-insensitive; parameter names are case-insensitive and in any
    order; values quoted (with backslash escapes) or bare tokens (colons allowed);
    unknown parameters are ignored. ``origin``, ``key`` and ``sig`` are required,
    ``destination`` is optional. Raises XMatrixParseError.
    """
    if not isinstance(header_value, str):
        raise XMatrixParseError("Authorization header must be a string")
    value = header_value.strip(_OWS)
    scheme, _, rest = value.partition(" ")
    if scheme.lower() != "x-matrix":
        raise XMatrixParseError("Authorization scheme is not X-Matrix")
    params = _parse_params(rest)
    for required in ("origin", "key", "sig"):
        if not params.get(required):
            raise XMatrixParseError(f"X-Matrix header has no {required!r} parameter")
    origin = params["origin"]
    try:
        parse_server_name(origin)
    except InvalidIdentifierError as e:
        raise XMatrixParseError(f"origin {origin!r} is not a valid server name: {e}") from None
    destination = params.get("destination")
    if destination is not None and not destination:
        raise XMatrixParseError("X-Matrix destination is empty")
    key_id = params["key"]
    alg, sep, version = key_id.partition(":")
    if not sep or not alg or not version:
        raise XMatrixParseError(f"X-Matrix key {key_id!r} is not 'algorithm:version'")
    sig = params["sig"]
    try:
        raw = decode_base64(sig)
    except ValueError:
        raise XMatrixParseError("X-Matrix sig is not valid base64") from None
    if alg == ED25519 and len(raw) != 64:
        raise XMatrixParseError(f"X-Matrix sig is {len(raw)} bytes, not 64")
    return XMatrixAuth(origin, destination, key_id, sig)


def verify_request(
    auth: XMatrixAuth,
    method: str,
    uri: str,
    content: Any,
    our_server_name: str,
    verify_key: nacl.signing.VerifyKey,
) -> None:
    """Check a parsed X-Matrix header against the request (answer 401 on failure).

    ``uri`` is the raw request target (encoded path and query, as received);
    ``content`` the parsed JSON body or None; ``verify_key`` the key ``auth.key_id``
    of ``auth.origin``. Raises SignatureError.
    """
    if auth.destination is not None and auth.destination != our_server_name:
        raise SignatureError(
            f"request is for {auth.destination!r}, not this server ({our_server_name!r})"
        )
    if not auth.key_id.startswith(ED25519 + ":"):
        raise SignatureError(f"unsupported key algorithm in {auth.key_id!r}")
    try:
        sig = decode_base64(auth.signature)
    except ValueError:
        raise SignatureError("request signature is not valid base64") from None
    message = encode_canonical_json(
        _request_json(method, uri, auth.origin, our_server_name, content)
    )
    _verify_bytes(message, sig, verify_key, f"{auth.origin} {auth.key_id}")

"""Server keys, pure: which keys an event or a request needs, how long a key may be
trusted, and checking key responses (direct and through a notary).

Spec: server-server API, "Retrieving server keys"
https://spec.matrix.org/latest/server-server-api/#retrieving-server-keys
and the room v5+ validity rule
https://spec.matrix.org/latest/rooms/v5/#signing-key-validity-period

The I/O lives in ``federation.net.key_fetchers`` behind :class:`KeyFetcher`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol, Sequence

from .ids import is_valid_server_name
from .signing import (
    ED25519,
    MAX_KEY_VALIDITY_MS,
    KnownKey,
    SignatureError,
    XMatrixAuth,
    decode_verify_key,
    servers_that_must_sign,
    verify_json_signature,
)

if TYPE_CHECKING:
    from .room_versions import RoomVersion

__all__ = [
    "KeyFetcher",
    "KeyRequest",
    "KeyResponseError",
    "ServerKey",
    "ServerKeyResponse",
    "check_notary_response",
    "effective_valid_until",
    "key_request_for_x_matrix",
    "key_requests_for_event",
    "merge_key_requests",
    "notary_query_body",
    "parse_key_response",
    "satisfies",
    "valid_server_name",
]


class KeyResponseError(ValueError):
    """A key response that must not be trusted."""


@dataclass(frozen=True)
class ServerKey:
    """One verify key of a server, as published.

    ``valid_until_ts`` is the response's ``valid_until_ts`` (for an old key, its
    ``expired_ts``); ``fetched_ts`` is when we obtained the response (None if not
    recorded), which caps the trusted validity at seven days after it.
    """

    server_name: str
    key_id: str
    verify_key: str  # unpadded base64
    valid_until_ts: int
    expired_ts: int | None  # set for old_verify_keys
    fetched_ts: int | None = None

    def known_key(self) -> KnownKey:
        """The form ``signing.verify_event_signatures`` takes."""
        return KnownKey(decode_verify_key(self.verify_key), self.valid_until_ts, self.fetched_ts)


@dataclass(frozen=True)
class KeyRequest:
    """We need ``key_id`` of ``server_name`` (None: any current key of it, as in a
    notary's "all keys" query), valid until at least the given time (0: any key we
    know, e.g. for room versions before v5)."""

    server_name: str
    key_id: str | None
    minimum_valid_until_ts: int = 0

    def answered_by(self, key: ServerKey) -> bool:
        if key.server_name != self.server_name or not satisfies(key, self.minimum_valid_until_ts):
            return False
        return key.key_id == self.key_id if self.key_id is not None else key.expired_ts is None


@dataclass(frozen=True)
class ServerKeyResponse:
    """A checked key response: the signed document as received and its keys."""

    server_name: str
    doc: dict[str, Any]
    keys: tuple[ServerKey, ...]

    def has(self, request: KeyRequest) -> bool:
        return any(request.answered_by(k) for k in self.keys)


class KeyFetcher(Protocol):
    """Something that can fetch key responses (directly, or through notaries).

    Returns the checked responses it got; servers it could not get keys for are
    simply missing. Must not raise for a remote's failure.
    """

    async def fetch(self, requests: Sequence[KeyRequest]) -> list[ServerKeyResponse]: ...


# --- Validity


def effective_valid_until(key: ServerKey) -> int:
    """How long ``key`` may be trusted: the lesser of its ``valid_until_ts`` and seven
    days after we fetched it (spec, room v5 "Signing key validity period")."""
    if key.fetched_ts is None:
        return key.valid_until_ts
    return min(key.valid_until_ts, key.fetched_ts + MAX_KEY_VALIDITY_MS)


def satisfies(key: ServerKey, minimum_valid_until_ts: int) -> bool:
    """Whether ``key`` is good enough for a request needing that validity."""
    return effective_valid_until(key) >= minimum_valid_until_ts


# --- Which keys are needed


def key_requests_for_event(
    pdu_json: Mapping[str, Any], room_version: "RoomVersion", *, origin: str | None = None
) -> list[KeyRequest]:
    """The keys needed to check an event's signatures: every ed25519 key that signed
    it for each server that must sign (``signing.servers_that_must_sign``), valid at
    the event's ``origin_server_ts`` in room v5+ (any known key before).

    ``origin`` is the server that sent the event to us (accepted in place of the
    sender's server for invites from third-party invites). Raises SignatureError when
    the event lacks the IDs that say who must sign.
    """
    servers = servers_that_must_sign(pdu_json, room_version)
    if origin is not None:
        servers = servers | servers_that_must_sign(pdu_json, room_version, origin=origin)
    minimum = 0
    if room_version.enforce_key_validity:
        ts = pdu_json.get("origin_server_ts")
        if isinstance(ts, int) and not isinstance(ts, bool):
            minimum = ts
    signatures = pdu_json.get("signatures")
    if not isinstance(signatures, dict):
        return []
    out = []
    for server in sorted(servers):
        by_server = signatures.get(server)
        if not isinstance(by_server, dict):
            continue
        for key_id in by_server:
            if isinstance(key_id, str) and key_id.startswith(ED25519 + ":"):
                out.append(KeyRequest(server, key_id, minimum))
    return out


def key_request_for_x_matrix(auth: XMatrixAuth, now_ms: int) -> KeyRequest:
    """A signed request must be signed with a key valid now (old keys do not count)."""
    return KeyRequest(auth.origin, auth.key_id, now_ms)


def merge_key_requests(requests: Iterable[KeyRequest]) -> list[KeyRequest]:
    """One request per (server, key ID), needing the largest of the validities asked."""
    best: dict[tuple[str, str | None], int] = {}
    for r in requests:
        k = (r.server_name, r.key_id)
        best[k] = max(best.get(k, r.minimum_valid_until_ts), r.minimum_valid_until_ts)
    return [KeyRequest(s, k, m) for (s, k), m in best.items()]


# --- Key responses


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_key_response(doc: Any, expected_server: str, *, fetched_ts: int | None = None) -> list[ServerKey]:
    """The keys of a ``/_matrix/key/v2/server`` document (also one entry of a notary
    answer), after checking that it names ``expected_server``, has an integer
    ``valid_until_ts``, and is signed by every ed25519 key in ``verify_keys``.

    Old keys (``old_verify_keys``) come back with ``expired_ts`` set; malformed old
    entries are skipped. Raises KeyResponseError.
    https://spec.matrix.org/latest/server-server-api/#get_matrixkeyv2server
    """
    if not isinstance(doc, dict):
        raise KeyResponseError("key response is not a JSON object")
    if doc.get("server_name") != expected_server:
        raise KeyResponseError(f"key response is for {doc.get('server_name')!r}, not {expected_server!r}")
    valid_until = doc.get("valid_until_ts")
    if not _int(valid_until):
        raise KeyResponseError("valid_until_ts must be an integer")
    verify_keys = doc.get("verify_keys")
    if not isinstance(verify_keys, dict) or not verify_keys:
        raise KeyResponseError("verify_keys must be a non-empty object")
    keys: list[ServerKey] = []
    for key_id, entry in verify_keys.items():
        if not key_id.startswith(ED25519 + ":"):
            continue  # an algorithm we do not know
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise KeyResponseError(f"verify_keys.{key_id} has no key")
        try:
            verify_json_signature(doc, expected_server, key_id, decode_verify_key(entry["key"]))
        except (SignatureError, ValueError) as e:
            raise KeyResponseError(f"key response not signed by {key_id}: {e}") from None
        keys.append(ServerKey(expected_server, key_id, entry["key"], valid_until, None, fetched_ts))
    if not keys:
        raise KeyResponseError("no ed25519 key in verify_keys")
    old = doc.get("old_verify_keys")
    if isinstance(old, dict):
        current = {k.key_id for k in keys}
        for key_id, entry in old.items():
            if (key_id.startswith(ED25519 + ":") and key_id not in current and isinstance(entry, dict)
                    and isinstance(entry.get("key"), str) and _int(entry.get("expired_ts"))):
                try:
                    decode_verify_key(entry["key"])
                except ValueError:
                    continue
                keys.append(ServerKey(expected_server, key_id, entry["key"], entry["expired_ts"],
                                      entry["expired_ts"], fetched_ts))
    return keys


def _signed_by_any(doc: dict[str, Any], signer: str, verify_keys: Mapping[str, str]) -> bool:
    for key_id, key in verify_keys.items():
        try:
            verify_json_signature(doc, signer, key_id, decode_verify_key(key))
            return True
        except (SignatureError, ValueError):
            continue
    return False


def check_notary_response(
    answer: Any,
    notary: str,
    notary_keys: Mapping[str, str] | None,
    wanted_servers: Iterable[str],
    *,
    fetched_ts: int | None = None,
) -> tuple[list[ServerKeyResponse], list[str]]:
    """The usable entries of a notary's ``POST /_matrix/key/v2/query`` answer.

    Each entry must be for a server we asked about, be self-signed (see
    :func:`parse_key_response`) and, when ``notary_keys`` (the configured
    ``verify_keys`` of the notary) is given, carry the notary's signature by one of
    them. Returns the good entries and one message per refused entry.
    https://spec.matrix.org/latest/server-server-api/#post_matrixkeyv2query
    """
    if not isinstance(answer, dict) or not isinstance(answer.get("server_keys"), list):
        return [], [f"answer of {notary} has no server_keys list"]
    wanted = set(wanted_servers)
    good: list[ServerKeyResponse] = []
    problems: list[str] = []
    for doc in answer["server_keys"]:
        name = doc.get("server_name") if isinstance(doc, dict) else None
        if not isinstance(name, str) or name not in wanted:
            problems.append(f"{notary} sent keys of {name!r}, which we did not ask for")
            continue
        if notary_keys and not _signed_by_any(doc, notary, notary_keys):
            problems.append(f"{notary} sent keys of {name} without a valid signature of its own")
            continue
        try:
            keys = parse_key_response(doc, name, fetched_ts=fetched_ts)
        except KeyResponseError as e:
            problems.append(f"{notary} sent bad keys of {name}: {e}")
            continue
        good.append(ServerKeyResponse(name, doc, tuple(keys)))
    return good, problems


def notary_query_body(requests: Iterable[KeyRequest]) -> dict[str, Any]:
    """The body of a batched ``POST /_matrix/key/v2/query``. Key IDs are always named,
    with ``minimum_valid_until_ts`` (Synapse's notary answers an "all keys" query for
    a server it has not cached with nothing)."""
    body: dict[str, dict[str, dict[str, int]]] = {}
    for r in merge_key_requests(requests):
        keys = body.setdefault(r.server_name, {})
        if r.key_id is not None:
            keys[r.key_id] = {"minimum_valid_until_ts": r.minimum_valid_until_ts}
    return {"server_keys": body}


def valid_server_name(name: str) -> bool:
    """Whether ``name`` is a server name we may try to contact (path-safe)."""
    return is_valid_server_name(name)

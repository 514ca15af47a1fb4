"""Other servers' signing keys: a database-backed cache in front of the fetchers
(``trusted_key_servers`` first, then the server itself).

- Our own keys (current and ``old_signing_keys``) are never fetched over the network.
- A cached key is used while its validity (the lesser of ``valid_until_ts`` and seven
  days after we fetched it) covers what is asked; otherwise it is fetched again.
- Concurrent fetches for the same server are shared, failing servers backed off
  (``federation.net.key_fetchers``).

Spec: https://spec.matrix.org/latest/server-server-api/#retrieving-server-keys
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import nacl.signing

from federation.keyring import (
    KeyFetcher,
    KeyRequest,
    ServerKey,
    ServerKeyResponse,
    key_requests_for_event,
    merge_key_requests,
)
from federation.net.key_fetchers import (
    Backoff,
    ChainedKeyFetcher,
    CoalescingKeyFetcher,
    DirectKeyFetcher,
    Notary,
    NotaryKeyFetcher,
)
from federation.room_versions import RoomVersion
from federation.signing import (
    MAX_KEY_VALIDITY_MS,
    ServerSigningKey,
    SignatureError,
    encode_verify_key,
    verify_event_signatures,
)

from ...storage.keys import ServerKeyStore

if TYPE_CHECKING:
    from federation.net.client import FederationClient

    from ...config import FederationConfig

log = logging.getLogger(__name__)

#: Our own current key never expires for us.
_FOREVER = 2**62
#: Keys read from the database are remembered this long (and dropped when we store new ones).
MEMO_TTL_S = 60.0
MEMO_MAX_SERVERS = 10_000


def network_fetchers(client: FederationClient, config: FederationConfig,
                     clock_ms: Callable[[], int]) -> tuple[KeyFetcher, KeyFetcher]:
    """The fetchers of a running server: (``trusted_key_servers`` then the server
    itself, the server itself alone for our notary duty)."""
    direct = DirectKeyFetcher(client, clock_ms)
    # Without configured verify_keys a notary is trusted through its TLS certificate
    # alone: not when certificate checks are off.
    notaries = [Notary(t.server_name, t.verify_keys) for t in config.trusted_key_servers
                if t.verify_keys or config.federation_verify_certificates]
    chain: list[KeyFetcher] = [NotaryKeyFetcher(client, notaries, clock_ms)] if notaries else []
    return ChainedKeyFetcher([*chain, direct]), direct


def own_server_keys(server_name: str, signing_key: ServerSigningKey,
                    old_signing_keys: Mapping[str, Mapping[str, Any]]) -> list[ServerKey]:
    """Our current key (valid for ever, for us) and the ``old_signing_keys``."""
    keys = [ServerKey(server_name, signing_key.key_id, encode_verify_key(signing_key.verify_key), _FOREVER, None)]
    for key_id, entry in old_signing_keys.items():
        if key_id != signing_key.key_id:
            keys.append(ServerKey(server_name, key_id, entry["key"], entry["expired_ts"], entry["expired_ts"]))
    return keys


class KeyRing:
    def __init__(self, *, store: ServerKeyStore, server_name: str, own_keys: Sequence[ServerKey],
                 fetcher: KeyFetcher, direct_fetcher: KeyFetcher, clock_ms: Callable[[], int],
                 backoff: Backoff | None = None):
        """``fetcher`` answers what the database cannot (``network_fetchers`` in a
        server); ``direct_fetcher`` asks the server itself (our notary duty);
        ``own_keys`` are answered locally and never fetched (``own_server_keys``)."""
        self.store = store
        self.server_name = server_name
        self.own_keys = list(own_keys)
        self.clock_ms = clock_ms
        self.backoff = backoff or Backoff()
        self.fetcher = CoalescingKeyFetcher(fetcher, self.backoff)
        self.direct_fetcher = CoalescingKeyFetcher(direct_fetcher, self.backoff)
        self._memo: dict[str, tuple[float, list[ServerKey]]] = {}

    # --- Lookups

    async def _cached(self, server_name: str) -> list[ServerKey]:
        """What we hold for a server: from memory for a minute (a request or event
        burst from one server costs no database reads), else from the database."""
        if server_name == self.server_name:
            return self.own_keys
        now = time.monotonic()
        hit = self._memo.get(server_name)
        if hit is not None and now - hit[0] < MEMO_TTL_S:
            return hit[1]
        keys = await self.store.get_server_keys(server_name)
        if len(self._memo) >= MEMO_MAX_SERVERS:
            self._memo.clear()
        self._memo[server_name] = (now, keys)
        return keys

    async def get_keys(self, requests: Iterable[KeyRequest]) -> dict[tuple[str, str], ServerKey]:
        """Keys answering the requests, by (server, key ID), fetching what the cache
        cannot answer. Requests nobody can answer are missing from the result."""
        requests = list(requests)
        now = self.clock_ms()
        held: dict[str, list[ServerKey]] = {}
        for server in {r.server_name for r in requests}:
            held[server] = await self._cached(server)
        missing = [
            r for r in requests
            if r.server_name != self.server_name
            and not any(r.answered_by(k) for k in held[r.server_name])
            # No fetched key is trusted beyond seven days from now: do not ask for the impossible.
            and r.minimum_valid_until_ts <= now + MAX_KEY_VALIDITY_MS
        ]
        if missing:
            # One fetch per key, for the longest validity asked.
            for response in await self.fetcher.fetch(merge_key_requests(missing)):
                await self._store(response)
            for server in {r.server_name for r in missing}:
                held[server] = await self._cached(server)
        out: dict[tuple[str, str], ServerKey] = {}
        for r in requests:
            for key in held[r.server_name]:
                if r.answered_by(key):
                    out[(key.server_name, key.key_id)] = key
        return out

    async def _store(self, response: ServerKeyResponse) -> None:
        if response.server_name == self.server_name:
            return  # never let anyone tell us our own keys
        await self.store.store_response(response, self.clock_ms())
        self._memo.pop(response.server_name, None)

    async def get_verify_key(self, server_name: str, key_id: str, *, minimum_valid_until_ts: int = 0
                             ) -> nacl.signing.VerifyKey | None:
        """The key, if we have or can fetch one valid until at least the given time."""
        found = await self.get_keys([KeyRequest(server_name, key_id, minimum_valid_until_ts)])
        key = found.get((server_name, key_id))
        return key.known_key().verify_key if key is not None else None

    # --- Events

    async def verify_events(
        self, events: Sequence[tuple[Mapping[str, Any], RoomVersion]], *, origin: str | None = None
    ) -> list[SignatureError | None]:
        """Check the signatures of many events (fetching their keys in one go): for
        each, None if good, else the SignatureError. In room v5+ a key must be valid at
        the event's ``origin_server_ts``. Content hashes are not checked here."""
        requests: list[KeyRequest] = []
        errors: list[SignatureError | None] = [None] * len(events)
        for i, (pdu_json, room_version) in enumerate(events):
            try:
                requests += key_requests_for_event(pdu_json, room_version, origin=origin)
            except SignatureError as e:
                errors[i] = e
        # Every key once; each event is then checked against the key's validity.
        keys = await self.get_keys(requests)
        lookup = {k: key.known_key() for k, key in keys.items()}

        def keys_for(server: str, key_id: str):
            return lookup.get((server, key_id))

        for i, (pdu_json, room_version) in enumerate(events):
            if errors[i] is not None:
                continue
            try:
                verify_event_signatures(pdu_json, room_version, keys_for, origin=origin)
            except SignatureError as e:
                errors[i] = e
        return errors

    async def verify_event(self, pdu_json: Mapping[str, Any], room_version: RoomVersion, *,
                           origin: str | None = None) -> None:
        """Raises SignatureError unless the event carries the signatures it needs."""
        (error,) = await self.verify_events([(pdu_json, room_version)], origin=origin)
        if error is not None:
            raise error

    # --- Notary duty

    async def key_docs_for_notary(self, server_name: str, minimum_valid_until_ts: int,
                                  key_ids: Sequence[str] = ()) -> list[dict]:
        """Signed key responses for ``server_name`` valid until at least the given
        time, fetched afresh (directly) when what we hold is too old or lacks a key
        asked for. If the server cannot be reached, the newest response we hold."""
        wanted = [KeyRequest(server_name, k, minimum_valid_until_ts) for k in key_ids] or \
                 [KeyRequest(server_name, None, minimum_valid_until_ts)]
        held = await self.store.get_server_keys(server_name)
        if not all(any(r.answered_by(k) for k in held) for r in wanted):
            for response in await self.direct_fetcher.fetch(wanted):
                await self._store(response)
        docs = await self.store.get_key_docs(server_name)
        if key_ids:
            # The responses holding the keys asked for (a newer response without them
            # does not hide an older one that has them).
            having = [d for d in docs if any(k in (d.get("verify_keys") or {}) or k in (d.get("old_verify_keys") or {})
                                             for k in key_ids)]
            docs = having or docs
        fresh = [d for d in docs if _doc_valid_until(d) >= minimum_valid_until_ts]
        return fresh or docs[:1]

    def reset_backoff(self, server_name: str) -> None:
        """The server just proved it is up (e.g. it sent us a signed request)."""
        self.backoff.reset(server_name)


def _doc_valid_until(doc: dict) -> int:
    value = doc.get("valid_until_ts")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0

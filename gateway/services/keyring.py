"""Fetching and caching other servers' signing keys: through the configured notaries
(``trusted_key_servers``) first, then directly from the server.

Our own keys are never fetched over the network. Concurrent requests for the same
server share one fetch; a server that just failed is not asked again for a minute.
"""

from __future__ import annotations

import asyncio
import logging
import time

import nacl.signing

from federation.keyring import KeyResponseError, parse_key_response
from federation.net.client import FederationRequestError
from federation.signing import decode_verify_key

from ..server import HomeServer
from ..storage.keys import ServerKeyStore

log = logging.getLogger(__name__)

FAILURE_BACKOFF_S = 60.0


class KeyRing:
    def __init__(self, hs: HomeServer):
        self.hs = hs
        self.store = ServerKeyStore(hs.db)
        self._inflight: dict[str, asyncio.Future] = {}
        self._failed: dict[str, float] = {}

    async def get_verify_key(self, server_name: str, key_id: str, *, minimum_valid_until_ts: int = 0
                             ) -> nacl.signing.VerifyKey | None:
        """The key, if we have or can fetch one valid until at least the given time."""
        if server_name == self.hs.server_name:
            own = self.hs.signing_key
            return own.verify_key if key_id == own.key_id else None
        cached = await self.store.get_key(server_name, key_id)
        if cached is not None and cached.valid_until_ts >= minimum_valid_until_ts:
            return decode_verify_key(cached.verify_key)
        await self._fetch(server_name, key_id, minimum_valid_until_ts)
        cached = await self.store.get_key(server_name, key_id)
        if cached is not None and cached.valid_until_ts >= minimum_valid_until_ts:
            return decode_verify_key(cached.verify_key)
        return None

    async def key_docs_for_notary(self, server_name: str, minimum_valid_until_ts: int) -> list[dict]:
        """Signed key responses for ``server_name`` valid until at least the given time,
        fetching fresh ones when what we hold is too old (notary duty)."""
        docs = await self.store.get_key_docs(server_name)
        if not any(d.get("valid_until_ts", 0) >= minimum_valid_until_ts for d in docs):
            await self._fetch(server_name, None, minimum_valid_until_ts, use_notaries=False)
            docs = await self.store.get_key_docs(server_name)
        return [d for d in docs if d.get("valid_until_ts", 0) >= minimum_valid_until_ts] or docs[:1]

    async def _fetch(self, server_name: str, key_id: str | None = None, minimum_valid_until_ts: int = 0,
                     *, use_notaries: bool = True) -> None:
        if time.monotonic() - self._failed.get(server_name, -FAILURE_BACKOFF_S) < FAILURE_BACKOFF_S:
            return
        existing = self._inflight.get(server_name)
        if existing is not None:
            await asyncio.shield(existing)
            return
        future = asyncio.get_running_loop().create_future()
        self._inflight[server_name] = future
        try:
            if use_notaries and key_id is not None and await self._fetch_via_notaries(
                    server_name, key_id, minimum_valid_until_ts):
                self._failed.pop(server_name, None)
                return
            doc = await self.hs.federation_client.request(
                "GET", server_name, "/_matrix/key/v2/server", signed=False
            )
            keys = parse_key_response(doc, server_name)
            await self.store.store_keys(keys, doc, self.hs.clock_ms())
            self._failed.pop(server_name, None)
        except (FederationRequestError, KeyResponseError) as e:
            log.warning("cannot fetch keys of %s: %s", server_name, e)
            self._failed[server_name] = time.monotonic()
        finally:
            del self._inflight[server_name]
            future.set_result(None)

    async def _fetch_via_notaries(self, server_name: str, key_id: str, minimum_valid_until_ts: int) -> bool:
        """Ask each trusted key server in turn; True once one gave a usable answer.

        A notary's answer must carry its signature by one of its configured
        ``verify_keys``; without configured keys we rely on its TLS certificate, so not
        when certificate checks are off. Each key document must also be self-signed.
        """
        fed = self.hs.config.federation
        query = {"server_keys": {server_name: {key_id: {"minimum_valid_until_ts": minimum_valid_until_ts}}}}
        for notary in fed.trusted_key_servers:
            if notary.server_name == server_name or (not notary.verify_keys and not fed.federation_verify_certificates):
                continue
            try:
                answer = await self.hs.federation_client.request(
                    "POST", notary.server_name, "/_matrix/key/v2/query", content=query, signed=False
                )
            except FederationRequestError as e:
                log.info("notary %s could not give keys of %s: %s", notary.server_name, server_name, e)
                continue
            stored = False
            for doc in answer.get("server_keys", []) if isinstance(answer, dict) else []:
                if not isinstance(doc, dict) or doc.get("server_name") != server_name:
                    continue
                if notary.verify_keys and not _signed_by_any(doc, notary.server_name, notary.verify_keys):
                    log.warning("notary %s sent keys of %s without a valid notary signature",
                                notary.server_name, server_name)
                    continue
                try:
                    keys = parse_key_response(doc, server_name)
                except KeyResponseError as e:
                    log.warning("notary %s sent bad keys of %s: %s", notary.server_name, server_name, e)
                    continue
                await self.store.store_keys(keys, doc, self.hs.clock_ms())
                stored = stored or any(k.key_id == key_id for k in keys)
            if stored:
                return True
        return False


def _signed_by_any(doc: dict, signer: str, verify_keys: dict[str, str]) -> bool:
    from federation.signing import SignatureError, verify_json_signature

    for kid, key in verify_keys.items():
        try:
            verify_json_signature(doc, signer, kid, decode_verify_key(key))
            return True
        except (SignatureError, ValueError):
            continue
    return False

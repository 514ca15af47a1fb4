"""End-to-end encryption plumbing: the server stores and forwards keys, never decrypts.

Spec: https://spec.matrix.org/latest/client-server-api/#end-to-end-encryption
(keys upload/query/claim/changes, cross-signing), "Send-to-Device messaging", and the
server-server API's "End-to-End Encryption" and "Device Management" sections:
https://spec.matrix.org/latest/server-server-api/#end-to-end-encryption

- Device keys are checked before they are stored: owner and device ID are the
  requester's, the fields the spec requires are there. Their self-signature is for the
  clients that download them to check (as Synapse, the server stores what a client
  sends). Cross-signing keys are checked: self-signing and user-signing signed by the
  master key.
- Every change of a user's keys gets a position in the ``device_lists`` stream: /sync
  and /keys/changes report users with changes who share a room with the caller, and the
  federation sender tells the servers sharing a room (``m.device_list_update`` with
  ``stream_id``/``prev_id``, ``m.signing_key_update``).
- Remote users' device lists are fetched in one request per server
  (``/user/keys/query``), cached while they share a room with one of our users (their
  server then sends us updates), and dropped when they no longer do.
- One-time keys are claimed by deleting them: two claims never get the same key; the
  fallback key answers when none are left.
- To-device messages wait in ``device_inbox`` until the device syncs with a later token.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from federation.canonical_json import encode_canonical_json
from federation.signing import SignatureError, decode_verify_key, quote_path_segment, verify_json_signature

from ..http import Codes, MatrixError
from ..storage.e2e_keys import DeviceKeys, E2EKeyStore, StoredSignature, seen_only_by
from ..storage.state import _placeholders
from .federation.sender import server_of

log = logging.getLogger(__name__)

#: Devices whose acknowledged to-device position is remembered.
ACKED_CACHE_SIZE = 50_000
#: To-device messages handed out per /sync.
TO_DEVICE_LIMIT = 100
#: Remote key queries and claims wait at most this long (ms) by default.
DEFAULT_TIMEOUT_MS = 10_000
CROSS_SIGNING_TYPES = ("master", "self_signing", "user_signing")
#: EDU type -> the method of this service that handles it (registered by the server).
EDU_HANDLERS = {"m.device_list_update": "on_device_list_update", "m.signing_key_update": "on_signing_key_update",
                "m.direct_to_device": "on_direct_to_device"}
#: /sendToDevice transaction IDs are remembered this long.
TXN_LIFETIME_MS = 24 * 3600 * 1000
TXN_PRUNE_INTERVAL_MS = 3600 * 1000
#: To-device messages no server took within this long are given up.
OUTBOX_LIFETIME_MS = 7 * 24 * 3600 * 1000


def _bad(msg: str) -> MatrixError:
    return MatrixError.bad_json(msg)


def _ed25519_keys(obj: Mapping[str, Any]) -> dict[str, str]:
    keys = obj.get("keys")
    if not isinstance(keys, dict):
        return {}
    return {k: v for k, v in keys.items() if isinstance(k, str) and k.startswith("ed25519:") and isinstance(v, str)}


def check_signed_by(obj: dict[str, Any], signer: str, key_id: str, public_key: str) -> bool:
    """Whether ``obj`` carries a good signature of ``signer`` with ``key_id``."""
    try:
        verify_json_signature(obj, signer, key_id, decode_verify_key(public_key))
        return True
    except (SignatureError, ValueError, TypeError):
        return False


def device_keys_well_formed(keys: Any, user_id: str, device_id: str) -> bool:
    """Whether ``keys`` is a device keys object of ``device_id`` of ``user_id`` with the
    fields the spec requires (their signature is checked by the clients that use them)."""
    if not isinstance(keys, dict) or keys.get("user_id") != user_id or keys.get("device_id") != device_id:
        return False
    algorithms, key_map = keys.get("algorithms"), keys.get("keys")
    return (isinstance(algorithms, list) and all(isinstance(a, str) for a in algorithms)
            and isinstance(key_map, dict) and all(isinstance(v, str) for v in key_map.values())
            and isinstance(keys.get("signatures"), dict))


def remote_device_keys_acceptable(keys: Any, user_id: str, device_id: str) -> bool:
    """Device keys another server relays for one of its users: an object not naming
    another user or device. Kept as sent otherwise (as Synapse does): clients check them."""
    return isinstance(keys, dict) and keys.get("user_id", user_id) == user_id \
        and keys.get("device_id", device_id) == device_id


def _single_key(obj: dict[str, Any], what: str) -> tuple[str, str]:
    keys = obj.get("keys")
    if not isinstance(keys, dict) or len(keys) != 1:
        raise _bad(f"{what} must have exactly one key")
    key_id, value = next(iter(keys.items()))
    if not key_id.startswith("ed25519:") or not isinstance(value, str) or key_id != f"ed25519:{value}":
        raise _bad(f"{what}'s key must be 'ed25519:<public key>': <public key>")
    try:
        decode_verify_key(value)
    except (ValueError, TypeError):
        raise _bad(f"{what}'s key is not an ed25519 public key") from None
    return key_id, value


class E2EKeysService:
    def __init__(self, hs):
        self.hs = hs
        self.store = E2EKeyStore(hs.db)
        self._background: set[asyncio.Task] = set()
        self._resyncing: dict[str, asyncio.Task] = {}
        self._member_range: tuple[int, int] | None = None
        self._member_task: asyncio.Task | None = None
        #: (user, device) -> to-device position already deleted (skips a delete per quiet sync).
        self._acked: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._txns_pruned_ms = 0
        #: ``listener([(user_id, device_id), ...])`` after local devices' keys were claimed.
        self.keys_claimed_listeners: list[Callable[[list[tuple[str, str]]], None]] = []

    # --- helpers ------------------------------------------------------------------------

    def is_mine(self, user_id: str) -> bool:
        return server_of(user_id) == self.hs.server_name

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def users_sharing_rooms(self, user_id: str) -> set[str]:
        """Users joined to a room the user is joined to (the user included)."""
        rows = await self.hs.db.fetch(
            "SELECT DISTINCT o.user_id FROM room_memberships m JOIN room_memberships o ON o.room_id = m.room_id"
            " WHERE m.user_id = $1 AND m.membership = 'join' AND o.membership = 'join'", user_id)
        return {r[0] for r in rows} | {user_id}

    async def _shares_room_with_local_user(self, user_ids: Sequence[str]) -> set[str]:
        """Of ``user_ids``, those joined to a room a local user is joined to."""
        if not user_ids:
            return set()
        rows = await self.hs.db.fetch(
            "SELECT DISTINCT m.user_id, o.user_id FROM room_memberships m JOIN room_memberships o"
            " ON o.room_id = m.room_id AND o.membership = 'join'"
            f" WHERE m.membership = 'join' AND m.user_id IN ({_placeholders(len(user_ids))})", *user_ids)
        return {r[0] for r in rows if self.is_mine(r[1])}

    async def _device_lists_changed(self, user_id: str, device_ids: Sequence[str] = (), *,
                                    deleted: bool = False, cross_signing: bool = False) -> None:
        """Wake the syncs of users sharing a room with ``user_id``; for a local user tell
        the servers sharing a room (device list updates, signing key updates)."""
        sharing = await self.users_sharing_rooms(user_id)
        self.hs.notifier.notify_users(u for u in sharing if self.is_mine(u))
        if not self.is_mine(user_id):
            return
        servers = {server_of(u) for u in sharing} - {self.hs.server_name}
        if not servers:
            return
        edus: list[tuple[str, dict[str, Any]]] = []
        if cross_signing:
            keys = (await self.store.get_cross_signing_keys([user_id]))[user_id]
            content: dict[str, Any] = {"user_id": user_id}
            for t in ("master", "self_signing"):
                if t in keys:
                    content[f"{t}_key"] = keys[t]
            edus.append(("m.signing_key_update", content))
        if device_ids:
            edus += [("m.device_list_update", c) for c in await self._device_list_update_edus(user_id, device_ids,
                                                                                                deleted)]
        await self._send_kept(sorted(servers), edus)

    async def _send_kept(self, servers: Sequence[str], edus: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Keep the EDUs for each server until it took them (``on_edus_sent``), then hand
        them to the federation sender (the destination's, on whichever process)."""
        sender = self.hs.federation_sender
        servers = [s for s in servers if sender.may_send_to(s)]
        kept = [(s, _outbox_id(t, c), t, c) for t, c in edus for s in servers]
        await self.store.add_federation_outbox(kept, self.hs.clock_ms())
        for server, message_id, edu_type, content in kept:
            sender.send_edu(server, edu_type, content, key=message_id)

    async def _device_list_update_edus(self, user_id: str, device_ids: Sequence[str],
                                       deleted: bool) -> list[dict[str, Any]]:
        stream_ids = await self.store.get_last_device_stream_ids(user_id, 2)
        if not stream_ids:
            return []
        stream_id = stream_ids[0]
        prev = stream_ids[1:]
        devices = await self._own_devices_signed(user_id)
        out = []
        for device_id in device_ids:
            d = devices.get(device_id)
            name = d.display_name if d is not None else None
            gone = deleted
            if d is None and not deleted:  # a device without keys (yet), or gone
                row = await self.hs.auth.devices.get_device(user_id, device_id)
                gone = row is None
                name = row.display_name if row is not None else None
            content: dict[str, Any] = {"user_id": user_id, "device_id": device_id, "stream_id": stream_id,
                                       "prev_id": prev, "deleted": gone}
            if not gone:
                if d is not None and d.keys is not None:
                    content["keys"] = d.keys
                if name is not None:
                    content["device_display_name"] = name
            out.append(content)
        return out

    # --- /keys/upload -----------------------------------------------------------------------

    async def upload_keys(self, user_id: str, device_id: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
        """Spec: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3keysupload"""
        if device_id is None:
            raise MatrixError.invalid_param("Uploading keys needs an access token bound to a device")
        device_keys = body.get("device_keys")
        otks = body.get("one_time_keys")
        fallback = body.get("fallback_keys", body.get("org.matrix.msc2732.fallback_keys"))
        if device_keys is not None:
            self._check_device_keys(user_id, device_id, device_keys)
        parsed_otks = self._parse_keys(otks, "one_time_keys") if otks is not None else []
        parsed_fallback = self._parse_keys(fallback, "fallback_keys") if fallback is not None else []
        algorithms = [a for a, _, _ in parsed_fallback]
        if len(set(algorithms)) != len(algorithms):
            raise _bad("at most one fallback key per algorithm")
        if device_keys is not None:
            if await self.store.set_device_keys(user_id, device_id, device_keys) is not None:
                await self._device_lists_changed(user_id, [device_id])
        if parsed_otks:
            conflicts = await self.store.add_one_time_keys(user_id, device_id, parsed_otks)
            if conflicts:
                raise MatrixError.invalid_param(f"One-time key {conflicts[0]} already exists with other content")
        for algorithm, key_id, key in parsed_fallback:
            await self.store.set_fallback_key(user_id, device_id, algorithm, key_id, key)
        return {"one_time_key_counts": await self.one_time_key_counts(user_id, device_id)}

    async def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        counts = await self.store.count_one_time_keys(user_id, device_id)
        counts.setdefault("signed_curve25519", 0)
        return counts

    @staticmethod
    def _check_device_keys(user_id: str, device_id: str, keys: Any) -> None:
        """The shape of uploaded device keys (the fields the spec requires, of the right
        types, naming the requester's device). Their signature is the clients' to check,
        as they download them (``/keys/query``); like Synapse, the server does not vouch
        for it, so what clients upload is stored as sent."""
        if not isinstance(keys, dict):
            raise _bad("device_keys must be an object")
        if keys.get("user_id") != user_id:
            raise MatrixError.invalid_param("device_keys.user_id is not the requester")
        if keys.get("device_id") != device_id:
            raise MatrixError.invalid_param("device_keys.device_id is not the requester's device")
        if not device_keys_well_formed(keys, user_id, device_id):
            raise _bad("device_keys needs 'algorithms' (a list of strings), 'keys' (an object of strings) "
                       "and 'signatures' (an object)")

    @staticmethod
    def _parse_keys(keys: Any, what: str) -> list[tuple[str, str, Any]]:
        if not isinstance(keys, dict):
            raise _bad(f"{what} must be an object")
        out = []
        for full_id, key in keys.items():
            algorithm, sep, key_id = full_id.partition(":")
            if not sep or not algorithm or not key_id:
                raise _bad(f"{what}: key IDs are '<algorithm>:<key id>', not {full_id[:64]!r}")
            if not isinstance(key, (str, dict)):
                raise _bad(f"{what}: {full_id[:64]} must be a string or an object")
            out.append((algorithm, key_id, key))
        return out

    # --- /keys/query --------------------------------------------------------------------------

    async def query_keys(self, requester: str | None, query: Any, timeout_ms: int = DEFAULT_TIMEOUT_MS,
                         *, local_only: bool = False) -> dict[str, Any]:
        """Spec: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3keysquery
        (``requester`` None: a federation query, which gets no user-signing keys)."""
        if not isinstance(query, dict):
            raise _bad("device_keys must be an object")
        wanted: dict[str, list[str]] = {}
        for user_id, devices in query.items():
            if not isinstance(user_id, str) or not user_id.startswith("@") or ":" not in user_id:
                raise MatrixError.invalid_param(f"Not a user ID: {str(user_id)[:64]!r}")
            if devices is None:
                devices = []
            if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
                raise _bad("device_keys: each user maps to a list of device IDs")
            wanted[user_id] = devices
        result: dict[str, Any] = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {}, "failures": {}}
        if requester is not None:
            result["user_signing_keys"] = {}
        local = [u for u in wanted if self.is_mine(u)]
        remote = [u for u in wanted if not self.is_mine(u)]
        if local_only:
            remote = []
        cached = await self.store.get_remote_cache(remote)
        # Users sharing a room with ours are tracked: their whole list is fetched
        # (/user/devices, with the stream ID later updates build on) and cached.
        tracked = await self._shares_room_with_local_user([u for u in remote if u not in cached])
        errors = await asyncio.gather(*(self.resync_remote(u) for u in tracked))
        for u, error in zip(tracked, errors):
            if error is None:
                cached[u] = None
            else:
                result["failures"][server_of(u)] = error
        from_store = local + [u for u in remote if u in cached]
        self._merge(result, await self._keys_from_store(requester, {u: wanted[u] for u in from_store}))
        by_server: dict[str, list[str]] = {}
        for u in remote:
            if u not in cached and u not in tracked:
                by_server.setdefault(server_of(u), []).append(u)
        if by_server:
            answers = await asyncio.gather(*(self._query_remote(s, users, timeout_ms)
                                             for s, users in by_server.items()))
            for server, (answer, failure) in zip(by_server, answers):
                if failure is not None:
                    result["failures"][server] = failure
                    continue
                self._merge(result, self._filter_remote(answer, {u: wanted[u] for u in by_server[server]}))
        return result

    @staticmethod
    def _merge(into: dict[str, Any], part: Mapping[str, Any]) -> None:
        for section, value in part.items():
            if section in into and isinstance(value, dict):
                into[section].update(value)

    async def _keys_from_store(self, requester: str | None, wanted: Mapping[str, list[str]]) -> dict[str, Any]:
        users = list(wanted)
        out: dict[str, Any] = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {},
                               "user_signing_keys": {}}
        if not users:
            return out
        devices = await self.store.get_device_keys(users)
        cross = await self.store.get_cross_signing_keys(users)
        extra = await self.store.get_signatures(users)
        sigs: dict[tuple[str, str], list[StoredSignature]] = {}
        for s in extra:
            sigs.setdefault((s.target_user_id, s.target_key_id), []).append(s)
        for user_id in users:
            only = set(wanted[user_id])
            section: dict[str, Any] = {}
            for device_id, d in devices[user_id].items():
                if d.keys is None or (only and device_id not in only):
                    continue
                keys = self._with_signatures(d.keys, sigs.get((user_id, device_id), []), requester, user_id)
                unsigned = dict(keys["unsigned"]) if isinstance(keys.get("unsigned"), dict) else {}
                if d.display_name is not None:
                    unsigned["device_display_name"] = d.display_name
                keys = {**keys, "unsigned": unsigned}  # always there, as Synapse answers
                section[device_id] = keys
            out["device_keys"][user_id] = section
            for t in CROSS_SIGNING_TYPES:
                key = cross[user_id].get(t)
                if key is None or (t == "user_signing" and requester != user_id):
                    continue
                pub = next(iter((key.get("keys") or {}).values()), None)
                key = self._with_signatures(key, sigs.get((user_id, pub), []) if pub else [], requester, user_id)
                out[f"{t}_keys"][user_id] = key
        return out

    @staticmethod
    def _with_signatures(obj: dict[str, Any], extra: Sequence[StoredSignature], requester: str | None,
                         owner: str) -> dict[str, Any]:
        """Add uploaded signatures: the owner's own, and those the requester made."""
        chosen = [s for s in extra if s.signer_user_id == owner or s.signer_user_id == requester]
        if not chosen:
            return obj
        sigs = {u: dict(v) for u, v in (obj.get("signatures") or {}).items() if isinstance(v, dict)}
        for s in chosen:
            sigs.setdefault(s.signer_user_id, {})[s.signer_key_id] = s.signature
        return {**obj, "signatures": sigs}

    async def _query_remote(self, server: str, users: list[str],
                            timeout_ms: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """One ``/user/keys/query`` for all of a server's users; cached for those who share
        a room with a local user (their server keeps us up to date)."""
        from federation.net.client import FederationRequestError

        try:
            answer = await self.hs.federation_client.request(
                "POST", server, "/_matrix/federation/v1/user/keys/query",
                content={"device_keys": {u: [] for u in users}}, timeout=max(1.0, timeout_ms / 1000))
        except FederationRequestError as e:
            return {}, {"status": e.status or 503, "message": str(e)[:200]}
        except Exception as e:  # noqa: BLE001 - an unreachable server is a per-server failure
            return {}, {"status": 503, "message": str(e)[:200]}
        if not isinstance(answer, dict):
            return {}, {"status": 502, "message": "answer is not an object"}
        clean = self._clean_remote_answer(server, users, answer)
        shared = await self._shares_room_with_local_user(users)
        for user_id in users:
            if user_id in shared:
                devices = [DeviceKeys(user_id, d, k, (k.get("unsigned") or {}).get("device_display_name"))
                           for d, k in clean["device_keys"].get(user_id, {}).items()]
                cross = {t: clean[f"{t}_keys"][user_id] for t in ("master", "self_signing")
                         if user_id in clean[f"{t}_keys"]}
                await self.store.replace_remote_devices(user_id, devices, None, cross)
        return clean, None

    def _clean_remote_answer(self, server: str, users: Sequence[str], answer: Mapping[str, Any]) -> dict[str, Any]:
        """Keep only keys of the server's own users that are what they say they are."""
        out: dict[str, Any] = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {}}
        asked = set(users)
        dk = answer.get("device_keys")
        if isinstance(dk, dict):
            for user_id, devices in dk.items():
                if user_id not in asked or not isinstance(devices, dict):
                    continue
                section = {}
                for device_id, keys in devices.items():
                    if remote_device_keys_acceptable(keys, user_id, device_id):
                        section[device_id] = keys
                out["device_keys"][user_id] = section
        for t in ("master", "self_signing"):
            section = answer.get(f"{t}_keys")
            if isinstance(section, dict):
                for user_id, key in section.items():
                    if user_id in asked and isinstance(key, dict) and key.get("user_id") == user_id:
                        out[f"{t}_keys"][user_id] = key
        return out

    @staticmethod
    def _filter_remote(answer: Mapping[str, Any], wanted: Mapping[str, list[str]]) -> dict[str, Any]:
        out = {k: dict(v) for k, v in answer.items()}
        for user_id, devices in out.get("device_keys", {}).items():
            only = set(wanted.get(user_id) or [])
            if only:
                out["device_keys"][user_id] = {d: k for d, k in devices.items() if d in only}
        return out

    # --- /keys/claim ----------------------------------------------------------------------------

    async def claim_keys(self, query: Any, timeout_ms: int = DEFAULT_TIMEOUT_MS, *,
                         local_only: bool = False) -> dict[str, Any]:
        """Spec: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3keysclaim"""
        if not isinstance(query, dict):
            raise _bad("one_time_keys must be an object")
        local: list[tuple[str, str, str]] = []
        by_server: dict[str, dict[str, dict[str, str]]] = {}
        for user_id, devices in query.items():
            if not isinstance(user_id, str) or not user_id.startswith("@") or ":" not in user_id:
                raise MatrixError.invalid_param(f"Not a user ID: {str(user_id)[:64]!r}")
            if not isinstance(devices, dict) or not all(isinstance(a, str) for a in devices.values()):
                raise _bad("one_time_keys: each user maps devices to an algorithm")
            if self.is_mine(user_id):
                local += [(user_id, d, a) for d, a in devices.items()]
            elif not local_only:
                by_server.setdefault(server_of(user_id), {})[user_id] = dict(devices)
        result: dict[str, Any] = {"one_time_keys": await self.store.claim_keys(local), "failures": {}}
        claimed = [(u, d) for u, devices in result["one_time_keys"].items() for d in devices]
        for listener in self.keys_claimed_listeners if claimed else ():
            try:
                listener(claimed)
            except Exception:
                log.exception("keys-claimed listener failed")
        if by_server:
            answers = await asyncio.gather(*(self._claim_remote(s, q, timeout_ms) for s, q in by_server.items()))
            for server, (keys, failure) in zip(by_server, answers):
                if failure is not None:
                    result["failures"][server] = failure
                else:
                    result["one_time_keys"].update(keys)
        return result

    async def _claim_remote(self, server: str, query: dict[str, dict[str, str]],
                            timeout_ms: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
        try:
            answer = await self.hs.federation_client.request(
                "POST", server, "/_matrix/federation/v1/user/keys/claim", content={"one_time_keys": query},
                timeout=max(1.0, timeout_ms / 1000))
        except Exception as e:  # noqa: BLE001 - an unreachable server is a per-server failure
            return {}, {"status": getattr(e, "status", None) or 503, "message": str(e)[:200]}
        keys = answer.get("one_time_keys") if isinstance(answer, dict) else None
        if not isinstance(keys, dict):
            return {}, {"status": 502, "message": "answer has no one_time_keys"}
        return {u: v for u, v in keys.items() if u in query and isinstance(v, dict)}, None

    # --- /keys/changes and /sync -------------------------------------------------------------

    async def changes(self, user_id: str, since_events: int | None, since_lists: int, upto_events: int,
                      upto_lists: int) -> tuple[list[str], list[str]]:
        """(changed, left): users sharing a room with ``user_id`` whose keys changed in
        ``(since_lists, upto_lists]`` or who started sharing a room (or were invited to
        one) in the event range; users who stopped sharing every room. Spec: "Tracking the device list for a user"
        https://spec.matrix.org/latest/client-server-api/#tracking-the-device-list-for-a-user
        """
        changed = await self.store.get_changed_users(since_lists, upto_lists, user_id)
        candidates: set[str] = set()
        invited: set[str] = set()
        if since_events is not None and since_events < upto_events:
            rows = await self.hs.db.fetch(
                "SELECT DISTINCT d.room_id, d.state_key, m.membership, o.membership FROM current_state_deltas d"
                " JOIN room_memberships m ON m.room_id = d.room_id AND m.user_id = $1"
                " LEFT JOIN room_memberships o ON o.room_id = d.room_id AND o.user_id = d.state_key"
                " WHERE d.type = 'm.room.member' AND d.stream_ordering > $2 AND d.stream_ordering <= $3",
                user_id, since_events, upto_events)
            rooms_i_changed = {r[0] for r in rows if r[1] == user_id}
            candidates = {r[1] for r in rows}
            # Users invited to a room of ours: clients encrypt to them too (as Synapse).
            invited = {r[1] for r in rows if r[2] == "join" and r[3] == "invite"}
            if rooms_i_changed:
                members = await self.hs.db.fetch(
                    "SELECT DISTINCT user_id FROM room_memberships"
                    f" WHERE room_id IN ({_placeholders(len(rooms_i_changed))})", *rooms_i_changed)
                candidates |= {r[0] for r in members}
        if not changed and not candidates:
            return [], []
        shared = await self.users_sharing_rooms(user_id)
        return sorted(((changed | candidates) & shared) | invited), sorted(candidates - shared - invited - {user_id})

    async def sync_section(self, user_id: str, device_id: str | None, *, initial: bool, since_events: int | None,
                           since_to_device: int, since_lists: int | None, upto_events: int,
                           positions: Mapping[str, int]) -> tuple[dict[str, Any], int, int, bool]:
        """The E2EE parts of a /sync response, the next to-device and device list
        positions, and whether there is anything new (to-device or device lists). A quiet
        sync costs one query (the key counts)."""
        upto_td = positions.get("to_device", 0)
        upto_dl = positions.get("device_lists", 0)
        out: dict[str, Any] = {"to_device": {"events": []}, "device_lists": {"changed": [], "left": []},
                               "device_one_time_keys_count": {}, "device_unused_fallback_key_types": []}
        next_td = upto_td
        news = False
        if device_id is not None:
            acked = min(since_to_device, upto_td)
            if acked > self._acked.get((user_id, device_id), 0):
                await self.store.delete_to_device_messages(user_id, device_id, acked)
                self._acked[(user_id, device_id)] = acked
                self._acked.move_to_end((user_id, device_id))
                while len(self._acked) > ACKED_CACHE_SIZE:
                    self._acked.popitem(last=False)
            if acked < upto_td:
                msgs = await self.store.get_to_device_messages(user_id, device_id, acked, upto_td, TO_DEVICE_LIMIT)
                if len(msgs) >= TO_DEVICE_LIMIT:
                    next_td = msgs[-1][0]
                out["to_device"]["events"] = [m for _, m in msgs]
                news = bool(msgs)
            counts, fallback = await self.store.get_key_counts(user_id, device_id)
            counts.setdefault("signed_curve25519", 0)
            out["device_one_time_keys_count"] = counts
            out["device_unused_fallback_key_types"] = fallback
        if not initial and since_lists is not None:
            changed, left = await self.changes(user_id, since_events, min(since_lists, upto_dl), upto_events, upto_dl)
            out["device_lists"] = {"changed": changed, "left": left}
            news = news or bool(changed or left)
        return out, next_td, upto_dl, news

    # --- cross-signing -------------------------------------------------------------------------

    async def upload_signing_keys(self, user_id: str, body: Mapping[str, Any], require_auth) -> None:
        """Spec: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3keysdevice_signingupload
        ``require_auth()`` runs user-interactive auth; it is needed only when the user
        already has a master key and the upload changes something (as Synapse: the first
        upload goes through without it)."""
        new: dict[str, dict[str, Any]] = {}
        for t in CROSS_SIGNING_TYPES:
            key = body.get(f"{t}_key")
            if key is None:
                continue
            if not isinstance(key, dict):
                raise _bad(f"{t}_key must be an object")
            if key.get("user_id") != user_id:
                raise MatrixError.invalid_param(f"{t}_key.user_id is not the requester")
            usage = key.get("usage")
            if not isinstance(usage, list) or t not in usage:
                raise MatrixError.invalid_param(f"{t}_key.usage must contain {t!r}")
            _single_key(key, f"{t}_key")
            new[t] = key
        if not new:
            raise MatrixError.missing_param("No cross-signing key given")
        existing = (await self.store.get_cross_signing_keys([user_id]))[user_id]
        master = new.get("master") or existing.get("master")
        if master is None:
            raise MatrixError.invalid_param("A master key is needed first")
        master_id, master_pub = _single_key(master, "master_key")
        for t in ("self_signing", "user_signing"):
            if t in new and not check_signed_by(new[t], user_id, master_id, master_pub):
                raise MatrixError.invalid_param(f"{t}_key is not signed by the master key")
        changed = {t: k for t, k in new.items() if existing.get(t) != k}
        if not changed:
            return
        if "master" in existing:
            await require_auth()
        if "master" in changed:
            # A new master key invalidates the old subkeys that it did not sign.
            for t in ("self_signing", "user_signing"):
                if t not in new and t in existing and not check_signed_by(existing[t], user_id, master_id, master_pub):
                    log.info("%s's %s key is not signed by the new master key; it stays until replaced", user_id, t)
        await self.store_signing_keys(user_id, changed)

    async def store_signing_keys(self, user_id: str, changed: dict[str, Any]) -> None:
        """Cross-signing keys checked (and authorised) by ``upload_signing_keys``: stored,
        and the device lists of those sharing a room change (the device_lists stream)."""
        await self.store.set_cross_signing_keys(user_id, changed)
        if set(changed) == {"user_signing"}:
            self.hs.notifier.notify_users([user_id])  # nobody else sees that key
        else:
            await self._device_lists_changed(user_id, cross_signing=True)

    async def upload_signatures(self, user_id: str, body: Any) -> dict[str, Any]:
        """Spec: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3keyssignaturesupload
        Own devices (and own master key) signed by the self-signing key or a device;
        other users' master keys signed by the user-signing key. Failures per key."""
        if not isinstance(body, dict):
            raise _bad("body must be an object")
        failures: dict[str, dict[str, Any]] = {}
        accepted: list[StoredSignature] = []
        mine = (await self.store.get_cross_signing_keys([user_id]))[user_id]
        own_devices = (await self.store.get_device_keys([user_id]))[user_id]
        others = [u for u in body if u != user_id and isinstance(u, str)]
        others_cross = await self.store.get_cross_signing_keys(others) if others else {}
        device_changes: list[str] = []
        master_changed: set[str] = set()
        signed_others: set[str] = set()

        def fail(target_user: str, key_id: str, errcode: str, msg: str) -> None:
            failures.setdefault(target_user, {})[key_id] = {"errcode": errcode, "error": msg}

        for target_user, objs in body.items():
            if not isinstance(objs, dict):
                raise _bad("each user maps key IDs to signed objects")
            for key_id, signed in objs.items():
                if not isinstance(signed, dict):
                    fail(target_user, key_id, Codes.BAD_JSON, "not an object")
                    continue
                my_sigs = (signed.get("signatures") or {}).get(user_id)
                if not isinstance(my_sigs, dict) or not my_sigs:
                    fail(target_user, key_id, Codes.INVALID_PARAM, f"no signature by {user_id}")
                    continue
                if target_user == user_id:
                    stored = own_devices.get(key_id)
                    stored_keys = stored.keys if stored is not None else None
                    if stored_keys is None:
                        master = mine.get("master")
                        if master is not None and key_id in (master.get("keys") or {}).values():
                            stored_keys = master
                    if stored_keys is None:
                        fail(target_user, key_id, Codes.NOT_FOUND, "unknown device or key")
                        continue
                    signers = {}
                    ssk = mine.get("self_signing")
                    if ssk is not None and stored is not None:
                        signers.update(_ed25519_keys(ssk))
                    if stored is None:  # the master key, signed by one of the user's devices
                        for d in own_devices.values():
                            if d.keys is not None:
                                signers.update({k: v for k, v in _ed25519_keys(d.keys).items()
                                                if k == f"ed25519:{d.device_id}"})
                else:
                    master = others_cross.get(target_user, {}).get("master")
                    if master is None or key_id not in (master.get("keys") or {}).values():
                        fail(target_user, key_id, Codes.NOT_FOUND, "only a user's master key can be signed")
                        continue
                    stored_keys = master
                    usk = mine.get("user_signing")
                    signers = _ed25519_keys(usk) if usk is not None else {}
                if {k: v for k, v in signed.items() if k not in ("signatures", "unsigned")} != \
                        {k: v for k, v in stored_keys.items() if k not in ("signatures", "unsigned")}:
                    fail(target_user, key_id, Codes.INVALID_PARAM, "the signed object is not the stored key")
                    continue
                good = [(kid, sig) for kid, sig in my_sigs.items() if kid in signers
                        and check_signed_by({**stored_keys, "signatures": {user_id: {kid: sig}}}, user_id, kid,
                                            signers[kid])]
                if not good:
                    fail(target_user, key_id, Codes.INVALID_PARAM, "no valid signature by a key allowed to sign it")
                    continue
                accepted += [StoredSignature(target_user, key_id, user_id, kid, sig) for kid, sig in good]
                if target_user == user_id:
                    if key_id in own_devices:
                        device_changes.append(key_id)
                    else:
                        master_changed.add(user_id)
                else:
                    signed_others.add(target_user)
        await self.store.add_signatures(accepted)
        if signed_others:
            # Only the signer sees those signatures: only their device lists change.
            for target_user in sorted(signed_others):
                await self.store.mark_changed(target_user, [seen_only_by(user_id)])
            self.hs.notifier.notify_users([user_id])
        if device_changes:
            await self.store.mark_changed(user_id, device_changes)
            await self._device_lists_changed(user_id, device_changes)
        if master_changed:
            await self.store.mark_changed(user_id)
            await self._device_lists_changed(user_id, cross_signing=True)
        return {"failures": failures}

    # --- devices going away --------------------------------------------------------------------

    async def on_devices_changed(self, user_id: str, device_ids: Sequence[str]) -> None:
        """A local device was created or renamed: the user's device list changed (what
        other users' clients learn from /sync, and other servers from an update)."""
        await self.store.mark_changed(user_id, device_ids)
        await self._device_lists_changed(user_id, device_ids)

    async def on_devices_deleted(self, user_id: str, device_ids: Sequence[str]) -> None:
        if await self.store.delete_devices(user_id, device_ids) is not None:
            await self._device_lists_changed(user_id, device_ids, deleted=True)

    # --- to-device -----------------------------------------------------------------------------

    async def send_to_device(self, sender: str, sender_device: str | None, event_type: str, txn_id: str,
                             messages: Any) -> None:
        """Spec: https://spec.matrix.org/latest/client-server-api/#put_matrixclientv3sendtodeviceeventtypetxnid
        Stored for local devices (once per transaction ID and device) and queued as
        ``m.direct_to_device`` for other servers."""
        if not isinstance(messages, dict):
            raise _bad("messages must be an object")
        local: list[tuple[str, str, dict[str, Any]]] = []
        remote: dict[str, dict[str, dict[str, Any]]] = {}
        local_users = [u for u in messages if isinstance(u, str) and self.is_mine(u)]
        for user_id, devices in messages.items():
            if not isinstance(user_id, str) or not user_id.startswith("@") or ":" not in user_id:
                raise MatrixError.invalid_param(f"Not a user ID: {str(user_id)[:64]!r}")
            if not isinstance(devices, dict) or not all(isinstance(c, dict) for c in devices.values()):
                raise _bad("messages: each user maps device IDs to message contents")
            if not self.is_mine(user_id):
                remote.setdefault(server_of(user_id), {})[user_id] = devices
        if local_users:
            existing = await self._local_device_ids(local_users)
            for user_id in local_users:
                for device_id, content in messages[user_id].items():
                    targets = existing.get(user_id, []) if device_id == "*" else \
                        [device_id] if device_id in existing.get(user_id, []) else []
                    for target in targets:
                        local.append((user_id, target, {"type": event_type, "sender": sender, "content": content}))
        now = self.hs.clock_ms()
        outbox = []
        for server, users in remote.items():
            if self.hs.federation_sender.may_send_to(server):
                message_id = secrets.token_urlsafe(12)
                outbox.append((server, message_id, {"sender": sender, "type": event_type, "message_id": message_id,
                                                    "messages": users}))
        pos = await self.store.add_to_device_messages((sender, sender_device or "", txn_id), local, now, outbox)
        if pos is None:
            return  # a retried transaction: already delivered
        if local:
            self.hs.notifier.notify_users({u for u, _, _ in local})
        for server, message_id, content in outbox:
            self.hs.federation_sender.send_edu(server, "m.direct_to_device", content, key=message_id)
        if now - self._txns_pruned_ms > TXN_PRUNE_INTERVAL_MS:
            self._txns_pruned_ms = now
            self._spawn(self.store.delete_old_message_txns(now - TXN_LIFETIME_MS, now - OUTBOX_LIFETIME_MS))

    async def on_edus_sent(self, destination: str, edus: Sequence[Mapping[str, Any]]) -> None:
        """A destination took these EDUs: its stored to-device messages and device list
        updates can go."""
        ids = [_outbox_id(e["edu_type"], e["content"]) for e in edus if e.get("edu_type") in _KEPT_EDUS
               and isinstance(e.get("content"), dict)]
        await self.store.delete_from_federation_outbox(destination, [i for i in ids if isinstance(i, str)])

    async def resend_outbox(self) -> None:
        """The sender started: queue again the to-device messages no server took yet (of
        its own destinations, when there are several senders)."""
        sender = self.hs.federation_sender
        for destination, message_id, edu_type, content in await self.store.get_federation_outbox_edus():
            if sender.owns(destination):
                sender.send_edu(destination, edu_type, content, key=message_id)

    async def _local_device_ids(self, user_ids: Sequence[str]) -> dict[str, list[str]]:
        rows = await self.hs.db.fetch(
            f"SELECT user_id, device_id FROM devices WHERE user_id IN ({_placeholders(len(user_ids))})", *user_ids)
        out: dict[str, list[str]] = {}
        for r in rows:
            out.setdefault(r[0], []).append(r[1])
        return out

    # --- federation: serving -------------------------------------------------------------------

    async def get_user_devices(self, user_id: str) -> dict[str, Any]:
        """Spec: https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1userdevicesuserid"""
        devices = await self._own_devices_signed(user_id)
        names = {d.device_id: d.display_name for d in await self.hs.auth.devices.list_devices(user_id)}
        stream_id = await self.store.get_last_device_stream_id(user_id) or 0
        cross = (await self.store.get_cross_signing_keys([user_id]))[user_id]
        out: dict[str, Any] = {"user_id": user_id, "stream_id": stream_id, "devices": []}
        for device_id in sorted(set(names) | {d for d, k in devices.items() if k.keys is not None}):
            entry: dict[str, Any] = {"device_id": device_id}
            d = devices.get(device_id)
            if d is not None and d.keys is not None:
                entry["keys"] = d.keys
            if names.get(device_id) is not None:
                entry["device_display_name"] = names[device_id]
            out["devices"].append(entry)
        for t in ("master", "self_signing"):
            if t in cross:
                out[f"{t}_key"] = cross[t]
        return out

    async def _own_devices_signed(self, user_id: str) -> dict[str, DeviceKeys]:
        """A local user's device keys with the signatures the user uploaded for them
        (self-signing key), as other servers should see them."""
        devices = (await self.store.get_device_keys([user_id]))[user_id]
        sigs: dict[str, list[StoredSignature]] = {}
        for sig in await self.store.get_signatures([user_id]):
            if sig.signer_user_id == user_id:
                sigs.setdefault(sig.target_key_id, []).append(sig)
        return {d: DeviceKeys(k.user_id, k.device_id,
                              self._with_signatures(k.keys, sigs.get(d, []), None, user_id) if k.keys else k.keys,
                              k.display_name) for d, k in devices.items()}

    # --- federation: EDUs in -------------------------------------------------------------------

    async def on_device_list_update(self, origin: str, content: Any) -> None:
        """Spec: https://spec.matrix.org/latest/server-server-api/#device-management
        Applied when ``prev_id`` names the last update we applied, else the whole list is
        fetched again with /user/devices."""
        if not isinstance(content, dict):
            return
        user_id, device_id, stream_id = content.get("user_id"), content.get("device_id"), content.get("stream_id")
        if not isinstance(user_id, str) or server_of(user_id) != origin or not isinstance(device_id, str) \
                or not isinstance(stream_id, int):
            return
        cache = await self.store.get_remote_cache([user_id])
        if user_id not in cache:
            # Not cached: if the user shares a room with ours, fetch the whole list (later
            # updates build on its stream ID); otherwise it is none of our business.
            if await self._shares_room_with_local_user([user_id]):
                self._spawn(self.resync_remote(user_id))  # not holding up the transaction
            return
        ours = cache[user_id]
        prev = content.get("prev_id") or []
        if ours is not None and stream_id <= ours:
            return  # already applied
        if ours is not None and isinstance(prev, list) and ours in prev:
            keys = content.get("keys")
            if keys is not None and not remote_device_keys_acceptable(keys, user_id, device_id):
                keys = None
            await self.store.apply_remote_device_update(
                user_id, device_id, keys if isinstance(keys, dict) else None,
                content.get("device_display_name") if isinstance(content.get("device_display_name"), str) else None,
                bool(content.get("deleted")), stream_id)
            await self._device_lists_changed(user_id)
            return
        self._spawn(self.resync_remote(user_id))

    async def resync_remote(self, user_id: str) -> dict[str, Any] | None:
        """Fetch a remote user's whole device list again (one at a time per user); the
        failure (``/keys/query``'s ``failures`` entry) or None."""
        running = self._resyncing.get(user_id)
        if running is not None:
            return await asyncio.shield(running)
        task = asyncio.get_running_loop().create_task(self._resync(user_id))
        self._resyncing[user_id] = task
        try:
            return await asyncio.shield(task)
        finally:
            if self._resyncing.get(user_id) is task:
                del self._resyncing[user_id]

    async def _resync(self, user_id: str) -> dict[str, Any] | None:
        server = server_of(user_id)
        try:
            answer = await self.hs.federation_client.request(
                "GET", server, f"/_matrix/federation/v1/user/devices/{quote_path_segment(user_id)}")
        except Exception as e:  # noqa: BLE001 - try again with the next update
            log.info("device list resync of %s failed: %s", user_id, e)
            await self.store.drop_remote_cache([user_id])
            await self.store.mark_remote_changed(user_id)
            await self._device_lists_changed(user_id)
            return {"status": getattr(e, "status", None) or 503, "message": str(e)[:200]}
        if not isinstance(answer, dict) or answer.get("user_id") != user_id:
            return {"status": 502, "message": "the answer is not the user's device list"}
        devices = []
        for d in answer.get("devices") or []:
            if not isinstance(d, dict) or not isinstance(d.get("device_id"), str):
                continue
            keys = d.get("keys")
            dev_id = d["device_id"]
            if not remote_device_keys_acceptable(keys, user_id, dev_id):
                keys = None
            name = d.get("device_display_name")
            devices.append(DeviceKeys(user_id, dev_id, keys, name if isinstance(name, str) else None))
        cross = {t: answer[f"{t}_key"] for t in ("master", "self_signing")
                 if isinstance(answer.get(f"{t}_key"), dict) and answer[f"{t}_key"].get("user_id") == user_id}
        stream_id = answer.get("stream_id") if isinstance(answer.get("stream_id"), int) else None
        await self.store.replace_remote_devices(user_id, devices, stream_id, cross)
        await self._device_lists_changed(user_id)
        return None

    async def on_signing_key_update(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict):
            return
        user_id = content.get("user_id")
        if not isinstance(user_id, str) or server_of(user_id) != origin:
            return
        keys = {t: content[f"{t}_key"] for t in ("master", "self_signing")
                if isinstance(content.get(f"{t}_key"), dict) and content[f"{t}_key"].get("user_id") == user_id}
        if (await self.store.get_remote_cache([user_id])) and keys:
            await self.store.set_cross_signing_keys(user_id, keys, local=False)
        if await self._shares_room_with_local_user([user_id]):
            await self.store.mark_remote_changed(user_id)
            await self._device_lists_changed(user_id)

    async def on_direct_to_device(self, origin: str, content: Any) -> None:
        """Spec: https://spec.matrix.org/latest/server-server-api/#send-to-device-messaging"""
        if not isinstance(content, dict):
            return
        sender, event_type, message_id = content.get("sender"), content.get("type"), content.get("message_id")
        messages = content.get("messages")
        if not isinstance(sender, str) or server_of(sender) != origin or not isinstance(event_type, str) \
                or not isinstance(message_id, str) or not isinstance(messages, dict):
            return
        users = [u for u in messages if isinstance(u, str) and self.is_mine(u) and isinstance(messages[u], dict)]
        existing = await self._local_device_ids(users) if users else {}
        local = []
        for user_id in users:
            for device_id, body in messages[user_id].items():
                if not isinstance(body, dict):
                    continue
                targets = existing.get(user_id, []) if device_id == "*" else \
                    [device_id] if device_id in existing.get(user_id, []) else []
                local += [(user_id, t, {"type": event_type, "sender": sender, "content": body}) for t in targets]
        pos = await self.store.add_to_device_messages((origin, "", message_id), local, self.hs.clock_ms())
        if pos:
            self.hs.notifier.notify_users({u for u, _, _ in local})

    # --- membership changes: remote caches ------------------------------------------------------

    def on_new_events(self, room_id: str, positions: Sequence[int]) -> None:
        """Listener: after membership changes, drop the device lists of remote users who
        no longer share a room with any local user (lookups coalesced)."""
        if not positions:
            return
        lo, hi = min(positions), max(positions)
        self._member_range = (lo, hi) if self._member_range is None else \
            (min(lo, self._member_range[0]), max(hi, self._member_range[1]))
        if self._member_task is None:
            self._member_task = asyncio.get_running_loop().create_task(self._check_memberships())

    async def _check_memberships(self) -> None:
        try:
            while self._member_range is not None:
                (first, last), self._member_range = self._member_range, None
                try:
                    await self._drop_unshared(first, last)
                except Exception:
                    log.exception("checking remote device list caches failed")
        finally:
            self._member_task = None

    async def _drop_unshared(self, first: int, last: int) -> None:
        rows = await self.hs.db.fetch(
            "SELECT DISTINCT d.room_id, d.state_key FROM current_state_deltas d JOIN room_memberships m"
            " ON m.room_id = d.room_id AND m.user_id = d.state_key AND m.membership <> 'join'"
            " WHERE d.type = 'm.room.member' AND d.stream_ordering >= $1 AND d.stream_ordering <= $2", first, last)
        if not rows:
            return
        candidates = {r[1] for r in rows if not self.is_mine(r[1])}
        rooms_left_by_locals = {r[0] for r in rows if self.is_mine(r[1])}
        if rooms_left_by_locals:
            members = await self.hs.db.fetch(
                f"SELECT DISTINCT user_id FROM room_memberships WHERE room_id IN ({_placeholders(len(rooms_left_by_locals))})"
                " AND membership = 'join'", *rooms_left_by_locals)
            candidates |= {r[0] for r in members if not self.is_mine(r[0])}
        cached = list(await self.store.get_remote_cache(sorted(candidates)))
        if not cached:
            return
        still = await self._shares_room_with_local_user(cached)
        gone = [u for u in cached if u not in still]
        if gone:
            log.debug("no longer sharing a room with %s: dropping their device lists", gone)
            await self.store.drop_remote_cache(gone)

    async def close(self) -> None:
        tasks = [t for t in [*self._background, self._member_task] if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


#: EDUs kept in ``device_federation_outbox`` until their destination took them.
_KEPT_EDUS = frozenset({"m.direct_to_device", "m.device_list_update", "m.signing_key_update"})


def _outbox_id(edu_type: str, content: Mapping[str, Any]) -> str | None:
    """The outbox key of a kept EDU, from its content alone (the sender's hook only has
    the content): a to-device message's ``message_id``; a device list update's user,
    stream ID (zero-padded: kept ones go out in order) and device; a signing key
    update's user and content hash."""
    if edu_type == "m.direct_to_device":
        return content.get("message_id")
    if edu_type == "m.device_list_update":
        return f"dl/{content.get('user_id')}/{int(content.get('stream_id') or 0):020d}/{content.get('device_id')}"
    if edu_type == "m.signing_key_update":
        digest = hashlib.sha256(encode_canonical_json(dict(content))).hexdigest()[:32]
        return f"sk/{content.get('user_id')}/{digest}"
    return None

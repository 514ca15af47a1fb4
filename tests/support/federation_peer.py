"""A fake remote homeserver on loopback over TLS: the receiving end of
``PUT /_matrix/federation/v1/send/{txnId}`` and its own key endpoint.

Every transaction is checked with the protocol core the way a real server would: the
X-Matrix signature over the exact request target, ``destination`` = this peer, the body's
``origin``, the limits, and each PDU's signatures and content hash. What does not pass
is answered 401/400 and recorded in ``errors`` (tests assert it stays empty).
The peer can be stopped (connections refused) and started again on the same port, made
to answer 503, or held (``gate``) to keep a transaction in flight.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web

from federation.auth_rules import auth_types_for_event
from federation.events import PDU, build_event, compute_event_id
from federation.room_versions import RoomVersion, get_room_version
from federation.signing import (
    ServerSigningKey,
    sign_event,
    SignatureError,
    build_x_matrix_authorization,
    check_content_hash,
    encode_verify_key,
    generate_signing_key,
    parse_x_matrix_authorization,
    sign_json,
    verify_event_signatures,
    verify_request,
)
from tests.conftest import free_port
from tests.support.tls import TestCA, serve_tls

KeyLookup = Callable[[str, str], Any]


@dataclass
class ReceivedTransaction:
    txn_id: str
    origin: str
    body: dict[str, Any]

    @property
    def pdus(self) -> list[dict[str, Any]]:
        return self.body.get("pdus", [])

    @property
    def edus(self) -> list[dict[str, Any]]:
        return self.body.get("edus", [])


@dataclass
class FederationPeer:
    ca: TestCA
    #: (server, key_id) -> verify key of the servers that send to us.
    keys_of_senders: KeyLookup
    room_version: RoomVersion = field(default_factory=lambda: get_room_version("12"))
    port: int = field(default_factory=free_port)
    key: ServerSigningKey = field(default_factory=lambda: generate_signing_key("peer"))
    transactions: list[ReceivedTransaction] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: "ok", or an HTTP status to answer every /send with.
    answer: int | str = "ok"
    #: While cleared, /send handlers wait (a transaction stays in flight).
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    max_in_flight: int = 0
    refused: int = 0

    def __post_init__(self) -> None:
        self.gate.set()
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()

    @property
    def server_name(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pdus(self) -> list[dict[str, Any]]:
        return [p for t in self.transactions for p in t.pdus]

    def event_ids(self) -> list[str]:
        return [compute_event_id(p, self.room_version) if "event_id" not in p else p["event_id"] for p in self.pdus]

    @property
    def edus(self) -> list[dict[str, Any]]:
        return [e for t in self.transactions for e in t.edus]

    # --- running ---------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_put("/_matrix/federation/v1/send/{txn_id}", self._send)
        app.router.add_get("/_matrix/key/v2/server", self._keys)
        self._runner, _ = await serve_tls(app, self.ca, "127.0.0.1", port=self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        """Until ``predicate()`` holds (checked after every request the peer sees)."""
        async def waiter() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        await asyncio.wait_for(waiter(), timeout)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- what it signs ---------------------------------------------------------------

    def sign_request(self, method: str, target: str, destination: str, content: Any = None) -> str:
        return build_x_matrix_authorization(method, target, self.server_name, destination, content, self.key)

    async def _keys(self, request: web.Request) -> web.Response:
        import time

        doc = {"server_name": self.server_name, "valid_until_ts": int(time.time() * 1000) + 3600_000,
               "verify_keys": {self.key.key_id: {"key": encode_verify_key(self.key.verify_key)}},
               "old_verify_keys": {}}
        return web.json_response(sign_json(doc, self.server_name, self.key))

    # --- /send -------------------------------------------------------------------------

    async def _send(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await self._notify()
        try:
            await self.gate.wait()
            if self.answer != "ok":
                self.refused += 1
                return web.json_response({"errcode": "M_UNKNOWN", "error": "down"}, status=int(self.answer))
            return await self._check_and_record(request)
        finally:
            self.in_flight -= 1
            await self._notify()

    def _fail(self, status: int, message: str) -> web.Response:
        self.errors.append(message)
        return web.json_response({"errcode": "M_UNAUTHORIZED" if status == 401 else "M_BAD_JSON",
                                  "error": message}, status=status)

    async def _check_and_record(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw)
            auth = parse_x_matrix_authorization(request.headers.get("Authorization", ""))
        except (ValueError, SignatureError) as e:
            return self._fail(400, f"bad request: {e}")
        if auth.destination != self.server_name:
            return self._fail(401, f"destination {auth.destination!r} is not {self.server_name}")
        verify_key = self.keys_of_senders(auth.origin, auth.key_id)
        if verify_key is None:
            return self._fail(401, f"unknown key {auth.key_id} of {auth.origin}")
        try:
            verify_request(auth, request.method, request.raw_path, body, self.server_name, verify_key)
        except SignatureError as e:
            return self._fail(401, f"bad X-Matrix signature: {e}")
        if body.get("origin") != auth.origin or not isinstance(body.get("origin_server_ts"), int):
            return self._fail(400, f"origin/origin_server_ts wrong: {body.get('origin')!r}")
        pdus, edus = body.get("pdus"), body.get("edus", [])
        if not isinstance(pdus, list) or len(pdus) > 50 or not isinstance(edus, list) or len(edus) > 100:
            return self._fail(400, "transaction over the limits")
        results: dict[str, Any] = {}
        for pdu in pdus:
            event_id = compute_event_id(pdu, self.room_version)
            try:
                verify_event_signatures(pdu, self.room_version, self.keys_of_senders)
                if not check_content_hash(pdu, self.room_version):
                    raise SignatureError("content hash does not match")
                results[event_id] = {}
            except (SignatureError, ValueError) as e:
                self.errors.append(f"PDU {event_id}: {e}")
                results[event_id] = {"error": str(e)}
        self.transactions.append(ReceivedTransaction(request.match_info["txn_id"], auth.origin, body))
        return web.json_response({"pdus": results})


async def remote_join(hs, room_id: str, user_id: str, peer: "FederationPeer", membership: str = "join") -> PDU:
    """Store a join (or another ``membership`` of the user's own) of ``user_id`` signed by
    the peer, as the inbound side would (the store directly: no inbound federation
    needed), and tell the sender."""
    from gateway.storage.events import EventWrite

    async with hs.events.room_lock(room_id):
        room = await hs.events.store.get_room(room_id)
        state = await hs.events.state.get_state(room.current_state_group)
        prev = await hs.events.store.get_forward_extremities(room_id)
        depths = await hs.events.store.get_depths(prev)
        rv = room.room_version
        content = {"membership": membership}
        keys = auth_types_for_event(rv, "m.room.member", user_id, user_id, content)
        auth_ids = [state.state[k] for k in sorted(keys) if k in state.state]
        body = build_event(rv, type="m.room.member", sender=user_id, room_id=room_id, content=content,
                           prev_event_ids=prev, auth_event_ids=auth_ids, depth=max(depths.values()) + 1,
                           origin_server_ts=hs.clock_ms(), state_key=user_id)
        pdu = PDU.from_pdu_json(sign_event(body, peer.server_name, peer.key, room_version=rv), rv)
        await hs.events.store.persist_events(
            room_id, [EventWrite(pdu, state_delta={("m.room.member", user_id): pdu.event_id})],
            state_before=state, expected_head=room.head_stream_ordering, received_ts=hs.clock_ms())
        hs.events._heads.pop(room_id, None)
    hs.federation_sender.notify_new_events()
    return pdu

"""A scripted remote homeserver for federation tests, and our server in-process on TLS.

``FakeRemote`` has its own signing key and server name (``127.0.0.1:<port>``), serves its
keys (``/_matrix/key/v2/server``) and the room-data endpoints our server asks it for
(``get_missing_events``, ``/event``, ``/state_ids``, ``/state``, ``/event_auth``,
``/backfill``) from the events it built, and sends real signed requests with our own
``FederationClient``.
``RoomView`` tracks a room's state and head as the remote sees it and builds the next
event with the right auth events.
"""

from __future__ import annotations

import contextlib
import secrets
import ssl
import string
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable, Mapping
from typing import Any, AsyncIterator
from urllib.parse import quote

from aiohttp import web

from federation.auth_rules import auth_types_for_event
from federation.events import PDU, build_event, compute_event_id
from federation.net.client import FederationClient
from federation.net.ip_ranges import IPRangePolicy
from federation.net.resolver import ServerResolver
from federation.room_versions import RoomVersion, get_room_version
from federation.signing import encode_verify_key, generate_signing_key, sign_event, sign_json
from gateway.app import build_listener_app
from gateway.config import parse_config
from gateway.server import HomeServer
from tests.conftest import GENEROUS_RATE_LIMITS, free_port
from tests.support.tls import TestCA

LOOPBACK = IPRangePolicy(whitelist=["127.0.0.0/8"])


def _server_ssl(ca: TestCA, name: str) -> ssl.SSLContext:
    cert = ca.issue("127.0.0.1", filename=name)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert.cert_path), str(cert.key_path))
    return ctx


def signed_keys_handler(server_name: str, version: str = "t1"):
    """An aiohttp handler for ``GET /_matrix/key/v2/server``: a fresh key, valid for an hour,
    for a fake server (the federation tester's tests)."""
    key = generate_signing_key(version)

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(sign_json({
            "server_name": server_name, "old_verify_keys": {},
            "verify_keys": {key.key_id: {"key": encode_verify_key(key.verify_key)}},
            "valid_until_ts": int(time.time() * 1000) + 3_600_000}, server_name, key))
    return handler


def client_ssl(ca: TestCA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.ca_path))


def auth_chain_of(pdus: Mapping[str, dict], ids: Iterable[str]) -> set[str]:
    """The auth chain of events (their auth events, recursively) among ``pdus`` (PDU
    JSON by event ID; references of any room version)."""
    out: set[str] = set()
    todo = list(ids)
    while todo:
        ev = pdus.get(todo.pop())
        if ev is None:
            continue
        for a in ev["auth_events"]:
            a = a if isinstance(a, str) else a[0]
            if a not in out:
                out.add(a)
                todo.append(a)
    return out


class FakeRemote:
    def __init__(self, ca: TestCA, key_id: str = "fr1"):
        self.ca = ca
        self.port = free_port()
        self.server_name = f"127.0.0.1:{self.port}"
        self.key = generate_signing_key(key_id)
        self.pdus: dict[str, dict] = {}
        self.state_before: dict[str, dict[tuple[str, str], str]] = {}
        self.requests: list[tuple[str, str]] = []
        self.serve_missing_events = True
        #: False: ``/event_auth`` answers 404 (a server that does not serve it).
        self.serve_event_auth = True
        #: Events get_missing_events does not give (nor walks past).
        self.withheld: set[str] = set()
        #: More (method, path, handler) routes to serve (e.g. a resident's make_join).
        self.extra_routes: list[tuple[str, str, Any]] = []
        self._runner: web.AppRunner | None = None
        ctx = client_ssl(ca)
        self.client = FederationClient(
            server_name=self.server_name, signing_key=self.key,
            resolver=ServerResolver(ip_policy=LOOPBACK, ssl_context=ctx), ssl_context=ctx, ip_policy=LOOPBACK,
        )

    # --- lifecycle

    async def __aenter__(self) -> "FakeRemote":
        app = web.Application()
        app.router.add_get("/_matrix/key/v2/server", self._keys)
        app.router.add_post("/_matrix/federation/v1/get_missing_events/{room_id}", self._missing)
        app.router.add_get("/_matrix/federation/v1/event/{event_id}", self._event)
        app.router.add_get("/_matrix/federation/v1/state_ids/{room_id}", self._state_ids)
        app.router.add_get("/_matrix/federation/v1/state/{room_id}", self._state)
        app.router.add_get("/_matrix/federation/v1/event_auth/{room_id}/{event_id}", self._event_auth)
        app.router.add_get("/_matrix/federation/v1/backfill/{room_id}", self._backfill)
        for method, path, handler in self.extra_routes:
            app.router.add_route(method, path, handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port,
                          ssl_context=_server_ssl(self.ca, f"remote-{self.port}")).start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.close()
        await self.client.resolver.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- what it serves

    def _log(self, request: web.Request) -> None:
        self.requests.append((request.method, request.match_info.route.resource.canonical))

    async def _keys(self, request: web.Request) -> web.Response:
        doc = sign_json({"server_name": self.server_name, "valid_until_ts": int(time.time() * 1000) + 3600_000,
                         "verify_keys": {self.key.key_id: {"key": encode_verify_key(self.key.verify_key)}},
                         "old_verify_keys": {}}, self.server_name, self.key)
        return web.json_response(doc)

    async def _missing(self, request: web.Request) -> web.Response:
        self._log(request)
        if not self.serve_missing_events:
            return web.json_response({"events": []})
        body = await request.json()
        earliest, limit = set(body["earliest_events"]), body.get("limit", 10)
        out: list[dict] = []
        queue = [p for e in body["latest_events"] for p in self._prevs(e)]
        seen = set(queue)
        while queue and len(out) < limit:
            eid = queue.pop(0)
            if eid in earliest or eid not in self.pdus or eid in self.withheld:
                continue
            out.append(self.pdus[eid])
            for p in self._prevs(eid):
                if p not in seen:
                    seen.add(p)
                    queue.append(p)
        out.sort(key=lambda e: e["depth"])
        return web.json_response({"events": out})

    def _prevs(self, event_id: str) -> list[str]:
        ev = self.pdus.get(event_id)
        if ev is None:
            return []
        return [p if isinstance(p, str) else p[0] for p in ev["prev_events"]]

    async def _event(self, request: web.Request) -> web.Response:
        self._log(request)
        ev = self.pdus.get(request.match_info["event_id"])
        if ev is None:
            return web.json_response({"errcode": "M_NOT_FOUND", "error": "no"}, status=404)
        return web.json_response({"origin": self.server_name, "origin_server_ts": 0, "pdus": [ev]})

    def _auth_chain(self, ids: list[str]) -> list[str]:
        return sorted(auth_chain_of(self.pdus, ids))

    async def _state_ids(self, request: web.Request) -> web.Response:
        self._log(request)
        state = self.state_before.get(request.query["event_id"])
        if state is None:
            return web.json_response({"errcode": "M_NOT_FOUND", "error": "no"}, status=404)
        ids = sorted(state.values())
        return web.json_response({"pdu_ids": ids, "auth_chain_ids": self._auth_chain(ids)})

    async def _state(self, request: web.Request) -> web.Response:
        self._log(request)
        state = self.state_before.get(request.query["event_id"])
        if state is None:
            return web.json_response({"errcode": "M_NOT_FOUND", "error": "no"}, status=404)
        ids = sorted(state.values())
        return web.json_response({"pdus": [self.pdus[e] for e in ids if e in self.pdus],
                                  "auth_chain": [self.pdus[e] for e in self._auth_chain(ids) if e in self.pdus]})

    async def _event_auth(self, request: web.Request) -> web.Response:
        self._log(request)
        if not self.serve_event_auth:
            return web.Response(status=404)
        chain = self._auth_chain([request.match_info["event_id"]])
        return web.json_response({"auth_chain": [self.pdus[e] for e in chain if e in self.pdus]})

    async def _backfill(self, request: web.Request) -> web.Response:
        """From the ``v`` events (included) back over prev events, deepest first."""
        import heapq

        self._log(request)
        limit = int(request.query.get("limit", "10"))
        starts = [e for e in request.query.getall("v", []) if e in self.pdus]
        heap = [(-self.pdus[e]["depth"], e) for e in starts]
        heapq.heapify(heap)
        seen, out = set(starts), []
        while heap and len(out) < limit:
            _, eid = heapq.heappop(heap)
            out.append(self.pdus[eid])
            for p in self._prevs(eid):
                if p not in seen and p in self.pdus:
                    seen.add(p)
                    heapq.heappush(heap, (-self.pdus[p]["depth"], p))
        return web.json_response({"origin": self.server_name, "origin_server_ts": 0, "pdus": out})

    # --- what it sends

    async def join_via(self, destination: str, room_id: str, user_id: str, *, omit_members: bool | None = None,
                       edit=None) -> tuple[dict, Any]:
        """make_join + send_join v2 for ``user_id`` (of this server) as a joining server
        does: returns (our signed join event, the send_join answer). ``edit(template)``
        may change the template before it is signed."""
        from federation.room_membership import event_from_template, room_version_of_template, supported_room_versions

        made = await self.client.request(
            "GET", destination, f"/_matrix/federation/v1/make_join/{quote(room_id, safe='')}/{quote(user_id, safe='')}",
            query=[("ver", v) for v in supported_room_versions()])
        rv = room_version_of_template(made)
        template = made["event"] if edit is None else edit(made["event"])
        event = event_from_template(template, rv, membership="join", user_id=user_id, room_id=room_id,
                                    server_name=self.server_name, signing_key=self.key,
                                    origin_server_ts=int(time.time() * 1000))
        event_id = RoomView.event_id(event, rv)
        self.pdus[event_id] = event
        query = None if omit_members is None else {"omit_members": "true" if omit_members else "false"}
        answer = await self.client.request(
            "PUT", destination, f"/_matrix/federation/v2/send_join/{quote(room_id, safe='')}/{quote(event_id, safe='')}",
            content=event, query=query)
        return event, answer

    async def send(self, destination: str, pdus: list[dict], edus: list[dict] = (), txn_id: str | None = None) -> Any:
        txn_id = txn_id or secrets.token_hex(8)
        return await self.client.request(
            "PUT", destination, f"/_matrix/federation/v1/send/{txn_id}",
            content={"origin": self.server_name, "origin_server_ts": 0, "pdus": pdus, "edus": list(edus)},
        )


class RoomView:
    """A room as the remote sees it: state (PDUs by key), head and depth. ``learn``
    takes events from elsewhere (our server); ``make`` builds, signs and records the
    next event (without sending it)."""

    def __init__(self, remote: FakeRemote, rv: RoomVersion, room_id: str):
        self.remote, self.rv, self.room_id = remote, rv, room_id
        self.state: dict[tuple[str, str], PDU] = {}
        self.head: list[str] = []
        self.depth = 0

    def learn(self, pdus: list[PDU]) -> None:
        for p in pdus:
            self.remote.pdus.setdefault(p.event_id, p.get_pdu_json())
            if p.state_key is not None:
                self.state[(p.type, p.state_key)] = p
            self.head = [p.event_id]
            self.depth = max(self.depth, p.depth)

    def make(self, ev_type: str, sender: str, content: dict, *, state_key: str | None = None,
             prev: list[str] | None = None, advance: bool = True, ts: int | None = None) -> dict:
        keys = auth_types_for_event(self.rv, ev_type, sender, state_key, content)
        auth = [self.state[k].event_id for k in sorted(keys) if k in self.state]
        event_id = None
        if self.rv.event_id_in_event:
            event_id = "$" + "".join(secrets.choice(string.ascii_letters) for _ in range(16)) + ":" \
                + self.remote.server_name
        prev = list(self.head if prev is None else prev)
        pdu_json = build_event(
            self.rv, type=ev_type, sender=sender, room_id=self.room_id, content=content,
            prev_event_ids=prev, auth_event_ids=auth, depth=self.depth + 1,
            origin_server_ts=ts if ts is not None else int(time.time() * 1000), state_key=state_key,
            origin=self.remote.server_name, event_id=event_id,
        )
        signed = sign_event(pdu_json, self.remote.server_name, self.remote.key, room_version=self.rv)
        eid = signed["event_id"] if self.rv.event_id_in_event else compute_event_id(signed, self.rv)
        self.remote.pdus[eid] = signed
        self.remote.state_before[eid] = {k: p.event_id for k, p in self.state.items()}
        if advance:
            pdu = PDU(dict(signed), self.rv, eid)
            if state_key is not None:
                self.state[(ev_type, state_key)] = pdu
            self.head = [eid]
            self.depth += 1
        return signed

    @staticmethod
    def event_id(pdu_json: dict, rv: RoomVersion) -> str:
        return pdu_json["event_id"] if rv.event_id_in_event else compute_event_id(pdu_json, rv)


def remote_room(remote: FakeRemote, version: str, *, join_rule: str = "public", localpart: str = "room"
                ) -> tuple[RoomView, str]:
    """A room created on the remote by carol: its create event, carol's join, power
    levels (carol at 100 before rooms 12, where creators need no level) and join rules.
    Returns the view and carol's user ID."""
    rv = get_room_version(version)
    carol = f"@carol:{remote.server_name}"
    view = RoomView(remote, rv, None if rv.room_id_from_create_event else f"!{localpart}:{remote.server_name}")
    create_content = {"room_version": version} if rv.implicit_room_creator else {"creator": carol}
    create = view.make("m.room.create", carol, create_content, state_key="", prev=[])
    if rv.room_id_from_create_event:
        view.room_id = "!" + RoomView.event_id(create, rv)[1:]
    view.make("m.room.member", carol, {"membership": "join"}, state_key=carol)
    view.make("m.room.power_levels", carol, {"users": {} if rv.privileged_creators else {carol: 100}},
              state_key="")
    view.make("m.room.join_rules", carol, {"join_rule": join_rule}, state_key="")
    return view, carol


@dataclass
class LocalGateway:
    hs: HomeServer
    server_name: str
    url: str
    ssl: ssl.SSLContext


@contextlib.asynccontextmanager
async def local_gateway(directory: Path, database_config, ca: TestCA, extra: dict | None = None
                        ) -> AsyncIterator[LocalGateway]:
    """Our server in-process with a TLS listener (client + federation) on loopback,
    trusting ``ca`` and allowed to reach loopback; the ``hs`` is there for assertions."""
    port = free_port()
    name = f"127.0.0.1:{port}"
    db = {"name": "sqlite3", "args": {"database": database_config.args["database"]}} \
        if database_config.engine == "sqlite" else {"name": "psycopg2", "args": database_config.args}
    config = parse_config({
        "server_name": name, "database": db,
        "listeners": [{"port": port, "resources": [{"names": ["client", "federation"]}]}],
        "enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4,
        "federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
        "signing_key_path": str(directory / "signing.key"),
        **GENEROUS_RATE_LIMITS,
        **(extra or {}),
    }, config_path=str(directory / "homeserver.yaml"))
    hs = await HomeServer.open(config)
    runner = web.AppRunner(build_listener_app(hs, config.listeners[0]), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=_server_ssl(ca, f"gw-{port}")).start()
        yield LocalGateway(hs, name, f"https://{name}", client_ssl(ca))
    finally:
        await runner.cleanup()
        await hs.close()

"""Benchmark: joining a large room over federation, Gateway against Synapse.

A synthetic resident server on loopback (TLS, its own signing key) serves a public room
with N members (default 20000): each member joined once and then changed their display
name, so the room's state holds N member events and its auth chain about N more (each
profile change is authorised by the member's first join; every join by the create,
power levels and join rules events). The resident answers what a joining server asks:
its keys (``/_matrix/key/v2/server``), ``make_join``, ``send_join`` v1 and v2 (with
``omit_members=true``: no member events in ``state``, ``members_omitted`` and
``servers_in_room``), ``/state``, ``/state_ids``, ``/event``, ``/event_auth``,
``get_missing_events``, ``/backfill``, and it takes ``/send`` transactions. It does not
check the X-Matrix signatures of requests (it is a load generator, not a server under
test). The generated room is cached under ``.cache/bench-join-room/`` (keyed by N, room
version and the generator's version; its server name, and so its port, is part of the
signed events, so a busy port means generating again).

For each server (each its own process on loopback): a local user joins the room through
the resident. Printed: the time until the join call returns, the time until
``/joined_members`` lists all N+1 members (a partial-state join returns early and
fetches the members afterwards; ``/joined_members`` waits for that, in Synapse and in
ours), the server's peak RSS (VmHWM) and its CPU seconds, then ratios. Our server joins
twice per engine: with the full state (``experimental_features.faster_joins: false``)
and with partial state (the default); Synapse joins with partial state (its default).

    .cache/venv/bin/python bench/join_large_room.py [--members 20000] [--room-version 10]
        [--engines sqlite,postgres] [--synapse-engine sqlite] [--no-synapse]
        [--no-gateway-partial] [--requests]

``BENCH_PROFILE=out.prof`` runs our server under cProfile (see bench/client_load.py);
``BENCH_PY_SPY=prefix`` samples it with py-spy (if installed in .cache/venv);
``BENCH_THREAD_CPU=1`` prints its CPU seconds by thread. A server's CPU and memory are
those of its process and its children (our check worker processes, waited for before the
join: their resting RSS is not the join's growth); ``BENCH_RSS_DETAIL=1`` prints them by
process and the server's RSS over the join; ``BENCH_CHECK_PROCESSES=0`` runs ours with
the checks in threads (``federation_check_processes``). Numbers only: nothing here
asserts a timing.

Measured (2 shared cores, N=20000, room v10, machine fairly quiet): to full state, ours
14.0 s on SQLite and 12.5 s on PostgreSQL (a partial join returns in 0.25 s and has every
member after 16.7 s / 13.8 s), Synapse (SQLite, partial) 62.6 s: 4.5x and 5.0x; peak RSS
266 / 264 MiB against Synapse's 357 MiB (0.75x); CPU 12.4 / 10.7 s against 52.7 s. Before
the bulk paths (checks in threads, slices written while the next is checked, COPY,
orjson), the same join took 15-20 s on SQLite and 19-25 s on PostgreSQL, 290-296 MiB.
What is left is per-event Python work (format, ed25519 ~72 us, hashes, auth: ~7 s of CPU
for 40k events) and the parsed send_join answer (~110 MB of dicts for 40k events, parsed
at once), which sets the peak RSS: a third of Synapse's needs a streamed answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.client_load import (  # noqa: E402
    GatewayProcess,
    _create_pg_database,
    _drop_pg_database,
    cpu_seconds,
    rss_kb,
)
from federation.auth_rules import auth_types_for_event  # noqa: E402
from federation.events import build_event, compute_event_id  # noqa: E402
from federation.room_versions import get_room_version  # noqa: E402
from federation.signing import encode_verify_key, sign_event, sign_json, signing_key_from_seed  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.support.fake_remote import _server_ssl, auth_chain_of  # noqa: E402
from tests.support.synapse import SynapseServer, ensure_synapse_installed, register_synapse_user  # noqa: E402
from tests.support.tls import TestCA  # noqa: E402

#: Bump when the generated room changes shape (invalidates the cache).
GENERATOR_VERSION = 1
CACHE_DIR = ROOT / ".cache" / "bench-join-room"
KEY_ID = "ed25519:bench"
JOIN_TIMEOUT = 3600


# --- the room --------------------------------------------------------------------------


@dataclass
class SyntheticRoom:
    """The resident's room: its events in DAG order (a single chain), signed."""

    server_name: str
    port: int
    seed: str
    room_id: str
    room_version: str
    events: list[dict]
    ids: list[str] = field(default_factory=list)

    @property
    def rv(self):
        return get_room_version(self.room_version)

    @property
    def key(self):
        return signing_key_from_seed(KEY_ID.split(":", 1)[1], bytes.fromhex(self.seed))

    def finish(self) -> None:
        rv = self.rv
        self.ids = [e["event_id"] if rv.event_id_in_event else compute_event_id(e, rv) for e in self.events]


def generate_room(members: int, version: str, port: int) -> SyntheticRoom:
    rv = get_room_version(version)
    server = f"127.0.0.1:{port}"
    seed = secrets.token_bytes(32)
    key = signing_key_from_seed(KEY_ID.split(":", 1)[1], seed)
    room_id = f"!bench{members}x{secrets.token_hex(4)}:{server}"
    admin = f"@admin:{server}"
    state: dict[tuple[str, str], str] = {}
    events: list[dict] = []
    ts = int(time.time() * 1000) - 86_400_000
    prev: list[str] = []

    def add(ev_type: str, sender: str, content: dict, state_key: str | None) -> None:
        nonlocal prev
        keys = auth_types_for_event(rv, ev_type, sender, state_key, content)
        auth = [state[k] for k in sorted(keys) if k in state]
        event_id = f"${secrets.token_urlsafe(18)}:{server}" if rv.event_id_in_event else None
        pdu = build_event(rv, type=ev_type, sender=sender, room_id=room_id, content=content, prev_event_ids=prev,
                          auth_event_ids=auth, depth=len(events) + 1, origin_server_ts=ts + len(events),
                          state_key=state_key, origin=server, event_id=event_id)
        signed = sign_event(pdu, server, key, room_version=rv)
        eid = event_id or compute_event_id(signed, rv)
        events.append(signed)
        if state_key is not None:
            state[(ev_type, state_key)] = eid
        prev = [eid]

    create = {"creator": admin, "room_version": version} if not rv.implicit_room_creator \
        else {"room_version": version}
    add("m.room.create", admin, create, "")
    add("m.room.member", admin, {"membership": "join", "displayname": "admin"}, admin)
    add("m.room.power_levels", admin, {"users": {admin: 100}, "users_default": 0, "events_default": 0,
                                       "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0}, "")
    add("m.room.join_rules", admin, {"join_rule": "public"}, "")
    add("m.room.history_visibility", admin, {"history_visibility": "shared"}, "")
    add("m.room.name", admin, {"name": f"Bench room of {members}"}, "")
    users = [f"@user{i}:{server}" for i in range(1, members)]
    for u in users:
        add("m.room.member", u, {"membership": "join", "displayname": u[1:].split(":")[0]}, u)
    for u in users:
        add("m.room.member", u, {"membership": "join", "displayname": u[1:].split(":")[0] + " (bench)"}, u)
    room = SyntheticRoom(server, port, seed.hex(), room_id, version, events)
    room.finish()
    return room


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def load_room(members: int, version: str) -> SyntheticRoom:
    """The cached room for (N, version) if its port is free, else a new one (cached)."""
    path = CACHE_DIR / f"room-g{GENERATOR_VERSION}-v{version}-n{members}.json"
    if path.exists():
        data = json.loads(path.read_text())
        if _port_free(data["port"]):
            room = SyntheticRoom(**data)
            room.finish()
            return room
        print(f"  port {data['port']} of the cached room is busy: generating again", flush=True)
    t0 = time.perf_counter()
    room = generate_room(members, version, free_port())
    print(f"  generated {len(room.events)} events in {time.perf_counter() - t0:.1f} s", flush=True)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"server_name": room.server_name, "port": room.port, "seed": room.seed,
                               "room_id": room.room_id, "room_version": room.room_version,
                               "events": room.events}))
    tmp.replace(path)
    return room


# --- the resident server ----------------------------------------------------------------


def _refs(value: list) -> list[str]:
    return [r if isinstance(r, str) else r[0] for r in value]


class Resident:
    """Serves one ``SyntheticRoom`` (plus whatever joins it during the run)."""

    def __init__(self, room: SyntheticRoom, ca: TestCA, encoded: dict[str, bytes]):
        self.room = room
        self.rv = room.rv
        self.ca = ca
        self.key = room.key
        self.order: list[str] = list(room.ids)
        self.pdus: dict[str, dict] = dict(zip(room.ids, room.events))
        self.index: dict[str, int] = {e: i for i, e in enumerate(self.order)}
        #: Each event's JSON, encoded once (shared between runs).
        self.encoded = encoded
        self.requests: dict[str, int] = {}
        #: Whether a send_join asked for (and got) a partial state (omit_members).
        self.members_omitted = False
        self._runner: web.AppRunner | None = None

    # --- data

    def enc(self, event_id: str) -> bytes:
        b = self.encoded.get(event_id)
        if b is None:
            b = self.encoded[event_id] = json.dumps(self.pdus[event_id], separators=(",", ":")).encode()
        return b

    def enc_list(self, ids) -> bytes:
        return b"[" + b",".join(self.enc(e) for e in ids) + b"]"

    def state_before(self, event_id: str) -> dict[tuple[str, str], str]:
        state: dict[tuple[str, str], str] = {}
        for eid in self.order[:self.index[event_id]]:
            ev = self.pdus[eid]
            if "state_key" in ev:
                state[(ev["type"], ev["state_key"])] = eid
        return state

    def auth_chain(self, ids) -> list[str]:
        return sorted(auth_chain_of(self.pdus, ids), key=lambda e: self.index.get(e, 0))

    def append(self, event_id: str, pdu: dict) -> None:
        if event_id not in self.pdus:
            self.pdus[event_id] = pdu
            self.index[event_id] = len(self.order)
            self.order.append(event_id)

    # --- lifecycle

    async def __aenter__(self) -> "Resident":
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._count])
        fed = "/_matrix/federation"
        app.router.add_get("/_matrix/key/v2/server", self._keys)
        app.router.add_get(fed + "/v1/version", self._version)
        app.router.add_get(fed + "/v1/make_join/{room_id}/{user_id}", self._make_join)
        app.router.add_put(fed + "/v1/send_join/{room_id}/{event_id}", self._send_join_v1)
        app.router.add_put(fed + "/v2/send_join/{room_id}/{event_id}", self._send_join_v2)
        app.router.add_get(fed + "/v1/state/{room_id}", self._state)
        app.router.add_get(fed + "/v1/state_ids/{room_id}", self._state_ids)
        app.router.add_get(fed + "/v1/event/{event_id}", self._event)
        app.router.add_get(fed + "/v1/event_auth/{room_id}/{event_id}", self._event_auth)
        app.router.add_post(fed + "/v1/get_missing_events/{room_id}", self._missing)
        app.router.add_get(fed + "/v1/backfill/{room_id}", self._backfill)
        app.router.add_put(fed + "/v1/send/{txn_id}", self._send)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.room.port,
                          ssl_context=_server_ssl(self.ca, f"resident-{self.room.port}")).start()
        return self

    async def __aexit__(self, *exc) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _count(self, request: web.Request, handler):
        name = request.match_info.route.resource.canonical if request.match_info.route.resource else "unknown"
        self.requests[name] = self.requests.get(name, 0) + 1
        return await handler(request)

    # --- handlers

    def _json(self, body: bytes | dict, status: int = 200) -> web.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return web.Response(body=data, status=status, content_type="application/json")

    def _not_found(self, what: str) -> web.Response:
        return self._json({"errcode": "M_NOT_FOUND", "error": f"{what} not found"}, 404)

    def _room_ok(self, request: web.Request) -> bool:
        return request.match_info.get("room_id") == self.room.room_id

    async def _keys(self, request: web.Request) -> web.Response:
        doc = sign_json({"server_name": self.room.server_name,
                         "valid_until_ts": int(time.time() * 1000) + 3600_000,
                         "verify_keys": {KEY_ID: {"key": encode_verify_key(self.key.verify_key)}},
                         "old_verify_keys": {}}, self.room.server_name, self.key)
        return self._json(doc)

    async def _version(self, request: web.Request) -> web.Response:
        return self._json({"server": {"name": "bench-resident", "version": str(GENERATOR_VERSION)}})

    async def _make_join(self, request: web.Request) -> web.Response:
        if not self._room_ok(request):
            return self._not_found("room")
        if self.room.room_version not in request.query.getall("ver", ["1"]):
            return self._json({"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "unsupported",
                               "room_version": self.room.room_version}, 400)
        user_id = request.match_info["user_id"]
        head = self.order[-1]
        state = self.state_before(head)
        last = self.pdus[head]
        if "state_key" in last:
            state[(last["type"], last["state_key"])] = head
        content = {"membership": "join"}
        keys = auth_types_for_event(self.rv, "m.room.member", user_id, user_id, content)
        template = {
            "type": "m.room.member", "sender": user_id, "state_key": user_id, "room_id": self.room.room_id,
            "content": content, "depth": last["depth"] + 1, "origin_server_ts": int(time.time() * 1000),
            "prev_events": [head], "auth_events": [state[k] for k in sorted(keys) if k in state],
        }
        if not self.rv.updated_redaction_rules:
            template["origin"] = user_id.split(":", 1)[1]
        return self._json({"room_version": self.room.room_version, "event": template})

    async def _join_answer(self, request: web.Request, *, omit_members: bool) -> bytes | web.Response:
        if not self._room_ok(request):
            return self._not_found("room")
        event = await request.json()
        event_id = request.match_info["event_id"]
        rv = self.rv
        computed = event.get("event_id") if rv.event_id_in_event else compute_event_id(event, rv)
        if computed != event_id or event.get("type") != "m.room.member" \
                or (event.get("content") or {}).get("membership") != "join":
            return self._json({"errcode": "M_BAD_JSON", "error": "not a join event for that ID"}, 400)
        prev = _refs(event.get("prev_events") or [])
        if not prev or prev[0] not in self.index:
            return self._json({"errcode": "M_BAD_JSON", "error": "unknown prev event"}, 400)
        state = self.state_before(prev[0])
        p = self.pdus[prev[0]]
        if "state_key" in p:
            state[(p["type"], p["state_key"])] = prev[0]
        state_ids = sorted(state.values(), key=self.index.__getitem__)
        if omit_members:
            state_ids = [e for e in state_ids if self.pdus[e]["type"] != "m.room.member"]
        chain = self.auth_chain([*state_ids, *_refs(event.get("auth_events") or [])])
        if omit_members:
            chain = [e for e in chain if e not in set(state_ids)]
        self.append(event_id, event)
        self.members_omitted |= omit_members
        body = (b'{"origin":' + json.dumps(self.room.server_name).encode()
                + b',"state":' + self.enc_list(state_ids) + b',"auth_chain":' + self.enc_list(chain)
                + b',"event":' + json.dumps(event).encode()
                + b',"members_omitted":' + (b"true" if omit_members else b"false")
                + b',"servers_in_room":' + json.dumps([self.room.server_name]).encode() + b"}")
        return body

    async def _send_join_v1(self, request: web.Request) -> web.Response:
        body = await self._join_answer(request, omit_members=False)
        return body if isinstance(body, web.Response) else self._json(b"[200," + body + b"]")

    async def _send_join_v2(self, request: web.Request) -> web.Response:
        omit = request.query.get("omit_members", "false").lower() == "true"
        body = await self._join_answer(request, omit_members=omit)
        return body if isinstance(body, web.Response) else self._json(body)

    def _state_at(self, request: web.Request) -> tuple[list[str], list[str]] | None:
        event_id = request.query.get("event_id", "")
        if not self._room_ok(request) or event_id not in self.index:
            return None
        state_ids = sorted(self.state_before(event_id).values(), key=self.index.__getitem__)
        return state_ids, self.auth_chain(state_ids)

    async def _state(self, request: web.Request) -> web.Response:
        got = self._state_at(request)
        if got is None:
            return self._not_found("event")
        return self._json(b'{"pdus":' + self.enc_list(got[0]) + b',"auth_chain":' + self.enc_list(got[1]) + b"}")

    async def _state_ids(self, request: web.Request) -> web.Response:
        got = self._state_at(request)
        if got is None:
            return self._not_found("event")
        return self._json({"pdu_ids": got[0], "auth_chain_ids": got[1]})

    async def _event(self, request: web.Request) -> web.Response:
        event_id = request.match_info["event_id"]
        if event_id not in self.pdus:
            return self._not_found("event")
        return self._json(b'{"origin":' + json.dumps(self.room.server_name).encode()
                          + b',"origin_server_ts":' + str(int(time.time() * 1000)).encode()
                          + b',"pdus":[' + self.enc(event_id) + b"]}")

    async def _event_auth(self, request: web.Request) -> web.Response:
        event_id = request.match_info["event_id"]
        if not self._room_ok(request) or event_id not in self.pdus:
            return self._not_found("event")
        return self._json(b'{"auth_chain":' + self.enc_list(self.auth_chain([event_id])) + b"}")

    async def _missing(self, request: web.Request) -> web.Response:
        if not self._room_ok(request):
            return self._not_found("room")
        body = await request.json()
        earliest = set(body.get("earliest_events") or [])
        limit = min(int(body.get("limit", 10)), 100)
        min_depth = int(body.get("min_depth", 0))
        out: list[str] = []
        queue = [p for e in body.get("latest_events") or [] if e in self.pdus
                 for p in _refs(self.pdus[e]["prev_events"])]
        seen = set(queue)
        while queue and len(out) < limit:
            eid = queue.pop(0)
            if eid in earliest or eid not in self.pdus or self.pdus[eid]["depth"] < min_depth:
                continue
            out.append(eid)
            for p in _refs(self.pdus[eid]["prev_events"]):
                if p not in seen:
                    seen.add(p)
                    queue.append(p)
        out.sort(key=lambda e: self.pdus[e]["depth"])
        return self._json(b'{"events":' + self.enc_list(out) + b"}")

    async def _backfill(self, request: web.Request) -> web.Response:
        if not self._room_ok(request):
            return self._not_found("room")
        limit = min(int(request.query.get("limit", "10")), 100)
        starts = [e for e in request.query.getall("v", []) if e in self.index]
        out: list[str] = []
        if starts:
            i = max(self.index[e] for e in starts)
            out = self.order[max(0, i - limit + 1):i + 1][::-1]
        return self._json(b'{"origin":' + json.dumps(self.room.server_name).encode()
                          + b',"origin_server_ts":' + str(int(time.time() * 1000)).encode()
                          + b',"pdus":' + self.enc_list(out) + b"}")

    async def _send(self, request: web.Request) -> web.Response:
        body = await request.json()
        results = {}
        for pdu in body.get("pdus") or []:
            if not isinstance(pdu, dict):
                continue
            eid = pdu.get("event_id") if self.rv.event_id_in_event else compute_event_id(pdu, self.rv)
            if pdu.get("room_id") == self.room.room_id:
                self.append(eid, pdu)
            results[eid] = {}
        return self._json({"pdus": results})


# --- the joining servers ------------------------------------------------------------------


@dataclass
class Result:
    label: str
    join_s: float = 0.0
    full_s: float = 0.0
    members: int = 0
    hwm_kb: int = 0
    rss_kb: int = 0
    #: RSS just before the join (the peak's growth is ``hwm_kb - rss_before_kb``).
    rss_before_kb: int = 0
    cpu_s: float = 0.0
    #: The server's processes measured (ours: the server and its check workers).
    processes: int = 1
    partial: bool = False
    requests: dict[str, int] = field(default_factory=dict)


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of a process (``main`` is the event loop's)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if cpu >= 0.05:
            out["main" if task.name == str(pid) else task.name] = round(cpu, 2)
    return out


def process_tree(pid: int) -> list[int]:
    """The server's process and its descendants (our check worker processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def tree_cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for p in pids:
        try:
            total += cpu_seconds(p)
        except OSError:
            pass
    return total


def tree_rss_kb(pids: list[int]) -> tuple[int, int]:
    """Summed (VmRSS, VmHWM) of the processes: the summed peaks are at least the peak of
    the sum, so a server with worker processes is not flattered."""
    rss = hwm = 0
    for p in pids:
        try:
            r, h = rss_kb(p)
        except OSError:
            continue
        rss, hwm = rss + r, hwm + h
    return rss, hwm


async def measure_join(client_url: str, token: str, pid: int, room: SyntheticRoom, expected: int,
                       result: Result) -> None:
    """The join, timed; CPU and memory of the server's process and its children (worker
    processes started with the server: their resting RSS counts in ``rss_before_kb``)."""
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=JOIN_TIMEOUT)
    pids = process_tree(pid)
    result.processes = len(pids)
    cpu0 = tree_cpu_seconds(pids)
    before = [tree_rss_kb([p])[0] for p in pids]
    cpu_before = [tree_cpu_seconds([p]) for p in pids]
    result.rss_before_kb = sum(before)
    series: list[tuple[float, int]] = []

    async def sample() -> None:
        while True:
            series.append((time.monotonic(), rss_kb(pid)[0]))
            await asyncio.sleep(0.05)

    sampler = asyncio.ensure_future(sample()) if os.environ.get("BENCH_RSS_DETAIL") else None
    async with aiohttp.ClientSession(timeout=timeout) as s:
        t0 = time.monotonic()
        async with s.post(f"{client_url}/_matrix/client/v3/join/{quote(room.room_id, safe='')}",
                          params={"server_name": room.server_name}, headers=headers, json={}) as r:
            body = await r.json()
            if r.status != 200:
                raise RuntimeError(f"{result.label}: join failed: {r.status} {body}")
        result.join_s = time.monotonic() - t0
        deadline = t0 + JOIN_TIMEOUT
        while True:
            async with s.get(f"{client_url}/_matrix/client/v3/rooms/{quote(room.room_id, safe='')}/joined_members",
                             headers=headers) as r:
                body = await r.json()
            result.members = len(body.get("joined") or {}) if r.status == 200 else 0
            if result.members >= expected:
                result.full_s = time.monotonic() - t0
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{result.label}: {result.members}/{expected} members after {JOIN_TIMEOUT} s")
            await asyncio.sleep(0.25)
    if sampler is not None:
        sampler.cancel()
        step = max(1, len(series) // 40)
        print(f"  {result.label}: RSS of the server over the join (s: MiB): "
              + " ".join(f"{t - t0:.1f}:{r // 1024}" for t, r in series[::step]), flush=True)
    if set(process_tree(pid)) - set(pids):
        print(f"  {result.label}: processes started during the join are not counted", flush=True)
    result.cpu_s = tree_cpu_seconds(pids) - cpu0
    if os.environ.get("BENCH_THREAD_CPU"):
        print(f"  {result.label}: CPU by thread (s): {_thread_cpu(pid)}", flush=True)
    result.rss_kb, result.hwm_kb = tree_rss_kb(pids)
    if os.environ.get("BENCH_RSS_DETAIL"):
        print(f"  {result.label}: RSS before / peak by process (MiB): "
              f"{[(round(b / 1024), round(rss_kb(p)[1] / 1024)) for p, b in zip(pids, before)]}; CPU by process (s):"
              f" {[round(tree_cpu_seconds([p]) - c, 2) for p, c in zip(pids, cpu_before)]}", flush=True)


async def _start_py_spy(pid: int, engine: str):
    """``BENCH_PY_SPY=prefix``: sample our server with py-spy (wall clock, idle included)
    during the join, into ``prefix-<engine>.txt`` (collapsed stacks)."""
    prefix = os.environ.get("BENCH_PY_SPY")
    if not prefix:
        return None
    spy = await asyncio.create_subprocess_exec(
        str(ROOT / ".cache" / "venv" / "bin" / "py-spy"), "record", "--pid", str(pid), "--threads", "--rate", "200",
        "--format", "raw", "--output", f"{prefix}-{engine}.txt", stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    await asyncio.sleep(1)
    return spy


async def bench_gateway(engine: str, room: SyntheticRoom, ca: TestCA, encoded: dict, workdir: Path,
                        members: int, *, partial: bool) -> Result:
    label = f"gateway ({engine}{', partial' if partial else ''})"
    directory = workdir / f"gateway-{engine}-{'partial' if partial else 'full'}"
    directory.mkdir(parents=True)
    pg_name = None
    if engine == "postgres":
        pg_name, pg_args = await _create_pg_database(c_locale=False)
    fed_port = free_port()
    cert = ca.issue("127.0.0.1", filename=f"gateway-{fed_port}")
    proc = None
    try:
        db = ({"name": "sqlite3", "args": {"database": str(directory / "gateway.db")}} if engine == "sqlite"
              else {"name": "psycopg2", "args": {**pg_args, "cp_min": 2, "cp_max": 10}})
        proc = GatewayProcess(directory, db)
        proc.extra = {
            "server_name": f"127.0.0.1:{fed_port}",
            "listeners": [
                {"port": proc.port, "bind_addresses": ["127.0.0.1"], "resources": [{"names": ["client"]}]},
                {"port": fed_port, "bind_addresses": ["127.0.0.1"], "tls": True,
                 "resources": [{"names": ["federation"]}]},
            ],
            "tls_certificate_path": str(cert.cert_path), "tls_private_key_path": str(cert.key_path),
            "federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
            "experimental_features": {"faster_joins": partial},
        }
        if os.environ.get("BENCH_CHECK_PROCESSES"):  # e.g. 0: checks in threads, as before
            proc.extra["federation_check_processes"] = int(os.environ["BENCH_CHECK_PROCESSES"])
        await proc.start()
        token = await register_synapse_user(proc, "joiner", password="bench-pass")
        # The check worker processes start with the server, in the background: wait for
        # them to be up and settled (their resting memory is not the join's).
        workers = int(os.environ.get("BENCH_CHECK_PROCESSES", min(os.cpu_count() or 1, 4)))
        last = None
        for _ in range(100):
            tree = process_tree(proc.proc.pid)
            now = [rss_kb(p)[0] for p in tree[1:]]
            if len(tree) > workers and now == last:
                break
            last = now
            await asyncio.sleep(0.5)
        result = Result(label)
        spy = await _start_py_spy(proc.proc.pid, engine)
        async with Resident(room, ca, encoded) as resident:
            await measure_join(proc.client_url, token, proc.proc.pid, room, members + 1, result)
            result.requests = dict(resident.requests)
            result.partial = resident.members_omitted
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            await spy.wait()
        return result
    finally:
        if proc is not None:
            await proc.stop()
        if pg_name:
            await _drop_pg_database(pg_name)


async def bench_synapse(engine: str, room: SyntheticRoom, ca: TestCA, encoded: dict, workdir: Path,
                        members: int) -> Result:
    ensure_synapse_installed()
    label = f"synapse ({engine})"
    directory = workdir / f"synapse-{engine}"
    pg_name = None
    if engine == "postgres":
        pg_name, pg_args = await _create_pg_database(c_locale=True)
    server = SynapseServer(directory, ca)
    try:
        extra = {}
        if engine == "postgres":
            extra["database"] = {"name": "psycopg2", "args": {**pg_args, "cp_min": 2, "cp_max": 10}}
        await server.start(extra)
        token = await register_synapse_user(server, "joiner")
        result = Result(label)
        async with Resident(room, ca, encoded) as resident:
            await measure_join(server.client_url, token, server.proc.pid, room, members + 1, result)
            result.requests = dict(resident.requests)
            result.partial = resident.members_omitted
        return result
    finally:
        await server.stop()
        if pg_name:
            await _drop_pg_database(pg_name)


def describe(r: Result) -> str:
    kind = "partial" if r.partial else "full"
    return (f"  {r.label:28} join returns {r.join_s:8.2f} s ({kind:7})  full state {r.full_s:8.2f} s"
            f"  peak RSS {r.hwm_kb / 1024:7.1f} MiB (+{(r.hwm_kb - r.rss_before_kb) / 1024:.1f} during the join,"
            f" {r.processes} process{'es' if r.processes > 1 else ''})"
            f"  CPU {r.cpu_s:7.1f} s  ({r.members} members)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=20000, help="members of the room (N)")
    parser.add_argument("--room-version", default="10")
    parser.add_argument("--engines", default="sqlite,postgres", help="our server's backends")
    parser.add_argument("--synapse-engine", default="sqlite")
    parser.add_argument("--no-synapse", action="store_true")
    parser.add_argument("--no-gateway-partial", dest="gateway_partial", action="store_false",
                        help="only our full-state join (experimental_features.faster_joins: false)")
    parser.add_argument("--requests", action="store_true", help="print the requests each server made")
    args = parser.parse_args()
    print(f"room of {args.members} members, version {args.room_version}", flush=True)
    if get_room_version(args.room_version).room_id_from_create_event:
        parser.error("room versions whose room ID comes from the create event (12+) are not generated yet")
    room = load_room(args.members, args.room_version)
    members = args.members
    print(f"  {len(room.events)} events; resident {room.server_name}", flush=True)
    encoded: dict[str, bytes] = {}
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-join-") as tmp:
        workdir = Path(tmp)
        ca = TestCA(workdir / "ca")
        for engine in [e for e in args.engines.split(",") if e]:
            for partial in [False, True] if args.gateway_partial else [False]:
                r = await bench_gateway(engine, room, ca, encoded, workdir, members, partial=partial)
                results.append(r)
                print(describe(r), flush=True)
        if not args.no_synapse:
            r = await bench_synapse(args.synapse_engine, room, ca, encoded, workdir, members)
            results.append(r)
            print(describe(r), flush=True)
    if args.requests:
        for r in results:
            print(f"  {r.label} asked the resident: {r.requests}")
    print(f"\nJoin of a room with {members} members ({len(room.events)} events in state + auth chain)")
    print(f"  {'server':28} {'join returns':>13} {'full state':>11} {'peak RSS':>11} {'CPU':>8}")
    for r in results:
        print(f"  {r.label:28} {r.join_s:11.2f} s {r.full_s:9.2f} s {r.hwm_kb / 1024:7.0f} MiB {r.cpu_s:6.1f} s")
    syn = next((r for r in results if r.label.startswith("synapse")), None)
    if syn is not None:
        for r in results:
            if r is syn:
                continue
            print(f"  {r.label} vs {syn.label}: to full state {syn.full_s / r.full_s:.1f}x as fast,"
                  f" join returns {syn.join_s / r.join_s:.2f}x as fast, peak RSS {r.hwm_kb / syn.hwm_kb:.2f}x"
                  f" Synapse's, CPU {r.cpu_s / syn.cpu_s:.2f}x Synapse's")


if __name__ == "__main__":
    asyncio.run(main())

"""Sync benchmarks, Gateway against Synapse: an initial /sync of a user in many rooms,
and the latency of incremental /sync while many other clients long-poll, idle.

Each server runs as its own process on loopback (``bench.client_load.running_server``),
on SQLite and on PostgreSQL. The setup, through the client API: a user ("alice") creates
``--rooms`` public rooms, a second user ("bob") joins each and both send a message in
each. Then:

- initial sync: alice's ``/sync`` without a token (a lazy-loading filter with a
  timeline of 10, as Element asks), ``--samples`` times; the median and the largest.
  Each sample's filter differs by a no-op condition, so that Synapse's response cache
  (a repeat of the same request within 2 minutes) does not answer it.
- idle long-pollers: ``--idle`` clients (``--idle-users`` users, each in a room of its
  own, logged in several times) long-poll ``/sync``; bob long-polls too, and alice sends
  ``--messages`` messages to one of their rooms, one at a time, each once bob's previous
  sync returned it: the time from the send to bob's sync answer (median, p99). Printed
  beside it: how many of the idle clients' syncs returned meanwhile (an idle client has
  nothing to be woken for: the fewer, the better).

    .cache/venv/bin/python bench/sync_load.py [--rooms 200] [--idle 1000] [--samples 5]
        [--messages 50] [--engines sqlite,postgres] [--servers gateway,synapse]

Numbers only: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.client_load import pct, rss_kb, running_server  # noqa: E402
from tests.support.synapse import register_synapse_user  # noqa: E402

FILTER = json.dumps({"room": {"timeline": {"limit": 10}, "state": {"lazy_load_members": True}}})
PASSWORD = "bench-pass"
#: Requests the setup makes at the same time.
SETUP_CONCURRENCY = 8


@dataclass
class SyncResult:
    label: str
    initial_ms: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    idle_returns: int = 0
    idle_clients: int = 0
    rss_kb: int = 0


class Api:
    """A few client API calls for one server."""

    def __init__(self, session: aiohttp.ClientSession, url: str):
        self.s, self.url = session, url

    async def call(self, method: str, path: str, token: str, body: dict | None = None,
                   params: dict | None = None) -> dict:
        async with self.s.request(method, f"{self.url}/_matrix/client/v3{path}", json=body, params=params,
                                  headers={"Authorization": f"Bearer {token}"}) as r:
            data = await r.json()
            if r.status != 200:
                raise RuntimeError(f"{method} {path}: {r.status} {data}")
            return data

    async def login(self, localpart: str) -> str:
        async with self.s.post(f"{self.url}/_matrix/client/v3/login", json={
                "type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart},
                "password": PASSWORD}) as r:
            data = await r.json()
            if r.status != 200:
                raise RuntimeError(f"login {localpart}: {r.status} {data}")
            return data["access_token"]

    async def send(self, token: str, room_id: str, body: str, txn: str) -> str:
        return (await self.call("PUT", f"/rooms/{quote(room_id, safe='')}/send/m.room.message/{txn}", token,
                                {"msgtype": "m.text", "body": body}))["event_id"]

    async def sync(self, token: str, since: str | None, timeout_ms: int, flt: str = FILTER) -> dict:
        params = {"filter": flt, "timeout": str(timeout_ms)}
        if since is not None:
            params["since"] = since
        return await self.call("GET", "/sync", token, params=params)


async def limited(n: int, coros) -> list:
    sem = asyncio.Semaphore(n)

    async def one(c):
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def setup_rooms(api: Api, alice: str, bob: str, rooms: int) -> list[str]:
    room_ids = await limited(SETUP_CONCURRENCY, [
        api.call("POST", "/createRoom", alice, {"preset": "public_chat"}) for _ in range(rooms)])
    room_ids = [r["room_id"] for r in room_ids]
    await limited(SETUP_CONCURRENCY, [api.call("POST", f"/join/{quote(r, safe='')}", bob, {}) for r in room_ids])
    await limited(SETUP_CONCURRENCY, [api.send(t, r, f"hello from {who}", f"setup-{who}-{i}")
                                      for i, r in enumerate(room_ids) for who, t in (("a", alice), ("b", bob))])
    return room_ids


def sample_filter(i: int) -> str:
    """``FILTER`` made unique by a no-op condition: Synapse answers a repeat of the same
    request from its response cache (``sync_response_cache_duration``, 2 minutes by
    default), which would time the cache, not the sync."""
    return json.dumps({**json.loads(FILTER), "account_data": {"not_types": [f"bench.sample.{i}"]}})


async def measure_initial(api: Api, token: str, samples: int, result: SyncResult) -> None:
    for i in range(samples):
        t0 = time.monotonic()
        await api.sync(token, None, 0, sample_filter(i))
        result.initial_ms.append((time.monotonic() - t0) * 1000)


async def measure_latency(api: Api, proc, alice: str, bob: str, room_id: str, idle_tokens: list[str],
                          messages: int, result: SyncResult) -> None:
    stop = asyncio.Event()
    returns = 0
    started = 0
    all_started = asyncio.Event()

    async def idle(token: str) -> None:
        nonlocal returns, started
        since = (await api.sync(token, None, 0))["next_batch"]
        started += 1
        if started == len(idle_tokens):
            all_started.set()
        while not stop.is_set():
            body = await api.sync(token, since, 30_000)
            since = body["next_batch"]
            if not stop.is_set():
                returns += 1

    idlers = [asyncio.create_task(idle(t)) for t in idle_tokens]
    if not idle_tokens:
        all_started.set()
    await asyncio.wait_for(all_started.wait(), 600)
    await asyncio.sleep(1)  # every idle client is waiting now
    returns = 0
    since = (await api.sync(bob, None, 0))["next_batch"]
    for i in range(messages):
        key = f"latency-{i}-{time.monotonic_ns()}"
        waiting = asyncio.create_task(api.sync(bob, since, 30_000))
        await asyncio.sleep(0)  # bob's request is on its way before alice sends
        t0 = time.monotonic()
        await api.send(alice, room_id, key, key)
        while True:
            body = await waiting
            since = body["next_batch"]
            events = body.get("rooms", {}).get("join", {}).get(room_id, {}).get("timeline", {}).get("events", [])
            if any(e.get("content", {}).get("body") == key for e in events):
                result.latency_ms.append((time.monotonic() - t0) * 1000)
                break
            waiting = asyncio.create_task(api.sync(bob, since, 30_000))
    result.idle_returns = returns
    result.idle_clients = len(idle_tokens)
    result.rss_kb = rss_kb(proc.proc.pid)[0]
    stop.set()
    for t in idlers:
        t.cancel()
    await asyncio.gather(*idlers, return_exceptions=True)


async def bench_one(server: str, engine: str, args, workdir: Path) -> SyncResult:
    label = f"{server}/{engine}"
    directory = workdir / label.replace("/", "-")
    directory.mkdir(parents=True)
    result = SyncResult(label)
    async with running_server(server, engine, directory) as proc:
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=600)) as s:
            api = Api(s, proc.client_url)
            alice = await register_synapse_user(proc, "alice", password=PASSWORD)
            bob = await register_synapse_user(proc, "bob", password=PASSWORD)
            room_ids = await setup_rooms(api, alice, bob, args.rooms)
            await measure_initial(api, alice, args.samples, result)
            idle_users = min(args.idle_users, args.idle) if args.idle else 0
            tokens: list[str] = []
            for i in range(idle_users):
                first = await register_synapse_user(proc, f"idle{i}", password=PASSWORD)
                await api.call("POST", "/createRoom", first, {"preset": "private_chat"})
                per_user = args.idle // idle_users + (1 if i < args.idle % idle_users else 0)
                tokens.append(first)
                tokens += await limited(SETUP_CONCURRENCY, [api.login(f"idle{i}") for _ in range(per_user - 1)])
            await measure_latency(api, proc, alice, bob, room_ids[0], tokens, args.messages, result)
    return result


def describe(r: SyncResult) -> str:
    return (f"{r.label:18} initial sync median {statistics.median(r.initial_ms):8.1f} ms"
            f" (max {max(r.initial_ms):8.1f})   send -> sync with {r.idle_clients} idle clients:"
            f" p50 {pct(r.latency_ms, 50):7.1f} ms p99 {pct(r.latency_ms, 99):7.1f} ms,"
            f" idle syncs returned {r.idle_returns}, RSS {r.rss_kb / 1024:.0f} MiB")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rooms", type=int, default=200, help="rooms of the user whose initial sync is timed")
    parser.add_argument("--samples", type=int, default=5, help="initial syncs timed")
    parser.add_argument("--idle", type=int, default=1000, help="idle long-polling clients")
    parser.add_argument("--idle-users", type=int, default=50, help="users the idle clients belong to")
    parser.add_argument("--messages", type=int, default=50, help="messages whose delivery is timed")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--servers", default="gateway,synapse")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sync-load-") as tmp:
        for engine in args.engines.split(","):
            for server in args.servers.split(","):
                print(describe(await bench_one(server, engine, args, Path(tmp))), flush=True)


if __name__ == "__main__":
    asyncio.run(main())

"""Client load: N users in M rooms send messages while long-polling /sync.

Runs the same load against Gateway and against Synapse (from .cache/synapse-venv, see
tests/support/synapse.py), each as its own process on loopback, on SQLite and on
PostgreSQL, and prints for each: messages/s, send latency and send-to-sync delivery
latency (p50/p99 over every (message, receiving member) pair), and the server's RSS;
then Gateway/Synapse ratios.

    .cache/venv/bin/python bench/client_load.py [--users 50] [--rooms 5] [--messages 20]
        [--engines sqlite,postgres] [--servers gateway,synapse]

Every user sends ``--messages`` messages one after the other (a closed loop) while its
/sync loop long-polls; throughput is all messages over the time until the last send
returned. Numbers only: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import POSTGRES_DSN, free_port  # noqa: E402
from tests.support.synapse import SynapseServer, register_synapse_user  # noqa: E402
from tests.support.tls import TestCA  # noqa: E402

GATEWAY_PYTHON = ROOT / ".cache" / "venv" / "bin" / "python"
_HIGH = {"per_second": 100000, "burst_count": 100000}
SYNC_FILTER = json.dumps({"room": {"timeline": {"limit": 200}, "state": {"lazy_load_members": True}},
                          "presence": {"not_types": ["*"]}})


# --- servers -------------------------------------------------------------------------


async def _create_pg_database(c_locale: bool) -> tuple[str, dict]:
    name = f"bench_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        extra = " LC_COLLATE 'C' LC_CTYPE 'C'" if c_locale else ""
        await conn.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0{extra}")
    finally:
        await conn.close()
    params = conn._params
    return name, {"user": params.user, "database": name, "host": conn._addr[0], "port": conn._addr[1]}


async def _drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


class GatewayProcess:
    def __init__(self, directory: Path, db: dict):
        self.dir = directory
        self.port = free_port()
        self.client_url = f"http://127.0.0.1:{self.port}"
        self.shared_secret = secrets.token_hex(16)
        self.db = db
        #: Config keys to add or override (e.g. a TLS federation listener).
        self.extra: dict = {}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        config = {
            "server_name": "bench.test",
            "public_baseurl": self.client_url + "/",
            "listeners": [{"port": self.port, "bind_addresses": ["127.0.0.1"], "resources": [{"names": ["client"]}]}],
            "database": self.db,
            "signing_key_path": str(self.dir / "signing.key"),
            "registration_shared_secret": self.shared_secret,
            "bcrypt_rounds": 4,
            "rc_message": _HIGH, "rc_registration": _HIGH, "rc_room_creation": _HIGH,
            "rc_joins": {"local": _HIGH, "remote": _HIGH}, "rc_joins_per_room": _HIGH,
            "rc_login": {"address": _HIGH, "account": _HIGH, "failed_attempts": _HIGH},
        }
        config.update(self.extra)
        path = self.dir / "homeserver.yaml"
        path.write_text(yaml.safe_dump(config))
        # BENCH_PROFILE=file.prof: profile the server process with cProfile.
        profile = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
        entry = [os.environ["BENCH_WRAPPER"]] if os.environ.get("BENCH_WRAPPER") else ["-m", "gateway"]
        self.proc = await asyncio.create_subprocess_exec(
            str(GATEWAY_PYTHON), *profile, *entry, "run", "-c", str(path), cwd=str(ROOT),
            stdout=asyncio.subprocess.DEVNULL, stderr=open(self.dir / "gateway.log", "wb"),
        )
        await wait_healthy(f"{self.client_url}/_matrix/client/versions", lambda: self.proc.returncode is not None,
                           self.dir / "gateway.log")

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def wait_healthy(url: str, exited, log: Path | str, timeout: float = 90) -> None:
    """Poll ``url`` until it answers 200; ``exited()``: whether the server's process
    ended meanwhile (then, or after ``timeout`` seconds, an error naming ``log``)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            if exited():
                raise RuntimeError(f"server exited; see {log}")
            try:
                async with s.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start in {timeout} s; see {log}")
            await asyncio.sleep(0.2)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


# --- the load --------------------------------------------------------------------------


@dataclass
class Result:
    label: str
    messages: int = 0
    seconds: float = 0.0
    send_ms: list[float] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)
    expected_deliveries: int = 0
    #: Syncs whose timeline was ``limited`` (more new events than the filter's limit): the
    #: events left out count as not delivered, as a client that does not page back misses them.
    limited_syncs: int = 0
    rss_kb: int = 0
    hwm_kb: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def run_load(url: str, tokens: list[str], user_ids: list[str], rooms: int, per_user: int,
                   result: Result, *, key_prefix: str = "") -> None:
    """``key_prefix``: of the messages' transaction IDs (a second load by the same users)."""
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as s:
        def headers(i: int) -> dict:
            return {"Authorization": f"Bearer {tokens[i]}"}

        # Rooms: user r creates room r; everyone joins the room (index mod rooms).
        room_ids = []
        for r in range(rooms):
            async with s.post(f"{url}/_matrix/client/v3/createRoom", headers=headers(r),
                              json={"preset": "public_chat"}) as resp:
                body = await resp.json()
                assert resp.status == 200, body
                room_ids.append(body["room_id"])
        room_of = [i % rooms for i in range(len(tokens))]

        async def join(i: int) -> None:
            if i >= rooms:
                async with s.post(f"{url}/_matrix/client/v3/join/{room_ids[room_of[i]]}", headers=headers(i),
                                  json={}) as resp:
                    assert resp.status == 200, await resp.text()

        await asyncio.gather(*(join(i) for i in range(len(tokens))))
        members = [sum(1 for j in range(len(tokens)) if room_of[j] == room_of[i]) for i in range(len(tokens))]
        result.expected_deliveries = sum(per_user * (members[i] - 1) for i in range(len(tokens)))

        sent_at: dict[str, float] = {}
        pending = result.expected_deliveries
        all_delivered = asyncio.Event()
        if pending == 0:
            all_delivered.set()
        stop = asyncio.Event()

        async def sync_loop(i: int) -> None:
            nonlocal pending
            since = None
            params = {"filter": SYNC_FILTER, "timeout": "0"}
            async with s.get(f"{url}/_matrix/client/v3/sync", headers=headers(i), params=params) as resp:
                since = (await resp.json())["next_batch"]
            ready.append(i)
            while not stop.is_set():
                params = {"filter": SYNC_FILTER, "timeout": "30000", "since": since}
                async with s.get(f"{url}/_matrix/client/v3/sync", headers=headers(i), params=params) as resp:
                    body = await resp.json()
                now = time.monotonic()
                since = body["next_batch"]
                for room in body.get("rooms", {}).get("join", {}).values():
                    if room["timeline"].get("limited"):
                        result.limited_syncs += 1
                    for ev in room["timeline"]["events"]:
                        key = ev.get("content", {}).get("bench")
                        if key is None or ev["sender"] == user_ids[i]:
                            continue
                        if key in sent_at:
                            result.delivery_ms.append((now - sent_at[key]) * 1000)
                            pending -= 1
                            if pending <= 0:
                                all_delivered.set()

        async def sender(i: int) -> None:
            room = room_ids[room_of[i]]
            for n in range(per_user):
                key = f"{key_prefix}{i}-{n}"
                t0 = time.monotonic()
                sent_at[key] = t0
                async with s.put(f"{url}/_matrix/client/v3/rooms/{room}/send/m.room.message/{key}",
                                 headers=headers(i), json={"msgtype": "m.text", "body": key, "bench": key}) as resp:
                    assert resp.status == 200, await resp.text()
                result.send_ms.append((time.monotonic() - t0) * 1000)

        ready: list[int] = []
        syncs = [asyncio.create_task(sync_loop(i)) for i in range(len(tokens))]
        while len(ready) < len(tokens):
            await asyncio.sleep(0.05)
        start = time.monotonic()
        await asyncio.gather(*(sender(i) for i in range(len(tokens))))
        result.seconds = time.monotonic() - start
        result.messages = per_user * len(tokens)
        try:
            await asyncio.wait_for(all_delivered.wait(), 60)
        except asyncio.TimeoutError:
            print(f"  {result.label}: {pending} deliveries missing after 60 s", file=sys.stderr)
        stop.set()
        for t in syncs:
            t.cancel()
        await asyncio.gather(*syncs, return_exceptions=True)


@contextlib.asynccontextmanager
async def running_server(server: str, engine: str, directory: Path, synapse_extra: dict | None = None,
                         gateway_extra: dict | None = None):
    """A benchmark's server ("gateway" or "synapse") on ``engine`` as its own process, with
    a fresh PostgreSQL database when asked; stopped and dropped afterwards."""
    pg_name = None
    if engine == "postgres":
        pg_name, pg_args = await _create_pg_database(c_locale=server == "synapse")
    try:
        db_file = directory / ("gateway.db" if server == "gateway" else "homeserver.db")
        db = ({"name": "sqlite3", "args": {"database": str(db_file)}} if engine == "sqlite"
              else {"name": "psycopg2", "args": {**pg_args, "cp_min": 2, "cp_max": 10}})
        if server == "gateway":
            proc = GatewayProcess(directory, db)
            proc.extra = dict(gateway_extra or {})
            await proc.start()
        else:
            proc = SynapseServer(directory, TestCA(directory / "ca"))
            await proc.start(extra={"database": db, "bcrypt_rounds": 4, **(synapse_extra or {})})
        try:
            yield proc
        finally:
            await proc.stop()
    finally:
        if pg_name:
            await _drop_pg_database(pg_name)


async def bench_one(server: str, engine: str, args, workdir: Path) -> Result:
    label = f"{server}/{engine}"
    directory = workdir / label.replace("/", "-")
    directory.mkdir(parents=True)
    async with running_server(server, engine, directory) as proc:
        tokens, user_ids = [], []
        for i in range(args.users):
            tokens.append(await register_synapse_user(proc, f"user{i}", password="bench-pass"))
            user_ids.append(f"@user{i}:" + ("bench.test" if server == "gateway" else proc.server_name))
        result = Result(label)
        cpu0, client0 = cpu_seconds(proc.proc.pid), time.process_time()
        await run_load(proc.client_url, tokens, user_ids, args.rooms, args.messages, result)
        result.server_cpu_s = cpu_seconds(proc.proc.pid) - cpu0
        result.client_cpu_s = time.process_time() - client0
        result.rss_kb, result.hwm_kb = rss_kb(proc.proc.pid)
        return result


def describe(r: Result) -> str:
    return (f"{r.label:18} {r.rate:8.1f} msg/s  send p50 {pct(r.send_ms, 50):7.1f} ms p99 {pct(r.send_ms, 99):7.1f} ms"
            f"  delivery p50 {pct(r.delivery_ms, 50):7.1f} ms p99 {pct(r.delivery_ms, 99):7.1f} ms"
            f"  ({len(r.delivery_ms)}/{r.expected_deliveries} delivered, {r.limited_syncs} limited syncs)"
            f"  RSS {r.rss_kb / 1024:6.1f} MiB (peak {r.hwm_kb / 1024:.1f})"
            f"  CPU server {r.server_cpu_s:.1f} s ({1000 * r.server_cpu_s / max(1, r.messages):.1f} ms/msg),"
            f" load generator {r.client_cpu_s:.1f} s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--rooms", type=int, default=5)
    parser.add_argument("--messages", type=int, default=20, help="messages per user")
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--servers", default="gateway,synapse")
    args = parser.parse_args()
    results: dict[tuple[str, str], Result] = {}
    with tempfile.TemporaryDirectory(prefix="client-load-") as tmp:
        for engine in args.engines.split(","):
            for server in args.servers.split(","):
                r = await bench_one(server, engine, args, Path(tmp))
                results[(server, engine)] = r
                print(describe(r), flush=True)
    print(f"\n{args.users} users, {args.rooms} rooms, {args.messages} messages each")
    for engine in args.engines.split(","):
        g, s = results.get(("gateway", engine)), results.get(("synapse", engine))
        if g and s and s.rate and g.delivery_ms and s.delivery_ms:
            print(f"{engine:9} gateway/synapse: throughput x{g.rate / s.rate:.2f}, "
                  f"send p99 x{pct(g.send_ms, 99) / pct(s.send_ms, 99):.2f}, "
                  f"delivery p50 x{pct(g.delivery_ms, 50) / pct(s.delivery_ms, 50):.2f}, "
                  f"delivery p99 x{pct(g.delivery_ms, 99) / pct(s.delivery_ms, 99):.2f}, "
                  f"RSS x{g.rss_kb / s.rss_kb:.2f}, server CPU per message x{g.server_cpu_s / s.server_cpu_s:.2f}"
                  "  (latency, RSS and CPU ratios: lower is better)")


if __name__ == "__main__":
    asyncio.run(main())

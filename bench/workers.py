"""Workers (issue 18): client load through nginx on 1, 2 and 4 processes, ours and
Synapse's, and federation ingest over one process or two inbound federation workers.

``client`` (for each server in ``--servers`` and each process count): a fresh PostgreSQL
database, Redis, a main process and ``n - 1`` generic workers with a ``client`` listener,
behind docs/workers.md's nginx example (one user's /sync always on one worker; sends,
joins and registration on main, the events writer; with one process everything goes to
main). Synapse (.cache/synapse-venv, bench/synapse_workers.py) runs the same layout
behind the same nginx. Then bench/client_load.py's load through nginx: ``--users`` users
in ``--rooms`` rooms, each sending ``--messages`` messages one after the other while every
user long-polls /sync, after a warm-up of ``--warmup`` messages each in other rooms (each
process fills its own caches).

``federation`` (for each layout in ``--federation-workers``; 0: the main process serves
federation itself): our cluster's server name is nginx's TLS port, which sends
``/_matrix/(federation|key)/`` round-robin to the inbound federation workers' listeners,
as docs/workers.md describes. ``--origins`` synthetic remote servers
(tests/support/fake_remote.py, in this process) each join a room of their own, then all
send at once, each its ``--pdus`` message PDUs in transactions of 50, one transaction
after the other (as a real sender does to one destination). One room per origin: a room's
events are written one batch at a time under its lock, so the spread over workers needs
several rooms.

``gateway+persister`` (a server of the client measure): main, an event persister (the
events stream's writer, docs/workers.md) and ``n - 2`` /sync workers, so that the CPU of
building an event (main, which serves the send) and of storing it (the persister) are
counted apart.

``commit``: the serial tail of one stream's writers, measured on PostgreSQL alone: one
connection taking a position from a counter row, writing a row and committing, again
and again (milliseconds per transaction), and a bare round trip.

Printed per run: the rate (messages/s or PDUs/s), latencies (client), the CPU seconds of
each server process (from /proc), of the PostgreSQL backends serving the run's database,
of nginx and of the load generator, the CPU per message (or PDU) per process, and the
load average (1 minute) before and after.

    .cache/venv/bin/python bench/workers.py [--measures client,federation,commit]
        [--servers gateway,synapse,gateway+persister] [--processes 1,2,4] [--users 32] [--rooms 8]
        [--messages 20] [--warmup 5] [--federation-workers 0,2] [--origins 4]
        [--pdus 500] [--commits 500] [--runs 1]

Numbers only: nothing here asserts a timing. On a machine with fewer cores than processes
the processes share the cores with nginx, PostgreSQL, Redis and the load generator: read
the load average with the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.client_load import Result, _create_pg_database, _drop_pg_database, cpu_seconds, pct, run_load  # noqa: E402
from bench.federation_ingest import BATCH, build_messages, ingest  # noqa: E402
from bench.synapse_workers import SynapseCluster  # noqa: E402
from federation.events import PDU  # noqa: E402
from federation.room_versions import get_room_version  # noqa: E402
from tests.conftest import POSTGRES_DSN, create_postgres_database, drop_postgres_database, free_port  # noqa: E402
from tests.support.fake_remote import FakeRemote, RoomView  # noqa: E402
from tests.support.tls import TestCA  # noqa: E402
from tests.support.worker_cluster import (Worker, WorkerCluster, documented_nginx, replace_documented,  # noqa: E402
                                          run_nginx)

ROOM_VERSION = "10"


@dataclass
class Cpu:
    """CPU seconds over one measured stretch, and the load average around it."""

    per_process_s: dict[str, float] = field(default_factory=dict)
    postgres_s: float = 0.0
    nginx_s: float = 0.0
    load_generator_s: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0

    @property
    def server_s(self) -> float:
        return sum(self.per_process_s.values())


@dataclass
class Run:
    server: str
    processes: int
    result: Result
    cpu: Cpu = field(default_factory=Cpu)

    @property
    def cpu_ms_per_message(self) -> float:
        return 1000 * self.cpu.server_s / max(1, self.result.messages)


@dataclass
class FederationRun:
    #: Inbound federation workers (0: the main process serves federation).
    workers: int
    pdus: int = 0
    seconds: float = 0.0
    cpu: Cpu = field(default_factory=Cpu)

    @property
    def rate(self) -> float:
        return self.pdus / self.seconds if self.seconds else 0.0


def load_average() -> float:
    return os.getloadavg()[0]


def nginx_for(main_port: int, reader_ports: list[int]) -> str:
    """docs/workers.md's nginx with its ports, the client workers in the readers' upstream
    (main when there is none), media on main."""
    server = documented_nginx()
    server = replace_documented(server, "server 127.0.0.1:8008;", f"server 127.0.0.1:{main_port};")
    server = replace_documented(server, "server 127.0.0.1:8083;",
                                "\n    ".join(f"server 127.0.0.1:{p};" for p in reader_ports or [main_port]))
    return replace_documented(server, "server 127.0.0.1:8085;", f"server 127.0.0.1:{main_port};")


def federation_nginx(reader_ports: list[int], cert_path: Path, key_path: Path) -> str:
    """docs/workers.md's federation ``server`` block: TLS on the server name's port,
    federation and key requests round-robin to the federation listeners."""
    servers = "\n    ".join(f"server 127.0.0.1:{p};" for p in reader_ports)
    return f"""upstream gateway_federation_readers {{
    {servers}
}}
server {{
    listen 8080 ssl;
    ssl_certificate {cert_path};
    ssl_certificate_key {key_path};
    location ~ ^/_matrix/(federation|key)/ {{
        proxy_pass http://gateway_federation_readers;   # the request URI as sent: signatures cover it
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header Host $host;
        proxy_http_version 1.1;
        client_max_body_size 50M;
    }}
}}
"""


def nginx_pids(directory: Path) -> list[int]:
    """nginx's master and worker processes (children of the master)."""
    master = int((directory / "nginx.pid").read_text().strip())
    out = [master]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == master:
                out.append(int(entry))
    return out


async def postgres_cpu(database: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend connected to ``database``."""
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database)
    finally:
        await conn.close()
    out = {}
    for row in rows:
        with contextlib.suppress(OSError):
            out[row["pid"]] = cpu_seconds(row["pid"])
    return out


def _safe_cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


@contextlib.asynccontextmanager
async def measured(cpu: Cpu, pids: dict[str, int], nginx_dir: Path, database: str):
    """Fill ``cpu`` with what the processes used while the block ran."""
    before = {name: _safe_cpu(pid) for name, pid in pids.items()}
    ngx = nginx_pids(nginx_dir)
    nginx_before = sum(_safe_cpu(p) for p in ngx)
    pg_before = await postgres_cpu(database)
    client_before = time.process_time()
    cpu.load_before = load_average()
    yield cpu
    cpu.load_after = load_average()
    cpu.load_generator_s = time.process_time() - client_before
    pg_after = await postgres_cpu(database)
    # A backend that started during the run counts from zero (its connection setup too).
    cpu.postgres_s = sum(s - pg_before.get(pid, 0.0) for pid, s in pg_after.items())
    cpu.per_process_s = {name: _safe_cpu(pid) - before[name] for name, pid in pids.items()}
    cpu.nginx_s = sum(_safe_cpu(p) for p in ngx) - nginx_before


async def register(session: aiohttp.ClientSession, url: str, name: str) -> tuple[str, str]:
    async with session.post(f"{url}/_matrix/client/v3/register", json={
            "username": name, "password": "bench-pass", "auth": {"type": "m.login.dummy"}}) as r:
        body = await r.json()
        assert r.status == 200, body
    return body["access_token"], body["user_id"]


# --- client load -------------------------------------------------------------------------


async def client_load(run: Run, args, url: str, pids: dict[str, int], nginx_dir: Path, database: str) -> Run:
    async with aiohttp.ClientSession() as session:
        users = [await register(session, url, f"user{i}") for i in range(args.users)]
    tokens, user_ids = [u[0] for u in users], [u[1] for u in users]
    if args.warmup:  # every process's caches and prepared statements, not measured
        await run_load(url, tokens, user_ids, args.rooms, args.warmup, Result("warm-up"), key_prefix="w")
    async with measured(run.cpu, pids, nginx_dir, database):
        await run_load(url, tokens, user_ids, args.rooms, args.messages, run.result)
    run.result.client_cpu_s = run.cpu.load_generator_s
    return run


def _label(server: str, n: int) -> str:
    return f"{server}, {n} process{'es' if n > 1 else ''}"


async def bench_gateway(n: int, args, workdir: Path, *, persister: bool = False) -> Run:
    """``persister``: one of the ``n - 1`` workers is the events stream's writer (an event
    persister, ``persister1``, no client listener) instead of main; the others serve /sync."""
    server = "gateway+persister" if persister else "gateway"
    directory = workdir / f"{server}-p{n}-{time.monotonic_ns()}"
    directory.mkdir(parents=True)
    db_name, db_args = await create_postgres_database()
    workers = [Worker(f"client{i}", ["client"]) for i in range(1, n - int(persister))]
    shared: dict = {"database": {"name": "psycopg2", "args": {**db_args, "cp_min": 2, "cp_max": 10}}}
    if persister:
        workers.append(Worker("persister1", [], replication_listener=True))
        shared.update({"stream_writers": {"events": ["persister1"]}, "worker_replication_secret": "bench"})
    cluster = WorkerCluster(directory, db_args, workers, shared)
    try:
        await asyncio.to_thread(cluster.start)
        nginx_dir = directory / "nginx"
        nginx_dir.mkdir()
        readers = [w.port for w in workers if "client" in w.resources]
        with run_nginx(nginx_dir, nginx_for(cluster.main_port, readers)) as url:
            return await client_load(Run(server, n, Result(_label(server, n))), args, url, cluster.pids(),
                                     nginx_dir, db_name)
    finally:
        await asyncio.to_thread(cluster.stop)
        await drop_postgres_database(db_name)


async def bench_synapse(n: int, args, workdir: Path) -> Run:
    directory = workdir / f"synapse-p{n}-{time.monotonic_ns()}"
    directory.mkdir(parents=True)
    db_name, db_args = await _create_pg_database(c_locale=True)
    cluster = SynapseCluster(directory, db_args, [f"client{i}" for i in range(1, n)])
    try:
        await cluster.start()
        nginx_dir = directory / "nginx"
        nginx_dir.mkdir()
        with run_nginx(nginx_dir, nginx_for(cluster.main_port, list(cluster.worker_ports.values()))) as url:
            return await client_load(Run("synapse", n, Result(_label("synapse", n))), args, url, cluster.pids(),
                                     nginx_dir, db_name)
    finally:
        await asyncio.to_thread(cluster.stop)
        await _drop_pg_database(db_name)


# --- the serial tail of a stream -----------------------------------------------------------


async def commit_probe(count: int) -> tuple[float, float]:
    """Milliseconds per round trip (``SELECT 1``), and per transaction that takes a stream
    position (the counter row's UPDATE ... RETURNING), writes one row and commits, one
    after the other on one connection: the floor of what the writers of one stream pay
    one at a time (docs/workers.md, "Positions stay ordered"), PostgreSQL's commit (WAL
    flush) included. A stored event batch holds the counter a few more round trips (the
    events row, relations, the room's head) before its commit."""
    name, args = await create_postgres_database()
    try:
        conn = await asyncpg.connect(host=args["host"], port=args["port"], user=args["user"],
                                     database=args["database"])
        try:
            await conn.execute("CREATE TABLE positions (stream TEXT PRIMARY KEY, position BIGINT NOT NULL);"
                               "CREATE TABLE rows (position BIGINT PRIMARY KEY, body TEXT NOT NULL);"
                               "INSERT INTO positions VALUES ('events', 0)")
            start = time.perf_counter()
            for _ in range(count):
                await conn.fetchval("SELECT 1")
            round_trip = 1000 * (time.perf_counter() - start) / count
            start = time.perf_counter()
            for _ in range(count):
                async with conn.transaction():
                    pos = await conn.fetchval(
                        "UPDATE positions SET position = position + 1 WHERE stream = 'events' RETURNING position")
                    await conn.execute("INSERT INTO rows VALUES ($1, $2)", pos, "x" * 200)
            return round_trip, 1000 * (time.perf_counter() - start) / count
        finally:
            await conn.close()
    finally:
        await drop_postgres_database(name)


# --- federation ingest ------------------------------------------------------------------------


async def join_remote(remote: FakeRemote, server_name: str, room_id: str) -> RoomView:
    """The remote's user joins ``room_id`` over federation (through nginx); the remote's
    view of the room from the send_join answer."""
    rv = get_room_version(ROOM_VERSION)
    join, answer = await remote.join_via(server_name, room_id, f"@bob:{remote.server_name}")
    view = RoomView(remote, rv, room_id)
    view.learn(sorted((PDU.from_pdu_json(p, rv) for p in answer["state"]), key=lambda p: p.depth))
    view.learn([PDU.from_pdu_json(join, rv)])
    view.depth = join["depth"]
    return view


async def bench_federation(layout: int, args, workdir: Path, ca: TestCA) -> FederationRun:
    directory = workdir / f"federation-w{layout}-{time.monotonic_ns()}"
    directory.mkdir(parents=True)
    fed_port = free_port()
    server_name = f"127.0.0.1:{fed_port}"
    cert = ca.issue("127.0.0.1", filename=f"cluster-{fed_port}")
    db_name, db_args = await create_postgres_database()
    workers = [Worker(f"federation{i}", ["federation"]) for i in range(1, layout + 1)]
    cluster = WorkerCluster(directory, db_args, workers, {
        "server_name": server_name,
        "database": {"name": "psycopg2", "args": {**db_args, "cp_min": 2, "cp_max": 10}},
        "federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
    }, main_resources=("client", "metrics") if workers else ("client", "federation", "metrics"))
    run = FederationRun(layout)
    try:
        await asyncio.to_thread(cluster.start)
        nginx_dir = directory / "nginx"
        nginx_dir.mkdir()
        readers = [w.port for w in workers] or [cluster.main_port]
        with run_nginx(nginx_dir, federation_nginx(readers, cert.cert_path, cert.key_path), port=fed_port):
            async with aiohttp.ClientSession() as session, contextlib.AsyncExitStack() as stack:
                token, _ = await register(session, cluster.main_url, "alice")
                remotes = [await stack.enter_async_context(FakeRemote(ca)) for _ in range(args.origins)]
                rooms = []
                for _ in remotes:
                    async with session.post(f"{cluster.main_url}/_matrix/client/v3/createRoom",
                                            headers={"Authorization": f"Bearer {token}"},
                                            json={"preset": "public_chat", "room_version": ROOM_VERSION}) as r:
                        body = await r.json()
                        assert r.status == 200, body
                        rooms.append(body["room_id"])
                views = [await join_remote(remote, server_name, room) for remote, room in zip(remotes, rooms)]
                # Warm-up, not measured: every origin's keys fetched, each worker's caches.
                await asyncio.gather(*(ingest(v.remote, server_name, build_messages(v, f"@bob:{v.remote.server_name}",
                                                                                   args.federation_warmup * BATCH))
                                       for v in views))
                batches = [build_messages(v, f"@bob:{v.remote.server_name}", args.pdus) for v in views]
                async with measured(run.cpu, cluster.pids(), nginx_dir, db_name):
                    start = time.monotonic()
                    await asyncio.gather(*(ingest(v.remote, server_name, pdus) for v, pdus in zip(views, batches)))
                    run.seconds = time.monotonic() - start
                run.pdus = sum(len(b) for b in batches)
                for room, pdus in zip(rooms, batches):  # every room's last PDU is its last event
                    async with session.get(f"{cluster.main_url}/_matrix/client/v3/rooms/{quote(room)}/messages",
                                           params={"dir": "b", "limit": "1"},
                                           headers={"Authorization": f"Bearer {token}"}) as r:
                        last = (await r.json())["chunk"][0]["event_id"]
                    assert last == RoomView.event_id(pdus[-1], get_room_version(ROOM_VERSION)), room
        return run
    finally:
        await asyncio.to_thread(cluster.stop)
        await drop_postgres_database(db_name)


# --- tables -------------------------------------------------------------------------------


def med(values) -> float:
    return statistics.median(values)


def _load_range(cpus: list[Cpu]) -> str:
    return (f"{min(min(c.load_before, c.load_after) for c in cpus):.1f}–"
            f"{max(max(c.load_before, c.load_after) for c in cpus):.1f}")


def _per_process(cpu: Cpu, count: int, digits: int = 1) -> str:
    """Each process's CPU in ms per message (or PDU)."""
    return ", ".join(f"{name} {1000 * s / max(1, count):.{digits}f}" for name, s in cpu.per_process_s.items())


def client_table(runs: dict[tuple[str, int], list[Run]]) -> str:
    """One line per (server, process count), each value the median over its runs; the CPU
    split of the median run."""
    lines = ["| server | processes | msg/s | vs 1 | send p50 / p99 ms | send→/sync p50 / p99 ms | delivered "
             "| CPU ms/msg: server (per process) | PostgreSQL | nginx | load gen | load avg |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (server, n), rs in sorted(runs.items()):
        if not rs:
            continue
        family = server.split("+")[0]  # gateway+persister: against gateway's fewest processes
        base_runs = runs.get((family, min((k for s, k in runs if s == family), default=n)))
        base = med([r.result.rate for r in base_runs]) if base_runs else 0
        rate = med([r.result.rate for r in rs])
        mid = sorted(rs, key=lambda r: r.result.rate)[len(rs) // 2]
        msgs = max(1, mid.result.messages)
        lines.append(
            f"| {server} | {n} | {rate:.1f} | {rate / base if base else 0:.2f}x "
            f"| {med([pct(r.result.send_ms, 50) for r in rs]):.0f} / "
            f"{med([pct(r.result.send_ms, 99) for r in rs]):.0f} "
            f"| {med([pct(r.result.delivery_ms, 50) for r in rs]):.0f} / "
            f"{med([pct(r.result.delivery_ms, 99) for r in rs]):.0f} "
            f"| {sum(len(r.result.delivery_ms) for r in rs)}/{sum(r.result.expected_deliveries for r in rs)} "
            f"| {med([r.cpu_ms_per_message for r in rs]):.1f} ({_per_process(mid.cpu, msgs)}) "
            f"| {1000 * mid.cpu.postgres_s / msgs:.1f} | {1000 * mid.cpu.nginx_s / msgs:.1f} "
            f"| {1000 * mid.cpu.load_generator_s / msgs:.1f} | {_load_range([r.cpu for r in rs])} |")
    return "\n".join(lines)


def federation_table(runs: dict[int, list[FederationRun]]) -> str:
    lines = ["| inbound federation | PDU/s | vs main alone | CPU ms/PDU: Gateway (per process) | PostgreSQL | nginx "
             "| load gen | load avg |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    base_runs = runs.get(min(runs)) if runs else None
    base = med([r.rate for r in base_runs]) if base_runs else 0
    for layout, rs in sorted(runs.items()):
        if not rs:
            continue
        rate = med([r.rate for r in rs])
        mid = sorted(rs, key=lambda r: r.rate)[len(rs) // 2]
        pdus = max(1, mid.pdus)
        what = "main process" if layout == 0 else f"{layout} federation worker{'s' if layout > 1 else ''} (+ main)"
        lines.append(
            f"| {what} | {rate:.0f} | {rate / base if base else 0:.2f}x "
            f"| {med([1000 * r.cpu.server_s / max(1, r.pdus) for r in rs]):.2f} ({_per_process(mid.cpu, pdus, 2)}) "
            f"| {1000 * mid.cpu.postgres_s / pdus:.2f} | {1000 * mid.cpu.nginx_s / pdus:.2f} "
            f"| {1000 * mid.cpu.load_generator_s / pdus:.2f} | {_load_range([r.cpu for r in rs])} |")
    return "\n".join(lines)


def print_tables(client_runs: dict, fed_runs: dict) -> None:
    if client_runs:
        print(client_table(client_runs))
    if fed_runs:
        print(federation_table(fed_runs))
    sys.stdout.flush()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--measures", default="client,federation,commit", help="client, federation, commit")
    parser.add_argument("--servers", default="gateway,synapse",
                        help="servers of the client measure: gateway, synapse, gateway+persister (main, an "
                             "event persister and n - 2 /sync workers; from 3 processes)")
    parser.add_argument("--processes", default="1,2,4", help="process counts (main + client workers)")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--rooms", type=int, default=8)
    parser.add_argument("--messages", type=int, default=20, help="messages per user")
    parser.add_argument("--runs", type=int, default=1, help="runs of each configuration (medians are printed)")
    parser.add_argument("--warmup", type=int, default=5,
                        help="messages per user sent first, in other rooms, and not measured (0: none)")
    parser.add_argument("--federation-workers", default="0,2",
                        help="inbound federation workers of each layout (0: main serves federation)")
    parser.add_argument("--origins", type=int, default=4, help="remote servers, each sending into a room of its own")
    parser.add_argument("--pdus", type=int, default=500, help="message PDUs each origin sends")
    parser.add_argument("--federation-warmup", type=int, default=2,
                        help="transactions of 50 each origin sends first, not measured")
    parser.add_argument("--commits", type=int, default=500, help="transactions of the commit measure")


async def main(argv: list[str] | None = None) -> tuple[dict, dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    measures = set(args.measures.split(","))
    counts = [int(c) for c in args.processes.split(",")] if "client" in measures else []
    servers = [s for s in args.servers.split(",") if s]
    layouts = [int(c) for c in args.federation_workers.split(",")] if "federation" in measures else []
    client_runs: dict[tuple[str, int], list[Run]] = {
        (s, n): [] for s in servers for n in counts if s != "gateway+persister" or n >= 3}
    fed_runs: dict[int, list[FederationRun]] = {n: [] for n in layouts}
    print(f"{os.cpu_count()} cores; client: {args.users} users in {args.rooms} rooms, {args.messages} messages "
          f"each; federation: {args.origins} origins x {args.pdus} PDUs; load average {load_average():.2f}",
          flush=True)
    bench = {"gateway": bench_gateway, "synapse": bench_synapse,
             "gateway+persister": lambda n, a, w: bench_gateway(n, a, w, persister=True)}
    if "commit" in measures:
        before = load_average()
        round_trip, probe = await commit_probe(args.commits)
        print(f"PostgreSQL round trip {round_trip:.2f} ms; stream position + row + commit, one after the other: "
              f"{probe:.2f} ms each ({1000 / probe:.0f}/s; load {before:.1f}→{load_average():.1f})", flush=True)
    with tempfile.TemporaryDirectory(prefix="workers-bench-") as tmp:
        ca = TestCA(Path(tmp) / "ca")
        for i in range(args.runs):
            for n in counts:  # interleaved, so that a busy minute does not fall on one configuration only
                for server in servers:
                    if server == "gateway+persister" and n < 3:
                        continue  # main, a persister and at least one /sync worker
                    run = await bench[server](n, args, Path(tmp))
                    client_runs[(server, n)].append(run)
                    r = run.result
                    print(f"run {i + 1}, {r.label}: {r.rate:.1f} msg/s, delivery p50 {pct(r.delivery_ms, 50):.0f} ms "
                          f"p99 {pct(r.delivery_ms, 99):.0f} ms, server CPU {run.cpu.server_s:.1f} s "
                          f"({run.cpu_ms_per_message:.1f} ms/msg; {_per_process(run.cpu, r.messages)}), "
                          f"PostgreSQL {run.cpu.postgres_s:.1f} s, load {run.cpu.load_before:.1f}"
                          f"→{run.cpu.load_after:.1f}", flush=True)
            for layout in layouts:
                fr = await bench_federation(layout, args, Path(tmp), ca)
                fed_runs[layout].append(fr)
                print(f"run {i + 1}, federation over {layout or 'main'}: {fr.rate:.0f} PDU/s, Gateway CPU "
                      f"{fr.cpu.server_s:.1f} s ({_per_process(fr.cpu, fr.pdus, 2)} ms/PDU), PostgreSQL "
                      f"{fr.cpu.postgres_s:.1f} s, load {fr.cpu.load_before:.1f}→{fr.cpu.load_after:.1f}", flush=True)
            if i + 1 < args.runs:  # the tables so far: a long series cut short still has them
                print(f"after {i + 1} run(s):", flush=True)
                print_tables(client_runs, fed_runs)
    print_tables(client_runs, fed_runs)
    return client_runs, fed_runs


if __name__ == "__main__":
    asyncio.run(main())

"""Workers (issue 18): client load through nginx on 1, 2 and 4 Gateway processes.

For each process count, a fresh PostgreSQL database, Redis, a main process and ``n - 1``
generic workers with a ``client`` listener, behind docs/workers.md's nginx example (one
user's /sync always on one worker; sends, joins and registration on main, the events
writer; with one process everything goes to main). Then bench/client_load.py's load
through nginx: ``--users`` users in ``--rooms`` rooms, each sending ``--messages``
messages one after the other while every user long-polls /sync, after a warm-up of
``--warmup`` messages each in other rooms (each process fills its own caches).

Printed per process count: messages/s, send latency and send-to-/sync delivery latency
(p50/p99 over every (message, receiving member) pair), the CPU seconds of the Gateway
processes (summed from /proc), nginx's and the load generator's, CPU per message, the
throughput relative to one process, and the load average (1 minute) before and after.

    .cache/venv/bin/python bench/workers.py [--processes 1,2,4] [--users 32] [--rooms 8]
        [--messages 20] [--warmup 5] [--runs 1]

Numbers only: nothing here asserts a timing. On a machine with fewer cores than processes
the processes share the cores with nginx, PostgreSQL, Redis and the load generator: read
the load average with the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.client_load import Result, cpu_seconds, pct, run_load  # noqa: E402
from tests.conftest import create_postgres_database, drop_postgres_database  # noqa: E402
from tests.support.worker_cluster import (Worker, WorkerCluster, documented_nginx, replace_documented,  # noqa: E402
                                          run_nginx)


@dataclass
class Run:
    processes: int
    result: Result
    gateway_cpu_s: float = 0.0
    nginx_cpu_s: float = 0.0
    per_process_cpu_s: dict[str, float] = field(default_factory=dict)
    load_before: float = 0.0
    load_after: float = 0.0

    @property
    def cpu_ms_per_message(self) -> float:
        return 1000 * self.gateway_cpu_s / max(1, self.result.messages)


def load_average() -> float:
    return os.getloadavg()[0]


def nginx_for(cluster: WorkerCluster) -> str:
    """docs/workers.md's nginx with its ports, the client workers in the readers' upstream
    (main when there is none), media on main."""
    server = documented_nginx()
    server = replace_documented(server, "server 127.0.0.1:8008;", f"server 127.0.0.1:{cluster.main_port};")
    readers = [w.port for w in cluster.workers.values()] or [cluster.main_port]
    server = replace_documented(server, "server 127.0.0.1:8083;",
                                "\n    ".join(f"server 127.0.0.1:{p};" for p in readers))
    return replace_documented(server, "server 127.0.0.1:8085;", f"server 127.0.0.1:{cluster.main_port};")


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


async def register(session: aiohttp.ClientSession, url: str, name: str) -> tuple[str, str]:
    async with session.post(f"{url}/_matrix/client/v3/register", json={
            "username": name, "password": "bench-pass", "auth": {"type": "m.login.dummy"}}) as r:
        body = await r.json()
        assert r.status == 200, body
    return body["access_token"], body["user_id"]


async def bench_processes(n: int, args, workdir: Path) -> Run:
    directory = workdir / f"p{n}-{time.monotonic_ns()}"
    directory.mkdir(parents=True)
    db_name, db_args = await create_postgres_database()
    workers = [Worker(f"client{i}", ["client"]) for i in range(1, n)]
    cluster = WorkerCluster(directory, db_args, workers, {"database": {
        "name": "psycopg2", "args": {**db_args, "cp_min": 2, "cp_max": 10}}})
    try:
        await asyncio.to_thread(cluster.start)
        nginx_dir = directory / "nginx"
        nginx_dir.mkdir()
        with run_nginx(nginx_dir, nginx_for(cluster)) as url:
            async with aiohttp.ClientSession() as session:
                users = [await register(session, url, f"user{i}") for i in range(args.users)]
            tokens, user_ids = [u[0] for u in users], [u[1] for u in users]
            if args.warmup:  # every process's caches and prepared statements, not measured
                await run_load(url, tokens, user_ids, args.rooms, args.warmup, Result("warm-up"), key_prefix="w")
            run = Run(n, Result(f"{n} process{'es' if n > 1 else ''}"))
            pids = cluster.pids()
            ngx = nginx_pids(nginx_dir)
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            nginx_before = sum(cpu_seconds(p) for p in ngx)
            client_before = time.process_time()
            run.load_before = load_average()
            await run_load(url, tokens, user_ids, args.rooms, args.messages, run.result)
            run.load_after = load_average()
            run.result.client_cpu_s = time.process_time() - client_before
            run.per_process_cpu_s = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
            run.gateway_cpu_s = sum(run.per_process_cpu_s.values())
            run.nginx_cpu_s = sum(cpu_seconds(p) for p in ngx) - nginx_before
            return run
    finally:
        await asyncio.to_thread(cluster.stop)
        await drop_postgres_database(db_name)


def table(runs: dict[int, list[Run]]) -> str:
    """One line per process count, each value the median over its runs."""
    def med(values) -> float:
        return statistics.median(values)

    base = med([r.result.rate for r in runs[min(runs)]])
    lines = ["| processes | msg/s | vs 1 | send p50 / p99 ms | send→/sync p50 / p99 ms | delivered "
             "| Gateway CPU s (per process) | CPU ms/msg | nginx CPU s | load gen CPU s | load avg |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for n, rs in sorted(runs.items()):
        rate = med([r.result.rate for r in rs])
        mid = sorted(rs, key=lambda r: r.result.rate)[len(rs) // 2]
        per_process = ", ".join(f"{name} {s:.1f}" for name, s in mid.per_process_cpu_s.items())
        lines.append(
            f"| {n} | {rate:.1f} | {rate / base if base else 0:.2f}x "
            f"| {med([pct(r.result.send_ms, 50) for r in rs]):.0f} / {med([pct(r.result.send_ms, 99) for r in rs]):.0f} "
            f"| {med([pct(r.result.delivery_ms, 50) for r in rs]):.0f} / "
            f"{med([pct(r.result.delivery_ms, 99) for r in rs]):.0f} "
            f"| {sum(len(r.result.delivery_ms) for r in rs)}/{sum(r.result.expected_deliveries for r in rs)} "
            f"| {med([r.gateway_cpu_s for r in rs]):.1f} ({per_process}) "
            f"| {med([r.cpu_ms_per_message for r in rs]):.1f} | {med([r.nginx_cpu_s for r in rs]):.1f} "
            f"| {med([r.result.client_cpu_s for r in rs]):.1f} "
            f"| {min(min(r.load_before, r.load_after) for r in rs):.1f}–"
            f"{max(max(r.load_before, r.load_after) for r in rs):.1f} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--processes", default="1,2,4", help="process counts (main + client workers)")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--rooms", type=int, default=8)
    parser.add_argument("--messages", type=int, default=20, help="messages per user")
    parser.add_argument("--runs", type=int, default=1, help="runs per process count (medians are printed)")
    parser.add_argument("--warmup", type=int, default=5,
                        help="messages per user sent first, in other rooms, and not measured (0: none)")


async def main(argv: list[str] | None = None) -> dict[int, list[Run]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.processes.split(",")]
    runs: dict[int, list[Run]] = {n: [] for n in counts}
    print(f"{os.cpu_count()} cores; {args.users} users in {args.rooms} rooms, {args.messages} messages each; "
          f"load average {load_average():.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="workers-bench-") as tmp:
        for i in range(args.runs):
            for n in counts:  # interleaved, so that a busy minute does not fall on one count only
                run = await bench_processes(n, args, Path(tmp))
                runs[n].append(run)
                r = run.result
                print(f"run {i + 1}, {n} processes: {r.rate:.1f} msg/s, delivery p50 {pct(r.delivery_ms, 50):.0f} ms "
                      f"p99 {pct(r.delivery_ms, 99):.0f} ms, Gateway CPU {run.gateway_cpu_s:.1f} s "
                      f"({run.cpu_ms_per_message:.1f} ms/msg), load {run.load_before:.1f}→{run.load_after:.1f}",
                      flush=True)
    print(table(runs))
    return runs


if __name__ == "__main__":
    asyncio.run(main())

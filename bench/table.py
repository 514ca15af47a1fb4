"""The table of issue 19 in one command: Gateway and Synapse (.cache/synapse-venv) side by
side in the same run, on SQLite and on PostgreSQL, each measure repeated and its median
kept, with the machine's load while it ran.

Measures (each from its own benchmark script, see there for what exactly is timed):

- ``ingest``: federation ingest, closed loop, 50-PDU transactions into one room
  (bench/federation_ingest.py), PDU/s;
- ``join``: a full join (faster joins on for both) of a room of ``--members`` members served
  by a synthetic resident, until every member is listed (bench/join_large_room.py); and
  the peak RSS growth during it;
- ``client``: 16 senders in one room, closed loop, while every member long-polls /sync
  (bench/client_load.py): messages/s, send -> other clients' /sync p99, RSS after;
- ``sync``: initial /sync of a user in ``--rooms`` rooms, and send -> /sync latency while
  ``--idle`` other clients long-poll idle (bench/sync_load.py).

    .cache/venv/bin/python bench/table.py [--runs 3] [--measures ingest,join,client,sync]
        [--engines sqlite,postgres] [--members 5000] [--pdus 2000] [--rooms 200] [--idle 1000]

Takes long (an hour or more on a busy 2-core machine). Numbers only: nothing asserts a
timing. The load average (1 minute) is sampled before and after each run; the table
gives its range per measure, so numbers taken on a busy machine can be read as such.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import client_load, federation_ingest, join_large_room, sync_load  # noqa: E402
from bench.client_load import pct  # noqa: E402
from tests.support.tls import TestCA  # noqa: E402

SERVERS = ("gateway", "synapse")


@dataclass
class Measure:
    """Samples of one quantity for each (server, engine), and the load seen meanwhile."""

    name: str
    unit: str
    #: "higher" or "lower" is better (for the ratio's direction).
    better: str
    aim: str
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    loads: list[float] = field(default_factory=list)

    def add(self, server: str, engine: str, value: float) -> None:
        self.samples.setdefault((server, engine), []).append(value)

    def median(self, server: str, engine: str) -> float | None:
        values = self.samples.get((server, engine))
        return statistics.median(values) if values else None


def load() -> float:
    return os.getloadavg()[0]


async def sampled(measures: list[Measure], coro):
    """Run one benchmark run, noting the load before and after it on its measures."""
    before = load()
    try:
        return await coro
    finally:
        after = load()
        for m in measures:
            m.loads += [before, after]


async def run_ingest(args, engines, tmp: Path, out: Measure) -> None:
    ca = TestCA(tmp / "ca-ingest")
    for _ in range(args.runs):
        for engine in engines:
            rate, _ = await sampled([out], federation_ingest.ours(engine, tmp, ca, args.pdus, "10"))
            out.add("gateway", engine, rate)
            out.add("synapse", engine, await sampled([out], federation_ingest.synapse(tmp, ca, args.pdus, "10",
                                                                                          engine)))
            print(f"  ingest {engine}: gateway {out.samples[('gateway', engine)][-1]:.0f} PDU/s,"
                  f" synapse {out.samples[('synapse', engine)][-1]:.0f} PDU/s (load {load():.1f})", flush=True)


async def run_join(args, engines, tmp: Path, time_m: Measure, rss_m: Measure) -> None:
    room = join_large_room.load_room(args.members, "10")
    encoded: dict[str, bytes] = {}
    for run in range(args.runs):
        for engine in engines:
            work = tmp / f"join-{run}-{engine}"
            ca = TestCA(work / "ca")
            ours = await sampled([time_m, rss_m], join_large_room.bench_gateway(
                engine, room, ca, encoded, work, args.members, partial=True))
            theirs = await sampled([time_m, rss_m], join_large_room.bench_synapse(
                engine, room, ca, encoded, work, args.members))
            for server, r in (("gateway", ours), ("synapse", theirs)):
                time_m.add(server, engine, r.full_s)
                rss_m.add(server, engine, (r.hwm_kb - r.rss_before_kb) / 1024)
            print(f"  join {engine}: gateway {ours.full_s:.2f} s (+{(ours.hwm_kb - ours.rss_before_kb) / 1024:.0f}"
                  f" MiB), synapse {theirs.full_s:.2f} s (+{(theirs.hwm_kb - theirs.rss_before_kb) / 1024:.0f} MiB)"
                  f" (load {load():.1f})", flush=True)


async def run_client(args, engines, tmp: Path, rate_m: Measure, p99_m: Measure, rss_m: Measure) -> None:
    load_args = argparse.Namespace(users=16, rooms=1, messages=args.client_messages)
    for run in range(args.runs):
        for engine in engines:
            for server in SERVERS:
                r = await sampled([rate_m, p99_m, rss_m],
                                  client_load.bench_one(server, engine, load_args, tmp / f"client-{run}"))
                rate_m.add(server, engine, r.rate)
                p99_m.add(server, engine, pct(r.delivery_ms, 99))
                rss_m.add(server, engine, r.rss_kb / 1024)
                print(f"  {client_load.describe(r)} (load {load():.1f})", flush=True)


async def run_sync(args, engines, tmp: Path, initial_m: Measure, latency_m: Measure) -> None:
    sync_args = argparse.Namespace(rooms=args.rooms, samples=max(3, args.runs), idle=args.idle, idle_users=50,
                                   messages=50)
    for engine in engines:
        for server in SERVERS:
            r = await sampled([initial_m, latency_m], sync_load.bench_one(server, engine, sync_args, tmp / "sync"))
            for v in r.initial_ms:
                initial_m.add(server, engine, v)
            latency_m.add(server, engine, pct(r.latency_ms, 99))
            print(f"  {sync_load.describe(r)} (load {load():.1f})", flush=True)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("s",):
        return f"{value:.2f}"
    return f"{value:.0f}"


def row(m: Measure, engines: list[str]) -> str:
    ours = " / ".join(fmt(m.median("gateway", e), m.unit) for e in engines)
    theirs = " / ".join(fmt(m.median("synapse", e), m.unit) for e in engines)
    ratios = []
    for e in engines:
        g, s = m.median("gateway", e), m.median("synapse", e)
        if g is None or s is None or not g or not s:
            ratios.append("-")
        elif m.better == "higher":
            ratios.append(f"{g / s:.1f}x")
        else:
            ratios.append(f"{s / g:.1f}x less" if m.unit in ("MiB",) else f"{s / g:.1f}x")
    load_range = f"{min(m.loads):.1f}-{max(m.loads):.1f}" if m.loads else "-"
    return (f"| {m.name} | {ours} {m.unit} | {theirs} {m.unit} | {' / '.join(ratios)} | {m.aim} |"
            f" {load_range} |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each measure (the median is kept)")
    parser.add_argument("--measures", default="ingest,join,client,sync")
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--pdus", type=int, default=2000)
    parser.add_argument("--members", type=int, default=5000)
    parser.add_argument("--client-messages", type=int, default=20, help="messages per sender")
    parser.add_argument("--rooms", type=int, default=200)
    parser.add_argument("--idle", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    engines = [e for e in args.engines.split(",") if e]
    wanted = set(args.measures.split(","))
    each = " / ".join({"sqlite": "SQLite", "postgres": "PostgreSQL"}[e] for e in engines)
    ingest = Measure(f"federation ingest, closed loop, one room, {each}", "PDU/s", "higher",
                     "1,000 PDU/s, >= 10x")
    join_t = Measure(f"full join of a {args.members}-member room, faster joins on, to the full member list, {each}",
                     "s", "lower", ">= 10x")
    join_rss = Measure("peak RSS growth during that join", "MiB", "lower", "<= 1/3 of Synapse's")
    rate = Measure(f"client messages/s, 16 senders, one room, {each}", "msg/s", "higher", ">= 10x / >= 5x")
    p99 = Measure(f"send -> other client's /sync, p99, {each}", "ms", "lower", "<= 1/3 of Synapse's")
    rss = Measure("RSS after that client run", "MiB", "lower", "<= 1/2 of Synapse's")
    initial = Measure(f"initial /sync of a user in {args.rooms} rooms (median), {each}", "ms", "lower", "")
    latency = Measure(f"send -> /sync p99 with {args.idle} idle long-polling clients, {each}", "ms", "lower", "")
    started = time.monotonic()
    start_load = load()
    with tempfile.TemporaryDirectory(prefix="bench-table-") as tmp:
        tmpdir = Path(tmp)
        if "ingest" in wanted:
            await run_ingest(args, engines, tmpdir, ingest)
        if "join" in wanted:
            await run_join(args, engines, tmpdir, join_t, join_rss)
        if "client" in wanted:
            await run_client(args, engines, tmpdir, rate, p99, rss)
        if "sync" in wanted:
            await run_sync(args, engines, tmpdir, initial, latency)
    print(f"\n{args.runs} run(s) of each measure, medians; {time.monotonic() - started:.0f} s;"
          f" load average {start_load:.1f} at the start, {load():.1f} at the end ({os.cpu_count()} cores)\n")
    print("| measure | ours | Synapse | ratio | aim | load during |")
    print("|---|---|---|---|---|---|")
    for m in (ingest, join_t, join_rss, rate, p99, rss, initial, latency):
        if m.samples:
            print(row(m, engines))


if __name__ == "__main__":
    asyncio.run(main())

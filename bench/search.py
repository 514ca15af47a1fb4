"""Server-side search on a room of many messages, Gateway against Synapse.

For each engine (SQLite, PostgreSQL) and each server (each its own process on loopback,
started by ``client_load.running_server``): one user creates a private room, sends the
first ``--api-messages`` (default 1000) of N messages (default 100000) through the
Client-Server API (``PUT .../send``, ``--concurrency`` requests in flight, the four servers
at once), and the rest is written straight into the server's database while it is
stopped (bench/bulk_messages.py: real events cloned from its own last message, indexed
for search as the server indexes what it stores), the same way for both servers. Through
the API alone the fill takes hours here (Synapse sends 5-15 messages a second on this
busy 2-core machine). The messages are the same on both (seeded): 6-14 words drawn from a
vocabulary with a Zipf-like skew, plus planted words at known rates: "meeting" in 20% of
them (a common word), "lighthouse" in 5 (a rare one) and "quarterly report" in 1% (a
phrase).

Then each query runs ``--repeat`` times (after one warm-up run), one at a time, with
``order_by`` rank and recent and the default page of 10 results:

- common: ``meeting``;   rare: ``lighthouse``;   phrase: ``"quarterly report"``;
- two words (both must match): ``meeting budget``;
- common, next page: the same as common, from the first page's ``next_batch``.

Printed per server: its CPU per message sent through the API, and per query the median
and p90 latency (client side, HTTP included), the results returned and the server's
``count``; then Synapse's median over ours ("x as fast"). Synapse has no ``next_batch``
for ``rank`` (it pages only ``recent``): that row is left out for it. Numbers only:
nothing here asserts a timing.

Measured (100000 messages, 2 cores shared with other helpers' tests: load 7-10, so single
numbers move by 2x between runs), Synapse's median over ours, SQLite / PostgreSQL:
common word ranked x9.1 / x2.8 (ours 135 / 308 ms, Synapse 1232 / 869 ms), common word
newest first x116 / x2.5 (13 / 108 ms against 1515 / 265 ms), its second page x133 / x3.5,
rare word x2.1 / x1.6 ranked and x1.7 / x2.0 newest first (12-39 ms against 24-80 ms),
phrase x5.0 / x11.8 ranked and x8.2 / x0.79 newest first, two words x4.1 / x4.7 ranked and
x4.5 / x0.78 newest first. In the run before, the small PostgreSQL queries (rare word, two
words, newest first) went the other way, x0.25-x1.2: what they cost is a dozen round
trips to the database (rooms, page, events, visibility, count, highlights, redactions,
bundled aggregations), where Synapse answers from its caches. The second ranked page has
no Synapse number: Synapse returns no ``next_batch`` for ``rank``.

    .cache/venv/bin/python bench/search.py [--messages 100000] [--api-messages 1000]
        [--concurrency 16] [--repeat 20] [--engines sqlite,postgres] [--servers gateway,synapse]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bulk_messages import load_gateway, load_synapse  # noqa: E402
from bench.client_load import cpu_seconds, running_server  # noqa: E402
from tests.support.synapse import register_synapse_user  # noqa: E402

#: Everyday words (stop words among them, as real messages have).
_COMMON = """the a to and of is in it you that for on with this we be are have not at
can will so just but do get about what if your all like was one there go out up when they
know think time good now some more how see then make only would well back need day work
today people really yes thanks week still want here new also right going sure because tomorrow
call look use take code team idea plan issue fix test build release server room message
coffee lunch music game travel weather phone email project budget review update design""".split()
_SYLLABLES = "ka lo mi ne ru sa ti vo ze pa qui bel dor fen gar hul jin kor lem mur nax pol ris sul tor".split()

QUERIES = [("common", "meeting"), ("rare", "lighthouse"), ("phrase", '"quarterly report"'),
           ("two words", "meeting budget")]


def vocabulary(rng: random.Random, size: int = 5000) -> list[str]:
    words = list(_COMMON)
    seen = set(words)
    while len(words) < size:
        w = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def messages(n: int, seed: int = 7) -> list[str]:
    """The same N message bodies for every server."""
    rng = random.Random(seed)
    words = vocabulary(rng)
    cumulative = list(itertools.accumulate(1 / (i + 1) for i in range(len(words))))
    rare = set(rng.sample(range(n), min(5, n)))
    out = []
    for i in range(n):
        body = rng.choices(words, cum_weights=cumulative, k=rng.randint(6, 14))
        if rng.random() < 0.20:
            body.insert(rng.randrange(len(body) + 1), "meeting")
        if rng.random() < 0.01:
            body.insert(rng.randrange(len(body) + 1), "quarterly report")
        if i in rare:
            body.insert(rng.randrange(len(body) + 1), "lighthouse")
        out.append(" ".join(body))
    return out


@dataclass
class Timing:
    ms: list[float] = field(default_factory=list)
    results: int = 0
    count: int | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.ms) if self.ms else float("nan")

    @property
    def p90(self) -> float:
        ordered = sorted(self.ms)
        return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))] if ordered else float("nan")


@dataclass
class Result:
    label: str
    fill_seconds: float = 0.0
    #: Messages sent through the API (the rest is written into the database).
    sent: int = 0
    fill_cpu_s: float = 0.0
    timings: dict[str, Timing] = field(default_factory=dict)


async def fill(session: aiohttp.ClientSession, url: str, token: str, room_id: str, bodies: list[str],
               concurrency: int, label: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    queue = iter(enumerate(bodies))

    async def worker() -> None:
        for i, body in queue:
            for attempt in range(5):
                async with session.put(f"{url}/_matrix/client/v3/rooms/{room_id}/send/m.room.message/b{i}",
                                       headers=headers, json={"msgtype": "m.text", "body": body}) as resp:
                    if resp.status == 200:
                        break
                    if resp.status != 429 or attempt == 4:
                        raise RuntimeError(f"send failed: {resp.status} {await resp.text()}")
                    await asyncio.sleep(0.5)
            if i and i % 10000 == 0:
                print(f"    {label}: {i} messages", flush=True)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def run_queries(session: aiohttp.ClientSession, url: str, token: str, repeat: int) -> dict[str, Timing]:
    headers = {"Authorization": f"Bearer {token}"}
    out: dict[str, Timing] = {}

    async def ask(term: str, order: str, batch: str | None = None) -> tuple[float, dict]:
        params = {"next_batch": batch} if batch else {}
        body = {"search_categories": {"room_events": {"search_term": term, "order_by": order}}}
        t0 = time.perf_counter()
        async with session.post(f"{url}/_matrix/client/v3/search", json=body, params=params,
                                headers=headers) as resp:
            data = await resp.json()
            assert resp.status == 200, data
        return (time.perf_counter() - t0) * 1000, data["search_categories"]["room_events"]

    for name, term in QUERIES:
        for order in ("rank", "recent"):
            timing = Timing()
            await ask(term, order)  # warm-up
            for _ in range(repeat):
                ms, found = await ask(term, order)
                timing.ms.append(ms)
            timing.results, timing.count = len(found["results"]), found.get("count")
            out[f"{name} / {order}"] = timing
            if name == "common" and found.get("next_batch"):
                page = Timing()
                for _ in range(repeat):
                    ms, more = await ask(term, order, found["next_batch"])
                    page.ms.append(ms)
                page.results, page.count = len(more["results"]), more.get("count")
                out[f"common, page 2 / {order}"] = page
    return out


async def bench_all(pairs: list[tuple[str, str]], args, bodies: list[str], workdir: Path) -> dict:
    """Start every server, fill each one's room at the same time (the fills are the long
    part), then time the queries one server at a time, the others idle."""
    results: dict[tuple[str, str], Result] = {}
    async with contextlib.AsyncExitStack() as stack:
        conn = aiohttp.TCPConnector(limit=0)
        session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=600)))
        servers = {}
        for server, engine in pairs:
            directory = workdir / f"{server}-{engine}"
            directory.mkdir(parents=True)
            proc = await stack.enter_async_context(running_server(server, engine, directory))
            token = await register_synapse_user(proc, "searcher", password="bench-pass")
            async with session.post(f"{proc.client_url}/_matrix/client/v3/createRoom",
                                    json={"preset": "private_chat"},
                                    headers={"Authorization": f"Bearer {token}"}) as resp:
                room_id = (await resp.json())["room_id"]
            servers[(server, engine)] = (proc, token, room_id)
            results[(server, engine)] = Result(f"{server}/{engine}", sent=min(len(bodies), args.api_messages))

        sent, loaded = bodies[:args.api_messages], bodies[args.api_messages:]

        async def fill_one(key: tuple[str, str]) -> None:
            proc, token, room_id = servers[key]
            result = results[key]
            cpu0, t0 = cpu_seconds(proc.proc.pid), time.monotonic()
            await fill(session, proc.client_url, token, room_id, sent, args.concurrency, result.label)
            result.fill_seconds = time.monotonic() - t0
            result.fill_cpu_s = cpu_seconds(proc.proc.pid) - cpu0
            print(f"  {result.label}: {len(sent)} sent in {result.fill_seconds:.0f} s", flush=True)
            if loaded:
                t0 = time.monotonic()
                await bulk_load(key[0], proc, room_id, loaded)
                print(f"  {result.label}: {len(loaded)} more written in {time.monotonic() - t0:.0f} s"
                      " (server restarted)", flush=True)

        print(f"{len(pairs)} rooms: {len(sent)} messages each sent through the API (all at once), then"
              f" {len(loaded)} written into each database", flush=True)
        await asyncio.gather(*(fill_one(key) for key in pairs))
        for key in pairs:
            proc, token, _ = servers[key]
            results[key].timings = await run_queries(session, proc.client_url, token, args.repeat)
            print(describe(results[key]), flush=True)
    return results


async def bulk_load(server: str, proc, room_id: str, bodies: list[str]) -> None:
    """Stop the server, write ``bodies`` into its database (bench/bulk_messages.py), and
    start it again on the same ports."""
    config = yaml.safe_load((proc.dir / "homeserver.yaml").read_text())
    await proc.stop()
    if server == "gateway":
        await load_gateway(config, room_id, bodies)
        await proc.start()
    else:
        await load_synapse(config, room_id, bodies)
        await proc.start(extra={"database": config["database"], "bcrypt_rounds": 4})


def describe(r: Result) -> str:
    lines = [f"{r.label}: sent at {r.sent / r.fill_seconds:.0f} msg/s beside the other servers"
             f" ({r.fill_cpu_s:.0f} s of server CPU, {1000 * r.fill_cpu_s / r.sent:.1f} ms a message)"]
    for name, t in r.timings.items():
        lines.append(f"  {name:28} median {t.median:8.1f} ms  p90 {t.p90:8.1f} ms"
                     f"  results {t.results:3}  count {t.count}")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--api-messages", type=int, default=1000,
                        help="messages sent through the API; the others are written into the database")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--servers", default="gateway,synapse")
    args = parser.parse_args()
    bodies = messages(args.messages)
    pairs = [(server, engine) for engine in args.engines.split(",") for server in args.servers.split(",")]
    with tempfile.TemporaryDirectory(prefix="search-bench-") as tmp:
        results = await bench_all(pairs, args, bodies, Path(tmp))
    print(f"\n{args.messages} messages in one room; median latency, Synapse's over ours (x as fast):")
    for engine in args.engines.split(","):
        g, s = results.get(("gateway", engine)), results.get(("synapse", engine))
        if not (g and s):
            continue
        cells = []
        for name, t in g.timings.items():
            other = s.timings.get(name)
            if other and other.ms:
                cells.append(f"{name} x{other.median / t.median:.2f}")
        cpu = (s.fill_cpu_s / s.sent) / (g.fill_cpu_s / g.sent)
        print(f"{engine:9} " + ", ".join(cells) + f"; server CPU a message sent x{cpu:.2f}")


async def stoppable_main() -> None:
    """main(), cancelled (servers stopped, databases dropped) on SIGTERM or SIGINT, also
    when started in the background, where SIGINT is ignored."""
    task = asyncio.current_task()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    await main()


if __name__ == "__main__":
    asyncio.run(stoppable_main())

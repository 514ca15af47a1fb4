"""Benchmark: relationships in a big room.

    .cache/venv/bin/python bench/relations.py [--messages N] [--engine sqlite|postgres]

Fills one room with N events through the local event pipeline (in batches): every 10th
message starts a thread, thread replies, edits and reactions among the rest. Then times
what clients ask for: a /threads page (the room's threads by latest activity, with
bundles), bundled aggregations for a /messages page of 50 events, /relations of a busy
thread root, and the migration's backfill of ``event_relations`` from the stored events
(what an existing server pays once when it upgrades).

Measured (2 cores shared with other work, 20000 events, 13394 relations, ~2000 threads):
/threads page of 20 with bundles 7 ms (SQLite) / 20 ms (PostgreSQL); bundles for a page of
50 events 1.3 / 4.4 ms; /relations of the busiest root 3.3 / 18 ms; the migration's backfill
0.15 / 0.5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.config import parse_config  # noqa: E402
from gateway.server import HomeServer  # noqa: E402
from gateway.services.events import EventSpec  # noqa: E402
from gateway.storage.database import split_sql_script  # noqa: E402
from gateway.storage.migrations import load_migrations  # noqa: E402

USER = "@alice:bench.test"
BATCH = 200


def contents(n: int, rng: random.Random) -> list[tuple[str, dict]]:
    """(type, content) of n events: roots every 10th, then replies, edits and reactions
    to roots of earlier batches (their IDs are known by then)."""
    out: list[tuple[str, dict]] = []
    roots: list[int] = []
    ready: list[int] = []
    for i in range(n):
        kind = rng.random()
        if i % BATCH == 0:
            ready = list(roots)
        if i % 10 == 0 or not ready:
            roots.append(i)
            out.append(("m.room.message", {"msgtype": "m.text", "body": f"root {i}"}))
        elif kind < 0.5:
            out.append(("m.room.message", {"msgtype": "m.text", "body": f"reply {i}", "m.relates_to": {
                "rel_type": "m.thread", "event_id": rng.choice(ready)}}))
        elif kind < 0.6:
            out.append(("m.room.message", {"msgtype": "m.text", "body": f"* edit {i}", "m.new_content": {
                "msgtype": "m.text", "body": f"edit {i}"}, "m.relates_to": {"rel_type": "m.replace",
                                                                          "event_id": rng.choice(ready)}}))
        elif kind < 0.75:
            out.append(("m.reaction", {"m.relates_to": {"rel_type": "m.annotation", "event_id": rng.choice(ready),
                                                        "key": str(i)}}))
        else:
            out.append(("m.room.message", {"msgtype": "m.text", "body": f"plain {i}"}))
    return out


async def timed(label: str, fn, runs: int = 20) -> None:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - start) * 1000)
    print(f"  {label}: median {statistics.median(times):.1f} ms, max {max(times):.1f} ms ({runs} runs)")


async def run(engine: str, messages: int, workdir: Path) -> None:
    from tests.conftest import create_postgres_database, drop_postgres_database

    pg_name = None
    if engine == "sqlite":
        db = {"name": "sqlite3", "args": {"database": str(workdir / "bench.db")}}
    else:
        pg_name, args = await create_postgres_database()
        db = {"name": "psycopg2", "args": args}
    config = parse_config({"server_name": "bench.test", "database": db, "rc_message": {"per_second": 1e6,
                          "burst_count": 1e6}, "listeners": [{"port": 1, "resources": [{"names": ["client"]}]}]},
                          config_path=str(workdir / "homeserver.yaml"))
    hs = await HomeServer.open(config)
    try:
        from gateway.storage.users import UserStore

        await UserStore(hs.db).create_user(USER, password_hash=None, created_ts=0)
        room_id = await hs.rooms.create_room(USER, {"preset": "public_chat"})
        rng = random.Random(7)
        planned = contents(messages, rng)
        ids: list[str] = []
        start = time.perf_counter()
        for i in range(0, len(planned), BATCH):
            specs = []
            for t, c in planned[i:i + BATCH]:
                rel = c.get("m.relates_to")
                if rel is not None:  # plan used indices; now real event IDs
                    c = {**c, "m.relates_to": {**rel, "event_id": ids[rel["event_id"]]}}
                specs.append(EventSpec(t, USER, c))
            sent = await hs.events.send_events(room_id, specs)
            ids += [s.pdu.event_id for s in sent]
        await hs.push.wait_for_evaluations([room_id])  # push rules run behind the sends: not timed here
        print(f"{engine}: {messages} events stored in {time.perf_counter() - start:.1f} s"
              f" ({await hs.db.fetchval('SELECT COUNT(*) FROM event_relations')} relations)")
        relations = hs.relations

        await timed("/threads page of 20 (with bundles)", lambda: relations.list_threads(
            USER, None, room_id, participated=False, limit=20, before=None))
        page = await hs.events.store.get_room_events(room_id, from_pos=None, backwards=True, limit=50)

        async def bundle_page():
            serialized = await hs.events.serialize_for_client(page)
            await relations.bundle_aggregations(serialized, USER)

        await timed("serialize + bundle a /messages page of 50", bundle_page)
        busiest = await hs.db.fetchval("SELECT relates_to_id FROM event_relations WHERE rel_type = 'm.thread'"
                                       " GROUP BY relates_to_id ORDER BY COUNT(*) DESC LIMIT 1")
        await timed("/relations of the busiest thread root, 50 a page", lambda: relations.get_relations(
            USER, None, room_id, busiest, rel_type=None, event_type=None, from_pos=None, to_pos=None,
            backwards=True, limit=50, recurse=False))
        (backfill,) = [m for m in load_migrations(hs.db.engine) if m.name == "event_relations_backfill"]
        (insert,) = [s for s in split_sql_script(backfill.sql) if s.lstrip().startswith("INSERT")]
        await hs.db.execute("DELETE FROM event_relations")
        start = time.perf_counter()
        await hs.db.execute(insert)
        print(f"  migration backfill of event_relations: {time.perf_counter() - start:.2f} s")
    finally:
        await hs.close()
        if pg_name:
            await drop_postgres_database(pg_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--engine", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    engines = ["sqlite", "postgres"] if args.engine == "both" else [args.engine]
    with tempfile.TemporaryDirectory() as tmp:
        for engine in engines:
            asyncio.run(run(engine, args.messages, Path(tmp)))


if __name__ == "__main__":
    main()

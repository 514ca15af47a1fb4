"""Benchmark: push rule evaluation of new events in a room with many local members.

    .cache/venv/bin/python bench/push_rules.py [--members N] [--messages N] [--engine sqlite|postgres]

Creates a room with N local members, sends messages (some mentioning a member), then
times ``PushService.evaluate_events`` for each message again (push actions cleared
first, so every run does its real insert): per-event latency (mean, p50, p99) and
evaluations per second (event x member). Also the pure evaluator alone.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from federation.push_rules import PushContext, compile_ruleset, default_rules, evaluate, evaluate_compiled, merge_ruleset  # noqa: E402
from gateway.config import parse_config  # noqa: E402
from gateway.server import HomeServer  # noqa: E402
from gateway.services.events import EventSpec  # noqa: E402
from gateway.storage.users import UserStore  # noqa: E402


def pure(n: int) -> float:
    rules = merge_ruleset(default_rules("@alice:hs.test"), {})
    ctx = PushContext("@alice:hs.test", "Alice", 50, 0, {"room": 50})
    event = {"type": "m.room.message", "sender": "@bob:hs.test", "room_id": "!r:hs.test",
             "content": {"msgtype": "m.text", "body": "hello there, how is everyone doing today?"}}
    start = time.perf_counter()
    for _ in range(n):
        evaluate(rules, event, ctx)
    alone = n / (time.perf_counter() - start)
    compiled = compile_ruleset(rules)
    memo: dict = {}  # one event for many members
    start = time.perf_counter()
    for _ in range(n):
        evaluate_compiled(compiled, event, ctx, memo)
    return alone, n / (time.perf_counter() - start)


async def run(members: int, messages: int, engine: str) -> None:
    tmp = tempfile.mkdtemp()
    cleanup = None
    if engine == "sqlite":
        db = {"name": "sqlite3", "args": {"database": f"{tmp}/bench.db"}}
    else:
        from tests.conftest import create_postgres_database, drop_postgres_database

        name, args = await create_postgres_database()
        db = {"name": "psycopg2", "args": args}
        cleanup = (drop_postgres_database, name)
    config = parse_config({"server_name": "hs.test", "database": db,
                           "listeners": [{"port": 1, "resources": [{"names": ["client"]}]}]},
                          config_path=f"{tmp}/homeserver.yaml")
    hs = await HomeServer.open(config)
    try:
        users = UserStore(hs.db)
        ids = [f"@u{i}:hs.test" for i in range(members)]
        for u in ids:
            await users.create_user(u, password_hash=None, created_ts=0)
        room_id = await hs.rooms.create_room(ids[0], {"preset": "public_chat"})
        for u in ids[1:]:
            await hs.rooms.join(u, room_id)
        positions = []
        for i in range(messages):
            content = {"msgtype": "m.text", "body": f"message {i}"}
            if i % 10 == 0:
                content["m.mentions"] = {"user_ids": [ids[(i + 1) % members]]}
            sent = await hs.events.send_event(room_id, EventSpec("m.room.message", ids[i % members], content))
            positions.append(sent.stream_ordering)
        await hs.push.flush()
        await hs.db.execute("DELETE FROM event_push_actions")
        times = []
        for pos in positions:
            t = time.perf_counter()
            await hs.push.evaluate_events(room_id, [pos])
            times.append(time.perf_counter() - t)
        rows = await hs.db.fetchval("SELECT COUNT(*) FROM event_push_actions")
        ms = sorted(x * 1000 for x in times)
        total = sum(times)
        print(f"{engine}: {members} members, {messages} messages, {rows} push action rows")
        print(f"  per event: mean {statistics.mean(ms):.2f} ms, p50 {ms[len(ms) // 2]:.2f} ms,"
              f" p99 {ms[min(len(ms) - 1, int(len(ms) * 0.99))]:.2f} ms")
        print(f"  {messages * (members - 1) / total:,.0f} member evaluations/s (queries and insert included)")
    finally:
        await hs.close()
        if cleanup:
            await cleanup[0](cleanup[1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--members", type=int, default=200)
    p.add_argument("--messages", type=int, default=200)
    p.add_argument("--engine", choices=("sqlite", "postgres"), default="sqlite")
    a = p.parse_args()
    alone, shared = pure(20_000)
    print(f"pure evaluator (default rules, plain message): {alone:,.0f} evaluations/s alone,"
          f" {shared:,.0f}/s compiled, one event for many members")
    asyncio.run(run(a.members, a.messages, a.engine))


if __name__ == "__main__":
    main()

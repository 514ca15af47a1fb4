"""Benchmark: PDUs accepted per second through ``PUT /_matrix/federation/v1/send``.

A synthetic remote server on loopback (its own signing key, its keys served over TLS:
tests/support/fake_remote.py) joins a user to a public room, then sends transactions of
50 new message PDUs (a chain, each on the one before, signed beforehand) one after the
other, as a real sender does, and waits for each answer (acknowledged = stored). Printed:
PDUs/s for our server on SQLite and on PostgreSQL and, in the same run, for a Synapse from
PyPI (.cache/synapse-venv, started on loopback) receiving the same kind of traffic, the
ratios, and the raw signature + hash verification rate (the floor of the work per PDU).

    .cache/venv/bin/python bench/federation_ingest.py [--pdus 2000] [--room-version 10]
        [--engines sqlite,postgres] [--synapse-engines sqlite,postgres] [--no-synapse]

Our server runs in this process (beside the synthetic remote), Synapse as its own.
Measured numbers, with the machine's load, are in docs/performance.md; ``bench/table.py``
runs this with the other measures for the issue's table.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from federation.events import PDU, add_content_hash, compute_event_id  # noqa: E402
from federation.room_versions import get_room_version  # noqa: E402
from federation.signing import check_content_hash, sign_event, verify_event_signatures  # noqa: E402
from gateway.config import DatabaseConfig  # noqa: E402
from gateway.storage.users import UserStore  # noqa: E402
from tests.conftest import create_postgres_database, drop_postgres_database  # noqa: E402
from tests.support.fake_remote import FakeRemote, RoomView, local_gateway  # noqa: E402
from tests.support.tls import TestCA  # noqa: E402

BATCH = 50


def build_messages(view: RoomView, sender: str, n: int) -> list[dict]:
    return [view.make("m.room.message", sender, {"msgtype": "m.text", "body": f"message {i}"}) for i in range(n)]


async def ingest(remote: FakeRemote, destination: str, pdus: list[dict]) -> float:
    """Send in transactions of 50, one at a time; PDUs/s. Every PDU must be accepted."""
    start = time.perf_counter()
    for i in range(0, len(pdus), BATCH):
        answer = await remote.send(destination, pdus[i:i + BATCH])
        bad = {k: v for k, v in answer.get("pdus", {}).items() if v}
        if bad or len(answer.get("pdus", {})) != len(pdus[i:i + BATCH]):
            raise RuntimeError(f"PDUs not accepted: {list(bad.items())[:3]} ({len(answer.get('pdus', {}))} answers)")
    return len(pdus) / (time.perf_counter() - start)


def raw_verify_rate(remote: FakeRemote, view: RoomView, pdus: list[dict]) -> float:
    rv = view.rv

    def keys_for(server, key_id):
        return remote.key.verify_key if (server, key_id) == (remote.server_name, remote.key.key_id) else None

    start = time.perf_counter()
    for p in pdus:
        verify_event_signatures(p, rv, keys_for)
        assert check_content_hash(p, rv)
    return len(pdus) / (time.perf_counter() - start)


async def ours(engine: str, tmp: Path, ca: TestCA, n: int, version: str) -> tuple[float, float]:
    pg = None
    if engine == "postgres":
        pg, args = await create_postgres_database()
        db = DatabaseConfig("postgres", {**args, "cp_min": 1, "cp_max": 8})
    else:
        db = DatabaseConfig("sqlite", {"database": str(tmp / f"ours-{engine}-{len(list(tmp.glob('ours-*.db')))}.db")})
    directory = tmp / f"ours-{engine}-{len(list(tmp.glob(f'ours-{engine}-*')))}"
    directory.mkdir()
    try:
        async with local_gateway(directory, db, ca) as gw, FakeRemote(ca) as remote:
            hs = gw.hs
            alice = f"@alice:{gw.server_name}"
            await UserStore(hs.db).create_user(alice, password_hash=None, created_ts=0)
            room_id = await hs.rooms.create_room(alice, {"preset": "public_chat", "room_version": version})
            view = RoomView(remote, get_room_version(version), room_id)
            events = await hs.events.store.get_room_events(room_id, from_pos=None, backwards=False, limit=100)
            view.learn([e.pdu for e in events])
            bob = f"@bob:{remote.server_name}"
            join = view.make("m.room.member", bob, {"membership": "join"}, state_key=bob)
            await ingest(remote, gw.server_name, [join])  # also fetches the remote's keys
            pdus = build_messages(view, bob, n)
            rate = await ingest(remote, gw.server_name, pdus)
            stored = await hs.events.store.get_room_events(room_id, from_pos=None, backwards=True, limit=1)
            assert stored[0].event_id == RoomView.event_id(pdus[-1], view.rv), "last PDU not in the timeline"
            return rate, raw_verify_rate(remote, view, pdus)
    finally:
        if pg is not None:
            await drop_postgres_database(pg)


async def synapse(tmp: Path, ca: TestCA, n: int, version: str, engine: str = "sqlite") -> float:
    import aiohttp

    from bench.client_load import _create_pg_database, _drop_pg_database
    from tests.support.synapse import SynapseServer, ensure_synapse_installed, register_synapse_user

    ensure_synapse_installed()
    directory = tmp / f"synapse-{engine}-{len(list(tmp.glob('synapse-*')))}"
    server = SynapseServer(directory, ca)
    extra: dict = {"rc_federation": {"window_size": 1000, "sleep_limit": 10000, "sleep_delay": 0,
                                     "reject_limit": 10000, "concurrent": 100}}
    pg_name = None
    if engine == "postgres":
        pg_name, pg_args = await _create_pg_database(c_locale=True)
        extra["database"] = {"name": "psycopg2", "args": {**pg_args, "cp_min": 2, "cp_max": 10}}
    try:
        await server.start(extra)
    except BaseException:
        if pg_name:
            await _drop_pg_database(pg_name)
        raise
    try:
        token = await register_synapse_user(server, "alice")
        async with aiohttp.ClientSession() as s, s.post(
                f"{server.client_url}/_matrix/client/v3/createRoom",
                json={"preset": "public_chat", "room_version": version},
                headers={"Authorization": f"Bearer {token}"}) as r:
            room_id = (await r.json())["room_id"]
        async with FakeRemote(ca) as remote:
            rv = get_room_version(version)
            bob = f"@bob:{remote.server_name}"
            fed = "/_matrix/federation"
            made = await remote.client.request(
                "GET", server.server_name, f"{fed}/v1/make_join/{quote(room_id, safe='')}/{quote(bob, safe='')}",
                query={"ver": version})
            template = dict(made["event"])
            template["origin_server_ts"] = int(time.time() * 1000)
            template.pop("signatures", None)
            template.pop("hashes", None)
            template["signatures"] = {}
            join = sign_event(add_content_hash(template), remote.server_name, remote.key, room_version=rv)
            join_id = compute_event_id(join, rv)
            answer = await remote.client.request(
                "PUT", server.server_name, f"{fed}/v2/send_join/{quote(room_id, safe='')}/{quote(join_id, safe='')}",
                content=join)
            view = RoomView(remote, rv, room_id)
            state = [PDU.from_pdu_json(p, rv) for p in answer["state"]]
            view.learn(sorted(state, key=lambda p: p.depth))
            view.learn([PDU.from_pdu_json(join, rv)])
            view.depth = join["depth"]
            pdus = build_messages(view, bob, n)
            return await ingest(remote, server.server_name, pdus)
    finally:
        await server.stop()
        if pg_name:
            await _drop_pg_database(pg_name)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pdus", type=int, default=2000)
    parser.add_argument("--room-version", default="10")
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--no-synapse", action="store_true")
    parser.add_argument("--synapse-engines", default="sqlite")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    ca = TestCA(tmp / "ca")
    results: dict[str, float] = {}
    floor = None
    for engine in args.engines.split(","):
        rate, floor = await ours(engine, tmp, ca, args.pdus, args.room_version)
        results[f"gateway ({engine})"] = rate
    if not args.no_synapse:
        for engine in args.synapse_engines.split(","):
            results[f"synapse ({engine})"] = await synapse(tmp, ca, args.pdus, args.room_version, engine)
    print(f"{args.pdus} message PDUs in transactions of {BATCH}, room version {args.room_version}")
    if floor is not None:
        print(f"  raw signature + hash verification: {floor:10.0f} PDUs/s (one core, the floor of the work)")
    for name, rate in results.items():
        print(f"  {name:22s} {rate:10.0f} PDUs/s")
    for engine in args.engines.split(","):
        syn = results.get(f"synapse ({engine})") or results.get("synapse (sqlite)")
        ours_rate = results.get(f"gateway ({engine})")
        if syn and ours_rate:
            print(f"  gateway ({engine}) / synapse: {ours_rate / syn:.1f}x")


if __name__ == "__main__":
    asyncio.run(main())

"""Benchmark: the federation sender delivering a room's new events to many servers.

Starts our server (SQLite in a temporary directory, or PostgreSQL with ``--postgres``)
and K fake remote servers on loopback over TLS (tests/support/federation_peer.py: each
checks every request's X-Matrix signature and every PDU's signature and hash), joins a
user of each to one room, then sends N messages and times:

- routing: until the sender, started once all N are stored, has worked out the
  destinations of all N events (batches of 500);
- delivery: until every server has received all N (transactions of up to 50 PDUs).
  Keep N <= 1000: a destination with more than that waiting in memory switches to
  catch-up and gets only the newest event of the room.

    .cache/venv/bin/python bench/federation_sender.py [--events 1000] [--servers 10] [--postgres]
        [--members 20000]

Prints events/s routed and PDUs/s delivered (N x K). No Synapse side: comparing needs
Synapse joined to a room with K servers, which the federated-joins work will make possible.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config import parse_config  # noqa: E402
from gateway.server import HomeServer  # noqa: E402
from gateway.services.events import EventSpec  # noqa: E402
from gateway.storage.users import UserStore  # noqa: E402
from tests.conftest import create_postgres_database, drop_postgres_database  # noqa: E402
from tests.support.federation_peer import FederationPeer, remote_join  # noqa: E402
from tests.support.tls import TestCA  # noqa: E402


async def run(events: int, servers: int, postgres: bool, members: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-sender-"))
    ca = TestCA(tmp / "ca")
    pg_name = None
    if postgres:
        pg_name, args = await create_postgres_database()
        db = {"name": "psycopg2", "args": args}
    else:
        db = {"name": "sqlite3", "args": {"database": str(tmp / "hs.db")}}
    peers: list[FederationPeer] = []
    keys: dict = {}
    for _ in range(servers):
        peers.append(FederationPeer(ca, lambda s, k: keys.get((s, k))))
    config = parse_config({
        # Synthetic members' servers are counted by the routing but never contacted.
        "federation_domain_whitelist": [p.server_name for p in peers],
        "server_name": "hs.test", "database": db, "signing_key_path": str(tmp / "hs.key"),
        "listeners": [{"port": 1, "resources": [{"names": ["client"]}]}],
        "federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
    }, config_path=str(tmp / "homeserver.yaml"))
    hs = await HomeServer.open(config)
    try:
        keys[(hs.server_name, hs.signing_key.key_id)] = hs.signing_key.verify_key
        for peer in peers:
            await peer.start()
        alice = "@alice:hs.test"
        await UserStore(hs.db).create_user(alice, password_hash=None, created_ts=0)
        room_id = await hs.rooms.create_room(alice, {"room_version": "12", "preset": "public_chat"})
        for peer in peers:
            await remote_join(hs, room_id, f"@u:{peer.server_name}", peer)
        if members:  # a big room: rows as the inbound side would leave them (no events needed here)
            await hs.db.executemany(
                "INSERT INTO room_memberships (room_id, user_id, membership, event_id, sender, stream_ordering)"
                " VALUES ($1, $2, 'join', $3, $2, 1)",
                [(room_id, f"@m{i}:s{i % 500}.example", f"$m{i}") for i in range(members)])

        start = time.perf_counter()
        last = None
        for i in range(0, events, 10):  # ten events per write, as a busy room would see
            specs = [EventSpec("m.room.message", alice, {"msgtype": "m.text", "body": f"message {j}"})
                     for j in range(i, min(events, i + 10))]
            last = (await hs.events.send_events(room_id, specs))[-1]
        sent = time.perf_counter()
        # The sender starts on the backlog: routing and delivery are timed on their own.
        begin = time.perf_counter()
        await hs.federation_sender.start()
        store = hs.federation_sender.store
        while await store.get_sender_position() < last.stream_ordering:
            await asyncio.sleep(0.005)
        routed = time.perf_counter()
        for peer in peers:
            await peer.wait_for(lambda p=peer: len(p.pdus) >= events, timeout=600)
        delivered = time.perf_counter()
        errors = sum(len(p.errors) for p in peers)
        txns = sum(len(p.transactions) for p in peers)
        print(f"engine={'postgres' if postgres else 'sqlite'} events={events} servers={servers} "
              f"extra members={members}")
        print(f"  persisting:  {events / (sent - start):8.0f} events/s (the events pipeline, for scale)")
        print(f"  routing:     {events / (routed - begin):8.0f} events/s (working out each event's servers)")
        print(f"  delivery:    {events * servers / (delivered - begin):8.0f} PDUs/s to {servers} servers, "
              f"{txns} transactions, {errors} verification errors")
    finally:
        await hs.close()
        for peer in peers:
            await peer.stop()
        if pg_name:
            await drop_postgres_database(pg_name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1000, help="at most 1000 (see above)")
    parser.add_argument("--servers", type=int, default=10)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--members", type=int, default=0, help="extra joined members on 500 other servers")
    args = parser.parse_args()
    asyncio.run(run(args.events, args.servers, args.postgres, args.members))


if __name__ == "__main__":
    main()

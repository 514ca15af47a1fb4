"""Messages written straight into a server's database, for benchmarks that need a room
bigger than the servers can fill through the API in reasonable time (bench/search.py):
on a busy 2-core machine Synapse sends about 5-15 messages a second, so 100000 take hours.

Each message is a real event of the room: a clone of the last message the server itself
sent there (same sender, auth events and state), with its own body, ``origin_server_ts``
and depth, the previous clone as its only prev event, and the content hash, signature
(the server's own key) and event ID its room version asks for. Written while the server
is stopped, for Gateway (its schema) and for Synapse (``events``, ``event_json``,
``event_edges``, ``event_to_state_groups``, ``event_search``, the forward extremity and
the stream sequence, as Synapse 1.16x writes them), on SQLite and PostgreSQL; search rows
are written the way each server writes them for a message it stores (``to_tsvector`` on
PostgreSQL, the full-text table on SQLite), and on PostgreSQL the tables are analysed
afterwards, as autovacuum would soon do (without it the planner, blind to the new rows,
picks plans 100x slower for a while). A benchmark tool, not a way to fill a real server.
"""

from __future__ import annotations

import copy
import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import asyncpg

from federation.canonical_json import encode_canonical_json
from federation.events import PDU, compute_event_id
from federation.room_versions import RoomVersion, get_room_version
from federation.signing import ServerSigningKey, add_content_hash, sign_event
from gateway.signing_keys import load_signing_key

CHUNK = 2000


def clones(template: dict[str, Any], rv: RoomVersion, bodies: Sequence[str], *, first_prev: str, start_ts: int,
           start_depth: int, server_name: str, key: ServerSigningKey) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event ID, signed PDU JSON) of a chain of messages cloned from ``template``."""
    prev = first_prev
    for i, body in enumerate(bodies):
        pdu = copy.deepcopy(template)
        for drop in ("event_id", "signatures", "hashes", "unsigned"):
            pdu.pop(drop, None)
        pdu["content"] = {"msgtype": "m.text", "body": body}
        pdu["origin_server_ts"] = start_ts + i
        pdu["depth"] = start_depth + i
        pdu["prev_events"] = [[prev, {}]] if rv.event_id_in_event else [prev]
        if rv.event_id_in_event:
            pdu["event_id"] = f"$bulk{start_ts + i}:{server_name}"
        signed = sign_event(add_content_hash(pdu), server_name, key, room_version=rv)
        event_id = compute_event_id(signed, rv)
        yield event_id, signed
        prev = event_id


def _key_and_name(config: dict[str, Any]) -> tuple[ServerSigningKey, str]:
    return load_signing_key(config["signing_key_path"], create=False), config["server_name"]


# --- Gateway ---------------------------------------------------------------------------


async def load_gateway(config: dict[str, Any], room_id: str, bodies: Sequence[str]) -> None:
    """Into a stopped Gateway's database (``config``: its homeserver.yaml as a dict)."""
    from gateway.config import DatabaseConfig
    from gateway.storage import open_database
    from gateway.storage.events import encode_pdu_json
    from gateway.storage.search import index_events
    from gateway.storage.state import next_position

    db_conf = config["database"]
    engine = "sqlite" if db_conf["name"] == "sqlite3" else "postgres"
    args = db_conf["args"] if engine == "postgres" else {"database": db_conf["args"]["database"]}
    db = await open_database(DatabaseConfig(engine, args))
    key, server_name = _key_and_name(config)
    try:
        row = await db.fetchrow(
            "SELECT e.event_id, e.json, e.depth, e.state_group, e.origin_server_ts, r.room_version FROM events e"
            " JOIN rooms r ON r.room_id = e.room_id WHERE e.room_id = $1 AND e.type = 'm.room.message'"
            " AND e.outlier = FALSE ORDER BY e.stream_ordering DESC LIMIT 1", room_id)
        rv = get_room_version(row[5])
        made = clones(json.loads(row[1]), rv, bodies, first_prev=row[0], start_ts=int(row[4]) + 1,
                      start_depth=int(row[2]) + 1, server_name=server_name, key=key)
        columns = ("event_id", "stream_ordering", "room_id", "type", "sender", "depth", "origin_server_ts",
                   "received_ts", "json", "outlier", "soft_failed", "state_group")
        for start in range(0, len(bodies), CHUNK):
            batch = [next(made) for _ in range(min(CHUNK, len(bodies) - start))]
            async with db.transaction() as txn:
                last = await next_position(txn, "events", len(batch))
                first = last - len(batch) + 1
                pdus = [PDU(pdu_json, rv, event_id) for event_id, pdu_json in batch]
                await txn.copy_rows("events", columns, [
                    (p.event_id, first + i, room_id, p.type, p.sender, p.depth, p.origin_server_ts,
                     p.origin_server_ts, encode_pdu_json(p), False, False, row[3]) for i, p in enumerate(pdus)])
                await txn.copy_rows("event_edges", ("event_id", "prev_event_id", "room_id"),
                                    [(p.event_id, p.prev_event_ids[0], room_id) for p in pdus])
                await index_events(txn, [(p, first + i) for i, p in enumerate(pdus)])
                await txn.execute("UPDATE rooms SET head_stream_ordering = $2 WHERE room_id = $1", room_id, last)
                await txn.execute("DELETE FROM event_forward_extremities WHERE room_id = $1", room_id)
                await txn.execute("INSERT INTO event_forward_extremities (room_id, event_id) VALUES ($1, $2)",
                                  room_id, pdus[-1].event_id)
        if engine == "postgres":
            await db.execute("ANALYZE")  # what autovacuum does within a minute of such a load
    finally:
        await db.close()


# --- Synapse ---------------------------------------------------------------------------


class _Synapse:
    """The few statements the load needs, on Synapse's SQLite or PostgreSQL database."""

    def __init__(self, config: dict[str, Any]):
        self.engine = "sqlite" if config["database"]["name"] == "sqlite3" else "postgres"
        self.args = config["database"]["args"]
        self.sqlite: sqlite3.Connection | None = None
        self.pg: asyncpg.Connection | None = None

    async def open(self) -> None:
        if self.engine == "sqlite":
            self.sqlite = sqlite3.connect(self.args["database"])
        else:
            self.pg = await asyncpg.connect(**{k: v for k, v in self.args.items()
                                               if k in ("user", "password", "database", "host", "port")})

    async def close(self) -> None:
        if self.sqlite is not None:
            self.sqlite.commit()
            self.sqlite.close()
        if self.pg is not None:
            await self.pg.close()

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        if self.sqlite is not None:
            return self.sqlite.execute(sql.replace("$1", "?"), args).fetchone()
        return await self.pg.fetchrow(sql, *args)

    async def insert(self, sql_pg: str, sql_sqlite: str, rows: list[tuple]) -> None:
        if self.sqlite is not None:
            self.sqlite.executemany(sql_sqlite, rows)
        else:
            await self.pg.executemany(sql_pg, rows)

    async def execute(self, sql: str, *args: Any) -> None:
        if self.sqlite is not None:
            self.sqlite.execute(sql.replace("$1", "?").replace("$2", "?"), args)
        else:
            await self.pg.execute(sql, *args)


async def load_synapse(config: dict[str, Any], room_id: str, bodies: Sequence[str]) -> None:
    """Into a stopped Synapse's database (``config``: its homeserver.yaml as a dict)."""
    db = _Synapse(config)
    await db.open()
    key, server_name = _key_and_name(config)
    try:
        row = await db.fetchrow(
            "SELECT e.event_id, j.json, e.depth, s.state_group, e.origin_server_ts, r.room_version,"
            " j.format_version FROM events e JOIN event_json j ON j.event_id = e.event_id"
            " JOIN event_to_state_groups s ON s.event_id = e.event_id JOIN rooms r ON r.room_id = e.room_id"
            " WHERE e.room_id = $1 AND e.type = 'm.room.message' AND NOT e.outlier"
            " ORDER BY e.stream_ordering DESC LIMIT 1", room_id)
        top = await db.fetchrow("SELECT MAX(stream_ordering) FROM events")
        position = int(top[0])
        rv = get_room_version(row[5])
        made = clones(json.loads(row[1]), rv, bodies, first_prev=row[0], start_ts=int(row[4]) + 1,
                      start_depth=int(row[2]) + 1, server_name=server_name, key=key)
        last_id = row[0]
        for start in range(0, len(bodies), CHUNK):
            batch = list(next(made) for _ in range(min(CHUNK, len(bodies) - start)))
            events, jsons, edges, groups, search = [], [], [], [], []
            for event_id, pdu in batch:
                position += 1
                ts, depth = pdu["origin_server_ts"], pdu["depth"]
                pdu = {**pdu, "unsigned": {"age_ts": ts}}
                events.append((position, depth, event_id, "m.room.message", room_id, False, depth, ts, ts,
                               pdu["sender"], False, "master"))
                jsons.append((event_id, room_id, "{}", encode_canonical_json(pdu).decode(), row[6]))
                edges.append((event_id, last_id, room_id))
                groups.append((event_id, row[3]))
                if db.engine == "sqlite":
                    search.append((event_id, room_id, pdu["sender"], "content.body", pdu["content"]["body"]))
                else:
                    search.append((event_id, room_id, pdu["sender"], "content.body", pdu["content"]["body"], ts,
                                   position))
                last_id = event_id
            await db.insert(
                "INSERT INTO events (stream_ordering, topological_ordering, event_id, type, room_id, processed,"
                " outlier, depth, origin_server_ts, received_ts, sender, contains_url, instance_name)"
                " VALUES ($1, $2, $3, $4, $5, TRUE, $6, $7, $8, $9, $10, $11, $12)",
                "INSERT INTO events (stream_ordering, topological_ordering, event_id, type, room_id, processed,"
                " outlier, depth, origin_server_ts, received_ts, sender, contains_url, instance_name)"
                " VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?)", events)
            await db.insert(
                "INSERT INTO event_json (event_id, room_id, internal_metadata, json, format_version)"
                " VALUES ($1, $2, $3, $4, $5)",
                "INSERT INTO event_json (event_id, room_id, internal_metadata, json, format_version)"
                " VALUES (?, ?, ?, ?, ?)", jsons)
            await db.insert("INSERT INTO event_edges (event_id, prev_event_id, room_id) VALUES ($1, $2, $3)",
                            "INSERT INTO event_edges (event_id, prev_event_id, room_id) VALUES (?, ?, ?)", edges)
            await db.insert("INSERT INTO event_to_state_groups (event_id, state_group) VALUES ($1, $2)",
                            "INSERT INTO event_to_state_groups (event_id, state_group) VALUES (?, ?)", groups)
            await db.insert(
                "INSERT INTO event_search (event_id, room_id, sender, key, vector, origin_server_ts, stream_ordering)"
                " VALUES ($1, $2, $3, $4, to_tsvector('english', $5), $6, $7)",
                "INSERT INTO event_search (event_id, room_id, sender, key, value) VALUES (?, ?, ?, ?, ?)", search)
        await db.execute("DELETE FROM event_forward_extremities WHERE room_id = $1", room_id)
        await db.execute("INSERT INTO event_forward_extremities (event_id, room_id) VALUES ($1, $2)", last_id, room_id)
        if db.engine == "postgres":  # the sequence and the writer's position (read at startup)
            await db.execute(f"SELECT setval('events_stream_seq', {position})")
            await db.execute(f"UPDATE stream_positions SET stream_id = {position} WHERE stream_name = 'events'")
            await db.execute("ANALYZE")  # what autovacuum does within a minute of such a load
    finally:
        await db.close()

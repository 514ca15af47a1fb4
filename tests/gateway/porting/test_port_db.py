"""``gateway port-db``: a SQLite database written by a real running Gateway (the scripted run
of tests/support/scripted_history.py: rooms, messages, relations, media, E2EE keys, key
backup, account data, push rules...) is copied into PostgreSQL, through crashes and Ctrl-C,
without duplicates or losses; the server started on the copy serves the same data."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

from gateway.porting import PortingError, port_db
from gateway.storage import migrate, open_database
from gateway.storage.database import SqliteDatabase
from gateway.config import DatabaseConfig
from tests.conftest import SKIP_POSTGRES, create_postgres_database, drop_postgres_database, free_port
from tests.support.client_api import register_user
from tests.support.gateway_server import running_gateway
from tests.support.scripted_history import Account, History, check_history, make_history
from tests.support.tls import TestCA

pytestmark = [pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.skipif(SKIP_POSTGRES, reason="port-db needs PostgreSQL")]

ROOT = Path(__file__).resolve().parents[3]


class Source:
    def __init__(self, directory: Path, ca: TestCA, ports: tuple[int, int], history: History):
        self.dir, self.ca, self.ports, self.history = directory, ca, ports, history
        self.sqlite_path = directory / "gateway.db"

    def extra(self, database: dict | None = None) -> dict:
        config = {"media_store_path": str(self.dir / "media"), "bcrypt_rounds": 4, "enable_registration": True,
                  "enable_registration_without_verification": True}
        if database is not None:
            config["database"] = database
        return config


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def source(tmp_path_factory) -> Source:
    """A SQLite database left by the scripted run on a real Gateway (stopped afterwards)."""
    directory = tmp_path_factory.mktemp("port-db-source")
    ca = TestCA(directory / "ca")
    ports = (free_port(), free_port())
    import aiohttp

    src = Source(directory, ca, ports, None)  # type: ignore[arg-type]
    async with running_gateway(directory, ca, src.extra(), ports=ports) as gw:
        async with aiohttp.ClientSession() as s:
            alice = await register_user(s, gw.client_url, "alice")
            bob = await register_user(s, gw.client_url, "bob")
        src.history = await make_history(gw.client_url, Account(alice.user_id, "alice-pass"),
                                          Account(bob.user_id, "bob-pass"), directory / "nio")
    return src


@pytest_asyncio.fixture(loop_scope="module")
async def postgres():
    name, args = await create_postgres_database()
    try:
        yield args
    finally:
        await drop_postgres_database(name)


async def _tables(db) -> list[str]:
    if db.engine == "sqlite":
        rows = await db.fetch("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    else:
        rows = await db.fetch("SELECT table_name FROM information_schema.tables "
                              "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'")
    return sorted(r[0] for r in rows if r[0] not in port_db.NOT_COPIED and not r[0].startswith("event_search_"))


async def _content(db, table: str) -> list[tuple]:
    """The rows of ``table`` as comparable tuples (booleans as 0/1), in a stable order."""
    if table == "event_search":  # FTS5 on SQLite, a tsvector on PostgreSQL: the same events
        position = "rowid" if db.engine == "sqlite" else "stream_ordering"
        rows = await db.fetch(f"SELECT {position} AS stream_ordering, event_id, room_id, sender, key FROM event_search")
        assert rows
        if db.engine == "postgres":
            assert await db.fetchval("SELECT COUNT(*) FROM event_search WHERE vector = ''::tsvector") == 0
    else:
        rows = await db.fetch(f'SELECT * FROM "{table}"')
    out = [tuple(sorted((k, int(v) if isinstance(v, bool) else v) for k, v in dict(r).items())) for r in rows]
    return sorted(out, key=repr)


class Crash(Exception):
    pass


async def test_a_port_interrupted_twice_resumes_and_copies_every_row_once(source, postgres, monkeypatch):
    sqlite = await SqliteDatabase.open(str(source.sqlite_path))
    pg = await open_database(DatabaseConfig("postgres", {**postgres, "cp_min": 1, "cp_max": 2}))
    try:
        total = sum([len(await _content(sqlite, t)) for t in await _tables(sqlite)])
        assert total > 300  # a real history, several batches per table

        # 1. A crash between two batches (as a Ctrl-C between transactions would be).
        batches = []

        def crash_after_twenty(table, rows):
            batches.append((table, rows))
            if len(batches) >= 20 and rows and rows % 7 == 0:  # a full batch: its table is not done yet
                raise Crash()

        with pytest.raises(Crash):
            await port_db.port_database(sqlite, pg, batch_size=7, report=lambda _: None, on_batch=crash_after_twenty)
        first = await pg.fetch(f"SELECT * FROM {port_db.PROGRESS_TABLE}")
        assert any(not r["done"] for r in first) and sum(r["rows_copied"] for r in first) > 0

        # 2. A crash inside a batch, after its rows went in but before it committed.
        real_insert, calls = port_db._insert, []

        async def insert_then_crash(txn, table, columns, records, first_rowid):
            await real_insert(txn, table, columns, records, first_rowid)
            calls.append(table)
            if len(calls) == 15:
                raise Crash()

        monkeypatch.setattr(port_db, "_insert", insert_then_crash)
        with pytest.raises(Crash):
            await port_db.port_database(sqlite, pg, batch_size=7, report=lambda _: None)
        monkeypatch.setattr(port_db, "_insert", real_insert)
        second = {r["table_name"]: r["rows_copied"] for r in await pg.fetch(f"SELECT * FROM {port_db.PROGRESS_TABLE}")}
        assert sum(second.values()) > sum(r["rows_copied"] for r in first)

        # 3. The rerun finishes: every table holds exactly SQLite's rows.
        lines = []
        result = await port_db.port_database(sqlite, pg, batch_size=7, report=lines.append)
        assert result.mismatched == []
        assert sum(result.copied.values()) == total - sum(second.values())
        assert any("resuming after" in line for line in lines)
        assert await _tables(pg) == await _tables(sqlite)
        for table in await _tables(sqlite):
            assert await _content(pg, table) == await _content(sqlite, table), table
        # The seeded positions were replaced by the copied ones, not added to.
        assert await _content(pg, "stream_positions") == await _content(sqlite, "stream_positions")

        # 4. A run after the end copies nothing and checks again.
        again = await port_db.port_database(sqlite, pg, batch_size=7, report=lambda _: None)
        assert again.copied == {} and again.mismatched == [] and again.counts == result.counts
    finally:
        await pg.close()
        await sqlite.close()


async def test_sequences_restart_after_the_copied_values(postgres):
    pg = await open_database(DatabaseConfig("postgres", {**postgres, "cp_min": 1, "cp_max": 2}))
    try:
        await pg.execute("CREATE TABLE t_identity (id BIGINT GENERATED BY DEFAULT AS IDENTITY, v TEXT)")
        await pg.execute("CREATE TABLE t_serial (id SERIAL PRIMARY KEY, v TEXT)")
        await pg.execute("INSERT INTO t_identity (id, v) VALUES (41, 'copied')")
        await pg.execute("INSERT INTO t_serial (id, v) VALUES (7, 'copied')")
        assert await port_db.reset_sequences(pg) == {"t_identity.id": 42, "t_serial.id": 8}
        assert await pg.fetchval("INSERT INTO t_identity (v) VALUES ('new') RETURNING id") == 42
        assert await pg.fetchval("INSERT INTO t_serial (v) VALUES ('new') RETURNING id") == 8
    finally:
        await pg.close()


async def _run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "port-db", *args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


def _pg_config(tmp_path: Path, args: dict) -> Path:
    path = tmp_path / "postgres.yaml"
    path.write_text(yaml.safe_dump({"database": {"name": "psycopg2", "args": args}}))
    return path


async def test_port_db_refuses_another_schema_version_and_a_database_in_use(source, postgres, tmp_path):
    config = _pg_config(tmp_path, postgres)
    old = tmp_path / "old.db"
    shutil.copy(source.sqlite_path, old)
    with sqlite3.connect(old) as c:
        latest = c.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        c.execute("DELETE FROM schema_version WHERE version = ?", (latest,))
    rc, _, err = await _run_cli("--sqlite-database", str(old), "--postgres-config", str(config))
    assert rc == 1 and f"schema version {latest - 1}" in err and f"version {latest}" in err, err

    rc, _, err = await _run_cli("--sqlite-database", str(tmp_path / "missing.db"), "--postgres-config", str(config))
    assert rc == 1 and "does not exist" in err and not (tmp_path / "missing.db").exists()

    pg = await open_database(DatabaseConfig("postgres", {**postgres, "cp_min": 1, "cp_max": 1}))
    try:
        await migrate(pg)
        await pg.execute("INSERT INTO users (user_id, created_ts) VALUES ('@someone:live.example', 0)")
    finally:
        await pg.close()
    rc, _, err = await _run_cli("--sqlite-database", str(source.sqlite_path), "--postgres-config", str(config))
    assert rc == 1 and "already holds data (table users has 1 rows)" in err, err


async def test_ctrl_c_then_rerun_and_the_server_on_the_copy_serves_the_same_data(source, postgres, tmp_path):
    config = _pg_config(tmp_path, postgres)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "port-db", "--sqlite-database", str(source.sqlite_path),
        "--postgres-config", str(config), "--batch-size", "2", cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    first_table = await proc.stdout.readline()  # one table done, dozens to go
    assert first_table.strip().endswith(b"rows"), first_table
    proc.send_signal(signal.SIGINT)
    out, err = await proc.communicate()
    assert proc.returncode == 130, (out, err)
    assert b"run the same command again" in err

    rc, out, err = await _run_cli("--sqlite-database", str(source.sqlite_path), "--postgres-config", str(config))
    assert rc == 0, err
    assert "DIFFERENT" not in out, out
    now, total = re.search(r"done: (\d+) rows copied in this run, (\d+) in", out).groups()
    assert 0 < int(now) < int(total)  # the interrupted run had copied the rest

    database = {"name": "psycopg2", "args": postgres}
    async with running_gateway(source.dir, source.ca, source.extra(database), ports=source.ports) as gw:
        assert gw.config.database.engine == "postgres"
        await check_history(gw.client_url, source.history)

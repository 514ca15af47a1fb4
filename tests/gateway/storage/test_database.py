"""The database API behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import DatabaseConfig
from gateway.storage import IntegrityError, SchemaTooNewError, migrate, open_database
from gateway.storage.database import split_sql_script, to_sqlite_sql
from gateway.storage.migrations import load_migrations
from tests.conftest import SKIP_POSTGRES, create_postgres_database, drop_postgres_database, free_port


async def test_placeholders_and_round_trip(database):
    await database.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT, b BYTEA, f BOOLEAN)")
    await database.execute("INSERT INTO t (k, n, b, f) VALUES ($1, $2, $3, $4)", "a", 2**40, b"\x00\xff", True)
    row = await database.fetchrow("SELECT k, n, b, f FROM t WHERE k = $1", "a")
    assert row["k"] == "a" and row[1] == 2**40 and bytes(row["b"]) == b"\x00\xff" and bool(row["f"])
    assert await database.fetchval("SELECT n FROM t WHERE k = $1", "missing") is None


async def test_placeholder_reused_and_dollar_in_literal(database):
    assert await database.fetchval("SELECT $1 || '$2' || $1", "x") == "x$2x"


async def test_execute_returns_rowcount(database):
    await database.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER)")
    await database.executemany("INSERT INTO t (k, n) VALUES ($1, $2)", [("a", 1), ("b", 2), ("c", 3)])
    assert await database.execute("UPDATE t SET n = n + 1 WHERE n >= $1", 2) == 2
    assert [r["k"] for r in await database.fetch("SELECT k FROM t ORDER BY k")] == ["a", "b", "c"]


async def test_integrity_error_is_engine_neutral(database):
    await database.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    await database.execute("INSERT INTO t (k) VALUES ($1)", "a")
    with pytest.raises(IntegrityError):
        await database.execute("INSERT INTO t (k) VALUES ($1)", "a")


async def test_copy_rows_writes_many_rows_and_refuses_duplicates(database):
    await database.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT, f BOOLEAN, s TEXT)")
    rows = [(f"k{i}", i, i % 2 == 0, None if i % 3 else "x") for i in range(2500)]
    async with database.transaction() as txn:
        await txn.copy_rows("t", ("k", "n", "f", "s"), rows)
    got = await database.fetch("SELECT k, n, f, s FROM t ORDER BY n")
    assert [(r[0], r[1], bool(r[2]), r[3]) for r in got] == rows
    with pytest.raises(IntegrityError):
        async with database.transaction() as txn:
            await txn.copy_rows("t", ("k", "n", "f", "s"), [("new", 1, True, None), ("k7", 7, False, None)])
    assert await database.fetchval("SELECT COUNT(*) FROM t") == 2500  # the whole batch rolled back


async def test_transaction_commits_and_rolls_back(database):
    await database.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    async with database.transaction() as txn:
        await txn.execute("INSERT INTO t (k) VALUES ($1)", "kept")
    with pytest.raises(RuntimeError):
        async with database.transaction() as txn:
            await txn.execute("INSERT INTO t (k) VALUES ($1)", "lost")
            assert await txn.fetchval("SELECT COUNT(*) FROM t") == 2
            raise RuntimeError("boom")
    assert [r[0] for r in await database.fetch("SELECT k FROM t")] == ["kept"]


async def test_transaction_statements_in_order_and_a_bad_batch_rolls_all_back(database):
    """Inside a transaction the writes take effect in order, whatever the engine groups
    into one trip (SQLite sends executemany rows with the next statement): reads see
    them, and a duplicate among them fails the transaction as a whole."""
    await database.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER)")
    async with database.transaction() as txn:
        await txn.executemany("INSERT INTO t (k, n) VALUES ($1, $2)", [("a", 1), ("b", 2)])
        await txn.executemany("UPDATE t SET n = n * 10 WHERE k = $1", [("a",)])
        assert await txn.execute("DELETE FROM t WHERE n = $1", 2) == 1
        await txn.executemany("INSERT INTO t (k, n) VALUES ($1, $2)", [("c", 3)])
        assert [(r[0], r[1]) for r in await txn.fetch("SELECT k, n FROM t ORDER BY k")] == [("a", 10), ("c", 3)]
        await txn.executemany("INSERT INTO t (k, n) VALUES ($1, $2)", [("d", 4)])
    assert [r[0] for r in await database.fetch("SELECT k FROM t ORDER BY k")] == ["a", "c", "d"]
    with pytest.raises(IntegrityError):
        async with database.transaction() as txn:
            await txn.executemany("INSERT INTO t (k, n) VALUES ($1, $2)", [("e", 5)])
            await txn.executemany("INSERT INTO t (k, n) VALUES ($1, $2)", [("a", 6)])  # duplicate
            await txn.execute("UPDATE t SET n = 0 WHERE k = $1", "c")
    with pytest.raises(IntegrityError):  # the duplicate is the last thing before the commit
        async with database.transaction() as txn:
            await txn.executemany("INSERT INTO t (k, n) VALUES ($1, $2)", [("f", 7), ("c", 8)])
    rows = await database.fetch("SELECT k, n FROM t ORDER BY k")
    assert [(r[0], r[1]) for r in rows] == [("a", 10), ("c", 3), ("d", 4)]
    async with database.transaction():  # an empty transaction commits, and the database is usable
        pass
    assert await database.fetchval("SELECT COUNT(*) FROM t") == 3


async def test_concurrent_transactions_do_not_lose_updates(database):
    await database.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    await database.execute("INSERT INTO counter (id, n) VALUES (1, 0)")

    async def bump():
        async with database.transaction() as txn:
            # Row lock on PostgreSQL; the whole database on SQLite (BEGIN IMMEDIATE).
            lock = " FOR UPDATE" if txn.engine == "postgres" else ""
            n = await txn.fetchval(f"SELECT n FROM counter WHERE id = 1{lock}")
            await asyncio.sleep(0)
            await txn.execute("UPDATE counter SET n = $1 WHERE id = 1", n + 1)

    await asyncio.gather(*(bump() for _ in range(20)))
    assert await database.fetchval("SELECT n FROM counter WHERE id = 1") == 20


async def test_migrations_applied_once_and_recorded(database):
    latest = load_migrations(database.engine)[-1].version
    assert await database.fetchval("SELECT MAX(version) FROM schema_version") == latest
    # Running again is a no-op.
    assert await migrate(database) == latest
    assert await database.fetchval("SELECT COUNT(*) FROM schema_version") == latest


async def test_newer_schema_is_refused(database_config):
    db = await open_database(database_config)
    try:
        await migrate(db)
        await db.execute("INSERT INTO schema_version (version) VALUES ($1)", 9999)
        with pytest.raises(SchemaTooNewError, match="9999"):
            await migrate(db)
    finally:
        await db.close()


def test_sql_helpers():
    assert to_sqlite_sql("SELECT $1, '$2', $10") == "SELECT ?1, '$2', ?10"
    script = "-- comment\nCREATE TABLE a (x INT);\n\nCREATE INDEX i ON a (x);\n"
    assert split_sql_script(script) == ["CREATE TABLE a (x INT)", "CREATE INDEX i ON a (x)"]


def test_migrations_must_be_numbered_once_each():
    from gateway.storage.migrations import select_migrations

    files = [("0001_a.sql", "A"), ("0002_b.sql", "B"), ("0002_b.postgres.sql", "B-pg"), ("README", "x")]
    assert [(m.version, m.sql) for m in select_migrations(files, "postgres")] == [(1, "A"), (2, "B-pg")]
    assert [(m.version, m.sql) for m in select_migrations(files, "sqlite")] == [(1, "A"), (2, "B")]
    with pytest.raises(RuntimeError, match="two schema migrations are numbered 0002: b and c"):
        select_migrations(files + [("0002_c.sql", "C")], "sqlite")
    with pytest.raises(RuntimeError, match="not numbered 1..N"):
        select_migrations([("0001_a.sql", "A"), ("0003_c.sql", "C")], "sqlite")


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@pytest.mark.skipif(SKIP_POSTGRES, reason="GATEWAY_TEST_SKIP_POSTGRES=1: no PostgreSQL reachable")
async def test_postgres_startup_waits_for_the_server():
    """PostgreSQL that comes up after us (a container started beside it): we retry."""
    name, real = await create_postgres_database()
    port = free_port()
    args = {**real, "host": "127.0.0.1", "port": port, "connect_retry_ms": 30_000}

    async def relay(reader, writer):
        up_reader, up_writer = await asyncio.open_connection(real["host"], real["port"])
        await asyncio.gather(_forward(reader, up_writer), _forward(up_reader, writer))

    try:
        opening = asyncio.create_task(open_database(DatabaseConfig("postgres", args)))
        # Nothing listens yet: the open keeps retrying instead of failing.
        done, _ = await asyncio.wait({opening}, timeout=1.5)
        assert not done
        server = await asyncio.start_server(relay, "127.0.0.1", port)
        try:
            db = await asyncio.wait_for(opening, 30)
            assert await db.fetchval("SELECT 41 + 1") == 42
            await db.close()
        finally:
            server.close()

        # And gives up once the time is over, with the connection error.
        args["connect_retry_ms"] = 300
        with pytest.raises(OSError):
            await open_database(DatabaseConfig("postgres", args))
    finally:
        await drop_postgres_database(name)


async def test_postgres_connections_return_to_the_pool_outside_any_transaction(database_config):
    """The pool's reset only ends a transaction left open (no per-query reset round trip)."""
    if database_config.engine != "postgres":
        pytest.skip("PostgreSQL's pool")
    from gateway.config import DatabaseConfig

    db = await open_database(DatabaseConfig("postgres", {**database_config.args, "cp_min": 1, "cp_max": 1}))
    try:
        async with db._pool.acquire() as conn:  # as a cancelled request could leave it
            await conn.execute("BEGIN")
            await conn.execute("CREATE TABLE left_open (k INTEGER)")
        # The one connection: not in a transaction, and the table was rolled back.
        assert await db.fetchval("SELECT count(*) FROM pg_tables WHERE tablename = 'left_open'") == 0
        async with db._pool.acquire() as conn:
            assert not conn.is_in_transaction()
        await db.execute("SET application_name = 'kept'")  # session state stays (nothing here relies on it)
        assert await db.fetchval("SHOW application_name") == "kept"
    finally:
        await db.close()


async def test_a_named_lock_excludes_other_holders_also_of_another_process(database_config):
    """``named_lock``: one holder at a time, within a process and, on PostgreSQL, across
    two connections to the database (two processes); a holder cancelled while waiting
    leaves the lock free."""
    first = await open_database(database_config)
    # PostgreSQL: a second "process" (its own pool and lock connection); SQLite: one process.
    second = await open_database(database_config) if database_config.engine == "postgres" else first
    try:
        order: list[str] = []
        held = asyncio.Event()
        release = asyncio.Event()

        async def holder():
            async with first.named_lock("room:!a"):
                order.append("first in")
                held.set()
                await release.wait()
                order.append("first out")

        task = asyncio.create_task(holder())
        await held.wait()
        waiter = asyncio.create_task(_take(second, "room:!a", order))
        cancelled = asyncio.create_task(_take(second, "room:!a", order, "cancelled"))
        # Another name is not blocked; once it is taken, the waiter asked before it did
        # (the second's lock connection answers in turn) and was refused.
        await _take(second, "room:!b", order)
        assert not waiter.done() and not cancelled.done()
        cancelled.cancel()
        release.set()
        await task
        await waiter
        assert order == ["first in", "second room:!b", "first out", "second room:!a"]
        async with first.named_lock("room:!a"):  # free again on both sides
            pass
    finally:
        if second is not first:
            await second.close()
        await first.close()


async def _take(db, name: str, order: list[str], label: str = "second") -> None:
    async with db.named_lock(name):
        order.append(f"{label} {name}")

"""One async database API over SQLite (aiosqlite) and PostgreSQL (asyncpg).

SQL is written once, in PostgreSQL's dialect with ``$1, $2`` placeholders; the SQLite
engine rewrites the placeholders to SQLite's numbered ``?1, ?2`` form. Rows support
both ``row["column"]`` and ``row[0]``.

Usage::

    db = await open_database(config.database)
    await db.execute("INSERT INTO users (name) VALUES ($1)", name)
    async with db.transaction() as txn:
        row = await txn.fetchrow("SELECT ... WHERE name = $1", name)
        await txn.execute(...)
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import re
import hashlib
import importlib.util
import sqlite3
import sys
import weakref
from functools import lru_cache
from typing import Any, AsyncIterator, Iterable, Mapping, Sequence

import aiosqlite

log = logging.getLogger(__name__)


def _lazy_module(name: str) -> Any:
    """The module ``name``, executed at its first attribute access (importlib's
    ``LazyLoader``): asyncpg costs a server on SQLite a few MiB it never uses."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None, name
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


asyncpg = _lazy_module("asyncpg")

__all__ = [
    "Connection",
    "Database",
    "SqliteDatabase",
    "PostgresDatabase",
    "IntegrityError",
    "UnstorableTextError",
    "open_database",
]

Row = Mapping[str, Any]


class IntegrityError(Exception):
    """A unique or foreign key constraint was violated (either engine)."""


class UnstorableTextError(ValueError):
    """A text value holds a NUL character, which PostgreSQL cannot store. Refused on SQLite
    too (single statements), so that both engines answer the same bad input the same way."""


def _refuse_nul(args: Sequence[Any]) -> None:
    for a in args:
        if type(a) is str and "\x00" in a:
            raise UnstorableTextError("text with a NUL character cannot be stored")


class Connection(abc.ABC):
    """The query methods shared by a database and a transaction."""

    engine: str

    @abc.abstractmethod
    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; returns the number of rows it changed."""

    @abc.abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each argument tuple in ``rows``."""

    @abc.abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        """All rows of a query."""

    async def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert many rows at once (bulk writes such as a join's state): ``COPY`` on
        PostgreSQL, one prepared INSERT on SQLite. No conflict handling: a duplicate key
        raises IntegrityError (and spoils a PostgreSQL transaction)."""
        names = ", ".join(columns)
        await self.executemany(
            f"INSERT INTO {table} ({names}) VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))})", rows)

    async def fetchrow(self, sql: str, *args: Any) -> Any | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]


class Database(Connection):
    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        """A transaction: committed when the block ends, rolled back if it raises."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    def named_lock(self, name: str) -> contextlib.AbstractAsyncContextManager[None]:
        """A lock by name that every process on this database respects (PostgreSQL: a
        session advisory lock); on SQLite, which serves one process, a lock in memory.
        Not re-entrant: a task holding it must not take it again."""
        return _local_lock(self, name)

    async def executescript(self, script: str) -> None:
        """Run several ``;``-separated statements in one transaction (migrations)."""
        async with self.transaction() as txn:
            for stmt in split_sql_script(script):
                await txn.execute(stmt)


def _local_lock(db: Any, name: str) -> asyncio.Lock:
    locks = db.__dict__.setdefault("_named_locks", weakref.WeakValueDictionary())
    lock = locks.get(name)
    if lock is None:
        lock = locks[name] = asyncio.Lock()
    return lock


# --- SQLite -------------------------------------------------------------------------


_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\$(\d+)")


@lru_cache(maxsize=2048)
def to_sqlite_sql(sql: str) -> str:
    """``$1`` -> ``?1`` outside string literals."""
    return _PLACEHOLDER.sub(lambda m: f"?{m.group(1)}" if m.group(1) else m.group(0), sql)


def split_sql_script(script: str) -> list[str]:
    """Split a migration file into statements (``;`` at line end, ``--`` comments dropped)."""
    out, buf = [], []
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        buf.append(line)
        if stripped.endswith(";"):
            out.append("\n".join(buf).rstrip().rstrip(";"))
            buf = []
    if any(s.strip() for s in buf):
        out.append("\n".join(buf))
    return out


class _SqliteConn(Connection):
    engine = "sqlite"

    def __init__(self, conn: aiosqlite.Connection):
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        _refuse_nul(args)
        try:
            cur = await self._conn.execute(to_sqlite_sql(sql), args)
        except sqlite3.IntegrityError as e:
            raise IntegrityError(str(e)) from e
        # One trip to the connection's thread: the cursor is not closed there (a second
        # trip), it is dropped with its last reference, as executemany's are.
        return cur.rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            await self._conn.executemany(to_sqlite_sql(sql), [tuple(r) for r in rows])
        except sqlite3.IntegrityError as e:
            raise IntegrityError(str(e)) from e

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        _refuse_nul(args)
        try:  # one trip to the connection's thread (execute, fetchall and close were three)
            return list(await self._conn.execute_fetchall(to_sqlite_sql(sql), args))
        except sqlite3.IntegrityError as e:  # e.g. INSERT ... RETURNING
            raise IntegrityError(str(e)) from e


class _SqliteTxn(_SqliteConn):
    """The connection inside a transaction. ``executemany`` returns nothing, so its rows
    wait here and go to the connection's thread with the next statement whose answer is
    awaited (or the COMMIT): one trip for several statements (a batch of events writes
    a dozen). A constraint violation of a waiting statement is raised by that next
    statement, still inside the transaction, which then rolls back."""

    def __init__(self, conn: aiosqlite.Connection):
        super().__init__(conn)
        # BEGIN goes with the first statement too.
        self._waiting: list[tuple[str, list[tuple] | None]] = [("BEGIN IMMEDIATE", None)]

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = [tuple(r) for r in rows]
        if batch:
            self._waiting.append((to_sqlite_sql(sql), batch))

    async def execute(self, sql: str, *args: Any) -> int:
        _refuse_nul(args)
        return await self._run(to_sqlite_sql(sql), args, fetch=False)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        _refuse_nul(args)
        return await self._run(to_sqlite_sql(sql), args, fetch=True)

    async def commit(self) -> None:
        await self._run("COMMIT", (), fetch=False)

    def discard(self) -> None:
        self._waiting = []

    async def _run(self, sql: str, args: Sequence[Any], *, fetch: bool) -> Any:
        waiting, self._waiting = self._waiting, []
        if not waiting:  # nothing waits: a single statement, as outside a transaction
            return await (_SqliteConn.fetch(self, sql, *args) if fetch else _SqliteConn.execute(self, sql, *args))
        raw = self._conn._conn  # the sqlite3 connection, used only in aiosqlite's thread (below)

        def in_thread() -> Any:
            for q, rows in waiting:
                if rows is None:
                    raw.execute(q)
                else:
                    raw.executemany(q, rows)
            cur = raw.execute(sql, args)
            try:
                return cur.fetchall() if fetch else cur.rowcount
            finally:
                cur.close()

        try:
            # aiosqlite's queue to its thread (Connection._execute): the statements run
            # there in order, as separate calls would.
            return await self._conn._execute(in_thread)
        except sqlite3.IntegrityError as e:
            raise IntegrityError(str(e)) from e


class SqliteDatabase(_SqliteConn, Database):
    """One connection in WAL mode. Statements outside a transaction autocommit; a
    transaction holds the connection exclusively until it ends."""

    def __init__(self, conn: aiosqlite.Connection):
        super().__init__(conn)
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> "SqliteDatabase":
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        return cls(conn)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._lock:
            return await super().execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self.transaction() as txn:
            await txn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._lock:
            return await super().fetch(sql, *args)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._lock:
            txn = _SqliteTxn(self._conn)
            try:
                yield txn
                await txn.commit()
            except BaseException:
                txn.discard()
                if self._conn.in_transaction:  # not if BEGIN itself failed
                    await self._conn.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()


# --- PostgreSQL ---------------------------------------------------------------------


class _PgConn(Connection):
    engine = "postgres"

    def __init__(self, conn: asyncpg.Connection):
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            status = await self._conn.execute(sql, *args)
        except asyncpg.IntegrityConstraintViolationError as e:
            raise IntegrityError(str(e)) from e
        except asyncpg.CharacterNotInRepertoireError as e:
            raise UnstorableTextError(str(e)) from e
        return _rowcount(status)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            await self._conn.executemany(sql, list(rows))
        except asyncpg.IntegrityConstraintViolationError as e:
            raise IntegrityError(str(e)) from e
        except asyncpg.CharacterNotInRepertoireError as e:
            raise UnstorableTextError(str(e)) from e

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        try:
            return await self._conn.fetch(sql, *args)
        except asyncpg.IntegrityConstraintViolationError as e:
            raise IntegrityError(str(e)) from e
        except asyncpg.CharacterNotInRepertoireError as e:
            raise UnstorableTextError(str(e)) from e

    async def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if len(rows) < 50:  # COPY's own round trips cost more than a few INSERTs
            return await super().copy_rows(table, columns, rows)
        try:
            await self._conn.copy_records_to_table(table, records=rows, columns=list(columns))
        except asyncpg.IntegrityConstraintViolationError as e:
            raise IntegrityError(str(e)) from e
        except asyncpg.CharacterNotInRepertoireError as e:
            raise UnstorableTextError(str(e)) from e


async def _end_open_transaction(conn: asyncpg.Connection) -> None:
    """What a connection needs before going back to the pool: no transaction left open
    (a cancelled one). asyncpg's default reset (advisory unlocks, CLOSE ALL, UNLISTEN,
    RESET ALL) costs a round trip per query, for session state nothing here sets."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def _rowcount(status: str) -> int:
    parts = status.split()
    return int(parts[-1]) if parts and parts[-1].isdigit() else 0


class _AdvisoryLocks:
    """Named locks shared by every process on one PostgreSQL database: session advisory
    locks held on one connection of this process's own (outside the pool, so that
    waiting for a lock never starves queries of connections). Within the process a task
    first takes an ``asyncio.Lock`` of the name; then it asks PostgreSQL with
    ``pg_try_advisory_lock`` until it gets the lock (another process holds it meanwhile:
    asked again after 2 ms, doubling to 100 ms). A process that dies or loses the
    connection releases its locks with it."""

    def __init__(self, connect_kwargs: Mapping[str, Any]):
        self._kwargs = dict(connect_kwargs)
        self._conn: asyncpg.Connection | None = None
        self._conn_lock = asyncio.Lock()
        self._local: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._cleanup: set[asyncio.Task] = set()
        #: Names this process is waiting for because another process holds them.
        self.contended: dict[str, int] = {}

    @staticmethod
    def key(name: str) -> int:
        """The advisory lock's 64-bit key: the first 8 bytes of the name's SHA-256."""
        return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big", signed=True)

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        local = self._local.get(name)
        if local is None:
            local = self._local[name] = asyncio.Lock()
        async with local:
            key = self.key(name)
            await self._acquire(key, name)
            try:
                yield
            finally:
                release = asyncio.ensure_future(self._release(key))
                self._cleanup.add(release)
                release.add_done_callback(self._cleanup.discard)
                await asyncio.shield(release)  # released even if this task is cancelled

    async def _query(self, sql: str, key: int) -> Any:
        async with self._conn_lock:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(**self._kwargs)
            try:
                return await self._conn.fetchval(sql, key)
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
                conn, self._conn = self._conn, None
                conn.terminate()  # its locks go with it
                raise

    async def _acquire(self, key: int, name: str) -> None:
        delay = 0.002
        waiting = False
        try:
            while True:
                if await self._try(key):
                    return
                if not waiting:
                    waiting = True
                    self.contended[name] = self.contended.get(name, 0) + 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)
        finally:
            if waiting:
                self.contended[name] -= 1
                if not self.contended[name]:
                    del self.contended[name]

    async def _try(self, key: int) -> bool:
        attempt = asyncio.ensure_future(self._query("SELECT pg_try_advisory_lock($1)", key))
        try:
            return bool(await asyncio.shield(attempt))
        except asyncio.CancelledError:
            # The answer may still say "yours": give it back then.
            attempt.add_done_callback(lambda t: self._release_if_taken(t, key))
            raise

    def _release_if_taken(self, attempt: asyncio.Future, key: int) -> None:
        if not attempt.cancelled() and attempt.exception() is None and attempt.result():
            task = asyncio.ensure_future(self._release(key))
            self._cleanup.add(task)
            task.add_done_callback(self._cleanup.discard)

    async def _release(self, key: int) -> None:
        try:
            await self._query("SELECT pg_advisory_unlock($1)", key)
        except Exception as e:  # the connection is gone, and the lock with it
            log.warning("releasing advisory lock %d failed: %s", key, e)

    async def close(self) -> None:
        if self._cleanup:
            await asyncio.gather(*self._cleanup, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


class PostgresDatabase(Database):
    engine = "postgres"

    def __init__(self, pool: asyncpg.Pool, connect_kwargs: Mapping[str, Any] | None = None):
        self._pool = pool
        self._locks = _AdvisoryLocks(connect_kwargs or {})

    def named_lock(self, name: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self._locks.hold(name)

    @property
    def contended_locks(self) -> dict[str, int]:
        """Named locks this process waits for because another process holds them."""
        return self._locks.contended

    @classmethod
    async def open(cls, args: Mapping[str, Any]) -> "PostgresDatabase":
        """Connect, waiting up to ``connect_retry_ms`` for a server that is not up yet
        (refused, unresolvable, or still starting), with a log line per attempt."""
        kwargs = {k: v for k, v in args.items() if k in ("user", "password", "database", "host", "port")}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.get("connect_retry_ms", 0) / 1000
        delay = 0.5
        while True:
            try:
                pool = await asyncpg.create_pool(
                    min_size=args.get("cp_min", 5), max_size=args.get("cp_max", 10), reset=_end_open_transaction,
                    **kwargs,
                )
                return cls(pool, kwargs)
            except (OSError, asyncio.TimeoutError, asyncpg.CannotConnectNowError) as e:
                left = deadline - loop.time()
                if left <= 0:
                    raise
                log.warning("PostgreSQL at %s:%s is not reachable yet (%s); retrying for %d more seconds",
                            kwargs.get("host", "localhost"), kwargs.get("port", 5432), e, left)
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, 5.0)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._pool.acquire() as conn:
            return await _PgConn(conn).execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self.transaction() as txn:
            await txn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._pool.acquire() as conn:
            return await _PgConn(conn).fetch(sql, *args)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                yield _PgConn(conn)

    async def close(self) -> None:
        await self._locks.close()
        await self._pool.close()


async def open_database(db_config) -> Database:
    """Open the database described by a ``DatabaseConfig`` (no migrations)."""
    if db_config.engine == "sqlite":
        return await SqliteDatabase.open(db_config.sqlite_path)
    return await PostgresDatabase.open(db_config.args)

"""``gateway port-db``: copy a SQLite database of ours into PostgreSQL.

The PostgreSQL database is migrated to the code's schema first; the SQLite one must already
be at that version (the server migrates it at startup). Each table is copied in batches in
SQLite ``rowid`` order; a batch and the table's position in ``port_db_progress`` commit in
one PostgreSQL transaction, so a crash or Ctrl-C loses at most the batch in flight and a
rerun goes on from the last committed position, with neither duplicates nor gaps. Row
counts per table are compared at the end. See docs/porting.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from ..storage.database import Connection, Database, SqliteDatabase
from ..storage.migrations import current_version, load_migrations, migrate
from ..storage.search import PG_CONFIG
from . import PortingError

log = logging.getLogger(__name__)

PROGRESS_TABLE = "port_db_progress"
#: Tables the copy leaves alone: each side keeps its own migration record (they are equal).
NOT_COPIED = frozenset({"schema_version", PROGRESS_TABLE})
#: Where a copy starts: below every rowid (an FTS5 table's rowids are stream positions,
#: negative for backfilled events).
FIRST_ROWID = -(2 ** 63)
#: The tables SQLite makes behind an FTS5 virtual table (never copied themselves).
_FTS5_SHADOWS = ("_data", "_idx", "_content", "_docsize", "_config")


@dataclass(frozen=True)
class EngineSpecific:
    """A table each engine keeps its own way: read from SQLite with ``select`` (rowid first,
    then the values for ``insert``), written to PostgreSQL with ``insert``."""

    select: str
    insert: str


#: Migration 0031: server-side search is an FTS5 table on SQLite (rowid = stream position,
#: the text in ``value``) and a tsvector on PostgreSQL.
ENGINE_SPECIFIC = {
    "event_search": EngineSpecific(
        select="SELECT rowid, rowid, value, event_id, room_id, sender, key FROM event_search",
        insert="INSERT INTO event_search (stream_ordering, vector, event_id, room_id, sender, key) "
               f"VALUES ($1, to_tsvector('{PG_CONFIG}', $2), $3, $4, $5, $6)"),
}


@dataclass
class PortReport:
    """What a run did: rows copied now, and each table's row count on both sides."""

    copied: dict[str, int] = field(default_factory=dict)
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # table -> (sqlite, postgres)
    sequences: dict[str, int] = field(default_factory=dict)  # "table.column" -> next value

    @property
    def mismatched(self) -> list[str]:
        return [t for t, (a, b) in sorted(self.counts.items()) if a != b]


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def port_database(sqlite: SqliteDatabase, pg: Database, *, batch_size: int = 5000,
                        report: Callable[[str], None] = log.info,
                        on_batch: Callable[[str, int], None] | None = None) -> PortReport:
    """Copy every table of ``sqlite`` into ``pg`` (resuming an earlier run). ``on_batch(table,
    rows)`` is called after each committed batch. Raises PortingError when it refuses."""
    if pg.engine != "postgres":
        raise PortingError("the target database of port-db must be PostgreSQL (database.name: psycopg2)")
    await check_schema_version(sqlite)
    await migrate(pg)
    await pg.execute(f"CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (table_name TEXT PRIMARY KEY, "
                     "last_rowid BIGINT NOT NULL, rows_copied BIGINT NOT NULL, done BOOLEAN NOT NULL)")
    tables = await _matching_tables(sqlite, pg)
    progress = {r["table_name"]: r for r in await pg.fetch(f"SELECT * FROM {PROGRESS_TABLE}")}
    if not progress:
        await _refuse_if_in_use(pg, tables)
    out = PortReport()
    for table, columns in tables.items():
        row = progress.get(table)
        if row is not None and row["done"]:
            continue
        out.copied[table] = await _copy_table(sqlite, pg, table, columns, row, batch_size, report, on_batch)
    out.sequences = await reset_sequences(pg)
    for table in tables:
        out.counts[table] = (await _count(sqlite, table), await _count(pg, table))
    return out


async def check_schema_version(sqlite: Database) -> int:
    """The SQLite database's schema version, which must be this code's (PortingError if not)."""
    have = await current_version(sqlite)
    want = load_migrations(sqlite.engine)[-1].version
    if have != want:
        raise PortingError(
            f"the SQLite database is at schema version {have}, and this Gateway's schema is version {want}: "
            + ("start this Gateway once on the SQLite database (it migrates at startup), stop it, then port"
               if have < want else "port it with the newer Gateway that last used it"))
    return have


async def _matching_tables(sqlite: Database, pg: Database) -> dict[str, list[str]]:
    """Table -> columns (in PostgreSQL's order), the same on both sides or PortingError."""
    rows = await sqlite.fetch(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
    virtual = [r["name"] for r in rows if (r["sql"] or "").upper().startswith("CREATE VIRTUAL TABLE")]
    shadows = {f"{v}{suffix}" for v in virtual for suffix in _FTS5_SHADOWS}
    names = [r["name"] for r in rows if r["name"] not in shadows]
    pg_columns: dict[str, list[str]] = {}
    for r in await pg.fetch(
            "SELECT c.table_name, c.column_name FROM information_schema.columns c "
            "JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
            "WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' "
            "ORDER BY c.table_name, c.ordinal_position"):
        pg_columns.setdefault(r["table_name"], []).append(r["column_name"])
    tables: dict[str, list[str]] = {}
    for name in names:
        if name in NOT_COPIED:
            continue
        if name not in pg_columns:
            raise PortingError(f"table {name} of the SQLite database is not in the PostgreSQL schema")
        if name in ENGINE_SPECIFIC:
            tables[name] = pg_columns[name]
            continue
        sqlite_columns = {r["name"] for r in await sqlite.fetch(f"PRAGMA table_info({quote_ident(name)})")}
        if sqlite_columns != set(pg_columns[name]):
            raise PortingError(f"table {name} has columns {sorted(sqlite_columns)} in SQLite and "
                               f"{sorted(pg_columns[name])} in PostgreSQL")
        tables[name] = pg_columns[name]
    missing = set(pg_columns) - set(tables) - NOT_COPIED
    if missing:
        raise PortingError(f"tables {sorted(missing)} of the PostgreSQL schema are not in the SQLite database")
    return tables


async def _refuse_if_in_use(pg: Database, tables: dict[str, list[str]]) -> None:
    """A first run writes into a PostgreSQL database that holds nothing beyond what the
    migrations put there (compared with a freshly migrated database): never over a live one."""
    fresh = await SqliteDatabase.open(":memory:")
    try:
        await migrate(fresh)
        seeded = {t: await _count(fresh, t) for t in tables}
    finally:
        await fresh.close()
    for table in tables:
        n = await _count(pg, table)
        if n > seeded[table]:
            raise PortingError(f"the PostgreSQL database already holds data (table {table} has {n} rows): "
                               "port into a new, empty database")


async def _copy_table(sqlite: Database, pg: Database, table: str, columns: list[str], progress: Any,
                      batch_size: int, report: Callable[[str], None],
                      on_batch: Callable[[str, int], None] | None) -> int:
    if progress is None:
        async with pg.transaction() as txn:  # what the migrations seeded goes: SQLite's rows replace it
            await txn.execute(f"DELETE FROM {quote_ident(table)}")
            await txn.execute(f"INSERT INTO {PROGRESS_TABLE} (table_name, last_rowid, rows_copied, done) "
                              "VALUES ($1, $2, 0, FALSE)", table, FIRST_ROWID)
        last, copied = FIRST_ROWID, 0
    else:
        last, copied = progress["last_rowid"], progress["rows_copied"]
        report(f"{table}: resuming after {copied} rows")
    special = ENGINE_SPECIFIC.get(table)
    if special is not None:
        select, converters = special.select, None
    else:
        select = f"SELECT rowid, {', '.join(quote_ident(c) for c in columns)} FROM {quote_ident(table)}"
        converters = await _converters(pg, table, columns)
    select += " WHERE rowid > $1 ORDER BY rowid LIMIT $2"
    now = 0
    while True:
        rows = await sqlite.fetch(select, last, batch_size)
        done = len(rows) < batch_size
        records = [tuple(r[1:]) if converters is None else tuple(conv(v) for conv, v in zip(converters, r[1:]))
                   for r in rows]
        if rows:
            last = rows[-1][0]
        async with pg.transaction() as txn:
            if records and special is not None:
                await _insert_with(txn, table, special.insert, records, first_rowid=rows[0][0])
            elif records:
                await _insert(txn, table, columns, records, first_rowid=rows[0][0])
            await txn.execute(f"UPDATE {PROGRESS_TABLE} SET last_rowid = $2, rows_copied = rows_copied + $3, "
                              "done = $4 WHERE table_name = $1", table, last, len(records), done)
        copied += len(records)
        now += len(records)
        if on_batch is not None:
            on_batch(table, copied)
        if done:
            report(f"{table}: {copied} rows")
            return now


async def _insert(txn: Connection, table: str, columns: list[str], records: list[tuple], first_rowid: int) -> None:
    try:
        await txn.copy_rows(table, columns, records)  # our names need no quoting (COPY quotes them itself)
    except Exception as e:  # asyncpg's DataError and friends: name the rows, not a stack trace
        raise _unstorable(table, first_rowid, e) from e


async def _insert_with(txn: Connection, table: str, sql: str, records: list[tuple], first_rowid: int) -> None:
    try:
        await txn.executemany(sql, records)
    except Exception as e:
        raise _unstorable(table, first_rowid, e) from e


def _unstorable(table: str, first_rowid: int, e: Exception) -> PortingError:
    return PortingError(f"table {table}: the rows from SQLite rowid {first_rowid} on cannot be stored in "
                        f"PostgreSQL: {e}")


def _to_bool(v: Any) -> Any:
    return v if v is None else bool(v)


def _to_int(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v


async def _converters(pg: Database, table: str, columns: list[str]) -> list[Callable[[Any], Any]]:
    """SQLite keeps booleans as 0/1 (and may keep a whole number as a float): per column, what
    makes a SQLite value the Python type PostgreSQL's binary COPY wants."""
    types = {r["column_name"]: r["data_type"] for r in await pg.fetch(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = $1", table)}
    by_type = {"boolean": _to_bool, "bigint": _to_int, "integer": _to_int, "smallint": _to_int}
    return [by_type.get(types[c], lambda v: v) for c in columns]


async def reset_sequences(pg: Database) -> dict[str, int]:
    """Every sequence that feeds a column (``serial``, identity) restarts after the column's
    largest value, so that new rows do not collide with the copied ones."""
    out = {}
    for r in await pg.fetch(
            "SELECT table_name, column_name, pg_get_serial_sequence(quote_ident(table_name), column_name) AS seq "
            "FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND (column_default LIKE 'nextval(%' OR is_identity = 'YES')"):
        if r["seq"] is None:
            continue
        top = await pg.fetchval(f"SELECT COALESCE(MAX({quote_ident(r['column_name'])}), 0) "
                                f"FROM {quote_ident(r['table_name'])}")
        await pg.fetchval("SELECT setval($1::regclass, $2, false)", r["seq"], top + 1)
        out[f"{r['table_name']}.{r['column_name']}"] = top + 1
    return out


async def _count(db: Database, table: str) -> int:
    return int(await db.fetchval(f"SELECT COUNT(*) FROM {quote_ident(table)}"))

"""Numbered schema migrations, applied at startup.

Files live in ``schema/`` as ``NNNN_name.sql`` (both engines), optionally with
``NNNN_name.sqlite.sql`` / ``NNNN_name.postgres.sql`` variants that replace the common
file for one engine. The applied version is kept in the ``schema_version`` table.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

from .database import Database

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+?)(?:\.(sqlite|postgres))?\.sql$")


class SchemaTooNewError(Exception):
    """The schema is not one this process can use: written by a newer Gateway or, for a
    worker, not yet upgraded by the main process."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(engine: str) -> list[Migration]:
    """The migrations for ``engine`` ("sqlite" or "postgres"), in order."""
    files = resources.files(__package__).joinpath("schema").iterdir()
    return select_migrations(((f.name, f.read_text(encoding="utf-8")) for f in files if _NAME.match(f.name)),
                             engine)


def select_migrations(files: Iterable[tuple[str, str]], engine: str) -> list[Migration]:
    """Of (file name, SQL) pairs, the migrations for ``engine`` in order (an engine's own
    variant replaces the common file). RuntimeError when the numbers are not 1..N or
    two files take the same number (two branches each added one: applying only one
    would silently lose the other)."""
    common: dict[int, tuple[str, str]] = {}
    specific: dict[int, tuple[str, str]] = {}
    for filename, text in files:
        m = _NAME.match(filename)
        if not m:
            continue
        version, name, variant = int(m.group(1)), m.group(2), m.group(3)
        target = common if variant is None else specific if variant == engine else None
        if target is None:
            continue
        if version in target and target[version][0] != name:
            raise RuntimeError(f"two schema migrations are numbered {version:04d}: "
                               f"{target[version][0]} and {name}")
        target[version] = (name, text)
    versions = sorted(set(common) | set(specific))
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"schema migrations are not numbered 1..N: {versions}")
    return [Migration(v, *(specific.get(v) or common[v])) for v in versions]


async def current_version(db: Database) -> int:
    await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    v = await db.fetchval("SELECT MAX(version) FROM schema_version")
    return int(v or 0)


async def check_schema(db: Database) -> int:
    """A worker's check: the schema is exactly what this code knows (the main process
    upgrades it; workers start after it). Returns the version."""
    migrations = load_migrations(db.engine)
    latest = migrations[-1].version if migrations else 0
    have = await current_version(db)
    if have != latest:
        raise SchemaTooNewError(
            f"the database schema is at version {have}, but this Gateway needs {latest}: "
            + ("start the main process first (it upgrades the schema), then the workers" if have < latest
               else "it was used by a newer version. Upgrade Gateway."))
    return latest


async def migrate(db: Database) -> int:
    """Bring the schema up to date; returns the version now applied."""
    migrations = load_migrations(db.engine)
    latest = migrations[-1].version if migrations else 0
    have = await current_version(db)
    if have > latest:
        raise SchemaTooNewError(
            f"the database schema is at version {have}, but this Gateway only knows up to "
            f"{latest}: it was used by a newer version. Upgrade Gateway (or restore a backup)."
        )
    from .database import split_sql_script

    for m in migrations:
        if m.version <= have:
            continue
        log.info("applying schema migration %04d_%s", m.version, m.name)
        async with db.transaction() as txn:
            for stmt in split_sql_script(m.sql):
                await txn.execute(stmt)
            await txn.execute("INSERT INTO schema_version (version) VALUES ($1)", m.version)
    return latest

"""What ``gateway import-synapse`` reads of a Synapse deployment: its config (server name,
database, media store, signing key, password pepper) and its database, whose schema must
be one that Synapse 1.100 to 1.163 writes.

Synapse records its schema in ``schema_version.version`` (the ``SCHEMA_VERSION`` of the
last Synapse that ran on the database) and ``schema_compat_version.compat_version``. The
releases map to schema versions as follows (``synapse/storage/schema/__init__.py`` at each
release tag): 1.100 to 1.106 write 84, 1.107 to 1.111 85, 1.112 to 1.113 86, 1.114 to 1.115
87, 1.116 to 1.123 88, 1.124 to 1.127 89, 1.128 91, 1.129 to 1.142 92, 1.143 to 1.150 93,
1.151 to 1.163 94. 1.99 and older wrote 83 or less.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..config import ConfigError, DatabaseConfig, parse_database_section, read_yaml
from ..config._values import Section
from ..storage.database import Database, PostgresDatabase, SqliteDatabase
from . import PortingError

#: The schema versions of Synapse 1.100 (84) to 1.163 (94).
SUPPORTED_SCHEMA_VERSIONS = range(84, 95)
SUPPORTED_RELEASES = "Synapse 1.100 to 1.163"


@dataclass(frozen=True)
class SynapseDeployment:
    """The parts of a Synapse config the import needs."""

    config_path: str
    server_name: str
    database: DatabaseConfig
    media_store_path: str
    signing_key_path: str
    pepper: str


def read_synapse_config(path: str) -> SynapseDeployment:
    """Synapse's homeserver.yaml. Relative paths are taken from the config's directory.
    ConfigError names the key that is missing or wrong."""
    data = read_yaml(path)
    root = Section(data)
    base = os.path.dirname(os.path.abspath(path))

    def resolve(p: str) -> str:
        return p if os.path.isabs(p) else os.path.join(base, p)

    server_name = root.str("server_name")
    database = parse_database_section(data, config_path=path)
    if database.engine == "sqlite" and database.sqlite_path == ":memory:":
        raise ConfigError("database.args.database", "an in-memory Synapse database holds nothing to import")
    return SynapseDeployment(
        config_path=path,
        server_name=server_name,
        database=database,
        media_store_path=resolve(root.str("media_store_path", "media_store")),
        signing_key_path=resolve(root.str("signing_key_path", f"{server_name}.signing.key")),
        pepper=root.section("password_config").str("pepper", ""),
    )


async def open_synapse_database(deployment: SynapseDeployment) -> Database:
    """Synapse's database (SQLite or PostgreSQL), through our database API."""
    db = deployment.database
    if db.engine == "sqlite":
        if not os.path.isfile(db.sqlite_path):
            raise PortingError(f"Synapse's database {db.sqlite_path} does not exist")
        return await SqliteDatabase.open(db.sqlite_path)
    try:
        return await PostgresDatabase.open({**db.args, "cp_min": 1, "cp_max": 2, "connect_retry_ms": 0})
    except Exception as e:  # refused, unknown database, bad password: asyncpg has no common base
        raise PortingError(f"cannot connect to Synapse's PostgreSQL database: {e}") from e


async def check_synapse_schema(db: Database) -> tuple[int, int | None]:
    """Synapse's schema version and compat version (the oldest schema whose code may still
    run on the database), if this import reads that schema (PortingError otherwise)."""
    if not await table_exists(db, "schema_version"):
        raise PortingError("this is not a Synapse database (it has no schema_version table)")
    version = await db.fetchval("SELECT version FROM schema_version")
    if not await table_exists(db, "users") or await column_exists(db, "users", "user_id"):
        raise PortingError("this is not a Synapse database (its users table is not Synapse's)")
    compat = await db.fetchval("SELECT compat_version FROM schema_compat_version") \
        if await table_exists(db, "schema_compat_version") else None
    if version is None or int(version) not in SUPPORTED_SCHEMA_VERSIONS:
        first, last = SUPPORTED_SCHEMA_VERSIONS[0], SUPPORTED_SCHEMA_VERSIONS[-1]
        hint = ("upgrade Synapse to 1.100 or later, start it once so that it migrates its database, stop it, "
                "then import" if version is not None and int(version) < first else
                "it was written by a newer Synapse, whose tables this Gateway does not know yet")
        raise PortingError(f"Synapse's database schema is version {version} (compat version {compat}), and this "
                           f"import reads the versions {first} to {last} ({SUPPORTED_RELEASES}): {hint}")
    return int(version), None if compat is None else int(compat)


async def table_exists(db: Database, table: str) -> bool:
    if db.engine == "sqlite":
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1"
    else:
        sql = "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1"
    return await db.fetchval(sql, table) is not None


async def column_exists(db: Database, table: str, column: str) -> bool:
    """For columns that later Synapse schemas added (e.g. ``profiles.fields``)."""
    if db.engine == "sqlite":
        return any(r["name"] == column for r in await db.fetch(f"PRAGMA table_info({table})"))
    return await db.fetchval(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1"
        " AND column_name = $2", table, column) is not None

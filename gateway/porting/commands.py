"""The porting commands of the ``gateway`` command line: ``port-db`` and ``import-synapse``
(docs/porting.md). Each prints what it did, and an ``error:`` line (exit 1) when it refuses."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from ..config import ConfigError, load_config, parse_database_section, read_yaml
from ..storage import SchemaTooNewError, migrate, open_database
from ..storage.database import SqliteDatabase
from . import PortingError


def add_commands(sub) -> None:
    """Add both commands to the ``gateway`` parser's subcommands."""
    pd = sub.add_parser("port-db", help="copy a SQLite database into PostgreSQL (resumable)")
    pd.add_argument("--sqlite-database", required=True, help="the SQLite database file (server stopped)")
    pd.add_argument("--postgres-config", required=True,
                    help="a config file whose database section names the PostgreSQL database")
    pd.add_argument("--batch-size", type=int, default=5000, help="rows per transaction (default 5000)")
    pd.set_defaults(func=port_db_command)

    im = sub.add_parser("import-synapse", help="bring a stopped Synapse deployment's data into ours")
    im.add_argument("--synapse-config", required=True, help="Synapse's homeserver.yaml (its database is read)")
    im.add_argument("--config-path", "-c", required=True,
                    help="our homeserver.yaml: same server_name, signing_key_path at Synapse's key")
    im.set_defaults(func=import_synapse_command)


def port_db_command(args: argparse.Namespace) -> int:
    """Copy a SQLite database of ours into the PostgreSQL database a config names."""
    from .port_db import port_database

    try:
        target = parse_database_section(read_yaml(args.postgres_config), config_path=args.postgres_config)
    except ConfigError as e:
        print(f"error: {args.postgres_config}: {e}", file=sys.stderr)
        return 1
    if target.engine != "postgres":
        print(f"error: {args.postgres_config}: database.name must be psycopg2 (PostgreSQL)", file=sys.stderr)
        return 1
    if not os.path.isfile(args.sqlite_database):
        print(f"error: {args.sqlite_database} does not exist", file=sys.stderr)
        return 1

    async def main() -> int:
        sqlite = await SqliteDatabase.open(args.sqlite_database)
        try:
            pg = await open_database(target)
        except Exception as e:  # refused, unknown database, bad password: asyncpg has no common base
            await sqlite.close()
            print(f"error: cannot connect to PostgreSQL: {e}", file=sys.stderr)
            return 1
        try:
            result = await port_database(sqlite, pg, batch_size=args.batch_size, report=print)
        except (PortingError, SchemaTooNewError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        finally:
            await pg.close()
            await sqlite.close()
        for table, (a, b) in sorted(result.counts.items()):
            print(f"  {table}: {a} rows in SQLite, {b} in PostgreSQL{'' if a == b else '  <- DIFFERENT'}")
        if result.mismatched:
            print(f"error: row counts differ in {', '.join(result.mismatched)} (was the server running on the "
                  "SQLite database while it was copied?)", file=sys.stderr)
            return 1
        print(f"done: {sum(result.copied.values())} rows copied in this run, "
              f"{sum(a for a, _ in result.counts.values())} in {len(result.counts)} tables")
        return 0

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        print("interrupted: what was copied is kept; run the same command again to go on", file=sys.stderr)
        return 130


def import_synapse_command(args: argparse.Namespace) -> int:
    """Bring a (stopped) Synapse deployment's data into our database."""
    from .synapse_import import ImportContext, check_same_deployment, run_import
    from .synapse_source import check_synapse_schema, open_synapse_database, read_synapse_config

    try:
        config = load_config(args.config_path)
    except ConfigError as e:
        print(f"error: {args.config_path}: {e}", file=sys.stderr)
        return 1
    for w in config.warnings:
        print(f"warning: {args.config_path}: {w}", file=sys.stderr)
    try:
        deployment = read_synapse_config(args.synapse_config)
    except ConfigError as e:
        print(f"error: {args.synapse_config}: {e}", file=sys.stderr)
        return 1

    async def main() -> int:
        ours = source = None
        try:
            source = await open_synapse_database(deployment)
            version, compat = await check_synapse_schema(source)
            print(f"Synapse database: schema version {version}, compat version {compat} "
                  f"({deployment.database.engine})")
            check_same_deployment(config, deployment)
            ours = await open_database(config.database)
            await migrate(ours)
            counts = await run_import(ImportContext(source, ours, deployment, config, report=print))
        except (PortingError, SchemaTooNewError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        finally:
            for db in (source, ours):
                if db is not None:
                    await db.close()
        print(f"done: {sum(counts.values())} items imported or already there")
        return 0

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        print("interrupted: run the same command again to finish (what is there is kept)", file=sys.stderr)
        return 130

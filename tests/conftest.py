"""Shared fixtures: throwaway databases on both engines, free ports."""

from __future__ import annotations

import os
import socket
import uuid

import asyncpg
import pytest

from gateway.config import DatabaseConfig

#: Where the PostgreSQL tests connect (a maintenance database on the server).
POSTGRES_DSN = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
SKIP_POSTGRES = os.environ.get("GATEWAY_TEST_SKIP_POSTGRES") == "1"


_HIGH = {"per_second": 1000, "burst_count": 1000}
#: Rate limits high enough for tests that create many rooms, joins, invites and messages
#: quickly (tests of the limits themselves set low ones).
GENEROUS_RATE_LIMITS = {
    "rc_message": _HIGH, "rc_room_creation": _HIGH, "rc_registration": _HIGH, "rc_oauth_registration": _HIGH,
    "rc_joins": {"local": _HIGH, "remote": _HIGH}, "rc_joins_per_room": _HIGH,
    "rc_invites": {"per_room": _HIGH, "per_user": _HIGH, "per_issuer": _HIGH},
    "rc_login": {"address": _HIGH, "account": _HIGH, "failed_attempts": _HIGH},
    "rc_reports": _HIGH, "rc_3pid_validation": _HIGH,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    return free_port()


async def create_postgres_database() -> tuple[str, dict]:
    """Create a fresh database; returns its name and connection args."""
    name = f"gateway_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" ENCODING \'UTF8\' TEMPLATE template0')
    finally:
        await conn.close()
    params = conn._params  # parsed DSN
    args = {"user": params.user, "database": name, "host": conn._addr[0], "port": conn._addr[1]}
    if params.password:
        args["password"] = params.password
    return name, args


async def drop_postgres_database(name: str) -> None:
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def database_config(request, tmp_path):
    """A DatabaseConfig for an empty database, once per engine."""
    if request.param == "sqlite":
        yield DatabaseConfig("sqlite", {"database": str(tmp_path / "test.db")})
        return
    if SKIP_POSTGRES:
        pytest.skip("GATEWAY_TEST_SKIP_POSTGRES=1: no PostgreSQL reachable (the test command said so)")
    name, args = await create_postgres_database()
    try:
        yield DatabaseConfig("postgres", {**args, "cp_min": 1, "cp_max": 4})
    finally:
        await drop_postgres_database(name)


@pytest.fixture
async def database(database_config):
    """An open, migrated database on each engine."""
    from gateway.storage import migrate, open_database

    db = await open_database(database_config)
    await migrate(db)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture(autouse=True)
def _no_dns_beyond_loopback(monkeypatch):
    """Tests talk to 127.0.0.1 only: a resolver built without explicit nameservers (the
    system's, from /etc/resolv.conf) is pointed at a dead loopback port instead, so an
    accidental lookup fails fast here rather than leaving the machine."""
    from federation.net import resolver as resolver_module

    original = resolver_module.DnsResolver.__init__

    def init(self, nameservers=None, **kwargs):
        original(self, nameservers or [("127.0.0.1", 9)], **kwargs)

    monkeypatch.setattr(resolver_module.DnsResolver, "__init__", init)

"""Incoming transactions with inbound federation on several processes (workers): the same
transaction retried on another process while the first still processes it is processed
once, and both get the same answer. Two servers of ours on one PostgreSQL database stand
for two federation workers."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import parse_config
from gateway.server import HomeServer
from tests.conftest import GENEROUS_RATE_LIMITS, SKIP_POSTGRES, create_postgres_database, drop_postgres_database

pytestmark = pytest.mark.skipif(SKIP_POSTGRES, reason="workers need PostgreSQL")


@pytest.fixture
async def two_processes(tmp_path):
    name, args = await create_postgres_database()
    config = parse_config({
        "server_name": "hs.test", "database": {"name": "psycopg2", "args": {**args, "cp_min": 1, "cp_max": 4}},
        "redis": {"enabled": True}, "signing_key_path": str(tmp_path / "signing.key"), **GENEROUS_RATE_LIMITS,
        "listeners": [{"port": 1, "resources": [{"names": ["federation"]}]}],
    }, config_path=str(tmp_path / "homeserver.yaml"))
    first = await HomeServer.open(config)  # brings the schema up to date
    second = await HomeServer.open(config)
    try:
        yield first, second
    finally:
        await second.close()
        await first.close()
        await drop_postgres_database(name)


async def until(condition, what: str) -> None:
    """Poll ``condition()`` (state of the servers, nothing to await on) for up to 30 s."""
    async def loop():
        while not condition():
            await asyncio.sleep(0.01)
    try:
        await asyncio.wait_for(loop(), 30)
    except asyncio.TimeoutError:
        raise AssertionError(f"never: {what}") from None


async def test_a_transaction_retried_on_another_process_is_processed_once(two_processes):
    first, second = two_processes
    calls: list[str] = []
    gate = asyncio.Event()

    def counting(name):
        async def handler(origin, content):
            calls.append(name)
            await gate.wait()  # the first one is still processing when the retry arrives
        return handler

    first.edu_handlers.register("org.example.count", counting("first"))
    second.edu_handlers.register("org.example.count", counting("second"))
    body = {"origin": "remote.example", "pdus": [], "edus": [{"edu_type": "org.example.count", "content": {}}]}
    one = asyncio.create_task(first.federation_transactions.on_transaction("remote.example", "t1", body))
    await until(lambda: calls, "the first process runs the EDU handler")
    retry = asyncio.create_task(second.federation_transactions.on_transaction("remote.example", "t1", body))
    await until(lambda: "txn:remote.example" in second.db.contended_locks or len(calls) > 1,
                "the second process waits for the origin's lock")
    gate.set()
    assert await one == await retry == {"pdus": {}}
    assert calls == ["first"]

"""Stream positions with several writers (issue 18: event persisters and the other stream
writers on workers). Every stream's positions come from one counter row that a writing
transaction locks from the moment it takes its positions until it commits, so writers
commit in position order, whichever process they run in: a reader that sees position N
has every position below N committed, and never skips one that commits later.

PostgreSQL only: workers need it (SQLite serves one process)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import DatabaseConfig
from gateway.storage import migrate, open_database
from gateway.storage.state import next_position
from tests.conftest import SKIP_POSTGRES, create_postgres_database, drop_postgres_database

pytestmark = pytest.mark.skipif(SKIP_POSTGRES, reason="PostgreSQL only: the writers of several processes")


@pytest.fixture
async def two_processes():
    """Two connection pools on one PostgreSQL database, as two processes have."""
    name, args = await create_postgres_database()
    config = DatabaseConfig("postgres", {**args, "cp_min": 1, "cp_max": 3})
    first = await open_database(config)
    await migrate(first)
    second = await open_database(config)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()
        await drop_postgres_database(name)


async def _current(db, stream: str) -> int:
    return int(await db.fetchval("SELECT position FROM stream_positions WHERE stream_name = $1", stream))


async def _lock_waiters(db) -> int:
    return int(await db.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"))


STREAMS = ("events", "receipts", "account_data", "to_device", "device_lists", "presence")


async def test_a_later_position_waits_for_the_earlier_one_to_commit(two_processes):
    for stream in STREAMS:
        await _two_writers(*two_processes, stream)


async def _two_writers(a_db, b_db, stream: str) -> None:
    start = await _current(a_db, stream)
    b_took: list[int] = []
    a_committed = asyncio.Event()

    async def writer_b() -> None:
        async with b_db.transaction() as b:
            b_took.append(await next_position(b, stream))
            assert a_committed.is_set()  # it got its position only once A had committed

    async with a_db.transaction() as a:
        a_pos = await next_position(a, stream)
        task = asyncio.create_task(writer_b())
        while await _lock_waiters(b_db) < 1:  # B waits on A's row lock
            assert not task.done(), task.result()
            await asyncio.sleep(0.01)
        # A reader (either process) sees neither position while A is open.
        assert await _current(b_db, stream) == start
        a_committed.set()
    await asyncio.wait_for(task, 30)
    assert (a_pos, b_took) == (start + 1, [start + 2])
    assert await _current(a_db, stream) == start + 2


async def test_a_rolled_back_writer_leaves_no_gap_for_readers(two_processes):
    """A writer that fails gives its positions back: the next one takes the same."""
    a_db, b_db = two_processes
    start = await _current(a_db, "events")
    with pytest.raises(RuntimeError):
        async with a_db.transaction() as a:
            await next_position(a, "events", 3)
            raise RuntimeError("the writer died")
    async with b_db.transaction() as b:
        assert await next_position(b, "events") == start + 1

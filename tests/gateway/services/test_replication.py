"""Redis pub/sub between processes (gateway/services/replication.py), on the real Redis
at 127.0.0.1:6379, each test on channels of its own."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as redis

from gateway.config.workers import RedisConfig
from gateway.services.notifier import Notifier
from gateway.services.replication import RedisReplication, channel_name


class FakeSyncStore:
    """Who a batch of events concerns: nobody (the waiters here wait on rooms)."""

    async def get_member_event_targets(self, first: int, last: int) -> set[str]:
        return set()


async def _redis_reachable() -> bool:
    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2)
    try:
        return await client.ping()
    except OSError:
        return False
    finally:
        await client.aclose()


@pytest.fixture
async def pair():
    """Two processes' notifiers, ``main`` and ``worker1``, joined through Redis."""
    if not await _redis_reachable():
        pytest.skip("no Redis at 127.0.0.1:6379")
    config = RedisConfig(enabled=True, host="127.0.0.1", port=6379, channel_prefix=f"test-{uuid.uuid4().hex}")
    out = []
    for name in ("main", "worker1"):
        notifier = Notifier(FakeSyncStore())
        rep = RedisReplication(config, server_name="example.com", instance_name=name, notifier=notifier)
        await rep.start()
        out.append((notifier, rep))
    for _, rep in out:
        await asyncio.wait_for(rep.subscribed.wait(), 10)
    yield out
    for _, rep in out:
        await rep.close()


def test_channel_names_are_namespaced():
    assert channel_name(RedisConfig(), "a.example") == "gateway/a.example/notify"
    assert channel_name(RedisConfig(), "b.example") != channel_name(RedisConfig(), "a.example")
    assert channel_name(RedisConfig(channel_prefix="blue"), "a.example") == "blue/notify"


async def test_new_events_on_one_process_wake_a_sync_on_the_other(pair):
    (main, _), (worker, _) = pair
    waiter = worker.waiter("@alice:example.com")
    waiter.set_rooms(["!room:example.com"])
    main.on_new_events("!room:example.com", [7])
    assert await waiter.wait(30)
    waiter.close()
    # Users too (account data, to-device, device lists).
    waiter = main.waiter("@bob:example.com")
    waiter.set_rooms([])
    worker.notify_users(["@bob:example.com"])
    assert await waiter.wait(30)
    waiter.close()


async def test_events_stored_elsewhere_reach_the_remote_events_listeners(pair):
    """What a federation sender on a worker hears of main's events (main's own listeners
    are the events service's: they do not hear them twice)."""
    (main, _), (worker, _) = pair
    heard: asyncio.Queue = asyncio.Queue()
    worker.remote_events_listeners.append(lambda room_id, positions: heard.put_nowait((room_id, list(positions))))
    main.remote_events_listeners.append(lambda room_id, positions: heard.put_nowait(("main heard it", [])))
    main.on_new_events("!room:example.com", [41, 42])
    assert await asyncio.wait_for(heard.get(), 30) == ("!room:example.com", [41, 42])
    seen = asyncio.Event()
    original = main.apply_remote
    main.apply_remote = lambda change: (original(change), seen.set())
    worker.notify_room("!room:example.com")  # a later message main does hear: its own came before it
    await asyncio.wait_for(seen.wait(), 30)
    assert heard.empty()


async def test_a_process_ignores_its_own_messages(pair):
    (main, main_rep), (worker, _) = pair
    seen = []
    main.apply_remote = seen.append  # what main's subscriber hands on
    worker_seen = asyncio.Event()
    original = worker.apply_remote

    def on_worker(change):
        original(change)
        worker_seen.set()

    worker.apply_remote = on_worker
    main.notify_room("!r:example.com")
    await asyncio.wait_for(worker_seen.wait(), 30)
    # The worker heard it; main, subscribed to the same channel, did not hand its own on.
    main.notify_room("!r2:example.com")  # a second message: the first one was delivered to main before it
    worker_seen.clear()
    await asyncio.wait_for(worker_seen.wait(), 30)
    assert seen == []


async def test_a_lost_subscription_is_restored_and_catches_up(pair):
    """Redis drops the worker's subscriber connection: it subscribes again and every
    waiting sync reads the database again (whatever was published meanwhile is there)."""
    (main, _), (worker, worker_rep) = pair
    waiter = worker.waiter("@alice:example.com")
    waiter.set_rooms(["!quiet:example.com"])  # nothing will be published for this room
    before = worker_rep.subscriptions
    admin = redis.Redis(host="127.0.0.1", port=6379)
    try:
        clients = await admin.client_list()
        ours = [c for c in clients if c.get("name") == "gateway-worker1" and "subscribe" in c.get("cmd", "")]
        assert ours, clients
        for c in ours:
            await admin.client_kill_filter(_id=c["id"])
    finally:
        await admin.aclose()
    assert await waiter.wait(30)  # woken by the resubscription
    assert worker_rep.subscriptions > before
    waiter.close()
    # And changes flow again.
    waiter = worker.waiter("@alice:example.com")
    waiter.set_rooms(["!room:example.com"])
    main.on_new_events("!room:example.com", [8])
    assert await waiter.wait(30)
    waiter.close()

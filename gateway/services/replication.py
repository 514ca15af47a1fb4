"""Processes tell each other of their writes over Redis pub/sub.

Every process of a deployment publishes the changes its notifier is fed (new events with
their stream positions, rooms and users whose ephemeral data changed) on one channel and
subscribes to it; what another process published wakes the local long-polling /sync
requests, which then read the rows from PostgreSQL. Nothing but wake-ups travels over
Redis: positions and rows live in the database, so sync tokens stay valid when any
process restarts.

Catching up: each (re)subscription (the first one, and every one after Redis or the
connection went away) calls the notifier's ``wake_all``: every waiting sync wakes and the
``missed_listeners`` (pushers, the federation sender) read from the database what they may
have missed. A publish that fails is followed, once Redis answers again, by a ``reset``
message that does the same on every process.

The channel is ``<channel_prefix>/notify`` (``redis.channel_prefix``, default
``gateway/<server_name>``): Redis channels ignore ``dbid``, so deployments sharing a Redis
need their own prefix.

Model: Synapse's "Replication Architecture" (seed 002), with Redis as the only bus.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from ..config.workers import RedisConfig
    from .notifier import Notifier

log = logging.getLogger(__name__)

#: Delays between attempts to reach Redis again (seconds), the last one repeating.
RETRY_DELAYS_S = (0.1, 0.5, 1, 2, 5)


def channel_name(config: "RedisConfig", server_name: str) -> str:
    prefix = config.channel_prefix if config.channel_prefix is not None else f"gateway/{server_name}"
    return f"{prefix}/notify"


class RedisReplication:
    """Publishes this process's changes and applies the others' to ``notifier``."""

    def __init__(self, config: "RedisConfig", *, server_name: str, instance_name: str, notifier: "Notifier"):
        self.config = config
        self.channel = channel_name(config, server_name)
        self.instance_name = instance_name
        self.notifier = notifier
        self._queue: asyncio.Queue[dict] = asyncio.Queue()
        self._client: Any = None
        self._tasks: list[asyncio.Task] = []
        #: Set on every (re)subscription: tests and startup wait for it.
        self.subscribed = asyncio.Event()
        #: How many times the subscription was (re)established.
        self.subscriptions = 0
        notifier.publish = self.publish

    def _connect(self) -> Any:
        import redis.asyncio as redis

        c = self.config
        return redis.Redis(host=c.host, port=c.port, password=c.password, db=c.dbid or 0, ssl=c.use_tls,
                           socket_connect_timeout=5, client_name=f"gateway-{self.instance_name}")

    async def start(self) -> None:
        self._client = self._connect()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._subscribe_loop()), loop.create_task(self._publish_loop())]

    def publish(self, change: dict) -> None:
        """Queue ``change`` for the other processes (the notifier calls this synchronously)."""
        if self._tasks:
            self._queue.put_nowait(change)

    async def _publish_loop(self) -> None:
        lost = False
        while True:
            change = await self._queue.get()
            payload = orjson.dumps({"i": self.instance_name, **change})
            attempt = 0
            while True:
                try:
                    if lost:  # what failed to go out: everyone reads the database again
                        await self._client.publish(self.channel, orjson.dumps({"i": self.instance_name,
                                                                               "reset": True}))
                        lost = False
                    await self._client.publish(self.channel, payload)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    lost = True
                    log.warning("publishing to Redis at %s:%d failed (%s); retrying", self.config.host,
                                self.config.port, e)
                    await asyncio.sleep(RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)])
                    attempt += 1
                    if attempt > len(RETRY_DELAYS_S):  # drop it: the reset covers it
                        break

    async def _subscribe_loop(self) -> None:
        attempt = 0
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    attempt = 0
                    if message["type"] == "subscribe":  # first time, or redis-py reconnected
                        self._on_subscribed()
                    elif message["type"] == "message":
                        self._on_message(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("Redis subscription at %s:%d lost (%s); reconnecting", self.config.host,
                            self.config.port, e)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass
            self.subscribed.clear()
            await asyncio.sleep(RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)])
            attempt += 1

    def _on_subscribed(self) -> None:
        self.subscriptions += 1
        log.info("subscribed to Redis channel %s (%d)", self.channel, self.subscriptions)
        self.subscribed.set()
        self.notifier.wake_all()  # catch up from the database on what we may have missed

    def _on_message(self, data: bytes) -> None:
        try:
            change = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("ignoring a message on %s that is not JSON", self.channel)
            return
        if not isinstance(change, dict) or change.get("i") == self.instance_name:
            return
        if change.get("reset"):
            self.notifier.wake_all()
            return
        try:
            self.notifier.apply_remote(change)
        except Exception:
            log.exception("applying a change from %s failed", change.get("i"))

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None

"""Background work kept per key (a room's resync, a user's profile propagation): at most
one task a key, all cancelled together when the server stops. What they do is stored
by their owners, so a restart starts them again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class KeyedTasks:
    def __init__(self, what: str):
        self.what = what
        self.closing = False
        self._tasks: dict[str, asyncio.Task] = {}

    def running(self, key: str) -> bool:
        task = self._tasks.get(key)
        return task is not None and not task.done()

    def start(self, key: str, work: Callable[[], Coroutine[Any, Any, None]], *, replace: bool = False) -> None:
        """Run ``work()`` for ``key`` now, unless one runs already (``replace``: that one
        is cancelled instead). Nothing starts once closing."""
        if self.closing:
            return
        old = self._tasks.get(key)
        if old is not None and not old.done():
            if not replace:
                return
            old.cancel()
        task = asyncio.get_running_loop().create_task(work(), name=f"{self.what} {key}")
        self._tasks[key] = task
        task.add_done_callback(lambda t: self._tasks.pop(key, None) if self._tasks.get(key) is t else None)

    async def idle(self) -> None:
        """Wait until none runs (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        self.closing = True
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

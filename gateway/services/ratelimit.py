"""Token-bucket rate limiting with Synapse's ``rc_*`` settings.

Kept in memory on purpose: limits are advisory and per process, as in Synapse.
"""

from __future__ import annotations

import time
from typing import Callable

from ..config import RateLimit
from ..http import Codes, MatrixError


class RateLimiter:
    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000,
                 exempt: Callable[[str], bool] | None = None):
        self.limit = limit
        self.clock = clock
        self.max_keys = max_keys
        #: Keys never limited (application services' users, when their registration says so).
        self.exempt = exempt
        # key -> (tokens used, time of last update)
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str, *, cost: float = 1.0, update: bool = True,
              limit: RateLimit | None = None) -> float | None:
        """None when allowed (and counted when ``update``); else seconds until it would be.
        ``limit`` replaces the configured one for this key (a per-user override)."""
        limit = limit or self.limit
        if limit.per_second <= 0 and limit.burst_count <= 0:
            return None
        if self.exempt is not None and self.exempt(key):
            return None
        now = self.clock()
        used, last = self._buckets.get(key, (0.0, now))
        used = max(0.0, used - (now - last) * limit.per_second)
        if used + cost > limit.burst_count:
            if limit.per_second <= 0:
                return 3600.0
            return (used + cost - limit.burst_count) / limit.per_second
        if update:
            if len(self._buckets) >= self.max_keys and key not in self._buckets:
                self._prune(now)
            self._buckets[key] = (used + cost, now)
        return None

    def ratelimit(self, key: str, *, cost: float = 1.0, update: bool = True, limit: RateLimit | None = None) -> None:
        """Raise ``M_LIMIT_EXCEEDED`` (429) with ``retry_after_ms`` when over the limit."""
        wait = self.check(key, cost=cost, update=update, limit=limit)
        if wait is not None:
            raise MatrixError(
                429, Codes.LIMIT_EXCEEDED, "Too many requests", retry_after_ms=max(1, int(wait * 1000))
            )

    def _prune(self, now: float) -> None:
        ps = self.limit.per_second
        self._buckets = {k: v for k, v in self._buckets.items() if v[0] - (now - v[1]) * ps > 0}


class RateLimiters:
    """One limiter per configured ``rc_*`` key, created on first use."""

    def __init__(self, limits: dict[str, RateLimit], clock: Callable[[], float] = time.monotonic,
                 exempt: Callable[[str], bool] | None = None):
        self._limits = limits
        self._clock = clock
        self._exempt = exempt
        self._limiters: dict[str, RateLimiter] = {}

    def __getitem__(self, name: str) -> RateLimiter:
        limiter = self._limiters.get(name)
        if limiter is None:
            limiter = self._limiters[name] = RateLimiter(self._limits[name], self._clock, exempt=self._exempt)
        return limiter


class RateLimitOverrides:
    """Per-user overrides of ``rc_message`` (and ``rc_admin_redaction``) set through the
    admin API, read through a small cache: a bridge or bot may send faster."""

    def __init__(self, db):
        from ..storage.ratelimit import RateLimitOverrideStore

        self.store = RateLimitOverrideStore(db)
        self._cache: dict[str, RateLimit | None] = {}

    async def get(self, user_id: str) -> RateLimit | None:
        if user_id in self._cache:
            return self._cache[user_id]
        row = await self.store.get(user_id)
        value = None if row is None else RateLimit(float(row[0]), float(row[1]))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[user_id] = value
        return value

    async def set(self, user_id: str, messages_per_second: int, burst_count: int) -> None:
        await self.store.set(user_id, messages_per_second, burst_count)
        self._cache.pop(user_id, None)

    async def delete(self, user_id: str) -> None:
        await self.store.delete(user_id)
        self._cache.pop(user_id, None)

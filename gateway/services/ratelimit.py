"""Token-bucket rate limiting with Synapse's ``rc_*`` settings.

Kept in memory on purpose: limits are advisory and per process, as in Synapse.
"""

from __future__ import annotations

import time
from typing import Callable

from ..config import RateLimit
from ..http import Codes, MatrixError


class RateLimiter:
    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000):
        self.limit = limit
        self.clock = clock
        self.max_keys = max_keys
        # key -> (tokens used, time of last update)
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str, *, cost: float = 1.0, update: bool = True) -> float | None:
        """None when allowed (and counted when ``update``); else seconds until it would be."""
        if self.limit.per_second <= 0 and self.limit.burst_count <= 0:
            return None
        now = self.clock()
        used, last = self._buckets.get(key, (0.0, now))
        used = max(0.0, used - (now - last) * self.limit.per_second)
        if used + cost > self.limit.burst_count:
            if self.limit.per_second <= 0:
                return 3600.0
            return (used + cost - self.limit.burst_count) / self.limit.per_second
        if update:
            if len(self._buckets) >= self.max_keys and key not in self._buckets:
                self._prune(now)
            self._buckets[key] = (used + cost, now)
        return None

    def ratelimit(self, key: str, *, cost: float = 1.0) -> None:
        """Raise ``M_LIMIT_EXCEEDED`` (429) with ``retry_after_ms`` when over the limit."""
        wait = self.check(key, cost=cost)
        if wait is not None:
            raise MatrixError(
                429, Codes.LIMIT_EXCEEDED, "Too many requests", retry_after_ms=max(1, int(wait * 1000))
            )

    def _prune(self, now: float) -> None:
        ps = self.limit.per_second
        self._buckets = {k: v for k, v in self._buckets.items() if v[0] - (now - v[1]) * ps > 0}


class RateLimiters:
    """One limiter per configured ``rc_*`` key, created on first use."""

    def __init__(self, limits: dict[str, RateLimit], clock: Callable[[], float] = time.monotonic):
        self._limits = limits
        self._clock = clock
        self._limiters: dict[str, RateLimiter] = {}

    def __getitem__(self, name: str) -> RateLimiter:
        limiter = self._limiters.get(name)
        if limiter is None:
            limiter = self._limiters[name] = RateLimiter(self._limits[name], self._clock)
        return limiter

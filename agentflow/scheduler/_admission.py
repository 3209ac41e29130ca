"""Admission limits: token buckets for requests/min and tokens/min.

"No capacity" is a return value: ``TokenBucket.try_take(n)`` returns ``0.0`` when it took ``n`` and otherwise
the seconds until ``n`` will be available, so the scheduler knows when to look again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from agentflow.errors import ConfigError

__all__ = ["TokenBucket"]


class TokenBucket:
    """A token bucket refilled at ``per_minute / 60`` tokens per second, holding at most ``burst``.

    Args:
        per_minute: Refill rate (requests or tokens per minute).
        burst: Bucket size; defaults to one minute's worth. The bucket starts full.
        clock: Time source.

    Example:
        >>> bucket = TokenBucket(60, burst=1, clock=lambda: 0.0)
        >>> bucket.try_take(1), bucket.try_take(1)
        (0.0, 1.0)
    """

    def __init__(
        self, per_minute: float, *, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_minute <= 0 or not math.isfinite(per_minute):
            raise ConfigError(f"a rate limit must be a positive number per minute, got {per_minute}")
        self._rate = per_minute / 60.0
        self._capacity = float(per_minute if burst is None else burst)
        if self._capacity <= 0:
            raise ConfigError(f"a rate limit burst must be > 0, got {burst}")
        self._clock = clock
        # Tokens available as of _stamp; refilled lazily on every call.
        self._level = self._capacity
        self._stamp = clock()

    @property
    def capacity(self) -> float:
        """The most the bucket can hold (a single take larger than this can never succeed)."""
        return self._capacity

    def level(self) -> float:
        """Tokens available now."""
        self._refill()
        return self._level

    def try_take(self, n: float) -> float:
        """Take ``n`` tokens if available; return ``0.0`` if taken, else seconds until they will be."""
        self._refill()
        if n <= self._level:
            self._level -= n
            return 0.0
        if n > self._capacity:
            return math.inf
        return (n - self._level) / self._rate

    def give_back(self, n: float) -> None:
        """Return unused tokens (e.g. the part of a ``max_tokens`` estimate that was not generated)."""
        self._refill()
        self._level = min(self._capacity, self._level + n)

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self._capacity, self._level + (now - self._stamp) * self._rate)
        self._stamp = now

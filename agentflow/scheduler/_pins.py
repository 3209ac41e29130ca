"""Pins with a TTL, shared by the cache models (``RadixTree``, ``BlockLRU``): the one pin/unpin/expire.

A pin keeps a token sequence cached until its expiry. The table validates the TTL, stamps expiries from the
model's clock, and calls the model back exactly once per pinned sequence: ``hold(seq)`` when it becomes
pinned, ``unhold(seq)`` when it is unpinned or expires. Re-pinning only moves the expiry. What a hold means
(locking a radix path, referencing a chain of blocks) and what follows a change (eviction, listeners) stays
with the model.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

from agentflow.errors import ConfigError

__all__ = ["PinTable"]


class PinTable:
    """Pinned sequences -> expiry; expired pins are released in expiry order.

    Args:
        clock: The model's time source (expiry = ``clock() + ttl_s``).
        hold: Called when a sequence becomes pinned.
        unhold: Called when a pinned sequence is unpinned or expires.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        hold: Callable[[tuple[int, ...]], None],
        unhold: Callable[[tuple[int, ...]], None],
    ) -> None:
        self._clock = clock
        self._hold = hold
        self._unhold = unhold
        # Pinned sequence -> expiry; an entry lives until ``unpin`` or ``expire``.
        self._expiry: dict[tuple[int, ...], float] = {}
        # (expiry, sequence) heap over _expiry; stale entries (re-pinned or removed) are skipped on pop.
        self._heap: list[tuple[float, tuple[int, ...]]] = []

    def __contains__(self, seq: object) -> bool:
        return seq in self._expiry

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        return iter(self._expiry)

    def as_dict(self) -> dict[tuple[int, ...], float]:
        """Live pins: sequence -> expiry time."""
        return dict(self._expiry)

    def pin(self, seq: tuple[int, ...], ttl_s: float) -> None:
        """Pin ``seq`` for ``ttl_s`` seconds from now (re-pinning moves the expiry); an empty ``seq`` holds
        nothing and is not pinned.

        Raises:
            ConfigError: ``ttl_s`` is not > 0.
        """
        if not ttl_s > 0:
            raise ConfigError(f"pin ttl_s must be > 0 seconds, got {ttl_s}; use unpin() to release early")
        if not seq:
            return
        if seq not in self._expiry:
            self._hold(seq)
        expiry = self._clock() + ttl_s
        self._expiry[seq] = expiry
        heapq.heappush(self._heap, (expiry, seq))

    def unpin(self, seq: tuple[int, ...]) -> bool:
        """Release a pin early; ``False`` if ``seq`` was not pinned."""
        if self._expiry.pop(seq, None) is None:
            return False
        self._unhold(seq)
        return True

    def expire(self) -> int:
        """Release the pins whose expiry is at or before now; returns how many."""
        now = self._clock()
        released = 0
        while self._heap and self._heap[0][0] <= now:
            expiry, seq = heapq.heappop(self._heap)
            if self._expiry.get(seq) == expiry:
                del self._expiry[seq]
                self._unhold(seq)
                released += 1
        return released

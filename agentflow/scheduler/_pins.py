"""Pinned token sequences with expiry times, shared by the cache models (``RadixTree``, ``BlockLRU``)."""

from __future__ import annotations

import heapq
from collections.abc import Iterator

__all__ = ["PinTable"]


class PinTable:
    """Pinned sequences -> expiry; expired pins are popped in expiry order.

    Re-pinning a sequence moves its expiry; the superseded heap entry is skipped when popped.
    """

    def __init__(self) -> None:
        # Pinned sequence -> expiry; an entry lives until ``remove`` or ``pop_expired``.
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

    def set(self, seq: tuple[int, ...], expiry: float) -> bool:
        """Pin ``seq`` until ``expiry``; ``True`` if it was not pinned before."""
        new = seq not in self._expiry
        self._expiry[seq] = expiry
        heapq.heappush(self._heap, (expiry, seq))
        return new

    def remove(self, seq: tuple[int, ...]) -> bool:
        """Drop a pin; ``False`` if ``seq`` was not pinned."""
        return self._expiry.pop(seq, None) is not None

    def pop_expired(self, now: float) -> list[tuple[int, ...]]:
        """Remove and return the pins whose expiry is at or before ``now``."""
        out: list[tuple[int, ...]] = []
        while self._heap and self._heap[0][0] <= now:
            expiry, seq = heapq.heappop(self._heap)
            if self._expiry.get(seq) == expiry:
                del self._expiry[seq]
                out.append(seq)
        return out

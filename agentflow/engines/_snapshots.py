"""A byte-bounded LRU store of KV-cache snapshots keyed by the token prefix they hold.

An embedded engine has one live context; when a request with a different prefix arrives, the live KV is
overwritten. Before that happens the engine may *spill* the live context into this store, and later
*restore* the snapshot whose key shares the longest prefix with a new prompt. A snapshot keyed by
``k`` can serve any prompt ``p`` for ``common_prefix_len(k, p)`` tokens: the engine loads it and drops
the KV after the shared prefix.

Token regions of a restore::

    snapshot key  k: | shared prefix .......... | k's tail (dropped) |
    new prompt    p: | shared prefix .......... | p's tail (computed) ........ |
                     ^0                         ^common_prefix_len(k, p)

Invariant: no key is a prefix of another key (a key that is a prefix of another is *dominated*: the longer
snapshot serves every prompt the shorter one could), and ``used_bytes <= capacity_bytes``.

The store is generic in the state object, so unit tests use fake states of chosen byte sizes. It is safe to
read from one thread while another mutates it (one internal lock).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from agentflow.errors import ConfigError

from ._protocols import CacheEvent, CacheListener, SnapshotEvicted, SnapshotStored

__all__ = [
    "ReusePlan",
    "SnapshotInfo",
    "SnapshotMatch",
    "SnapshotStore",
    "common_prefix_len",
    "plan_reuse",
]

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """One stored snapshot, as the scheduler sees it.

    Attributes:
        tokens: The token prefix whose KV the snapshot holds.
        nbytes: Its size in bytes (counted against the store's capacity).
    """

    tokens: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True, slots=True)
class SnapshotMatch(Generic[S]):
    """The result of a prefix lookup.

    Attributes:
        tokens: The matched snapshot's key.
        state: The stored state object.
        length: Tokens shared between the key and the query (``common_prefix_len``).
    """

    tokens: tuple[int, ...]
    state: S
    length: int


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences.

    Uses a binary search over slice comparisons, so the work runs in C for tuples and lists.

    >>> common_prefix_len((1, 2, 3, 4), (1, 2, 9))
    2
    >>> common_prefix_len((), (1,))
    0
    """
    n = min(len(a), len(b))
    if n == 0 or a[0] != b[0]:
        return 0
    a_t = tuple(a[:n])
    b_t = tuple(b[:n])
    if a_t == b_t:
        return n
    lo, hi = 1, n - 1  # a_t[:lo] == b_t[:lo] holds; a_t[:hi + 1] != b_t[:hi + 1] holds
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a_t[:mid] == b_t[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class _Entry(Generic[S]):
    __slots__ = ("nbytes", "state")

    def __init__(self, state: S, nbytes: int) -> None:
        self.state = state
        self.nbytes = nbytes


class SnapshotStore(Generic[S]):
    """Byte-bounded LRU map from token prefixes to KV snapshots.

    Args:
        capacity_bytes: Upper bound on the summed ``nbytes`` of stored snapshots (0 disables the store).
        listener: Called with a ``SnapshotStored``/``SnapshotEvicted`` event for every change, in order, while
            the store's lock is held (keep it cheap: append to a queue).
    """

    def __init__(self, capacity_bytes: int, *, listener: CacheListener | None = None) -> None:
        if capacity_bytes < 0:
            raise ConfigError(
                f"snapshot store capacity must be >= 0 bytes, got {capacity_bytes}; pass 0 to disable snapshots"
            )
        self._capacity = capacity_bytes
        self._listener = listener
        # key -> entry, least recently used first; lives as long as the store.
        self._entries: OrderedDict[tuple[int, ...], _Entry[S]] = OrderedDict()
        self._used = 0
        # Pinned prefixes -> monotonic expiry; a snapshot that serves a pinned prefix is not evicted before then.
        self._pins: dict[tuple[int, ...], float] = {}
        self._clock = time.monotonic
        self._lock = threading.Lock()

    @property
    def capacity_bytes(self) -> int:
        """The byte budget."""
        return self._capacity

    @property
    def used_bytes(self) -> int:
        """Bytes currently held."""
        return self._used

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, tokens: object) -> bool:
        if not isinstance(tokens, tuple):
            return False
        with self._lock:
            return tokens in self._entries

    def entries(self) -> list[SnapshotInfo]:
        """The stored snapshots, least recently used first."""
        with self._lock:
            return [SnapshotInfo(k, e.nbytes) for k, e in self._entries.items()]

    def match_len(self, tokens: Sequence[int]) -> int:
        """The longest prefix of ``tokens`` some snapshot holds (0 if none); does not touch LRU order."""
        with self._lock:
            return max((common_prefix_len(k, tokens) for k in self._entries), default=0)

    def best_match(self, tokens: Sequence[int], *, touch: bool = True) -> SnapshotMatch[S] | None:
        """The snapshot sharing the longest prefix with ``tokens``.

        Ties go to the most recently used snapshot. A snapshot sharing no token is no match.

        Args:
            tokens: The prompt to serve.
            touch: Mark the match as most recently used.

        Returns:
            The match, or ``None`` when no snapshot shares a first token with ``tokens``.
        """
        with self._lock:
            best: tuple[int, ...] | None = None
            best_len = 0
            for key in reversed(self._entries):  # most recent first, so ties keep the most recent
                n = common_prefix_len(key, tokens)
                if n > best_len:
                    best, best_len = key, n
            if best is None:
                return None
            if touch:
                self._entries.move_to_end(best)
            return SnapshotMatch(best, self._entries[best].state, best_len)

    def covers(self, tokens: Sequence[int]) -> bool:
        """Whether some snapshot already holds all of ``tokens`` (its key starts with them)."""
        return len(tokens) > 0 and self.match_len(tokens) == len(tokens)

    def insert(
        self, tokens: Sequence[int], state: S, nbytes: int, *, keep: Sequence[int] | None = None
    ) -> bool:
        """Store a snapshot of the KV for ``tokens``, evicting least recently used ones to make room.

        Snapshots whose keys are prefixes of ``tokens`` are dropped (the new one serves all their prompts).
        When a stored key already starts with ``tokens`` the new snapshot is redundant: that entry is marked
        as used and nothing is stored.

        Args:
            tokens: The token prefix the state holds.
            state: The opaque state object.
            nbytes: Its size in bytes.
            keep: The key of a snapshot that must survive this insert (the one an engine is about to
                restore); it is never evicted to make room, as if pinned.

        Returns:
            ``True`` if the snapshot was stored; ``False`` if it was redundant, empty, larger than the
            whole budget, or room could only be made by evicting pinned (or ``keep``) snapshots.
        """
        key = tuple(tokens)
        if nbytes < 0:
            raise ConfigError(f"snapshot size must be >= 0 bytes, got {nbytes}")
        with self._lock:
            if not key or nbytes > self._capacity:
                return False
            for other in self._entries:
                if len(other) >= len(key) and other[: len(key)] == key:
                    self._entries.move_to_end(other)
                    return False
            self._expire_pins()
            kept = None if keep is None else tuple(keep)
            dominated = [k for k in self._entries if len(k) < len(key) and key[: len(k)] == k]
            evictable = [k for k in self._entries if k != kept and not self._protected(k)]
            freeable = sum(self._entries[k].nbytes for k in set(dominated) | set(evictable))
            if self._used - freeable + nbytes > self._capacity:
                return False  # only pinned (or kept) snapshots are left to evict: keep them, skip this one
            for k in dominated:
                self._drop(k)
            victims = iter([k for k in evictable if k in self._entries])
            while self._used + nbytes > self._capacity:
                self._drop(next(victims))
            self._entries[key] = _Entry(state, nbytes)
            self._used += nbytes
            self._emit(SnapshotStored(key))
            return True

    def pin(self, tokens: Sequence[int], ttl_s: float) -> None:
        """Keep snapshots serving ``tokens`` (their key starts with them, or is a prefix of them) out of LRU
        eviction for ``ttl_s`` seconds, e.g. while the agent that owns the prefix waits on a tool call.
        Re-pinning extends the TTL. When only pinned snapshots are left, a new one is not stored."""
        if ttl_s <= 0:
            raise ConfigError(f"pin ttl must be > 0 seconds, got {ttl_s}")
        key = tuple(tokens)
        if key:
            with self._lock:
                self._pins[key] = max(self._pins.get(key, 0.0), self._clock() + ttl_s)

    def unpin(self, tokens: Sequence[int]) -> bool:
        """Release a pin before its TTL; ``False`` if it was not pinned."""
        with self._lock:
            return self._pins.pop(tuple(tokens), None) is not None

    def pinned(self) -> list[tuple[int, ...]]:
        """The prefixes pinned now."""
        with self._lock:
            self._expire_pins()
            return list(self._pins)

    def _expire_pins(self) -> None:
        now = self._clock()
        for key in [k for k, until in self._pins.items() if until <= now]:
            del self._pins[key]

    def _protected(self, key: tuple[int, ...]) -> bool:
        return any(common_prefix_len(key, p) == min(len(key), len(p)) for p in self._pins)

    def remove(self, tokens: Sequence[int]) -> bool:
        """Drop the snapshot stored under exactly ``tokens``; ``False`` if there is none."""
        key = tuple(tokens)
        with self._lock:
            if key not in self._entries:
                return False
            self._drop(key)
            return True

    def clear(self) -> None:
        """Drop every snapshot (each one reported as evicted)."""
        with self._lock:
            for key in list(self._entries):
                self._drop(key)

    def _drop(self, key: tuple[int, ...]) -> None:
        entry = self._entries.pop(key)
        self._used -= entry.nbytes
        self._emit(SnapshotEvicted(key))

    def _emit(self, event: CacheEvent) -> None:
        if self._listener is not None:
            self._listener(event)


@dataclass(frozen=True, slots=True)
class ReusePlan:
    """Which cached KV an engine with one live context and a snapshot store should use for a prompt.

    Attributes:
        reuse: Prompt tokens whose KV is reused (``cached_tokens``); at most ``len(prompt) - 1``.
        snapshot: The key of the snapshot to restore first, or ``None`` to keep the live context.
    """

    reuse: int
    snapshot: tuple[int, ...] | None


def plan_reuse(
    live: Sequence[int], tokens: Sequence[int], store: SnapshotStore[S], *, restore_min_gain: int
) -> ReusePlan:
    """Decide between the live context and the best snapshot for a prompt.

    The last prompt token is always computed (its logits start generation), so reuse is capped at
    ``len(tokens) - 1``. A snapshot is restored only when it reuses at least ``max(1, restore_min_gain)`` more
    tokens than the live context, because loading one costs about as much as prefilling a few tokens.

    >>> store = SnapshotStore[str](100)
    >>> _ = store.insert((1, 2, 3, 4), "state", 10)
    >>> plan_reuse((1, 9), (1, 2, 3, 4, 5), store, restore_min_gain=2)
    ReusePlan(reuse=4, snapshot=(1, 2, 3, 4))
    >>> plan_reuse((1, 2, 3), (1, 2, 3, 4, 5), store, restore_min_gain=2)
    ReusePlan(reuse=3, snapshot=None)
    """
    limit = max(0, len(tokens) - 1)
    live_match = min(common_prefix_len(live, tokens), limit)
    match = store.best_match(tokens, touch=False)
    if match is not None:
        snap_match = min(match.length, limit)
        if snap_match >= live_match + max(1, restore_min_gain):
            return ReusePlan(snap_match, match.tokens)
    return ReusePlan(live_match, None)

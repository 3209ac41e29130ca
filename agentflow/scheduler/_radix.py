"""A token radix tree: the scheduler's model of what an exact prefix cache holds.

The tree stores token sequences with shared prefixes merged into compressed edges. Every prefix of a stored
sequence counts as cached, so ``match(tokens)`` is the longest common prefix of ``tokens`` with anything
stored. That is exactly how the llama.cpp engine reuses KV: its live context and each snapshot serve any
prompt for the tokens they share with it.

Token regions of one lookup::

    stored        : | system + tools ........ | history of agent A ...... |
    query tokens  : | system + tools ........ | history of agent B ........ |
                    ^0                        ^match(query)               ^len(query)
                    |<-- reused (cached) ---->|<-- prefilled (computed) -->|

The tree runs in one of two modes:

* ``mirror=False`` (default): the tree *is* the cache model. ``insert``/``acquire`` add sequences, and
  least-recently-used unlocked leaves are evicted to keep ``total_tokens`` within the token/byte budget
  (SGLang's radix cache policy).
* ``mirror=True``: the engine reports what it holds (``SnapshotStored``/``SnapshotEvicted``/``LiveContext``
  events from the llama.cpp engine); the scheduler applies them with ``apply`` (the tree is a ``CacheMirror``)
  and the tree never evicts on its own.
  ``acquire`` still adds the in-flight prompt as a prediction, pruned again at ``release`` unless the engine
  reported holding it.

Nodes carry a lock count: in-flight requests (``acquire``/``release``) and pins (``pin`` with a TTL) lock
their path so it is never evicted. Queued requests can ``watch`` their tokens: the tree keeps each watched
match length current as sequences come and go and reports changes through ``on_match_change``, so a policy
never has to re-match its whole queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import assert_never

from agentflow.engines import CacheEvent, LiveContext, SnapshotEvicted, SnapshotStored, common_prefix_len
from agentflow.errors import ConfigError

from ._pins import PinTable

__all__ = ["Eviction", "MatchListener", "RadixTree", "common_prefix_len"]

MatchListener = Callable[[Hashable, int], None]
"""Called as ``listener(key, new_length)`` when a watched sequence's cached-prefix length changes."""


@dataclass(frozen=True, slots=True)
class Eviction:
    """One leaf evicted by the LRU policy.

    Attributes:
        tokens: The full token path of the leaf before eviction.
        removed: How many tokens (the leaf's edge) were dropped; ``tokens[:-removed]`` is still cached.
    """

    tokens: tuple[int, ...]
    removed: int


class _Node:
    __slots__ = ("children", "depth", "ends", "key", "last_access", "lock_ref", "parent", "watchers")

    def __init__(self, key: tuple[int, ...], parent: _Node | None, depth: int, now: float) -> None:
        self.key = key  # edge tokens from the parent
        self.parent = parent
        self.depth = depth  # tokens from the root to the end of this edge
        self.children: dict[int, _Node] = {}
        self.ends = 0  # stored sequences ending exactly here
        self.lock_ref = 0  # in-flight requests and pins whose path runs through here
        self.last_access = now
        # Watched keys whose match ends inside this edge, by the token after their match (None: fully matched);
        # a new child starting with token t can only extend the watches filed under t.
        self.watchers: dict[int | None, set[Hashable]] = {}


class _Watch:
    __slots__ = ("length", "node", "tokens")

    def __init__(self, tokens: tuple[int, ...], length: int, node: _Node) -> None:
        self.tokens = tokens
        self.length = length
        self.node = node


class RadixTree:
    """Token radix tree with LRU eviction, locks, pins with a TTL, and watched match lengths.

    The scheduler owns one tree per engine and calls it from the event loop only (not thread-safe).
    Queued requests ``watch``; dispatch calls ``acquire``; completion calls ``release``; ``pin``/``unpin`` keep a
    paused agent's prefix; ``apply`` replays engine cache events in mirror mode.

    Args:
        budget_tokens: Most tokens the cache holds (``None``: unbounded).
        budget_bytes: Most bytes the cache holds; needs ``bytes_per_token``.
        bytes_per_token: KV bytes per cached token (``2 * layers * kv_heads * head_dim * dtype_bytes``).
        mirror: Follow engine events instead of evicting by LRU (see the module docstring).
        on_match_change: Told about every change of a watched match length.
        on_evict: Told about every LRU eviction, in order.
        clock: Time source for LRU order and pin expiry.
    """

    def __init__(
        self,
        *,
        budget_tokens: int | None = None,
        budget_bytes: int | None = None,
        bytes_per_token: int = 0,
        mirror: bool = False,
        on_match_change: MatchListener | None = None,
        on_evict: Callable[[Eviction], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if budget_tokens is not None and budget_tokens < 0:
            raise ConfigError(f"RadixTree budget_tokens must be >= 0 or None, got {budget_tokens}")
        if budget_bytes is not None and bytes_per_token <= 0:
            raise ConfigError(
                f"RadixTree budget_bytes={budget_bytes} needs bytes_per_token > 0 (got {bytes_per_token}); "
                "pass the model's KV bytes per token"
            )
        from_bytes = None if budget_bytes is None else budget_bytes // bytes_per_token
        known = [b for b in (budget_tokens, from_bytes) if b is not None]
        self._budget: int | None = min(known) if known else None
        self._bytes_per_token = bytes_per_token
        self._mirror = mirror
        self._clock = clock
        self.on_match_change = on_match_change
        self.on_evict = on_evict
        # The root holds no tokens; lives as long as the tree.
        self._root = _Node((), None, 0, clock())
        # Tokens over all edges (= distinct cached prefixes); updated on every node add/remove.
        self._total = 0
        # Tokens on edges with lock_ref > 0 (the working set that cannot be evicted).
        self._locked = 0
        # Pinned sequences -> expiry; an entry lives until unpin or expiry (checked lazily by expire_pins).
        self._pins = PinTable(clock=clock, hold=self._hold_pin, unhold=self.release)
        # Watched key -> its current match; lives from watch() to unwatch().
        self._watches: dict[Hashable, _Watch] = {}
        # Keys whose match may have changed during the current operation; flushed at its end.
        self._dirty: set[Hashable] = set()
        # The engine's live context per the last LiveContext event applied (mirror mode); replaced by the next.
        self._live: tuple[int, ...] = ()

    # ------------------------------------------------------------------ queries

    @property
    def budget_tokens(self) -> int | None:
        """The effective token budget (the tighter of the token and byte budgets)."""
        return self._budget

    @property
    def total_tokens(self) -> int:
        """Tokens held: the number of distinct non-empty cached prefixes."""
        return self._total

    @property
    def total_bytes(self) -> int:
        """Bytes held, at ``bytes_per_token`` per token."""
        return self._total * self._bytes_per_token

    @property
    def locked_tokens(self) -> int:
        """Tokens on paths of in-flight requests and live pins (the working set that cannot be evicted)."""
        return self._locked

    def match(self, tokens: Sequence[int], *, namespace: str | None = None) -> int:
        """Length of the longest prefix of ``tokens`` that is cached. No side effects."""
        _unsalted(namespace)
        return self._walk(tuple(tokens))[0]

    def sequences(self) -> list[tuple[int, ...]]:
        """Every maximal cached sequence (root-to-leaf path), in no particular order."""
        out: list[tuple[int, ...]] = []
        stack: list[tuple[_Node, tuple[int, ...]]] = [(self._root, ())]
        while stack:
            node, path = stack.pop()
            if not node.children and node is not self._root:
                out.append(path)
            for child in node.children.values():
                stack.append((child, path + child.key))
        return out

    def pinned(self) -> dict[tuple[int, ...], float]:
        """Live pins: sequence -> expiry time."""
        return self._pins.as_dict()

    # ------------------------------------------------------------------ mutations

    def insert(self, tokens: Sequence[int]) -> int:
        """Record that the cache holds ``tokens``; touch its path; evict to the budget (non-mirror mode).

        Returns:
            How many tokens were new to the tree.
        """
        self.expire_pins()
        end, added, _ = self._insert_path(tuple(tokens))
        if end is not self._root:
            end.ends += 1
        if not self._mirror:
            self._evict_to_budget()
        self._flush()
        return added

    def remove(self, tokens: Sequence[int]) -> int:
        """Forget one stored copy of ``tokens`` (mirror of an engine eviction) and prune what no longer backs it.

        Prefixes still backed by another stored sequence, a lock or a pin stay.

        Returns:
            How many tokens were dropped from the tree.
        """
        seq = tuple(tokens)
        length, node = self._walk(seq)
        if length != len(seq) or node.depth != length or node is self._root or node.ends == 0:
            return 0
        node.ends -= 1
        before = self._total
        self._prune(node)
        self._flush()
        return before - self._total

    def apply(self, event: CacheEvent) -> int:
        """Apply one engine cache event (``CacheMirror``): a stored snapshot is inserted, an evicted one
        removed, and a new live context replaces the previous one.

        Returns:
            How many tokens of the prefix the event dropped are no longer cached (0 for a stored prefix, or
            when a longer sequence, a lock or a pin still holds them).
        """
        match event:
            case SnapshotStored(tokens):
                self.insert(tokens)
                return 0
            case SnapshotEvicted(tokens):
                self.remove(tokens)
                return len(tokens) - self.match(tokens)
            case LiveContext(tokens):
                previous, self._live = self._live, tokens
                if tokens:
                    self.insert(tokens)
                if not previous:
                    return 0
                self.remove(previous)
                return len(previous) - self.match(previous)
            case _:
                assert_never(event)

    def acquire(self, tokens: Sequence[int], *, namespace: str | None = None) -> int:
        """Lock ``tokens`` for an in-flight request: its prefix can no longer be evicted.

        The path is created if missing (the engine is about to compute and hold it). Call ``release`` with the
        same tokens when the request finishes.

        Returns:
            The cached-prefix length before the call (the model's prediction of reused tokens).
        """
        _unsalted(namespace)
        self.expire_pins()
        seq = tuple(tokens)
        end, _, cached = self._insert_path(seq, lock=True)
        if not self._mirror and end is not self._root:
            end.ends += 1
        if not self._mirror:
            self._evict_to_budget()
        self._flush()
        return cached

    def release(
        self,
        tokens: Sequence[int],
        *,
        predicted: int | None = None,
        reported: int | None = None,
        namespace: str | None = None,
    ) -> None:
        """Unlock what ``acquire(tokens)`` locked (in mirror mode, prune it unless the engine reported it).

        ``predicted``/``reported`` cached tokens are accepted for the ``CacheModel`` protocol; an exact model
        is corrected by engine events (mirror mode), not by these numbers.
        """
        _unsalted(namespace)
        seq = tuple(tokens)
        end = self._lock_path(seq, -1)
        if self._mirror:
            self._prune(end)
        else:
            self._evict_to_budget()
        self._flush()

    def pin(self, tokens: Sequence[int], ttl_s: float, *, namespace: str | None = None) -> None:
        """Keep ``tokens`` cached until ``ttl_s`` seconds from now (re-pinning extends the deadline).

        In non-mirror mode a missing sequence is inserted first; in mirror mode only the part the engine
        holds is pinned (the model cannot keep what the engine dropped).
        """
        _unsalted(namespace)
        self.expire_pins()
        seq = tuple(tokens)
        if self._mirror:
            seq = seq[: self._walk(seq)[0]]
        self._pins.pin(seq, ttl_s)
        if not self._mirror:
            self._evict_to_budget()
        self._flush()

    def _hold_pin(self, seq: tuple[int, ...]) -> None:
        if self._mirror:
            self._lock_path(seq, +1)
        else:
            end, _, _ = self._insert_path(seq, lock=True)
            end.ends += 1

    def unpin(self, tokens: Sequence[int], *, namespace: str | None = None) -> bool:
        """Release a pin early; ``False`` if ``tokens`` was not pinned."""
        _unsalted(namespace)
        seq = tuple(tokens)
        if self._mirror:
            seq = next((p for p in self._pins if p == seq[: len(p)] and len(p) <= len(seq)), seq)
        return self._pins.unpin(seq)

    def expire_pins(self) -> int:
        """Release pins whose TTL has passed; returns how many. Mutating calls do this first."""
        return self._pins.expire()

    def evict(self, n_tokens: int) -> list[Eviction]:
        """Evict least-recently-used unlocked leaves until at least ``n_tokens`` are freed or none is left."""
        self.expire_pins()
        out: list[Eviction] = []
        freed = 0
        while freed < n_tokens:
            ev = self._evict_one()
            if ev is None:
                break
            out.append(ev)
            freed += ev.removed
        self._flush()
        return out

    # ------------------------------------------------------------------ watches

    def watch(self, key: Hashable, tokens: Sequence[int], *, namespace: str | None = None) -> int:
        """Track the cached-prefix length of ``tokens`` under ``key``; returns its current value.

        Later changes are reported through ``on_match_change(key, length)`` until ``unwatch(key)``.
        """
        _unsalted(namespace)
        self.unwatch(key)
        seq = tuple(tokens)
        length, node = self._walk(seq)
        w = _Watch(seq, length, node)
        self._watches[key] = w
        self._attach(key, w)
        return length

    def unwatch(self, key: Hashable) -> None:
        """Stop tracking ``key`` (no-op if it is not watched)."""
        w = self._watches.pop(key, None)
        if w is not None:
            self._detach(key, w)
            self._dirty.discard(key)

    def watched(self, key: Hashable) -> int:
        """The current cached-prefix length of a watched key."""
        return self._watches[key].length

    # ------------------------------------------------------------------ internals

    def _walk(self, seq: tuple[int, ...]) -> tuple[int, _Node]:
        """Match ``seq``; return (length, node whose edge holds the match end, root if 0)."""
        node = self._root
        i = 0
        n = len(seq)
        while i < n:
            child = node.children.get(seq[i])
            if child is None:
                return i, node
            key = child.key
            k = len(key)
            if seq[i : i + k] == key:
                i += k
                node = child
                continue
            return i + common_prefix_len(key, seq[i : i + k]), child
        return i, node

    def _insert_path(self, seq: tuple[int, ...], *, lock: bool = False) -> tuple[_Node, int, int]:
        """Create ``seq``'s path (splitting edges so it ends on a node boundary), touch it, optionally lock it.

        Returns:
            The end node, the tokens added, and the tokens that were already cached (``match`` before).
        """
        now = self._clock()
        node = self._root
        i = 0
        n = len(seq)
        while i < n:
            child = node.children.get(seq[i])
            if child is None:
                child = _Node(seq[i:], node, n, now)
                node.children[seq[i]] = child
                self._total += n - i
                depth = node.depth
                for key in node.watchers.get(seq[i], ()):
                    if self._watches[key].length == depth:
                        self._dirty.add(key)
                if lock:
                    self._locked += n - i
                    child.lock_ref = 1
                return child, n - i, i
            key = child.key
            k = len(key)
            j = k if seq[i : i + k] == key else common_prefix_len(key, seq[i : i + k])
            if j < k:
                child = self._split(child, j)
            child.last_access = now
            if lock:
                if child.lock_ref == 0:
                    self._locked += j
                child.lock_ref += 1
            node = child
            i += j
        return node, 0, n

    def _split(self, child: _Node, j: int) -> _Node:
        """Split ``child``'s edge after ``j`` tokens; return the new upper node."""
        parent = child.parent
        assert parent is not None
        mid = _Node(child.key[:j], parent, child.depth - len(child.key) + j, child.last_access)
        mid.lock_ref = child.lock_ref
        parent.children[child.key[0]] = mid
        child.key = child.key[j:]
        child.parent = mid
        mid.children[child.key[0]] = child
        moving = [k for keys in child.watchers.values() for k in keys if self._watches[k].length <= mid.depth]
        for key in moving:
            w = self._watches[key]
            self._detach(key, w)
            w.node = mid
            self._attach(key, w)
        return mid

    def _lock_path(self, seq: tuple[int, ...], delta: int) -> _Node:
        """Add ``delta`` to the lock count of every node on ``seq``'s path (which must exist)."""
        node = self._root
        i = 0
        n = len(seq)
        while i < n:
            child = node.children[seq[i]]
            k = len(child.key)
            if k > n - i:
                child = self._split(child, n - i)
                k = n - i
            if delta > 0 and child.lock_ref == 0:
                self._locked += k
            child.lock_ref += delta
            if delta < 0 and child.lock_ref == 0:
                self._locked -= k
            node = child
            i += k
        return node

    def _evict_to_budget(self) -> None:
        if self._budget is None:
            return
        while self._total > self._budget and self._evict_one() is not None:
            pass

    def _evict_one(self) -> Eviction | None:
        """Remove the least recently used unlocked leaf, or return ``None`` if every leaf is locked."""
        best: _Node | None = None
        stack = list(self._root.children.values())
        while stack:
            node = stack.pop()
            if node.children:
                stack.extend(node.children.values())
            elif node.lock_ref == 0 and (best is None or node.last_access < best.last_access):
                best = node
        if best is None:
            return None
        ev = Eviction(self._path(best), len(best.key))
        self._remove_leaf(best)
        if self.on_evict is not None:
            self.on_evict(ev)
        return ev

    def _prune(self, node: _Node) -> None:
        while node is not self._root and not node.children and node.ends == 0 and node.lock_ref == 0:
            parent = node.parent
            assert parent is not None
            self._remove_leaf(node)
            node = parent

    def _remove_leaf(self, leaf: _Node) -> None:
        parent = leaf.parent
        assert parent is not None
        del parent.children[leaf.key[0]]
        self._total -= len(leaf.key)
        for keys in leaf.watchers.values():
            for key in keys:
                w = self._watches[key]
                w.node = parent
                self._attach(key, w)
                self._dirty.add(key)
        leaf.watchers.clear()

    def _path(self, node: _Node) -> tuple[int, ...]:
        parts: list[tuple[int, ...]] = []
        cur: _Node | None = node
        while cur is not None and cur is not self._root:
            parts.append(cur.key)
            cur = cur.parent
        return tuple(t for part in reversed(parts) for t in part)

    @staticmethod
    def _next_token(w: _Watch) -> int | None:
        return w.tokens[w.length] if w.length < len(w.tokens) else None

    def _attach(self, key: Hashable, w: _Watch) -> None:
        w.node.watchers.setdefault(self._next_token(w), set()).add(key)

    def _detach(self, key: Hashable, w: _Watch) -> None:
        bucket = w.node.watchers.get(self._next_token(w))
        if bucket is not None:
            bucket.discard(key)
            if not bucket:
                del w.node.watchers[self._next_token(w)]

    def _flush(self) -> None:
        """Re-match watches touched by the last operation and report changed lengths."""
        while self._dirty:
            key = self._dirty.pop()
            w = self._watches.get(key)
            if w is None:
                continue
            old_length = w.length
            length, node = self._walk(w.tokens)
            self._detach(key, w)
            w.node = node
            w.length = length
            self._attach(key, w)
            if self.on_match_change is not None and length != old_length:
                self.on_match_change(key, length)


def _unsalted(namespace: str | None) -> None:
    """A radix tree models an exact cache without salts (llama.cpp); salted caches are block caches."""
    if namespace is not None:
        raise ConfigError(
            f"RadixTree models an unsalted exact prefix cache but got cache salt namespace {namespace!r}; "
            "model a salted (vLLM) cache with BlockLRU"
        )

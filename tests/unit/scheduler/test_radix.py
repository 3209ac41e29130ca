"""RadixTree: unit tests and a hypothesis state machine against a brute-force model (a set of token tuples)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agentflow.engines import CacheMirror, LiveContext, SnapshotEvicted, SnapshotStored
from agentflow.errors import ConfigError
from agentflow.scheduler import BlockLRU, Eviction, NoCache, RadixTree, common_prefix_len


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_match_returns_longest_shared_prefix_when_sequences_branch() -> None:
    tree = RadixTree()
    tree.insert((1, 2, 3, 4))
    tree.insert((1, 2, 5))
    assert tree.match((1, 2, 3, 9)) == 3
    assert tree.match((1, 2, 5, 6)) == 3
    assert tree.match((1, 7)) == 1
    assert tree.match((9,)) == 0
    assert tree.total_tokens == 5  # 1 2 3 4 + 5


def test_insert_returns_only_new_tokens_when_prefix_exists() -> None:
    tree = RadixTree()
    assert tree.insert((1, 2, 3)) == 3
    assert tree.insert((1, 2, 3, 4, 5)) == 2
    assert tree.insert((1, 2)) == 0
    assert sorted(tree.sequences()) == [(1, 2, 3, 4, 5)]


def test_evict_drops_least_recently_used_leaf_first() -> None:
    clock = FakeClock()
    tree = RadixTree(clock=clock)
    tree.insert((1, 2, 3))
    clock.now = 1
    tree.insert((1, 2, 4))
    clock.now = 2
    tree.insert((1, 2, 3))  # touch the first branch again
    evicted = tree.evict(1)
    assert evicted == [Eviction((1, 2, 4), 1)]
    assert tree.match((1, 2, 4)) == 2


def test_insert_evicts_to_token_budget_when_over() -> None:
    clock = FakeClock()
    tree = RadixTree(budget_tokens=6, clock=clock)
    tree.insert((1, 2, 3, 4))
    clock.now = 1
    tree.insert((5, 6, 7, 8))
    assert tree.total_tokens <= 6
    assert tree.match((5, 6, 7, 8)) == 4
    assert tree.match((1, 2, 3, 4)) == 0


def test_byte_budget_limits_tokens_when_bytes_per_token_given() -> None:
    tree = RadixTree(budget_bytes=1000, bytes_per_token=100)
    assert tree.budget_tokens == 10
    tree.insert(tuple(range(8)))
    tree.insert(tuple(range(100, 108)))
    assert tree.total_bytes <= 1000
    assert tree.total_tokens == 8


def test_byte_budget_without_bytes_per_token_is_config_error() -> None:
    with pytest.raises(ConfigError, match="bytes_per_token"):
        RadixTree(budget_bytes=1000)


def test_acquired_prefix_survives_eviction_until_released() -> None:
    tree = RadixTree(budget_tokens=4)
    tree.acquire((1, 2, 3, 4))
    tree.insert((5, 6, 7, 8))  # over budget, but (1, 2, 3, 4) is locked
    assert tree.match((1, 2, 3, 4)) == 4
    assert tree.locked_tokens == 4
    tree.release((1, 2, 3, 4))
    assert tree.locked_tokens == 0
    assert tree.total_tokens <= 4


def test_pin_keeps_prefix_until_ttl_expires() -> None:
    clock = FakeClock()
    tree = RadixTree(budget_tokens=4, clock=clock)
    tree.pin((1, 2, 3), ttl_s=10)
    tree.insert((7, 8, 9))
    assert tree.match((1, 2, 3)) == 3
    clock.now = 11
    assert tree.expire_pins() == 1
    tree.insert((4, 5, 6))
    assert tree.match((1, 2, 3)) == 0


def test_repin_extends_ttl_and_unpin_releases_early() -> None:
    clock = FakeClock()
    tree = RadixTree(clock=clock)
    tree.pin((1, 2), ttl_s=5)
    clock.now = 4
    tree.pin((1, 2), ttl_s=5)
    clock.now = 6
    assert tree.expire_pins() == 0
    assert tree.locked_tokens == 2
    assert tree.unpin((1, 2))
    assert tree.locked_tokens == 0
    assert not tree.unpin((1, 2))


def test_mirror_remove_prunes_only_unbacked_tokens() -> None:
    tree = RadixTree(mirror=True)
    tree.insert((1, 2, 3, 4))
    tree.insert((1, 2, 5))
    assert tree.remove((1, 2, 3, 4)) == 2
    assert tree.match((1, 2, 3)) == 2
    assert tree.match((1, 2, 5)) == 3
    assert tree.remove((9, 9)) == 0


def test_apply_replaces_the_live_context_and_reports_what_it_lost() -> None:
    tree = RadixTree(mirror=True)
    assert isinstance(tree, CacheMirror)
    assert tree.apply(LiveContext((1, 2, 3, 4))) == 0
    assert tree.apply(LiveContext((1, 2, 9))) == 2  # 3, 4 are gone; 1, 2 live on in the new context
    assert tree.sequences() == [(1, 2, 9)]
    assert tree.apply(LiveContext(())) == 3
    assert tree.total_tokens == 0


def test_apply_loses_nothing_when_a_snapshot_keeps_the_replaced_context() -> None:
    tree = RadixTree(mirror=True)
    tree.apply(LiveContext((1, 2, 3, 4)))
    assert tree.apply(SnapshotStored((1, 2, 3, 4))) == 0
    assert tree.apply(LiveContext((7, 8))) == 0
    assert tree.match((1, 2, 3, 4)) == 4
    assert tree.apply(SnapshotEvicted((1, 2, 3, 4))) == 4
    assert tree.sequences() == [(7, 8)]


def test_apply_of_an_evicted_snapshot_the_live_context_covers_loses_nothing() -> None:
    tree = RadixTree(mirror=True)
    tree.apply(SnapshotStored((1, 2)))
    tree.apply(LiveContext((1, 2, 3)))
    assert tree.apply(SnapshotEvicted((1, 2))) == 0
    assert tree.match((1, 2, 3)) == 3


def test_only_the_radix_tree_is_a_cache_mirror() -> None:
    assert not isinstance(BlockLRU(block_size=4), CacheMirror)
    assert not isinstance(NoCache(), CacheMirror)


def test_mirror_acquire_is_pruned_at_release_unless_engine_reported_it() -> None:
    tree = RadixTree(mirror=True)
    tree.acquire((1, 2, 3))
    assert tree.match((1, 2, 3, 4)) == 3  # predicted while in flight
    tree.release((1, 2, 3))
    assert tree.total_tokens == 0
    tree.acquire((1, 2, 3))
    tree.insert((1, 2, 3))  # the engine reported holding it
    tree.release((1, 2, 3))
    assert tree.match((1, 2, 3)) == 3


def test_watch_reports_match_changes_on_insert_split_and_evict() -> None:
    changes: list[tuple[Hashable, int]] = []
    clock = FakeClock()
    tree = RadixTree(clock=clock, on_match_change=lambda k, n: changes.append((k, n)))
    tree.insert((1, 2, 3, 4))
    assert tree.watch("a", (1, 2, 3, 9)) == 3
    assert tree.watch("b", (1, 2, 7, 8)) == 2
    clock.now = 1
    tree.insert((1, 2, 7))  # splits the edge after (1, 2) and extends b
    assert changes == [("b", 3)]
    assert tree.watched("a") == 3
    changes.clear()
    tree.evict(100)
    assert sorted(changes) == [("a", 0), ("b", 0)]
    tree.unwatch("a")
    tree.insert((1, 2, 3))
    assert changes[-1] == ("b", 2)


# ---------------------------------------------------------------------- brute force

TOKENS = st.lists(st.integers(0, 2), min_size=1, max_size=6).map(tuple)


def _prefixes(seq: tuple[int, ...]) -> list[tuple[int, ...]]:
    return [seq[:i] for i in range(1, len(seq) + 1)]


class RadixModel(RuleBasedStateMachine):
    """The tree against a prefix-closed set P of token tuples with access times, locks and pins.

    Node boundaries B (insert/acquire/pin endpoints and the points where they branched off) tell how much
    an eviction of a leaf ``m`` removes: everything longer than the deepest boundary above ``m``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.budget = 12
        self.evictions: list[Eviction] = []
        self.tree = RadixTree(budget_tokens=self.budget, clock=self.clock, on_evict=self.evictions.append)
        self.present: dict[tuple[int, ...], float] = {}  # P with last access times
        self.bounds: set[tuple[int, ...]] = set()
        self.locks: Counter[tuple[int, ...]] = Counter()
        self.pins: dict[tuple[int, ...], float] = {}

    # ---- model helpers

    def protected(self) -> set[tuple[int, ...]]:
        return {s for s, n in self.locks.items() if n > 0} | set(self.pins)

    def maximal(self) -> list[tuple[int, ...]]:
        return [
            p for p in self.present if not any(len(q) > len(p) and q[: len(p)] == p for q in self.present)
        ]

    def model_match(self, seq: tuple[int, ...]) -> int:
        return max((k for k in range(1, len(seq) + 1) if seq[:k] in self.present), default=0)

    def add(self, seq: tuple[int, ...]) -> None:
        k = self.model_match(seq)
        self.bounds.add(seq)
        if 0 < k < len(seq):
            self.bounds.add(seq[:k])
        for p in _prefixes(seq):
            self.present[p] = self.clock.now

    def replay(self, before: set[tuple[int, ...]]) -> None:
        after = self.protected()
        for ev in self.evictions:
            m = ev.tokens
            leaves = self.maximal()
            assert m in leaves, f"evicted {m} is not a leaf of {leaves}"
            assert m not in after, f"evicted protected {m}"
            free = [q for q in leaves if q not in after and q not in before]
            assert all(self.present[m] <= self.present[q] for q in free), "not least recently used"
            depth = max(
                (len(b) for b in self.bounds if b in self.present and len(b) < len(m) and m[: len(b)] == b),
                default=0,
            )
            assert ev.removed == len(m) - depth
            for p in _prefixes(m)[depth:]:
                del self.present[p]
            self.bounds = {b for b in self.bounds if b in self.present}
        self.evictions.clear()

    # ---- rules

    @rule(seq=TOKENS)
    def insert(self, seq: tuple[int, ...]) -> None:
        before = self.protected()
        self.tree.insert(seq)
        self.add(seq)
        self.replay(before)

    @rule(seq=TOKENS)
    def acquire(self, seq: tuple[int, ...]) -> None:
        before = self.protected()
        predicted = self.tree.acquire(seq)
        assert predicted == self.model_match(seq)
        self.add(seq)
        self.locks[seq] += 1
        self.replay(before)

    @precondition(lambda self: any(n > 0 for n in self.locks.values()))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(s for s, n in self.locks.items() if n > 0)))
        before = self.protected()
        self.tree.release(seq)
        self.locks[seq] -= 1
        self.replay(before)

    @rule(seq=TOKENS, ttl=st.integers(1, 5))
    def pin(self, seq: tuple[int, ...], ttl: int) -> None:
        before = self.protected()
        self.tree.pin(seq, ttl)
        if seq not in self.pins:
            self.add(seq)
        self.pins[seq] = self.clock.now + ttl
        self.replay(before)

    @rule(dt=st.integers(1, 3))
    def advance(self, dt: int) -> None:
        before = self.protected()
        self.clock.now += dt
        self.tree.expire_pins()
        self.pins = {s: t for s, t in self.pins.items() if t > self.clock.now}
        self.replay(before)

    @rule(n=st.integers(1, 6))
    def evict(self, n: int) -> None:
        before = self.protected()
        out = self.tree.evict(n)
        assert out == self.evictions
        freed = sum(e.removed for e in out)
        self.replay(before)
        if freed < n:
            assert all(m in self.protected() for m in self.maximal()), "stopped early with evictable leaves"

    @rule(seq=TOKENS)
    def match(self, seq: tuple[int, ...]) -> None:
        assert self.tree.match(seq) == self.model_match(seq)

    # ---- invariants

    @invariant()
    def sizes_agree(self) -> None:
        assert self.tree.total_tokens == len(self.present)
        locked = {p for s in self.protected() for p in _prefixes(s)}
        assert self.tree.locked_tokens == len(locked)

    @invariant()
    def within_budget_unless_everything_is_protected(self) -> None:
        if self.tree.total_tokens > self.budget:
            assert all(m in self.protected() for m in self.maximal())

    @invariant()
    def sequences_are_the_maximal_elements(self) -> None:
        assert sorted(self.tree.sequences()) == sorted(self.maximal())


TestRadixAgainstModel = RadixModel.TestCase
TestRadixAgainstModel.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


class WatchModel(RuleBasedStateMachine):
    """Watched match lengths always equal a fresh ``match`` (mirror mode: inserts and removes)."""

    def __init__(self) -> None:
        super().__init__()
        self.reported: dict[Hashable, int] = {}
        self.tree = RadixTree(mirror=True, on_match_change=self.reported.__setitem__)
        self.stored: Counter[tuple[int, ...]] = Counter()
        self.watches: dict[str, tuple[int, ...]] = {}

    @rule(seq=TOKENS)
    def insert(self, seq: tuple[int, ...]) -> None:
        self.tree.insert(seq)
        self.stored[seq] += 1

    @precondition(lambda self: +self.stored)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(+self.stored)))
        self.tree.remove(seq)
        self.stored[seq] -= 1

    @rule(key=st.sampled_from("abcd"), seq=TOKENS)
    def watch(self, key: str, seq: tuple[int, ...]) -> None:
        self.reported[key] = self.tree.watch(key, seq)
        self.watches[key] = seq

    @invariant()
    def watches_are_current(self) -> None:
        for key, seq in self.watches.items():
            expected = max((common_prefix_len(s, seq) for s in +self.stored), default=0)
            assert self.tree.watched(key) == expected
            assert self.reported[key] == expected


TestWatchAgainstModel = WatchModel.TestCase
TestWatchAgainstModel.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)


@settings(max_examples=300, deadline=None)
@given(
    a=st.lists(st.integers(0, 2), max_size=200).map(tuple),
    b=st.lists(st.integers(0, 2), max_size=200).map(tuple),
)
def test_common_prefix_len_equals_brute_force(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    assert common_prefix_len(a, b) == k
    assert common_prefix_len(a, a + b) == len(a)
    assert common_prefix_len(list(a), b) == k

"""Unit tests of the KV snapshot store, with fake states of chosen byte sizes (no model)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.engines import (
    CacheEvent,
    ReusePlan,
    SnapshotEvicted,
    SnapshotStore,
    SnapshotStored,
    common_prefix_len,
    plan_reuse,
)
from agentflow.errors import ConfigError


@dataclass(frozen=True)
class FakeState:
    label: str


def _store(capacity: int) -> tuple[SnapshotStore[FakeState], list[CacheEvent]]:
    events: list[CacheEvent] = []
    return SnapshotStore[FakeState](capacity, listener=events.append), events


def test_common_prefix_len_matches_naive_loop_on_examples() -> None:
    assert common_prefix_len((1, 2, 3), (1, 2, 3)) == 3
    assert common_prefix_len((1, 2, 3), (1, 2)) == 2
    assert common_prefix_len((1, 2, 3), (4, 2, 3)) == 0
    assert common_prefix_len([5, 6, 7, 8, 9], [5, 6, 7, 0, 9]) == 3
    assert common_prefix_len((), ()) == 0


@given(st.lists(st.integers(0, 3), max_size=40), st.lists(st.integers(0, 3), max_size=40))
def test_common_prefix_len_equals_naive_loop_for_any_sequences(a: list[int], b: list[int]) -> None:
    naive = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        naive += 1
    assert common_prefix_len(a, b) == naive


def test_best_match_returns_longest_shared_prefix_when_several_snapshots_match() -> None:
    store, _ = _store(1000)
    store.insert((1, 2, 3, 4), FakeState("a"), 10)
    store.insert((1, 2, 9, 9, 9), FakeState("b"), 10)
    match = store.best_match((1, 2, 3, 7))
    assert match is not None
    assert match.state == FakeState("a")
    assert match.length == 3
    assert match.tokens == (1, 2, 3, 4)


def test_best_match_returns_none_when_no_first_token_is_shared() -> None:
    store, _ = _store(1000)
    store.insert((1, 2), FakeState("a"), 10)
    assert store.best_match((2, 1)) is None
    assert store.match_len((2, 1)) == 0


def test_insert_evicts_least_recently_used_when_over_budget() -> None:
    store, events = _store(25)
    store.insert((1,), FakeState("a"), 10)
    store.insert((2,), FakeState("b"), 10)
    store.best_match((1, 5))  # touch (1,) so (2,) is the least recently used
    assert store.insert((3,), FakeState("c"), 10)
    assert [e.tokens for e in store.entries()] == [(1,), (3,)]
    assert store.used_bytes == 20
    assert events[-2:] == [SnapshotEvicted((2,)), SnapshotStored((3,))]


def test_insert_never_evicts_the_kept_snapshot_and_evicts_another_instead() -> None:
    store, _ = _store(25)
    store.insert((1,), FakeState("a"), 10)  # least recently used: the victim without keep
    store.insert((2,), FakeState("b"), 10)
    assert store.insert((3,), FakeState("c"), 10, keep=(1,))
    assert [e.tokens for e in store.entries()] == [(1,), (3,)]


def test_insert_is_skipped_when_only_the_kept_snapshot_could_make_room() -> None:
    store, events = _store(15)
    store.insert((1,), FakeState("a"), 10)
    assert not store.insert((2,), FakeState("b"), 10, keep=(1,))
    assert [e.tokens for e in store.entries()] == [(1,)]
    assert events == [SnapshotStored((1,))]


def test_insert_drops_dominated_prefixes_when_a_longer_key_arrives() -> None:
    store, events = _store(1000)
    store.insert((1, 2), FakeState("short"), 10)
    store.insert((1, 2, 3, 4), FakeState("long"), 30)
    assert [e.tokens for e in store.entries()] == [(1, 2, 3, 4)]
    assert store.used_bytes == 30
    assert SnapshotEvicted((1, 2)) in events


def test_insert_is_redundant_when_an_existing_key_covers_the_tokens() -> None:
    store, events = _store(1000)
    store.insert((1, 2, 3), FakeState("long"), 30)
    assert not store.insert((1, 2), FakeState("short"), 10)
    assert not store.insert((1, 2, 3), FakeState("same"), 30)
    assert len(store) == 1
    assert store.covers((1, 2))
    assert events == [SnapshotStored((1, 2, 3))]


def test_insert_refuses_snapshot_larger_than_capacity() -> None:
    store, events = _store(50)
    store.insert((1,), FakeState("a"), 10)
    assert not store.insert((2,), FakeState("huge"), 51)
    assert [e.tokens for e in store.entries()] == [(1,)]
    assert events == [SnapshotStored((1,))]


def test_zero_capacity_store_stores_nothing() -> None:
    store, events = _store(0)
    assert not store.insert((1, 2), FakeState("a"), 1)
    assert len(store) == 0
    assert events == []


def test_negative_capacity_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="capacity"):
        SnapshotStore[FakeState](-1)


def test_remove_and_clear_report_evictions() -> None:
    store, events = _store(100)
    store.insert((1,), FakeState("a"), 10)
    store.insert((2,), FakeState("b"), 10)
    assert store.remove((1,))
    assert not store.remove((1,))
    store.clear()
    assert len(store) == 0
    assert store.used_bytes == 0
    assert [e for e in events if isinstance(e, SnapshotEvicted)] == [
        SnapshotEvicted((1,)),
        SnapshotEvicted((2,)),
    ]


# --- model-based test against a brute-force reference --------------------------------------------------


@dataclass
class BruteStore:
    """The same contract written as plainly as possible: a recency-ordered list."""

    capacity: int
    items: list[tuple[tuple[int, ...], int]] = field(default_factory=list)  # LRU first

    def used(self) -> int:
        return sum(n for _, n in self.items)

    def best(self, tokens: tuple[int, ...]) -> tuple[tuple[int, ...], int] | None:
        best: tuple[tuple[int, ...], int] | None = None
        for key, _ in self.items:  # LRU first: a later (more recent) tie wins
            n = 0
            while n < min(len(key), len(tokens)) and key[n] == tokens[n]:
                n += 1
            if n > 0 and (best is None or n >= best[1]):
                best = (key, n)
        return best

    def touch(self, key: tuple[int, ...]) -> None:
        item = next(i for i in self.items if i[0] == key)
        self.items.remove(item)
        self.items.append(item)

    def insert(self, key: tuple[int, ...], nbytes: int) -> bool:
        if not key or nbytes > self.capacity:
            return False
        for k, _ in self.items:
            if k[: len(key)] == key:
                self.touch(k)
                return False
        self.items = [(k, n) for k, n in self.items if key[: len(k)] != k]
        while self.used() + nbytes > self.capacity:
            self.items.pop(0)
        self.items.append((key, nbytes))
        return True


token_lists = st.lists(st.integers(0, 2), min_size=0, max_size=6).map(tuple)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), token_lists, st.integers(0, 40)),
        st.tuples(st.just("match"), token_lists, st.just(0)),
        st.tuples(st.just("remove"), token_lists, st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 100), operations)
def test_store_agrees_with_brute_force_model_for_any_operation_sequence(
    capacity: int, ops: list[tuple[str, tuple[int, ...], int]]
) -> None:
    store, events = _store(capacity)
    brute = BruteStore(capacity)
    for op, tokens, nbytes in ops:
        if op == "insert":
            assert store.insert(tokens, FakeState(str(tokens)), nbytes) == brute.insert(tokens, nbytes)
        elif op == "match":
            match = store.best_match(tokens)
            expected = brute.best(tokens)
            if expected is None:
                assert match is None
            else:
                assert match is not None
                assert (match.tokens, match.length) == expected
                assert match.state == FakeState(str(match.tokens))
                brute.touch(expected[0])
        else:
            before = [k for k, _ in brute.items]
            assert store.remove(tokens) == (tokens in before)
            brute.items = [(k, n) for k, n in brute.items if k != tokens]
        assert [(e.tokens, e.nbytes) for e in store.entries()] == brute.items
        assert store.used_bytes == brute.used() <= capacity
        keys = [e.tokens for e in store.entries()]
        for a in keys:
            for b in keys:
                assert a == b or b[: len(a)] != a, "no key may be a prefix of another"
    mirrored: set[tuple[int, ...]] = set()
    for event in events:
        if isinstance(event, SnapshotStored):
            mirrored.add(event.tokens)
        else:
            mirrored.remove(event.tokens)
    assert mirrored == {e.tokens for e in store.entries()}


# --- reuse planning ----------------------------------------------------------------------------------------


def test_plan_reuse_keeps_live_context_when_snapshot_gain_is_small() -> None:
    store, _ = _store(1000)
    store.insert((1, 2, 3, 4, 5), FakeState("s"), 10)
    plan = plan_reuse((1, 2, 3, 9), (1, 2, 3, 4, 5, 6), store, restore_min_gain=3)
    assert plan == ReusePlan(3, None)
    plan = plan_reuse((1, 2, 3, 9), (1, 2, 3, 4, 5, 6), store, restore_min_gain=2)
    assert plan == ReusePlan(5, (1, 2, 3, 4, 5))


def test_plan_reuse_never_reuses_the_last_prompt_token() -> None:
    store, _ = _store(1000)
    store.insert((1, 2, 3), FakeState("s"), 10)
    assert plan_reuse((), (1, 2, 3), store, restore_min_gain=0) == ReusePlan(2, (1, 2, 3))
    assert plan_reuse((1, 2, 3), (1, 2, 3), store, restore_min_gain=0) == ReusePlan(2, None)
    assert plan_reuse((1,), (1,), store, restore_min_gain=0) == ReusePlan(0, None)


@given(
    st.lists(st.integers(0, 2), max_size=6),
    st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=6), max_size=4),
    st.lists(st.integers(0, 2), max_size=6),
    st.integers(0, 3),
)
def test_plan_reuse_is_the_best_allowed_choice(
    live: list[int], keys: list[list[int]], prompt: list[int], gain: int
) -> None:
    store, _ = _store(10_000)
    for key in keys:
        store.insert(key, FakeState(str(key)), 1)
    plan = plan_reuse(live, prompt, store, restore_min_gain=gain)
    cap = max(0, len(prompt) - 1)
    live_len = min(common_prefix_len(live, prompt), cap)
    best_snapshot = max((min(common_prefix_len(e.tokens, prompt), cap) for e in store.entries()), default=0)
    if best_snapshot >= live_len + max(1, gain):
        assert plan.snapshot is not None
        assert plan.reuse == best_snapshot == min(common_prefix_len(plan.snapshot, prompt), cap)
    else:
        assert plan == ReusePlan(live_len, None)
    assert 0 <= plan.reuse <= cap


def test_pinned_snapshot_survives_eviction_pressure_until_unpinned() -> None:
    store: SnapshotStore[str] = SnapshotStore(100)
    assert store.insert((1, 2, 3), "a", 60)
    store.pin((1, 2, 3, 4), ttl_s=60)  # the pinned prefix extends the stored key: the snapshot serves it
    assert not store.insert((7, 8), "b", 60)  # room only by evicting the pinned one: refused
    assert (1, 2, 3) in store
    assert store.insert((9,), "c", 30)  # fits beside it
    store.unpin((1, 2, 3, 4))
    assert store.insert((7, 8), "b", 60)
    assert (1, 2, 3) not in store


def test_pin_expires_after_its_ttl() -> None:
    store: SnapshotStore[str] = SnapshotStore(100)
    now = [0.0]
    store._clock = lambda: now[0]
    store.insert((1, 2), "a", 80)
    store.pin((1, 2), ttl_s=5)
    assert not store.insert((3,), "b", 80)
    now[0] = 6.0
    assert store.pinned() == []
    assert store.insert((3,), "b", 80)


def test_unpinned_entries_are_evicted_before_pinned_ones() -> None:
    store: SnapshotStore[str] = SnapshotStore(100)
    store.insert((1,), "old-pinned", 40)
    store.insert((2,), "newer", 40)
    store.pin((1,), ttl_s=60)
    assert store.insert((3,), "c", 40)
    assert (1,) in store and (2,) not in store and (3,) in store

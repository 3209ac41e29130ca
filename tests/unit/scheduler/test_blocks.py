"""BlockLRU: the shadow model of a block prefix cache."""

from __future__ import annotations

from collections.abc import Hashable

from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.scheduler import BlockLRU


def test_match_counts_only_leading_full_blocks() -> None:
    cache = BlockLRU(block_size=4)
    cache.insert(tuple(range(10)))  # blocks [0..3], [4..7]; the tail 8, 9 is not a full block
    assert cache.total_tokens == 8
    assert cache.match(tuple(range(12))) == 8
    assert cache.match((0, 1, 2, 3, 9, 9, 9, 9, 9)) == 4
    assert cache.match((9, 1, 2, 3, 4, 5, 6, 7, 8)) == 0


def test_match_leaves_one_token_to_compute_when_prompt_is_all_cached_blocks() -> None:
    cache = BlockLRU(block_size=4)
    cache.insert(tuple(range(8)))
    assert cache.match(tuple(range(8))) == 4


def test_block_is_reused_only_after_identical_prefix() -> None:
    cache = BlockLRU(block_size=2)
    cache.insert((1, 2, 3, 4))
    assert cache.match((9, 9, 3, 4, 5)) == 0  # same block tokens, different history: another chain hash


def test_lru_evicts_free_blocks_beyond_capacity() -> None:
    cache = BlockLRU(block_size=2, capacity_blocks=2)
    cache.insert((1, 2, 3, 4))
    cache.insert((5, 6, 7, 8))
    assert cache.total_tokens == 4
    assert cache.match((5, 6, 7, 8, 0)) == 4
    assert cache.match((1, 2, 3, 4, 0)) == 0


def test_acquired_blocks_are_not_evicted_while_in_flight() -> None:
    cache = BlockLRU(block_size=2, capacity_blocks=2)
    assert cache.acquire((1, 2, 3, 4, 0)) == 0
    cache.insert((5, 6, 7, 8))
    assert cache.match((1, 2, 3, 4, 0)) == 4
    assert cache.locked_tokens == 4
    cache.release((1, 2, 3, 4, 0))
    assert cache.locked_tokens == 0


def test_reported_reuse_below_prediction_shrinks_capacity() -> None:
    cache = BlockLRU(block_size=2, capacity_blocks=100)
    cache.insert(tuple(range(20)))
    prompt = (*range(20), 99)
    predicted = cache.acquire(prompt)
    assert predicted == 20
    cache.release(prompt, predicted=predicted, reported=4)
    stats = cache.stats()
    assert stats.capacity_blocks == 90
    assert stats.predictions == 1 and stats.exact == 0 and stats.abs_error_tokens == 16


def test_reported_reuse_above_prediction_grows_capacity_up_to_configured() -> None:
    cache = BlockLRU(block_size=2, capacity_blocks=10, min_capacity_blocks=1)
    cache.release((1, 2), predicted=4, reported=0)
    assert cache.stats().capacity_blocks == 9
    cache.release((1, 2), predicted=0, reported=8)
    assert cache.stats().capacity_blocks == 10


def test_kv_events_drive_the_model_when_enabled() -> None:
    cache = BlockLRU(block_size=2, capacity_blocks=1)
    cache.on_block_stored([101, 102], None, [1, 2, 3, 4])
    assert cache.match((1, 2, 3, 4, 5)) == 4  # events disable own eviction: both blocks stay
    cache.on_block_stored([103], 102, [5, 6])
    assert cache.match((1, 2, 3, 4, 5, 6, 7)) == 6
    cache.on_block_removed([102])
    assert cache.match((1, 2, 3, 4, 5, 6, 7)) == 2
    cache.on_all_blocks_cleared()
    assert cache.total_tokens == 0
    assert cache.stats().events == 4


def test_pin_protects_blocks_until_unpinned() -> None:
    now = [0.0]
    cache = BlockLRU(block_size=2, capacity_blocks=2, clock=lambda: now[0])
    cache.pin((1, 2, 3, 4), ttl_s=5)
    cache.insert((5, 6, 7, 8))
    assert cache.match((1, 2, 3, 4, 0)) == 4
    now[0] = 6
    cache.expire_pins()
    cache.insert((5, 6, 7, 8))
    assert cache.match((1, 2, 3, 4, 0)) == 0


def test_namespaces_never_share_blocks_even_for_identical_tokens() -> None:
    cache = BlockLRU(block_size=2)
    cache.insert((1, 2, 3, 4), namespace="salt-a")
    assert cache.match((1, 2, 3, 4, 5), namespace="salt-a") == 4
    assert cache.match((1, 2, 3, 4, 5), namespace="salt-b") == 0
    assert cache.match((1, 2, 3, 4, 5)) == 0
    predicted = cache.acquire((1, 2, 3, 4, 5), namespace="salt-b")
    assert predicted == 0
    cache.release((1, 2, 3, 4, 5), namespace="salt-b")
    assert cache.match((1, 2, 3, 4, 5), namespace="salt-b") == 4


def test_unreported_cached_tokens_neither_correct_nor_count() -> None:
    cache = BlockLRU(block_size=2, capacity_blocks=10)
    predicted = cache.acquire((1, 2, 3, 4, 5))
    cache.release((1, 2, 3, 4, 5), predicted=predicted + 4, reported=None)
    stats = cache.stats()
    assert (stats.capacity_blocks, stats.predictions, stats.abs_error_tokens) == (10, 0, 0)


def test_release_without_acquire_takes_no_reference() -> None:
    cache = BlockLRU(block_size=2)
    cache.acquire((1, 2, 3))
    cache.release((7, 8, 9))  # never acquired
    assert cache.locked_tokens == 2
    cache.release((1, 2, 3))
    assert cache.locked_tokens == 0


def test_rebase_rekeys_in_flight_requests_pins_and_watches() -> None:
    changes: dict[Hashable, int] = {}
    cache = BlockLRU(block_size=4, on_match_change=changes.__setitem__)
    cache.acquire(tuple(range(9)))
    cache.pin((50, 51, 52, 53, 54), ttl_s=60)
    assert cache.watch("q", tuple(range(12))) == 8
    cache.rebase(2)
    assert cache.block_size == 2
    assert cache.match(tuple(range(12))) == 8  # blocks 0..7 of the in-flight prompt, now 2-token blocks
    assert cache.match((50, 51, 52, 53, 0)) == 4
    assert changes["q"] == 8 and cache.watched("q") == 8
    cache.release(tuple(range(9)))
    cache.unpin((50, 51, 52, 53, 54))
    assert cache.locked_tokens == 0


def test_blocks_predicted_but_never_stored_go_once_released_when_following_events() -> None:
    cache = BlockLRU(block_size=2)
    cache.on_block_stored([11], None, [1, 2])  # the engine holds block (1, 2)
    cache.acquire((1, 2, 3, 4, 5))
    cache.release((1, 2, 3, 4, 5))  # no event for (3, 4): only our prediction
    assert cache.match((1, 2, 3, 4, 5)) == 2


SEQS = st.lists(st.lists(st.integers(0, 1), min_size=0, max_size=9).map(tuple), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(inserts=SEQS, queries=SEQS)
def test_unbounded_match_equals_longest_shared_block_prefix(
    inserts: list[tuple[int, ...]], queries: list[tuple[int, ...]]
) -> None:
    bs = 2
    changes: dict[Hashable, int] = {}
    cache = BlockLRU(block_size=bs, on_match_change=changes.__setitem__)
    for i, q in enumerate(queries):
        changes[i] = cache.watch(i, q)
    for s in inserts:
        cache.insert(s)
    for i, q in enumerate(queries):
        full = [q[: k * bs] for k in range(1, len(q) // bs + 1)]
        blocks = max(
            (
                k + 1
                for k, pre in enumerate(full)
                if any(len(s) >= len(pre) and s[: len(pre)] == pre for s in inserts)
            ),
            default=0,
        )
        assert cache.watched(i) == changes[i] == blocks * bs
        assert cache.match(q) == min(blocks * bs, max(0, (len(q) - 1) // bs * bs))

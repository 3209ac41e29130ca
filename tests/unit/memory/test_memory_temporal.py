"""Temporal memory tree: inserts, duplicates, dirty paths, lazy summaries, retrieval and time filters."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from _stores import fresh, store_core
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentflow.errors import MemoryStoreError
from agentflow.memory import ExtractiveSummarizer, MemoryStore, NewLeaf, TemporalTreeCore

MAY = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
JUNE = datetime(2023, 6, 9, 10, 0, tzinfo=UTC)


@pytest.fixture
def db(memory_db: str) -> str:
    """The memory store, once per backend (SQLite file, PostgreSQL schema)."""
    return memory_db


def _core(path: str, tree_id: str = "t") -> TemporalTreeCore:
    return TemporalTreeCore(store_core(path), tree_id, summarize=ExtractiveSummarizer().summarize_sync)


def test_insert_places_leaf_under_session_period_and_root(db: str) -> None:
    tree = _core(db)
    result = tree.insert("I adopted a grey cat", session="s1", at=MAY, speaker="ann", leaf_id="D1:1")
    assert result.created
    assert result.leaf.id == "D1:1" and result.leaf.position == 0 and result.leaf.at == MAY
    path = tree.path("D1:1")
    assert [(p.kind.value, p.key) for p in path] == [
        ("root", "root"),
        ("period", "2023-05"),
        ("session", "s1"),
    ]
    assert path[2].at == MAY


def test_insert_duplicate_returns_stored_leaf_when_content_repeats(db: str) -> None:
    tree = _core(db)
    first = tree.insert("fact", session="s", speaker="a", at=MAY)
    again = tree.insert("fact", session="s", speaker="a", at=MAY)
    assert first.created and not again.created
    assert again.leaf == first.leaf
    assert len(tree.leaves()) == 1


def test_insert_refused_when_id_holds_different_content(db: str) -> None:
    tree = _core(db)
    tree.insert("one", session="s", leaf_id="x", at=MAY)
    with pytest.raises(MemoryStoreError, match=r"'x'.*different content"):
        tree.insert("two", session="s", leaf_id="x", at=MAY)


def test_insert_many_rolls_back_all_when_one_fails(db: str) -> None:
    tree = _core(db)
    tree.insert("one", session="s", leaf_id="x", at=MAY)
    batch = [
        NewLeaf("fresh", session="new-session", leaf_id="y", at=JUNE),
        NewLeaf("two", session="s", leaf_id="x"),
    ]
    with pytest.raises(MemoryStoreError):
        tree.insert_many(batch)
    assert tree.get("y") is None
    assert tree.insert("fresh", session="new-session", leaf_id="y", at=JUNE).created


def test_insert_marks_exactly_the_leaf_path_dirty(db: str) -> None:
    tree = _core(db)
    tree.insert("a", session="s1", at=MAY)
    tree.insert("b", session="s2", at=JUNE)
    assert tree.refresh() == 5  # two sessions, two periods, the root
    assert tree.dirty() == set()
    tree.insert("c", session="s2", at=JUNE)
    assert tree.dirty() == {"session:s2", "period:2023-06", "root"}


def test_search_finds_leaf_and_refreshes_summaries_lazily(db: str) -> None:
    tree = _core(db)
    tree.insert("We went camping in the mountains", session="trip", at=MAY, speaker="mel", leaf_id="1")
    tree.insert("The kids loved roasting marshmallows", session="trip", at=MAY, speaker="mel", leaf_id="2")
    tree.insert("I started a pottery class", session="art", at=JUNE, speaker="mel", leaf_id="3")
    hits = tree.search("pottery class", k=2)
    assert hits[0].leaf.id == "3"
    assert [p.key for p in hits[0].path] == ["root", "2023-06", "art"]
    assert "pottery" in hits[0].path[2].summary
    assert tree.dirty() == set()


def test_search_ranks_neighbour_of_matching_turn_when_it_shares_no_term(db: str) -> None:
    tree = _core(db)
    tree.insert("Look at the sunrise painting I made", session="a", at=MAY, leaf_id="q")
    tree.insert("Wow, the colours are lovely!", session="a", at=MAY, leaf_id="answer")
    tree.insert("Unrelated chat about football", session="b", at=JUNE, leaf_id="other")
    ids = [h.leaf.id for h in tree.search("sunrise painting", k=3)]
    assert ids[:2] == ["q", "answer"]
    assert "other" not in ids


def test_search_time_filters_keep_only_leaves_in_range(db: str) -> None:
    tree = _core(db)
    for day in range(10):
        tree.insert(f"garden note {day}", session=f"s{day}", at=MAY + timedelta(days=day), leaf_id=str(day))
    since, until = MAY + timedelta(days=3), MAY + timedelta(days=5)
    hits = tree.search("garden note", k=10, since=since, until=until)
    assert sorted(h.leaf.id for h in hits) == ["3", "4", "5"]


def test_search_returns_nothing_when_query_has_no_known_term(db: str) -> None:
    tree = _core(db)
    tree.insert("hello world", session="s", at=MAY)
    assert tree.search("the of and", k=5) == []
    assert tree.search("zebra", k=5) == []


def test_search_is_deterministic_when_scores_tie(db: str) -> None:
    tree = _core(db)
    for i in range(6):
        tree.insert("same words here", session="s", at=MAY, leaf_id=f"L{i}")
    first = [h.leaf.id for h in tree.search("same words", k=3)]
    again = [h.leaf.id for h in _core(db).search("same words", k=3)]
    assert first == again


def test_search_sees_inserts_from_another_store_on_the_same_file(db: str) -> None:
    reader = _core(db)
    writer = _core(db)
    writer.insert("first fact about tea", session="s", at=MAY, leaf_id="1")
    assert [h.leaf.id for h in reader.search("tea", k=5)] == ["1"]
    writer.insert("second fact about tea", session="s2", at=JUNE, leaf_id="2")
    assert sorted(h.leaf.id for h in reader.search("tea", k=5)) == ["1", "2"]


class _UpperSummarizer:
    """An async-only summarizer, standing in for an LLM."""

    def __init__(self) -> None:
        self.calls = 0

    async def summarize(self, texts: Sequence[str]) -> str:
        self.calls += 1
        return " | ".join(t.upper() for t in texts)


@pytest.mark.anyio
async def test_async_tree_uses_async_summarizer_for_dirty_nodes_only(db: str) -> None:
    summarizer = _UpperSummarizer()
    async with MemoryStore(db) as store:
        tree = store.temporal("chat", summarizer=summarizer)
        await tree.insert("I like tea", session="s1", at=MAY, speaker="ann")
        await tree.insert("I like coffee", session="s2", at=JUNE, speaker="bob")
        hits = await tree.search("tea", k=1)
        assert hits[0].leaf.text == "I like tea"
        assert hits[0].path[2].summary == "ANN: I LIKE TEA"
        assert summarizer.calls == 5
        await tree.insert("and scones", session="s2", at=JUNE, speaker="bob")
        assert await tree.refresh() == 3  # s2, its period, the root
        assert summarizer.calls == 8
        stats = await store.stats()
        assert stats.trees[0].leaves == 3 and stats.trees[0].dirty == 0


@pytest.mark.anyio
async def test_async_api_insert_search_and_session(db: str) -> None:
    async with MemoryStore(db) as store:
        tree = store.temporal("chat")
        session = await tree.add_session("d1", MAY, title="first chat")
        assert session.at == MAY
        result = await tree.insert("my dog is called Rex", session="d1", speaker="ann")
        assert result.leaf.at == MAY
        assert (await tree.get(result.leaf.id)) == result.leaf
        hits = await tree.search("dog name", k=3, since=MAY - timedelta(days=1))
        assert [h.leaf.id for h in hits] == [result.leaf.id]
        assert [leaf.text for leaf in await tree.leaves("d1")] == ["my dog is called Rex"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    inserts=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 90), st.sampled_from(["tea", "cat", "rain", "bike"])),
        min_size=1,
        max_size=15,
    )
)
def test_tree_invariants_hold_for_any_insert_sequence(db: str, inserts: list[tuple[int, int, str]]) -> None:
    tree = _core(fresh(db))
    for i, (session, day, word) in enumerate(inserts):
        tree.refresh()
        session_at = MAY + timedelta(days=30 * session)
        result = tree.insert(
            f"{word} {i}", session=f"s{session}", at=MAY + timedelta(days=day), session_at=session_at
        )
        path = tree.path(result.leaf.id)
        # Every leaf's path exists and runs root -> its session's month -> its session.
        assert [p.kind.value for p in path] == ["root", "period", "session"]
        assert path[2].key == f"s{session}"
        assert path[1].key == f"{path[2].at:%Y-%m}"
        # The insert dirtied exactly that path.
        assert tree.dirty() == {"root", f"period:{path[1].key}", f"session:s{session}"}
    leaves = tree.leaves()
    assert len(leaves) == len(inserts)
    by_session: dict[str, list[int]] = {}
    for leaf in leaves:
        by_session.setdefault(leaf.session, []).append(leaf.position)
    assert all(sorted(p) == list(range(len(p))) for p in by_session.values())


def test_sync_core_summarizes_with_extractive_default(db: str) -> None:
    tree = TemporalTreeCore(store_core(db), "t")
    tree.insert("We planted tomatoes in the garden.", session="s", at=MAY)
    hits = tree.search("tomatoes", k=1)
    assert hits[0].path[2].summary == "We planted tomatoes in the garden."
    assert tree.dirty() == set()


@pytest.mark.anyio
async def test_concurrent_async_inserts_keep_positions_unique_and_facts_single(db: str) -> None:
    async with MemoryStore(db, max_threads=4) as store:
        tree = store.temporal("chat")
        created: list[bool] = []

        async def writer(offset: int) -> None:
            for i in range(20):
                n = (i + offset) % 30  # writers overlap on the same facts
                result = await tree.insert(f"fact {n}", session="s", at=MAY, leaf_id=f"F{n}")
                created.append(result.created)

        async with anyio.create_task_group() as tg:
            for offset in (0, 10, 20):
                tg.start_soon(writer, offset)
        leaves = await tree.leaves("s")
        assert sorted(leaf.id for leaf in leaves) == sorted(f"F{n}" for n in range(30))
        assert sorted(leaf.position for leaf in leaves) == list(range(30))
        assert created.count(True) == 30


def test_insert_marks_path_dirty_after_another_writer_refreshed(db: str) -> None:
    writer = _core(db)
    other = _core(db)
    writer.insert("one", session="s", at=MAY)
    writer.insert("two", session="s", at=MAY)
    assert other.refresh() == 3
    writer.insert("three", session="s", at=MAY)  # the writer's memory of a dirty path is out of date
    assert writer.dirty() == {"session:s", "period:2023-05", "root"}

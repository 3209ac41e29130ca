"""A summary computed while the tree was written to does not mark its node clean."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from _stores import store_core

from agentflow.memory import NodeKind, TemporalTreeCore

MAY = datetime(2023, 5, 8, tzinfo=UTC)


@pytest.fixture
def db(memory_db: str) -> str:
    """The memory store, once per backend (SQLite file, PostgreSQL schema)."""
    return memory_db


def test_node_stays_dirty_when_tree_is_written_during_its_summary(db: str) -> None:
    tree = TemporalTreeCore(store_core(db), "t", summarize=" ".join)
    tree.insert("first", session="s1", at=MAY)
    sessions = tree.dirty_work(NodeKind.SESSION)
    # Another writer inserts into the same session after the snapshot, before the summary is stored.
    tree.insert("second", session="s1", at=MAY)
    tree.write_summaries([(node, gen, " ".join(texts)) for node, gen, texts in sessions])
    assert "session:s1" in tree.dirty()
    assert tree.refresh() == 3
    assert tree.dirty() == set()
    assert tree.path(tree.leaves()[1].id)[2].summary == "first second"


def test_upper_levels_stay_dirty_when_a_leaf_arrives_between_levels(db: str) -> None:
    tree = TemporalTreeCore(store_core(db), "t", summarize=" | ".join)
    tree.insert("a", session="s1", at=MAY)
    tree.write_summaries([(n, g, " | ".join(t)) for n, g, t in tree.dirty_work(NodeKind.SESSION)])
    periods = tree.dirty_work(NodeKind.PERIOD)
    tree.insert("b", session="s1", at=MAY)  # the session becomes dirty again
    tree.write_summaries([(n, g, " | ".join(t)) for n, g, t in periods])
    tree.write_summaries([(n, g, " | ".join(t)) for n, g, t in tree.dirty_work(NodeKind.ROOT)])
    assert tree.dirty() >= {"session:s1", "period:2023-05"}
    tree.refresh()
    path = tree.path(tree.leaves()[0].id)
    assert path[2].summary == "a | b" and path[1].summary == "a | b" and path[0].summary == "a | b"

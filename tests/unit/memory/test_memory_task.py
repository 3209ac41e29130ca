"""Task memory tree: lifecycle, DAG dependencies and budgeted prompts."""

from __future__ import annotations

import pytest
from _stores import store_core

from agentflow.errors import ConfigError, MemoryStoreError
from agentflow.memory import MemoryStore, TaskStatus, TaskTreeCore, approx_token_count


@pytest.fixture
def db(memory_db: str) -> str:
    """The memory store, once per backend (SQLite file, PostgreSQL schema)."""
    return memory_db


def _tree(db: str) -> TaskTreeCore:
    tree = TaskTreeCore(store_core(db), "run")
    tree.add_task("Plan a weekend in Paris", input="budget 800 EUR, 2 people", node_id="goal")
    tree.add_task("Find flights", input="from Berlin, Friday evening", parent="goal", node_id="flights")
    tree.add_task("Find a hotel", input="near the Louvre", parent="goal", node_id="hotel")
    tree.add_task(
        "Book everything",
        input="cheapest combination",
        parent="goal",
        deps=["flights", "hotel"],
        node_id="book",
    )
    return tree


def test_lifecycle_records_output_error_and_timestamps(db: str) -> None:
    tree = _tree(db)
    running = tree.start("flights")
    assert running.status is TaskStatus.RUNNING and running.started_at is not None
    done = tree.complete("flights", "BER-CDG 19:05, 2x 120 EUR")
    assert done.status is TaskStatus.DONE and done.output == "BER-CDG 19:05, 2x 120 EUR"
    assert done.finished_at is not None and done.finished_at >= done.started_at  # type: ignore[operator]
    failed = tree.fail("hotel", "search API timed out")
    assert failed.status is TaskStatus.FAILED and failed.error == "search API timed out"
    assert tree.start("hotel").status is TaskStatus.RUNNING  # a failed task may run again


def test_finished_task_refuses_to_change(db: str) -> None:
    tree = _tree(db)
    tree.complete("flights", "x")
    assert tree.complete("flights", "x").output == "x"  # same result again is a no-op
    with pytest.raises(MemoryStoreError, match="is done, so it cannot become running"):
        tree.start("flights")
    with pytest.raises(MemoryStoreError, match="cannot become done"):
        tree.complete("flights", "y")


def test_add_task_refuses_unknown_dependency_and_conflicting_id(db: str) -> None:
    tree = _tree(db)
    with pytest.raises(ConfigError, match="dependency 'nope'"):
        tree.add_task("x", deps=["nope"])
    with pytest.raises(MemoryStoreError, match="already exists"):
        tree.add_task("Other title", node_id="hotel")
    same = tree.add_task("Find a hotel", input="near the Louvre", parent="goal", node_id="hotel")
    assert same.id == "hotel"


def test_structure_queries_follow_parents_and_order(db: str) -> None:
    tree = _tree(db)
    assert [n.id for n in tree.children("goal")] == ["flights", "hotel", "book"]
    assert [n.id for n in tree.children(None)] == ["goal"]
    assert [n.id for n in tree.path("book")] == ["goal", "book"]
    assert tree.get("book").deps == ("flights", "hotel")
    auto = tree.add_task("Send summary", parent="book")
    assert auto.id == "5"


def test_shared_substep_feeds_every_dependent_prompt(db: str) -> None:
    tree = _tree(db)
    tree.add_task("Check passport validity", parent="goal", node_id="passport")
    tree.complete("passport", "valid until 2030")
    tree.add_task("Book train to airport", parent="flights", deps=["passport"], node_id="train")
    tree.add_task("Buy travel insurance", parent="goal", deps=["passport"], node_id="insurance")
    for node in ("train", "insurance"):
        assert "valid until 2030" in tree.prompt_for(node, 500)


def test_prompt_includes_path_dependencies_and_task_when_budget_allows(db: str) -> None:
    tree = _tree(db)
    tree.complete("flights", "BER-CDG 240 EUR")
    tree.fail("hotel", "no rooms")
    prompt = tree.prompt_for("book", 500)
    assert prompt.index("# Goal: Plan a weekend in Paris") < prompt.index(
        "## Result of Find flights [flights]"
    )
    assert "BER-CDG 240 EUR" in prompt and "(failed: no rooms)" in prompt
    assert prompt.endswith("## Current task: Book everything\ncheapest combination")


def test_prompt_drops_least_relevant_first_within_budget(db: str) -> None:
    tree = _tree(db)
    tree.complete("flights", "BER-CDG " + "detail " * 30)
    tree.complete("hotel", "Hotel du Louvre 300 EUR")
    full = tree.prompt_for("book", 1000)
    for budget in range(10, approx_token_count(full) + 1, 7):
        prompt = tree.prompt_for("book", budget)
        assert approx_token_count(prompt) <= budget
        assert prompt == tree.prompt_for("book", budget)  # deterministic
    tight = tree.prompt_for("book", 60)
    assert "## Current task: Book everything" in tight
    assert "# Goal" not in tight  # the goal (relevance 3) goes before the results (relevance 1)
    assert "## Result of Find flights" in tight


def test_prompt_truncates_current_task_when_it_alone_exceeds_budget(db: str) -> None:
    tree = TaskTreeCore(store_core(db), "run")
    tree.add_task("Summarize", input="word " * 200, node_id="t")
    prompt = tree.prompt_for("t", 20)
    assert prompt.startswith("## Current task: Summarize") and prompt.endswith("…")
    assert approx_token_count(prompt) <= 20
    with pytest.raises(ConfigError, match="budget_tokens=0"):
        tree.prompt_for("t", 0)


def test_prompt_uses_given_token_counter(db: str) -> None:
    tree = _tree(db)
    prompt = tree.prompt_for("book", 120, count_tokens=len)  # a counter of characters
    assert len(prompt) <= 120


@pytest.mark.anyio
async def test_async_task_tree_runs_plan(db: str) -> None:
    async with MemoryStore(db) as store:
        tree = store.task_tree("run")
        await tree.add_task("goal", node_id="1")
        await tree.add_task("step", parent="1", node_id="2")
        await tree.start("2")
        await tree.complete("2", "result two")
        await tree.add_task("final", parent="1", deps=["2"], node_id="3")
        assert "result two" in await tree.prompt_for("3", 100)
        assert [n.status for n in await tree.nodes()] == [
            TaskStatus.PENDING,
            TaskStatus.DONE,
            TaskStatus.PENDING,
        ]
        assert [n.id for n in await tree.path("3")] == ["1", "3"]
        assert [n.id for n in await tree.children("1")] == ["2", "3"]
        assert (await tree.fail("3", "boom")).error == "boom"
        assert (await tree.get("3")).status is TaskStatus.FAILED

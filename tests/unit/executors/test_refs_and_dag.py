"""``$N`` references (finding, single-pass typed substitution) and the plan DAG analysis."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentflow.errors import PlanError
from agentflow.executors import PlanGraph, Ref, Task, find_refs, ref_ids, substitute


def test_find_refs_reads_every_form_anywhere_in_arguments() -> None:
    value = {"a": "$1", "b": ["x ${2} y", {"c": "$3.distance and ${4.time.total}"}], "d": 5, "e": "$$6 cost"}
    assert find_refs(value) == [Ref(1), Ref(2), Ref(3, ("distance",)), Ref(4, ("time", "total"))]
    assert ref_ids(value) == {1, 2, 3, 4}


def test_substitute_keeps_type_for_whole_string_reference() -> None:
    results = {1: [1, 2, 3], 2: {"distance": 4.5, "nested": {"k": True}}}
    assert substitute("$1", results) == [1, 2, 3]
    assert substitute("${2}", results) == results[2]
    assert substitute("$2.distance", results) == 4.5
    assert substitute("${2.nested.k}", results) is True
    assert substitute({"xs": ["$1", 7]}, results) == {"xs": [[1, 2, 3], 7]}


def test_substitute_renders_str_inside_longer_text() -> None:
    results = {1: 42, 2: "Paris"}
    assert substitute("$1 + 3 in $2.", results) == "42 + 3 in Paris."
    assert substitute("${1}0", results) == "420"
    assert substitute("costs $$1 and $1.50", results) == "costs $1 and 42.50"


def test_substitute_never_rescans_inserted_text() -> None:
    results = {1: "see $2 and ${3}", 2: "SECRET", 3: "ALSO"}
    assert substitute("$1", results) == "see $2 and ${3}"
    assert substitute("note: $1", results) == "note: see $2 and ${3}"


def test_substitute_reads_attributes_of_objects() -> None:
    @dataclass
    class Route:
        distance: float

    assert substitute("$1.distance", {1: Route(3.0)}) == 3.0
    with pytest.raises(LookupError, match="available fields: distance"):
        substitute("$1.time", {1: Route(3.0)})


@given(
    st.recursive(st.none() | st.integers() | st.text(alphabet="ab $1{}."), lambda c: st.lists(c, max_size=3))
)
def test_substitute_without_results_is_identity_when_no_refs(value: object) -> None:
    if not ref_ids(value):  # type: ignore[arg-type]
        expected = json.loads(json.dumps(value).replace("$$", "$"))
        assert substitute(value, {}) == expected  # type: ignore[arg-type]


def test_task_derives_deps_and_rejects_self_reference() -> None:
    task = Task(3, "math", ("$1 + $2",), {"context": ["${1}"]})
    assert task.deps == {1, 2}
    with pytest.raises(PlanError, match="references its own result"):
        Task(2, "math", ("$2",))
    with pytest.raises(PlanError, match="task id 0"):
        Task(0, "math")


def _diamond() -> list[Task]:
    return [Task(1, "a"), Task(2, "b", ("$1",)), Task(3, "c", ("$1",)), Task(4, "d", ("$2", "$3"))]


def test_plan_graph_critical_path_follows_longest_chain() -> None:
    graph = PlanGraph(_diamond())
    assert graph.critical_path({1: 1.0, 2: 5.0, 3: 2.0, 4: 1.0}) == (7.0, [1, 2, 4])
    assert graph.critical_path({1: 1.0, 2: 1.0, 3: 2.0, 4: 1.0}) == (4.0, [1, 3, 4])
    with pytest.raises(PlanError, match="missing tasks"):
        graph.critical_path({1: 1.0})


def test_plan_graph_steps_to_execution_counts_unfinished_levels() -> None:
    graph = PlanGraph(_diamond())
    assert graph.steps_to_execution() == {1: 0, 2: 1, 3: 1, 4: 2}
    assert graph.steps_to_execution(done={1, 2}) == {3: 0, 4: 1}
    assert graph.steps_to_completion() == {4: 1, 3: 2, 2: 2, 1: 3}
    assert graph.levels() == [[1], [2, 3], [4]]


def test_plan_graph_topological_order_takes_the_smallest_ready_id_first() -> None:
    graph = PlanGraph([Task(3, "c"), Task(2, "b", ("$1",)), Task(1, "a")])
    assert graph.topological_order() == [1, 2, 3]  # 2 is ready once 1 is done, before 3
    assert graph.edges() == [(1, 2)]


def test_plan_graph_names_the_tasks_of_a_cycle() -> None:
    with pytest.raises(PlanError, match=r"cycle: task 1 -> task 2 -> task 1$"):
        PlanGraph([Task(1, "a", ("$2",)), Task(2, "b", ("$1",))])
    # Only the tasks on the cycle, in run order, starting from the smallest id; not the task that leads into it.
    tail_and_loop = [Task(1, "a"), Task(4, "d", ("$3", "$1")), Task(2, "b", ("$4",)), Task(3, "c", ("$2",))]
    with pytest.raises(PlanError, match=r"cycle: task 2 -> task 3 -> task 4 -> task 2$"):
        PlanGraph(tail_and_loop)
    with pytest.raises(PlanError, match="has no task 9"):
        PlanGraph([Task(1, "a", ("$9",))])
    with pytest.raises(PlanError, match="used twice"):
        PlanGraph([Task(1, "a"), Task(1, "b")])


def test_plan_graph_exports_dot_and_json() -> None:
    graph = PlanGraph(_diamond())
    dot = graph.to_dot()
    assert dot.startswith('digraph "plan" {')
    assert "1 -> 2;" in dot and "3 -> 4;" in dot
    assert '4 [label="4. d(\\"$2\\", \\"$3\\")"];' in dot
    data = graph.to_json()
    assert data["edges"] == [[1, 2], [1, 3], [2, 4], [3, 4]]
    assert [n["id"] for n in data["nodes"]] == [1, 2, 3, 4]  # type: ignore[index,union-attr]
    json.dumps(data)

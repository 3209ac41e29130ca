"""Plans an attacker (or a runaway planner) makes large: deep failing chains and forward references (issue 18,
item 6). No timing thresholds: the cost of cycle checks is counted in visited tasks."""

from __future__ import annotations

import graphlib
import random

import anyio
import pytest

from agentflow.errors import PlanError
from agentflow.executors import Executor, Task, TaskStatus, ToolRegistry, tool
from agentflow.executors._dag import IncrementalDag

CHAIN = 3000


@tool
async def echo(value: object) -> object:
    """Return the value unchanged."""
    return value


@tool
async def fail(message: str) -> str:
    """Raise an error."""
    raise RuntimeError(message)


@tool
async def forever() -> None:
    """Never return."""
    await anyio.sleep_forever()


def registry() -> ToolRegistry:
    return ToolRegistry([echo, fail, forever])


def _chain(head: Task, n: int) -> list[Task]:
    return [head, *(Task(i, "echo", (f"${i - 1}",)) for i in range(2, n + 1))]


@pytest.mark.anyio
async def test_deep_chain_whose_first_task_fails_skips_all_without_recursion_error() -> None:
    report = await Executor(registry()).run(_chain(Task(1, "fail", ("boom",)), CHAIN))
    assert report.results[1].status is TaskStatus.ERROR
    assert all(report.results[i].status is TaskStatus.SKIPPED for i in range(2, CHAIN + 1))
    error = report.results[CHAIN].error
    assert error is not None and f"depends on task {CHAIN - 1}" in str(error)
    # Each message names the failure the chain started from, once: no text grows along the chain.
    assert "because task 1 (fail) ended error" in str(error) and str(error).count("boom") == 1


@pytest.mark.anyio
async def test_deep_chain_added_before_its_failing_head_skips_all_without_recursion_error() -> None:
    tasks = _chain(Task(1, "fail", ("boom",)), CHAIN)
    report = await Executor(registry()).run(reversed(tasks))
    assert sum(r.status is TaskStatus.SKIPPED for r in report.results.values()) == CHAIN - 1


@pytest.mark.anyio
async def test_cancelling_deep_waiting_chain_cancels_all_without_recursion_error() -> None:
    async with Executor(registry()).open() as execution:
        for task in _chain(Task(1, "forever"), CHAIN):
            execution.add(task)
        execution.close()
        await anyio.sleep(0)
        execution.cancel()
        report = await execution.wait()
    assert all(r.status is TaskStatus.CANCELLED for r in report.results.values())


@pytest.mark.anyio
async def test_forward_referencing_tasks_need_no_cycle_search() -> None:
    # Task i references task i + 1, added later: the plan written backwards.
    tasks = [Task(i, "echo", (f"${i + 1}",)) for i in range(1, CHAIN)] + [Task(CHAIN, "echo", (0,))]
    async with Executor(registry()).open() as execution:
        for task in tasks:
            execution.add(task)
        execution.close()
        report = await execution.wait()
        assert execution.cycle_check_visits == 0
    assert report.results[1].value == 0 and len(report.results) == CHAIN


@pytest.mark.anyio
async def test_forward_references_mixed_with_a_shared_backward_reference_stay_linear() -> None:
    # Task i references i + 1 (later) and task 1 (earlier): every add repairs the order a little.
    tasks = [Task(1, "echo", (0,))]
    tasks += [Task(i, "echo", ([f"${i + 1}", "$1"],)) for i in range(2, CHAIN)] + [Task(CHAIN, "echo", (1,))]
    async with Executor(registry()).open() as execution:
        for task in tasks:
            execution.add(task)
        execution.close()
        await execution.wait()
        assert execution.cycle_check_visits <= 4 * CHAIN


def test_incremental_dag_names_the_cycle_a_task_would_close() -> None:
    dag = IncrementalDag()
    assert dag.add(3, [2]) is None and dag.add(2, [1]) is None
    assert dag.add(1, [3]) == [1, 2, 3]
    # The refused task left nothing behind: it can be added without the bad edge.
    assert dag.add(1, []) is None and dag.add(4, [1, 3]) is None


def _acyclic(preds: dict[int, set[int]]) -> bool:
    """The whole-graph answer the incremental check must agree with (the standard library's topological sort)."""
    try:
        graphlib.TopologicalSorter(preds).prepare()
    except graphlib.CycleError:
        return False
    return True


def test_incremental_dag_agrees_with_a_full_topological_sort_on_random_streams() -> None:
    rng = random.Random(18)
    for _ in range(200):
        dag = IncrementalDag()
        preds: dict[int, set[int]] = {}
        ids = rng.sample(range(40), 25)
        for node in ids:
            deps = rng.sample(range(40), rng.randint(0, 3))
            trial = {n: set(ps) for n, ps in preds.items()}
            trial.setdefault(node, set()).update(deps)
            cycle = dag.add(node, deps)
            assert (cycle is not None) == (not _acyclic(trial))
            if cycle is None:
                preds = trial
            else:
                # The reported cycle is real: consecutive nodes are edges, closing from the last to the first.
                edges = {(d, n) for n, ds in trial.items() for d in ds}
                assert all((cycle[k], cycle[k + 1]) in edges for k in range(len(cycle) - 1))
                assert (cycle[-1], cycle[0]) in edges


@pytest.mark.anyio
async def test_executor_refuses_cycle_closed_by_the_last_of_many_forward_references() -> None:
    tasks = [Task(i, "echo", (f"${i + 1}",)) for i in range(1, 200)] + [Task(200, "echo", ("$1",))]
    with pytest.raises(
        PlanError,
        match=r"closes a dependency cycle: task 200 -> task 199 -> .* -> task 1 -> task 200 \(200 tasks\)",
    ):
        await Executor(registry()).run(tasks)

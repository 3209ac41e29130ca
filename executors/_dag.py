"""DAG analysis of a plan with networkx: cycles, critical path, steps-to-execution, and export for pictures.

Edges run from a dependency to its dependent (``1 -> 3`` when task 3 references ``$1``).
"""

from __future__ import annotations

import typing
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING

from pydantic import JsonValue

from agentflow.errors import PlanError

from ._task import Task

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["PlanGraph"]


class PlanGraph:
    """The dependency DAG of a set of tasks.

    Example:
        >>> from agentflow.executors import PlanGraph, Task
        >>> g = PlanGraph([Task(1, "a"), Task(2, "b"), Task(3, "c", ("$1", "$2"))])
        >>> g.critical_path({1: 1.0, 2: 2.0, 3: 0.5})
        (2.5, [2, 3])
    """

    def __init__(self, tasks: Iterable[Task]) -> None:
        """Build the DAG.

        Raises:
            PlanError: Duplicate ids, a reference to a task that is not in the plan, or a cycle (naming its tasks).
        """
        import networkx as nx  # deferred: a heavy import (tests/unit/test_import_cost.py)

        self._tasks: dict[int, Task] = {}
        graph: nx.DiGraph[int] = nx.DiGraph()
        for task in tasks:
            if task.id in self._tasks:
                raise PlanError(
                    f"task id {task.id} is used twice ({self._tasks[task.id].tool} and {task.tool})"
                )
            self._tasks[task.id] = task
            graph.add_node(task.id)
        for task in self._tasks.values():
            for dep in sorted(task.deps):
                if dep not in self._tasks:
                    raise PlanError(
                        f"task {task.id} ({task.tool}) references ${dep}, but the plan has no task {dep}"
                    )
                graph.add_edge(dep, task.id)
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            cycle = []
        if cycle:
            raise PlanError(f"the plan has a dependency cycle: {describe_cycle([u for u, _v in cycle])}")
        self._graph = graph

    @property
    def tasks(self) -> dict[int, Task]:
        """Tasks by id."""
        return dict(self._tasks)

    def graph(self) -> nx.DiGraph[int]:
        """A copy of the networkx DiGraph (nodes are task ids)."""
        return self._graph.copy()

    def topological_order(self) -> list[int]:
        """Task ids so that every task comes after its dependencies (ties broken by id)."""
        import networkx as nx  # deferred: a heavy import (tests/unit/test_import_cost.py)

        return list(nx.lexicographical_topological_sort(self._graph))

    def critical_path(self, durations: Mapping[int, float]) -> tuple[float, list[int]]:
        """The longest chain of dependent tasks when each task takes ``durations[id]`` seconds.

        This is the physical lower bound on the makespan with unlimited parallelism.

        Returns:
            The chain's total duration and its task ids in execution order.

        Raises:
            PlanError: A task has no duration.
        """
        missing = [t for t in self._tasks if t not in durations]
        if missing:
            raise PlanError(f"critical_path needs a duration for every task; missing tasks {missing}")
        finish: dict[int, float] = {}
        best_pred: dict[int, int | None] = {}
        for node in self.topological_order():
            preds = list(self._graph.predecessors(node))
            pred = max(preds, key=lambda p: finish[p]) if preds else None
            start = finish[pred] if pred is not None else 0.0
            finish[node] = start + float(durations[node])
            best_pred[node] = pred
        if not finish:
            return 0.0, []
        end = max(finish, key=lambda n: finish[n])
        path: list[int] = []
        cursor: int | None = end
        while cursor is not None:
            path.append(cursor)
            cursor = best_pred[cursor]
        return finish[end], path[::-1]

    def steps_to_execution(self, done: Collection[int] = ()) -> dict[int, int]:
        """For each unfinished task, how many dependency levels must still finish before it can run.

        0 means ready now; a task waiting on a ready task is 1; and so on. Finished tasks (``done``) are left
        out. This is the DAG-position hint the request scheduler uses to weigh urgency.
        """
        steps: dict[int, int] = {}
        for node in self.topological_order():
            if node in done:
                continue
            steps[node] = max(
                (steps[p] + 1 for p in self._graph.predecessors(node) if p not in done), default=0
            )
        return steps

    def steps_to_completion(self) -> dict[int, int]:
        """For each task, the number of tasks on the longest chain from it to the end of the plan (itself included)."""
        height: dict[int, int] = {}
        for node in reversed(self.topological_order()):
            height[node] = 1 + max((height[s] for s in self._graph.successors(node)), default=0)
        return height

    def levels(self) -> list[list[int]]:
        """Task ids grouped by depth: every task of level k depends only on tasks of levels < k."""
        depth = self.steps_to_execution()
        grouped: dict[int, list[int]] = {}
        for node, d in depth.items():
            grouped.setdefault(d, []).append(node)
        return [sorted(grouped[d]) for d in sorted(grouped)]

    def to_json(self) -> dict[str, JsonValue]:
        """A JSON-ready picture of the DAG: ``{"nodes": [{"id", "tool", "call", "deps"}], "edges": [[from, to]]}``."""
        nodes: list[JsonValue] = [
            {
                "id": t.id,
                "tool": t.tool,
                "call": t.call_text(),
                "deps": typing.cast(list[JsonValue], sorted(t.deps)),
            }
            for t in (self._tasks[i] for i in self.topological_order())
        ]
        edges: list[JsonValue] = [[u, v] for u, v in sorted(self._graph.edges)]
        return {"nodes": nodes, "edges": edges}

    def to_dot(self, name: str = "plan") -> str:
        """Graphviz DOT text of the DAG (render with ``dot -Tsvg``)."""
        lines = [f"digraph {_dot_id(name)} {{", "  rankdir=LR;", "  node [shape=box, fontname=monospace];"]
        for node in self.topological_order():
            task = self._tasks[node]
            lines.append(f"  {node} [label={_dot_id(f'{node}. {task.call_text()}')}];")
        lines.extend(f"  {u} -> {v};" for u, v in sorted(self._graph.edges))
        lines.append("}")
        return "\n".join(lines) + "\n"


def describe_cycle(nodes: list[int]) -> str:
    """``task 1 -> task 3 -> task 1`` text for a cycle given its nodes in order."""
    return " -> ".join(f"task {n}" for n in [*nodes, nodes[0]])


def _dot_id(text: str) -> str:
    clipped = text if len(text) <= 120 else text[:117] + "..."
    escaped = clipped.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'

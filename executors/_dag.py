"""DAG analysis of a plan: cycles, critical path, steps-to-execution, and export for pictures.

Edges run from a dependency to its dependent (``1 -> 3`` when task 3 references ``$1``). ``PlanGraph`` takes a
whole plan at once (the standard library's ``graphlib`` finds its order and any cycle); ``IncrementalDag``
checks for cycles as tasks stream in, without re-searching the whole graph per task.
"""

from __future__ import annotations

import graphlib
import heapq
import typing
from collections.abc import Collection, Iterable, Mapping

from pydantic import JsonValue

from agentflow.errors import PlanError

from ._task import Task

__all__ = ["IncrementalDag", "PlanGraph"]


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
        self._tasks: dict[int, Task] = {}
        for task in tasks:
            if task.id in self._tasks:
                raise PlanError(
                    f"task id {task.id} is used twice ({self._tasks[task.id].tool} and {task.tool})"
                )
            self._tasks[task.id] = task
        self._preds: dict[int, list[int]] = {}
        self._succs: dict[int, list[int]] = {node: [] for node in self._tasks}
        for task in self._tasks.values():
            for dep in sorted(task.deps):
                if dep not in self._tasks:
                    raise PlanError(
                        f"task {task.id} ({task.tool}) references ${dep}, but the plan has no task {dep}"
                    )
                self._succs[dep].append(task.id)
            self._preds[task.id] = sorted(task.deps)
        self._order = _lexicographic_order(self._preds)

    @property
    def tasks(self) -> dict[int, Task]:
        """Tasks by id."""
        return dict(self._tasks)

    def edges(self) -> list[tuple[int, int]]:
        """Every ``(dependency, dependent)`` pair, sorted."""
        return sorted((dep, node) for node, deps in self._preds.items() for dep in deps)

    def topological_order(self) -> list[int]:
        """Task ids so that every task comes after its dependencies (ties broken by id)."""
        return list(self._order)

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
            preds = list(self._preds[node])
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
            steps[node] = max((steps[p] + 1 for p in self._preds[node] if p not in done), default=0)
        return steps

    def steps_to_completion(self) -> dict[int, int]:
        """For each task, the number of tasks on the longest chain from it to the end of the plan (itself included)."""
        height: dict[int, int] = {}
        for node in reversed(self.topological_order()):
            height[node] = 1 + max((height[s] for s in self._succs[node]), default=0)
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
        edges: list[JsonValue] = [[u, v] for u, v in self.edges()]
        return {"nodes": nodes, "edges": edges}

    def to_dot(self, name: str = "plan") -> str:
        """Graphviz DOT text of the DAG (render with ``dot -Tsvg``)."""
        lines = [f"digraph {_dot_id(name)} {{", "  rankdir=LR;", "  node [shape=box, fontname=monospace];"]
        for node in self.topological_order():
            task = self._tasks[node]
            lines.append(f"  {node} [label={_dot_id(f'{node}. {task.call_text()}')}];")
        lines.extend(f"  {u} -> {v};" for u, v in self.edges())
        lines.append("}")
        return "\n".join(lines) + "\n"


class IncrementalDag:
    """Dependency edges added one task at a time, refusing any task that would close a cycle.

    Keeps a topological order of every node seen (Pearce and Kelly, "A dynamic topological sort algorithm for
    directed acyclic graphs", 2006): an edge that agrees with the order costs nothing; one that does not is
    checked by searching only the nodes whose position lies between its two ends, which are then reordered.
    A task added after its dependencies (the usual order) gets a position after every node; a node first seen
    as a forward reference gets one before every node, so a plan written backwards costs nothing either.

    Example:
        >>> dag = IncrementalDag()
        >>> dag.add(3, [2]) is None and dag.add(2, [1]) is None
        True
        >>> dag.add(1, [3])
        [1, 2, 3]
    """

    def __init__(self) -> None:
        # Position of every node in the current topological order (unique; lower runs earlier).
        self._order: dict[int, int] = {}
        self._succ: dict[int, list[int]] = {}
        self._pred: dict[int, list[int]] = {}
        self._first = 0  # lowest position handed out so far
        self._last = 0  # highest position handed out so far
        self.visits = 0
        """Nodes visited by order repairs so far (what the incremental check costs; for tests and benchmarks)."""

    def add(self, node: int, deps: Iterable[int]) -> list[int] | None:
        """Add edges ``dep -> node`` for every dependency.

        Returns:
            ``None`` when they were added; else a cycle they would close, as the nodes from ``node`` to the
            dependency that leads back to it, and the graph is left as it was.
        """
        # Invariant: for every edge u -> v, self._order[u] < self._order[v].
        if node not in self._order:
            self._last += 1
            self._new(node, self._last)
        added: list[int] = []
        for dep in sorted(set(deps)):
            if dep not in self._order:
                self._first -= 1
                self._new(dep, self._first)
            cycle = [node] if dep == node else self._insert(dep, node)
            if cycle is not None:
                for earlier in added:
                    self._succ[earlier].remove(node)
                    self._pred[node].remove(earlier)
                return cycle
            added.append(dep)
        return None

    def _new(self, node: int, position: int) -> None:
        self._order[node] = position
        self._succ[node] = []
        self._pred[node] = []

    def _insert(self, source: int, target: int) -> list[int] | None:
        order = self._order
        upper, lower = order[source], order[target]
        if upper < lower:
            self._link(source, target)
            return None
        # Nodes reachable from target that sit before source in the order: if source is among them, a cycle.
        parent: dict[int, int | None] = {target: None}
        forward, stack = [target], [target]
        while stack:
            current = stack.pop()
            self.visits += 1
            for nxt in self._succ[current]:
                if nxt == source:
                    path = [source, current]
                    back = parent[current]
                    while back is not None:
                        path.append(back)
                        back = parent[back]
                    return path[::-1]
                if nxt not in parent and order[nxt] < upper:
                    parent[nxt] = current
                    forward.append(nxt)
                    stack.append(nxt)
        # Nodes that reach source and sit after target: they must all move before the forward set.
        seen = {source}
        backward, stack = [source], [source]
        while stack:
            current = stack.pop()
            self.visits += 1
            for prev in self._pred[current]:
                if prev not in seen and order[prev] > lower:
                    seen.add(prev)
                    backward.append(prev)
                    stack.append(prev)
        moved = sorted(backward, key=order.__getitem__) + sorted(forward, key=order.__getitem__)
        for node, position in zip(moved, sorted(order[n] for n in moved), strict=True):
            order[node] = position
        self._link(source, target)
        return None

    def _link(self, source: int, target: int) -> None:
        self._succ[source].append(target)
        self._pred[target].append(source)


def describe_cycle(nodes: list[int]) -> str:
    """``task 1 -> task 3 -> task 1`` text for a cycle given its nodes in order (long ones shortened).

    >>> describe_cycle(list(range(1, 31)))
    'task 1 -> task 2 -> task 3 -> task 4 -> task 5 -> task 6 -> task 7 -> task 8 -> ... -> task 30 -> task 1 (30 tasks)'
    """
    if len(nodes) <= 12:
        return " -> ".join(f"task {n}" for n in [*nodes, nodes[0]])
    head = " -> ".join(f"task {n}" for n in nodes[:8])
    return f"{head} -> ... -> task {nodes[-1]} -> task {nodes[0]} ({len(nodes)} tasks)"


def _lexicographic_order(preds: Mapping[int, Iterable[int]]) -> list[int]:
    """A topological order of ``preds`` (node -> the nodes it comes after), the smallest ready node first.

    Raises:
        PlanError: The nodes form a cycle (naming its tasks).
    """
    sorter = graphlib.TopologicalSorter(preds)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle: list[int] = exc.args[1][:-1]  # in run order, the first node repeated at the end
        start = cycle.index(min(cycle))
        raise PlanError(
            f"the plan has a dependency cycle: {describe_cycle(cycle[start:] + cycle[:start])}"
        ) from None
    ready = list(sorter.get_ready())
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        node = heapq.heappop(ready)
        order.append(node)
        sorter.done(node)
        for unblocked in sorter.get_ready():
            heapq.heappush(ready, unblocked)
    return order


def _dot_id(text: str) -> str:
    clipped = text if len(text) <= 120 else text[:117] + "..."
    escaped = clipped.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'

"""The task memory tree: one node per task step, filled in as the planner and executor run them.

Each node has a parent (the step it refines) and dependencies (steps whose outputs it needs); a step
that several others depend on is a shared substep, which makes the structure a DAG. Dependencies must
exist when a node is added, so cycles cannot be built.

The planner/executor call, per task: ``add_task`` when the plan line parses, ``start`` when it is
dispatched, then ``complete(output)`` or ``fail(error)``. ``prompt_for(node, budget)`` assembles the
context an agent needs for a step from the root-to-node path and the dependencies' outputs:

    # Goal: <root title>            (relevance 3)
    ## Step: <ancestor title>       (relevance 4 + distance from the node: farther is less relevant)
    ## Result of <dep title> [id]   (relevance 1, in dependency order)
    ## Current task: <title>        (relevance 0, always kept; truncated only if alone over budget)

Pieces are admitted most relevant first; the first piece that does not fit is truncated to the room
left and every less relevant piece is dropped. The text keeps document order (path, results, task).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentflow.errors import ConfigError, MemoryStoreError
from agentflow.memory._models import TaskNode, TaskStatus, from_epoch
from agentflow.memory._text import TokenCounter, approx_token_count

if TYPE_CHECKING:
    from agentflow.memory._pg_store import PgStoreCore
    from agentflow.memory._store import Connection, MemoryStore, StoreCore

__all__ = ["TaskMemoryTree", "TaskTreeCore"]

_COLUMNS = "id, parent, title, input, output, error, status, created_at, started_at, finished_at"


@dataclass(frozen=True)
class _Piece:
    relevance: int  # lower is more relevant
    order: int  # position in the rendered prompt
    text: str


def _truncate_words(text: str, words: int) -> str:
    parts = text.split()
    return text if words >= len(parts) else " ".join(parts[:words]) + " …"


class TaskTreeCore:
    """The synchronous task tree over a ``StoreCore``."""

    def __init__(self, store: StoreCore | PgStoreCore, tree_id: str) -> None:
        if not tree_id:
            raise ConfigError("tree_id is empty; name the tree, e.g. 'run-7'")
        self.store = store
        self.tree_id = tree_id

    def _node(self, conn: Connection, node_id: str) -> TaskNode:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM task_nodes WHERE tree_id = ? AND id = ?", (self.tree_id, node_id)
        ).fetchone()
        if row is None:
            raise MemoryStoreError(
                f"no task {node_id!r} in task tree {self.tree_id!r}; add it with add_task first"
            )
        deps = tuple(
            r[0]
            for r in conn.execute(
                "SELECT dep_id FROM task_deps WHERE tree_id = ? AND node_id = ? ORDER BY ord",
                (self.tree_id, node_id),
            )
        )
        nid, parent, title, input_, output, error, status, created, started, finished = row
        return TaskNode(
            id=nid,
            parent=parent,
            title=title,
            input=input_,
            output=output,
            error=error,
            status=TaskStatus(status),
            deps=deps,
            created_at=from_epoch(created),
            started_at=None if started is None else from_epoch(started),
            finished_at=None if finished is None else from_epoch(finished),
        )

    def add_task(
        self,
        title: str,
        *,
        input: str = "",
        parent: str | None = None,
        deps: Sequence[str] = (),
        node_id: str | None = None,
    ) -> TaskNode:
        """Add a pending task; re-adding an identical node returns it (safe when a run is replayed).

        Args:
            title: What the step does.
            input: The step's input (arguments, rendered as text).
            parent: The step this one refines; None for a root.
            deps: Steps whose outputs this one needs (must already exist; shared substeps welcome).
            node_id: A stable id (the planner's task number); default: the next integer.
        """
        if not title:
            raise ConfigError("task title is empty; describe the step, e.g. 'search flights'")
        with self.store.write(self.tree_id, f"add task to tree {self.tree_id!r}") as conn:
            self.store.ensure_tree(conn, self.tree_id, "task")
            ord_ = conn.execute(
                "SELECT COALESCE(MAX(ord) + 1, 1) FROM task_nodes WHERE tree_id = ?", (self.tree_id,)
            ).fetchone()[0]
            nid = node_id if node_id is not None else str(ord_)
            existing = conn.execute(
                "SELECT 1 FROM task_nodes WHERE tree_id = ? AND id = ?", (self.tree_id, nid)
            ).fetchone()
            if existing is not None:
                node = self._node(conn, nid)
                if (node.title, node.input, node.parent, node.deps) != (title, input, parent, tuple(deps)):
                    raise MemoryStoreError(
                        f"task {nid!r} already exists in tree {self.tree_id!r} with other content "
                        f"({node.title!r}); use a new node_id"
                    )
                return node
            for ref, what in [(parent, "parent"), *((d, "dependency") for d in deps)]:
                if ref is not None and ref == nid:
                    raise ConfigError(f"task {nid!r} names itself as its {what}; remove it")
                if (
                    ref is not None
                    and not conn.execute(
                        "SELECT 1 FROM task_nodes WHERE tree_id = ? AND id = ?", (self.tree_id, ref)
                    ).fetchone()
                ):
                    raise ConfigError(
                        f"task {nid!r} names {what} {ref!r}, which is not in tree {self.tree_id!r}; add it first"
                    )
            conn.execute(
                "INSERT INTO task_nodes (tree_id, id, parent, title, input, status, created_at, ord) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (self.tree_id, nid, parent, title, input, TaskStatus.PENDING.value, time.time(), ord_),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO task_deps (tree_id, node_id, dep_id, ord) VALUES (?, ?, ?, ?)",
                [(self.tree_id, nid, dep, i) for i, dep in enumerate(deps)],
            )
            return self._node(conn, nid)

    def _transition(
        self, node_id: str, to: TaskStatus, allowed: set[TaskStatus], output: str | None, error: str | None
    ) -> TaskNode:
        with self.store.write(self.tree_id, f"update task {node_id!r} in tree {self.tree_id!r}") as conn:
            node = self._node(conn, node_id)
            if (
                node.status == to
                and to is not TaskStatus.FAILED
                and (to is not TaskStatus.DONE or node.output == output)
            ):
                return node
            if node.status not in allowed:
                raise MemoryStoreError(
                    f"task {node_id!r} in tree {self.tree_id!r} is {node.status.value}, so it cannot become "
                    f"{to.value}; add a new task to redo finished work"
                )
            now = time.time()
            if to is TaskStatus.RUNNING:
                conn.execute(
                    "UPDATE task_nodes SET status = ?, started_at = ?, error = NULL WHERE tree_id = ? AND id = ?",
                    (to.value, now, self.tree_id, node_id),
                )
            else:
                conn.execute(
                    "UPDATE task_nodes SET status = ?, output = ?, error = ?, finished_at = ?, "
                    "started_at = COALESCE(started_at, ?) WHERE tree_id = ? AND id = ?",
                    (to.value, output, error, now, now, self.tree_id, node_id),
                )
            return self._node(conn, node_id)

    def start(self, node_id: str) -> TaskNode:
        """Mark a pending (or failed, to retry) task running."""
        return self._transition(
            node_id, TaskStatus.RUNNING, {TaskStatus.PENDING, TaskStatus.FAILED}, None, None
        )

    def complete(self, node_id: str, output: str) -> TaskNode:
        """Record a task's output and mark it done."""
        return self._transition(
            node_id, TaskStatus.DONE, {TaskStatus.PENDING, TaskStatus.RUNNING}, output, None
        )

    def fail(self, node_id: str, error: str) -> TaskNode:
        """Record a task's error and mark it failed."""
        allowed = {TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.FAILED}
        return self._transition(node_id, TaskStatus.FAILED, allowed, None, error)

    def get(self, node_id: str) -> TaskNode:
        """One node (``MemoryStoreError`` if unknown)."""
        with self.store.connection() as conn:
            return self._node(conn, node_id)

    def nodes(self) -> list[TaskNode]:
        """Every node, in the order they were added."""
        with self.store.connection() as conn:
            ids = conn.execute(
                "SELECT id FROM task_nodes WHERE tree_id = ? ORDER BY ord", (self.tree_id,)
            ).fetchall()
            return [self._node(conn, r[0]) for r in ids]

    def children(self, node_id: str | None) -> list[TaskNode]:
        """The direct substeps of a node (of the roots for None), in the order they were added."""
        with self.store.connection() as conn:
            ids = conn.execute(
                "SELECT id FROM task_nodes WHERE tree_id = ? AND parent IS ? ORDER BY ord",
                (self.tree_id, node_id),
            ).fetchall()
            return [self._node(conn, r[0]) for r in ids]

    def path(self, node_id: str) -> list[TaskNode]:
        """The nodes from the root down to ``node_id`` (inclusive)."""
        with self.store.connection() as conn:
            path = [self._node(conn, node_id)]
            while path[-1].parent is not None:
                path.append(self._node(conn, path[-1].parent))
            return path[::-1]

    def prompt_for(
        self, node_id: str, budget_tokens: int, count_tokens: TokenCounter = approx_token_count
    ) -> str:
        """Context for running ``node_id``: its path and its dependencies' results within a token budget.

        Args:
            node_id: The step about to run.
            budget_tokens: The most tokens the returned text may count.
            count_tokens: The engine's token counter (default: an estimate without a tokenizer).

        Returns:
            The prompt text; deterministic for the same tree and arguments.
        """
        if budget_tokens < 1:
            raise ConfigError(f"budget_tokens={budget_tokens!r} must be at least 1")
        path = self.path(node_id)
        node, ancestors = path[-1], path[:-1]
        deps = [self.get(d) for d in node.deps]
        pieces: list[_Piece] = []
        for i, anc in enumerate(ancestors):
            body = anc.input + (f"\nResult: {anc.output}" if anc.output else "")
            if i == 0:
                pieces.append(_Piece(3, i, f"# Goal: {anc.title}\n{body}".rstrip()))
            else:
                pieces.append(_Piece(4 + len(ancestors) - i, i, f"## Step: {anc.title}\n{body}".rstrip()))
        for j, dep in enumerate(deps):
            if dep.status is TaskStatus.DONE:
                result = dep.output or ""
            elif dep.status is TaskStatus.FAILED:
                result = f"(failed: {dep.error})"
            else:
                result = f"({dep.status.value})"
            pieces.append(_Piece(1, len(ancestors) + j, f"## Result of {dep.title} [{dep.id}]\n{result}"))
        pieces.append(
            _Piece(0, len(ancestors) + len(deps), f"## Current task: {node.title}\n{node.input}".rstrip())
        )

        def render(chosen: list[_Piece]) -> str:
            return "\n\n".join(p.text for p in sorted(chosen, key=lambda p: p.order))

        chosen: list[_Piece] = []
        for piece in sorted(pieces, key=lambda p: (p.relevance, p.order)):
            if count_tokens(render([*chosen, piece])) <= budget_tokens:
                chosen.append(piece)
                continue
            lo, hi = 0, len(piece.text.split())
            while lo < hi:
                mid = (lo + hi + 1) // 2
                trial = _Piece(piece.relevance, piece.order, _truncate_words(piece.text, mid))
                if count_tokens(render([*chosen, trial])) <= budget_tokens:
                    lo = mid
                else:
                    hi = mid - 1
            if lo > 0:
                chosen.append(_Piece(piece.relevance, piece.order, _truncate_words(piece.text, lo)))
            break
        return render(chosen)


class TaskMemoryTree:
    """The async task tree; get one from ``MemoryStore.task_tree(tree_id)``."""

    def __init__(self, store: MemoryStore, tree_id: str) -> None:
        if not tree_id:
            raise ConfigError("tree_id is empty; name the tree, e.g. 'run-7'")
        self.store = store
        self.tree_id = tree_id
        self._core: TaskTreeCore | None = None

    @property
    def sync(self) -> TaskTreeCore:
        """The synchronous core (opens the store on first use; blocking)."""
        if self._core is None:
            self._core = TaskTreeCore(self.store.sync, self.tree_id)
        return self._core

    async def _c(self) -> TaskTreeCore:
        if self._core is None:
            await self.store.run(lambda: self.sync)
        assert self._core is not None
        return self._core

    async def add_task(
        self,
        title: str,
        *,
        input: str = "",
        parent: str | None = None,
        deps: Sequence[str] = (),
        node_id: str | None = None,
    ) -> TaskNode:
        """Add a pending task (see ``TaskTreeCore.add_task``)."""
        core = await self._c()
        return await self.store.run(
            core.add_task, title, input=input, parent=parent, deps=tuple(deps), node_id=node_id
        )

    async def start(self, node_id: str) -> TaskNode:
        """Mark a task running."""
        core = await self._c()
        return await self.store.run(core.start, node_id)

    async def complete(self, node_id: str, output: str) -> TaskNode:
        """Record a task's output and mark it done."""
        core = await self._c()
        return await self.store.run(core.complete, node_id, output)

    async def fail(self, node_id: str, error: str) -> TaskNode:
        """Record a task's error and mark it failed."""
        core = await self._c()
        return await self.store.run(core.fail, node_id, error)

    async def get(self, node_id: str) -> TaskNode:
        """One node."""
        core = await self._c()
        return await self.store.run(core.get, node_id)

    async def nodes(self) -> list[TaskNode]:
        """Every node in the order added."""
        core = await self._c()
        return await self.store.run(core.nodes)

    async def children(self, node_id: str | None) -> list[TaskNode]:
        """Direct substeps of a node (roots for None)."""
        core = await self._c()
        return await self.store.run(core.children, node_id)

    async def path(self, node_id: str) -> list[TaskNode]:
        """Root-to-node path."""
        core = await self._c()
        return await self.store.run(core.path, node_id)

    async def prompt_for(
        self, node_id: str, budget_tokens: int, count_tokens: TokenCounter = approx_token_count
    ) -> str:
        """Context for running ``node_id`` within ``budget_tokens`` (see ``TaskTreeCore.prompt_for``)."""
        core = await self._c()
        return await self.store.run(core.prompt_for, node_id, budget_tokens, count_tokens)

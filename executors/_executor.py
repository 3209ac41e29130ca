"""The parallel function-call executor (LLMCompiler's task fetching unit), on plain anyio.

Tasks arrive one by one (:meth:`Execution.add`, while the planner is still streaming) or as a whole list
(:meth:`Executor.run`). A task starts the moment its last dependency finishes: the finishing task's own coroutine
counts down its dependents and starts the ones that became ready, so there is no polling loop and no scheduler task
in between. Arguments are substituted once with the dependencies' typed values (:func:`substitute`), the global
concurrency cap and per-task timeout apply, and every failure becomes the task's observation:

- the tool raised or got invalid arguments: ``TaskStatus.ERROR`` with a :class:`ToolError`;
- it ran out of time: ``TaskStatus.TIMEOUT`` with a :class:`StepTimeout`;
- a dependency did not finish OK: the dependent is ``TaskStatus.SKIPPED`` (never called, because its arguments
  would hold an error text instead of a value) with a :class:`ToolError` naming the dependency; the joiner sees
  both observations and can replan;
- cancelled (one task or the whole execution): ``TaskStatus.CANCELLED``, dependents skipped.

Plan mistakes (duplicate ids, unknown tools, dependency cycles, references that are never defined) are raised as
:class:`PlanError` from :meth:`Execution.add` / :meth:`Execution.close`.

In a journaled run (``journal``: a :class:`~agentflow.executors.TaskJournal`) every tool call is a step of its own:
a task whose result the journal holds from an earlier attempt of the run is not called again (its recorded result
is used, read back as its tool's declared return type), and every call that ends is recorded durably before any
dependent sees its result. A call the run's step budget refused was not made, and is not recorded.
:meth:`Execution.restore` puts a result replayed by the caller (a journaled round of an agent) back into the
execution without running anything.

Example:
    >>> import anyio
    >>> from agentflow.executors import Executor, Task, ToolRegistry, tool
    >>> @tool
    ... async def double(x: int) -> int:
    ...     '''Double a number.'''
    ...     return 2 * x
    >>> report = anyio.run(Executor(ToolRegistry([double])).run, [Task(1, "double", (2,)), Task(2, "double", ("$1",))])
    >>> report.results[2].value
    8
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import anyio
import anyio.abc
import anyio.lowlevel

from agentflow.errors import ConfigError, PlanError, StepBudgetExceededError, StepTimeout, ToolError

from ._dag import IncrementalDag, PlanGraph, describe_cycle
from ._journal import TaskJournal
from ._refs import UnresolvedFieldError, substitute
from ._registry import ToolRegistry, ToolView
from ._task import Task, TaskResult, TaskStatus
from ._tool import Tool

__all__ = ["Execution", "ExecutionReport", "Executor"]

_now = time.perf_counter


@dataclass(frozen=True)
class ExecutionReport:
    """Everything one execution produced.

    Attributes:
        results: Results by task id, in the order the tasks were added.
        started_at: When the execution opened (``time.perf_counter()`` seconds).
        finished_at: When its last task finished.
    """

    results: Mapping[int, TaskResult]
    started_at: float
    finished_at: float

    @property
    def makespan(self) -> float:
        """Seconds from the first task starting to the last task finishing (0 when nothing ran)."""
        starts = [r.started_at for r in self.results.values() if r.started_at is not None]
        if not starts:
            return 0.0
        return max(r.finished_at for r in self.results.values()) - min(starts)

    def values(self) -> dict[int, object]:
        """The values of the tasks that finished OK, by id."""
        return {i: r.value for i, r in self.results.items() if r.ok}

    def dispatch_latencies(self) -> list[float]:
        """For every task with dependencies that started: seconds from its last dependency finishing to it starting."""
        return [lat for r in self.results.values() if r.task.deps and (lat := r.dispatch_latency) is not None]

    def graph(self) -> PlanGraph:
        """The DAG of the executed tasks."""
        return PlanGraph(r.task for r in self.results.values())


class Execution:
    """One running execution; obtained from :meth:`Executor.open`.

    Add tasks as they arrive, then :meth:`close` and :meth:`wait`. Every method but :meth:`wait` and
    :meth:`result` is synchronous and must be called from the event loop thread.
    """

    def __init__(
        self,
        tools: ToolRegistry | ToolView,
        task_group: anyio.abc.TaskGroup,
        *,
        max_concurrency: int | None,
        timeout: float | None,
        on_result: Callable[[TaskResult], None] | None,
        journal: TaskJournal | None = None,
    ) -> None:
        self._tools = tools
        self._tg = task_group  # the Executor.open() task group; lives as long as the execution
        self._timeout = timeout
        self._on_result = on_result
        self._journal = journal
        self._limiter = anyio.CapacityLimiter(max_concurrency) if max_concurrency is not None else None
        # Per-task state, filled by add() and kept until the execution ends.
        self._tasks: dict[int, Task] = {}
        self._bound: dict[int, tuple[Tool, dict[str, object]]] = {}
        self._results: dict[int, TaskResult] = {}
        self._done: dict[int, anyio.Event] = {}
        # Waiting tasks: id -> number of dependencies not finished yet; removed when the task starts.
        self._waiting: dict[int, int] = {}
        # Dependency id -> ids of waiting tasks to count down when it finishes; removed when it finishes.
        self._dependents: dict[int, list[int]] = {}
        # When each waiting task's last dependency finished; set just before the task starts.
        self._ready_at: dict[int, float] = {}
        # Cancel scopes of launched tasks; added by _launch, removed when the task's coroutine ends.
        self._scopes: dict[int, anyio.CancelScope] = {}
        # When each running task's tool call started; set by _call, removed when the task's coroutine ends.
        self._started: dict[int, float] = {}
        # Skipped task id -> the failed task its skipping started from; kept until the execution ends.
        self._skip_cause: dict[int, int] = {}
        # Every dependency edge added so far, in a topological order kept up to date (cycle checks).
        self._dag = IncrementalDag()
        self._closed = False
        self._cancelled = False
        self._all_done = anyio.Event()
        self.started_at = _now()
        self.finished_at: float | None = None

    # -- feeding --------------------------------------------------------------------------------------------------

    def add(self, task: Task) -> None:
        """Accept a task; it starts at once if its dependencies are finished, else when the last one finishes.

        Dependencies may refer to tasks added later (they must be added before :meth:`close`).

        Raises:
            PlanError: The execution is closed, the id is used already, the tool is unknown or the arguments do
                not bind to its parameters, or the task closes a dependency cycle.
        """
        # Invariant: every id in self._waiting has exactly self._waiting[id] entries in self._dependents lists,
        # one per dependency without a result yet.
        self._bound[task.id] = self._accept(task, "add")
        if self._cancelled:
            self._finish(TaskResult(task, TaskStatus.CANCELLED, ready_at=_now(), finished_at=_now()))
            return
        pending = [d for d in task.deps if d not in self._results]
        if not pending:
            self._ready_at[task.id] = _now()
            self._start(task.id)
            return
        self._waiting[task.id] = len(pending)
        for dep in pending:
            self._dependents.setdefault(dep, []).append(task.id)

    def restore(self, result: TaskResult) -> None:
        """Add a task that already ran, with its result (replayed from a journal): no tool is called and
        ``on_result`` is not told; dependents see the result as if the task had just finished. The value is
        read as its tool's declared return type, and the result's times are this execution's (now).

        Raises:
            PlanError: The execution is closed, the id is used already, the tool is unknown or the arguments do
                not bind to its parameters, or the task closes a dependency cycle.
        """
        tool, _ = self._accept(result.task, "restore")
        self._finish(_replayed(result, tool, _now()), notify=False)

    def _accept(self, task: Task, verb: str) -> tuple[Tool, dict[str, object]]:
        """Check ``task`` and take it in (no result yet); its tool and bound arguments.

        Raises:
            PlanError: as :meth:`add` says.
        """
        if self._closed:
            raise PlanError(f"cannot {verb} task {task.id} ({task.tool}): the execution is closed")
        if task.id in self._tasks:
            raise PlanError(f"task id {task.id} is used twice ({self._tasks[task.id].tool} and {task.tool})")
        try:
            tool = self._tools.get(task.tool)
            arguments: dict[str, object] = dict(tool.bind(task.args, task.kwargs))
        except ToolError as exc:
            raise PlanError(f"task {task.id}: {exc.message}") from exc
        self._check_cycle(task)
        self._tasks[task.id] = task
        self._done[task.id] = anyio.Event()
        return tool, arguments

    def _check_cycle(self, task: Task) -> None:
        cycle = self._dag.add(task.id, task.deps)
        if cycle is not None:
            raise PlanError(
                f"task {task.id} ({task.tool}) closes a dependency cycle: {describe_cycle(cycle)}"
            )

    def close(self) -> None:
        """Declare that no more tasks will come.

        Raises:
            PlanError: Some task references a task id that was never added (the execution stays open, so the
                caller may add it or :meth:`cancel`).
        """
        missing = sorted(
            (dep, tid) for tid in self._waiting for dep in self._tasks[tid].deps if dep not in self._tasks
        )
        if missing:
            listed = ", ".join(f"task {tid} references ${dep}" for dep, tid in missing)
            raise PlanError(f"the plan references tasks that were never defined: {listed}")
        self._closed = True
        self._check_all_done()

    # -- control --------------------------------------------------------------------------------------------------

    def cancel(self, task_id: int | None = None) -> None:
        """Cancel one task (its dependents are skipped) or, with no argument, every unfinished task and close.

        Cancelling a finished or unknown task does nothing.
        """
        if task_id is None:
            self._cancelled = True
            self._closed = True
            for tid in [t for t in self._waiting]:
                self._cancel_waiting(tid)
            for scope in list(self._scopes.values()):
                scope.cancel()
            self._check_all_done()
            return
        if task_id in self._results or task_id not in self._tasks:
            return
        if task_id in self._waiting:
            self._cancel_waiting(task_id)
        else:
            launched = self._scopes.get(task_id)
            if launched is not None:
                launched.cancel()

    def _cancel_waiting(self, task_id: int) -> None:
        if task_id not in self._waiting:
            return
        del self._waiting[task_id]
        for dep in self._tasks[task_id].deps:
            waiters = self._dependents.get(dep)
            if waiters is not None and task_id in waiters:
                waiters.remove(task_id)
        now = _now()
        self._finish(TaskResult(self._tasks[task_id], TaskStatus.CANCELLED, ready_at=now, finished_at=now))

    # -- observing ------------------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` (or a full :meth:`cancel`) was called."""
        return self._closed

    @property
    def cycle_check_visits(self) -> int:
        """Tasks visited by the incremental cycle checks so far: 0 for plans whose references all point one way."""
        return self._dag.visits

    @property
    def results(self) -> dict[int, TaskResult]:
        """Results of the tasks finished so far, by id."""
        return dict(self._results)

    def steps_to_execution(self) -> dict[int, int]:
        """For each unfinished task: dependency levels still to finish before it can run (0 = ready/running).

        Raises:
            PlanError: A task references a task that was not added yet.
        """
        return PlanGraph(self._tasks.values()).steps_to_execution(done=self._results.keys())

    async def result(self, task_id: int) -> TaskResult:
        """Wait for one task's result.

        Raises:
            PlanError: No task with this id was added.
        """
        event = self._done.get(task_id)
        if event is None:
            raise PlanError(f"no task {task_id} was added to this execution")
        await event.wait()
        return self._results[task_id]

    async def wait(self) -> ExecutionReport:
        """Wait until :meth:`close` was called and every task finished, and return the report."""
        await self._all_done.wait()
        return self.report()

    def report(self) -> ExecutionReport:
        """The results so far as a report (complete once :meth:`wait` returned)."""
        finished = self.finished_at if self.finished_at is not None else _now()
        return ExecutionReport(
            results={i: self._results[i] for i in self._tasks if i in self._results},
            started_at=self.started_at,
            finished_at=finished,
        )

    # -- running --------------------------------------------------------------------------------------------------

    def _start(self, task_id: int) -> None:
        """Launch a task whose dependencies all finished, or finish it as skipped if one of them failed."""
        skipped = self._skipped(task_id)
        if skipped is not None:
            self._finish(skipped)
        else:
            self._launch(task_id)

    def _skipped(self, task_id: int) -> TaskResult | None:
        """The SKIPPED result of a ready task when one of its dependencies did not finish OK, else ``None``.

        The message names the dependency and the failure the skipping started from, never the dependency's own
        skip message, so it stays one line however long the chain of skipped tasks is.
        """
        task = self._tasks[task_id]
        failed = [d for d in sorted(task.deps) if not self._results[d].ok]
        if not failed:
            return None
        dep = self._results[failed[0]]
        root = self._results[self._skip_cause.get(dep.task.id, dep.task.id)]
        self._skip_cause[task_id] = root.task.id
        why = f"ended {dep.status.value}: {dep.observation()}"
        if root is not dep:
            why = f"was skipped because task {root.task.id} ({root.task.tool}) ended {root.status.value}: "
            why += root.observation()
        now = _now()
        error = ToolError(
            task.tool,
            f"task {task_id} skipped: it depends on task {dep.task.id} ({dep.task.tool}), which {why}",
        )
        return TaskResult(
            task, TaskStatus.SKIPPED, error=error, ready_at=self._ready_at.pop(task_id, now), finished_at=now
        )

    def _launch(self, task_id: int) -> None:
        task = self._tasks[task_id]
        # The scope exists from launch on, so cancel() also stops a task whose coroutine has not started yet.
        self._scopes[task_id] = anyio.CancelScope()
        self._tg.start_soon(self._run, task_id, name=f"task {task_id} {task.tool}")

    async def _run(self, task_id: int) -> None:
        task = self._tasks[task_id]
        tool, arguments = self._bound.pop(task_id)
        ready_at = self._ready_at.pop(task_id)
        scope = self._scopes[task_id]
        result: TaskResult | None = None
        notify = True
        try:
            with scope:
                await anyio.lowlevel.checkpoint_if_cancelled()
                recorded = await self._journal.replay(task) if self._journal is not None else None
                if recorded is not None:
                    result, notify = _replayed(recorded, tool, ready_at), False
                else:
                    result = await self._call(task, tool, arguments, ready_at)
                    if self._journal is not None and result.budget_refusal is None:
                        # The call ended: its outcome is recorded before any dependent sees it, and a
                        # cancellation arriving now does not lose it.
                        with anyio.CancelScope(shield=True):
                            try:
                                await self._journal.commit(result)
                            except BaseException:
                                result = None
                                raise
        finally:
            del self._scopes[task_id]
            started_at = self._started.pop(task_id, None)
            if result is None:
                result = TaskResult(
                    task, TaskStatus.CANCELLED, ready_at=ready_at, started_at=started_at, finished_at=_now()
                )
            self._finish(result, notify=notify)

    async def _call(
        self, task: Task, tool: Tool, arguments: dict[str, object], ready_at: float
    ) -> TaskResult:
        """Call the tool; a failure or timeout becomes the result (cancellation propagates)."""
        started_at: float | None = None
        try:
            if self._limiter is not None:
                await self._limiter.acquire()
            try:
                values = {d: self._results[d].value for d in task.deps}
                try:
                    call_args = {k: substitute(v, values) for k, v in arguments.items()}  # type: ignore[arg-type]
                except UnresolvedFieldError as exc:
                    raise ToolError(task.tool, f"task {task.id}: {exc}") from exc
                started_at = self._started[task.id] = _now()
                value = await self._invoke(tool, call_args)
                return TaskResult(
                    task, TaskStatus.OK, value, ready_at=ready_at, started_at=started_at, finished_at=_now()
                )
            finally:
                if self._limiter is not None:
                    self._limiter.release()
        except (ToolError, StepBudgetExceededError) as exc:
            if isinstance(exc, ToolError):
                error = exc
            else:
                # The run may make no more calls: the task fails without calling its tool; the agent's next
                # LLM call meets the same budget and ends the run.
                error = ToolError(task.tool, exc.message)
                error.__cause__ = exc
            return TaskResult(
                task,
                TaskStatus.ERROR,
                error=error,
                ready_at=ready_at,
                started_at=started_at,
                finished_at=_now(),
            )
        except StepTimeout as exc:
            return TaskResult(
                task,
                TaskStatus.TIMEOUT,
                error=exc,
                ready_at=ready_at,
                started_at=started_at,
                finished_at=_now(),
            )

    async def _invoke(self, tool: Tool, arguments: dict[str, object]) -> object:
        if self._timeout is None:
            return await tool.invoke(arguments)
        value: object = None
        with anyio.move_on_after(self._timeout) as limit:
            value = await tool.invoke(arguments)
        if limit.cancelled_caught:
            raise StepTimeout(f"task {tool.name}", self._timeout)
        return value

    def _finish(self, result: TaskResult, *, notify: bool = True) -> None:
        # Invariant: records each task's result exactly once, synchronously, and starts every dependent whose
        # count hits zero. Dependents that finish at once (skipped or cancelled) go on a work list, not into
        # a recursive call: a chain of thousands of tasks whose first fails must not exhaust the stack.
        # ``notify=False`` (a replayed result) keeps ``on_result`` from hearing of a call that was not made.
        work = [result]
        while work:
            result = work.pop()
            task_id = result.task.id
            self._results[task_id] = result
            self._done[task_id].set()
            if self._on_result is not None and notify:
                self._on_result(result)
            notify = True
            for dependent in self._dependents.pop(task_id, ()):
                left = self._waiting[dependent] - 1
                if left:
                    self._waiting[dependent] = left
                    continue
                del self._waiting[dependent]
                self._ready_at[dependent] = result.finished_at
                if self._cancelled:
                    work.append(
                        TaskResult(
                            self._tasks[dependent],
                            TaskStatus.CANCELLED,
                            ready_at=result.finished_at,
                            finished_at=_now(),
                        )
                    )
                    continue
                skipped = self._skipped(dependent)
                if skipped is not None:
                    work.append(skipped)
                else:
                    self._launch(dependent)
        self._check_all_done()

    def _check_all_done(self) -> None:
        if self._closed and len(self._results) == len(self._tasks) and not self._all_done.is_set():
            self.finished_at = max((r.finished_at for r in self._results.values()), default=_now())
            self._all_done.set()


class Executor:
    """Runs plans of tool calls in parallel as their dependencies allow.

    Args:
        tools: Where task tool names are looked up (a registry or an agent's allowlist view).
        max_concurrency: At most this many tool calls at once across the execution (None: no cap).
        timeout: Seconds each task may take, retries included (None: only the tools' own timeouts).
        on_result: Called synchronously with each result as it is recorded (for streaming to a joiner/UI).
    """

    def __init__(
        self,
        tools: ToolRegistry | ToolView,
        *,
        max_concurrency: int | None = None,
        timeout: float | None = None,
        on_result: Callable[[TaskResult], None] | None = None,
    ) -> None:
        if max_concurrency is not None and (not isinstance(max_concurrency, int) or max_concurrency < 1):
            raise ConfigError(f"executor max_concurrency={max_concurrency!r} must be an integer >= 1 or None")
        if timeout is not None and not timeout > 0:
            raise ConfigError(f"executor timeout={timeout!r} must be a positive number of seconds or None")
        self._tools = tools
        self._max_concurrency = max_concurrency
        self._timeout = timeout
        self._on_result = on_result

    @asynccontextmanager
    async def open(
        self,
        *,
        on_result: Callable[[TaskResult], None] | None = None,
        journal: TaskJournal | None = None,
    ) -> AsyncIterator[Execution]:
        """Open an execution to feed tasks into while the plan streams.

        ``on_result`` (default: the executor's own) is called with each result as it is recorded. With a
        ``journal`` (see :func:`~agentflow.executors.task_journal`) each call is journaled as a step of its own,
        and a call an earlier attempt of the run recorded is not made again.
        On normal exit the execution is closed (if the body did not) and awaited. If the body raises, every
        unfinished task is cancelled and the body's exception propagates unchanged.

        Example:
            ``async with executor.open() as run: run.add(task); ...; run.close(); report = await run.wait()``
        """
        error: Exception | None = None
        async with anyio.create_task_group() as tg:
            execution = Execution(
                self._tools,
                tg,
                max_concurrency=self._max_concurrency,
                timeout=self._timeout,
                on_result=on_result if on_result is not None else self._on_result,
                journal=journal,
            )
            try:
                yield execution
            except Exception as exc:
                error = exc
                execution.cancel()
            else:
                if not execution.closed:
                    try:
                        execution.close()
                    except PlanError as exc:
                        error = exc
                        execution.cancel()
                if error is None:
                    await execution.wait()
        if error is not None:
            raise error

    async def run(
        self,
        tasks: Iterable[Task] | AsyncIterable[Task],
        *,
        on_result: Callable[[TaskResult], None] | None = None,
        journal: TaskJournal | None = None,
    ) -> ExecutionReport:
        """Execute every task (a list, or an async iterator that yields tasks as the planner emits them).

        ``on_result`` (default: the executor's own) is called with each result as it is recorded; ``journal``
        as for :meth:`open`.

        Raises:
            PlanError: A plan mistake (see :meth:`Execution.add` and :meth:`Execution.close`); the tasks already
                running are cancelled.
        """
        async with self.open(on_result=on_result, journal=journal) as execution:
            if isinstance(tasks, AsyncIterable):
                async for task in tasks:
                    execution.add(task)
            else:
                for task in tasks:
                    execution.add(task)
            execution.close()
            report = await execution.wait()
        return report


def _replayed(result: TaskResult, tool: Tool, ready_at: float) -> TaskResult:
    """A result recorded by an earlier attempt, as this execution holds it: the value read as the tool's declared
    return type, and the times this execution's (ready at ``ready_at``, finished now, no call started)."""
    value = tool.typed_result(result.value) if result.status is TaskStatus.OK else result.value
    return replace(result, value=value, ready_at=ready_at, started_at=None, finished_at=_now())

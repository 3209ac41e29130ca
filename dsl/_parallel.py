"""Parallel composition: ``par``/``gather`` (applicative), ``par.map`` and ``race``.

Every branch runs in one anyio task group, starting from a snapshot of the state. The first branch
that fails cancels the ones still running (they never complete); ``settle=True`` instead waits for
all and returns each branch's ``Outcome``. Branch traces are appended to the parent's in branch
order, and branch states are joined by the fields' merge rules (``_merge``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar, overload

import anyio

from ._errors import AgentflowError, ConfigError, MergeConflict, RaceLostError
from ._events import Event
from ._flow import Env, Flow, Res, error_from, join_path
from ._merge import merge_states, snapshot
from ._outcome import Err, Ok, State

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
D = TypeVar("D")
E = TypeVar("E")
T = TypeVar("T")


async def _run_all(
    flows: Sequence[Flow[Any]],
    env: Env,
    state: State,
    *,
    settle: bool,
    limit: int | None,
    index_paths: bool,
) -> tuple[list[Res | None], list[list[Event]], int | None]:
    """Run branches concurrently. Returns (results, per-branch logs, index of the first Err or None).

    Invariant: when ``settle`` is false, the first branch to finish with an ``Err`` records its index
    before cancelling the group, so exactly one error is reported and cancelled siblings leave
    ``None`` in ``results``.
    """
    n = len(flows)
    results: list[Res | None] = [None] * n
    logs: list[list[Event]] = [[] for _ in range(n)]
    first_err: list[int] = []
    base_path = env.path

    async with anyio.create_task_group() as tg:

        async def branch(i: int) -> None:
            path = join_path(base_path, f"[{i}]") if index_paths else base_path
            res = await flows[i]._exec(env.branch(logs[i], path), snapshot(state))
            results[i] = res
            if isinstance(res, Err) and not settle and not first_err:
                first_err.append(i)
                tg.cancel_scope.cancel()

        if limit is None or limit >= n:
            for i in range(n):
                tg.start_soon(branch, i)
        else:
            next_index = iter(range(n))

            async def worker() -> None:
                for i in next_index:
                    await branch(i)

            for _ in range(limit):
                tg.start_soon(worker)
    return results, logs, (first_err[0] if first_err else None)


def _join(
    flows: Sequence[Flow[Any]],
    *,
    settle: bool,
    limit: int | None,
    index_paths: bool,
    as_tuple: bool,
) -> Flow[Any]:
    async def leaf(env: Env, state: State) -> Res:
        results, logs, first_err = await _run_all(
            flows, env, state, settle=settle, limit=limit, index_paths=index_paths
        )
        for log in logs:
            env.log.extend(log)
        if first_err is not None:
            failed = results[first_err]
            assert isinstance(failed, Err)
            return Err(failed.error, state)
        if settle:
            outcomes: list[Ok[Any] | Err] = []
            ok_states: list[State] = []
            for res, log in zip(results, logs, strict=True):
                assert res is not None
                if isinstance(res, Err):
                    outcomes.append(Err(res.error, res.state, tuple(log)))
                else:
                    outcomes.append(Ok(res.value, res.state, tuple(log)))
                    ok_states.append(res.state)
            try:
                merged = merge_states(env.path, state, ok_states)
            except MergeConflict as exc:
                return Err(exc, state)
            return Ok(tuple(outcomes), merged)
        values = []
        states: list[State] = []
        for res in results:
            assert res is not None and isinstance(res, Ok)
            values.append(res.value)
            states.append(res.state)
        try:
            merged = merge_states(env.path, state, states)
        except MergeConflict as exc:
            return Err(exc, state)
        return Ok(tuple(values) if as_tuple else values, merged)

    return Flow(leaf)


class _Par:
    """``par(a, b, ...)``: run flows concurrently; ``par.map(fn, items, limit=N)``.

    >>> import anyio
    >>> from agentflow.dsl import pure
    >>> anyio.run(par(pure(1), pure("a")).run).value
    (1, 'a')
    """

    @overload
    def __call__(self, a: Flow[A], /) -> Flow[tuple[A]]: ...
    @overload
    def __call__(self, a: Flow[A], b: Flow[B], /) -> Flow[tuple[A, B]]: ...
    @overload
    def __call__(self, a: Flow[A], b: Flow[B], c: Flow[C], /) -> Flow[tuple[A, B, C]]: ...
    @overload
    def __call__(self, a: Flow[A], b: Flow[B], c: Flow[C], d: Flow[D], /) -> Flow[tuple[A, B, C, D]]: ...
    @overload
    def __call__(
        self, a: Flow[A], b: Flow[B], c: Flow[C], d: Flow[D], e: Flow[E], /
    ) -> Flow[tuple[A, B, C, D, E]]: ...
    @overload
    def __call__(self, *flows: Flow[T], settle: Literal[False] = False) -> Flow[tuple[T, ...]]: ...
    @overload
    def __call__(self, *flows: Flow[T], settle: Literal[True]) -> Flow[tuple[Ok[T] | Err, ...]]: ...
    def __call__(self, *flows: Flow[Any], settle: bool = False) -> Flow[Any]:
        """Run ``flows`` concurrently and yield their values as a tuple (in argument order).

        Args:
            *flows: The branches.
            settle: Wait for every branch and yield each one's ``Outcome`` instead of failing fast.
        """
        for i, f in enumerate(flows):
            if not isinstance(f, Flow):
                raise ConfigError(f"par() argument {i} is a {type(f).__name__}, not a Flow")
        return _join(flows, settle=settle, limit=None, index_paths=True, as_tuple=True)

    def map(
        self, fn: Callable[[T], Flow[B]], items: Sequence[T], *, limit: int | None = None
    ) -> Flow[list[B]]:
        """Run ``fn(item)`` for every item concurrently (at most ``limit`` at once); yield the list of
        results in item order. Branch ``i`` runs under the path suffix ``[i]``.

        >>> import anyio
        >>> from agentflow.dsl import pure
        >>> anyio.run(par.map(lambda x: pure(x * x), [1, 2, 3], limit=2).run).value
        [1, 4, 9]
        """
        if limit is not None and limit < 1:
            raise ConfigError(f"par.map limit must be >= 1, got {limit}")
        seq = list(items)

        async def leaf(env: Env, state: State) -> Res:
            try:
                flows = [fn(x) for x in seq]
            except Exception as exc:
                return Err(error_from(exc, env.path), state)
            return await _join(flows, settle=False, limit=limit, index_paths=True, as_tuple=False)._exec(
                env, state
            )

        return Flow(leaf)


par = _Par()
"""Applicative parallel composition; see ``_Par``."""
gather = par
"""Alias of ``par``."""


def race(*flows: Flow[A]) -> Flow[A]:
    """Run flows concurrently; the first ``Ok`` wins and cancels the rest. If every branch fails, the
    result is ``Err(RaceLostError)`` listing each branch's error. The winner's state is kept.

    >>> import anyio
    >>> from agentflow.dsl import pure
    >>> anyio.run(race(pure(1), pure(2)).run).value in (1, 2)
    True
    """
    if not flows:
        raise ConfigError("race() needs at least one flow")

    async def leaf(env: Env, state: State) -> Res:
        n = len(flows)
        logs: list[list[Event]] = [[] for _ in range(n)]
        errors: list[AgentflowError | None] = [None] * n
        winner: list[Ok[Any]] = []

        async with anyio.create_task_group() as tg:

            async def branch(i: int) -> None:
                path = join_path(env.path, f"[{i}]")
                res = await flows[i]._exec(env.branch(logs[i], path), snapshot(state))
                if isinstance(res, Err):
                    errors[i] = res.error
                elif not winner:
                    winner.append(res)
                    tg.cancel_scope.cancel()

            for i in range(n):
                tg.start_soon(branch, i)
        for log in logs:
            env.log.extend(log)
        if winner:
            return winner[0]
        return Err(RaceLostError(env.path, [e for e in errors if e is not None]), state)

    return Flow(leaf)

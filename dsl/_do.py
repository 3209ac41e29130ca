"""Do-notation: ``@flow`` async functions in which ``x = await other_flow`` binds, and ``@step``.

A ``@flow`` body runs with a *frame* (environment + current state) in a context variable. Awaiting a
``Flow`` inside the body runs it against the frame, threads the new state back into the frame, and
either returns the value or short-circuits the body with the ``Err`` (via a ``BaseException`` so a
user's ``except Exception`` cannot swallow it).

Concurrency: a frame belongs to the task that runs the body. Awaiting a flow from another task (a child
of a task group opened in the body) is a ``ConfigError`` that says to use ``par``: two tasks threading
one state would silently lose updates (last writer wins) and number their steps in scheduling order,
which breaks resume. ``par``/``gather``/``par.map`` give each branch its own state snapshot and step
path and merge the states by the declared rules.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import typing
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

import anyio

from . import _flow as _flow_module
from ._errors import AgentflowError, ConfigError
from ._flow import Env, Flow, Res, error_from, named
from ._outcome import Err, Ok, State

if TYPE_CHECKING:
    from ._retry import Backoff

A = TypeVar("A")
P = ParamSpec("P")


class _Frame:
    __slots__ = ("env", "owner", "state")

    def __init__(self, env: Env, state: State) -> None:
        self.env = env
        self.state = state
        self.owner = anyio.get_current_task().id  # the task running the body; only it may bind flows


class _ShortCircuit(BaseException):
    """Carries an ``Err`` out of a ``@flow`` body to its runner."""

    def __init__(self, err: Err) -> None:
        super().__init__()
        self.err = err


_FRAME: contextvars.ContextVar[_Frame | None] = contextvars.ContextVar("agentflow_frame", default=None)


async def await_in_frame(m: Flow[A]) -> A:
    """Run ``m`` inside the enclosing ``@flow`` body's frame (what ``await m`` does)."""
    frame = _FRAME.get()
    if frame is None:
        raise AgentflowError(
            "a Flow was awaited outside a @flow/@step body; run it with `await flow.run(ctx)` "
            "or `agentflow.run(flow)` instead"
        )
    if anyio.get_current_task().id != frame.owner:
        raise _ShortCircuit(
            Err(
                ConfigError(
                    "a Flow was awaited in a task started inside a @flow body (a task group's child); "
                    "flows bound in a body share its state and step names, so they must run in the body's "
                    "own task: run flows concurrently with par(...), gather(...) or par.map(...)",
                    where=frame.env.path or "<root>",
                ),
                frame.state,
            )
        )
    res = await m._exec(frame.env, frame.state)
    frame.state = res.state
    if isinstance(res, Err):
        raise _ShortCircuit(res)
    return res.value  # type: ignore[no-any-return]


def current_scope() -> Env | None:
    """The scope of the innermost ``@flow``/``@step`` body running in this task (or a task it started), if any.

    Code that is not itself a flow but runs inside one (a tool, a memory summarizer) uses it to record
    events and reach the run's context.
    """
    frame = _FRAME.get()
    return frame.env if frame is not None else None


def _first_circuit(group: BaseExceptionGroup[_ShortCircuit]) -> _ShortCircuit:
    first = group.exceptions[0]
    return first if isinstance(first, _ShortCircuit) else _first_circuit(first)


def _body_flow(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], is_async: bool
) -> Flow[Any]:
    async def leaf(env: Env, state: State) -> Res:
        frame = _Frame(env, state)
        token = _FRAME.set(frame)
        try:
            value = await fn(*args, **kwargs) if is_async else fn(*args, **kwargs)
        except _ShortCircuit as sc:
            return sc.err
        except BaseExceptionGroup as group:
            # A task group in the body (``async with create_task_group()``) wraps the short-circuit.
            circuits, rest = group.split(_ShortCircuit)
            if circuits is not None and rest is None:
                return _first_circuit(circuits).err
            if isinstance(group, Exception):
                return Err(error_from(group, env.path), frame.state)
            raise
        except Exception as exc:
            return Err(error_from(exc, env.path), frame.state)
        finally:
            _FRAME.reset(token)
        return Ok(value, frame.state)

    return Flow(leaf)


def _return_type(fn: Callable[..., Any]) -> object:
    """The function's evaluated return annotation, or ``None`` when it has none or cannot be resolved."""
    try:
        return typing.get_type_hints(fn).get("return")
    except Exception:
        return None


def flow(fn: Callable[P, Coroutine[Any, Any, A]]) -> Callable[P, Flow[A]]:
    """Turn an async function into a function returning a ``Flow`` (do-notation).

    Inside the body, ``x = await some_flow`` binds ``some_flow``'s value (typed: ``x`` has the
    flow's value type); the first failing flow short-circuits the body into an ``Err``. Calling the
    decorated function runs nothing: it returns a re-runnable description.

    >>> import anyio
    >>> @flow
    ... async def add_one(x: int) -> int:
    ...     y = await pure(x)
    ...     return y + 1
    >>> anyio.run(add_one(41).run).value
    42
    """

    is_async = inspect.iscoroutinefunction(fn)

    @functools.wraps(fn)
    def make(*args: P.args, **kwargs: P.kwargs) -> Flow[A]:
        return _body_flow(fn, args, kwargs, is_async)

    return make


@overload
def step(fn: Callable[P, Coroutine[Any, Any, A]], /) -> Callable[P, Flow[A]]: ...
@overload
def step(
    *,
    name: str | None = None,
    retry: int | None = None,
    backoff: float | Backoff = 0.0,
    timeout: float | None = None,
    idempotent: bool = True,
) -> Callable[[Callable[P, Coroutine[Any, Any, A]]], Callable[P, Flow[A]]]: ...
def step(
    fn: Callable[P, Coroutine[Any, Any, A]] | None = None,
    /,
    *,
    name: str | None = None,
    retry: int | None = None,
    backoff: float | Backoff = 0.0,
    timeout: float | None = None,
    idempotent: bool = True,
) -> Callable[P, Flow[A]] | Callable[[Callable[P, Coroutine[Any, Any, A]]], Callable[P, Flow[A]]]:
    """Lift an async function into a named step (a span in the trace, a journal key).

    ``@step`` or ``@step(name=..., retry=3, backoff=0.5, timeout=10, idempotent=False)``. The body may
    ``await`` flows like a ``@flow`` body. Each attempt of a retry starts from the step's input state;
    the timeout applies per attempt. With a journal, the step's result is recorded (decoded on resume
    with the function's return annotation); ``idempotent=False`` marks side effects that must never
    run twice.

    >>> import anyio
    >>> @step(retry=2)
    ... async def double(x: int) -> int:
    ...     return 2 * x
    >>> anyio.run(double(21).run).value
    42
    """

    def decorate(f: Callable[P, Coroutine[Any, Any, A]]) -> Callable[P, Flow[A]]:
        step_name = name or f.__name__
        is_async = inspect.iscoroutinefunction(f)
        result_type = _return_type(f)

        @functools.wraps(f)
        def make(*args: P.args, **kwargs: P.kwargs) -> Flow[A]:
            body: Flow[A] = _body_flow(f, args, kwargs, is_async)
            if timeout is not None:
                from ._control import timeout as with_timeout

                body = with_timeout(body, timeout)
            if retry is not None and retry > 1:
                from ._control import retry as with_retry

                body = with_retry(body, attempts=retry, backoff=backoff)
            return named(step_name, body, result_type=result_type, idempotent=idempotent)

        return make

    if fn is not None:
        return decorate(fn)
    return decorate


_flow_module.await_hook = await_in_frame

"""The Ray backend: tool calls and whole sub-flows as Ray tasks, with the DSL's semantics kept.

Three entry points, all needing the ``ray`` extra (``pip install 'agentflow[ray]'``) and a Ray runtime the caller
started (``ray.init(...)``; agentflow never starts or connects to a cluster on its own):

- :func:`ray_step` lifts a function (sync or async) into a named step whose body runs as a Ray task;
- :func:`on_ray` runs a whole sub-flow inside a Ray worker and returns its outcome, state and trace to the caller;
- :class:`RayExecutor` (and :func:`ray_tools`) run the tool executor's tool calls as Ray tasks.

What stays the same as running locally::

    anyio cancellation  --------------->  ray.cancel(ref)  (the remote task is interrupted, not abandoned:
                                          KeyboardInterrupt at its next Python bytecode, so one long C call
                                          finishes first; ``force_cancel=True`` kills the worker instead;
                                          async code and sub-flows get an anyio cancellation, so shields and
                                          ``finally`` blocks behave as in a local run)
    DSL timeout(...) around a step  --->  Err(StepTimeout), the remote task cancelled
    remote exception  ----------------->  Err(StepError) / ToolError keeping the original type and message
                                          (the original exception is ``error.cause`` with the worker traceback
                                          attached as a note)
    named step  ----------------------->  the result is journaled on the driver like any other step

Exceptions cross the process boundary packed (class by reference, ``args`` and picklable attributes), because many
exception classes (ours included) cannot be unpickled through their ``__init__``. Awaiting an object reference uses
the asyncio future Ray provides when anyio runs on asyncio, and a worker thread (``ray.get``) on other backends.
"""

from __future__ import annotations

import concurrent.futures
import functools
import inspect
import signal
import threading
import traceback
import typing
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

import anyio
import anyio.from_thread
import anyio.to_thread
import sniffio

from agentflow.dsl import Context, Err, Event, Flow, Ok, State, StepScope, error_from, named
from agentflow.errors import AgentflowError, ConfigError, StepError, ToolError

from ._executor import Executor
from ._registry import ToolRegistry, ToolView
from ._task import TaskResult
from ._tool import Tool

if TYPE_CHECKING:
    from ray import ObjectRef

__all__ = ["RayExecutor", "await_object_ref", "on_ray", "ray_step", "ray_tools"]

A = TypeVar("A")
T = TypeVar("T")
P = ParamSpec("P")

RayOptions = Mapping[str, object]
"""Options for ``ray.remote(...)`` / ``.options(...)``: ``num_cpus``, ``resources``, ``max_retries``..."""

_WAITERS = 256  # worker threads that may block in ray.get at once (non-asyncio backends only)
_POLL_S = 0.05  # how often a worker's main thread wakes to notice Ray's cancellation interrupt


def _require_ray() -> Any:
    """Import ``ray`` and check that a Ray runtime is running.

    Raises:
        ConfigError: Ray is not installed (names the extra) or ``ray.init`` was not called.
    """
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "running work on Ray needs the 'ray' package; install the extra: pip install 'agentflow[ray]'"
        ) from exc
    if not ray.is_initialized():
        raise ConfigError(
            "Ray is not initialized; call ray.init() (local) or ray.init(address='auto') (a cluster) "
            "before running Ray steps, tools or engine replicas"
        )
    return ray


# -- errors across the process boundary ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PackedError:
    """An exception made safe to pickle: its class by reference, ``args``, picklable attributes, its cause.

    Attributes:
        cls: The exception class (``None`` when the class itself cannot be pickled).
        type_name: The class's qualified name, for messages.
        message: ``str(exc)``.
        args: The exception's ``args`` (left empty when they cannot be pickled).
        attrs: Instance attributes that pickle; nested exceptions are packed too.
        cause: The packed ``__cause__``.
        remote_traceback: The traceback text in the worker.
    """

    cls: type[BaseException] | None
    type_name: str
    message: str
    args: tuple[object, ...] = ()
    attrs: dict[str, object] = field(default_factory=dict)
    cause: PackedError | None = None
    remote_traceback: str = ""


def _picklable(value: object) -> bool:
    try:
        from ray import cloudpickle  # the serializer Ray itself uses

        cloudpickle.dumps(value)  # type: ignore[no-untyped-call]
    except Exception:
        return False
    return True


def pack_error(exc: BaseException, *, depth: int = 0) -> PackedError:
    """Pack ``exc`` (in the worker) so that :func:`unpack_error` rebuilds it on the driver."""
    attrs: dict[str, object] = {}
    for key, value in getattr(exc, "__dict__", {}).items():
        if isinstance(value, BaseException):
            if depth < 8:
                attrs[key] = pack_error(value, depth=depth + 1)
        elif _picklable(value):
            attrs[key] = value
    cause = exc.__cause__
    return PackedError(
        cls=type(exc) if _picklable(type(exc)) else None,
        type_name=type(exc).__qualname__,
        message=str(exc),
        args=exc.args if _picklable(exc.args) else (),
        attrs=attrs,
        cause=pack_error(cause, depth=depth + 1) if cause is not None and depth < 8 else None,
        remote_traceback="".join(traceback.format_exception(exc)) if depth == 0 else "",
    )


def unpack_error(packed: PackedError) -> BaseException:
    """Rebuild a packed exception without calling its ``__init__`` (same class, args and attributes).

    An exception whose class could not travel comes back as a ``RuntimeError`` naming the original type.
    """
    exc: BaseException
    try:
        if packed.cls is None:
            raise TypeError(packed.type_name)
        exc = packed.cls.__new__(packed.cls)
        exc.args = packed.args or (packed.message,)
        for key, value in packed.attrs.items():
            setattr(exc, key, unpack_error(value) if isinstance(value, PackedError) else value)
    except Exception:
        exc = RuntimeError(f"{packed.type_name}: {packed.message}")
    if packed.cause is not None:
        exc.__cause__ = unpack_error(packed.cause)
    elif isinstance(getattr(exc, "cause", None), BaseException):
        exc.__cause__ = exc.cause  # type: ignore[attr-defined]
    if packed.remote_traceback:
        exc.add_note(f"raised in a Ray worker:\n{packed.remote_traceback.rstrip()}")
    return exc


def _ray_failure(exc: BaseException, path: str) -> AgentflowError:
    """A Ray-level failure (worker crash, actor death, object lost) as an error value."""
    err = StepError(path, exc)
    err.__cause__ = exc
    return err


# -- awaiting object references -----------------------------------------------------------------------------------


_waiter_limiters: dict[object, anyio.CapacityLimiter] = {}


def _waiters() -> anyio.CapacityLimiter:
    token = anyio.lowlevel.current_token()
    key = getattr(token, "native_token", token)
    limiter = _waiter_limiters.get(key)
    if limiter is None:
        _waiter_limiters.clear()  # limiters of finished event loops are of no use
        limiter = _waiter_limiters[key] = anyio.CapacityLimiter(_WAITERS)
    return limiter


async def await_object_ref(ref: ObjectRef[A], *, force_cancel: bool = False) -> A:
    """Wait for a Ray object reference from anyio code; cancelling the wait cancels the remote task.

    On anyio's asyncio backend this awaits the future Ray completes (no thread); on other backends it waits in a
    worker thread with ``ray.get``.

    Args:
        ref: The reference a ``.remote()`` call returned.
        force_cancel: Kill the worker process on cancellation instead of interrupting the task (Ray's
            ``force=True``; not allowed for actor tasks).

    Returns:
        The object's value.

    Raises:
        ray.exceptions.RayError: The task failed (``RayTaskError``), its worker or actor died, or it was cancelled
            by someone else.
    """
    ray = _require_ray()
    try:
        if sniffio.current_async_library() == "asyncio":
            import asyncio

            return typing.cast(A, await asyncio.wrap_future(ref.future()))
        return typing.cast(
            A, await anyio.to_thread.run_sync(ray.get, ref, abandon_on_cancel=True, limiter=_waiters())
        )
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            try:
                ray.cancel(ref, force=force_cancel)
            except Exception:  # the task finished meanwhile, or an actor task refused force=True
                ray.cancel(ref)
        raise


# -- worker side --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Returned:
    """What a remote call sends back: a value or a packed exception."""

    ok: bool
    value: object = None
    error: PackedError | None = None


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _run_async(fn: Callable[..., Awaitable[T]], *args: object) -> T:
    """Run async code in the worker on an anyio event loop in a helper thread, with structured cancellation.

    Ray cancels a task by raising ``KeyboardInterrupt`` in the worker's main thread. Arriving inside an event loop
    it would tear the loop down with native cancellations that anyio's shielded scopes cannot hold against. Here
    the main thread only waits (in short slices, so the interrupt is seen); on the interrupt it cancels the task
    through the portal (an anyio cancellation: shields, ``finally`` blocks and task groups behave as in a local
    run), waits for it to finish, then lets the interrupt end the Ray task.
    """
    with anyio.from_thread.start_blocking_portal() as portal:
        future = portal.start_task_soon(fn, *args)
        while True:
            try:
                return future.result(timeout=_POLL_S)
            except concurrent.futures.TimeoutError:
                continue
            except KeyboardInterrupt:
                future.cancel()
                concurrent.futures.wait([future])
                raise


def _interruptible() -> None:
    """Let Ray's cancellation reach this task.

    Ray cancels a running task by raising ``KeyboardInterrupt`` in the worker's main thread (a simulated
    SIGINT), which Python ignores while SIGINT is ignored. Workers inherit that from a driver started in the
    background (``cmd &``, nohup, many CI runners), and then a cancelled or timed-out step would keep running
    to its end. Restore Python's default handler in such a worker.
    """
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    ):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _call_in_worker(
    fn: Callable[..., object], args: tuple[object, ...], kwargs: dict[str, object]
) -> _Returned:
    """Run ``fn`` in the Ray worker (an async function on a fresh anyio loop); never raises an ``Exception``."""
    _interruptible()
    try:
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):
            value = _run_async(_await, value)
    except Exception as exc:
        return _Returned(False, error=pack_error(exc))
    return _Returned(True, value)


@dataclass(frozen=True)
class _FlowReturned:
    """What a remote sub-flow sends back: its outcome, state and trace (typed events; they pickle)."""

    ok: bool
    value: object
    state: State
    events: tuple[Event, ...]
    error: PackedError | None = None


def _flow_in_worker(
    factory: Callable[..., Flow[object]],
    args: tuple[object, ...],
    kwargs: dict[str, object],
    context: Callable[[], Context] | None,
    run_id: str,
    path: str,
    state: State,
) -> _FlowReturned:
    """Build and run the sub-flow in the worker at the caller's step path, so its events need no re-pathing."""
    _interruptible()
    log: list[Event] = []
    try:
        ctx = context() if context is not None else Context(run_id=run_id)
        res = _run_async(functools.partial(factory(*args, **kwargs).run, ctx, state, path=path))
        log.extend(res.trace)
    except Exception as exc:
        res = Err(error_from(exc, path), state)
    events = tuple(log)
    if isinstance(res, Ok):
        return _FlowReturned(True, res.value, res.state, events)
    return _FlowReturned(False, None, res.state, events, pack_error(res.error))


# -- driver side: steps and sub-flows -----------------------------------------------------------------------------


class _Remote:
    """A ``ray.remote`` function made on first use (so that importing this module never imports Ray)."""

    def __init__(self, fn: Callable[..., object], options: RayOptions | None) -> None:
        self._fn = fn
        self._options = dict(options or {})
        self._remote: Any = None  # the ray RemoteFunction; lives as long as this object

    def submit(self, *args: object) -> ObjectRef[Any]:
        ray = _require_ray()
        if self._remote is None:
            self._remote = ray.remote(**self._options)(self._fn) if self._options else ray.remote(self._fn)
        return typing.cast("ObjectRef[Any]", self._remote.remote(*args))


def _ray_leaf(
    remote: _Remote,
    fn: Callable[..., object],
    args: tuple[object, ...],
    kwargs: dict[str, object],
    force: bool,
) -> Flow[Any]:
    async def leaf(env: StepScope, state: State) -> Ok[Any] | Err:
        try:
            ref = remote.submit(fn, args, kwargs)
        except AgentflowError as exc:
            return Err(exc.at(env.path or "<root>"), state)
        except Exception as exc:
            return Err(error_from(exc, env.path), state)
        try:
            returned: _Returned = await await_object_ref(ref, force_cancel=force)
        except Exception as exc:
            return Err(_ray_failure(exc, env.path), state)
        if returned.ok:
            return Ok(returned.value, state)
        assert returned.error is not None
        original = unpack_error(returned.error)
        if isinstance(original, Exception):
            return Err(error_from(original, env.path), state)
        return Err(_ray_failure(original, env.path), state)

    return Flow(leaf)


@overload
def ray_step(fn: Callable[P, Coroutine[Any, Any, A]], /) -> Callable[P, Flow[A]]: ...
@overload
def ray_step(fn: Callable[P, A], /) -> Callable[P, Flow[A]]: ...
@overload
def ray_step(
    *,
    name: str | None = None,
    retry: int | None = None,
    backoff: float = 0.0,
    timeout: float | None = None,
    idempotent: bool = True,
    options: RayOptions | None = None,
    force_cancel: bool = False,
) -> Callable[[Callable[P, Coroutine[Any, Any, A]] | Callable[P, A]], Callable[P, Flow[A]]]: ...
def ray_step(
    fn: Callable[P, Coroutine[Any, Any, A]] | Callable[P, A] | None = None,
    /,
    *,
    name: str | None = None,
    retry: int | None = None,
    backoff: float = 0.0,
    timeout: float | None = None,
    idempotent: bool = True,
    options: RayOptions | None = None,
    force_cancel: bool = False,
) -> (
    Callable[P, Flow[A]]
    | Callable[[Callable[P, Coroutine[Any, Any, A]] | Callable[P, A]], Callable[P, Flow[A]]]
):
    """Lift a function into a named step whose body runs as a Ray task.

    ``@ray_step`` or ``@ray_step(name=..., retry=3, timeout=10, options={"num_cpus": 2})``. The function (sync, or
    async: it then runs on a fresh event loop in the worker) and its arguments must pickle; it must not ``await``
    flows. Cancelling the step (a ``timeout``, a failing ``par`` sibling, the caller) cancels the Ray task. An
    exception raised remotely becomes ``Err(StepError)`` whose ``cause`` is the original exception (its type,
    message and attributes; the worker traceback is attached as a note), and an ``AgentflowError`` raised
    remotely is kept as it is. Like ``@step``, the result is journaled under the step's path.

    Args:
        fn: The function to run remotely.
        name: The step name (default: the function's name).
        retry: Total attempts (each a new Ray task) when it fails with a runtime failure.
        backoff: Seconds between attempts.
        timeout: Seconds per attempt; the Ray task is cancelled when it runs out (``Err(StepTimeout)``).
        idempotent: ``False`` for side effects that must never run twice on resume.
        options: ``ray.remote`` options (``num_cpus``, ``resources``, ``runtime_env``...).
        force_cancel: Kill the worker on cancellation instead of interrupting it.

    Example:
        ``@ray_step(timeout=30)`` on ``def crunch(n: int) -> int`` makes ``crunch(10)`` a ``Flow[int]``.
    """

    def decorate(f: Callable[P, Coroutine[Any, Any, A]] | Callable[P, A]) -> Callable[P, Flow[A]]:
        step_name: str = name or str(getattr(f, "__name__", "ray_step"))
        remote = _Remote(_call_in_worker, options)
        try:
            result_type = typing.get_type_hints(f).get("return")
        except Exception:
            result_type = None

        @functools.wraps(f)
        def make(*args: P.args, **kwargs: P.kwargs) -> Flow[A]:
            body: Flow[A] = _ray_leaf(remote, f, tuple(args), dict(kwargs), force_cancel)
            if timeout is not None:
                body = body.timeout(timeout)
            if retry is not None and retry > 1:
                body = body.retry(attempts=retry, backoff=backoff)
            return named(step_name, body, result_type=result_type, idempotent=idempotent)

        return make

    if fn is not None:
        return decorate(fn)
    return decorate


def on_ray(
    factory: Callable[..., Flow[A]],
    *args: object,
    name: str | None = None,
    context: Callable[[], Context] | None = None,
    options: RayOptions | None = None,
    result_type: object = None,
    idempotent: bool = True,
    force_cancel: bool = False,
    **kwargs: object,
) -> Flow[A]:
    """Run the sub-flow ``factory(*args, **kwargs)`` inside a Ray worker, as one named step of the caller.

    The factory, its arguments and the current state are sent to the worker, which builds the flow and runs it
    at the caller's step path; its value, final state and trace events come back, so the trace reads as if the
    sub-flow ran locally. The step's result is journaled on the driver (the sub-flow's own inner steps run
    without a journal in the worker, so a resume replays or re-runs the sub-flow as a whole). Errors are values,
    cancellation and timeouts cancel the Ray task (see the module docstring).

    Args:
        factory: A function returning the flow (e.g. a ``@flow`` function); it must pickle.
        *args: Arguments for ``factory``.
        name: The step name (default: the factory's name).
        context: Builds the worker's ``Context`` (for example a ``RunContext`` with its own engine); default
            ``Context(run_id=<the caller's run id>)``. It must pickle.
        options: ``ray.remote`` options.
        result_type: The value's type, used by a journal to decode a replayed result.
        idempotent: ``False`` for side effects that must never run twice on resume.
        force_cancel: Kill the worker on cancellation instead of interrupting it.
        **kwargs: Keyword arguments for ``factory``.
    """
    step_name: str = name or str(getattr(factory, "__name__", "on_ray"))
    remote = _Remote(_flow_in_worker, options)

    async def leaf(env: StepScope, state: State) -> Ok[Any] | Err:
        try:
            ref = remote.submit(factory, args, kwargs, context, env.ctx.run_id, env.path, state)
        except AgentflowError as exc:
            return Err(exc.at(env.path or "<root>"), state)
        except Exception as exc:
            return Err(error_from(exc, env.path), state)
        try:
            returned: _FlowReturned = await await_object_ref(ref, force_cancel=force_cancel)
        except Exception as exc:
            return Err(_ray_failure(exc, env.path), state)
        env.log.extend(returned.events)
        if returned.ok:
            return Ok(returned.value, returned.state)
        assert returned.error is not None
        original = unpack_error(returned.error)
        if isinstance(original, Exception):
            return Err(error_from(original, env.path), returned.state)
        return Err(_ray_failure(original, env.path), returned.state)

    return named(step_name, Flow(leaf), result_type=result_type, idempotent=idempotent)


# -- the tool executor on Ray -------------------------------------------------------------------------------------


class _RemoteToolFunction:
    """A tool implementation that runs the original function as a Ray task (async from the driver's view)."""

    def __init__(self, tool_name: str, fn: Callable[..., object], remote: _Remote, force: bool) -> None:
        self._tool_name = tool_name
        self._fn = fn
        self._remote = remote
        self._force = force
        functools.update_wrapper(self, fn)

    async def __call__(self, *args: object, **kwargs: object) -> object:
        ref = self._remote.submit(self._fn, args, kwargs)
        try:
            returned: _Returned = await await_object_ref(ref, force_cancel=self._force)
        except AgentflowError:
            raise
        except Exception as exc:
            raise ToolError(self._tool_name, f"Ray task failed: {type(exc).__name__}: {exc}") from exc
        if returned.ok:
            return returned.value
        assert returned.error is not None
        raise unpack_error(returned.error)


def ray_tools(
    tools: ToolRegistry | ToolView | Iterable[Tool],
    *,
    options: RayOptions | None = None,
    force_cancel: bool = False,
) -> ToolRegistry:
    """A registry of the same tools whose implementations run as Ray tasks.

    Names, schemas, argument validation, timeouts, concurrency limits and retries stay on the driver (a timeout
    or cancellation cancels the Ray task); only the function call is remote. A remote exception reaches the
    executor as the original exception, so the task's ``ToolError`` reads ``raised ValueError: ...`` as locally.

    Args:
        tools: The tools (a registry, an allowlist view or tools).
        options: ``ray.remote`` options for every tool call.
        force_cancel: Kill the worker on cancellation instead of interrupting it.

    Raises:
        ConfigError: A tool has no implementation (a schema-only tool cannot run anywhere).
    """
    remote = _Remote(_call_in_worker, options)
    registry = ToolRegistry()
    for t in tools:
        fn = t.fn
        if fn is None:
            raise ConfigError(
                f"tool {t.name!r} has no implementation to run on Ray; pass fn= to Tool.from_spec or "
                "Tool.with_options"
            )
        registry.register(t.with_options(fn=_RemoteToolFunction(t.name, fn, remote, force_cancel)))
    return registry


class RayExecutor(Executor):
    """The parallel function-call executor with every tool call running as a Ray task.

    Same scheduling, references, observations and cancellation as :class:`Executor` (a cancelled or timed-out
    task cancels its Ray task); see :func:`ray_tools` for what runs where. ``ray.init`` must have been called.

    Args:
        tools: Where task tool names are looked up.
        max_concurrency: At most this many tool calls at once (None: no cap beyond the cluster's CPUs).
        timeout: Seconds each task may take.
        on_result: Called with each result as it is recorded.
        options: ``ray.remote`` options for every tool call (``num_cpus``, ``resources``...).
        force_cancel: Kill the worker on cancellation instead of interrupting it.
    """

    def __init__(
        self,
        tools: ToolRegistry | ToolView,
        *,
        max_concurrency: int | None = None,
        timeout: float | None = None,
        on_result: Callable[[TaskResult], None] | None = None,
        options: RayOptions | None = None,
        force_cancel: bool = False,
    ) -> None:
        super().__init__(
            ray_tools(tools, options=options, force_cancel=force_cancel),
            max_concurrency=max_concurrency,
            timeout=timeout,
            on_result=on_result,
        )

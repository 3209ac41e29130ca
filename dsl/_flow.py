"""The ``Flow`` monad transformer: Reader (``Context``) + State (pydantic model) + Except (``Err``) +
Writer (trace events) over anyio.

A ``Flow[A]`` is a lazy, re-runnable description. Running it (``await flow.run(ctx, state)``) gives an
``Outcome[A]``. Internally a flow is either a *leaf* (an async function of the environment and the
state) or a *bind* node (a flow and a continuation). Bind chains are run by a trampoline, so chains of
any length and recursion through continuations never grow the Python stack.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, Generic, Never, TypeAlias, TypeVar, overload

from pydantic import BaseModel, JsonValue

from ._context import Context
from ._errors import AgentflowError, ConfigError, StateTypeError, StepError
from ._events import Event, Log, StepEnded, StepReplayed, StepStarted
from ._outcome import Err, Ok, State

if TYPE_CHECKING:
    from ._control import RetryOn
    from ._retry import Backoff

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C", bound=Context)
S = TypeVar("S")
A_co = TypeVar("A_co", covariant=True)


EventSink: TypeAlias = Callable[[Event], None]
"""Receives every event of a run the moment it is recorded (``agentflow.stream`` uses one)."""


class Env:
    """Per-run (and per-branch) interpreter environment.

    Leaf flows (``leaf``) receive it as their scope: they read the run's context and step path from it and
    record events with ``emit``.

    Attributes:
        ctx: The Reader value; shared by every branch of a run.
        log: The Writer's event list for this branch; a ``par`` branch gets its own list, appended
            to the parent's in branch order at the join.
        path: The current step path (``a/b[2]``).
        sink: Receives every event as it is recorded, across all branches (``None``: nobody listens).
    """

    __slots__ = ("counts", "ctx", "log", "path", "sink")

    def __init__(self, ctx: Context, log: list[Event], path: str, sink: EventSink | None = None) -> None:
        self.ctx = ctx
        self.log = log
        self.path = path
        self.sink = sink
        self.counts: dict[str, int] | None = None  # occurrences of each child step name; made on first use

    def emit(self, event: Event) -> None:
        """Record ``event`` in this branch's trace (and pass it to the run's sink, if any)."""
        self.log.append(event)
        if self.sink is not None:
            self.sink(event)

    def branch(self, log: list[Event], path: str) -> Env:
        """A child scope at ``path`` that records into ``log`` (same context and sink)."""
        return Env(self.ctx, log, path, self.sink)

    def fresh(self) -> Env:
        """The same scope with its step-name counters reset (each retry attempt gets one)."""
        return Env(self.ctx, self.log, self.path, self.sink)

    def child_name(self, name: str) -> str:
        """The path segment of the next child step called ``name``: ``name``, then ``name[1]``, ``name[2]``..."""
        counts = self.counts
        if counts is None:
            counts = self.counts = {}
        n = counts.get(name, 0)
        counts[name] = n + 1
        return name if n == 0 else f"{name}[{n}]"


Res: TypeAlias = "Ok[Any] | Err"
LeafFn: TypeAlias = Callable[[Env, State], Awaitable["Ok[Any] | Err"]]


await_hook: Callable[[Flow[Any]], Coroutine[Any, Any, Any]] | None = None
"""Set by ``_do`` at import: runs a flow inside the enclosing ``@flow`` body's frame."""


def error_from(exc: Exception, path: str) -> AgentflowError:
    """Turn an exception raised by user code into an ``AgentflowError`` that names where it happened.

    A task group's ``ExceptionGroup`` whose errors are all ``AgentflowError``s (say, concurrent LLM calls
    refused by a spent token budget) becomes its first error, with a note counting the others, so that
    callers can still match on the error's type; any other group is wrapped in a ``StepError``.
    """
    if isinstance(exc, AgentflowError):
        return exc.at(path or "<root>")
    if isinstance(exc, ExceptionGroup):
        leaves = _leaves(exc)
        if leaves and all(isinstance(e, AgentflowError) for e in leaves):
            first = leaves[0]
            assert isinstance(first, AgentflowError)
            if len(leaves) > 1:
                first.add_note(f"{len(leaves) - 1} more error(s) in the same task group: {leaves[1:]!r}")
            return first.at(path or "<root>")
    err = StepError(path, exc)
    err.__cause__ = exc
    return err


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


class Flow(Generic[A_co]):
    """A lazy, typed, re-runnable workflow that produces an ``A_co``.

    Build flows with the combinators (``pure``, ``par``, ``retry``...) or with ``@flow`` / ``@step``
    do-notation; run them with ``await flow.run(ctx, state)``.

    ``Flow(fn)`` makes a primitive flow from ``async fn(scope: StepScope, state) -> Ok | Err`` (see also
    ``leaf`` for primitives that leave the state alone): libraries built on the DSL write their
    effects this way.

    >>> import anyio
    >>> anyio.run((pure(20) >> (lambda x: pure(x + 1))).map(lambda x: x * 2).run)
    Ok(value=42, state=None, trace=())
    """

    __slots__ = ("_k", "_leaf", "_prev")

    _leaf: LeafFn | None
    _prev: Flow[Any] | None
    _k: Callable[[Any], Flow[Any]] | None

    def __init__(self, leaf: LeafFn) -> None:
        self._leaf = leaf
        self._prev = None
        self._k = None

    @classmethod
    def _bind_node(cls, prev: Flow[Any], k: Callable[[Any], Flow[Any]]) -> Flow[Any]:
        node: Flow[Any] = cls.__new__(cls)
        node._leaf = None
        node._prev = prev
        node._k = k
        return node

    async def _exec(self, env: Env, state: State) -> Ok[Any] | Err:
        """Interpret this flow. Internal: combinators call this; users call ``run``.

        Invariant: a bind node never holds a leaf, and continuations are popped in the order they
        were bound, so ``(m >> f) >> g`` and ``m >> (lambda a: f(a) >> g)`` run identically.
        """
        if self._leaf is not None:
            return await self._leaf(env, state)
        stack: list[Callable[[Any], Flow[Any]]] = []
        cur: Flow[Any] = self
        while True:
            while cur._leaf is None:
                assert cur._k is not None and cur._prev is not None
                stack.append(cur._k)
                cur = cur._prev
            res = await cur._leaf(env, state)
            if not stack or isinstance(res, Err):
                return res
            state = res.state
            k = stack.pop()
            try:
                nxt: object = k(res.value)
            except Exception as exc:
                return Err(error_from(exc, env.path), state)
            if not isinstance(nxt, Flow):
                return Err(
                    StepError(
                        env.path,
                        TypeError(f"a bind continuation must return a Flow, got {type(nxt).__name__}"),
                    ),
                    state,
                )
            cur = nxt

    async def run(
        self,
        ctx: Context | None = None,
        state: State = None,
        *,
        sink: EventSink | None = None,
        path: str = "",
    ) -> Ok[A_co] | Err:
        """Run the flow and return its outcome with the full trace.

        Args:
            ctx: The Reader environment (a fresh ``Context()`` when omitted).
            state: The initial state (a pydantic model) or ``None``.
            sink: Called with every event the moment it is recorded (in any branch); default: the
                context's ``on_event``.
            path: The step path to run at (a sub-flow run elsewhere, e.g. on a Ray worker, continues its
                caller's path so its events and journal keys line up).
        """
        context = ctx if ctx is not None else Context()
        env = Env(context, [], path, sink if sink is not None else context.on_event)
        res = await self._exec(env, state)
        trace = tuple(env.log)
        if isinstance(res, Err):
            return Err(res.error, res.state, trace)
        return Ok(res.value, res.state, trace)

    # -- do-notation ---------------------------------------------------------------------------
    def __await__(self) -> Generator[Any, None, A_co]:
        """Bind inside a ``@flow`` body: ``x = await other_flow`` gives ``other_flow``'s value."""
        hook = await_hook
        if hook is None:
            from ._do import await_in_frame

            hook = await_in_frame
        return hook(self).__await__()

    # -- method forms of the core combinators ------------------------------------------------
    def map(self, f: Callable[[A_co], B]) -> Flow[B]:
        """Apply a plain function to the value.

        >>> import anyio
        >>> anyio.run(pure(2).map(str).run).value
        '2'
        """
        return Flow._bind_node(self, lambda a: pure(f(a)))

    def bind(self, f: Callable[[A_co], Flow[B]]) -> Flow[B]:
        """Sequence: run this flow, feed its value to ``f``, run the flow ``f`` returns."""
        return Flow._bind_node(self, f)

    @overload
    def __rshift__(self, other: Flow[B]) -> Flow[B]: ...
    @overload
    def __rshift__(self, other: Callable[[A_co], Flow[B]]) -> Flow[B]: ...
    def __rshift__(self, other: Flow[B] | Callable[[A_co], Flow[B]]) -> Flow[B]:
        """``m >> f`` is ``bind``; ``m >> n`` (a Flow) is ``then``."""
        if isinstance(other, Flow):
            return self.then(other)
        return Flow._bind_node(self, other)

    def then(self, other: Flow[B]) -> Flow[B]:
        """Run this flow, discard its value, then run ``other``."""
        return Flow._bind_node(self, lambda _: other)

    def named(self, name: str) -> Flow[A_co]:
        """Give this flow a step name: a span in the trace and a journal key."""
        return named(name, self)

    def retry(
        self,
        attempts: int = 3,
        backoff: float | Backoff = 0.0,
        on: RetryOn = None,
    ) -> Flow[A_co]:
        """Method form of ``retry``."""
        from ._control import retry

        return retry(self, attempts=attempts, backoff=backoff, on=on)

    def timeout(self, seconds: float) -> Flow[A_co]:
        """Method form of ``timeout``."""
        from ._control import timeout

        return timeout(self, seconds)

    def recover(self, handler: Callable[[AgentflowError], Flow[B]]) -> Flow[A_co | B]:
        """Method form of ``recover``."""
        from ._control import recover

        return recover(self, handler)

    def __repr__(self) -> str:
        return "Flow(bind)" if self._leaf is None else f"Flow({getattr(self._leaf, '__qualname__', 'leaf')})"


# -- primitive flows ----------------------------------------------------------------------------


def pure(value: A) -> Flow[A]:
    """A flow that yields ``value`` and touches nothing.

    >>> import anyio
    >>> anyio.run(pure("x").run).value
    'x'
    """

    async def leaf(env: Env, state: State) -> Res:
        return Ok(value, state)

    return Flow(leaf)


def fail(error: AgentflowError) -> Flow[Never]:
    """A flow that fails with ``error``.

    >>> import anyio
    >>> anyio.run(fail(AgentflowError("no")).run).error.message
    'no'
    """

    async def leaf(env: Env, state: State) -> Res:
        return Err(error, state)

    return Flow(leaf)


def fmap(f: Callable[[A], B], m: Flow[A]) -> Flow[B]:
    """Function form of ``Flow.map`` (exported as ``map``)."""
    return m.map(f)


def bind(m: Flow[A], f: Callable[[A], Flow[B]]) -> Flow[B]:
    """Function form of ``Flow.bind`` / ``>>``."""
    return m.bind(f)


def then(m: Flow[Any], n: Flow[B]) -> Flow[B]:
    """Function form of ``Flow.then``."""
    return m.then(n)


def from_async(fn: Callable[[], Awaitable[A]]) -> Flow[A]:
    """Lift a zero-argument async function into a flow (called anew on every run).

    Exceptions become ``Err(StepError)``; ``AgentflowError`` subclasses are kept as they are.
    """

    async def leaf(env: Env, state: State) -> Res:
        try:
            value = await fn()
        except Exception as exc:
            return Err(error_from(exc, env.path), state)
        return Ok(value, state)

    return Flow(leaf)


# -- Reader -----------------------------------------------------------------------------------


@overload
def ask() -> Flow[Context]: ...
@overload
def ask(kind: type[C]) -> Flow[C]: ...
def ask(kind: type[Context] | None = None) -> Flow[Context]:
    """The run's ``Context`` (checked to be an instance of ``kind`` when given)."""

    async def leaf(env: Env, state: State) -> Res:
        if kind is not None and not isinstance(env.ctx, kind):
            return Err(
                StateTypeError(
                    f"the run context is a {type(env.ctx).__name__}, but a step asked for {kind.__name__}; "
                    f"run the flow with a {kind.__name__}",
                    where=env.path or "<root>",
                ),
                state,
            )
        return Ok(env.ctx, state)

    return Flow(leaf)


def deps(kind: type[S]) -> Flow[S]:
    """The user dependencies of the run, checked to be a ``kind``."""

    async def leaf(env: Env, state: State) -> Res:
        value = env.ctx.deps
        if not isinstance(value, kind):
            return Err(
                StateTypeError(
                    f"the run's deps are {type(value).__name__}, but a step asked for {kind.__name__}; "
                    f"pass Context(deps=<a {kind.__name__}>)",
                    where=env.path or "<root>",
                ),
                state,
            )
        return Ok(value, state)

    return Flow(leaf)


def current_path() -> Flow[str]:
    """The current step path (``""`` at the root)."""

    async def leaf(env: Env, state: State) -> Res:
        return Ok(env.path, state)

    return Flow(leaf)


# -- State --------------------------------------------------------------------------------------

M = TypeVar("M")


def get_state(kind: type[M]) -> Flow[M]:
    """The current state, checked to be a ``kind``."""

    async def leaf(env: Env, state: State) -> Res:
        current = state
        if not isinstance(current, kind):
            return Err(
                StateTypeError(
                    f"the run state is {type(state).__name__}, but a step asked for {kind.__name__}; "
                    f"start the run with state={kind.__name__}(...)",
                    where=env.path or "<root>",
                ),
                state,
            )
        return Ok(current, state)

    return Flow(leaf)


def put(new_state: State) -> Flow[None]:
    """Replace the state."""

    async def leaf(env: Env, state: State) -> Res:
        return Ok(None, new_state)

    return Flow(leaf)


SM = TypeVar("SM", bound=BaseModel)


def modify(kind: type[SM], f: Callable[[SM], SM]) -> Flow[SM]:
    """Replace the state with ``f(state)`` (``state`` checked to be a ``kind``); yields the new state."""
    return get_state(kind).bind(lambda s: _put_value(f(s)))


def _put_value(s: SM) -> Flow[SM]:
    async def leaf(env: Env, state: State) -> Res:
        return Ok(s, s)

    return Flow(leaf)


def update(**fields: object) -> Flow[None]:
    """Set state fields by name (``update(count=3)``), keeping the model type; validates the result."""

    async def leaf(env: Env, state: State) -> Res:
        if state is None:
            return Err(
                StateTypeError(
                    f"update({', '.join(fields)}) needs a state model, but the run has none; "
                    "start the run with state=YourModel()",
                    where=env.path or "<root>",
                ),
                state,
            )
        unknown = [f for f in fields if f not in type(state).model_fields]
        if unknown:
            return Err(
                StateTypeError(
                    f"state {type(state).__name__} has no field(s) {unknown}; "
                    f"fields are {sorted(type(state).model_fields)}",
                    where=env.path or "<root>",
                ),
                state,
            )
        try:
            new = type(state).model_validate({**dict(state), **fields})
        except Exception as exc:
            return Err(error_from(exc, env.path), state)
        return Ok(None, new)

    return Flow(leaf)


# -- Writer -------------------------------------------------------------------------------------


def tell(name: str, **data: JsonValue) -> Flow[None]:
    """Record a ``Log`` event named ``name`` with ``data`` (JSON-compatible values) in the trace."""

    async def leaf(env: Env, state: State) -> Res:
        env.emit(Log(path=env.path, time=time.time(), name=name, data=data))
        return Ok(None, state)

    return Flow(leaf)


def emit(event: Event) -> Flow[None]:
    """Record ``event`` in the trace (for producers of typed events; workflows use ``tell``)."""

    async def leaf(env: Env, state: State) -> Res:
        env.emit(event)
        return Ok(None, state)

    return Flow(leaf)


def leaf(fn: Callable[[Env], Awaitable[A]]) -> Flow[A]:
    """A flow from an async function of the step's scope (an ``Env``: the run's context, the step path, and
    ``emit`` for events); what it returns is the value, what it raises becomes ``Err`` (``AgentflowError``
    subclasses as they are, other exceptions as ``StepError``). The state passes through unchanged.

    This is how libraries built on the DSL (engines' LLM calls, tool executors) write primitive flows.
    """

    async def run_leaf(env: Env, state: State) -> Res:
        try:
            value = await fn(env)
        except Exception as exc:
            return Err(error_from(exc, env.path), state)
        return Ok(value, state)

    return Flow(run_leaf)


def join_path(parent: str, name: str) -> str:
    """``a`` + ``b`` -> ``a/b``. Parallel branches are their own segment (``a/[2]/b``) so they never collide
    with the ``name[n]`` numbering of repeated steps."""
    if not parent:
        return name
    return f"{parent}/{name}"


def named(
    name: str,
    inner: Flow[A],
    *,
    result_type: object = None,
    idempotent: bool = True,
) -> Flow[A]:
    """Run ``inner`` as a named step: its path gets ``/name`` (``name[n]`` for the n-th repeat in the same
    parent), ``step.start``/``step.end`` events (with duration and status) bracket it in the trace, and
    when the run has a journal the step's result is recorded and replayed on resume.

    Args:
        name: The step name (no ``/``).
        inner: The flow to run.
        result_type: The value's type, used by the journal to decode a replayed result (``@step`` fills
            it from the return annotation).
        idempotent: ``False`` for steps with side effects that must never run twice; the journal refuses
            to re-run such a step that started but did not commit.
    """
    if not name or "/" in name:
        raise ConfigError(f"step name {name!r} must be non-empty and contain no '/' (nest named() for paths)")

    async def leaf(env: Env, state: State) -> Res:
        path = join_path(env.path, env.child_name(name))
        log = env.log
        journal = env.ctx.journal
        t0 = time.time()
        if journal is not None:
            try:
                hit = await journal.replay(path, name, result_type, state)
                refusal = None if hit is not None else await journal.begin(path, name, idempotent)
            except AgentflowError as exc:
                return Err(exc.at(path), state)
            if hit is not None:
                env.emit(StepReplayed(path=path, time=t0))
                return hit
            if refusal is not None:
                return Err(refusal.at(path), state)
        env.emit(StepStarted(path=path, time=t0))
        res = await inner._exec(env.branch(log, path), state)
        if journal is not None and isinstance(res, Ok):
            try:
                await journal.commit(path, name, res.value, res.state, result_type)
            except AgentflowError as exc:
                res = Err(exc.at(path), state)
        t1 = time.time()
        if isinstance(res, Err):
            env.emit(
                StepEnded(
                    path=path,
                    time=t1,
                    ok=False,
                    seconds=t1 - t0,
                    error_type=type(res.error).__name__,
                    error=str(res.error),
                )
            )
        else:
            env.emit(StepEnded(path=path, time=t1, ok=True, seconds=t1 - t0))
        return res

    return Flow(leaf)

"""Control combinators: ``retry``, ``timeout``, ``recover``, ``when``/``branch``, ``loop``, ``rate_limit``."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import anyio

from ._errors import AgentflowError, ConfigError, LoopLimitError, RuntimeFailure, StepTimeout
from ._events import RetryScheduled, TimedOut
from ._flow import Env, Flow, Res, error_from
from ._outcome import Err, Ok, State

A = TypeVar("A")
B = TypeVar("B")

RetryOn: TypeAlias = (
    type[AgentflowError] | tuple[type[AgentflowError], ...] | Callable[[AgentflowError], bool] | None
)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: attempt ``n`` (1-based) waits ``min(max, initial * factor**(n-1))``,
    scaled by a random factor in ``[1 - jitter, 1 + jitter]``.

    >>> Backoff(initial=0.5, factor=2.0, jitter=0.0).delay(3)
    2.0
    """

    initial: float = 0.1
    factor: float = 2.0
    max: float = 30.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.initial < 0 or self.factor < 1 or self.max < 0 or not 0 <= self.jitter <= 1:
            raise ConfigError(
                f"invalid Backoff({self.initial}, {self.factor}, {self.max}, {self.jitter}): need initial >= 0, "
                "factor >= 1, max >= 0, 0 <= jitter <= 1"
            )

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt``."""
        base = min(self.max, self.initial * self.factor ** max(0, attempt - 1))
        if self.jitter:
            base *= 1 + (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base)


def _matches(on: RetryOn, error: AgentflowError) -> bool:
    if on is None:
        return isinstance(error, RuntimeFailure)
    if isinstance(on, (type, tuple)):
        return isinstance(error, on)
    return bool(on(error))


def retry(
    inner: Flow[A],
    attempts: int = 3,
    backoff: float | Backoff = 0.0,
    on: RetryOn = None,
) -> Flow[A]:
    """Re-run ``inner`` until it succeeds, at most ``attempts`` times in all.

    Every attempt starts from the state ``retry`` was given (a failed attempt's state changes are
    dropped); the trace keeps each failed attempt's events plus a ``retry`` event. The final ``Err``
    is the last attempt's.

    Args:
        inner: The flow to run.
        attempts: Total attempts (>= 1).
        backoff: Seconds between attempts, or a ``Backoff``.
        on: Which errors to retry: an error class (or tuple), a predicate, or ``None`` for every
            runtime failure (user errors such as ``PlanError`` are not retried by default).
    """
    if attempts < 1:
        raise ConfigError(f"retry attempts must be >= 1, got {attempts}")
    if isinstance(backoff, int | float) and backoff < 0:
        raise ConfigError(f"retry backoff must be >= 0 seconds, got {backoff}")

    async def leaf(env: Env, state: State) -> Res:
        res: Res = Err(AgentflowError("retry made no attempt"), state)
        for attempt in range(1, attempts + 1):
            res = await inner._exec(env.fresh(), state)
            if isinstance(res, Ok):
                return res
            assert isinstance(res, Err)
            if attempt == attempts or not _matches(on, res.error):
                return res
            wait = backoff.delay(attempt) if isinstance(backoff, Backoff) else float(backoff)
            env.emit(
                RetryScheduled(
                    path=env.path,
                    time=time.time(),
                    attempt=attempt,
                    wait_s=wait,
                    error_type=type(res.error).__name__,
                    error=str(res.error),
                )
            )
            if wait > 0:
                await anyio.sleep(wait)
        return res

    return Flow(leaf)


def timeout(inner: Flow[A], seconds: float) -> Flow[A]:
    """Cancel ``inner`` after ``seconds``; the outcome is then ``Err(StepTimeout)``, never a raised
    exception. State changes of the cancelled run are dropped.

    >>> import anyio
    >>> from agentflow.dsl import from_async
    >>> slow = from_async(lambda: anyio.sleep(10))
    >>> type(anyio.run(timeout(slow, 0.01).run).error).__name__
    'StepTimeout'
    """
    if not seconds > 0 or math.isnan(seconds):
        raise ConfigError(f"timeout must be a positive number of seconds, got {seconds}")

    async def leaf(env: Env, state: State) -> Res:
        res: Res | None = None
        with anyio.move_on_after(seconds) as scope:
            res = await inner._exec(env, state)
        if res is None or scope.cancelled_caught:
            env.emit(TimedOut(path=env.path, time=time.time(), seconds=seconds))
            return Err(StepTimeout(env.path, seconds), state)
        return res

    return Flow(leaf)


def recover(
    inner: Flow[A],
    handler: Callable[[AgentflowError], Flow[B]],
    on: RetryOn = None,
) -> Flow[A | B]:
    """If ``inner`` fails with an error matching ``on`` (default: any), run ``handler(error)`` from
    the state at the failure instead.

    >>> import anyio
    >>> from agentflow.dsl import fail, pure
    >>> anyio.run(recover(fail(AgentflowError("x")), lambda e: pure(e.message)).run).value
    'x'
    """

    async def leaf(env: Env, state: State) -> Res:
        res = await inner._exec(env, state)
        if isinstance(res, Ok):
            return res
        assert isinstance(res, Err)
        if on is not None and not _matches(on, res.error):
            return res
        try:
            alt = handler(res.error)
        except Exception as exc:
            return Err(error_from(exc, env.path), res.state)
        return await alt._exec(env, res.state)

    return Flow(leaf)


def _as_flow(cond: bool | Flow[bool]) -> Flow[bool]:
    if isinstance(cond, Flow):
        return cond
    from ._flow import pure

    return pure(bool(cond))


def branch(cond: bool | Flow[bool], if_true: Flow[A], if_false: Flow[B]) -> Flow[A | B]:
    """Run ``if_true`` or ``if_false`` depending on ``cond`` (a bool or a flow yielding one).

    >>> import anyio
    >>> from agentflow.dsl import pure
    >>> anyio.run(branch(pure(False), pure("yes"), pure("no")).run).value
    'no'
    """
    chosen: Callable[[bool], Flow[Any]] = lambda c: if_true if c else if_false  # noqa: E731
    return _as_flow(cond).bind(chosen)


def when(cond: bool | Flow[bool], inner: Flow[A]) -> Flow[A | None]:
    """Run ``inner`` only if ``cond`` holds; yields ``None`` otherwise.

    >>> import anyio
    >>> from agentflow.dsl import pure
    >>> anyio.run(when(False, pure(1)).run).value is None
    True
    """
    from ._flow import pure

    return branch(cond, inner, pure(None))


def loop(
    body: Callable[[A], Flow[A]],
    init: A,
    *,
    until: Callable[[A], bool],
    max_iter: int,
) -> Flow[A]:
    """Iterate ``x = body(x)`` from ``init`` until ``until(x)``; more than ``max_iter`` iterations is
    ``Err(LoopLimitError)``. ``until`` is checked before the first iteration too.

    >>> import anyio
    >>> from agentflow.dsl import pure
    >>> anyio.run(loop(lambda x: pure(x * 2), 1, until=lambda x: x > 50, max_iter=10).run).value
    64
    """
    if max_iter < 0:
        raise ConfigError(f"loop max_iter must be >= 0, got {max_iter}")

    async def leaf(env: Env, state: State) -> Res:
        x = init
        for _ in range(max_iter + 1):
            try:
                done = until(x)
            except Exception as exc:
                return Err(error_from(exc, env.path), state)
            if done:
                return Ok(x, state)
            if _ == max_iter:
                break
            try:
                step_flow = body(x)
            except Exception as exc:
                return Err(error_from(exc, env.path), state)
            res = await step_flow._exec(env, state)
            if isinstance(res, Err):
                return res
            x, state = res.value, res.state
        return Err(LoopLimitError(env.path, max_iter), state)

    return Flow(leaf)


class RateLimiter:
    """A token bucket shared by the flows it limits: at most ``rate`` starts per ``per`` seconds,
    with bursts up to ``burst`` (default ``rate``).

    >>> RateLimiter(rate=10, per=1.0).rate
    10.0
    """

    def __init__(self, rate: float, per: float = 1.0, burst: float | None = None) -> None:
        if rate <= 0 or per <= 0:
            raise ConfigError(f"RateLimiter needs rate > 0 and per > 0, got rate={rate}, per={per}")
        self.rate = float(rate)
        self.per = float(per)
        self.burst = float(burst if burst is not None else rate)
        self._tokens = self.burst  # lifetime: the limiter's; refilled lazily on acquire
        self._last = time.monotonic()  # lifetime: the limiter's; time of the last refill
        self._lock = anyio.Lock()  # serializes waiters so they are served in arrival order

    async def acquire(self) -> None:
        """Wait until one start is allowed."""
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate / self.per)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await anyio.sleep((1 - self._tokens) * self.per / self.rate)


def rate_limit(limiter: RateLimiter, inner: Flow[A]) -> Flow[A]:
    """Run ``inner`` once ``limiter`` allows another start."""

    async def leaf(env: Env, state: State) -> Res:
        await limiter.acquire()
        return await inner._exec(env, state)

    return Flow(leaf)

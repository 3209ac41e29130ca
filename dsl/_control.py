"""Control combinators: ``retry``, ``timeout``, ``recover``, ``when``/``branch``, ``loop``, ``rate_limit``.

``retry`` runs on the one retry loop of agentflow (``Retrier`` and ``Backoff`` in ``_retry``)."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import anyio

from ._errors import AgentflowError, ConfigError, LoopLimitError, RuntimeFailure, StepTimeout
from ._events import RetryScheduled, TimedOut
from ._flow import Env, Flow, Res, error_from
from ._outcome import Err, Ok, State
from ._retry import Backoff, Retrier, RetryNotice

A = TypeVar("A")
B = TypeVar("B")

RetryOn: TypeAlias = (
    type[AgentflowError] | tuple[type[AgentflowError], ...] | Callable[[AgentflowError], bool] | None
)


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

    def matches(error: BaseException) -> bool:
        return isinstance(error, AgentflowError) and _matches(on, error)

    async def leaf(env: Env, state: State) -> Res:
        def report(notice: RetryNotice) -> None:
            env.emit(
                RetryScheduled(
                    path=env.path,
                    time=time.time(),
                    attempt=notice.attempt,
                    wait_s=notice.delay_s,
                    error_type=type(notice.error).__name__,
                    error=str(notice.error),
                )
            )

        retrier = Retrier(attempts=attempts, backoff=backoff, retryable=matches, on_retry=report)
        while True:
            res = await inner._exec(env.fresh(), state)
            if isinstance(res, Ok):
                return res
            assert isinstance(res, Err)
            if await retrier.failed(res.error) is not None:
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


class TokenBucket:
    """A token bucket refilled at ``rate`` tokens per ``per`` seconds, holding at most ``burst`` (default
    ``rate``, one period's worth); it starts full. The one token bucket of agentflow: ``RateLimiter`` waits
    on it, the scheduler's ``rpm``/``tpm`` admission limits are two of them.

    "No capacity" is a return value: ``try_take(n)`` returns ``0.0`` when it took ``n`` and otherwise the
    seconds until ``n`` will be available (``inf`` when ``n`` exceeds ``burst``), so callers know when to
    look again.

    Args:
        rate: Tokens added per ``per`` seconds (> 0).
        per: The period of ``rate`` in seconds (> 0): ``per=60`` makes ``rate`` a per-minute limit.
        burst: Bucket size (> 0).
        clock: Monotonic time source (a fake in tests).

    Example:
        >>> bucket = TokenBucket(60, per=60.0, burst=1, clock=lambda: 0.0)
        >>> bucket.try_take(1), bucket.try_take(1)
        (0.0, 1.0)
    """

    def __init__(
        self,
        rate: float,
        per: float = 1.0,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (rate > 0 and math.isfinite(rate)) or not (per > 0 and math.isfinite(per)):
            raise ConfigError(
                f"a rate limit needs a positive, finite rate per {per:g} s, got rate={rate}; "
                "e.g. TokenBucket(10, per=1.0) for 10 per second"
            )
        capacity = float(rate if burst is None else burst)
        if not (capacity > 0 and math.isfinite(capacity)):
            raise ConfigError(f"a rate limit burst must be a positive, finite number of tokens, got {burst}")
        self._rate = float(rate)
        self._per = float(per)
        self._capacity = capacity
        self._clock = clock
        # Tokens available as of _stamp; refilled lazily on every call.
        self._level = capacity
        self._stamp = clock()

    @property
    def rate(self) -> float:
        """Tokens added per ``per`` seconds."""
        return self._rate

    @property
    def per(self) -> float:
        """The period of ``rate``, in seconds."""
        return self._per

    @property
    def capacity(self) -> float:
        """The most the bucket holds (``burst``); a single take larger than this never succeeds."""
        return self._capacity

    def level(self) -> float:
        """Tokens available now."""
        self._refill()
        return self._level

    def try_take(self, n: float) -> float:
        """Take ``n`` tokens if available; return ``0.0`` if taken, else seconds until they will be."""
        self._refill()
        if n <= self._level:
            self._level -= n
            return 0.0
        if n > self._capacity:
            return math.inf
        return (n - self._level) * self._per / self._rate

    def give_back(self, n: float) -> None:
        """Return unused tokens (e.g. the part of a ``max_tokens`` estimate that was not generated)."""
        self._refill()
        self._level = min(self._capacity, self._level + n)

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self._capacity, self._level + (now - self._stamp) * self._rate / self._per)
        self._stamp = now


class RateLimiter:
    """A ``TokenBucket`` shared by the flows it limits: at most ``rate`` starts per ``per`` seconds, with
    bursts up to ``burst`` (default ``rate``). Waiters are served in arrival order.

    >>> RateLimiter(rate=10, per=1.0).rate
    10.0
    """

    def __init__(
        self,
        rate: float,
        per: float = 1.0,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if burst is not None and burst < 1:
            raise ConfigError(f"RateLimiter burst must be >= 1 (one start), got {burst}")
        self.bucket = TokenBucket(
            rate, per, burst=burst if burst is not None else max(1.0, rate), clock=clock
        )
        self._sleep = sleep
        self._lock = anyio.Lock()  # serializes waiters so they are served in arrival order

    @property
    def rate(self) -> float:
        """Starts allowed per ``per`` seconds."""
        return self.bucket.rate

    @property
    def per(self) -> float:
        """The period of ``rate``, in seconds."""
        return self.bucket.per

    @property
    def burst(self) -> float:
        """The most starts allowed at once."""
        return self.bucket.capacity

    async def acquire(self) -> None:
        """Wait until one start is allowed."""
        async with self._lock:
            while (wait := self.bucket.try_take(1)) > 0:
                await self._sleep(wait)


def rate_limit(limiter: RateLimiter, inner: Flow[A]) -> Flow[A]:
    """Run ``inner`` once ``limiter`` allows another start."""

    async def leaf(env: Env, state: State) -> Res:
        await limiter.acquire()
        return await inner._exec(env, state)

    return Flow(leaf)

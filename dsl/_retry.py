"""One backoff formula and one retry loop, shared by every retry in agentflow.

``Backoff`` is the delay arithmetic; ``Retrier`` is the loop around one operation: it classifies each
failure as retryable or not, sleeps the backoff (or the server's ``Retry-After``), stops at the attempt
cap or a total deadline, and reports each retry before sleeping. The DSL's ``retry`` combinator, tools'
``retries=``, EvoGit's lock-contention retries and the HTTP engines' request retries all run on it, so
they agree on what "attempt", "delay" and "give up" mean::

    attempt:   1      2        3            4
    base:      i      i*f      i*f^2        i*f^3        (capped at max)
    delay:     base * uniform(1 - jitter, 1 + jitter)
    Retry-After: when the failure carries one, the delay is exactly what it asks for
                 (a request for more than ``max_retry_after`` stops the retries at once)

Time and randomness are injected (``clock``, ``sleep``, ``rng``), so the whole loop is tested without
waiting and with reproducible jitter.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import anyio

from ._errors import ConfigError

__all__ = ["Backoff", "Retrier", "RetryNotice", "StopReason"]

T = TypeVar("T")

StopReason = Literal["not_retryable", "attempts", "deadline", "retry_after"]
"""Why a ``Retrier`` stopped: the error is not retryable, the attempts are spent, the next try would start
after the deadline, or the failure asked for a longer wait than ``max_retry_after``."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: attempt ``n`` (1-based) waits ``initial * factor**(n-1)`` scaled by a random factor
    in ``[1 - jitter, 1 + jitter]``, never more than ``max`` (the cap applies after the jitter).

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
        return max(0.0, min(self.max, base))


@dataclass(frozen=True, slots=True)
class RetryNotice:
    """One retry a ``Retrier`` is about to make, reported to its ``on_retry`` before the sleep.

    Attributes:
        attempt: The 1-based number of the attempt that failed.
        delay_s: Seconds until the next attempt.
        error: What the failed attempt raised or returned.
        retry_after: The wait the failure asked for (e.g. HTTP ``Retry-After``), if any.
    """

    attempt: int
    delay_s: float
    error: BaseException
    retry_after: float | None = None


def _always(error: BaseException) -> bool:
    return True


class Retrier:
    """The retries of one operation: which failures to retry, how long to wait, when to stop.

    Use ``call`` to run an async function until it succeeds; where the attempt cannot be a function (a
    stream that yields inside it), run the attempt yourself and ``await retrier.failed(error)`` after each
    failure: it sleeps and returns ``None`` (try again) or returns why to stop.

    Args:
        attempts: Total attempts including the first (>= 1).
        backoff: Seconds between attempts, or a ``Backoff``.
        retryable: Which failures are worth another attempt (default: all).
        max_retry_after: The longest requested wait (``retry_after``) to honour; more stops the retries.
        deadline_s: Seconds from the retrier's creation after which no further attempt starts (a retry
            whose sleep would end later is not made); ``None`` for no deadline.
        on_retry: Called with a ``RetryNotice`` before each sleep (events, logs, metrics).
        rng: Source of jitter (seed it for reproducible delays).
        clock: Monotonic time source for the deadline.
        sleep: How to wait (``anyio.sleep``; a fake in tests).

    Example:
        >>> import anyio
        >>> calls = []
        >>> async def flaky(attempt: int) -> int:
        ...     calls.append(attempt)
        ...     if attempt < 3:
        ...         raise OSError("busy")
        ...     return attempt
        >>> anyio.run(Retrier(attempts=5).call, flaky), calls
        (3, [1, 2, 3])
    """

    def __init__(
        self,
        *,
        attempts: int,
        backoff: Backoff | float = 0.0,
        retryable: Callable[[BaseException], bool] = _always,
        max_retry_after: float = math.inf,
        deadline_s: float | None = None,
        on_retry: Callable[[RetryNotice], None] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ConfigError(f"retry attempts must be an integer >= 1, got {attempts!r}")
        if not isinstance(backoff, Backoff) and not (backoff >= 0 and math.isfinite(backoff)):
            raise ConfigError(
                f"retry backoff must be a Backoff or a finite number of seconds >= 0, got {backoff}"
            )
        if deadline_s is not None and not deadline_s >= 0:
            raise ConfigError(f"retry deadline_s must be >= 0 seconds or None, got {deadline_s}")
        if not max_retry_after >= 0:
            raise ConfigError(f"retry max_retry_after must be >= 0 seconds, got {max_retry_after}")
        self._attempts = attempts
        self._backoff = backoff
        self._retryable = retryable
        self._max_retry_after = max_retry_after
        self._on_retry = on_retry
        self._rng = rng
        self._clock = clock
        self._sleep = sleep
        # Absolute clock time after which no attempt starts; fixed at creation.
        self._deadline = None if deadline_s is None else clock() + deadline_s
        # The attempt now running (1-based); advanced by each retry.
        self._attempt = 1
        # Why the retries stopped; None while they may go on.
        self._stopped: StopReason | None = None

    @property
    def attempt(self) -> int:
        """The number of the attempt now running (or the last one, once stopped), 1-based."""
        return self._attempt

    @property
    def attempts(self) -> int:
        """Total attempts allowed."""
        return self._attempts

    @property
    def stopped(self) -> StopReason | None:
        """Why the retries stopped, or ``None`` while another attempt may follow a failure."""
        return self._stopped

    def _decide(self, error: BaseException, retry_after: float | None) -> float | StopReason:
        if not self._retryable(error):
            return "not_retryable"
        if self._attempt >= self._attempts:
            return "attempts"
        if retry_after is not None:
            if retry_after > self._max_retry_after:
                return "retry_after"
            wait = max(0.0, retry_after)
        elif isinstance(self._backoff, Backoff):
            wait = self._backoff.delay(self._attempt, self._rng)
        else:
            wait = float(self._backoff)
        if self._deadline is not None and self._clock() + wait > self._deadline:
            return "deadline"
        return wait

    async def failed(self, error: BaseException, *, retry_after: float | None = None) -> StopReason | None:
        """Attempt ``self.attempt`` failed with ``error``: wait and return ``None`` to try again, or return why
        to stop (then ``stopped`` says the same and no further attempt should run).

        Args:
            error: What the attempt raised (or the error of the outcome it returned).
            retry_after: Seconds the failure asked to wait (e.g. HTTP ``Retry-After``), if it asked.
        """
        if self._stopped is not None:
            return self._stopped
        decision = self._decide(error, retry_after)
        if isinstance(decision, str):
            self._stopped = decision
            return decision
        if self._on_retry is not None:
            self._on_retry(RetryNotice(self._attempt, decision, error, retry_after))
        if decision > 0:
            await self._sleep(decision)
        self._attempt += 1
        return None

    async def call(
        self,
        fn: Callable[[int], Awaitable[T]],
        *,
        retry_after: Callable[[Exception], float | None] | None = None,
    ) -> T:
        """Run ``fn(attempt)`` until it returns; when the retries stop, the last error propagates.

        Args:
            fn: One attempt; it gets the 1-based attempt number.
            retry_after: Reads the wait a failure asks for (e.g. from a ``Retry-After`` header).

        Raises:
            Exception: The last attempt's error (``stopped`` says why there was no further attempt).
        """
        while True:
            try:
                return await fn(self._attempt)
            except Exception as exc:
                wait = retry_after(exc) if retry_after is not None else None
                if await self.failed(exc, retry_after=wait) is not None:
                    raise

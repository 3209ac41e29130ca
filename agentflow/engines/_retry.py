"""Retry policy for HTTP engines: jittered exponential backoff that honours ``Retry-After``.

The policy is a frozen value naming an engine's retry settings; the arithmetic and the loop are the DSL's
(``Backoff``, ``Retrier``), shared with every other retry in agentflow:

    attempt:   1      2        3            4
    base:      d      d*m      d*m^2        d*m^3     (capped at max_delay)
    delay:     min(max_delay, base * uniform(1 - jitter, 1 + jitter))
    Retry-After: when the server sends one, the delay is exactly what it asks for
                 (a request for more than ``max_retry_after`` ends the retries at once).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import anyio

from agentflow.dsl import Backoff, Retrier, RetryNotice
from agentflow.errors import ConfigError

__all__ = ["RetryEvent", "RetryPolicy", "parse_retry_after"]

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth retrying: timeouts, conflicts on overload, rate limits and server errors."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently an engine retries a failed HTTP request.

    Attributes:
        attempts: Total tries including the first one (1 = never retry).
        initial_delay: Backoff base in seconds before the second try.
        multiplier: Growth factor of the base per further try.
        max_delay: Upper bound of a computed backoff, in seconds.
        jitter: Each delay is scaled by a random factor in ``[1 - jitter, 1 + jitter]`` (0 = none).
        max_retry_after: The longest ``Retry-After`` the engine will honour; a server asking for
            more ends the retries with an error naming the requested wait.
    """

    attempts: int = 4
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 20.0
    jitter: float = 0.5
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if not self.max_retry_after >= 0:
            raise ConfigError(f"RetryPolicy.max_retry_after must be >= 0 seconds, got {self.max_retry_after}")
        try:
            self.schedule  # noqa: B018 - the DSL Backoff checks the delay fields
        except ConfigError:
            raise ConfigError(
                f"RetryPolicy(initial_delay={self.initial_delay}, multiplier={self.multiplier}, "
                f"max_delay={self.max_delay}, jitter={self.jitter}) is invalid: need initial_delay >= 0, "
                "multiplier >= 1, max_delay >= 0 and 0 <= jitter <= 1"
            ) from None

    @property
    def schedule(self) -> Backoff:
        """The backoff between tries (when the server sends no ``Retry-After``)."""
        return Backoff(
            initial=self.initial_delay, factor=self.multiplier, max=self.max_delay, jitter=self.jitter
        )

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The jittered delay after failed try number ``attempt`` (1-based), without Retry-After."""
        return self.schedule.delay(attempt, rng)

    def retrier(
        self,
        *,
        retryable: Callable[[BaseException], bool],
        on_retry: Callable[[RetryNotice], None] | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> Retrier:
        """The retry loop of one request under this policy.

        Args:
            retryable: Which failures to retry (transport errors, retryable statuses).
            on_retry: Called before each retry's sleep.
            rng: Source of jitter (seeded for reproducible runs).
            sleep: How to wait (a fake in tests).
        """
        return Retrier(
            attempts=self.attempts,
            backoff=self.schedule,
            retryable=retryable,
            max_retry_after=self.max_retry_after,
            on_retry=on_retry,
            rng=rng,
            sleep=sleep,
        )


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """One retry an engine is about to make, reported to an ``on_retry`` callback.

    Attributes:
        url: The request URL.
        attempt: The 1-based number of the try that failed.
        delay_s: Seconds the engine will wait before the next try.
        reason: What failed, e.g. ``HTTP 503`` or ``ConnectError``.
        retry_after: The server's ``Retry-After`` in seconds, if it sent one.
    """

    url: str
    attempt: int
    delay_s: float
    reason: str
    retry_after: float | None = None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    Returns ``None`` when the header is absent or unparseable; a date in the past gives ``0.0``.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())

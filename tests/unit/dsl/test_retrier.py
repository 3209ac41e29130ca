"""The one retry loop (``Retrier``), the one backoff (``Backoff``) and the one token bucket (``TokenBucket``,
``RateLimiter``), driven by a fake clock and a fake sleep: no real waiting, no timing thresholds."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentflow.dsl import Backoff, ConfigError, RateLimiter, Retrier, RetryNotice, TokenBucket

pytestmark = pytest.mark.anyio


class FakeTime:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Busy(Exception):
    """A retryable failure; ``retry_after`` is what it asks to wait, if anything."""

    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("busy")
        self.retry_after = retry_after


class Broken(Exception):
    """A failure that is not worth retrying."""


def failing_until(success_at: int, error: Exception) -> tuple[list[int], Callable[[int], Awaitable[str]]]:
    calls: list[int] = []

    async def attempt(n: int) -> str:
        calls.append(n)
        if n < success_at:
            raise error
        return f"done on {n}"

    return calls, attempt


def retrier(fake: FakeTime, **options: object) -> Retrier:
    defaults: dict[str, object] = {
        "attempts": 4,
        "backoff": Backoff(initial=0.5, factor=2.0, max=10.0, jitter=0.0),
        "retryable": lambda e: isinstance(e, Busy),
        "clock": fake.clock,
        "sleep": fake.sleep,
    }
    return Retrier(**{**defaults, **options})


async def test_call_retries_with_growing_backoff_when_errors_are_retryable() -> None:
    fake = FakeTime()
    calls, attempt = failing_until(3, Busy())
    r = retrier(fake)
    assert await r.call(attempt) == "done on 3"
    assert calls == [1, 2, 3]
    assert fake.sleeps == [0.5, 1.0]
    assert r.stopped is None and r.attempt == 3


async def test_call_raises_at_once_when_error_is_not_retryable() -> None:
    fake = FakeTime()
    calls, attempt = failing_until(3, Broken("no"))
    r = retrier(fake)
    with pytest.raises(Broken):
        await r.call(attempt)
    assert calls == [1] and fake.sleeps == [] and r.stopped == "not_retryable"


async def test_call_raises_last_error_when_attempts_are_spent() -> None:
    fake = FakeTime()
    calls, attempt = failing_until(99, Busy())
    r = retrier(fake, attempts=3)
    with pytest.raises(Busy):
        await r.call(attempt)
    assert calls == [1, 2, 3] and fake.sleeps == [0.5, 1.0] and r.stopped == "attempts"


async def test_failed_stops_when_next_attempt_would_start_after_deadline() -> None:
    fake = FakeTime()
    calls, attempt = failing_until(99, Busy())
    r = retrier(fake, attempts=10, backoff=Backoff(initial=0.4, factor=2.0, jitter=0.0), deadline_s=1.0)
    with pytest.raises(Busy):
        await r.call(attempt)
    # 0.4 s ends at 0.4, within the deadline; the next 0.8 s would end at 1.2, past it.
    assert fake.sleeps == [0.4] and calls == [1, 2] and r.stopped == "deadline"


async def test_call_waits_retry_after_instead_of_backoff_when_failure_asks() -> None:
    fake = FakeTime()
    _calls, attempt = failing_until(2, Busy(retry_after=3.0))
    r = retrier(fake, max_retry_after=5.0)

    def asked(error: Exception) -> float | None:
        return error.retry_after if isinstance(error, Busy) else None

    assert await r.call(attempt, retry_after=asked) == "done on 2"
    assert fake.sleeps == [3.0]


async def test_failed_stops_when_retry_after_exceeds_max_retry_after() -> None:
    fake = FakeTime()
    r = retrier(fake, max_retry_after=5.0)
    assert await r.failed(Busy(), retry_after=7.0) == "retry_after"
    assert fake.sleeps == [] and r.stopped == "retry_after"
    # Once stopped, a retrier stays stopped.
    assert await r.failed(Busy()) == "retry_after"


async def test_on_retry_reports_each_retry_before_its_sleep() -> None:
    fake = FakeTime()
    seen: list[tuple[RetryNotice, int]] = []
    r = retrier(fake, on_retry=lambda n: seen.append((n, len(fake.sleeps))))
    error = Busy()
    assert await r.failed(error) is None
    assert await r.failed(error, retry_after=0.25) is None
    assert [(n.attempt, n.delay_s, n.retry_after, sleeps_before) for n, sleeps_before in seen] == [
        (1, 0.5, None, 0),
        (2, 0.25, 0.25, 1),
    ]
    assert all(n.error is error for n, _ in seen)


async def test_delays_are_reproducible_when_rng_is_seeded() -> None:
    def delays(seed: int) -> list[float]:
        backoff = Backoff(initial=1.0, factor=2.0, max=8.0, jitter=0.5)
        rng = random.Random(seed)
        return [backoff.delay(n, rng) for n in range(1, 6)]

    async def run(seed: int) -> list[float]:
        fake = FakeTime()
        _calls, attempt = failing_until(6, Busy())
        r = retrier(
            fake, attempts=6, backoff=Backoff(initial=1.0, max=8.0, jitter=0.5), rng=random.Random(seed)
        )
        await r.call(attempt)
        return fake.sleeps

    assert await run(7) == await run(7) == delays(7)
    assert await run(7) != await run(8)


@given(attempt=st.integers(1, 40), seed=st.integers(0, 2**32), jitter=st.floats(0, 1))
def test_backoff_stays_within_jitter_band_and_never_exceeds_max(
    attempt: int, seed: int, jitter: float
) -> None:
    backoff = Backoff(initial=0.25, factor=2.0, max=8.0, jitter=jitter)
    base = min(8.0, 0.25 * 2.0 ** (attempt - 1))
    delay = backoff.delay(attempt, random.Random(seed))
    assert base * (1 - jitter) - 1e-9 <= delay <= min(8.0, base * (1 + jitter)) + 1e-9


@pytest.mark.parametrize(
    "options",
    [{"attempts": 0}, {"attempts": 1.5}, {"backoff": -1.0}, {"deadline_s": -1.0}, {"max_retry_after": -1.0}],
)
def test_retrier_raises_config_error_when_option_is_invalid(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="retry"):
        Retrier(**{"attempts": 2, **options})


def test_token_bucket_returns_wait_and_refills_from_injected_clock() -> None:
    fake = FakeTime()
    bucket = TokenBucket(2, per=1.0, burst=2, clock=fake.clock)
    assert bucket.try_take(2) == 0.0
    assert bucket.try_take(1) == pytest.approx(0.5)
    fake.now = 0.5
    assert bucket.try_take(1) == 0.0
    assert bucket.try_take(3) == float("inf")  # larger than the bucket: never
    bucket.give_back(5)
    assert bucket.level() == 2


async def test_rate_limiter_sleeps_exactly_until_next_token_when_bucket_is_empty() -> None:
    fake = FakeTime()
    limiter = RateLimiter(rate=4, per=1.0, burst=2, clock=fake.clock, sleep=fake.sleep)
    for _ in range(5):
        await limiter.acquire()
    # Two starts from the full bucket, then one every 1/4 s.
    assert fake.sleeps == pytest.approx([0.25, 0.25, 0.25])
    assert (limiter.rate, limiter.per, limiter.burst) == (4.0, 1.0, 2.0)


@pytest.mark.parametrize("options", [{"rate": 0}, {"rate": 1, "per": 0}, {"rate": 1, "burst": 0.5}])
def test_rate_limiter_raises_config_error_when_limits_are_invalid(options: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        RateLimiter(**options)  # type: ignore[arg-type]

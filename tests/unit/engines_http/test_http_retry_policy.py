"""RetryPolicy arithmetic and Retry-After parsing."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentflow.dsl import Backoff
from agentflow.engines._retry import RetryPolicy, parse_retry_after
from agentflow.errors import ConfigError


def test_backoff_doubles_without_jitter_when_jitter_is_zero() -> None:
    policy = RetryPolicy(attempts=6, initial_delay=0.5, multiplier=2.0, max_delay=3.0, jitter=0.0)
    rng = random.Random(0)
    assert [policy.backoff(n, rng) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@given(attempt=st.integers(1, 30), seed=st.integers(0, 2**32), jitter=st.floats(0, 1))
def test_backoff_is_the_dsl_backoff_when_jittered(attempt: int, seed: int, jitter: float) -> None:
    # One formula for every retry in agentflow: the policy's delays are the DSL Backoff's, draw for draw.
    policy = RetryPolicy(attempts=40, initial_delay=0.25, max_delay=8.0, jitter=jitter)
    backoff = Backoff(initial=0.25, factor=2.0, max=8.0, jitter=jitter)
    base = min(8.0, 0.25 * 2.0 ** (attempt - 1))
    delay = policy.backoff(attempt, random.Random(seed))
    assert delay == backoff.delay(attempt, random.Random(seed))
    assert base * (1 - jitter) - 1e-9 <= delay <= base * (1 + jitter) + 1e-9


class _Busy(Exception):
    pass


async def _sleeps(policy: RetryPolicy, failures: list[float | None]) -> tuple[list[float], str | None]:
    """Feed ``failures`` (each a Retry-After or None) to the policy's retrier; the sleeps and why it stopped."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    retrier = policy.retrier(retryable=lambda e: isinstance(e, _Busy), sleep=sleep)
    for retry_after in failures:
        if await retrier.failed(_Busy(), retry_after=retry_after) is not None:
            break
    return slept, retrier.stopped


@pytest.mark.anyio
async def test_retries_stop_when_attempts_are_spent() -> None:
    policy = RetryPolicy(attempts=3, jitter=0.0)
    assert await _sleeps(policy, [None, None, None]) == ([0.5, 1.0], "attempts")


@pytest.mark.anyio
async def test_retries_follow_retry_after_when_server_sends_it() -> None:
    policy = RetryPolicy(attempts=3, initial_delay=10.0, max_retry_after=5.0)
    assert await _sleeps(policy, [0.25, 7.0]) == ([0.25], "retry_after")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"initial_delay": -1.0},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"max_retry_after": -2.0},
    ],
)
def test_policy_raises_config_error_when_option_is_invalid(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="RetryPolicy"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_parse_retry_after_reads_seconds_and_http_dates_when_valid() -> None:
    now = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("Sun, 22 Nov 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Sun, 22 Nov 2026 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("-4") == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "nan"])
def test_parse_retry_after_is_none_when_absent_or_unparseable(value: str | None) -> None:
    assert parse_retry_after(value) is None

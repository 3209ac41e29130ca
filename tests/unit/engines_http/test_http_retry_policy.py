"""RetryPolicy arithmetic and Retry-After parsing."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentflow.engines._retry import RetryPolicy, parse_retry_after
from agentflow.errors import ConfigError


def test_backoff_doubles_without_jitter_when_jitter_is_zero() -> None:
    policy = RetryPolicy(attempts=6, initial_delay=0.5, multiplier=2.0, max_delay=3.0, jitter=0.0)
    rng = random.Random(0)
    assert [policy.backoff(n, rng) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@given(attempt=st.integers(1, 30), seed=st.integers(0, 2**32), jitter=st.floats(0, 1))
def test_backoff_stays_within_jitter_band_when_jittered(attempt: int, seed: int, jitter: float) -> None:
    policy = RetryPolicy(attempts=40, initial_delay=0.25, max_delay=8.0, jitter=jitter)
    base = min(8.0, 0.25 * 2.0 ** (attempt - 1))
    delay = policy.backoff(attempt, random.Random(seed))
    assert base * (1 - jitter) - 1e-9 <= delay <= base + 1e-9


def test_delay_is_none_when_attempts_are_spent() -> None:
    policy = RetryPolicy(attempts=3, jitter=0.0)
    rng = random.Random(0)
    assert policy.delay(1, None, rng) == 0.5
    assert policy.delay(2, None, rng) == 1.0
    assert policy.delay(3, None, rng) is None


def test_delay_follows_retry_after_when_server_sends_it() -> None:
    policy = RetryPolicy(attempts=3, initial_delay=10.0, max_retry_after=5.0)
    rng = random.Random(0)
    assert policy.delay(1, 0.25, rng) == 0.25
    assert policy.delay(1, 7.0, rng) is None


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

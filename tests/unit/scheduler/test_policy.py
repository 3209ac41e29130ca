"""Ready-queue policies, driven directly with a simulated clock (one dispatch per time unit)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.errors import ConfigError
from agentflow.scheduler import CacheAwarePolicy, FifoPolicy, Policy, QueuedRequest, make_policy, policy_names


def _drain(policy: Policy, now: float = 0.0) -> list[int]:
    order = []
    while (item := policy.peek(now)) is not None:
        policy.take(item)
        order.append(item.seq)
    return order


def test_fifo_is_first_come_first_served_whatever_the_cache() -> None:
    policy = make_policy("fifo")
    for seq, cached in enumerate([0, 500, 10, 900]):
        policy.push(QueuedRequest(seq, float(seq), 1000, cached, steps=seq % 2))
    assert _drain(policy) == [0, 1, 2, 3]


def test_fifo_skips_removed_requests() -> None:
    policy = FifoPolicy()
    items = [QueuedRequest(i, float(i), 10) for i in range(3)]
    for item in items:
        policy.push(item)
    policy.remove(items[0])
    assert len(policy) == 2
    assert _drain(policy) == [1, 2]


def test_ours_prefers_longest_cached_prefix_when_waits_are_equal() -> None:
    policy = make_policy("ours")
    for seq, cached in enumerate([10, 300, 50]):
        policy.push(QueuedRequest(seq, 0.0, 400, cached))
    assert _drain(policy) == [1, 2, 0]


def test_ours_reranks_request_when_its_cached_prefix_grows() -> None:
    policy = make_policy("ours")
    a, b = QueuedRequest(0, 0.0, 400, 100), QueuedRequest(1, 0.0, 400, 50)
    policy.push(a)
    policy.push(b)
    b.cached = 350
    policy.update(b)
    assert _drain(policy) == [1, 0]


def test_ours_prefers_requests_needed_sooner_when_cache_is_equal() -> None:
    policy = make_policy("ours")
    policy.push(QueuedRequest(0, 0.0, 100, 0, steps=3))
    policy.push(QueuedRequest(1, 0.0, 100, 0, steps=0))
    policy.push(QueuedRequest(2, 0.0, 100, 0, steps=1))
    assert _drain(policy) == [1, 2, 0]


def test_ours_serves_request_near_its_deadline_first() -> None:
    policy = make_policy("ours", deadline_slack_s=1.0)
    policy.push(QueuedRequest(0, 0.0, 100, 90))
    policy.push(QueuedRequest(1, 0.0, 100, 0, deadline=10.0))
    assert policy.peek(5.0).seq == 0  # type: ignore[union-attr]
    assert policy.peek(9.5).seq == 1  # type: ignore[union-attr]


def test_fanout_siblings_run_back_to_back_despite_better_scored_requests() -> None:
    policy = make_policy("ours")
    # Siblings of group g have a short cached prefix; other requests look better on their own.
    policy.push(QueuedRequest(0, 0.0, 400, 200, group="g"))
    policy.push(QueuedRequest(1, 0.0, 400, 150))
    policy.push(QueuedRequest(2, 0.0, 400, 10, group="g"))
    policy.push(QueuedRequest(3, 0.0, 400, 140))
    policy.push(QueuedRequest(4, 0.0, 400, 5, group="g"))
    assert _drain(policy) == [0, 2, 4, 1, 3]


def test_lpm_starves_victim_under_adversarial_stream() -> None:
    """The adversary works: without aging a request with no cached prefix never runs."""
    order = _adversarial_run(make_policy("lpm"), horizon=200)
    assert 0 not in order


def test_ours_dispatches_victim_within_max_wait_under_adversarial_stream() -> None:
    max_wait = 20.0
    order = _adversarial_run(make_policy("ours", max_wait_s=max_wait, age_tokens_per_s=0.0), horizon=200)
    assert 0 in order
    assert order.index(0) <= max_wait  # dispatched at the first decision after it became overdue


def _adversarial_run(policy: Policy, *, horizon: int) -> list[int]:
    """A victim (no cache, far in the DAG) arrives first; every time unit brings a hot, urgent request."""
    seq = itertools.count()
    policy.push(QueuedRequest(next(seq), 0.0, 1000, 0, steps=10))
    order = []
    for t in range(horizon):
        policy.push(QueuedRequest(next(seq), float(t), 1000, 999, steps=0))
        policy.push(QueuedRequest(next(seq), float(t), 1000, 999, steps=0))
        item = policy.peek(float(t))
        assert item is not None
        policy.take(item)
        order.append(item.seq)
    return order


REQUESTS = st.lists(
    st.tuples(
        st.integers(0, 3),  # arrivals per time unit are drawn as gaps
        st.integers(0, 999),  # cached
        st.integers(0, 5),  # steps
        st.sampled_from([None, "f1", "f2"]),  # fan-out group
        st.one_of(st.none(), st.integers(0, 60)),  # deadline offset
    ),
    min_size=1,
    max_size=60,
)


def _simulate(
    policy: Policy, stream: list[tuple[int, int, int, str | None, int | None]], *, estimate_fifo_wait: bool
) -> tuple[list[QueuedRequest], dict[int, int]]:
    """Arrivals from ``stream`` (gaps between arrivals), one dispatch per time unit (service time 1); with
    ``estimate_fifo_wait`` each arrival is told its FIFO position (the requests queued ahead of it)."""
    arrivals: list[QueuedRequest] = []
    t = 0
    for seq, (gap, cached, steps, group, deadline) in enumerate(stream):
        t += gap
        dl = None if deadline is None else float(t + deadline)
        arrivals.append(QueuedRequest(seq, float(t), 1000, cached, steps=steps, group=group, deadline=dl))
    dispatched_at: dict[int, int] = {}
    pending = list(arrivals)
    now = 0
    while len(dispatched_at) < len(arrivals):
        while pending and pending[0].arrival <= now:
            item = pending.pop(0)
            if estimate_fifo_wait:
                item.ahead = len(policy)
            policy.push(item)
        item = policy.peek(float(now))
        if item is not None:
            policy.take(item)
            dispatched_at[item.seq] = now
        now += 1
    return arrivals, dispatched_at


@settings(max_examples=200, deadline=None)
@given(stream=REQUESTS, max_wait=st.integers(1, 15), age=st.sampled_from([0.0, 5.0, 50.0]))
def test_aging_bounds_every_request_wait(
    stream: list[tuple[int, int, int, str | None, int | None]], max_wait: int, age: float
) -> None:
    """Bound: once overdue (waited >= max_wait), a request is overtaken by no later arrival, so its wait is at
    most max_wait plus one service time per earlier arrival still queued when it became overdue."""
    policy = make_policy("ours", max_wait_s=float(max_wait), age_tokens_per_s=age)
    arrivals, dispatched_at = _simulate(policy, stream, estimate_fifo_wait=False)
    for r in arrivals:
        overdue_at = r.arrival + max_wait
        earlier_waiting = sum(1 for o in arrivals if o.seq < r.seq and dispatched_at[o.seq] >= overdue_at)
        assert dispatched_at[r.seq] <= overdue_at + earlier_waiting
        for o in arrivals:
            if o.seq > r.seq and overdue_at <= dispatched_at[o.seq]:
                assert dispatched_at[o.seq] > dispatched_at[r.seq], (
                    "a later arrival overtook an overdue request"
                )


def test_ours_makes_a_request_due_after_max_slowdown_times_its_fifo_position() -> None:
    policy = make_policy("ours", max_slowdown=1.5, max_wait_s=60.0)
    policy.push(QueuedRequest(0, 0.0, 400, 0, ahead=2))  # FIFO: 2 dispatches before it; due after 3
    for seq in range(1, 6):
        policy.push(QueuedRequest(seq, 0.0, 400, 300))
    assert _drain(policy) == [1, 2, 3, 0, 4, 5]


def test_ours_bounds_each_wait_by_the_longest_fifo_position_queued_with_it() -> None:
    policy = make_policy("ours", max_slowdown=1.0, max_wait_s=60.0)
    policy.push(QueuedRequest(0, 0.0, 400, 0, ahead=3))  # due after 3 dispatches
    policy.push(QueuedRequest(1, 0.0, 400, 0, ahead=1))  # queued with a 3: due after 3 too (then by seq)
    for seq in range(2, 6):
        policy.push(QueuedRequest(seq, 0.0, 400, 300))
    assert _drain(policy) == [2, 3, 4, 0, 1, 5]


def test_ours_bounds_wait_by_max_wait_whatever_the_fifo_position() -> None:
    policy = make_policy("ours", max_slowdown=1.5, max_wait_s=5.0)
    policy.push(QueuedRequest(0, 0.0, 400, 0, ahead=100))
    policy.push(QueuedRequest(1, 0.0, 400, 300))
    assert policy.peek(4.9).seq == 1  # type: ignore[union-attr]
    assert policy.peek(5.0).seq == 0  # type: ignore[union-attr]


@settings(max_examples=200, deadline=None)
@given(stream=REQUESTS, slowdown=st.sampled_from([1.0, 1.5, 3.0]), age=st.sampled_from([0.0, 5.0, 50.0]))
def test_slowdown_bounds_every_wait_relative_to_its_fifo_position(
    stream: list[tuple[int, int, int, str | None, int | None]], slowdown: float, age: float
) -> None:
    """Bound, counted in dispatches: a request is due once ``ceil(slowdown * L)`` requests were dispatched
    after its arrival, ``L`` the longest FIFO position (requests queued ahead at arrival) among those queued
    with it; once due, only requests due before it go ahead of it, so it is dispatched by then plus one
    dispatch per such request. Hence no wait exceeds ``ceil(slowdown * L)`` plus those dispatches."""
    policy = make_policy("ours", max_slowdown=slowdown, max_wait_s=1e9, age_tokens_per_s=age)
    arrivals, dispatched_at = _simulate(policy, stream, estimate_fifo_wait=True)
    # Queued when r was pushed: pushed before it (same-time arrivals in seq order), not yet dispatched.
    longest = {
        r.seq: max(
            o.ahead or 0
            for o in arrivals
            if (o.arrival, o.seq) <= (r.arrival, r.seq) and dispatched_at[o.seq] >= r.arrival
        )
        for r in arrivals
    }
    order = sorted(dispatched_at, key=dispatched_at.__getitem__)  # dispatch order; index = dispatch count
    count = {seq: i for i, seq in enumerate(order)}
    # Dispatches made before each request arrived (arrivals at time t are pushed before the decision at t).
    before = {r.seq: sum(1 for o in arrivals if dispatched_at[o.seq] < r.arrival) for r in arrivals}

    def due(r: QueuedRequest) -> tuple[int, int]:
        assert r.ahead is not None
        return (before[r.seq] + math.ceil(slowdown * longest[r.seq]), r.seq)

    for r in arrivals:
        r_due = due(r)[0]
        ahead_of_it = [o for o in arrivals if due(o) < due(r) and count[o.seq] >= r_due]
        assert count[r.seq] <= r_due + len(ahead_of_it)
        for o in arrivals:
            if r_due <= count[o.seq] < count[r.seq]:
                assert due(o) < due(r), "a request due later overtook a due one"


def test_make_policy_names_and_errors() -> None:
    assert policy_names() == ["fifo", "lpm", "ours"]
    assert isinstance(make_policy("ours"), CacheAwarePolicy)
    with pytest.raises(ConfigError, match="unknown scheduler policy 'sjf'"):
        make_policy("sjf")
    with pytest.raises(ConfigError, match="bad options"):
        make_policy("fifo", max_wait_s=1.0)
    with pytest.raises(ConfigError, match="max_wait_s > 0"):
        CacheAwarePolicy(max_wait_s=0)
    with pytest.raises(ConfigError, match="max_slowdown >= 1"):
        CacheAwarePolicy(max_slowdown=0.5)


def test_ours_suspends_the_slowdown_bound_while_the_engine_is_evicting() -> None:
    policy = make_policy("ours", max_slowdown=1.0, max_wait_s=60.0)
    policy.push(QueuedRequest(0, 0.0, 400, 0, ahead=0))  # due at once
    policy.push(QueuedRequest(1, 0.0, 400, 300))
    policy.cache_pressure(True)
    assert policy.peek(0.0).seq == 1  # type: ignore[union-attr]
    policy.cache_pressure(False)
    assert policy.peek(0.0).seq == 0  # type: ignore[union-attr]
    policy.cache_pressure(True)
    assert policy.peek(60.0).seq == 0  # type: ignore[union-attr]  # max_wait_s still holds

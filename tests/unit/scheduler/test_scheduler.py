"""Scheduler behaviour on the library's test engines (exact one-context prefix cache, no model)."""

from __future__ import annotations

import math
from dataclasses import replace

import anyio
import pytest
from _engines import PinningEngine

from agentflow.engines import (
    Capabilities,
    FunctionEngine,
    GenerationRequest,
    Message,
    RequestHints,
    TestEngine,
)
from agentflow.errors import SchedulerError
from agentflow.scheduler import BlockLRU, FifoPolicy, QueuedRequest, RequestMetrics, Scheduler

SYSTEMS = {
    name: f"You are agent {name}. " + " ".join(f"rule{i}-{name}" for i in range(40))
    for name in ("a", "b", "c")
}


def _request(agent: str, question: str, *, group: str | None = None, wf: str = "w") -> GenerationRequest:
    return GenerationRequest(
        messages=(Message("system", SYSTEMS[agent]), Message("user", question)),
        max_tokens=4,
        hints=RequestHints(workflow_id=wf, agent=agent, fanout_group=group),
    )


class GatedEngine(FunctionEngine):
    """A FunctionEngine (exact one-context cache) that holds its first request until ``gate`` is set."""

    def __init__(self) -> None:
        self.gate = anyio.Event()
        self.served: list[str] = []
        self.running = 0
        self.max_running = 0
        super().__init__(self._serve, prefix_cache=True)

    async def _serve(self, request: GenerationRequest) -> str:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.served.append(request.hints.agent or "")
        await self.gate.wait()
        self.running -= 1
        return "ok"


async def _run_interleaved(policy: str) -> tuple[GatedEngine, Scheduler]:
    engine = GatedEngine()
    # The first request holds the engine while the rest queue, then all run at once: wall-clock waits
    # mean nothing here, so the wait bound relative to FIFO is off (it has tests of its own).
    options = {"max_slowdown": math.inf} if policy == "ours" else {}
    scheduler = Scheduler(engine, policy=policy, policy_options=options)
    async with anyio.create_task_group() as tg:
        for i in range(3):
            for agent in ("a", "b", "c"):
                tg.start_soon(scheduler.generate, _request(agent, f"question {i}"))
                await anyio.wait_all_tasks_blocked()
        engine.gate.set()
    return engine, scheduler


@pytest.mark.anyio
async def test_ours_groups_shared_prefixes_and_prefills_less_than_fifo() -> None:
    fifo_engine, fifo = await _run_interleaved("fifo")
    ours_engine, ours = await _run_interleaved("ours")
    assert fifo_engine.served == ["a", "b", "c"] * 3
    assert ours_engine.served == ["a", "a", "a", "b", "b", "b", "c", "c", "c"]
    fifo_total, ours_total = fifo.metrics().total, ours.metrics().total
    assert ours_total.computed_tokens < fifo_total.computed_tokens
    assert ours_total.hit_rate > fifo_total.hit_rate
    assert ours.metrics().lower_bound_prefill_tokens == fifo.metrics().lower_bound_prefill_tokens


@pytest.mark.anyio
async def test_max_concurrency_caps_requests_in_flight() -> None:
    engine = GatedEngine()
    scheduler = Scheduler(engine, policy="fifo", max_concurrency=2)
    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(scheduler.generate, _request("a", f"q{i}"))
        await anyio.wait_all_tasks_blocked()
        assert scheduler.in_flight == 2
        assert scheduler.queued == 3
        engine.gate.set()
    assert engine.max_running == 2
    assert scheduler.metrics().total.requests == 5


@pytest.mark.anyio
async def test_cache_budget_admits_one_request_when_working_set_does_not_fit() -> None:
    engine = GatedEngine()
    scheduler = Scheduler(engine, policy="fifo", max_concurrency=4, cache_budget_tokens=120)
    async with anyio.create_task_group() as tg:
        for agent in ("a", "b", "c"):
            tg.start_soon(scheduler.generate, _request(agent, "q"))
        await anyio.wait_all_tasks_blocked()
        assert scheduler.in_flight == 1  # each prompt is ~100 tokens: two do not fit in 120
        engine.gate.set()
    assert engine.max_running == 1


@pytest.mark.anyio
async def test_metrics_cover_requests_workflows_and_lower_bound() -> None:
    seen: list[RequestMetrics] = []
    engine = TestEngine(response="fine thanks", prefix_cache=True)
    scheduler = Scheduler(engine, on_request_done=seen.append)
    first = await scheduler.generate(_request("a", "one", wf="w1"))
    second = await scheduler.generate(_request("a", "two", wf="w2"))
    m = scheduler.metrics()
    assert [r.workflow_id for r in seen] == ["w1", "w2"]
    assert set(m.workflows) == {"w1", "w2"}
    assert m.total.requests == 2
    assert second.usage.cached_tokens > 0 and first.usage.cached_tokens == 0
    assert m.total.cached_tokens == second.usage.cached_tokens
    assert m.total.computed_tokens + m.total.cached_tokens == m.total.prompt_tokens
    # Union trie: the first prompt plus the second prompt's new tail; the engine prefilled exactly that.
    assert m.lower_bound_prefill_tokens == m.total.computed_tokens
    assert m.workflows["w2"].lower_bound_prefill_tokens == second.usage.prompt_tokens
    assert all(r.pte > r.computed_tokens for r in m.requests)  # decode adds gamma * context * tokens
    assert second.usage.total_s >= second.usage.queue_s
    assert m.decisions == 2 and m.decision_us_mean > 0


@pytest.mark.anyio
async def test_mirror_cache_model_follows_engine_live_context() -> None:
    engine = TestEngine(prefix_cache=True)
    scheduler = Scheduler(engine)
    await scheduler.generate(_request("a", "one"))
    prompt_a = tuple(await engine.tokenize(await engine.render(_request("a", "one"))))
    prompt_b = tuple(await engine.tokenize(await engine.render(_request("b", "one"))))
    assert scheduler.cache_model.match(prompt_a) == len(prompt_a)
    await scheduler.generate(_request("b", "one"))
    assert scheduler.cache_model.match(prompt_b) == len(prompt_b)
    assert scheduler.cache_model.match(prompt_a) < len(prompt_a)  # the live context moved on
    assert scheduler.metrics().prediction_abs_error_tokens == 0


@pytest.mark.anyio
async def test_cancelled_queued_request_leaves_the_queue() -> None:
    engine = GatedEngine()
    scheduler = Scheduler(engine)
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.generate, _request("a", "first"))
        await anyio.wait_all_tasks_blocked()
        with anyio.CancelScope() as scope:
            tg.start_soon(scheduler.generate, _request("b", "doomed"))
            await anyio.wait_all_tasks_blocked()
            assert scheduler.queued == 1
        assert not scope.cancel_called
        tg.cancel_scope.cancel()
    assert scheduler.queued == 0
    assert scheduler.in_flight == 0


@pytest.mark.anyio
async def test_rate_limit_holds_request_in_queue_when_no_capacity() -> None:
    engine = TestEngine(prefix_cache=True)
    scheduler = Scheduler(engine, rpm=1)
    await scheduler.generate(_request("a", "one"))
    with anyio.move_on_after(0.2):
        await scheduler.generate(_request("a", "two"))
    assert scheduler.metrics().total.requests == 1
    assert scheduler.queued == 0  # the cancelled request left the queue


@pytest.mark.anyio
async def test_request_larger_than_tpm_is_scheduler_error() -> None:
    scheduler = Scheduler(TestEngine(), tpm=50)
    with pytest.raises(SchedulerError, match="raise tpm or lower max_tokens"):
        await scheduler.generate(_request("a", "q"))


@pytest.mark.anyio
async def test_pin_locks_prefix_in_engine_and_cache_model_until_unpinned() -> None:
    engine = PinningEngine()
    scheduler = Scheduler(engine, pin_ttl_s=60)
    request = _request("a", "tool call please")
    await scheduler.generate(request)
    tokens = await scheduler.pin(request)
    assert engine.pins == {tokens: 60}
    assert scheduler.metrics().pinned_prefixes == 1
    assert scheduler.cache_model.locked_tokens == len(tokens)
    await scheduler.generate(_request("b", "other"))
    assert scheduler.cache_model.match(tokens) == len(tokens)
    assert await scheduler.unpin(tokens)
    assert engine.pins == {}
    assert scheduler.cache_model.locked_tokens == 0


@pytest.mark.anyio
async def test_pin_leaves_mirror_truthful_when_engine_cannot_pin() -> None:
    engine = TestEngine(prefix_cache=True)
    scheduler = Scheduler(engine)
    request = _request("a", "tool call please")
    await scheduler.generate(request)
    tokens = await scheduler.pin(request)
    await scheduler.generate(_request("b", "other"))  # the engine's single live context moves on
    assert scheduler.cache_model.match(tokens) == engine.cached_prefix_len(tokens) < len(tokens) - 1
    assert scheduler.metrics().pinned_prefixes == 0


@pytest.mark.anyio
async def test_prewarm_runs_when_idle_and_next_request_reuses_it() -> None:
    engine = TestEngine(prefix_cache=True)
    scheduler = Scheduler(engine)
    prefix = GenerationRequest(prompt=SYSTEMS["c"] + " history so far.", hints=RequestHints(workflow_id="w"))
    assert await scheduler.prewarm(prefix)
    done = await scheduler.generate(
        GenerationRequest(
            prompt=SYSTEMS["c"] + " history so far. Tool said: 42.", hints=RequestHints(workflow_id="w")
        )
    )
    assert done.usage.cached_tokens > 80
    kinds = [r.kind for r in scheduler.metrics().requests]
    assert kinds == ["prewarm", "request"]


async def _prewarm_then_request(
    prefix: GenerationRequest, request: GenerationRequest
) -> tuple[bool, list[str]]:
    """While agent "a" holds the engine, queue a prewarm of ``prefix``, then ``request``; release the engine.
    Returns whether the prewarm ran and the agents the engine served, in order."""
    engine = GatedEngine()
    scheduler = Scheduler(engine)
    results: list[bool] = []

    async def prewarm() -> None:
        results.append(await scheduler.prewarm(prefix))

    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.generate, _request("a", "busy"))
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(prewarm)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(scheduler.generate, request)
        await anyio.wait_all_tasks_blocked()
        engine.gate.set()
    return results[0], engine.served


@pytest.mark.anyio
async def test_prewarm_is_dropped_when_a_covering_request_arrives_first() -> None:
    hints = RequestHints(agent="b")
    ran, served = await _prewarm_then_request(
        GenerationRequest(prompt=SYSTEMS["b"], hints=hints),
        GenerationRequest(prompt=SYSTEMS["b"] + " more", hints=hints),
    )
    assert not ran
    assert served == ["a", "b"]


@pytest.mark.anyio
async def test_stream_yields_chunks_and_final_usage_with_queue_wait() -> None:
    scheduler = Scheduler(TestEngine(response="one two three", prefix_cache=True))
    async with scheduler.stream(replace(_request("a", "q"), max_tokens=16)) as stream:
        chunks = [c async for c in stream]
    assert "".join(c.text for c in chunks) == "one two three"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0
    assert scheduler.metrics().total.requests == 1


@pytest.mark.anyio
async def test_closed_scheduler_refuses_requests_and_unsubscribes_from_cache_events() -> None:
    engine = TestEngine(prefix_cache=True)
    scheduler = Scheduler(engine)
    await scheduler.generate(_request("a", "q"))
    assert engine.cache_subscribers == 1
    await scheduler.aclose()
    with pytest.raises(SchedulerError, match="closed"):
        await scheduler.generate(_request("a", "q"))
    assert engine.cache_subscribers == 0


@pytest.mark.anyio
async def test_engine_error_propagates_and_frees_the_slot() -> None:
    calls: list[str] = []

    def answer(request: GenerationRequest) -> str:
        calls.append(request.hints.agent or "")
        if len(calls) == 1:
            raise RuntimeError("engine fell over")
        return "fine"

    scheduler = Scheduler(FunctionEngine(answer, prefix_cache=True))
    with pytest.raises(RuntimeError, match="fell over"):
        await scheduler.generate(_request("a", "first"))
    assert scheduler.in_flight == 0
    done = await scheduler.generate(_request("b", "second"))
    assert done.text == "fine"
    assert [r.agent for r in scheduler.metrics().requests] == ["b"]


class ForgetfulBlockEngine(FunctionEngine):
    """Declares a block prefix cache (like vLLM) but never reuses anything, so the shadow model must adapt."""

    def __init__(self) -> None:
        super().__init__(lambda request: "ok")

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(prefix_cache="block", slots=4, block_size=4)


@pytest.mark.anyio
async def test_block_model_shrinks_capacity_when_engine_reports_fewer_cached_tokens() -> None:
    scheduler = Scheduler(ForgetfulBlockEngine(), cache_budget_tokens=4000)
    model = scheduler.cache_model
    assert isinstance(model, BlockLRU)
    before = model.stats().capacity_blocks
    for i in range(3):
        await scheduler.generate(_request("a", f"q{i}"))
    stats = model.stats()
    assert stats.predictions == 3
    assert stats.capacity_blocks is not None and before is not None and stats.capacity_blocks < before
    assert scheduler.metrics().prediction_abs_error_tokens > 0


@pytest.mark.anyio
async def test_prewarm_is_dropped_when_its_agent_sends_a_request_that_tokenizes_differently() -> None:
    hints = RequestHints(workflow_id="w", agent="writer")
    # The request does not start with the prewarm's tokens (a tokenizer may split the seam differently),
    # but it is the request the prewarm prepared for: it computes the prefix itself.
    ran, served = await _prewarm_then_request(
        GenerationRequest(prompt=SYSTEMS["b"] + " Findings", hints=hints),
        GenerationRequest(prompt=SYSTEMS["b"] + " Findings:", hints=hints),
    )
    assert not ran
    assert served == ["a", "writer"]


@pytest.mark.anyio
async def test_wait_statistics_leave_out_prewarms() -> None:
    now = [0.0]
    engine = TestEngine(prefix_cache=True)
    scheduler = Scheduler(engine, clock=lambda: now[0])
    prefix = GenerationRequest(prompt=SYSTEMS["c"], hints=RequestHints(workflow_id="w", agent="c"))
    assert await scheduler.prewarm(prefix)
    await scheduler.generate(_request("a", "q"))
    rows = scheduler.metrics().requests
    assert [r.kind for r in rows] == ["prewarm", "request"]
    total = scheduler.metrics().total
    assert total.requests == 2 and total.max_queue_s == rows[1].queue_s


class RecordingPolicy(FifoPolicy):
    """FIFO that keeps every queued request, to check what the scheduler tells a policy."""

    def __init__(self) -> None:
        super().__init__()
        self.pushed: list[QueuedRequest] = []

    def push(self, item: QueuedRequest) -> None:
        self.pushed.append(item)
        super().push(item)


@pytest.mark.anyio
async def test_scheduler_tells_the_policy_each_requests_fifo_position() -> None:
    gate = anyio.Event()

    async def answer(request: GenerationRequest) -> str:
        await gate.wait()
        return "ok"

    policy = RecordingPolicy()
    scheduler = Scheduler(FunctionEngine(answer), policy=policy)
    async with anyio.create_task_group() as tg:
        for agent in ("a", "b", "c", "a"):
            tg.start_soon(scheduler.generate, _request(agent, "q"))
            await anyio.wait_all_tasks_blocked()
        gate.set()
    # The first runs at once; the others queue behind 0, 1 and 2 queued requests (FIFO positions).
    assert [item.ahead for item in policy.pushed] == [0, 0, 1, 2]

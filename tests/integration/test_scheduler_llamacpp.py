"""The scheduler on the real embedded engine (SmolLM2-135M on CPU, short prompts and generations)."""

from __future__ import annotations

import dataclasses

import anyio
import pytest

from agentflow.engines import GenerationRequest, LlamaCppEngine, Message, RequestHints
from agentflow.scheduler import Scheduler

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SYSTEMS = {
    "baker": "You are a careful assistant for a small bakery. You answer questions about bread, cakes and "
    "opening hours in one short sentence.",
    "mechanic": "You are a bicycle mechanic. You explain repairs of brakes, chains and gears step by step, "
    "briefly and without jargon.",
}


def _request(agent: str, question: str) -> GenerationRequest:
    return GenerationRequest(
        messages=(Message("system", SYSTEMS[agent]), Message("user", question)),
        max_tokens=4,
        hints=RequestHints(workflow_id=agent, agent=agent),
    )


async def _interleaved(policy: str) -> tuple[Scheduler, list[str]]:
    """Four requests of two agents arrive alternating while the engine is busy with a first one."""
    engine = LlamaCppEngine(n_ctx=1024, snapshot_bytes=0)  # live context only: reuse depends on order
    scheduler = Scheduler(engine, policy=policy)
    order: list[str] = []

    async def ask(agent: str, question: str) -> None:
        await scheduler.generate(_request(agent, question))
        order.append(agent)

    await engine.tokenize("load the model first")
    async with anyio.create_task_group() as tg:
        tg.start_soon(ask, "baker", "When do you open?")
        while scheduler.in_flight == 0:  # wait until the first request is on the engine
            await anyio.sleep(0.01)
        for i in range(2):
            for agent in ("mechanic", "baker"):
                tg.start_soon(ask, agent, f"Question number {i}?")
                await anyio.sleep(0.05)
    await scheduler.aclose()
    return scheduler, order


async def test_ours_reuses_more_kv_than_fifo_on_interleaved_agents() -> None:
    fifo, fifo_order = await _interleaved("fifo")
    ours, ours_order = await _interleaved("ours")
    assert fifo_order == ["baker", "mechanic", "baker", "mechanic", "baker"]
    assert ours_order == ["baker", "baker", "baker", "mechanic", "mechanic"]
    f, o = fifo.metrics(), ours.metrics()
    assert o.total.computed_tokens < f.total.computed_tokens
    assert o.total.prompt_tokens == f.total.prompt_tokens
    assert o.lower_bound_prefill_tokens == f.lower_bound_prefill_tokens


async def test_cache_model_mirrors_engine_snapshots_and_predicts_reuse() -> None:
    engine = LlamaCppEngine(n_ctx=1024, snapshot_bytes=64 * 1024 * 1024, min_snapshot_tokens=8)
    scheduler = Scheduler(engine, policy="ours")
    for agent, question in [
        ("baker", "Bread?"),
        ("mechanic", "Chain?"),
        ("baker", "Cake?"),
        ("mechanic", "Gears?"),
    ]:
        await scheduler.generate(_request(agent, question))
    model = scheduler.cache_model
    for agent in SYSTEMS:
        tokens = tuple(await engine.tokenize(await engine.render(_request(agent, "Anything else?"))))
        assert min(model.match(tokens), len(tokens) - 1) == engine.cached_prefix_len(tokens)
    m = scheduler.metrics()
    # Every request after the first two finds its agent's prefix (live or in a snapshot), as predicted.
    assert [r.cached_tokens > 20 for r in m.requests] == [False, False, True, True]
    assert m.prediction_abs_error_tokens <= 2 * len(m.requests)
    await scheduler.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_abandoned_stream_releases_the_engine_slot_and_the_admission(anyio_backend: str) -> None:
    engine = LlamaCppEngine(n_ctx=1024)
    scheduler = Scheduler(engine, max_concurrency=1, cache_budget_tokens=4096)
    request = dataclasses.replace(_request("baker", "Tell me about your sourdough."), max_tokens=32)
    try:
        async with scheduler.stream(request) as chunks:
            async for chunk in chunks:
                if chunk.text:
                    assert engine.busy and scheduler.in_flight == 1
                    assert scheduler.cache_model.locked_tokens > 0
                    break
        # No checkpoint since the block exited: both were released there, not by the garbage collector.
        assert not engine.busy
        assert scheduler.in_flight == 0 and scheduler.cache_model.locked_tokens == 0
        again = await scheduler.generate(dataclasses.replace(request, max_tokens=2))
        assert again.usage.cached_tokens == again.usage.prompt_tokens - 1  # the abandoned prefill stayed
        m = scheduler.metrics()
        assert m.total.requests == 1  # the abandoned stream is not a finished request
        assert m.prediction_abs_error_tokens == 0  # the mirror saw the abandoned request's live context
    finally:
        await scheduler.aclose()

"""Regression: saving the live context may evict the snapshot a request planned to restore."""

from __future__ import annotations

import pytest

from agentflow.engines import GenerationRequest, LlamaCppEngine

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

A = (
    "The history of the city begins with a small fishing village on the river bank, where traders met "
    "every spring to exchange salt and wool for grain. "
) * 2
B = (
    "Photosynthesis converts light energy into chemical energy stored in sugars, using water and carbon "
    "dioxide, and releasing oxygen as a by-product. "
) * 2


async def test_request_survives_its_planned_snapshot_being_evicted_by_the_spill() -> None:
    probe = LlamaCppEngine()
    try:
        await probe.generate(GenerationRequest(prompt=A, max_tokens=1))
        await probe.generate(GenerationRequest(prompt=B, max_tokens=1))
        size = max(s.nbytes for s in probe.snapshots())
    finally:
        await probe.aclose()
    # Room for one snapshot: A is saved when B arrives; the third request plans to restore A, and saving B
    # first evicts A.
    engine = LlamaCppEngine(snapshot_bytes=int(size * 1.5))
    try:
        await engine.generate(GenerationRequest(prompt=A, max_tokens=1))
        await engine.generate(GenerationRequest(prompt=B, max_tokens=1))
        out = await engine.generate(GenerationRequest(prompt=A + "Later,", max_tokens=1))
        assert out.usage.prompt_tokens == out.usage.cached_tokens + out.usage.computed_tokens
        again = await engine.generate(GenerationRequest(prompt=A + "Later,", max_tokens=1))
        assert again.usage.cached_tokens > 0
    finally:
        await engine.aclose()


C = (
    "The violin has four strings tuned in perfect fifths and is played with a bow strung with horsehair "
    "rosin makes the hair grip the strings. "
) * 2


async def _one_snapshot_size() -> int:
    probe = LlamaCppEngine()
    try:
        await probe.generate(GenerationRequest(prompt=A, max_tokens=1))
        await probe.generate(GenerationRequest(prompt=B, max_tokens=1))
        return max(s.nbytes for s in probe.snapshots())
    finally:
        await probe.aclose()


async def test_pinned_prefix_survives_other_agents_and_is_reused() -> None:
    from agentflow.scheduler import Scheduler

    size = await _one_snapshot_size()
    cached: dict[bool, int] = {}
    for pin in (False, True):
        engine = LlamaCppEngine(snapshot_bytes=int(size * 1.5))
        scheduler = Scheduler(engine)
        try:
            first = GenerationRequest(prompt=A, max_tokens=1)
            await scheduler.generate(first)
            if pin:
                await scheduler.pin(first, ttl_s=600)  # agent A now waits on a tool call
            await scheduler.generate(GenerationRequest(prompt=B, max_tokens=1))  # A's context saved
            await scheduler.generate(GenerationRequest(prompt=C, max_tokens=1))  # B's save would evict A
            resumed = await scheduler.generate(GenerationRequest(prompt=A + "Then,", max_tokens=1))
            cached[pin] = resumed.usage.cached_tokens
            prompt_len = len(await engine.tokenize(A))
        finally:
            await scheduler.aclose()
    assert cached[False] <= 2  # at most the shared first token(s): A's snapshot was evicted
    assert cached[True] >= prompt_len - 2  # A's whole prompt came back from the pinned snapshot


async def test_spill_never_evicts_the_snapshot_the_request_restores() -> None:
    size = await _one_snapshot_size()
    # Room for one snapshot: A is saved when B arrives. Restoring A for the third request needs B's live
    # context saved first, which would evict A: that spill is skipped, and A is restored.
    engine = LlamaCppEngine(snapshot_bytes=int(size * 1.5))
    try:
        await engine.generate(GenerationRequest(prompt=A, max_tokens=1))
        await engine.generate(GenerationRequest(prompt=B, max_tokens=1))
        a_tokens = len(await engine.tokenize(A))
        out = await engine.generate(GenerationRequest(prompt=A + "Later,", max_tokens=1))
        assert out.usage.cached_tokens is not None
        assert out.usage.cached_tokens >= a_tokens - 2  # all of A but the seam's token(s)
        assert engine.stats().restores == 1
    finally:
        await engine.aclose()

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

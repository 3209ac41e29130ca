"""Typed inference on the real embedded engine (llama.cpp + the bundled SmolLM2 model)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from enum import StrEnum

import pytest
from pydantic import BaseModel, Field

from agentflow import Ok, infer, par, run, usage_of
from agentflow.dsl import LLMCall
from agentflow.engines import LlamaCppEngine

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


class Color(StrEnum):
    red = "red"
    green = "green"
    blue = "blue"


class Fruit(BaseModel):
    name: str = Field(min_length=1)
    color: Color
    count: int


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[LlamaCppEngine]:
    eng = LlamaCppEngine(seed=7)
    yield eng
    await eng.aclose()


async def test_infer_returns_valid_instance_on_real_engine(engine: LlamaCppEngine) -> None:
    out = await run(infer(Fruit, "Describe three ripe bananas as JSON.", max_tokens=64), engine=engine)
    assert isinstance(out, Ok), out
    assert isinstance(out.value, Fruit)
    assert out.value.color in set(Color)
    usage = usage_of(out.trace)
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.prompt_tokens == usage.cached_tokens + usage.computed_tokens
    assert usage.total_s > 0


async def test_parallel_infer_shares_the_prompt_prefix(engine: LlamaCppEngine) -> None:
    prompts = [f"Describe {n} {fruit} as JSON." for n, fruit in ((2, "apples"), (5, "limes"), (1, "plum"))]
    out = await run(par.map(lambda p: infer(Fruit, p, max_tokens=64), prompts), engine=engine)
    assert isinstance(out, Ok), out
    assert len(out.value) == 3
    calls = [e for e in out.trace if isinstance(e, LLMCall)]
    assert len(calls) >= 3
    # Every request starts with the same system prompt (the schema), so later ones reuse its KV.
    assert sum(c.cached_tokens for c in calls[1:]) > 0

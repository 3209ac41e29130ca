"""Plans embedded in applications: asyncio and trio, no global state between runs."""

from __future__ import annotations

import anyio
import pytest

from agentflow import Ok, run
from agentflow.dsl import LLMCall
from agentflow.engines import FunctionEngine, GenerationRequest
from agentflow.plans import load_plan_text

PLAN = """apiVersion: agentflow/v1
kind: Plan
name: two
inputs:
  who: {type: string}
steps:
  - id: hello
    prompt: "hello {{inputs.who}}"
  - id: again
    prompt: "again {{steps.hello}}"
"""


def _engine(tag: str) -> FunctionEngine:
    def answer(request: GenerationRequest) -> str:
        assert request.messages is not None
        return f"{tag}:{request.messages[-1].content.split()[-1]}"

    return FunctionEngine(answer, name=tag)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_concurrent_runs_with_different_engines_do_not_interfere(anyio_backend: str) -> None:
    loaded = load_plan_text(PLAN)
    engines = {name: _engine(name) for name in ("a", "b")}
    results: dict[str, object] = {}

    async def one(name: str) -> None:
        results[name] = await run(loaded.workflow, {"who": name}, engine=engines[name], run_id=f"run-{name}")

    async with anyio.create_task_group() as tg:
        for name in engines:
            tg.start_soon(one, name)
    for name, engine in engines.items():
        out = results[name]
        assert isinstance(out, Ok)
        assert out.value == {"result": f"{name}:{name}:{name}"}
        assert len(engine.requests) == 2
        assert {r.hints.workflow_id for r in engine.requests} == {f"run-{name}"}
        assert {e.engine for e in out.trace if isinstance(e, LLMCall)} == {name}

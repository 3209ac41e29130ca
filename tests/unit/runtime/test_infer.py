"""Typed inference and LLM steps with the test doubles (no model files)."""

from __future__ import annotations

import json
from enum import StrEnum

import anyio
import pytest
from pydantic import BaseModel, Field

from agentflow import Err, Ok, flow, generate, infer, par, run, run_sync, usage_of
from agentflow.dsl import LLMCall
from agentflow.engines import FunctionEngine, GenerationRequest, TestEngine
from agentflow.errors import ConfigError, EngineRequestError, InferenceError

pytestmark = pytest.mark.anyio


class Mood(StrEnum):
    happy = "happy"
    sad = "sad"


class Verdict(BaseModel):
    mood: Mood
    score: int = Field(ge=0, le=10)


async def test_infer_returns_a_valid_instance_from_schema_constrained_engine() -> None:
    out = await run(infer(Verdict, "How does this sound: great!"), engine=TestEngine())
    assert isinstance(out, Ok)
    assert isinstance(out.value, Verdict)
    calls = [e for e in out.trace if isinstance(e, LLMCall)]
    assert len(calls) == 1
    assert calls[0].schema == "Verdict" and calls[0].valid is True


async def test_infer_sends_the_json_schema_and_instructions() -> None:
    seen: list[GenerationRequest] = []

    def answer(req: GenerationRequest) -> str:
        seen.append(req)
        return json.dumps({"mood": "sad", "score": 2})

    out = await run(infer(Verdict, "rainy day"), engine=FunctionEngine(answer))
    assert out.unwrap() == Verdict(mood=Mood.sad, score=2)
    req = seen[0]
    # The model's schema in declaration order, with its objects closed to undeclared keys.
    assert req.json_schema == {**Verdict.model_json_schema(), "additionalProperties": False}
    assert list(req.json_schema["properties"]) == ["mood", "score"]
    assert req.messages is not None
    assert req.messages[0].role == "system" and "JSON Schema" in req.messages[0].content
    assert req.messages[-1].content == "rainy day"


async def test_infer_can_continue_a_conversation_without_its_own_system_message() -> None:
    from agentflow.engines import Message

    seen: list[GenerationRequest] = []

    def answer(req: GenerationRequest) -> str:
        seen.append(req)
        return json.dumps({"mood": "happy", "score": 9})

    talk = (Message("system", "You rate moods."), Message("user", "sunny"), Message("assistant", "ok"))
    out = await run(infer(Verdict, talk, schema_in_system=False), engine=FunctionEngine(answer))
    assert out.unwrap().score == 9
    assert seen[0].messages == talk  # sent unchanged, so an engine's cached prefix matches
    # Decoding is still constrained (objects closed to undeclared keys).
    assert seen[0].json_schema == {**Verdict.model_json_schema(), "additionalProperties": False}
    with pytest.raises(ConfigError, match="schema_in_system"):
        infer(Verdict, talk, system="extra", schema_in_system=False)


async def test_infer_repairs_with_the_validation_error_in_the_prompt() -> None:
    answers = iter(
        ['{"mood": "angry", "score": 3}', '{"mood": "happy", "score": 11}', '{"mood": "happy", "score": 7}']
    )
    seen: list[GenerationRequest] = []

    def answer(req: GenerationRequest) -> str:
        seen.append(req)
        return next(answers)

    out = await run(infer(Verdict, "x", max_repairs=2), engine=FunctionEngine(answer))
    assert out.unwrap() == Verdict(mood=Mood.happy, score=7)
    assert len(seen) == 3
    last = seen[-1].messages
    assert last is not None
    assert "score" in last[-1].content and "not valid" in last[-1].content
    assert last[-2].role == "assistant" and "11" in last[-2].content


async def test_infer_gives_inference_error_with_raw_text_after_bounded_repairs() -> None:
    out = await run(infer(Verdict, "x", max_repairs=1), engine=FunctionEngine(lambda r: "not json at all"))
    assert isinstance(out, Err)
    assert isinstance(out.error, InferenceError)
    assert out.error.raw == "not json at all"
    assert out.error.attempts == 2
    assert "Verdict" in str(out.error)


async def test_infer_without_engine_is_a_config_error() -> None:
    out = await run(infer(Verdict, "x"))
    assert isinstance(out, Err)
    assert isinstance(out.error, ConfigError)
    assert "engine" in str(out.error)


async def test_engine_exceptions_become_engine_errors() -> None:
    def broken(req: GenerationRequest) -> str:
        raise EngineRequestError("server said 500")

    out = await run(generate("hi"), engine=FunctionEngine(broken))
    assert isinstance(out, Err)
    assert isinstance(out.error, EngineRequestError)


async def test_parallel_infer_and_usage_totals() -> None:
    @flow
    async def classify_all(texts: list[str]) -> list[Verdict]:
        return await par.map(lambda t: infer(Verdict, t), texts)

    out = await run(classify_all, {"texts": ["a", "b", "c"]}, engine=TestEngine())
    assert isinstance(out, Ok)
    assert len(out.value) == 3
    usage = usage_of(out.trace)
    assert usage.prompt_tokens > 0
    assert usage.prompt_tokens == usage.cached_tokens + usage.computed_tokens
    assert usage.completion_tokens > 0


async def test_run_rejects_inputs_for_a_flow_value() -> None:
    out = await run(generate("x"), {"a": 1}, engine=TestEngine())
    assert isinstance(out, Err) and isinstance(out.error, ConfigError)
    assert "already a Flow" in str(out.error)


def test_run_sync_with_engine_spec_closes_owned_engine() -> None:
    out = run_sync(generate("hello"), engine="test:")
    assert out.unwrap().text.startswith("echo: hello")


async def test_two_runs_with_different_engines_do_not_interfere() -> None:
    results: dict[str, str] = {}

    async def one(name: str) -> None:
        out = await run(generate("q"), engine=TestEngine(response=f"from {name}"))
        results[name] = out.unwrap().text

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "a")
        tg.start_soon(one, "b")
    assert results == {"a": "from a", "b": "from b"}


async def test_token_budget_stops_llm_calls_past_the_limit() -> None:
    from agentflow.errors import BudgetExceededError

    @flow
    async def chatty() -> int:
        n = 0
        while True:
            await generate("say something")
            n += 1

    out = await run(chatty(), engine=TestEngine(response="words " * 20), max_llm_tokens=100)
    assert isinstance(out, Err)
    assert isinstance(out.error, BudgetExceededError)
    assert out.error.used >= 100 and out.error.limit == 100
    calls = [e for e in out.trace if e.kind == "llm.call"]
    assert 1 <= len(calls) < 10


async def test_run_rejects_context_together_with_run_options() -> None:
    from agentflow.runtime import RunContext

    for options in ({"engine": TestEngine()}, {"max_llm_tokens": 10}, {"run_id": "x"}):
        out = await run(generate("x"), context=RunContext(), **options)  # type: ignore[arg-type]
        assert isinstance(out, Err) and isinstance(out.error, ConfigError)
        assert "not both" in str(out.error)

"""``agentflow.stream``: events as they happen, token deltas included, ending with the outcome."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from agentflow import Err, Ok, flow, generate, step, stream
from agentflow.dsl import LLMCall, StepEnded, StepReplayed, StepStarted, TokenDelta, ToolCall, named
from agentflow.engines import TestEngine
from agentflow.errors import ConfigError
from agentflow.plans import load_plan_text
from agentflow.secrets import secret

pytestmark = pytest.mark.anyio
BACKENDS = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])


@BACKENDS
async def test_token_deltas_arrive_before_the_run_ends_and_spell_the_completion(anyio_backend: str) -> None:
    @flow
    async def two_calls() -> str:
        first = await named("first", generate("one two three four five six"))
        second = await named("second", generate("seven eight nine"))
        return first.text + "|" + second.text

    items = []
    async with stream(two_calls(), engine=TestEngine()) as events:
        async for item in events:
            items.append(item)
    outcome = items[-1]
    assert isinstance(outcome, Ok) and events.outcome is outcome
    calls = [e for e in items if isinstance(e, LLMCall)]
    assert len(calls) == 2
    for call in calls:
        deltas = [e for e in items if isinstance(e, TokenDelta) and e.call_id == call.call_id]
        assert len(deltas) > 1  # streamed piece by piece
        assert "".join(d.text for d in deltas) == call.completion
        # every delta came before its call ended, and before the outcome
        assert max(items.index(d) for d in deltas) < items.index(call)
    assert outcome.value == f"{calls[0].completion}|{calls[1].completion}"
    # the live events are the trace's events (deltas are live-only)
    assert [e for e in items if not isinstance(e, TokenDelta | Ok | Err)] == list(outcome.trace)


@BACKENDS
async def test_breaking_out_of_the_stream_cancels_the_run(anyio_backend: str) -> None:
    finished: list[str] = []

    @step
    async def slow() -> None:
        await anyio.sleep(3600)
        finished.append("slow")

    @flow
    async def work() -> None:
        await named("quick", generate("hello"))
        await slow()
        finished.append("work")

    seen = []
    with anyio.fail_after(60):  # a hang would fail here; nothing is timed
        async with stream(work(), engine=TestEngine()) as events:
            async for item in events:
                seen.append(item)
                if isinstance(item, StepStarted) and item.path == "slow":
                    break
    assert finished == []
    assert any(isinstance(e, LLMCall) for e in seen)
    assert events.outcome is None


@BACKENDS
async def test_a_failing_run_streams_its_err_last(anyio_backend: str) -> None:
    loaded = load_plan_text(
        """
apiVersion: agentflow/v1
kind: Plan
name: failing
tools: ["agentflow.plans.builtin_tools:calculator"]
steps:
  - id: divide
    tool: calculator
    args: {expression: "1 / 0"}
""",
        file="failing.yaml",
    )
    async with stream(loaded) as events:
        items = [item async for item in events]
    assert isinstance(items[-1], Err)
    assert [e.status for e in items if isinstance(e, ToolCall)] == ["error"]
    assert [e.ok for e in items if isinstance(e, StepEnded)] == [False, False]


async def test_streamed_events_are_redacted_of_revealed_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_DEMO_TOKEN", "tok-streamed-424242")

    @step
    async def leak() -> str:
        value = secret("STREAM_DEMO_TOKEN").reveal()
        completion = await generate(f"the token is {value}")
        return completion.text

    async with stream(leak(), engine=TestEngine()) as events:
        items = [item async for item in events]
    assert "tok-streamed-424242" not in repr(items)
    assert any(isinstance(e, TokenDelta) for e in items)


async def test_stream_refuses_its_own_listener_options() -> None:
    with pytest.raises(TypeError):
        async with stream(generate("x"), on_event=print):  # type: ignore[call-arg]
            pass
    async with stream(generate("x"), engine=TestEngine(), max_llm_tokens=0) as events:
        items = [item async for item in events]
    (only,) = items  # a set-up mistake is a value like any failure: the one item is its Err
    assert isinstance(only, Err) and isinstance(only.error, ConfigError)


@BACKENDS
async def test_leaving_a_journaled_stream_loses_nothing_that_committed(
    anyio_backend: str, tmp_path: Path
) -> None:
    ran: list[str] = []
    release = {"slow": False}

    @step
    async def fetch() -> str:
        ran.append("fetch")
        return "data"

    @step
    async def slow(data: str) -> str:
        ran.append("slow")
        if not release["slow"]:
            await anyio.sleep(3600)
        return data.upper()

    @flow
    async def work() -> str:
        return await slow(await fetch())

    journal = tmp_path / "journal.db"
    async with stream(work, run_id="s1", journal=journal) as events:
        async for item in events:
            if isinstance(item, StepStarted) and item.path == "slow":
                break
    assert ran == ["fetch", "slow"]
    release["slow"] = True
    async with stream(work, run_id="s1", journal=journal) as events:
        items = [item async for item in events]
    assert isinstance(items[-1], Ok) and items[-1].value == "DATA"
    assert ran == ["fetch", "slow", "slow"]  # fetch was replayed from the journal, not run again
    assert [e.path for e in items if isinstance(e, StepReplayed)] == ["fetch"]

"""ReAct and the LLMCompiler on a real journal (SQLite file and PostgreSQL schema): a run that fails or is
cancelled part-way resumes with the same run id, calls no tool again that ended before it stopped, makes no
LLM request again that finished, and gives the answer of an uninterrupted run.

The models are scripted with ``FunctionEngine`` (answers derived from the prompts, so a resumed run that
fed the model other data would answer differently); the tools are real functions run by the real executor,
and count their calls. Tool bodies never await, so a cancellation cannot cut a call in half: every call
either ran whole or not at all, and exactly-once is exact.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

import anyio
import pytest
from pydantic import BaseModel

from agentflow import Err, Ok, run
from agentflow.agents import CompilerResult, ReactResult, llm_compiler, react
from agentflow.dsl import Flow, StepReplayed
from agentflow.engines import (
    Chunk,
    ChunkStream,
    Completion,
    FunctionEngine,
    GenerationRequest,
    ToolCallRequest,
    Usage,
    closing_stream,
    render_messages,
)
from agentflow.errors import EngineError, StepBudgetExceededError
from agentflow.executors import TaskResult, ToolRegistry
from agentflow.runs import show_run

pytestmark = pytest.mark.anyio

POPULATION = {"paris": 2_100_000, "rome": 2_800_000, "oslo": 700_000}


class Population(BaseModel):
    city: str
    people: int


@dataclass
class World:
    """What the tools did and the model answered, over every attempt of a run.

    Attributes:
        calls: Tool calls that ran, by call (``population('rome')``).
        answered: LLM requests the engine finished, by prompt.
        started: LLM requests the engine began, by prompt.
        fail_request: Fail the n-th request the engine begins (1-based), once.
        cancel_at: Cancel the run right after this tool call ran, once.
        scope: The cancel scope the run runs in.
    """

    calls: Counter[str] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)
    started: Counter[str] = field(default_factory=Counter)
    fail_request: int | None = None
    cancel_at: str | None = None
    scope: anyio.CancelScope | None = None

    def call(self, key: str) -> None:
        self.calls[key] += 1
        if key == self.cancel_at:
            self.cancel_at = None
            assert self.scope is not None
            self.scope.cancel()


def tools_for(world: World) -> ToolRegistry:
    async def population(city: str) -> Population:
        """Population of a city.

        Args:
            city: The city name.
        """
        world.call(f"population({city!r})")
        return Population(city=city, people=POPULATION[city])

    async def add(a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: First.
            b: Second.
        """
        world.call(f"add({a}, {b})")
        return a + b

    return ToolRegistry([population, add])


class CountingEngine(FunctionEngine):
    """A scripted engine that counts the requests it began and finished (by prompt) and fails one on cue."""

    def __init__(
        self, world: World, fn: Callable[[GenerationRequest], str | Completion], *, tool_calling: bool
    ) -> None:
        super().__init__(fn, tool_calling=tool_calling)
        self.world = world

    def _start(self, request: GenerationRequest) -> str:
        key = render_messages(request)
        self.world.started[key] += 1
        if (
            self.world.fail_request is not None
            and sum(self.world.started.values()) == self.world.fail_request
        ):
            self.world.fail_request = None
            raise RuntimeError("the model server went away")
        return key

    async def generate(self, request: GenerationRequest) -> Completion:
        key = self._start(request)
        completion = await super().generate(request)
        self.world.answered[key] += 1
        return completion

    def stream(self, request: GenerationRequest) -> ChunkStream:
        return closing_stream(self._logged_chunks(request))

    async def _logged_chunks(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        key = self._start(request)
        async with super().stream(request) as chunks:
            async for chunk in chunks:
                yield chunk
        self.world.answered[key] += 1


def _people(text: str) -> list[int]:
    return [int(n) for n in re.findall(r'"people": (\d+)', text)]


# -- the scripted models ---------------------------------------------------------------------------------------


def compiler_model(request: GenerationRequest) -> str:
    """Plans Paris + Rome, then Oslo on top (a replan); answers with the last sum the results show."""
    assert request.messages is not None
    user = request.messages[1].content
    if request.json_schema is not None and request.json_schema.get("type") == "array":
        if "Previous plan" not in user:
            return json.dumps(
                [
                    {"tool": "population", "args": {"city": "paris"}},
                    {"tool": "population", "args": {"city": "rome"}},
                    {"tool": "add", "args": {"a": "$1.people", "b": "$2.people"}},
                ]
            )
        return json.dumps(
            [
                {"tool": "population", "args": {"city": "oslo"}},
                {"tool": "add", "args": {"a": "$3", "b": "$4.people"}},
            ]
        )
    results = request.messages[-1].content
    if '<result id="5"' not in results:
        return json.dumps({"action": "replan", "feedback": "add Oslo"})
    total = re.search(r'<result id="5"[^>]*>\n(\d+)', results)
    assert total is not None, results
    return json.dumps({"action": "finish", "answer": f"{total.group(1)} people"})


def react_model(request: GenerationRequest) -> str:
    """Looks up Paris, then Rome, adds what it saw, and answers with the sum."""
    assert request.messages is not None
    seen = "\n".join(m.content for m in request.messages if m.role == "user")
    turn = sum(1 for m in request.messages if m.role == "assistant")
    if turn < 2:
        city = ("paris", "rome")[turn]
        return json.dumps({"thought": "look up", "action": {"tool": "population", "args": {"city": city}}})
    if turn == 2:
        a, b = _people(seen)
        return json.dumps({"thought": "sum", "action": {"tool": "add", "args": {"a": a, "b": b}}})
    total = request.messages[-1].content.split("\n")[2]
    return json.dumps({"thought": "done", "action": {"final_answer": f"{total} people"}})


def _calls(*items: tuple[str, str, dict[str, object]]) -> Completion:
    return Completion(
        "",
        Usage(completion_tokens=5),
        "tool_calls",
        "scripted",
        tuple(ToolCallRequest(cid, name, json.dumps(args)) for cid, name, args in items),
    )


def native_model(request: GenerationRequest) -> Completion | str:
    """Looks up Paris and Rome in parallel, adds what it saw, and answers with the sum."""
    assert request.messages is not None
    tool_texts = [m.content for m in request.messages if m.role == "tool"]
    if not tool_texts:
        return _calls(("c1", "population", {"city": "paris"}), ("c2", "population", {"city": "rome"}))
    if len(tool_texts) == 2:
        a, b = _people("\n".join(tool_texts))
        return _calls(("c3", "add", {"a": a, "b": b}))
    return f"{tool_texts[-1]} people"


# -- the runs ----------------------------------------------------------------------------------------------------

Agent = Callable[[ToolRegistry], "Flow[ReactResult] | Flow[CompilerResult]"]

AGENTS: dict[str, tuple[Agent, Callable[[GenerationRequest], str | Completion], bool]] = {
    "compiler": (lambda t: llm_compiler("People in Paris, Rome and Oslo?", t), compiler_model, False),
    "react": (lambda t: react("People in Paris and Rome?", t, max_steps=6), react_model, False),
    "react-native": (lambda t: react("People in Paris and Rome?", t, max_steps=6), native_model, True),
}


async def attempt(
    world: World, agent: str, run_id: str, journal: str, max_steps: int | None = None
) -> Ok[object] | Err | None:
    """One attempt of the run (``None`` when it was cancelled)."""
    make, model, native = AGENTS[agent]
    engine = CountingEngine(world, model, tool_calling=native)
    out: Ok[object] | Err | None = None
    with anyio.CancelScope() as scope:
        world.scope = scope
        flow = make(tools_for(world))
        out = await run(flow, engine=engine, run_id=run_id, journal=journal, max_steps=max_steps)
    return out


def results_of(value: object) -> dict[int, tuple[str, object]]:
    assert isinstance(value, ReactResult | CompilerResult)
    return {i: (r.status.value, r.value) for i, r in value.results.items()}


@pytest.fixture
def db(journal_db: str) -> str:
    return journal_db


async def baseline(agent: str, db: str) -> tuple[World, Ok[object]]:
    world = World()
    out = await attempt(world, agent, f"{agent}-baseline", db)
    assert isinstance(out, Ok), out
    assert all(n == 1 for n in world.calls.values()), world.calls
    return world, out


FAILING_REQUESTS = {"compiler": 4, "react": 4, "react-native": 3}
CANCELLING_CALLS = {
    "compiler": [
        "population('paris')",
        "add(2100000, 2800000)",
        "population('oslo')",
        "add(4900000, 700000)",
    ],
    "react": ["population('paris')", "population('rome')", "add(2100000, 2800000)"],
    "react-native": ["population('paris')", "population('rome')", "add(2100000, 2800000)"],
}


def check_exactly_once(world: World, base: World, out: Ok[object] | Err | None, want: Ok[object]) -> None:
    assert isinstance(out, Ok), out
    assert out.value.answer == want.value.answer  # type: ignore[attr-defined]
    assert results_of(out.value) == results_of(want.value)
    # Every tool call ran exactly once over both attempts; every LLM request finished exactly once.
    assert world.calls == base.calls
    assert world.answered == base.answered


@pytest.mark.parametrize("agent", list(AGENTS))
async def test_resumed_agent_after_an_engine_failure_repeats_no_finished_call(agent: str, db: str) -> None:
    base, want = await baseline(agent, db)
    for n in range(1, FAILING_REQUESTS[agent] + 1):
        world = World(fail_request=n)
        run_id = f"{agent}-fail-{n}"
        failed = await attempt(world, agent, run_id, db)
        assert isinstance(failed, Err) and isinstance(failed.error, EngineError), failed
        assert (await show_run(run_id, db)).run.status == "failed"
        resumed = await attempt(world, agent, run_id, db)
        check_exactly_once(world, base, resumed, want)
        # The request that failed is the only one made twice.
        assert sum(world.started.values()) == sum(base.started.values()) + 1
        assert isinstance(resumed, Ok)
        assert any(isinstance(e, StepReplayed) for e in resumed.trace) == (n > 1)


@pytest.mark.parametrize("agent", list(AGENTS))
async def test_resumed_agent_after_cancellation_calls_no_tool_twice(agent: str, db: str) -> None:
    base, want = await baseline(agent, db)
    for key in CANCELLING_CALLS[agent]:
        world = World(cancel_at=key)
        run_id = f"{agent}-cancel-{key}"
        assert await attempt(world, agent, run_id, db) is None
        assert world.calls[key] == 1
        resumed = await attempt(world, agent, run_id, db)
        check_exactly_once(world, base, resumed, want)


@pytest.mark.parametrize("agent", list(AGENTS))
async def test_completed_agent_run_replays_typed_results_without_calls(agent: str, db: str) -> None:
    world = World()
    first = await attempt(world, agent, f"{agent}-done", db)
    assert isinstance(first, Ok), first
    calls, answered = Counter(world.calls), Counter(world.answered)
    again = await attempt(world, agent, f"{agent}-done", db)
    assert isinstance(again, Ok), again
    assert world.calls == calls and world.answered == answered
    assert results_of(again.value) == results_of(first.value)
    value = again.value
    assert isinstance(value, ReactResult | CompilerResult)
    looked_up = [r.value for r in value.results.values() if r.task.tool == "population"]
    assert looked_up and all(isinstance(v, Population) for v in looked_up)


# max_steps that refuses a tool call, and the calls made before it (LLM calls count too).
STEP_BUDGETS = {"compiler": (3, 2), "react": (3, 1), "react-native": (2, 1)}


@pytest.mark.parametrize("agent", list(AGENTS))
async def test_agent_stopped_by_its_step_budget_resumes_with_a_larger_one_and_makes_the_refused_call(
    agent: str, db: str
) -> None:
    """The budget refused a tool call (it was not made): the step holding it is not journaled, so the
    resumed run makes the call, and each call is made once."""
    base, want = await baseline(agent, db)
    world = World()
    budget, calls_made = STEP_BUDGETS[agent]
    stopped = await attempt(world, agent, "budget", db, max_steps=budget)
    assert isinstance(stopped, Err) and isinstance(stopped.error, StepBudgetExceededError), stopped
    assert "a call of tool" in stopped.error.message
    assert sum(world.calls.values()) == calls_made
    resumed = await attempt(world, agent, "budget", db)
    check_exactly_once(world, base, resumed, want)


async def test_compiler_round_replayed_from_the_journal_restores_results_for_later_rounds(db: str) -> None:
    """Round 1 committed, the run failed in round 2's planner: the resumed round 2 references $1..$3 (restored
    from the journal, typed: ``$2.people`` needs the model) and its joiner sees all five results."""
    base, want = await baseline("compiler", db)
    world = World(fail_request=3)
    assert isinstance(await attempt(world, "compiler", "restore", db), Err)
    assert world.calls == Counter(["population('paris')", "population('rome')", "add(2100000, 2800000)"])
    resumed = await attempt(world, "compiler", "restore", db)
    check_exactly_once(world, base, resumed, want)
    assert isinstance(resumed, Ok)
    value = resumed.value
    assert isinstance(value, CompilerResult)
    assert [t.id for t in value.tasks] == [1, 2, 3, 4, 5]
    assert value.results[5].value == 5_600_000 and value.answer == "5600000 people"
    assert isinstance(value.results[1], TaskResult) and isinstance(value.results[1].value, Population)

"""Journaled agents on the embedded llama.cpp engine with the bundled SmolLM2-135M: a run cancelled inside a
tool call resumes from its SQLite journal without calling a finished tool again or asking the model again
what it answered, and gives the answer of an uninterrupted run.

Determinism as in ``test_tool_calling_llamacpp.py``: ReAct is told which tool each turn calls
(``tool_choice``) and decodes greedily; the LLMCompiler plans a JSON plan under its grammar. The cancelling
tool waits until the answer that planned its call is journaled, so the cancellation lands at the same point
of every run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from agentflow import Err, Ok, run
from agentflow.agents import CompilerResult, ReactResult, llm_compiler, react
from agentflow.dsl import Event, Flow, LLMCall
from agentflow.engines import LlamaCppEngine, NamedToolChoice, ToolChoice
from agentflow.executors import Tool, ToolRegistry
from agentflow.runs import show_run

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

QUESTION = "What is the email address of the customer who placed order 42?"
TURNS: tuple[ToolChoice, ...] = (NamedToolChoice("find_order"), NamedToolChoice("customer_email"), "none")


class Tools:
    """The agent's tools; they count their calls, and one of them may cancel the run once it is done."""

    def __init__(self, journal: str = "", run_id: str = "") -> None:
        self.calls: Counter[str] = Counter()
        self.cancel_in: str | None = None
        self.after: str = ""  # a step that must be journaled before the cancellation
        self.scope: anyio.CancelScope | None = None
        self.journal, self.run_id = journal, run_id

    async def _maybe_cancel(self, name: str) -> None:
        if name != self.cancel_in or self.scope is None:
            return
        self.cancel_in = None
        while self.after and not await self._journaled(self.after):
            await anyio.sleep(0.01)
        self.scope.cancel()

    async def _journaled(self, path: str) -> bool:
        steps = (await show_run(self.run_id, self.journal)).steps
        return any(s.path == path and s.status == "committed" for s in steps)

    def registry(self) -> ToolRegistry:
        async def find_order(order: int) -> str:
            """Look up an order by its number; returns the id of the customer who placed it."""
            self.calls[f"find_order({order})"] += 1
            await self._maybe_cancel("find_order")
            return "customer C-17" if order == 42 else f"there is no order {order}"

        async def customer_email(customer: str) -> str:
            """The email address of a customer, by customer id."""
            self.calls[f"customer_email({customer})"] += 1
            await self._maybe_cancel("customer_email")
            return "c17@example.com" if "C-17" in customer else f"there is no customer {customer!r}"

        return ToolRegistry([Tool.from_function(find_order), Tool.from_function(customer_email)])


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    yield LlamaCppEngine(n_ctx=2048)


AGENTS: dict[str, tuple[Callable[[ToolRegistry], Flow[object]], str, str]] = {
    # agent, the tool that cancels, the step that planned its call
    "react": (
        lambda t: react(QUESTION, t, tool_choice=TURNS, max_tokens=48, native_tools=True),
        "customer_email",
        "react/think[1]",
    ),
    "compiler": (
        lambda t: llm_compiler(
            "Who placed order 42?", t.allowlist(["find_order"]), max_replans=0, native_tools=False
        ),
        "find_order",
        "compiler/plan/planner",
    ),
}


async def attempt(
    agent: str, engine: LlamaCppEngine, tools: Tools, journal: str | None, run_id: str | None
) -> tuple[Ok[object] | None, list[LLMCall]]:
    """One attempt; its outcome (``None`` when cancelled) and the LLM calls it finished."""
    make, _, _ = AGENTS[agent]
    calls: list[LLMCall] = []

    def seen(event: Event) -> None:
        if isinstance(event, LLMCall) and event.status == "ok":
            calls.append(event)

    out: Ok[object] | Err | None = None
    with anyio.CancelScope() as scope:
        tools.scope = scope
        out = await run(make(tools.registry()), engine=engine, journal=journal, run_id=run_id, on_event=seen)
    if scope.cancelled_caught:
        return None, calls
    assert isinstance(out, Ok), out
    return out, calls


@pytest.mark.parametrize("agent", list(AGENTS))
async def test_agent_cancelled_in_a_tool_resumes_on_the_real_engine_repeating_nothing_finished(
    agent: str, engine: LlamaCppEngine, tmp_path: Path
) -> None:
    base_tools = Tools()
    base, base_llm = await attempt(agent, engine, base_tools, None, None)
    assert base is not None and set(base_tools.calls.values()) == {1}

    db = str(tmp_path / "journal.db")
    tools = Tools(db, "r")
    _, tool_name, planned_by = AGENTS[agent]
    tools.cancel_in, tools.after = tool_name, planned_by
    cancelled, first_llm = await attempt(agent, engine, tools, db, "r")
    assert cancelled is None  # only that tool cancels
    resumed, second_llm = await attempt(agent, engine, tools, db, "r")
    assert resumed is not None

    assert isinstance(resumed.value, ReactResult | CompilerResult)
    assert isinstance(base.value, ReactResult | CompilerResult)
    assert resumed.value.answer == base.value.answer
    assert tools.calls == base_tools.calls  # every tool call made once over both attempts
    # The model was asked again only what it had not answered when the run was cancelled.
    assert len(first_llm) + len(second_llm) == len(base_llm)
    assert [c.role for c in first_llm + second_llm] == [c.role for c in base_llm]

"""ReAct and the LLMCompiler on native tool calls (engines declaring ``Capabilities.tool_calling``), and
their fallback to the JSON/text plans otherwise. Models are scripted with ``FunctionEngine``; the tools
are real functions run by the real executor."""

from __future__ import annotations

import json

import pytest

from agentflow import Err, Ok, run
from agentflow.agents import llm_compiler, react, react_turn_schema
from agentflow.dsl import LLMCall, PlanInvalid, ToolCall
from agentflow.engines import (
    Completion,
    FunctionEngine,
    GenerationRequest,
    NamedToolChoice,
    ToolCallRequest,
    Usage,
)
from agentflow.errors import ConfigError
from agentflow.executors import ToolRegistry, tool

pytestmark = pytest.mark.anyio

QUESTION = "What are the email addresses of the customers who placed orders 42 and 7?"
deleted: list[str] = []


@tool
def find_order(order: int) -> str:
    """Look up an order; returns the id of the customer who placed it."""
    return {42: "customer C-17", 7: "customer C-3"}.get(order, f"no order {order}")


@tool
def customer_email(customer: str) -> str:
    """The email address of a customer, by customer id."""
    return f"{customer.lower()}@example.com"


@tool
def delete_all(confirm: bool) -> str:
    """Delete every order."""
    deleted.append("everything")
    return "deleted"


REGISTRY = ToolRegistry([find_order, customer_email, delete_all])
ALLOWED = REGISTRY.allowlist(["find_order", "customer_email"])


def calls(*items: tuple[str, str, dict[str, object]]) -> Completion:
    return Completion(
        "",
        Usage(completion_tokens=5),
        "tool_calls",
        "scripted",
        tuple(ToolCallRequest(cid, name, json.dumps(args)) for cid, name, args in items),
    )


def turns(*answers: Completion | str) -> FunctionEngine:
    """A native tool-calling model that gives ``answers`` turn by turn."""
    script = list(answers)

    def answer(request: GenerationRequest) -> Completion | str:
        return script.pop(0)

    return FunctionEngine(answer, tool_calling=True)


def events(outcome: Ok[object] | Err, kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in outcome.trace if isinstance(e, kind)]


# -- ReAct -----------------------------------------------------------------------------------------------------------


async def test_react_completes_a_two_tool_task_with_parallel_native_calls() -> None:
    engine = turns(
        calls(("a", "find_order", {"order": 42}), ("b", "find_order", {"order": 7})),
        calls(("c", "customer_email", {"customer": "C-17"}), ("d", "customer_email", {"customer": "C-3"})),
        "c-17@example.com and c-3@example.com",
    )
    outcome = await run(react(QUESTION, ALLOWED), engine=engine)
    assert isinstance(outcome, Ok)
    result = outcome.value
    assert result.native and result.finished and result.steps == 3
    assert result.answer == "c-17@example.com and c-3@example.com"
    assert {tid: r.value for tid, r in result.results.items()} == {
        1: "customer C-17",
        2: "customer C-3",
        3: "c-17@example.com",
        4: "c-3@example.com",
    }
    assert [(e.tool, e.task, e.status) for e in events(outcome, ToolCall)][:2] in (
        [("find_order", 1, "ok"), ("find_order", 2, "ok")],
        [("find_order", 2, "ok"), ("find_order", 1, "ok")],
    )
    first, second, third = engine.requests
    assert [t.name for t in first.tools] == ["customer_email", "find_order"]
    assert first.tool_choice == "auto" and first.json_schema is None
    assert second.messages is not None
    assert [(m.role, m.tool_call_id, m.content) for m in second.messages[2:]] == [
        ("assistant", None, ""),
        ("tool", "a", "customer C-17"),
        ("tool", "b", "customer C-3"),
    ]
    assert [c.id for c in second.messages[2].tool_calls] == ["a", "b"]
    assert third.messages is not None and third.messages[-1].content == "c-3@example.com"
    assert [e.tool_calls is not None for e in events(outcome, LLMCall)] == [True, True, False]


async def test_react_refuses_a_tool_outside_its_allowlist_without_running_it() -> None:
    deleted.clear()
    engine = turns(calls(("a", "delete_all", {"confirm": True})), "I may not do that.")
    outcome = await run(react("Clean up.", ALLOWED), engine=engine)
    assert isinstance(outcome, Ok) and outcome.value.answer == "I may not do that."
    assert deleted == [] and events(outcome, ToolCall) == []
    refusal = engine.requests[1].messages[-1]  # type: ignore[index]
    assert refusal.role == "tool" and refusal.tool_call_id == "a"
    assert refusal.content.startswith("Error: tool 'delete_all' was not offered")


async def test_react_sends_bad_arguments_back_as_that_calls_result_so_the_model_can_correct() -> None:
    engine = turns(
        calls(("a", "find_order", {"order": "forty-two"})),
        calls(("b", "find_order", {"order": 42})),
        "C-17",
    )
    outcome = await run(react(QUESTION, ALLOWED), engine=engine)
    assert isinstance(outcome, Ok) and outcome.value.answer == "C-17"
    problem = engine.requests[1].messages[-1]  # type: ignore[index]
    assert (
        problem.tool_call_id == "a"
        and "argument 'order': 'forty-two' is not of type 'integer'" in problem.content
    )
    assert [r.value for r in outcome.value.results.values()] == ["customer C-17"]
    assert events(outcome, LLMCall)[0].valid is False


async def test_react_applies_tool_choice_turn_by_turn_then_auto() -> None:
    engine = turns(
        calls(("a", "find_order", {"order": 42})),
        calls(("b", "customer_email", {"customer": "C-17"})),
        "c-17@example.com",
    )
    choices = (NamedToolChoice("find_order"), "required")
    outcome = await run(react(QUESTION, ALLOWED, tool_choice=choices), engine=engine)
    assert isinstance(outcome, Ok) and outcome.value.finished
    assert [r.tool_choice for r in engine.requests] == [NamedToolChoice("find_order"), "required", "auto"]


async def test_react_keeps_the_json_turn_format_when_the_engine_has_no_native_tool_calling() -> None:
    def answer(request: GenerationRequest) -> str:
        return json.dumps({"thought": "done", "action": {"final_answer": "ok"}})

    engine = FunctionEngine(answer)
    outcome = await run(react(QUESTION, ALLOWED), engine=engine)
    assert isinstance(outcome, Ok) and not outcome.value.native and outcome.value.answer == "ok"
    assert engine.requests[0].tools == () and engine.requests[0].json_schema is not None


@pytest.mark.parametrize("native", [True, False])
async def test_react_follows_native_tools_when_told(native: bool) -> None:
    def answer(request: GenerationRequest) -> str:
        return "ok" if request.tools else json.dumps({"thought": "", "action": {"final_answer": "ok"}})

    engine = FunctionEngine(answer, tool_calling=not native)
    outcome = await run(react(QUESTION, ALLOWED, native_tools=native), engine=engine)
    assert isinstance(outcome, Ok) and outcome.value.native is native
    assert bool(engine.requests[0].tools) is native


def test_react_turn_schema_narrows_to_what_tool_choice_allows() -> None:
    def actions(choice: object) -> list[str]:
        schema = react_turn_schema(ALLOWED, choice)  # type: ignore[arg-type]
        options = schema["properties"]["action"]["anyOf"]  # type: ignore[index,call-overload]
        return [
            o["properties"]["tool"]["const"] if "tool" in o["properties"] else "final_answer" for o in options
        ]

    assert actions("auto") == ["customer_email", "find_order", "final_answer"]
    assert actions("required") == ["customer_email", "find_order"]
    assert actions(NamedToolChoice("find_order")) == ["find_order"]
    assert actions("none") == ["final_answer"]


def test_react_refuses_a_tool_choice_naming_a_tool_it_may_not_call() -> None:
    with pytest.raises(
        ConfigError, match="tool_choice names tool 'delete_all', which this agent may not call"
    ):
        react(QUESTION, ALLOWED, tool_choice=NamedToolChoice("delete_all"))


# -- LLMCompiler -------------------------------------------------------------------------------------------------


def compiler_model(*plans: Completion) -> FunctionEngine:
    script = list(plans)

    def answer(request: GenerationRequest) -> Completion | str:
        if request.tools:
            return script.pop(0)
        return json.dumps({"action": "finish", "answer": "c-17@example.com"})

    return FunctionEngine(answer, tool_calling=True)


async def test_compiler_plans_with_native_calls_and_references_between_them() -> None:
    engine = compiler_model(
        calls(("a", "find_order", {"order": 42}), ("b", "customer_email", {"customer": "$1"})),
    )
    outcome = await run(llm_compiler(QUESTION, ALLOWED, max_replans=0), engine=engine)
    assert isinstance(outcome, Ok)
    result = outcome.value
    assert result.answer == "c-17@example.com"
    assert [(t.id, t.tool, sorted(t.deps)) for t in result.tasks] == [
        (1, "find_order", []),
        (2, "customer_email", [1]),
    ]
    assert result.results[2].value == "customer c-17@example.com"
    planner, joiner = engine.requests
    assert planner.tool_choice == "required" and planner.json_schema is None
    order_param = next(t for t in planner.tools if t.name == "find_order").parameters["properties"]["order"]  # type: ignore[index]
    assert {"type": "integer"} in [{k: v for k, v in o.items() if k == "type"} for o in order_param["anyOf"]]  # type: ignore[index,union-attr]
    assert joiner.messages is not None
    assert [(m.role, m.tool_call_id) for m in joiner.messages[-4:]] == [
        ("assistant", None),
        ("tool", "a"),
        ("tool", "b"),
        ("user", None),
    ]
    assert (
        joiner.messages[-3].content == "customer C-17"
        and joiner.messages[-2].content == "customer c-17@example.com"
    )
    assert result.plans == ('1. find_order(order=42)\n2. customer_email(customer="$1")\n',)


async def test_compiler_sends_an_invalid_native_plan_back_for_repair() -> None:
    deleted.clear()
    engine = compiler_model(
        calls(("a", "delete_all", {"confirm": True})),
        calls(("b", "find_order", {"order": 42})),
    )
    outcome = await run(llm_compiler(QUESTION, ALLOWED, max_replans=0, max_plan_repairs=1), engine=engine)
    assert isinstance(outcome, Ok) and [t.tool for t in outcome.value.tasks] == ["find_order"]
    [invalid] = events(outcome, PlanInvalid)
    assert "delete_all" in invalid.error
    assert "Your previous plan was invalid" in engine.requests[1].messages[-1].content  # type: ignore[index]
    assert deleted == [] and [e.tool for e in events(outcome, ToolCall)] == ["find_order"]


async def test_compiler_stops_a_native_plan_with_more_than_max_calls() -> None:
    many = calls(*[(f"c{i}", "find_order", {"order": i}) for i in range(4)])
    engine = compiler_model(many)
    outcome = await run(llm_compiler(QUESTION, ALLOWED, max_plan_repairs=0, max_calls=3), engine=engine)
    assert isinstance(outcome, Err) and "more than max_calls=3 calls" in outcome.error.message

"""Native tool calling for real: ``python -m llama_cpp.server --chat_format chatml-function-calling`` serving
the bundled SmolLM2-135M GGUF (through ``OpenAIEngine``), and the embedded ``LlamaCppEngine``.

Determinism. A 135M model left to choose tools (``tool_choice="auto"``) skips steps or repeats a call
forever, so the agent tests choose the tool of each turn with ``tool_choice``
(``NamedToolChoice("find_order")``, then ``NamedToolChoice("customer_email")``, then ``"none"`` for the
answer): the server then constrains each call's arguments to the tool's JSON Schema. What the model still
decides (the arguments, the answer) is decoded greedily (temperature 0) on a one-thread server, which
gives the same tokens on every run. The two-tool task needs the first tool's result to make the second
call (``customer_email`` gets the customer id that ``find_order`` returned), so it checks that the
observation went back to the model through the native conversation (assistant ``tool_calls``, then the
result for that call) and came out in the next call's arguments.
"""

from __future__ import annotations

from collections.abc import Iterator

import jsonschema  # type: ignore[import-untyped]
import pytest
from _servers import LlamaServer, running_llama_server

from agentflow import Ok, run
from agentflow.agents import llm_compiler, react, tool_specs
from agentflow.dsl import LLMCall, ToolCall
from agentflow.engines import GenerationRequest, LlamaCppEngine, Message, NamedToolChoice
from agentflow.engines._openai import OpenAIEngine
from agentflow.executors import ToolRegistry, tool

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

QUESTION = "What is the email address of the customer who placed order 42?"
TURNS = (NamedToolChoice("find_order"), NamedToolChoice("customer_email"), "none")


@tool
def find_order(order: int) -> str:
    """Look up an order by its number; returns the id of the customer who placed it."""
    return "customer C-17" if order == 42 else f"there is no order {order}"


@tool
def customer_email(customer: str) -> str:
    """The email address of a customer, by customer id."""
    return "c17@example.com" if "C-17" in customer else f"there is no customer {customer!r}"


TOOLS = ToolRegistry([find_order, customer_email])
SPECS = tool_specs(TOOLS)
ORDER_SCHEMA = TOOLS.get("find_order").parameters


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServer]:
    with running_llama_server(chat_format="chatml-function-calling") as running:
        yield running


def engine_for(server: LlamaServer) -> OpenAIEngine:
    return OpenAIEngine(server.base_url, server.model_id, tool_calling=True)


def ask_order(**fields: object) -> GenerationRequest:
    options: dict[str, object] = {"tool_choice": NamedToolChoice("find_order"), "max_tokens": 32, **fields}
    return GenerationRequest(messages=(Message("user", QUESTION),), tools=SPECS, **options)  # type: ignore[arg-type]


def assert_two_tool_task_done(outcome: object, *, check_values: bool = True) -> None:
    assert isinstance(outcome, Ok), outcome
    result = outcome.value
    assert result.native and result.finished and result.steps == 3 and result.answer
    first, second = (result.results[i] for i in (1, 2))
    assert (first.task.tool, first.ok) == ("find_order", True)
    assert (second.task.tool, second.ok) == ("customer_email", True)
    if check_values:
        # The model read find_order's result and passed the customer id on: the task is done.
        assert first.value == "customer C-17" and second.value == "c17@example.com"
    assert [(e.tool, e.status) for e in outcome.trace if isinstance(e, ToolCall)] == [
        ("find_order", "ok"),
        ("customer_email", "ok"),
    ]
    llm = [e for e in outcome.trace if isinstance(e, LLMCall)]
    assert [e.finish_reason for e in llm] == ["tool_calls", "tool_calls", "stop"]
    assert [e.tool_calls[0][1] if e.tool_calls else None for e in llm] == [
        "find_order",
        "customer_email",
        None,
    ]
    assert llm[1].messages is not None and llm[1].messages[-1][1].endswith(str(first.value))


# -- llama_cpp.server ------------------------------------------------------------------------------------------------


async def test_server_returns_a_schema_valid_call_of_the_named_tool(server: LlamaServer) -> None:
    async with engine_for(server) as engine:
        completion = await engine.generate(ask_order())
        assert engine.capabilities.tool_calling
    [call] = completion.tool_calls
    assert call.name == "find_order" and completion.finish_reason == "tool_calls"
    jsonschema.validate(call.parsed_arguments(), ORDER_SCHEMA)


async def test_server_stream_assembles_the_call_that_generate_returns(server: LlamaServer) -> None:
    async with engine_for(server) as engine:
        whole = await engine.generate(ask_order())
        async with engine.stream(ask_order()) as stream:
            chunks = [c async for c in stream]
    streamed = [call for c in chunks for call in c.tool_calls]
    assert [(c.name, c.arguments) for c in streamed] == [(c.name, c.arguments) for c in whole.tool_calls]
    assert chunks[-1].finish_reason == "tool_calls" and chunks[-1].usage is not None


async def test_react_completes_a_two_tool_task_through_native_tool_calls_on_the_server(
    server: LlamaServer,
) -> None:
    async with engine_for(server) as engine:
        outcome = await run(react(QUESTION, TOOLS, tool_choice=TURNS, max_tokens=48), engine=engine)
    assert_two_tool_task_done(outcome)


async def test_compiler_runs_a_native_plan_from_the_server(server: LlamaServer) -> None:
    # The server has no "required" mode, so the planner's choice is sent as "auto" (unstreamed): the
    # model picks a tool itself; whichever it calls runs as task 1 and the joiner reads its result.
    async with engine_for(server) as engine:
        outcome = await run(
            llm_compiler(QUESTION, TOOLS, max_replans=0, max_plan_repairs=0, planner_max_tokens=64),
            engine=engine,
        )
    assert isinstance(outcome, Ok), outcome
    result = outcome.value
    assert result.tasks and all(t.tool in ("find_order", "customer_email") for t in result.tasks)
    planner, joiner = (e for e in outcome.trace if isinstance(e, LLMCall))
    assert planner.role == "planner" and planner.tool_calls is not None
    assert [c[1] for c in planner.tool_calls] == [t.tool for t in result.tasks]
    assert joiner.role == "joiner" and joiner.status == "ok"
    assert joiner.messages is not None and any(role == "tool" for role, _ in joiner.messages)


# -- the embedded engine ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded() -> Iterator[LlamaCppEngine]:
    engine = LlamaCppEngine(n_ctx=2048)
    yield engine


async def test_embedded_engine_calls_the_named_tool_under_its_schema(embedded: LlamaCppEngine) -> None:
    completion = await embedded.generate(ask_order())
    [call] = completion.tool_calls
    assert call.name == "find_order" and completion.text == "" and completion.finish_reason == "tool_calls"
    jsonschema.validate(call.parsed_arguments(), ORDER_SCHEMA)


async def test_embedded_engine_makes_one_valid_call_when_one_is_required(embedded: LlamaCppEngine) -> None:
    request = ask_order(tool_choice="required", parallel_tool_calls=False, max_tokens=48)
    completion = await embedded.generate(request)
    [call] = completion.tool_calls
    spec = next(s for s in SPECS if s.name == call.name)
    jsonschema.validate(call.parsed_arguments(), dict(spec.parameters))


async def test_react_completes_the_two_tool_task_on_the_embedded_engine_when_told_to_call_natively(
    embedded: LlamaCppEngine,
) -> None:
    assert not embedded.capabilities.tool_calling  # grammar-emulated: agents use it only when told
    outcome = await run(
        react(QUESTION, TOOLS, tool_choice=TURNS, max_tokens=48, native_tools=True), engine=embedded
    )
    # The mechanism, not the 135M model's reading: each forced turn decodes a schema-valid call of the
    # named tool, its result goes back as the tool's message, and the last turn answers in text. Which
    # order number the tiny model writes depends on its greedy decoding (the llama.cpp server test above
    # checks the values end to end).
    assert_two_tool_task_done(outcome, check_values=False)


async def test_json_plan_over_an_integer_argument_decodes_on_the_embedded_engine(
    embedded: LlamaCppEngine,
) -> None:
    # Regression: the "$N" reference alternative of non-string arguments used to become a GBNF escape
    # that llama.cpp's grammar parser rejects, so any such JSON plan failed before decoding.
    outcome = await run(
        llm_compiler(
            "Who placed order 42?", TOOLS.allowlist(["find_order"]), max_replans=0, native_tools=False
        ),
        engine=embedded,
    )
    assert isinstance(outcome, Ok), outcome
    assert [t.tool for t in outcome.value.tasks][:1] == ["find_order"]

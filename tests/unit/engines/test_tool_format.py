"""Tool calls as constrained JSON (embedded llama.cpp, vLLM in process) and the streamed-delta assembler."""

from __future__ import annotations

import itertools
import json

import jsonschema  # type: ignore[import-untyped]
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentflow.engines import GenerationRequest, Message, NamedToolChoice, ToolCallRequest, ToolSpec
from agentflow.engines._tools import (
    ToolCallAssembler,
    ToolCallDelta,
    ToolOutputReader,
    call_id,
    constrained_tool_request,
    parse_tool_output,
    plain_messages,
    tool_instructions,
    tool_output_schema,
)
from agentflow.errors import UnsupportedFeatureError

ORDER = ToolSpec(
    "find_order",
    "Look up an order.",
    {"type": "object", "properties": {"order": {"type": "integer"}}, "required": ["order"]},
)
EMAIL = ToolSpec(
    "customer_email",
    "A customer's email.",
    {"type": "object", "properties": {"customer": {"type": "string"}}, "required": ["customer"]},
)
NESTED = ToolSpec(
    "ship",
    "Ship a parcel.",
    {
        "type": "object",
        "properties": {"to": {"$ref": "#/$defs/Address"}},
        "required": ["to"],
        "$defs": {
            "Address": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        },
    },
)
QUESTION = (Message("system", "Be brief."), Message("user", "Email of the customer of order 42?"))


def ask(
    tool_choice: object = "auto", *, tools: tuple[ToolSpec, ...] = (ORDER, EMAIL), parallel: bool = True
) -> GenerationRequest:
    return GenerationRequest(
        messages=QUESTION,
        tools=tools,
        tool_choice=tool_choice,  # type: ignore[arg-type]
        parallel_tool_calls=parallel,
    )


def valid(schema: object, value: object) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(value)  # type: ignore[no-any-return]


# -- schemas ---------------------------------------------------------------------------------------------------------


def test_schema_is_the_tools_arguments_when_one_tool_is_named() -> None:
    assert tool_output_schema(ask(NamedToolChoice("find_order"))) == dict(ORDER.parameters)


def test_schema_admits_only_call_arrays_of_offered_tools_when_a_call_is_required() -> None:
    schema = tool_output_schema(ask("required"))
    assert valid(schema, [{"name": "find_order", "arguments": {"order": 42}}])
    assert valid(
        schema,
        [
            {"name": "find_order", "arguments": {"order": 1}},
            {"name": "customer_email", "arguments": {"customer": "C"}},
        ],
    )
    assert not valid(schema, [])
    assert not valid(schema, [{"name": "delete_everything", "arguments": {}}])
    assert not valid(schema, [{"name": "find_order", "arguments": {"order": "42"}}])
    assert not valid(schema, {"content": "no"})


def test_schema_admits_one_call_only_when_parallel_calls_are_off() -> None:
    schema = tool_output_schema(ask("required", parallel=False))
    call = {"name": "find_order", "arguments": {"order": 42}}
    assert valid(schema, [call]) and not valid(schema, [call, call])


def test_schema_admits_calls_or_an_answer_when_the_model_may_choose() -> None:
    schema = tool_output_schema(ask("auto"))
    assert valid(schema, {"content": "It is 42."})
    assert valid(schema, [{"name": "customer_email", "arguments": {"customer": "C-17"}}])


def test_schema_admits_only_an_answer_when_calls_are_off() -> None:
    schema = tool_output_schema(ask("none"))
    assert valid(schema, {"content": "It is 42."})
    assert not valid(schema, [{"name": "customer_email", "arguments": {"customer": "C-17"}}])


def test_schema_keeps_each_tools_definitions_when_they_use_refs() -> None:
    schema = tool_output_schema(ask("required", tools=(ORDER, NESTED)))
    assert valid(schema, [{"name": "ship", "arguments": {"to": {"city": "Oslo"}}}])
    assert not valid(schema, [{"name": "ship", "arguments": {"to": {"town": "Oslo"}}}])


def test_schema_is_none_without_tools() -> None:
    assert tool_output_schema(GenerationRequest(messages=QUESTION)) is None


def test_instructions_list_tools_and_the_format_for_the_choice() -> None:
    auto = tool_instructions(ask("auto"))
    assert "- find_order: Look up an order." in auto and '{"content": "<your answer>"}' in auto
    assert "exactly one call" in tool_instructions(ask("required", parallel=False))
    assert "Call the tool customer_email" in tool_instructions(ask(NamedToolChoice("customer_email")))
    assert "find_order" not in tool_instructions(ask("auto"), list_tools=False)


# -- reading answers -------------------------------------------------------------------------------------------------


def test_reader_hands_out_each_call_as_soon_as_its_item_closes() -> None:
    reader = ToolOutputReader(ask("required"), seed="s")
    text = '[{"name": "find_order", "arguments": {"order": 42}}, {"name": "customer_email", "arguments": {"customer": "a]}"}}]'
    cut = text.index("},") + 2
    first = reader.feed(text[:cut])
    assert [(c.name, c.parsed_arguments()) for c in first] == [("find_order", {"order": 42})]
    second = reader.feed(text[cut:])
    assert [(c.name, c.parsed_arguments()) for c in second] == [("customer_email", {"customer": "a]}"})]
    assert reader.finish() == ("", [])
    assert first[0].id != second[0].id


def test_reader_keeps_complete_calls_when_the_answer_is_cut_off() -> None:
    content, calls = parse_tool_output(
        ask("required"), '[{"name": "find_order", "arguments": {"order": 1}}, {"name": "find_ord', seed="s"
    )
    assert content == "" and [c.name for c in calls] == ["find_order"]


def test_reader_returns_the_text_when_nothing_in_it_is_a_call() -> None:
    assert parse_tool_output(ask("required"), '[{"name": "find_', seed="s") == ('[{"name": "find_', ())


def test_reader_returns_the_content_when_the_model_answers() -> None:
    assert parse_tool_output(ask("auto"), '{"content": "c17@example.com"}', seed="s") == (
        "c17@example.com",
        (),
    )
    assert parse_tool_output(ask("none"), '{"content": "no calls"}', seed="s") == ("no calls", ())


def test_reader_makes_one_call_of_the_named_tool_from_its_arguments() -> None:
    content, calls = parse_tool_output(ask(NamedToolChoice("find_order")), ' { "order": 42 }', seed="s")
    assert content == "" and [(c.name, c.arguments) for c in calls] == [("find_order", '{ "order": 42 }')]


def test_call_ids_are_the_same_for_the_same_prompt_and_answer() -> None:
    text = '[{"name": "find_order", "arguments": {"order": 42}}]'
    one = parse_tool_output(ask("required"), text, seed="prompt")[1]
    two = parse_tool_output(ask("required"), text, seed="prompt")[1]
    other = parse_tool_output(ask("required"), text, seed="another prompt")[1]
    assert one == two and one[0].id != other[0].id
    assert call_id("x", 3).startswith("call_") and call_id("x", 3).endswith("_3")


# -- conversations for templates without tools -------------------------------------------------------------------------


def test_plain_messages_write_calls_as_json_and_results_as_user_messages() -> None:
    call = ToolCallRequest("c1", "find_order", '{"order": 42}')
    request = GenerationRequest(
        messages=(
            *QUESTION,
            Message("assistant", "", tool_calls=(call,)),
            Message("tool", "customer C-17", tool_call_id="c1"),
        ),
        tools=(ORDER, EMAIL),
    )
    messages = plain_messages(request, instructions="FORMAT")
    assert messages[0] == Message("system", "Be brief.\n\nFORMAT")
    assert json.loads(messages[2].content) == [{"name": "find_order", "arguments": {"order": 42}}]
    assert messages[3] == Message("user", "Result of find_order (call c1):\ncustomer C-17")
    assert all(not m.tool_calls and m.role != "tool" for m in messages)


def test_plain_messages_keep_calls_when_asked_and_put_instructions_first_without_a_system_message() -> None:
    call = ToolCallRequest("c1", "find_order", "not json")
    request = GenerationRequest(messages=(Message("user", "q"), Message("assistant", "", tool_calls=(call,))))
    kept = plain_messages(request, instructions="FORMAT", calls_as_text=False)
    assert kept[0] == Message("system", "FORMAT") and kept[2].tool_calls == (call,)
    written = plain_messages(request)
    assert json.loads(written[1].content) == [{"name": "find_order", "arguments": "not json"}]


def test_constrained_request_refuses_tools_with_a_json_schema() -> None:
    request = GenerationRequest(messages=QUESTION, tools=(ORDER,), json_schema={"type": "object"})
    with pytest.raises(UnsupportedFeatureError, match="both `tools` and `json_schema`"):
        constrained_tool_request(request)


def test_constrained_request_moves_tools_into_the_prompt_and_the_schema() -> None:
    request = ask("required")
    inner = constrained_tool_request(request)
    assert inner.tools == () and inner.json_schema == tool_output_schema(request)
    assert inner.messages is not None and "find_order" in inner.messages[0].content
    plain = GenerationRequest(messages=QUESTION)
    assert constrained_tool_request(plain) is plain


# -- the streamed-delta assembler ------------------------------------------------------------------------------------


def test_assembler_reads_servers_that_repeat_name_and_id_in_every_piece() -> None:
    assembler = ToolCallAssembler()
    pieces = ['{"order"', ": 4", "2}"]
    out = [c for p in pieces for c in assembler.feed([ToolCallDelta(0, "c1", "find_order", p)])]
    assert out == [] and assembler.finish() == [ToolCallRequest("c1", "find_order", '{"order": 42}')]


def test_assembler_refuses_a_piece_of_a_call_that_already_ended() -> None:
    assembler = ToolCallAssembler()
    assembler.feed([ToolCallDelta(0, "c1", "a", "{}"), ToolCallDelta(1, "c2", "b", "{}")])
    with pytest.raises(ValueError, match="call index 0, which already ended"):
        assembler.feed([ToolCallDelta(0, arguments="x")])


def test_assembler_refuses_a_call_without_a_name() -> None:
    assembler = ToolCallAssembler()
    assembler.feed([ToolCallDelta(0, "c1", None, "{}")])
    with pytest.raises(ValueError, match="tool call 0 ended without a tool name"):
        assembler.finish()


@given(
    arguments=st.lists(
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3), min_size=1, max_size=4
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=6),
)
def test_assembler_gives_back_each_call_whole_however_its_arguments_are_split(
    arguments: list[dict[str, int]], cuts: list[int]
) -> None:
    # Law: splitting each call's arguments into pieces anywhere, streamed index after index, assembles to
    # the calls themselves, each handed out exactly once and in order.
    expected = [ToolCallRequest(f"c{i}", f"t{i}", json.dumps(a)) for i, a in enumerate(arguments)]
    assembler = ToolCallAssembler()
    out: list[ToolCallRequest] = []
    for i, call in enumerate(expected):
        text = call.arguments
        points = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
        parts = [text[a:b] for a, b in itertools.pairwise(points)]
        out += assembler.feed([ToolCallDelta(i, call.id, call.name, parts[0])])
        for part in parts[1:]:
            out += assembler.feed([ToolCallDelta(i, arguments=part)])
    out += assembler.finish()
    assert out == expected

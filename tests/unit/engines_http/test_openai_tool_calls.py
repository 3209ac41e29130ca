"""OpenAIEngine's native tool calling over httpx.MockTransport: request bodies per server kind, calls in
whole answers, and streamed ``delta.tool_calls`` pieces put together by index."""

from __future__ import annotations

import json

import httpx
import pytest

from agentflow.engines import Chunk, GenerationRequest, Message, NamedToolChoice, ToolCallRequest, ToolSpec
from agentflow.engines._openai import OpenAIEngine, ServerKind
from agentflow.engines._retry import RetryPolicy
from agentflow.errors import EngineRequestError

pytestmark = pytest.mark.anyio

ORDER = ToolSpec(
    "find_order",
    "Look up an order.",
    {"type": "object", "properties": {"order": {"type": "integer"}}, "required": ["order"]},
)
EMAIL = ToolSpec(
    "customer_email",
    "",
    {"type": "object", "properties": {"customer": {"type": "string"}}, "required": ["customer"]},
)
CALL = ToolCallRequest("call_1", "find_order", '{"order": 42}')
CONVERSATION = (
    Message("system", "Use tools."),
    Message("user", "Email of the customer of order 42?"),
    Message("assistant", "", tool_calls=(CALL,)),
    Message("tool", "customer C-17", tool_call_id="call_1"),
)
SSE_HEADERS = {"content-type": "text/event-stream"}


class Server:
    """Answers chat requests with ``answer`` (JSON or SSE bytes); records the bodies it was sent."""

    def __init__(self, answer: dict[str, object] | bytes, owned_by: str = "vllm") -> None:
        self.answer = answer
        self.owned_by = owned_by
        self.bodies: list[dict[str, object]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m", "owned_by": self.owned_by}]})
        if request.method == "GET":  # e.g. vLLM's /metrics, read once while probing: none here
            return httpx.Response(404)
        self.bodies.append(json.loads(request.content))
        if isinstance(self.answer, bytes):
            return httpx.Response(200, content=self.answer, headers=SSE_HEADERS)
        return httpx.Response(200, json=self.answer)

    def engine(self, **options: object) -> OpenAIEngine:
        retry = RetryPolicy(attempts=1, initial_delay=0.0, max_delay=0.0, jitter=0.0)
        return OpenAIEngine(
            "http://127.0.0.1:9",
            "m",
            transport=httpx.MockTransport(self),
            retry=retry,
            **options,  # type: ignore[arg-type]
        )


def answer_with_calls(*calls: dict[str, object], finish: str = "tool_calls") -> dict[str, object]:
    message = {"role": "assistant", "content": None, "tool_calls": list(calls)}
    return {
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 9},
    }


def sse(*events: dict[str, object] | str) -> bytes:
    return "".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events).encode()


def delta(
    *, content: str | None = None, calls: list[dict[str, object]] | None = None, finish: str | None = None
) -> dict[str, object]:
    return {
        "choices": [{"index": 0, "delta": {"content": content, "tool_calls": calls}, "finish_reason": finish}]
    }


def piece(index: int, arguments: str, *, id: str | None = None, name: str | None = None) -> dict[str, object]:
    function: dict[str, object] = {"arguments": arguments}
    if name is not None:
        function["name"] = name
    out: dict[str, object] = {"index": index, "function": function}
    if id is not None:
        out["id"] = id
        out["type"] = "function"
    return out


# -- request bodies ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["openai", "vllm"])
async def test_body_carries_tools_choice_calls_and_results_in_openai_shapes(kind: ServerKind) -> None:
    server = Server(answer_with_calls(), owned_by=kind)
    request = GenerationRequest(
        messages=CONVERSATION,
        tools=(ORDER, EMAIL),
        tool_choice=NamedToolChoice("customer_email"),
        parallel_tool_calls=False,
    )
    async with server.engine(server_kind=kind) as engine:
        await engine.generate(request)
    body = server.bodies[0]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "find_order",
                "parameters": dict(ORDER.parameters),
                "description": "Look up an order.",
            },
        },
        {"type": "function", "function": {"name": "customer_email", "parameters": dict(EMAIL.parameters)}},
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "customer_email"}}
    assert body["parallel_tool_calls"] is False
    assert body["messages"][2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "find_order", "arguments": '{"order": 42}'},
            }
        ],
    }
    assert body["messages"][3] == {"role": "tool", "content": "customer C-17", "tool_call_id": "call_1"}


async def test_llamacpp_body_sends_results_as_user_messages_and_required_as_auto() -> None:
    # llama-cpp-python's chatml-function-calling template prints a `tool` message without its text and
    # has no "required" mode; parallel_tool_calls is not in its schema.
    server = Server(answer_with_calls(), owned_by="llamacpp")
    request = GenerationRequest(
        messages=CONVERSATION, tools=(ORDER,), tool_choice="required", parallel_tool_calls=False
    )
    async with server.engine() as engine:
        await engine.generate(request)
    body = server.bodies[0]
    assert body["tool_choice"] == "auto" and "parallel_tool_calls" not in body
    assert body["messages"][2]["tool_calls"][0]["function"]["name"] == "find_order"
    assert body["messages"][3] == {
        "role": "user",
        "content": "Result of find_order (call call_1):\ncustomer C-17",
    }


async def test_body_has_no_tool_fields_when_the_request_has_no_tools() -> None:
    server = Server(answer_with_calls())
    async with server.engine() as engine:
        await engine.generate(GenerationRequest(messages=CONVERSATION[:2]))
    body = server.bodies[0]
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(body)
    assert body["messages"] == [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Email of the customer of order 42?"},
    ]


async def test_body_sends_auto_explicitly_when_tools_are_offered() -> None:
    # llama-cpp-python ignores tools unless tool_choice is given; vLLM needs it to pick its parser path.
    server = Server(answer_with_calls())
    async with server.engine() as engine:
        await engine.generate(GenerationRequest(messages=CONVERSATION[:2], tools=(ORDER,)))
    assert server.bodies[0]["tool_choice"] == "auto" and "parallel_tool_calls" not in server.bodies[0]


# -- whole answers -----------------------------------------------------------------------------------------------


async def test_generate_returns_the_calls_of_the_answer() -> None:
    server = Server(
        answer_with_calls(
            {"id": "a", "type": "function", "function": {"name": "find_order", "arguments": '{"order": 42}'}},
            {
                "id": "b",
                "type": "function",
                "function": {"name": "customer_email", "arguments": {"customer": "C-17"}},
            },
        )
    )
    async with server.engine() as engine:
        completion = await engine.generate(GenerationRequest(messages=CONVERSATION[:2], tools=(ORDER, EMAIL)))
    assert completion.text == "" and completion.finish_reason == "tool_calls"
    assert completion.tool_calls == (
        ToolCallRequest("a", "find_order", '{"order": 42}'),
        ToolCallRequest("b", "customer_email", '{"customer": "C-17"}'),
    )


async def test_generate_reports_tool_calls_when_the_server_says_stop() -> None:
    server = Server(
        answer_with_calls({"id": "a", "function": {"name": "find_order", "arguments": "{}"}}, finish="stop")
    )
    async with server.engine() as engine:
        completion = await engine.generate(GenerationRequest(messages=CONVERSATION[:2], tools=(ORDER,)))
    assert completion.finish_reason == "tool_calls"


async def test_generate_refuses_a_call_without_a_tool_name() -> None:
    server = Server(answer_with_calls({"id": "a", "function": {"arguments": "{}"}}))
    async with server.engine() as engine:
        with pytest.raises(
            EngineRequestError, match="answered with a bad tool call: tool call 0 ended without a tool name"
        ):
            await engine.generate(GenerationRequest(messages=CONVERSATION[:2], tools=(ORDER,)))


# -- streamed deltas ---------------------------------------------------------------------------------------------


async def test_stream_hands_out_each_call_whole_as_soon_as_the_next_one_starts() -> None:
    # OpenAI's form: id and name in a call's first piece only, arguments split anywhere.
    body = sse(
        delta(calls=[piece(0, "", id="a", name="find_order")]),
        delta(calls=[piece(0, '{"ord')]),
        delta(calls=[piece(0, 'er": 42}')]),
        delta(calls=[piece(1, '{"customer"', id="b", name="customer_email")]),
        delta(calls=[piece(1, ': "C-17"}')]),
        delta(finish="tool_calls"),
        "[DONE]",
    )
    server = Server(body)
    async with (
        server.engine() as engine,
        engine.stream(GenerationRequest(messages=CONVERSATION[:2], tools=(ORDER, EMAIL))) as stream,
    ):
        chunks = [c async for c in stream]
    handed = [c.tool_calls for c in chunks if c.tool_calls]
    assert handed == [
        (ToolCallRequest("a", "find_order", '{"order": 42}'),),
        (ToolCallRequest("b", "customer_email", '{"customer": "C-17"}'),),
    ]
    # The first call comes out in the chunk read with the second call's first piece, before the end.
    assert chunks.index(next(c for c in chunks if c.tool_calls)) < len(chunks) - 2
    final = chunks[-1]
    assert (
        final.finish_reason == "tool_calls" and final.usage is not None and final.usage.completion_tokens == 5
    )
    assert server.bodies[0]["stream"] is True


async def test_stream_reads_servers_that_repeat_id_and_name_in_every_piece() -> None:
    # llama-cpp-python's form (it streams only a named tool choice).
    repeat = {"id": "call__0_find_order_x", "name": "find_order"}
    body = sse(
        delta(calls=None),
        delta(calls=[piece(0, "{", **repeat)]),
        delta(calls=[piece(0, ' "order": 4', **repeat)]),
        delta(calls=[piece(0, "2 }", **repeat)]),
        delta(calls=[piece(0, "", **repeat)]),
        delta(finish="tool_calls"),
        "[DONE]",
    )
    server = Server(body, owned_by="llamacpp")
    async with server.engine() as engine:
        request = GenerationRequest(
            messages=CONVERSATION[:2], tools=(ORDER,), tool_choice=NamedToolChoice("find_order")
        )
        async with engine.stream(request) as stream:
            chunks: list[Chunk] = [c async for c in stream]
    assert [call for c in chunks for call in c.tool_calls] == [
        ToolCallRequest("call__0_find_order_x", "find_order", '{ "order": 42 }')
    ]


async def test_stream_keeps_text_and_calls_apart_when_a_server_sends_both() -> None:
    body = sse(
        delta(content="Let me look."),
        delta(calls=[piece(0, "{}", id="a", name="find_order")]),
        delta(finish="tool_calls"),
        "[DONE]",
    )
    request = GenerationRequest(messages=CONVERSATION[:2], tools=(ORDER,))
    async with Server(body).engine() as engine, engine.stream(request) as stream:
        chunks = [c async for c in stream]
    assert "".join(c.text for c in chunks) == "Let me look."
    assert [call.name for c in chunks for call in c.tool_calls] == ["find_order"]


async def test_stream_refuses_a_piece_of_a_call_that_already_ended() -> None:
    body = sse(
        delta(calls=[piece(0, "{}", id="a", name="find_order")]),
        delta(calls=[piece(1, "{}", id="b", name="find_order")]),
        delta(calls=[piece(0, "more")]),
        delta(finish="tool_calls"),
        "[DONE]",
    )
    async with Server(body).engine() as engine:
        with pytest.raises(
            EngineRequestError, match="streamed a bad tool call: a tool-call piece for call index 0"
        ):
            async with engine.stream(GenerationRequest(messages=CONVERSATION[:2], tools=(ORDER,))) as stream:
                [c async for c in stream]


async def test_stream_refuses_more_call_pieces_than_max_tokens() -> None:
    body = sse(
        *[delta(calls=[piece(0, "x", id="a", name="find_order")]) for _ in range(6)],
        delta(finish="tool_calls"),
        "[DONE]",
    )
    async with Server(body).engine() as engine:
        with pytest.raises(EngineRequestError, match="more than max_tokens=4 pieces of text and tool calls"):
            request = GenerationRequest(messages=CONVERSATION[:2], tools=(ORDER,), max_tokens=4)
            async with engine.stream(request) as stream:
                [c async for c in stream]


# -- capabilities ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["openai", "vllm", "llamacpp"])
async def test_tool_calling_is_declared_from_the_configuration_not_the_detected_kind(
    kind: ServerKind,
) -> None:
    server = Server(answer_with_calls(), owned_by=kind)
    async with server.engine() as detected:
        assert not detected.capabilities.tool_calling
        await detected.probe()
        assert detected.server_kind == kind and not detected.capabilities.tool_calling
    async with server.engine(server_kind=kind) as given:
        assert given.capabilities.tool_calling is (kind == "openai")
    async with server.engine(tool_calling=True) as told:
        await told.probe()
        assert told.capabilities.tool_calling


async def test_llamacpp_stream_of_a_choice_the_model_makes_is_sent_unstreamed() -> None:
    # llama-cpp-python answers a streamed automatic tool choice with an error; the whole answer is handed out.
    server = Server(
        answer_with_calls({"id": "a", "function": {"name": "find_order", "arguments": '{"order": 42}'}}),
        owned_by="llamacpp",
    )
    async with server.engine() as engine:
        async with engine.stream(GenerationRequest(messages=CONVERSATION[:2], tools=(ORDER,))) as stream:
            chunks = [c async for c in stream]
        named = GenerationRequest(
            messages=CONVERSATION[:2], tools=(ORDER,), tool_choice=NamedToolChoice("find_order")
        )
        server.answer = sse(
            delta(calls=[piece(0, "{}", id="b", name="find_order")]), delta(finish="tool_calls"), "[DONE]"
        )
        async with engine.stream(named) as stream:
            streamed = [c async for c in stream]
    assert server.bodies[0]["stream"] is False and server.bodies[1]["stream"] is True
    assert [call.id for c in chunks for call in c.tool_calls] == ["a"]
    assert chunks[-1].finish_reason == "tool_calls" and chunks[-1].usage is not None
    assert [call.id for c in streamed for call in c.tool_calls] == ["b"]

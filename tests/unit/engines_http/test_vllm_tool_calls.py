"""VLLMEngine's native tool calling without vLLM: the chat-template messages and tools, the sampling
constraint, and the engine's answers read back into calls.

vLLM is not installed here (and needs a GPU), so ``AsyncLLM`` is stood in for by ``_FakeLLM``: it renders
chat templates with a small Hermes-style Jinja template (tools listed, calls and results tagged) and
streams a scripted answer as ``RequestOutput``-shaped deltas. What is under test is what agentflow
hands to vLLM and how it reads vLLM's outputs, not vLLM.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import jinja2.sandbox
import pytest

from agentflow.engines import GenerationRequest, Message, NamedToolChoice, ToolCallRequest, ToolSpec, _vllm
from agentflow.engines._tools import tool_output_schema
from agentflow.engines._vllm import (
    OutputKind,
    VLLMApi,
    VLLMEngine,
    chat_template_kwargs,
    chat_template_messages,
    make_sampling_params,
    sampling_spec,
)
from agentflow.errors import UnsupportedFeatureError

pytestmark = pytest.mark.anyio

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
CALL = ToolCallRequest("call_1", "find_order", '{"order": 42}')
CONVERSATION = (
    Message("system", "Use tools."),
    Message("user", "Email of the customer of order 42?"),
    Message("assistant", "", tool_calls=(CALL,)),
    Message("tool", "customer C-17", tool_call_id="call_1"),
)
TEMPLATE = (
    "{% if tools %}<tools>{% for t in tools %}{{ t.function | tojson }}{% endfor %}</tools>\n{% endif %}"
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}"
    "{% for c in m.tool_calls or [] %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}"
    "{% if m.tool_call_id %}<tool_response id={{ m.tool_call_id }}>{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


# -- pure mapping ------------------------------------------------------------------------------------------------


def test_template_messages_carry_calls_with_dict_arguments_and_result_ids() -> None:
    messages = chat_template_messages(GenerationRequest(messages=CONVERSATION))
    assert messages[2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "find_order", "arguments": {"order": 42}},
            }
        ],
    }
    assert messages[3] == {"role": "tool", "content": "customer C-17", "tool_call_id": "call_1"}
    assert messages[0] == {"role": "system", "content": "Use tools."}


def test_template_messages_keep_arguments_as_text_when_they_are_not_an_object() -> None:
    bad = ToolCallRequest("c", "find_order", "[1")
    messages = chat_template_messages(
        GenerationRequest(messages=(Message("assistant", "", tool_calls=(bad,)),))
    )
    assert messages[0]["tool_calls"][0]["function"]["arguments"] == "[1"  # type: ignore[index]


def test_template_messages_add_the_answer_format_when_tools_are_offered() -> None:
    auto = chat_template_messages(GenerationRequest(messages=CONVERSATION[:2], tools=(ORDER,)))
    assert auto[0]["content"].startswith("Use tools.\n\n")  # type: ignore[union-attr]
    assert '{"content": "<your answer>"}' in auto[0]["content"]  # type: ignore[operator]
    assert "- find_order" not in auto[0]["content"]  # type: ignore[operator]  # the template lists tools


def test_template_kwargs_offer_tools_only_when_the_model_may_call_them() -> None:
    assert chat_template_kwargs(GenerationRequest(messages=CONVERSATION[:2], tools=(ORDER,))) == {
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "find_order",
                    "parameters": dict(ORDER.parameters),
                    "description": "Look up an order.",
                },
            }
        ]
    }
    assert (
        chat_template_kwargs(GenerationRequest(messages=CONVERSATION[:2], tools=(ORDER,), tool_choice="none"))
        == {}
    )
    assert chat_template_kwargs(GenerationRequest(messages=CONVERSATION[:2])) == {}


@dataclass
class _StructuredOutputsParams:
    json: dict[str, object] | None = None


@dataclass
class _SamplingParams:
    n: int = 1
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    output_kind: str = "cumulative"
    structured_outputs: _StructuredOutputsParams | None = None


KINDS: dict[OutputKind, object] = {"delta": "DELTA", "final_only": "FINAL_ONLY"}
API = VLLMApi(_SamplingParams, KINDS, "structured_outputs", _StructuredOutputsParams)


@pytest.mark.parametrize("choice", ["auto", "required", "none", NamedToolChoice("customer_email")])
def test_sampling_params_constrain_the_answer_to_the_tool_format(choice: object) -> None:
    request = GenerationRequest(messages=CONVERSATION[:2], tools=(ORDER, EMAIL), tool_choice=choice)  # type: ignore[arg-type]
    params = make_sampling_params(sampling_spec(request, stream=True), API)
    assert isinstance(params, _SamplingParams)
    assert params.structured_outputs == _StructuredOutputsParams(dict(tool_output_schema(request) or {}))


def test_sampling_spec_refuses_tools_together_with_a_json_schema() -> None:
    request = GenerationRequest(messages=CONVERSATION[:2], tools=(ORDER,), json_schema={"type": "object"})
    with pytest.raises(UnsupportedFeatureError, match="both `tools` and `json_schema`"):
        sampling_spec(request, stream=False)


# -- the engine over a stand-in AsyncLLM --------------------------------------------------------------------------


@dataclass
class _Out:
    text: str
    token_ids: list[int]
    finish_reason: str | None = None


@dataclass
class _RequestOutput:
    outputs: list[_Out]
    prompt_token_ids: list[int] = field(default_factory=lambda: [1, 2, 3])
    num_cached_tokens: int = 0


class _Tokenizer:
    def __init__(self) -> None:
        self.rendered: list[str] = []
        self._template = jinja2.sandbox.ImmutableSandboxedEnvironment().from_string(TEMPLATE)

    def apply_chat_template(self, messages: list[dict[str, object]], **kwargs: object) -> str:
        text = self._template.render(messages=messages, **kwargs)
        self.rendered.append(text)
        return text

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) for c in text]


class _FakeLLM:
    """Streams ``pieces`` as delta outputs, the last one finished."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces
        self.tokenizer = _Tokenizer()
        self.params: list[object] = []

    def get_tokenizer(self) -> _Tokenizer:
        return self.tokenizer

    async def generate(
        self, prompt: object, params: object, request_id: str, priority: int = 0
    ) -> AsyncIterator[_RequestOutput]:
        self.params.append(params)
        for i, piece in enumerate(self.pieces):
            last = i == len(self.pieces) - 1
            yield _RequestOutput([_Out(piece, [i], "stop" if last else None)])


def engine_over(pieces: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[VLLMEngine, _FakeLLM]:
    monkeypatch.setattr(_vllm, "require_vllm", lambda: None)
    engine = VLLMEngine("stand-in")
    llm = _FakeLLM(pieces)
    engine._llm, engine._api = llm, API  # what start() would have built
    return engine, llm


async def test_engine_streams_each_call_as_its_item_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    pieces = [
        '[{"name": "find_order", "arguments": {"order": 4',
        '2}}, {"name": "customer_',
        'email", "arguments": {"customer": "C-17"}}]',
    ]
    engine, llm = engine_over(pieces, monkeypatch)
    request = GenerationRequest(messages=CONVERSATION, tools=(ORDER, EMAIL), tool_choice="required")
    async with engine.stream(request) as stream:
        chunks = [c async for c in stream]
    calls = [c.tool_calls for c in chunks if c.tool_calls]
    assert [[(t.name, t.parsed_arguments()) for t in group] for group in calls] == [
        [("find_order", {"order": 42})],
        [("customer_email", {"customer": "C-17"})],
    ]
    assert "".join(c.text for c in chunks) == ""
    assert chunks[-1].finish_reason == "tool_calls" and chunks[-1].usage is not None
    rendered = llm.tokenizer.rendered[-1]
    assert rendered.startswith('<tools>{"description": "Look up an order.", "name": "find_order"')
    assert "To call tools, answer with a JSON array of one or more calls" in rendered
    assert (
        '<|assistant|><tool_call>{"arguments": {"order": 42}, "name": "find_order"}</tool_call>' in rendered
    )
    assert "<|tool|>customer C-17<tool_response id=call_1>" in rendered
    assert engine.capabilities.tool_calling


async def test_engine_answers_text_when_the_model_answers_instead_of_calling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, _ = engine_over(['{"content": "c17@', 'example.com"}'], monkeypatch)
    request = GenerationRequest(messages=CONVERSATION, tools=(ORDER, EMAIL))
    completion = await engine.generate(request)
    assert completion.text == "c17@example.com" and completion.tool_calls == ()
    assert completion.finish_reason == "stop"


async def test_engine_calls_the_named_tool_from_its_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    engine, llm = engine_over(['{"customer": ', '"C-17"}'], monkeypatch)
    request = GenerationRequest(
        messages=CONVERSATION, tools=(ORDER, EMAIL), tool_choice=NamedToolChoice("customer_email")
    )
    completion = await engine.generate(request)
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [
        ("customer_email", '{"customer": "C-17"}')
    ]
    params = llm.params[-1]
    assert isinstance(params, _SamplingParams) and params.structured_outputs == _StructuredOutputsParams(
        dict(EMAIL.parameters)
    )


async def test_engine_streams_plain_text_when_no_tools_are_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    engine, llm = engine_over(["Hel", "lo"], monkeypatch)
    async with engine.stream(GenerationRequest(messages=CONVERSATION)) as stream:
        chunks = [c async for c in stream]
    assert [c.text for c in chunks] == ["Hel", "lo", ""]
    params = llm.params[-1]
    assert isinstance(params, _SamplingParams) and params.structured_outputs is None
    assert llm.tokenizer.rendered[-1].startswith("<|system|>Use tools.\n<|user|>")

"""Native tool calling, mapped for engines: OpenAI wire shapes, and tool calls as constrained JSON.

Two ways an engine can serve a request with ``tools``:

* **The server's own tool calling** (``OpenAIEngine``): tools, tool choice and the conversation's calls
  and results go out in OpenAI's shapes (``openai_tool``, ``openai_tool_choice``, ``openai_tool_call``);
  calls come back whole, or streamed as deltas that ``ToolCallAssembler`` puts together by index.
* **Constrained JSON** (the embedded llama.cpp engine, vLLM in process): the answer is decoded under a
  JSON Schema built from the offered tools (``tool_output_schema``) and parsed back into calls
  (``parse_tool_output``). The shapes follow vLLM's OpenAI server::

      tool_choice          the model writes                                    becomes
      NamedToolChoice(T)   T's arguments object                                one call of T
      "required"           [{"name": T, "arguments": {...}}, ...]              those calls (one if not parallel)
      "auto"               the same array, or {"content": "<answer>"}          calls, or the answer text
      "none"               {"content": "<answer>"}                             the answer text

  ("none" is constrained too: a small model that saw its earlier calls written as JSON would otherwise
  write another call as its answer.)

  Engines whose chat template knows nothing of tools get the tools and the format in a system message
  (``tool_instructions``) and the conversation's calls and results as text (``plain_messages``).

Call ids made here are derived from the prompt and the answer, so a replayed conversation sends the same
ids again (recordings keyed by request content keep matching).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace

from pydantic import JsonValue

from ._types import (
    GenerationRequest,
    JsonSchema,
    Message,
    NamedToolChoice,
    ToolCallRequest,
    ToolChoice,
    ToolSpec,
)

__all__ = [
    "ToolCallAssembler",
    "ToolCallDelta",
    "ToolOutputReader",
    "call_id",
    "constrained_tool_request",
    "has_tool_history",
    "openai_tool",
    "openai_tool_call",
    "openai_tool_choice",
    "parse_tool_output",
    "plain_messages",
    "tool_instructions",
    "tool_output_schema",
    "uses_tools",
]


# --------------------------------------------------------------------------------------------
# OpenAI shapes


def openai_tool(spec: ToolSpec) -> dict[str, object]:
    """``{"type": "function", "function": {"name", "description", "parameters"}}``."""
    function: dict[str, object] = {"name": spec.name, "parameters": dict(spec.parameters)}
    if spec.description:
        function["description"] = spec.description
    return {"type": "function", "function": function}


def openai_tool_choice(choice: ToolChoice) -> str | dict[str, object]:
    """``"auto"``, ``"none"``, ``"required"`` or ``{"type": "function", "function": {"name": ...}}``."""
    if isinstance(choice, NamedToolChoice):
        return {"type": "function", "function": {"name": choice.name}}
    return choice


def openai_tool_call(call: ToolCallRequest) -> dict[str, object]:
    """A call in an assistant message: ``{"id", "type": "function", "function": {"name", "arguments"}}``."""
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def uses_tools(request: GenerationRequest) -> bool:
    """Whether the model is offered tools it may call (``tools`` given and ``tool_choice`` is not ``none``)."""
    return bool(request.tools) and request.tool_choice != "none"


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """One streamed piece of a tool call (OpenAI ``delta.tool_calls[i]``).

    Attributes:
        index: Which call of the answer it belongs to.
        id: The call's id (normally only in its first piece).
        name: The tool's name (normally only in its first piece; some servers repeat it).
        arguments: The next piece of the arguments' JSON text.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class _Pending:
    id: str | None
    name: str | None
    arguments: list[str]


class ToolCallAssembler:
    """Puts streamed tool-call pieces together by index; hands out each call once, as soon as it is whole.

    A call is whole when a piece of a later call arrives (servers stream calls one after another) or
    when the stream ends (``finish``). The name and id are taken from the first piece that has them (a
    server that repeats them in every piece, as llama-cpp-python does, is read the same); argument pieces
    are joined.

    Example:
        >>> a = ToolCallAssembler()
        >>> a.feed([ToolCallDelta(0, "c1", "add", '{"a": ')])
        []
        >>> a.feed([ToolCallDelta(0, arguments="1}"), ToolCallDelta(1, "c2", "neg", "{}")])
        [ToolCallRequest(id='c1', name='add', arguments='{"a": 1}')]
        >>> a.finish()
        [ToolCallRequest(id='c2', name='neg', arguments='{}')]
    """

    def __init__(self) -> None:
        self._pending: dict[int, _Pending] = {}  # index -> the call being assembled; emptied as calls finish
        self._done: set[int] = set()  # indexes already handed out; lives as long as the stream

    def feed(self, deltas: Sequence[ToolCallDelta]) -> list[ToolCallRequest]:
        """Take one event's pieces; return the calls they complete.

        Raises:
            ValueError: A piece belongs to a call already handed out, or a whole call has no name.
        """
        completed: list[ToolCallRequest] = []
        for delta in deltas:
            if delta.index in self._done or delta.index < 0:
                raise ValueError(f"a tool-call piece for call index {delta.index}, which already ended")
            for index in sorted(i for i in self._pending if i < delta.index):
                completed.append(self._close(index))
            pending = self._pending.setdefault(delta.index, _Pending(None, None, []))
            if delta.id and pending.id is None:
                pending.id = delta.id
            if delta.name and pending.name is None:
                pending.name = delta.name
            if delta.arguments:
                pending.arguments.append(delta.arguments)
        return completed

    @property
    def handed_out(self) -> int:
        """How many whole calls were handed out so far."""
        return len(self._done)

    def finish(self) -> list[ToolCallRequest]:
        """The calls still being assembled, in index order (the stream ended).

        Raises:
            ValueError: A call has no name.
        """
        return [self._close(index) for index in sorted(self._pending)]

    def _close(self, index: int) -> ToolCallRequest:
        pending = self._pending.pop(index)
        self._done.add(index)
        if not pending.name:
            raise ValueError(f"tool call {index} ended without a tool name")
        return ToolCallRequest(
            id=pending.id or f"call_{index}", name=pending.name, arguments="".join(pending.arguments) or "{}"
        )


# --------------------------------------------------------------------------------------------
# Tool calls as constrained JSON


def call_id(seed: str, index: int) -> str:
    """A call id derived from ``seed`` (the prompt and the answer): ``call_<12 hex>_<index>``."""
    digest = hashlib.sha256(seed.encode("utf-8")).hexdigest()[:12]
    return f"call_{digest}_{index}"


def _hoisted(tools: Sequence[ToolSpec]) -> tuple[list[tuple[ToolSpec, JsonValue]], dict[str, JsonValue]]:
    """Each tool's parameter schema with its ``$defs`` moved to one shared root (names prefixed by tool)."""
    defs: dict[str, JsonValue] = {}
    out: list[tuple[ToolSpec, JsonValue]] = []
    for index, spec in enumerate(tools):
        params: dict[str, JsonValue] = json.loads(json.dumps(dict(spec.parameters), default=str))
        local = params.pop("$defs", None)
        if isinstance(local, dict) and local:
            prefix = f"t{index}__"
            params = json.loads(json.dumps(params).replace('"#/$defs/', f'"#/$defs/{prefix}'))
            for key, value in local.items():
                defs[prefix + key] = json.loads(json.dumps(value).replace('"#/$defs/', f'"#/$defs/{prefix}'))
        out.append((spec, params))
    return out, defs


def _calls_schema(request: GenerationRequest) -> dict[str, JsonValue]:
    hoisted, defs = _hoisted(request.tools)
    items: list[JsonValue] = [
        {
            "type": "object",
            "properties": {"name": {"const": spec.name}, "arguments": params},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for spec, params in hoisted
    ]
    schema: dict[str, JsonValue] = {"type": "array", "minItems": 1, "items": {"anyOf": items}}
    if not request.parallel_tool_calls:
        schema["maxItems"] = 1
    if defs:
        schema["$defs"] = defs
    return schema


_CONTENT_SCHEMA: dict[str, JsonValue] = {
    "type": "object",
    "properties": {"content": {"type": "string"}},
    "required": ["content"],
    "additionalProperties": False,
}


def tool_output_schema(request: GenerationRequest) -> JsonSchema | None:
    """The JSON Schema the answer is decoded under (see the module docstring); ``None`` without tools."""
    if not request.tools:
        return None
    choice = request.tool_choice
    if choice == "none":
        return dict(_CONTENT_SCHEMA)
    if isinstance(choice, NamedToolChoice):
        spec = next(t for t in request.tools if t.name == choice.name)
        return dict(spec.parameters)
    calls = _calls_schema(request)
    if choice == "required":
        return calls
    defs = calls.pop("$defs", None)
    schema: dict[str, JsonValue] = {"anyOf": [calls, _CONTENT_SCHEMA]}
    if defs is not None:
        schema["$defs"] = defs
    return schema


def tool_instructions(request: GenerationRequest, *, list_tools: bool = True) -> str:
    """System text for a model whose chat template has no tools: the tools (unless ``list_tools`` is
    false, for templates that list them already) and the answer format."""
    if not request.tools:
        return ""
    if request.tool_choice == "none":
        return 'Do not call tools now: answer with {"content": "<your answer>"}.'
    lines = ["You can call these tools:"] if list_tools else []
    for spec in request.tools if list_tools else ():
        desc = " ".join(spec.description.split())
        params = json.dumps(dict(spec.parameters), separators=(",", ":"), default=str)
        lines.append(
            f"- {spec.name}: {desc} Arguments (JSON Schema): {params}" if desc else f"- {spec.name}: {params}"
        )
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoice):
        lines.append(f"Call the tool {choice.name}: answer with its arguments as one JSON object.")
        return "\n".join(lines)
    many = "one or more calls" if request.parallel_tool_calls else "exactly one call"
    lines.append(
        f'To call tools, answer with a JSON array of {many}: [{{"name": "<tool>", "arguments": {{...}}}}]'
    )
    if choice == "auto":
        lines.append('To answer without calling a tool, answer with {"content": "<your answer>"}.')
    return "\n".join(lines)


def _call_text(calls: Sequence[ToolCallRequest]) -> str:
    """An assistant turn's calls written the way a constrained model writes them."""
    parts = []
    for call in calls:
        try:
            json.loads(call.arguments or "{}")
            arguments = call.arguments or "{}"
        except ValueError:
            arguments = json.dumps(call.arguments)
        parts.append(f'{{"name": {json.dumps(call.name)}, "arguments": {arguments}}}')
    return "[" + ", ".join(parts) + "]"


def plain_messages(
    request: GenerationRequest, *, instructions: str = "", calls_as_text: bool = True
) -> tuple[Message, ...]:
    """The request's messages for a chat template without tools: ``instructions`` joined to the system
    message (or put first), assistant calls written as the JSON a constrained model writes (unless
    ``calls_as_text`` is false: then they stay calls), and each ``tool`` result as a ``user`` message
    naming the call it answers."""
    assert request.messages is not None
    names: dict[str, str] = {}  # call id -> tool name, from the assistant turns read so far
    out: list[Message] = []
    for message in request.messages:
        if message.tool_calls:
            names.update((c.id, c.name) for c in message.tool_calls)
            if not calls_as_text:
                out.append(message)
                continue
            text = _call_text(message.tool_calls)
            content = f"{message.content}\n{text}" if message.content else text
            out.append(Message(message.role, content))
        elif message.role == "tool":
            name = names.get(message.tool_call_id or "", "a tool")
            call = f" (call {message.tool_call_id})" if message.tool_call_id else ""
            out.append(Message("user", f"Result of {name}{call}:\n{message.content}"))
        else:
            out.append(Message(message.role, message.content))
    if instructions:
        if out and out[0].role == "system":
            out[0] = Message("system", f"{out[0].content}\n\n{instructions}")
        else:
            out.insert(0, Message("system", instructions))
    return tuple(out)


def has_tool_history(request: GenerationRequest) -> bool:
    """Whether the conversation holds tool calls or tool results."""
    return request.messages is not None and any(m.tool_calls or m.role == "tool" for m in request.messages)


def constrained_tool_request(request: GenerationRequest) -> GenerationRequest:
    """``request`` for an engine without native tools: plain messages (with the tool instructions), the
    answer constrained by ``tool_output_schema``, no ``tools``.

    Raises:
        UnsupportedFeatureError: The request also has a ``json_schema`` (the answer cannot follow both).
    """
    if request.messages is None or not (request.tools or has_tool_history(request)):
        return request
    if request.tools and request.json_schema is not None:
        from agentflow.errors import UnsupportedFeatureError

        raise UnsupportedFeatureError(
            "this engine constrains tool calls with a JSON Schema, so a request cannot have both `tools` "
            "and `json_schema`; drop one"
        )
    return replace(
        request,
        messages=plain_messages(request, instructions=tool_instructions(request)),
        json_schema=tool_output_schema(request) if request.tools else request.json_schema,
        tools=(),
        tool_choice="auto",
    )


class ToolOutputReader:
    """Reads an answer decoded under ``tool_output_schema(request)`` as it streams, handing out each call
    of a call array as soon as its item closes (so a planner can start it while the model writes the
    next one).

    Call ids are ``call_id(seed + item text, index)``: the same prompt and answer give the same ids.
    """

    def __init__(self, request: GenerationRequest, *, seed: str) -> None:
        self._request = request
        self._seed = seed
        self._text: list[str] = []  # everything fed so far
        self._calls = 0  # calls handed out so far
        # Array scan state, kept between feeds: not started / in the array / done (or not an array).
        self._mode = "start"  # start -> array -> done; "other" when the answer is not a call array
        self._depth = 0  # bracket depth inside the current item (0: between items)
        self._in_string = False
        self._escape = False
        self._item: list[str] = []  # characters of the current item

    def feed(self, text: str) -> list[ToolCallRequest]:
        """Take the next piece of the answer; return the calls it completes."""
        self._text.append(text)
        if not self._request.tools or isinstance(self._request.tool_choice, NamedToolChoice):
            return []
        out: list[ToolCallRequest] = []
        for char in text:
            if self._mode == "start":
                if not char.isspace():
                    self._mode = "array" if char == "[" else "other"
                continue
            if self._mode != "array":
                break
            if self._depth == 0:
                if char == "{":
                    self._depth = 1
                    self._item = [char]
                elif char == "]":
                    self._mode = "done"
                continue
            self._item.append(char)
            self._scan(char)
            if self._depth == 0:
                call = self._call("".join(self._item))
                if call is None:
                    self._mode = "other"
                    break
                out.append(call)
        return out

    def _scan(self, char: str) -> None:
        if self._in_string:
            if self._escape:
                self._escape = False
            elif char == "\\":
                self._escape = True
            elif char == '"':
                self._in_string = False
        elif char == '"':
            self._in_string = True
        elif char in "{[":
            self._depth += 1
        elif char in "}]":
            self._depth -= 1

    def _call(self, item_text: str) -> ToolCallRequest | None:
        try:
            item: JsonValue = json.loads(item_text)
        except ValueError:
            return None
        if not (isinstance(item, dict) and isinstance(item.get("name"), str)):
            return None
        name = item["name"]
        assert isinstance(name, str)
        arguments = json.dumps(item.get("arguments", {}), ensure_ascii=False)
        call = ToolCallRequest(call_id(self._seed + item_text, self._calls), name, arguments)
        self._calls += 1
        return call

    def finish(self) -> tuple[str, list[ToolCallRequest]]:
        """The answer's content and the calls not handed out yet.

        An answer that is not in the format (cut off by ``max_tokens``, say) keeps the calls already
        handed out; if there were none, the whole text is returned as content, so nothing is lost.
        """
        text = "".join(self._text)
        if not self._request.tools:
            return text, []
        choice = self._request.tool_choice
        try:
            value: JsonValue = json.loads(text)
        except ValueError:
            return ("" if self._calls else text), []
        if isinstance(choice, NamedToolChoice):
            if not isinstance(value, dict):
                return text, []
            return "", [ToolCallRequest(call_id(self._seed + text, 0), choice.name, text.strip())]
        if isinstance(value, dict) and isinstance(value.get("content"), str) and choice in ("auto", "none"):
            content = value["content"]
            assert isinstance(content, str)
            return content, []
        return ("" if self._calls else text), []


def parse_tool_output(
    request: GenerationRequest, text: str, *, seed: str
) -> tuple[str, tuple[ToolCallRequest, ...]]:
    """The content and the tool calls of a whole answer (``ToolOutputReader`` fed at once)."""
    reader = ToolOutputReader(request, seed=seed)
    calls = reader.feed(text)
    content, rest = reader.finish()
    return content, tuple(calls + rest)

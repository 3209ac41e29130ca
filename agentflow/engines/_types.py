"""The engine protocol: requests, completions, usage accounting and declared capabilities.

Every engine (embedded llama.cpp, OpenAI-compatible HTTP, in-process vLLM, test doubles) implements
``Engine``. ``agentflow.runtime.call_llm`` only talks to this protocol; the scheduler also asks for the
optional protocols of ``_protocols`` (cache events, pins, prefill, cache salts). ``stream`` returns an async
context manager (``ChunkStream``; engines build it with ``closing_stream``), so leaving its ``async with``
ends the request there.

Native tool calling: a request offers ``tools`` (``ToolSpec``: name, description, JSON Schema of the
arguments) and says whether the model may, must or must not call them (``tool_choice``); the completion
carries the calls the model asked for (``ToolCallRequest``: id, name, arguments as JSON text), and a
conversation continues with an assistant message holding those calls and one ``tool`` message per call
(``Message(role="tool", content=result, tool_call_id=call.id)``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias, runtime_checkable

import anyio
from pydantic import JsonValue

Role = Literal["system", "user", "assistant", "tool"]
PrefixCacheKind = Literal["exact", "block", "none"]
"""How an engine reuses prompt prefixes: ``exact`` (token-exact, e.g. llama.cpp snapshots),
``block`` (fixed-size blocks, e.g. vLLM/SGLang automatic prefix caching) or ``none``."""

JsonSchema = Mapping[str, object]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool offered to the model for native tool calling.

    Attributes:
        name: The tool's name (what the model calls).
        description: What the tool does, for the model.
        parameters: The JSON Schema of its arguments (an object schema).
    """

    name: str
    description: str = ""
    parameters: JsonSchema = field(default_factory=lambda: {"type": "object", "properties": {}})

    def __post_init__(self) -> None:
        if not self.name:
            from agentflow.errors import ConfigError

            raise ConfigError("a ToolSpec needs a name, got ''")
        kind = self.parameters.get("type", "object")
        if kind != "object":
            from agentflow.errors import ConfigError

            raise ConfigError(
                f"tool {self.name!r}: parameters must be an object schema (type 'object'), got type {kind!r}"
            )


@dataclass(frozen=True, slots=True)
class NamedToolChoice:
    """``tool_choice`` that makes the model call one named tool.

    Attributes:
        name: The tool the model must call (one of the request's ``tools``).
    """

    name: str


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice
"""Whether the model may call a tool (``auto``), must not (``none``), must call at least one
(``required``) or must call one named tool (``NamedToolChoice``)."""


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """One tool call the model asked for.

    Attributes:
        id: The call's id; the ``tool`` message answering it carries the same ``tool_call_id``.
        name: The tool to call.
        arguments: The arguments as the model wrote them: JSON text, normally an object (kept as text so a
            conversation sends them back exactly; ``parsed_arguments`` reads them).
    """

    id: str
    name: str
    arguments: str = "{}"

    def parsed_arguments(self) -> dict[str, JsonValue]:
        """The arguments as a dict.

        Raises:
            ToolError: The arguments are not JSON, or not a JSON object.
        """
        import json

        from agentflow.errors import ToolError

        try:
            value: JsonValue = json.loads(self.arguments or "{}")
        except ValueError as exc:
            raise ToolError(
                self.name, f"call {self.id}: the arguments are not JSON ({exc}): {self.arguments[:200]!r}"
            ) from None
        if not isinstance(value, dict):
            raise ToolError(
                self.name,
                f"call {self.id}: the arguments must be a JSON object, got {type(value).__name__}: "
                f"{self.arguments[:200]!r}",
            )
        return value


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message.

    Attributes:
        role: Who speaks.
        content: The text (may be empty for an assistant message that only calls tools).
        tool_calls: On an assistant message: the tool calls it made.
        tool_call_id: On a ``tool`` message: the id of the call it answers.
    """

    role: Role
    content: str
    tool_calls: tuple[ToolCallRequest, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class RequestHints:
    """What the scheduler may know about a request's place in a workflow.

    Attributes:
        workflow_id: The run/workflow the request belongs to.
        agent: The agent (or step path) issuing the request; requests of one agent share a prefix.
        tenant: Tenant for cache isolation (``cache_salt`` on vLLM).
        steps_to_execution: DAG distance until this request's result is needed (0 = now).
        fanout_group: Requests of one fan-out share this id and should run back to back.
        deadline: Absolute ``time.monotonic()`` deadline, if any.
        priority: Engine priority (lower runs earlier on vLLM), if any.
    """

    workflow_id: str | None = None
    agent: str | None = None
    tenant: str | None = None
    steps_to_execution: int = 0
    fanout_group: str | None = None
    deadline: float | None = None
    priority: int | None = None


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One LLM request: either a raw ``prompt`` or chat ``messages`` (exactly one of them).

    Attributes:
        prompt: Raw prompt text (no chat template applied).
        messages: Chat messages (the engine applies its chat template).
        max_tokens: Upper bound on generated tokens.
        temperature: Sampling temperature (0 = greedy).
        top_p: Nucleus sampling.
        stop: Stop strings.
        seed: Sampling seed, if the engine supports it.
        json_schema: Constrain the output to this JSON Schema (grammar / response_format / structured outputs).
        logit_bias: Token id -> bias added to that token's logit before sampling (OpenAI ``logit_bias``;
            ids are the engine's own, see ``Engine.tokenize``), e.g. ``-100`` bans a token.
        tools: Tools the model may call (chat requests only); its calls come back in
            ``Completion.tool_calls``.
        tool_choice: Whether the model may (``auto``), must (``required``, ``NamedToolChoice``) or must not
            (``none``) call a tool.
        parallel_tool_calls: Whether the model may ask for several calls in one answer.
        hints: Scheduling hints.
    """

    prompt: str | None = None
    messages: tuple[Message, ...] | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    json_schema: JsonSchema | None = None
    logit_bias: Mapping[int, float] | None = None
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True
    hints: RequestHints = field(default_factory=RequestHints)

    def __post_init__(self) -> None:
        from agentflow.errors import ConfigError

        if (self.prompt is None) == (self.messages is None):
            raise ConfigError("a GenerationRequest needs exactly one of `prompt` or `messages`")
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.tools or self.tool_choice != "auto":
            _check_tools(self)


def _check_tools(request: GenerationRequest) -> None:
    from agentflow.errors import ConfigError

    if request.prompt is not None and request.tools:
        raise ConfigError("tools need a chat request: give `messages` instead of `prompt`")
    names = [t.name for t in request.tools]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ConfigError(f"tools offered twice: {doubled}; give each tool once")
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoice):
        if choice.name not in names:
            raise ConfigError(
                f"tool_choice names tool {choice.name!r}, which is not among the request's tools {names}"
            )
    elif choice == "required" and not names:
        raise ConfigError("tool_choice='required' needs at least one tool in `tools`")
    elif choice not in ("auto", "none", "required"):
        raise ConfigError(
            f"tool_choice must be 'auto', 'none', 'required' or NamedToolChoice(name), got {choice!r}"
        )


@dataclass(frozen=True, slots=True)
class Usage:
    """Token accounting and timings of one completion.

    Invariant: ``prompt_tokens == (cached_tokens or 0) + computed_tokens``.

    Attributes:
        prompt_tokens: Tokens in the prompt.
        cached_tokens: Prompt tokens whose KV was reused from a cache; ``None`` when the engine did not say
            (an OpenAI-compatible server without ``usage.prompt_tokens_details``; vLLM sends it only when
            started with ``--enable-prompt-tokens-details``). Unknown is not 0: nothing may conclude from it
            that the cache missed.
        computed_tokens: Prompt tokens actually prefilled (all of them when ``cached_tokens`` is unknown:
            an upper bound).
        completion_tokens: Generated tokens.
        queue_s: Seconds waiting in the scheduler / engine queue.
        ttft_s: Seconds from submission to the first generated token.
        total_s: Seconds from submission to completion.
    """

    prompt_tokens: int = 0
    cached_tokens: int | None = 0
    computed_tokens: int = 0
    completion_tokens: int = 0
    queue_s: float = 0.0
    ttft_s: float = 0.0
    total_s: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        """Sums; the cached tokens of a sum are unknown when those of both parts are (else unknown counts 0)."""
        cached = (
            None
            if self.cached_tokens is None and other.cached_tokens is None
            else (self.cached_tokens or 0) + (other.cached_tokens or 0)
        )
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            cached,
            self.computed_tokens + other.computed_tokens,
            self.completion_tokens + other.completion_tokens,
            self.queue_s + other.queue_s,
            self.ttft_s + other.ttft_s,
            self.total_s + other.total_s,
        )


FinishReason = Literal["stop", "length", "error", "tool_calls"]
"""Why generation ended: a natural end or stop string, ``max_tokens``, a failure, or tool calls."""


@dataclass(frozen=True, slots=True)
class Completion:
    """The result of one generation.

    Attributes:
        text: The generated text (the answer's content; may be empty when the model only calls tools).
        usage: Tokens and timings.
        finish_reason: Why generation ended.
        model: The model that answered, if the engine says.
        tool_calls: The tool calls the model asked for, in order (requests with ``tools`` only).
    """

    text: str
    usage: Usage
    finish_reason: FinishReason = "stop"
    model: str = ""
    tool_calls: tuple[ToolCallRequest, ...] = ()


@dataclass(frozen=True, slots=True)
class Chunk:
    """One streamed piece of a completion; the last chunk carries ``usage`` and ``finish_reason``.

    Attributes:
        text: New text.
        usage: On the last chunk: the completion's usage.
        finish_reason: On the last chunk: why generation ended.
        tool_calls: Tool calls completed since the previous chunk (each call arrives once, whole).
    """

    text: str
    usage: Usage | None = None
    finish_reason: FinishReason | None = None
    tool_calls: tuple[ToolCallRequest, ...] = ()


DEFAULT_BLOCK_SIZE = 64
"""Tokens per KV block assumed for a block prefix cache whose block size is unknown (vLLM 0.34's default)."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine declares it can do.

    Attributes:
        prefix_cache: How the engine reuses prompt prefixes.
        slots: How many requests it runs at once (llama.cpp: 1 per ``Llama``).
        structured_output: Whether ``json_schema`` constrained decoding is supported.
        priority: Whether per-request priority is honoured.
        streaming: Whether ``stream`` yields incremental chunks.
        block_size: Prefix-cache block size in tokens (``block`` caches): what the server reports, else
            ``DEFAULT_BLOCK_SIZE`` (vLLM's default KV block since 0.34; it was 16 before).
        cache_bytes: Approximate bytes of KV cache available to reuse, if known.
        tool_calling: Whether the engine does native tool calling: the model is shown the tools and calls
            them in its trained format (chat template tools, a server's tool-call parser). Agents use
            native calls when it is set and their own JSON/text plans otherwise. An engine that only
            emulates calls with a grammar over the tools (the embedded llama.cpp engine) still serves
            requests with ``tools`` but does not set it: the agents' JSON plans are that same grammar,
            tuned for small models.
        cache_tokens: Tokens of KV the prefix cache holds, if known (a vLLM server reports it).
    """

    prefix_cache: PrefixCacheKind = "none"
    slots: int = 1
    structured_output: bool = False
    priority: bool = False
    streaming: bool = True
    block_size: int = DEFAULT_BLOCK_SIZE
    cache_bytes: int | None = None
    tool_calling: bool = False
    cache_tokens: int | None = None


ChunkStream: TypeAlias = AbstractAsyncContextManager[AsyncIterator[Chunk]]
"""What ``Engine.stream`` returns: entered, it gives the chunks; exited, the request is over and released."""


@asynccontextmanager
async def closing_stream(chunks: AsyncGenerator[Chunk, None]) -> AsyncIterator[AsyncIterator[Chunk]]:
    """The ``ChunkStream`` of an async generator of chunks: what an engine's ``stream`` returns.

    Leaving the ``async with`` closes the generator, under a shielded cancel scope, so its ``finally`` blocks
    (releasing an engine slot, a scheduler admission, an HTTP response) run then and there, even when the
    caller stopped reading half-way or was cancelled::

        def stream(self, request: GenerationRequest) -> ChunkStream:
            return closing_stream(self._chunks(request))
    """
    try:
        yield chunks
    finally:
        with anyio.CancelScope(shield=True):
            await chunks.aclose()


def open_stream(engine: Engine, request: GenerationRequest) -> ChunkStream:
    """``engine.stream(request)``, checked: what callers (``call_llm``, every ``WrapperEngine``) enter.

    Raises:
        ConfigError: The engine's ``stream`` is an async generator (the protocol before streams became
            context managers) or returns something else that cannot be entered with ``async with``.
    """
    stream: object = engine.stream(request)
    if isinstance(stream, AbstractAsyncContextManager):
        return stream
    from agentflow.errors import ConfigError

    raise ConfigError(
        f"{type(engine).__name__}.stream() returned {type(stream).__name__}, not an async context manager: "
        "engines' streams are used as `async with engine.stream(request) as chunks`; if stream() is an async "
        "generator, rename it (e.g. _chunks) and define `def stream(self, request): return "
        "closing_stream(self._chunks(request))` (agentflow.engines.closing_stream)"
    )


@runtime_checkable
class Engine(Protocol):
    """An LLM engine. Implementations must be safe to call from many anyio tasks at once.

    Who calls what: ``agentflow.runtime.call_llm`` (every agent, plan step and summarizer) calls ``generate``
    or ``stream``; middleware (``Scheduler``, ``PrefixRouter``, ``RecordingEngine``, all ``WrapperEngine``s)
    calls ``render`` and ``tokenize`` to see a request's prompt tokens before it runs it, reads
    ``capabilities`` when it is built and again after the first ``tokenize`` (a remote engine knows what it
    talks to only then), and ``aclose`` when the owner is done. What a scheduler may use beyond this are
    optional protocols: ``CacheEventSource``, ``PrefixPinning``, ``Prefilling``, ``CacheSalting``.
    """

    @property
    def name(self) -> str:
        """A short human-readable name, e.g. ``llamacpp:SmolLM2-135M-Instruct``."""
        ...

    @property
    def capabilities(self) -> Capabilities:
        """What this engine supports."""
        ...

    async def generate(self, request: GenerationRequest) -> Completion:
        """Run one request to completion."""
        ...

    def stream(self, request: GenerationRequest) -> ChunkStream:
        """Run one request, handing out chunks as they are produced; the last carries usage and finish reason.

        Use it as ``async with engine.stream(request) as chunks: async for chunk in chunks: ...``. The request
        starts when the chunks are first read and ends when the ``async with`` exits: an engine slot, a
        scheduler admission or a connection held by it is released there, whether every chunk was read,
        the reader stopped early (``break``), raised or was cancelled. Implementations return
        ``closing_stream(generator)`` or an ``@asynccontextmanager`` that yields the chunks.
        """
        ...

    async def tokenize(self, text: str) -> Sequence[int]:
        """Token ids of ``text`` as this engine's model sees it."""
        ...

    async def render(self, request: GenerationRequest) -> str:
        """The exact prompt text the engine will feed the model (chat template applied)."""
        ...

    async def aclose(self) -> None:
        """Release resources (threads, connections, model memory)."""
        ...

"""``OpenAIEngine``: any OpenAI-compatible HTTP server (vLLM, SGLang, llama.cpp server, hosted APIs).

One pooled ``httpx.AsyncClient`` per engine. ``messages`` requests go to ``/v1/chat/completions``,
``prompt`` requests to ``/v1/completions``; streaming parses the server-sent events (``data:``
lines, ``[DONE]``). Failures are retried with jittered exponential backoff (``RetryPolicy``) on
429/5xx and connection/read errors, honouring ``Retry-After``; when the budget is spent the caller
gets an ``EngineUnavailableError`` (could not reach the server) or ``EngineRequestError`` (the
server kept failing or rejected the request), naming the URL, the status and the attempts.

The server kind (``vllm``, ``llamacpp`` or plain ``openai``) is given or detected once from
``/v1/models`` (``owned_by``) and ``/version``. It decides:

    feature                 vllm                        llamacpp (llama-cpp-python)   openai
    structured output       chat: response_format       response_format json_object   json_schema
                            json_schema; prompt:        + schema; prompt: GBNF grammar
                            structured_outputs {json}
    priority, cache_salt    sent                        never sent                    never sent
    prefix cache            block, block size and       exact                         none
                            capacity from /metrics
    tokenize                POST /tokenize              POST /extras/tokenize         POST /tokenize
                                                        (then /tokenize, C++ server)  if present
    default concurrency     64                          1 (the server serializes and  64
                                                        cuts streams short otherwise)
    tool results            role "tool"                 a "user" message naming the   role "tool"
                                                        call (chatml-function-calling
                                                        drops "tool" messages' text)
    tool_choice="required"  sent                        sent as "auto" (unsupported)  sent
    streamed auto/required  streamed                    sent unstreamed, handed out   streamed
                                                        whole (it cannot stream them)
    tool_calling="auto"     False (needs vllm serve     False (needs --chat_format    True when given as
                            --enable-auto-tool-choice)  chatml-function-calling)      server_kind="openai"

Native tool calling: ``tools``, ``tool_choice`` and ``parallel_tool_calls`` (sent only when false) go out
in OpenAI's shapes, with the conversation's calls on assistant messages and results as ``tool`` messages;
calls come back in ``message.tool_calls``, or streamed as ``delta.tool_calls`` pieces that are put
together by index and handed out whole (``Chunk.tool_calls``) as soon as each call is complete.

vLLM specifics: on ``/v1/completions`` vLLM 0.11 ignores ``response_format`` (its chat endpoint honours it),
so prompt requests carry ``structured_outputs: {"json": schema}``, which 0.11 and 0.34 both apply. The
block size of vLLM's prefix cache (64 tokens by default since 0.34, per attention backend; 16 before), its
capacity and whether it is on are read once, at the first request, from ``vllm:cache_config_info`` on
``/metrics``; a server without it is assumed to use ``DEFAULT_BLOCK_SIZE``. ``usage.prompt_tokens_details.
cached_tokens`` is sent only by a vLLM started with ``--enable-prompt-tokens-details``; without it the
engine reports ``cached_tokens=None`` (unknown), never 0. vLLM honours ``priority`` only under
``--scheduling-policy priority`` (under the default FCFS it accepts and ignores it), which HTTP does not
show: say so with ``priority_scheduling=True`` and ``capabilities.priority`` is true.

API keys come only from an environment variable (``api_key_env``, by default ``OPENAI_API_KEY``
when set) or from a secret handle with a ``reveal()`` method; the key never appears in ``repr``,
logs or error messages: it is registered with ``agentflow.secrets`` for redaction, and every piece
of server text quoted in an error is redacted (a server that echoes the ``Authorization`` header
cannot put the key into an ``EngineRequestError``).

A server is untrusted input, so every attempt is bounded: ``timeout`` is a total deadline for the
whole attempt (connecting, headers, body and every streamed event together, not per read), a body
holds at most ``max_response_bytes``, one server-sent-events line or event at most
``max_event_bytes``, and a stream may carry at most ``max_tokens`` pieces of text. A server that
drips headers, body or SSE comments, sends an endless body or line, or streams past ``max_tokens``
gets an ``EngineRequestError`` (or a retry, for a missed deadline) instead of a hang or unbounded
memory.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import os
import random
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, Self, TypeVar, runtime_checkable

import anyio
from pydantic import BaseModel, ConfigDict, ValidationError

from agentflow.dsl import Retrier, RetryNotice
from agentflow.engines._metrics import PrometheusText, VLLMCacheConfig, VLLMMetrics, parse_prometheus_text
from agentflow.engines._retry import RETRYABLE_STATUS, RetryEvent, RetryPolicy, parse_retry_after
from agentflow.engines._text import render_messages
from agentflow.engines._tools import (
    ToolCallAssembler,
    ToolCallDelta,
    openai_tool,
    openai_tool_call,
    openai_tool_choice,
    plain_messages,
)
from agentflow.engines._types import (
    DEFAULT_BLOCK_SIZE,
    Capabilities,
    Chunk,
    ChunkStream,
    Completion,
    FinishReason,
    GenerationRequest,
    JsonSchema,
    Message,
    ToolCallRequest,
    Usage,
    closing_stream,
)
from agentflow.errors import (
    ConfigError,
    EngineError,
    EngineRequestError,
    EngineUnavailableError,
    UnsupportedFeatureError,
)
from agentflow.secrets import Secret, redact

if TYPE_CHECKING:
    import httpx

__all__ = [
    "OpenAIEngine",
    "SecretHandle",
    "ServerKind",
    "StructuredOutputMode",
    "cache_salt_for",
]

logger = logging.getLogger("agentflow.engines.openai")
_T = TypeVar("_T")

ServerKind = Literal["openai", "vllm", "llamacpp"]
StructuredOutputMode = Literal["json_schema", "json_object"]

_SNIPPET = 300
_REDACT_WINDOW = 65_536  # server text redacted before it is cut to _SNIPPET characters
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024


class _DeadlineError(Exception):
    """An attempt did not complete within the engine's total ``timeout`` (retried like a read timeout)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(
            f"no complete answer within timeout={timeout:g} s (connecting, headers and body or stream "
            "together); the server is too slow or drips its answer; raise timeout=... if it is just slow"
        )


@functools.cache
def _retryable_transport() -> tuple[type[BaseException], ...]:
    import httpx  # imported where requests are made, so importing agentflow does not pay for it

    return (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, _DeadlineError)


class _RetryableStatus(Exception):
    """A reply with a status worth retrying (429, 5xx...); raised by an attempt, never out of the engine."""

    def __init__(self, reply: _Reply, retry_after: float | None) -> None:
        super().__init__(f"HTTP {reply.status_code}")
        self.reply = reply
        self.retry_after = retry_after


@functools.cache
def _retryable() -> tuple[type[BaseException], ...]:
    return (*_retryable_transport(), _RetryableStatus)


def _is_retryable(error: BaseException) -> bool:
    return isinstance(error, _retryable())


def _retry_after(error: BaseException) -> float | None:
    return error.retry_after if isinstance(error, _RetryableStatus) else None


def _reason(error: BaseException) -> str:
    """What failed, for logs and ``RetryEvent.reason``: ``HTTP 503`` or the transport error's class name."""
    return str(error) if isinstance(error, _RetryableStatus) else type(error).__name__


def _cause(error: BaseException) -> BaseException | None:
    """The ``__cause__`` for retries that stopped on ``error``: a transport error, never our status marker."""
    return None if isinstance(error, _RetryableStatus) else error


def _snippet(text: str) -> str:
    """The start of a server's text for an error message, with every revealed secret blanked out."""
    return redact(text[:_REDACT_WINDOW])[:_SNIPPET]


def _register_secret(value: str) -> str:
    """Register ``value`` with ``agentflow.secrets`` so ``redact`` blanks it out everywhere; return it."""
    return Secret("openai-engine-credential", provider=lambda _name: value).reveal()


@dataclass(frozen=True, slots=True)
class _Reply:
    """A complete HTTP response, read within the byte cap and the deadline."""

    method: str
    status_code: int
    reason_phrase: str
    headers: httpx.Headers
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


@runtime_checkable
class SecretHandle(Protocol):
    """A secret revealed only when a request is sent (wrap e.g. a vault lookup or ``SecretStr``)."""

    def reveal(self) -> str:
        """The secret value."""
        ...


def _reveal(secret: SecretHandle) -> str:
    if not isinstance(secret, SecretHandle):
        raise ConfigError(
            f"api_key must be a secret handle with a reveal() method, got {type(secret).__name__}; "
            "or pass the key through an environment variable with api_key_env=..."
        )
    return secret.reveal()


# --------------------------------------------------------------------------------------------
# HTTP payloads (the edge): request bodies we send and response bodies we accept.


class _MessageBody(BaseModel):
    role: str
    content: str
    tool_calls: list[dict[str, object]] | None = None
    tool_call_id: str | None = None


class _RequestBody(BaseModel):
    """A ``/v1/chat/completions`` or ``/v1/completions`` body; ``None`` fields are left out."""

    model: str
    messages: list[_MessageBody] | None = None
    prompt: str | None = None
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, bool] | None = None
    response_format: dict[str, object] | None = None
    structured_outputs: dict[str, object] | None = None
    grammar: str | None = None
    logit_bias: dict[str, float] | None = None
    tools: list[dict[str, object]] | None = None
    tool_choice: str | dict[str, object] | None = None
    parallel_tool_calls: bool | None = None
    priority: int | None = None
    cache_salt: str | None = None


class _ResponseModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _PromptTokensDetails(_ResponseModel):
    cached_tokens: int | None = None


class _UsageBody(_ResponseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _PromptTokensDetails | None = None


class _FunctionBody(_ResponseModel):
    name: str | None = None
    arguments: str | dict[str, object] | None = None  # a string per OpenAI; some servers send an object


class _ToolCallBody(_ResponseModel):
    index: int | None = None
    id: str | None = None
    function: _FunctionBody | None = None

    def delta(self, position: int) -> ToolCallDelta:
        """This (piece of a) call; ``position`` stands in for a missing ``index``."""
        function = self.function or _FunctionBody()
        arguments = function.arguments
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments, ensure_ascii=False)
        return ToolCallDelta(
            self.index if self.index is not None else position, self.id, function.name, arguments or ""
        )


class _ChoiceMessage(_ResponseModel):
    content: str | None = None
    tool_calls: list[_ToolCallBody] | None = None


class _Choice(_ResponseModel):
    index: int = 0
    text: str | None = None
    message: _ChoiceMessage | None = None
    delta: _ChoiceMessage | None = None
    finish_reason: str | None = None


class _ErrorBody(_ResponseModel):
    message: str = ""


class _ResponseBody(_ResponseModel):
    model: str = ""
    choices: list[_Choice] = []
    usage: _UsageBody | None = None
    error: _ErrorBody | str | None = None


class _ModelEntry(_ResponseModel):
    id: str = ""
    owned_by: str | None = None


class _ModelList(_ResponseModel):
    data: list[_ModelEntry] = []


class _VersionBody(_ResponseModel):
    version: str | None = None


def _version_of(content: bytes) -> str | None:
    try:
        return _VersionBody.model_validate_json(content).version
    except ValidationError:
        return None


class _TokensBody(_ResponseModel):
    tokens: list[int]


# --------------------------------------------------------------------------------------------
# Pure mapping functions (unit-tested without a server).


def cache_salt_for(secret: bytes, tenant: str) -> str:
    """The vLLM ``cache_salt`` of a tenant: base64url(HMAC-SHA256(secret, tenant)), 43 characters.

    vLLM asks for salts that are random-looking and unguessable by other tenants; deriving them
    with a keyed hash gives each tenant a stable salt without revealing tenant names.
    """
    digest = hmac.new(secret, tenant.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _schema_name(schema: JsonSchema) -> str:
    title = schema.get("title")
    name = re.sub(r"[^A-Za-z0-9_-]", "_", title) if isinstance(title, str) and title else "output"
    return name[:64]


def response_format_for(schema: JsonSchema, mode: StructuredOutputMode) -> dict[str, object]:
    """The ``response_format`` that constrains output to ``schema``.

    ``json_schema`` is the OpenAI/vLLM form (``{"type": "json_schema", "json_schema": {"name",
    "schema", "strict": true}}``); ``json_object`` is llama-cpp-python's form, the only one its
    server accepts (``{"type": "json_object", "schema": ...}``).
    """
    if mode == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": _schema_name(schema), "schema": dict(schema), "strict": True},
        }
    return {"type": "json_object", "schema": dict(schema)}


def _gbnf_for(schema: JsonSchema) -> str:
    try:
        from llama_cpp.llama_grammar import json_schema_to_gbnf
    except ImportError as exc:
        raise UnsupportedFeatureError(
            "structured output on a llama.cpp server's /v1/completions needs a GBNF grammar, and "
            "building one from a JSON Schema needs llama-cpp-python installed; install it or send "
            "chat `messages` instead of a `prompt`"
        ) from exc
    grammar: str = json_schema_to_gbnf(json.dumps(schema))
    return grammar


def _finish_reason(raw: str | None) -> FinishReason:
    if raw in ("tool_calls", "function_call"):
        return "tool_calls"
    return "length" if raw == "length" else "stop"


def tool_calls_from(message: _ChoiceMessage | None) -> tuple[ToolCallRequest, ...]:
    """The tool calls of a non-streamed answer's message.

    Raises:
        ValueError: A call has no tool name.
    """
    if message is None or not message.tool_calls:
        return ()
    assembler = ToolCallAssembler()
    calls = assembler.feed([call.delta(position) for position, call in enumerate(message.tool_calls)])
    return tuple(calls + assembler.finish())


def _message_body(message: Message) -> _MessageBody:
    return _MessageBody(
        role=message.role,
        content=message.content,
        tool_calls=[openai_tool_call(c) for c in message.tool_calls] or None,
        tool_call_id=message.tool_call_id,
    )


def usage_from_body(body: _UsageBody | None, *, queue_s: float, ttft_s: float, total_s: float) -> Usage:
    """Usage from an OpenAI ``usage`` object; without ``cached_tokens`` it is unknown (``None``) and
    ``computed_tokens`` counts the whole prompt (an upper bound)."""
    prompt = body.prompt_tokens if body is not None else 0
    details = body.prompt_tokens_details if body is not None else None
    reported = details.cached_tokens if details is not None else None
    cached = None if reported is None else max(0, min(reported, prompt))
    return Usage(
        prompt_tokens=prompt,
        cached_tokens=cached,
        computed_tokens=prompt - (cached or 0),
        completion_tokens=body.completion_tokens if body is not None else 0,
        queue_s=queue_s,
        ttft_s=ttft_s,
        total_s=total_s,
    )


@dataclass(frozen=True, slots=True)
class _Options:
    """The per-engine settings that shape request bodies."""

    model: str
    kind: ServerKind
    structured_output: StructuredOutputMode
    cache_salt_secret: bytes | None
    extra_body: Mapping[str, object]


def build_body(request: GenerationRequest, options: _Options, *, stream: bool) -> dict[str, object]:
    """The JSON body for ``request`` (pure: no I/O)."""
    body = _RequestBody(
        model=options.model,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=list(request.stop) or None,
        seed=request.seed,
        stream=stream,
        stream_options={"include_usage": True} if stream else None,
    )
    if request.logit_bias:
        body.logit_bias = {str(token): float(bias) for token, bias in request.logit_bias.items()}
    if request.messages is not None:
        messages = request.messages
        if options.kind == "llamacpp":  # its chatml-function-calling template drops `tool` messages' text
            messages = plain_messages(request, calls_as_text=False)
        body.messages = [_message_body(m) for m in messages]
    else:
        body.prompt = request.prompt
    if request.tools:
        body.tools = [openai_tool(t) for t in request.tools]
        choice = request.tool_choice
        if (
            choice == "required" and options.kind == "llamacpp"
        ):  # llama-cpp-python: auto, none or a named tool
            choice = "auto"
        body.tool_choice = openai_tool_choice(choice)
        if not request.parallel_tool_calls and options.kind != "llamacpp":
            body.parallel_tool_calls = False
    if request.json_schema is not None:
        if request.prompt is not None and options.kind == "llamacpp":
            body.grammar = _gbnf_for(request.json_schema)
        elif request.prompt is not None and options.kind == "vllm":
            body.structured_outputs = {"json": dict(request.json_schema)}
        else:
            body.response_format = response_format_for(request.json_schema, options.structured_output)
    if options.kind == "vllm":
        body.priority = request.hints.priority
        if options.cache_salt_secret is not None and request.hints.tenant is not None:
            body.cache_salt = cache_salt_for(options.cache_salt_secret, request.hints.tenant)
    payload: dict[str, object] = body.model_dump(exclude_none=True)
    payload.update(options.extra_body)
    return payload


class _SSEDecoder:
    """Server-sent events, line by line: ``data:`` lines joined until a blank line ends the event."""

    def __init__(self, max_chars: int | None = None) -> None:
        self._data: list[str] = []  # data lines of the event being read; reset at each dispatch
        self._size = 0  # characters in _data; reset at each dispatch
        self._max = max_chars

    def feed(self, line: str) -> str | None:
        """Take one line; return an event's data when the line completes one.

        Raises:
            ValueError: The event being read is longer than ``max_chars``.
        """
        line = line.rstrip("\r")
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if field == "data":
            data = value[1:] if value.startswith(" ") else value
            self._size += len(data) + 1
            if self._max is not None and self._size > self._max:
                raise ValueError(f"a server-sent event longer than {self._max} characters")
            self._data.append(data)
        return None

    def flush(self) -> str | None:
        if not self._data:
            return None
        data = "\n".join(self._data)
        self._data = []
        self._size = 0
        return data


@dataclass(slots=True)
class _StreamState:
    """What one streaming attempt has seen so far (mutated as events arrive)."""

    yielded: int = 0
    first_token: float | None = None
    calls: ToolCallAssembler = field(default_factory=ToolCallAssembler)
    finish: str | None = None
    usage: _UsageBody | None = None
    done: bool = False


# --------------------------------------------------------------------------------------------
# The engine.


class OpenAIEngine:
    """An engine backed by an OpenAI-compatible HTTP server.

    Example:
        >>> engine = OpenAIEngine("http://127.0.0.1:8000", "Qwen/Qwen3-0.6B")  # doctest: +SKIP
        >>> completion = await engine.generate(GenerationRequest(prompt="Hi", max_tokens=8))  # doctest: +SKIP

    Safe to call from many anyio tasks at once; ``max_concurrency`` bounds the requests in flight.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        api_key: SecretHandle | None = None,
        server_kind: ServerKind | Literal["auto"] = "auto",
        structured_output: StructuredOutputMode | Literal["auto"] = "auto",
        tool_calling: bool | Literal["auto"] = "auto",
        cache_salt_per_tenant: bool = False,
        cache_salt_secret: SecretHandle | None = None,
        priority_scheduling: bool = False,
        retry: RetryPolicy | None = None,
        timeout: float = 120.0,
        connect_timeout: float = 5.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_concurrency: int | None = None,
        extra_body: Mapping[str, object] | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        jitter_seed: int | None = None,
    ) -> None:
        """Create the engine; no request is sent until the first use.

        Args:
            base_url: Server root, with or without a trailing ``/v1`` (``http://127.0.0.1:8000``).
            model: Model name sent in every request.
            api_key_env: Environment variable holding the API key. Unset: ``OPENAI_API_KEY`` is
                used when it exists, otherwise no key is sent. Named but absent: ``ConfigError``.
            api_key: A secret handle (an object with ``reveal()``) instead of an
                environment variable. Plain strings are refused so keys do not end up in code.
            server_kind: ``vllm``, ``llamacpp`` or ``openai``; ``auto`` detects it on first use.
            structured_output: The ``response_format`` form for ``json_schema`` requests;
                ``auto`` picks ``json_object`` for llama.cpp servers and ``json_schema`` otherwise.
            tool_calling: Whether the server does native tool calling (``Capabilities.tool_calling``;
                agents use it when declared). ``auto``: true when ``server_kind="openai"`` is given
                (hosted APIs), never from a detected kind (so agents decide the same way before and
                after the first request); vLLM and llama.cpp servers call tools only when started for
                it (``vllm serve --enable-auto-tool-choice --tool-call-parser ...``, ``python -m
                llama_cpp.server --chat_format chatml-function-calling``), so say ``True`` when yours
                was. Requests with ``tools`` are sent either way.
            cache_salt_per_tenant: On vLLM, salt the prefix cache per ``hints.tenant`` so tenants
                never share cached prefixes.
            cache_salt_secret: Key for deriving tenant salts; without it each engine draws a random
                key, so two engines (or a restarted process) do not share a tenant's cache.
            priority_scheduling: The vLLM server runs ``--scheduling-policy priority``, so it honours
                ``hints.priority`` (``capabilities.priority``); the hint is sent either way.
            retry: Retry policy (default ``RetryPolicy()``: 4 attempts).
            timeout: Total seconds for one attempt: connecting, headers and the whole body or
                stream together (a missed deadline is retried like a read timeout).
            connect_timeout: Seconds to wait for a connection (within ``timeout``).
            max_response_bytes: Most bytes one response body (or one whole stream) may hold.
            max_event_bytes: Most bytes one server-sent-events line or event may hold.
            max_concurrency: Requests in flight at once; default 1 on llama.cpp servers (which
                serialize requests and cut streams short when another request waits), else 64.
            extra_body: JSON fields merged into every request body (e.g. ``tools``, ``top_k``).
            on_retry: Called before each retry sleep (telemetry, tests).
            transport: An httpx transport (e.g. ``httpx.MockTransport`` in tests).
            jitter_seed: Seed of the backoff jitter, for reproducible runs.

        Raises:
            ConfigError: A bad URL, model, option, or a named API-key variable that is not set.
        """
        if not re.match(r"^https?://[^/]+", base_url):
            raise ConfigError(
                f"OpenAIEngine base_url must be an http(s) URL such as http://127.0.0.1:8000, got {base_url!r}"
            )
        if not model:
            raise ConfigError("OpenAIEngine needs a model name (openai:<base_url>#<model>), got ''")
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if timeout <= 0 or connect_timeout <= 0:
            raise ConfigError(
                f"timeouts must be > 0, got timeout={timeout}, connect_timeout={connect_timeout}"
            )
        if max_response_bytes < 1 or max_event_bytes < 1:
            raise ConfigError(
                f"byte caps must be >= 1, got max_response_bytes={max_response_bytes}, "
                f"max_event_bytes={max_event_bytes}"
            )
        self._timeout = timeout
        self._max_body = max_response_bytes
        self._max_event = max_event_bytes
        root = base_url.rstrip("/")
        self._root = root[: -len("/v1")] if root.endswith("/v1") else root
        self._model = model
        self._kind: ServerKind | None = None if server_kind == "auto" else server_kind
        self._structured_choice = structured_output
        # Decided from the configuration alone, so an agent chooses the same way before and after the
        # first request detects the server kind.
        self._tool_calling = tool_calling if tool_calling != "auto" else server_kind == "openai"
        self._retry = retry if retry is not None else RetryPolicy()
        self._on_retry = on_retry
        self._rng = random.Random(jitter_seed)
        self._extra_body: Mapping[str, object] = dict(extra_body or {})
        self._max_concurrency = max_concurrency
        self._api_key_env, key = self._resolve_key(api_key_env, api_key)
        self._has_key = key is not None
        salt_secret: bytes | None = None
        if cache_salt_per_tenant:
            salt_secret = (
                _register_secret(_reveal(cache_salt_secret)).encode("utf-8")
                if cache_salt_secret is not None
                else os.urandom(32)
            )
        self._salt_secret = salt_secret
        self._priority_scheduling = priority_scheduling
        # vLLM's cache configuration from /metrics, read once by probe() on a vLLM server (None: unknown).
        self._cache_config: VLLMCacheConfig | None = None
        self._cache_config_read = False
        # identity: a compressed body would be inflated before the byte cap sees it.
        headers = {"Accept-Encoding": "identity"}
        if key is not None:
            headers["Authorization"] = f"Bearer {_register_secret(key)}"
        import httpx  # here, not at module level: importing agentflow does not pay for it

        limits = httpx.Limits(max_connections=max(64, max_concurrency or 0), max_keepalive_connections=32)
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=limits,
            transport=transport,
        )
        # Created on first use (needs the server kind for its size); lives as long as the engine.
        self._limiter: anyio.CapacityLimiter | None = None
        self._probe_lock = anyio.Lock()

    @staticmethod
    def _resolve_key(api_key_env: str | None, api_key: SecretHandle | None) -> tuple[str | None, str | None]:
        if api_key is not None:
            if api_key_env is not None:
                raise ConfigError("give either api_key_env or api_key, not both")
            return None, _reveal(api_key)
        if api_key_env is None:
            value = os.environ.get("OPENAI_API_KEY")
            return ("OPENAI_API_KEY", value) if value else (None, None)
        value = os.environ.get(api_key_env)
        if not value:
            raise ConfigError(
                f"api_key_env={api_key_env!r} names an environment variable that is not set; "
                f"export {api_key_env}=<key> or leave api_key_env unset for servers without keys"
            )
        return api_key_env, value

    def __repr__(self) -> str:
        key = (
            "None"
            if not self._has_key
            else f"<from ${self._api_key_env}>"
            if self._api_key_env
            else "<secret>"
        )
        return (
            f"OpenAIEngine(base_url={self._root!r}, model={self._model!r}, "
            f"server_kind={self._kind or 'auto'!r}, api_key={key})"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ---- Engine protocol ---------------------------------------------------------------

    @property
    def name(self) -> str:
        """``openai:<base_url>#<model>``."""
        return f"openai:{self._root}#{self._model}"

    @property
    def base_url(self) -> str:
        """The server root (without ``/v1``)."""
        return self._root

    @property
    def server_kind(self) -> ServerKind | None:
        """The server kind, or ``None`` while it has not been detected yet (see ``probe``)."""
        return self._kind

    @property
    def capabilities(self) -> Capabilities:
        """What the server supports; conservative until the server kind is known."""
        tools = self._tool_calling is True
        match self._kind:
            case "vllm":
                config = self._cache_config
                block = config.hash_block_size if config is not None else None
                return Capabilities(
                    prefix_cache="none"
                    if config is not None and config.enable_prefix_caching is False
                    else "block",
                    slots=self._concurrency(),
                    structured_output=True,
                    priority=self._priority_scheduling,
                    block_size=block or DEFAULT_BLOCK_SIZE,
                    cache_tokens=None if config is None else config.capacity_tokens,
                    tool_calling=tools,
                )
            case "llamacpp":
                # llama-cpp-python keeps the last sequence's KV and reuses its longest common prefix.
                return Capabilities(
                    prefix_cache="exact",
                    slots=self._concurrency(),
                    structured_output=True,
                    tool_calling=tools,
                )
            case "openai" | None:
                return Capabilities(slots=self._concurrency(), structured_output=True, tool_calling=tools)

    async def generate(self, request: GenerationRequest) -> Completion:
        """Run one request to completion (non-streamed; retried as a whole on failure).

        ``usage.ttft_s`` equals ``usage.total_s`` here: the whole answer arrives at once.
        """
        submitted = time.monotonic()
        kind = await self.probe()
        url, body = self._endpoint(request), build_body(request, self._options(kind), stream=False)
        limiter = self._get_limiter()
        async with limiter:
            started = time.monotonic()
            response = await self._send("POST", url, body)
        finished = time.monotonic()
        parsed = self._parse(response, url)
        if not parsed.choices:
            raise EngineRequestError(f"POST {url} answered without choices: {_snippet(response.text)!r}")
        choice = parsed.choices[0]
        text = (choice.message.content if choice.message else choice.text) or ""
        try:
            calls = tool_calls_from(choice.message)
        except ValueError as exc:
            raise EngineRequestError(f"POST {url} answered with a bad tool call: {exc}") from None
        total = finished - submitted
        usage = usage_from_body(parsed.usage, queue_s=started - submitted, ttft_s=total, total_s=total)
        finish = _finish_reason(choice.finish_reason)
        return Completion(
            text=text,
            usage=usage,
            finish_reason="tool_calls" if calls and finish == "stop" else finish,
            model=parsed.model,
            tool_calls=calls,
        )

    def stream(self, request: GenerationRequest) -> ChunkStream:
        """Run one request, handing out text chunks; the last chunk carries usage and finish reason.

        Failures before the first chunk are retried; a stream that breaks after chunks were
        handed out ends in ``EngineRequestError`` (the chunks already handed out stay valid). Leaving the
        ``async with`` early closes the response (the server stops generating) and frees the request's
        concurrency slot.

        llama-cpp-python cannot stream a tool choice the model makes itself (``auto``, and ``required``,
        which it is sent as): such a request is sent unstreamed and its answer handed out whole.
        """
        return closing_stream(self._chunks(request))

    async def _chunks(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        import httpx

        submitted = time.monotonic()
        kind = await self.probe()
        if kind == "llamacpp" and request.tools and request.tool_choice in ("auto", "required"):
            whole = await self.generate(request)
            if whole.text or whole.tool_calls:
                yield Chunk(text=whole.text, tool_calls=whole.tool_calls)
            yield Chunk(text="", usage=whole.usage, finish_reason=whole.finish_reason)
            return
        url, body = self._endpoint(request), build_body(request, self._options(kind), stream=True)
        state = _StreamState()
        async with self._get_limiter():
            started = time.monotonic()
            retrier = self._retrier(url)
            while True:
                state = _StreamState()
                # Invariant: cancel scopes for the deadline wrap single awaits, never a `yield`.
                deadline = time.monotonic() + self._timeout
                try:
                    async with contextlib.AsyncExitStack() as stack:
                        opening = stack.enter_async_context(self._client.stream("POST", url, json=body))
                        response = await self._before(deadline, opening)
                        if response.status_code != 200:
                            reply = await self._before(deadline, self._read_reply(response, url))
                            raise self._status_error(reply, url, retrier.attempt)
                        events = await stack.enter_async_context(
                            contextlib.aclosing(self._events(response, url, state, deadline))
                        )
                        async for event in events:
                            for choice in event.choices[:1]:
                                text = (choice.delta.content if choice.delta else choice.text) or ""
                                state.finish = choice.finish_reason or state.finish
                                calls = self._stream_calls(choice.delta, state, request, url)
                                if calls:
                                    yield Chunk(text="", tool_calls=calls)
                                if not text:
                                    continue
                                if state.yielded >= request.max_tokens:
                                    raise EngineRequestError(
                                        f"POST {url} streamed more than max_tokens={request.max_tokens} "
                                        "pieces of text; the server ignores max_tokens (or a proxy changed "
                                        "the request); the chunks already received are valid"
                                    )
                                state.first_token = state.first_token or time.monotonic()
                                state.yielded += 1
                                yield Chunk(text=text)
                except _retryable() as exc:
                    if state.yielded:
                        raise EngineRequestError(
                            f"POST {url}: the stream broke after {state.yielded} chunks "
                            f"({type(exc).__name__}: {exc}); the chunks already received are valid, "
                            "the rest of the answer is lost; retry the request"
                        ) from exc
                    # The attempt yields inside it, so it cannot be a function for Retrier.call; the retrier
                    # still makes every decision (retryable, wait, cap) and does the sleep.
                    if await retrier.failed(exc, retry_after=_retry_after(exc)) is not None:
                        raise self._gave_up(url, retrier, exc) from _cause(exc)
                    continue
                except httpx.HTTPError as exc:
                    raise EngineRequestError(f"POST {url} failed: {type(exc).__name__}: {exc}") from exc
                break
        if state.finish is None:
            hint = (
                "llama.cpp servers end a stream early when another request arrives; use max_concurrency=1"
                if kind == "llamacpp"
                else "the server or a proxy cut the stream"
            )
            raise EngineRequestError(
                f"POST {url}: the stream ended without a finish reason after {state.yielded} chunks "
                f"({'[DONE] received' if state.done else 'no [DONE]'}); {hint}"
            )
        try:
            last_calls = tuple(state.calls.finish())
        except ValueError as exc:
            raise EngineRequestError(f"POST {url} streamed a bad tool call: {exc}") from None
        if last_calls:
            yield Chunk(text="", tool_calls=last_calls)
        finished = time.monotonic()
        usage_body = state.usage
        if usage_body is None:
            # The server ignored stream_options.include_usage (llama-cpp-python does): count the
            # streamed pieces (one per token there) and, for raw prompts, tokenize the prompt.
            prompt_tokens = await self._count_prompt(request)
            usage_body = _UsageBody(prompt_tokens=prompt_tokens, completion_tokens=state.yielded)
        usage = usage_from_body(
            usage_body,
            queue_s=started - submitted,
            ttft_s=(state.first_token or finished) - submitted,
            total_s=finished - submitted,
        )
        finish = _finish_reason(state.finish)
        yield Chunk(
            text="",
            usage=usage,
            finish_reason="tool_calls" if state.calls.handed_out and finish == "stop" else finish,
        )

    def _stream_calls(
        self, delta: _ChoiceMessage | None, state: _StreamState, request: GenerationRequest, url: str
    ) -> tuple[ToolCallRequest, ...]:
        """Feed one event's tool-call pieces to the stream's assembler; return the calls they complete."""
        if delta is None or not delta.tool_calls:
            return ()
        state.yielded += len(delta.tool_calls)  # each piece is a token or more, bounded like text
        if state.yielded > request.max_tokens:
            raise EngineRequestError(
                f"POST {url} streamed more than max_tokens={request.max_tokens} pieces of text and tool "
                "calls; the server ignores max_tokens (or a proxy changed the request)"
            )
        state.first_token = state.first_token or time.monotonic()
        try:
            return tuple(state.calls.feed([c.delta(i) for i, c in enumerate(delta.tool_calls)]))
        except ValueError as exc:
            raise EngineRequestError(f"POST {url} streamed a bad tool call: {exc}") from None

    async def tokenize(self, text: str) -> Sequence[int]:
        """Token ids of ``text`` from the server's tokenize endpoint (with the server's defaults
        for special tokens, i.e. as a ``prompt`` request would be tokenized).

        Raises:
            UnsupportedFeatureError: The server has no tokenize endpoint.
        """
        kind = await self.probe()
        vllm_shape: tuple[str, dict[str, object]] = ("/tokenize", {"model": self._model, "prompt": text})
        candidates = [vllm_shape]
        if kind == "llamacpp":
            candidates = [
                ("/extras/tokenize", {"model": self._model, "input": text}),
                ("/tokenize", {"content": text}),
            ]
        for path, body in candidates:
            url = self._root + path
            response = await self._send("POST", url, body, missing_ok=True)
            if response.status_code in (404, 405):
                continue
            try:
                return _TokensBody.model_validate_json(response.content).tokens
            except ValidationError as exc:
                raise EngineRequestError(
                    f"POST {url} answered without a `tokens` list: {_snippet(response.text)!r}"
                ) from exc
        tried = ", ".join(self._root + p for p, _ in candidates)
        raise UnsupportedFeatureError(
            f"{self.name} cannot tokenize: the server has no tokenize endpoint (tried {tried}); "
            "use a server with one (vLLM, llama.cpp) or tokenize with the model's own tokenizer"
        )

    async def render(self, request: GenerationRequest) -> str:
        """The prompt for ``prompt`` requests; for chat, a role-tagged rendering
        (``<|role|>\ncontent\n`` per message, then ``<|assistant|>\n``).

        The server applies its own chat template, which is not visible over HTTP; this stand-in is
        deterministic and keeps shared message prefixes shared, which is what prefix-aware
        scheduling needs, but it is not the exact text the model sees.
        """
        return render_messages(request)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    # ---- server kind and vLLM extras ---------------------------------------------------

    async def probe(self) -> ServerKind:
        """Detect the server kind once (``/v1/models`` ``owned_by``, then ``/version``); on vLLM, read its
        cache configuration from ``/metrics`` too."""
        if self._kind is None or (self._kind == "vllm" and not self._cache_config_read):
            async with self._probe_lock:
                if self._kind is None:
                    self._kind = await self._detect_kind()
                    logger.debug("%s: detected server kind %s", self.name, self._kind)
                if self._kind == "vllm" and not self._cache_config_read:
                    self._cache_config = await self._read_cache_config()
                    self._cache_config_read = True
        return self._kind

    def cache_salt(self, tenant: str | None) -> str | None:
        """The ``cache_salt`` sent for ``tenant``'s requests (``None``: not salted, or not a vLLM server)."""
        if self._salt_secret is None or tenant is None or self._kind != "vllm":
            return None
        return cache_salt_for(self._salt_secret, tenant)

    async def _read_cache_config(self) -> VLLMCacheConfig | None:
        """vLLM's ``vllm:cache_config_info`` from ``/metrics``; ``None`` (and a log line) when unavailable."""
        try:
            config = VLLMCacheConfig.from_scrape(await self.prometheus())
        except EngineError as exc:
            logger.warning(
                "%s: cannot read vLLM's cache configuration from /metrics (%s); assuming %d-token blocks",
                self.name,
                exc,
                DEFAULT_BLOCK_SIZE,
            )
            return None
        if config is None or config.block_size is None:
            logger.warning(
                "%s: /metrics has no vllm:cache_config_info block_size; assuming %d-token blocks",
                self.name,
                DEFAULT_BLOCK_SIZE,
            )
        return config

    async def _detect_kind(self) -> ServerKind:
        response = await self._send("GET", f"{self._root}/v1/models", None, missing_ok=True)
        if response.status_code != 200:
            # No model list: vLLM also answers GET /version with {"version": "..."}.
            version = await self._send("GET", f"{self._root}/version", None, missing_ok=True)
            return "vllm" if version.status_code == 200 and _version_of(version.content) else "openai"
        try:
            models = _ModelList.model_validate_json(response.content).data
        except ValidationError:
            models = []
        owners = {(m.owned_by or "").lower() for m in models}
        if "vllm" in owners:
            return "vllm"
        if owners & {"me", "llamacpp", "llama.cpp"}:
            return "llamacpp"
        return "openai"

    async def prometheus(self) -> PrometheusText:
        """The server's ``/metrics`` scrape, parsed.

        Raises:
            UnsupportedFeatureError: The server has no ``/metrics`` endpoint.
        """
        url = f"{self._root}/metrics"
        response = await self._send("GET", url, None, missing_ok=True)
        if response.status_code in (404, 405):
            raise UnsupportedFeatureError(
                f"{self.name} has no Prometheus endpoint at {url} (HTTP {response.status_code}); "
                "engine-side cache metrics need vLLM (or a server exporting vllm:* metrics)"
            )
        return parse_prometheus_text(response.text)

    async def metrics(self) -> VLLMMetrics:
        """vLLM's prefix-cache, token and queue counters from ``/metrics``.

        Take one before and one after a workload and use ``VLLMMetrics.delta`` for hit rates.
        """
        return VLLMMetrics.from_scrape(await self.prometheus())

    # ---- internals ---------------------------------------------------------------------

    async def _count_prompt(self, request: GenerationRequest) -> int:
        if request.prompt is None:
            return 0
        try:
            return len(await self.tokenize(request.prompt))
        except UnsupportedFeatureError:
            return 0

    def _concurrency(self) -> int:
        if self._max_concurrency is not None:
            return self._max_concurrency
        return 1 if self._kind == "llamacpp" else 64

    def _get_limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._concurrency())
        return self._limiter

    def _options(self, kind: ServerKind) -> _Options:
        mode: StructuredOutputMode
        if self._structured_choice == "auto":
            mode = "json_object" if kind == "llamacpp" else "json_schema"
        else:
            mode = self._structured_choice
        return _Options(self._model, kind, mode, self._salt_secret, self._extra_body)

    def _endpoint(self, request: GenerationRequest) -> str:
        path = "/v1/chat/completions" if request.messages is not None else "/v1/completions"
        return self._root + path

    def _parse(self, response: _Reply, url: str) -> _ResponseBody:
        try:
            parsed = _ResponseBody.model_validate_json(response.content)
        except ValidationError as exc:
            raise EngineRequestError(
                f"POST {url} answered with a body that is not a completion: {_snippet(response.text)!r}"
            ) from exc
        self._raise_body_error(parsed, url)
        return parsed

    async def _before(self, deadline: float, awaitable: Awaitable[_T]) -> _T:
        """Await ``awaitable`` unless ``deadline`` (a ``time.monotonic()`` value) passes first."""
        with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
            return await awaitable
        raise _DeadlineError(self._timeout)

    async def _read_reply(self, response: httpx.Response, url: str) -> _Reply:
        """The whole body of ``response``, refusing more than ``max_response_bytes``."""
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_body:
            raise self._too_big(response.request.method, url, f"declares {declared} bytes, more")
        parts: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self._max_body:
                raise self._too_big(response.request.method, url, "sent more")
            parts.append(chunk)
        return _Reply(
            response.request.method,
            response.status_code,
            response.reason_phrase,
            response.headers,
            b"".join(parts),
        )

    def _too_big(self, method: str, url: str, what: str) -> EngineRequestError:
        return EngineRequestError(
            f"{method} {url}: the answer {what} than max_response_bytes={self._max_body}; the server is "
            "misbehaving, or raise max_response_bytes=... if such answers are expected"
        )

    async def _lines(self, response: httpx.Response, url: str, deadline: float) -> AsyncGenerator[str, None]:
        """The lines of a streamed body, each read before ``deadline`` and at most ``max_event_bytes`` long."""
        chunks = response.aiter_bytes()  # closed with the response
        pending = bytearray()  # bytes after the last line break seen; at most max_event_bytes
        total = 0  # bytes of the whole stream so far; at most max_response_bytes
        while True:
            try:
                chunk = await self._before(deadline, anext(chunks))
            except StopAsyncIteration:
                break
            total += len(chunk)
            if total > self._max_body:
                raise self._too_big("POST", url, "streamed more")
            if b"\n" not in chunk:  # scan only new bytes: a dripped line costs O(its length)
                pending += chunk
                lines: list[bytes] = []
            else:
                lines = (bytes(pending) + chunk).split(b"\n")
                pending[:] = lines.pop()
            for line in lines:
                if len(line) > self._max_event:
                    break
                yield line.decode("utf-8", errors="replace")
            if len(pending) > self._max_event or any(len(line) > self._max_event for line in lines):
                raise EngineRequestError(
                    f"POST {url} streamed a line longer than max_event_bytes={self._max_event}; the server "
                    "is misbehaving, or raise max_event_bytes=... if such events are expected"
                )
        if pending:
            yield pending.decode("utf-8", errors="replace")

    async def _events(
        self, response: httpx.Response, url: str, state: _StreamState, deadline: float
    ) -> AsyncGenerator[_ResponseBody, None]:
        """The JSON events of an SSE response until ``[DONE]``; records usage and ``[DONE]``."""
        decoder = _SSEDecoder(self._max_event)
        async with contextlib.aclosing(self._lines(response, url, deadline)) as lines:
            async for line in lines:
                try:
                    data = decoder.feed(line)
                except ValueError as exc:
                    raise EngineRequestError(
                        f"POST {url} streamed {exc} (max_event_bytes={self._max_event}); the server is misbehaving"
                    ) from None
                if data is None:
                    continue
                if data.strip() == "[DONE]":
                    state.done = True
                    return
                event = self._parse_event(data, url)
                if event.usage is not None:
                    state.usage = event.usage
                yield event

    def _parse_event(self, data: str, url: str) -> _ResponseBody:
        try:
            parsed = _ResponseBody.model_validate_json(data)
        except ValidationError as exc:
            raise EngineRequestError(
                f"POST {url} streamed an event that is not JSON: {_snippet(data)!r}"
            ) from exc
        self._raise_body_error(parsed, url)
        return parsed

    @staticmethod
    def _raise_body_error(parsed: _ResponseBody, url: str) -> None:
        if parsed.error is not None:
            message = parsed.error if isinstance(parsed.error, str) else parsed.error.message
            raise EngineRequestError(f"POST {url}: the server reported an error: {_snippet(message)}")

    def _status_error(self, response: _Reply, url: str, attempt: int) -> Exception:
        """The error of a failed reply: ``_RetryableStatus`` (with its ``Retry-After``) or ``EngineRequestError``."""
        status = response.status_code
        if status in RETRYABLE_STATUS or status >= 500:
            return _RetryableStatus(response, parse_retry_after(response.headers.get("retry-after")))
        snippet = _snippet(response.text)
        hint = ""
        if status in (401, 403):
            where = (
                f"the environment variable {self._api_key_env}"
                if self._api_key_env
                else "api_key_env/api_key"
            )
            hint = f"; check the API key in {where}"
        elif status == 404:
            hint = f"; check base_url {self._root!r} and model {self._model!r}"
        elif status == 400:
            hint = (
                "; the server refused a request field (vLLM's v0 engine refused `priority` unless started "
                "with --scheduling-policy priority; newer vLLM accepts and ignores it)"
            )
        return EngineRequestError(
            f"{response.method} {url} was rejected with HTTP {status} "
            f"({response.reason_phrase}) on attempt {attempt}: {snippet!r}{hint}"
        )

    def _retrier(self, url: str) -> Retrier:
        """The retry loop of one request to ``url``: the engine's policy, jitter source and ``on_retry``."""

        def report(notice: RetryNotice) -> None:
            reason = _reason(notice.error)
            logger.warning(
                "%s: attempt %d failed (%s); retrying in %.2f s", url, notice.attempt, reason, notice.delay_s
            )
            if self._on_retry is not None:
                self._on_retry(
                    RetryEvent(
                        url=url,
                        attempt=notice.attempt,
                        delay_s=notice.delay_s,
                        reason=reason,
                        retry_after=notice.retry_after,
                    )
                )

        return self._retry.retrier(retryable=_is_retryable, on_retry=report, rng=self._rng)

    def _gave_up(self, url: str, retrier: Retrier, exc: BaseException) -> EngineError:
        """The error for a request whose retries stopped on ``exc`` (a retryable failure)."""
        attempt = retrier.attempt
        if retrier.stopped == "retry_after" and isinstance(exc, _RetryableStatus):
            detail = (
                f"the server asked to retry after {exc.retry_after:g} s, more than "
                f"max_retry_after={self._retry.max_retry_after:g} s"
            )
        elif isinstance(exc, _DeadlineError):
            detail = f"last error: {exc}"
        elif isinstance(exc, _RetryableStatus):
            said = f" {_snippet(exc.reply.text)!r}" if exc.reply.text else ""
            detail = f"last error {exc}{said}; the server is overloaded or failing, check its logs"
        else:
            detail = f"last error {type(exc).__name__}: {exc}; is the server running at {self._root}?"
        error_cls: type[EngineError] = (
            EngineRequestError if isinstance(exc, _RetryableStatus) else EngineUnavailableError
        )
        return error_cls(
            f"{url} failed after {attempt} attempt{'s' if attempt != 1 else ''} ({detail}); "
            f"allow more with retry=RetryPolicy(attempts=...)"
        )

    async def _fetch(self, method: str, url: str, body: Mapping[str, object] | None) -> _Reply:
        async with self._client.stream(method, url, json=body) as response:
            return await self._read_reply(response, url)

    async def _send(
        self, method: str, url: str, body: Mapping[str, object] | None, *, missing_ok: bool = False
    ) -> _Reply:
        """Send with retries; return the 200 response (or a 404/405 one when ``missing_ok``)."""

        import httpx

        async def attempt(number: int) -> _Reply:
            deadline = time.monotonic() + self._timeout
            try:
                response = await self._before(deadline, self._fetch(method, url, body))
            except httpx.HTTPError as exc:
                if isinstance(exc, _retryable_transport()):
                    raise
                raise EngineRequestError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from exc
            if response.status_code == 200 or (missing_ok and response.status_code in (404, 405)):
                return response
            raise self._status_error(response, url, number)

        retrier = self._retrier(url)
        try:
            return await retrier.call(attempt, retry_after=_retry_after)
        except _retryable() as exc:
            raise self._gave_up(url, retrier, exc) from _cause(exc)

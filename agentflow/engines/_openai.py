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
logs or error messages.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, Self, runtime_checkable

import anyio
import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from agentflow.engines._metrics import PrometheusText, VLLMCacheConfig, VLLMMetrics, parse_prometheus_text
from agentflow.engines._retry import RETRYABLE_STATUS, RetryEvent, RetryPolicy, parse_retry_after
from agentflow.engines._testing import render_messages
from agentflow.engines._types import (
    DEFAULT_BLOCK_SIZE,
    Capabilities,
    Chunk,
    Completion,
    FinishReason,
    GenerationRequest,
    JsonSchema,
    Usage,
)
from agentflow.errors import (
    ConfigError,
    EngineError,
    EngineRequestError,
    EngineUnavailableError,
    UnsupportedFeatureError,
)

__all__ = [
    "OpenAIEngine",
    "SecretHandle",
    "ServerKind",
    "StructuredOutputMode",
    "cache_salt_for",
]

logger = logging.getLogger("agentflow.engines.openai")

ServerKind = Literal["openai", "vllm", "llamacpp"]
StructuredOutputMode = Literal["json_schema", "json_object"]

_RETRYABLE_TRANSPORT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
_SNIPPET = 300


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


class _ChoiceMessage(_ResponseModel):
    content: str | None = None


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
    return "length" if raw == "length" else "stop"


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
        body.messages = [_MessageBody(role=m.role, content=m.content) for m in request.messages]
    else:
        body.prompt = request.prompt
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

    def __init__(self) -> None:
        self._data: list[str] = []  # data lines of the event being read; reset at each dispatch

    def feed(self, line: str) -> str | None:
        line = line.rstrip("\r")
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if field == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def flush(self) -> str | None:
        if not self._data:
            return None
        data = "\n".join(self._data)
        self._data = []
        return data


@dataclass(slots=True)
class _StreamState:
    """What one streaming attempt has seen so far (mutated as events arrive)."""

    yielded: int = 0
    first_token: float | None = None
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
        cache_salt_per_tenant: bool = False,
        cache_salt_secret: SecretHandle | None = None,
        priority_scheduling: bool = False,
        retry: RetryPolicy | None = None,
        timeout: float = 120.0,
        connect_timeout: float = 5.0,
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
            cache_salt_per_tenant: On vLLM, salt the prefix cache per ``hints.tenant`` so tenants
                never share cached prefixes.
            cache_salt_secret: Key for deriving tenant salts; without it each engine draws a random
                key, so two engines (or a restarted process) do not share a tenant's cache.
            priority_scheduling: The vLLM server runs ``--scheduling-policy priority``, so it honours
                ``hints.priority`` (``capabilities.priority``); the hint is sent either way.
            retry: Retry policy (default ``RetryPolicy()``: 4 attempts).
            timeout: Seconds to wait for a response (or for each streamed piece).
            connect_timeout: Seconds to wait for a connection.
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
        root = base_url.rstrip("/")
        self._root = root[: -len("/v1")] if root.endswith("/v1") else root
        self._model = model
        self._kind: ServerKind | None = None if server_kind == "auto" else server_kind
        self._structured_choice = structured_output
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
                _reveal(cache_salt_secret).encode("utf-8")
                if cache_salt_secret is not None
                else os.urandom(32)
            )
        self._salt_secret = salt_secret
        self._priority_scheduling = priority_scheduling
        # vLLM's cache configuration from /metrics, read once by probe() on a vLLM server (None: unknown).
        self._cache_config: VLLMCacheConfig | None = None
        self._cache_config_read = False
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
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
                )
            case "llamacpp":
                # llama-cpp-python keeps the last sequence's KV and reuses its longest common prefix.
                return Capabilities(prefix_cache="exact", slots=self._concurrency(), structured_output=True)
            case "openai":
                return Capabilities(slots=self._concurrency(), structured_output=True)
            case None:
                return Capabilities(slots=self._concurrency(), structured_output=True)

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
            raise EngineRequestError(f"POST {url} answered without choices: {response.text[:_SNIPPET]!r}")
        choice = parsed.choices[0]
        text = (choice.message.content if choice.message else choice.text) or ""
        total = finished - submitted
        usage = usage_from_body(parsed.usage, queue_s=started - submitted, ttft_s=total, total_s=total)
        return Completion(
            text=text, usage=usage, finish_reason=_finish_reason(choice.finish_reason), model=parsed.model
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Run one request, yielding text chunks; the last chunk carries usage and finish reason.

        Failures before the first chunk are retried; a stream that breaks after chunks were
        yielded ends in ``EngineRequestError`` (the chunks already yielded stay valid).
        """
        submitted = time.monotonic()
        kind = await self.probe()
        url, body = self._endpoint(request), build_body(request, self._options(kind), stream=True)
        state = _StreamState()
        async with self._get_limiter():
            started = time.monotonic()
            attempt = 0
            while True:
                attempt += 1
                state = _StreamState()
                try:
                    async with self._client.stream("POST", url, json=body) as response:
                        if response.status_code != 200:
                            await response.aread()
                            retry_after = self._check_status(response, url, attempt)
                            reason = f"HTTP {response.status_code}"
                            await self._backoff(url, attempt, reason, retry_after, None, response.text)
                            continue
                        async for event in self._events(response, url, state):
                            for choice in event.choices[:1]:
                                text = (choice.delta.content if choice.delta else choice.text) or ""
                                state.finish = choice.finish_reason or state.finish
                                if text:
                                    state.first_token = state.first_token or time.monotonic()
                                    state.yielded += 1
                                    yield Chunk(text=text)
                except _RETRYABLE_TRANSPORT as exc:
                    if state.yielded:
                        raise EngineRequestError(
                            f"POST {url}: the stream broke after {state.yielded} chunks "
                            f"({type(exc).__name__}: {exc}); the chunks already received are valid, "
                            "the rest of the answer is lost; retry the request"
                        ) from exc
                    await self._backoff(url, attempt, type(exc).__name__, None, exc)
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
        yield Chunk(text="", usage=usage, finish_reason=_finish_reason(state.finish))

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
                    f"POST {url} answered without a `tokens` list: {response.text[:_SNIPPET]!r}"
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

    def _parse(self, response: httpx.Response, url: str) -> _ResponseBody:
        try:
            parsed = _ResponseBody.model_validate_json(response.content)
        except ValidationError as exc:
            raise EngineRequestError(
                f"POST {url} answered with a body that is not a completion: {response.text[:_SNIPPET]!r}"
            ) from exc
        self._raise_body_error(parsed, url)
        return parsed

    async def _events(
        self, response: httpx.Response, url: str, state: _StreamState
    ) -> AsyncIterator[_ResponseBody]:
        """The JSON events of an SSE response until ``[DONE]``; records usage and ``[DONE]``."""
        decoder = _SSEDecoder()
        async for line in response.aiter_lines():
            data = decoder.feed(line)
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
                f"POST {url} streamed an event that is not JSON: {data[:_SNIPPET]!r}"
            ) from exc
        self._raise_body_error(parsed, url)
        return parsed

    @staticmethod
    def _raise_body_error(parsed: _ResponseBody, url: str) -> None:
        if parsed.error is not None:
            message = parsed.error if isinstance(parsed.error, str) else parsed.error.message
            raise EngineRequestError(f"POST {url}: the server reported an error: {message[:_SNIPPET]}")

    def _check_status(self, response: httpx.Response, url: str, attempt: int) -> float | None:
        """Raise for a non-retryable status; return ``Retry-After`` seconds for a retryable one."""
        status = response.status_code
        if status in RETRYABLE_STATUS or status >= 500:
            return parse_retry_after(response.headers.get("retry-after"))
        snippet = response.text[:_SNIPPET]
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
        raise EngineRequestError(
            f"{response.request.method} {url} was rejected with HTTP {status} "
            f"({response.reason_phrase}) on attempt {attempt}: {snippet!r}{hint}"
        )

    async def _backoff(
        self,
        url: str,
        attempt: int,
        reason: str,
        retry_after: float | None,
        exc: BaseException | None,
        body: str = "",
    ) -> None:
        """Sleep before the next try, or raise when the retry budget is spent."""
        delay = self._retry.delay(attempt, retry_after, self._rng)
        if delay is None:
            error_cls: type[EngineError] = EngineUnavailableError if exc is not None else EngineRequestError
            if (
                retry_after is not None
                and retry_after > self._retry.max_retry_after
                and attempt < self._retry.attempts
            ):
                detail = (
                    f"the server asked to retry after {retry_after:g} s, more than "
                    f"max_retry_after={self._retry.max_retry_after:g} s"
                )
            elif exc is not None:
                detail = f"last error {reason}: {exc}; is the server running at {self._root}?"
            else:
                said = f" {body[:_SNIPPET]!r}" if body else ""
                detail = f"last error {reason}{said}; the server is overloaded or failing, check its logs"
            error = error_cls(
                f"{url} failed after {attempt} attempt{'s' if attempt != 1 else ''} ({detail}); "
                f"allow more with retry=RetryPolicy(attempts=...)"
            )
            if exc is not None:
                raise error from exc
            raise error
        event = RetryEvent(url=url, attempt=attempt, delay_s=delay, reason=reason, retry_after=retry_after)
        logger.warning("%s: attempt %d failed (%s); retrying in %.2f s", url, attempt, reason, delay)
        if self._on_retry is not None:
            self._on_retry(event)
        await anyio.sleep(delay)

    async def _send(
        self, method: str, url: str, body: Mapping[str, object] | None, *, missing_ok: bool = False
    ) -> httpx.Response:
        """Send with retries; return the 200 response (or a 404/405 one when ``missing_ok``)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._client.request(method, url, json=body)
            except _RETRYABLE_TRANSPORT as exc:
                await self._backoff(url, attempt, type(exc).__name__, None, exc)
                continue
            except httpx.HTTPError as exc:
                raise EngineRequestError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from exc
            if response.status_code == 200 or (missing_ok and response.status_code in (404, 405)):
                return response
            retry_after = self._check_status(response, url, attempt)
            await self._backoff(
                url, attempt, f"HTTP {response.status_code}", retry_after, None, response.text
            )

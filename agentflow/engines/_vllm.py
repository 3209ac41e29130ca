"""``VLLMEngine``: vLLM's v1 ``AsyncLLM`` in this process (GPU; extra ``agentflow[vllm]``).

vLLM is imported lazily: building a ``VLLMEngine`` without vLLM installed raises an
``EngineUnavailableError`` naming the extra to install, and nothing in agentflow imports vLLM
otherwise. The engine itself (``AsyncLLM.from_engine_args(AsyncEngineArgs(model=..., **args))``)
is built on first use, in a worker thread, because loading a model blocks for a long time.

The translation from agentflow's request to vLLM's is a set of pure functions (``sampling_spec``,
``make_sampling_params``, ``vllm_prompt``, ``usage_from_output``) tested without vLLM:

    GenerationRequest              vLLM
    prompt                         {"prompt": text}
    messages                       {"prompt_token_ids": the chat template applied (add_generation_prompt=True),
                                    tokenized without adding special tokens again}
    hints.tenant (salted)          {"cache_salt": ...} in the prompt dict
    max_tokens/temperature/...     SamplingParams(max_tokens=..., temperature=..., top_p=..., stop=..., seed=...)
    json_schema                    SamplingParams(structured_outputs=StructuredOutputsParams(json=schema))
                                   (vLLM < 0.11: guided_decoding=GuidedDecodingParams(json=schema))
    hints.priority                 generate(..., priority=p)  (only with scheduling_policy="priority")
    usage.cached_tokens            RequestOutput.num_cached_tokens (None when vLLM gives none: unknown)
    capabilities.block_size        engine_args["block_size"], then the started engine's
                                   vllm_config.cache_config (``cache_facts``); 64 until known
    tools                          the chat template's ``tools`` (OpenAI function dicts), and the answer
                                   constrained like vLLM's server does for tool_choice: a named tool's
                                   arguments, or [{"name", "arguments"}...] (``auto`` also admits
                                   {"content": ...}, ``none`` only that); parsed back into
                                   ``Completion.tool_calls`` and the content
    messages' tool calls/results   assistant ``tool_calls`` with ``arguments`` as dicts (the form chat
                                   templates expect), ``tool`` messages with ``tool_call_id``

A request with tools streams its content or its calls whole, after generation (the constrained JSON is
not text for the caller).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Literal

import anyio

from agentflow.engines._metrics import VLLMCacheConfig
from agentflow.engines._openai import SecretHandle, _reveal, cache_salt_for
from agentflow.engines._tools import (
    ToolOutputReader,
    openai_tool,
    parse_tool_output,
    tool_instructions,
    tool_output_schema,
    uses_tools,
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
    ToolCallRequest,
    Usage,
    closing_stream,
)
from agentflow.errors import (
    ConfigError,
    EngineError,
    EngineRequestError,
    EngineUnavailableError,
    ToolError,
    UnsupportedFeatureError,
)

__all__ = [
    "SamplingSpec",
    "VLLMApi",
    "VLLMEngine",
    "cache_facts",
    "chat_template_kwargs",
    "chat_template_messages",
    "finish_reason_from_vllm",
    "make_sampling_params",
    "require_vllm",
    "sampling_spec",
    "usage_from_output",
    "vllm_prompt",
]

OutputKind = Literal["delta", "final_only"]
ConstraintField = Literal["structured_outputs", "guided_decoding"]

_INSTALL_HINT = (
    "VLLMEngine needs vLLM, which is not installed: install the extra with "
    "`pip install 'agentflow[vllm]'` (vLLM runs on an NVIDIA GPU with CUDA); "
    "or serve the model with `vllm serve` and use OpenAIEngine (openai:<base_url>#<model>)"
)


def require_vllm() -> None:
    """Raise ``EngineUnavailableError`` naming the extra to install when vLLM is missing."""
    if importlib.util.find_spec("vllm") is None:
        raise EngineUnavailableError(_INSTALL_HINT)


@dataclass(frozen=True, slots=True)
class SamplingSpec:
    """vLLM ``SamplingParams`` arguments, as plain data.

    Attributes:
        kwargs: Keyword arguments of ``SamplingParams`` (without ``output_kind`` and constraint).
        output_kind: ``delta`` for streaming, ``final_only`` for one result.
        json_schema: The JSON Schema to constrain the output to, if any.
    """

    kwargs: Mapping[str, object]
    output_kind: OutputKind
    json_schema: JsonSchema | None = None


def sampling_spec(request: GenerationRequest, *, stream: bool) -> SamplingSpec:
    """The ``SamplingParams`` arguments of ``request`` (pure).

    Raises:
        UnsupportedFeatureError: The request has both tools to call and a ``json_schema``.
    """
    schema = request.json_schema
    if request.tools:
        if schema is not None:
            raise UnsupportedFeatureError(
                "VLLMEngine constrains tool calls with a JSON Schema, so a request cannot have both `tools` "
                "and `json_schema`; drop one"
            )
        schema = tool_output_schema(request)
    kwargs: dict[str, object] = {
        "n": 1,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
    }
    if request.stop:
        kwargs["stop"] = list(request.stop)
    if request.seed is not None:
        kwargs["seed"] = request.seed
    if request.logit_bias:
        kwargs["logit_bias"] = {int(token): float(bias) for token, bias in request.logit_bias.items()}
    return SamplingSpec(kwargs, "delta" if stream else "final_only", schema)


def chat_template_messages(request: GenerationRequest) -> list[dict[str, object]]:
    """The messages as chat templates take them (pure): assistant ``tool_calls`` with their arguments as
    dicts, ``tool`` messages with ``tool_call_id``, and, when the request has tools, the answer format
    (see ``_tools``) joined to the system message."""
    assert request.messages is not None
    out: list[dict[str, object]] = []
    for m in request.messages:
        message: dict[str, object] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _arguments(c)}}
                for c in m.tool_calls
            ]
        if m.tool_call_id is not None:
            message["tool_call_id"] = m.tool_call_id
        out.append(message)
    instructions = tool_instructions(request, list_tools=False)
    if instructions:
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{instructions}"}
        else:
            out.insert(0, {"role": "system", "content": instructions})
    return out


def _seed(request: GenerationRequest) -> str:
    """What call ids are derived from: the conversation (with the answer's items, see ``ToolOutputReader``)."""
    return "\n".join(f"{m.role}:{m.content}" for m in request.messages or ())


def _arguments(call: ToolCallRequest) -> object:
    try:
        return call.parsed_arguments()
    except ToolError:
        return call.arguments  # not a JSON object: the template gets the text as the model wrote it


def chat_template_kwargs(request: GenerationRequest) -> dict[str, object]:
    """Keyword arguments of ``apply_chat_template`` beyond the messages (pure): the offered ``tools``."""
    return {"tools": [openai_tool(t) for t in request.tools]} if uses_tools(request) else {}


@dataclass(frozen=True, slots=True)
class VLLMApi:
    """The vLLM classes the engine builds requests with (found once at start-up).

    Attributes:
        sampling_params: ``vllm.SamplingParams``.
        output_kinds: ``RequestOutputKind.DELTA`` / ``FINAL_ONLY`` by our name.
        constraint_field: ``structured_outputs`` (vLLM >= 0.11) or ``guided_decoding`` (older).
        constraint_params: ``StructuredOutputsParams`` or ``GuidedDecodingParams``.
    """

    sampling_params: Callable[..., object]
    output_kinds: Mapping[OutputKind, object]
    constraint_field: ConstraintField
    constraint_params: Callable[..., object]


def make_sampling_params(spec: SamplingSpec, api: VLLMApi) -> object:
    """Build vLLM ``SamplingParams`` from a spec with the classes in ``api``."""
    kwargs = dict(spec.kwargs)
    kwargs["output_kind"] = api.output_kinds[spec.output_kind]
    if spec.json_schema is not None:
        kwargs[api.constraint_field] = api.constraint_params(json=dict(spec.json_schema))
    return api.sampling_params(**kwargs)


def _load_api() -> VLLMApi:
    require_vllm()
    try:
        vllm = importlib.import_module("vllm")
        sampling = importlib.import_module("vllm.sampling_params")
    except Exception as exc:
        raise EngineUnavailableError(
            f"vLLM is installed but failed to import ({exc}); reinstall agentflow[vllm]"
        ) from exc
    kinds = sampling.RequestOutputKind
    if hasattr(sampling, "StructuredOutputsParams"):
        return VLLMApi(
            vllm.SamplingParams,
            {"delta": kinds.DELTA, "final_only": kinds.FINAL_ONLY},
            "structured_outputs",
            sampling.StructuredOutputsParams,
        )
    return VLLMApi(
        vllm.SamplingParams,
        {"delta": kinds.DELTA, "final_only": kinds.FINAL_ONLY},
        "guided_decoding",
        sampling.GuidedDecodingParams,
    )


def vllm_prompt(prompt: str | Sequence[int], cache_salt: str | None) -> dict[str, object]:
    """The prompt dict vLLM's ``generate`` takes, salted when ``cache_salt`` is given.

    Text becomes a ``TextPrompt`` (vLLM tokenizes it with the model's special-token defaults);
    token ids become a ``TokensPrompt`` (used for chat, whose rendered template already holds the
    special tokens, so they must not be added twice).
    """
    built: dict[str, object] = (
        {"prompt": prompt} if isinstance(prompt, str) else {"prompt_token_ids": list(prompt)}
    )
    if cache_salt is not None:
        built["cache_salt"] = cache_salt
    return built


def finish_reason_from_vllm(reason: str | None) -> FinishReason:
    """vLLM's ``CompletionOutput.finish_reason`` in agentflow's terms (``abort`` is an error)."""
    if reason == "length":
        return "length"
    if reason == "abort":
        return "error"
    return "stop"


def usage_from_output(
    prompt_token_ids: Sequence[int] | None,
    num_cached_tokens: int | None,
    completion_tokens: int,
    *,
    queue_s: float,
    ttft_s: float,
    total_s: float,
) -> Usage:
    """Usage from a vLLM ``RequestOutput``: ``num_cached_tokens`` is the prefix-cache hit (``None``: unknown)."""
    prompt = len(prompt_token_ids) if prompt_token_ids is not None else 0
    cached = None if num_cached_tokens is None else max(0, min(num_cached_tokens, prompt))
    return Usage(
        prompt_tokens=prompt,
        cached_tokens=cached,
        computed_tokens=prompt - (cached or 0),
        completion_tokens=completion_tokens,
        queue_s=queue_s,
        ttft_s=ttft_s,
        total_s=total_s,
    )


def cache_facts(vllm_config: object) -> VLLMCacheConfig:
    """The KV cache configuration of a started vLLM engine (``AsyncLLM.vllm_config``), read defensively.

    vLLM resolves ``cache_config.block_size`` for its attention backend and fills ``num_gpu_blocks`` once
    the cache is allocated; anything missing or not a positive int is ``None``.
    """
    cache = getattr(vllm_config, "cache_config", None)

    def positive(name: str) -> int | None:
        value = getattr(cache, name, None)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    block = positive("block_size")
    tokens = positive("kv_cache_size_tokens")
    blocks = positive("num_gpu_blocks")
    if tokens is None and blocks is not None and block is not None:
        tokens = blocks * block
    caching = getattr(cache, "enable_prefix_caching", None)
    return VLLMCacheConfig(
        block_size=block,
        prefix_match_unit=positive("prefix_match_unit"),
        enable_prefix_caching=caching if isinstance(caching, bool) else None,
        capacity_tokens=tokens,
        engines=1,
    )


@dataclass(slots=True)
class _Progress:
    """What one request produced so far (mutated while its outputs arrive)."""

    submitted: float
    started: float = 0.0
    first_token: float | None = None
    completion_tokens: int = 0
    prompt_token_ids: Sequence[int] | None = None
    num_cached_tokens: int | None = None
    finish: str | None = None
    pieces: list[str] = field(default_factory=list)

    def usage(self) -> Usage:
        now = time.monotonic()
        return usage_from_output(
            self.prompt_token_ids,
            self.num_cached_tokens,
            self.completion_tokens,
            queue_s=self.started - self.submitted,
            ttft_s=(self.first_token if self.first_token is not None else now) - self.submitted,
            total_s=now - self.submitted,
        )


class VLLMEngine:
    """vLLM's ``AsyncLLM`` in this process.

    Example:
        >>> engine = VLLMEngine("HuggingFaceTB/SmolLM2-135M-Instruct", engine_args={"gpu_memory_utilization": 0.3})  # doctest: +SKIP
        >>> await engine.generate(GenerationRequest(prompt="Hello", max_tokens=8))  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str,
        *,
        engine_args: Mapping[str, object] | None = None,
        cache_salt_per_tenant: bool = False,
        cache_salt_secret: SecretHandle | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        """Check that vLLM is importable and remember the configuration; the model loads on first use.

        Args:
            model: A Hugging Face model id or local path.
            engine_args: Further ``AsyncEngineArgs`` fields (``gpu_memory_utilization``,
                ``max_model_len``, ``load_format="dummy"``, ``scheduling_policy="priority"``...).
            cache_salt_per_tenant: Salt the prefix cache per ``hints.tenant``.
            cache_salt_secret: Key for tenant salts (random per engine when absent).
            max_concurrency: Requests submitted at once (default ``max_num_seqs`` or 256).

        Raises:
            EngineUnavailableError: vLLM is not installed.
            ConfigError: A bad option.
        """
        require_vllm()
        if not model:
            raise ConfigError("VLLMEngine needs a model (vllm:<model>), got ''")
        args = dict(engine_args or {})
        if "model" in args:
            raise ConfigError("pass the model as VLLMEngine(model, ...), not inside engine_args")
        self._model = model
        self._args = args
        max_num_seqs = args.get("max_num_seqs")
        self._slots = max_concurrency or (max_num_seqs if isinstance(max_num_seqs, int) else 256)
        self._priority = args.get("scheduling_policy") == "priority"
        block = args.get("block_size")
        self._block_size = block if isinstance(block, int) else DEFAULT_BLOCK_SIZE
        self._prefix_cache = args.get("enable_prefix_caching", True) is not False
        # The started engine's cache configuration (block size, capacity); None until start().
        self._cache_config: VLLMCacheConfig | None = None
        self._salt_secret: bytes | None = None
        if cache_salt_per_tenant:
            self._salt_secret = (
                _reveal(cache_salt_secret).encode("utf-8")
                if cache_salt_secret is not None
                else os.urandom(32)
            )
        # Built by start(); live until aclose().
        self._llm: object | None = None
        self._api: VLLMApi | None = None
        self._tokenizer: object | None = None
        self._start_lock = anyio.Lock()
        self._limiter = anyio.CapacityLimiter(self._slots)

    def __repr__(self) -> str:
        return f"VLLMEngine(model={self._model!r}, started={self._llm is not None})"

    @property
    def name(self) -> str:
        """``vllm:<model>``."""
        return f"vllm:{self._model}"

    @property
    def capabilities(self) -> Capabilities:
        """Block prefix cache (its block size and capacity from the started engine's config), structured
        outputs, tool calls; priority only with ``scheduling_policy="priority"``."""
        config = self._cache_config
        caching = (
            self._prefix_cache
            if config is None or config.enable_prefix_caching is None
            else (config.enable_prefix_caching)
        )
        return Capabilities(
            prefix_cache="block" if caching else "none",
            slots=self._slots,
            structured_output=True,
            priority=self._priority,
            block_size=(config.hash_block_size if config is not None else None) or self._block_size,
            cache_tokens=None if config is None else config.capacity_tokens,
            tool_calling=True,
        )

    def cache_salt(self, tenant: str | None) -> str | None:
        """The ``cache_salt`` sent for ``tenant``'s requests (``None``: tenants are not salted)."""
        if self._salt_secret is None or tenant is None:
            return None
        return cache_salt_for(self._salt_secret, tenant)

    async def start(self) -> None:
        """Load the model (``AsyncLLM.from_engine_args``) unless already loaded."""
        async with self._start_lock:
            if self._llm is not None:
                return
            api = _load_api()
            try:
                engine_mod = importlib.import_module("vllm.engine.arg_utils")
                async_llm_mod = importlib.import_module("vllm.v1.engine.async_llm")
                engine_args = engine_mod.AsyncEngineArgs(model=self._model, **self._args)
                build: Callable[[], object] = lambda: async_llm_mod.AsyncLLM.from_engine_args(engine_args)  # noqa: E731
                llm = await anyio.to_thread.run_sync(build)
            except EngineError:
                raise
            except Exception as exc:
                raise EngineUnavailableError(
                    f"vLLM could not start model {self._model!r} with engine_args {self._args}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            self._api = api
            self._llm = llm
            self._cache_config = cache_facts(getattr(llm, "vllm_config", None))

    async def generate(self, request: GenerationRequest) -> Completion:
        """Run one request to completion."""
        progress = _Progress(submitted=time.monotonic())
        async with aclosing(self._run(request, progress, stream=False)) as pieces:
            async for _ in pieces:
                pass
        text, calls = self._parse(request, progress)
        finish = finish_reason_from_vllm(progress.finish)
        return Completion(
            text=text,
            usage=progress.usage(),
            finish_reason="tool_calls" if calls and finish == "stop" else finish,
            model=self._model,
            tool_calls=calls,
        )

    def stream(self, request: GenerationRequest) -> ChunkStream:
        """Run one request, handing out text as vLLM produces it; the last chunk carries usage.

        Leaving the ``async with`` early aborts the request in vLLM and frees its slot.
        """
        return closing_stream(self._chunks(request))

    async def _chunks(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        progress = _Progress(submitted=time.monotonic())
        # With tools the answer is constrained JSON: each call is handed out when its item closes, an
        # answer's content whole at the end.
        reader = ToolOutputReader(request, seed=_seed(request)) if request.tools else None
        called = False
        async with aclosing(self._run(request, progress, stream=True)) as pieces:
            async for piece in pieces:
                if reader is None:
                    if piece:
                        yield Chunk(text=piece)
                    continue
                calls = reader.feed(piece)
                if calls:
                    called = True
                    yield Chunk(text="", tool_calls=tuple(calls))
        finish = finish_reason_from_vllm(progress.finish)
        if reader is not None:
            content, rest = reader.finish()
            if content:
                yield Chunk(text=content)
            if rest:
                called = True
                yield Chunk(text="", tool_calls=tuple(rest))
        if called and finish == "stop":
            finish = "tool_calls"
        yield Chunk(text="", usage=progress.usage(), finish_reason=finish)

    @staticmethod
    def _parse(request: GenerationRequest, progress: _Progress) -> tuple[str, tuple[ToolCallRequest, ...]]:
        return parse_tool_output(request, "".join(progress.pieces), seed=_seed(request))

    async def tokenize(self, text: str) -> Sequence[int]:
        """Token ids of ``text`` from the model's tokenizer (with its special-token defaults)."""
        tokenizer = await self._get_tokenizer()
        encode: Callable[[str], list[int]] = tokenizer.encode  # type: ignore[attr-defined]
        return list(encode(text))

    async def render(self, request: GenerationRequest) -> str:
        """The exact prompt: the text itself, or the model's chat template applied to ``messages``."""
        if request.prompt is not None:
            return request.prompt
        assert request.messages is not None
        tokenizer = await self._get_tokenizer()
        apply: Callable[..., str] = tokenizer.apply_chat_template  # type: ignore[attr-defined]
        return apply(
            chat_template_messages(request),
            tokenize=False,
            add_generation_prompt=True,
            **chat_template_kwargs(request),
        )

    async def aclose(self) -> None:
        """Shut vLLM down (engine-core process and GPU memory)."""
        llm, self._llm = self._llm, None
        if llm is not None:
            shutdown: Callable[[], None] = llm.shutdown  # type: ignore[attr-defined]
            await anyio.to_thread.run_sync(shutdown)

    # ---- internals ---------------------------------------------------------------------

    async def _get_tokenizer(self) -> object:
        await self.start()
        if self._tokenizer is None:
            getter = getattr(self._llm, "get_tokenizer", None)
            tokenizer = getter() if getter is not None else getattr(self._llm, "tokenizer", None)
            if inspect.isawaitable(tokenizer):
                tokenizer = await tokenizer
            if tokenizer is None:
                raise EngineUnavailableError(
                    f"{self.name}: this vLLM version exposes no tokenizer on AsyncLLM"
                )
            self._tokenizer = tokenizer
        return self._tokenizer

    async def _run(
        self, request: GenerationRequest, progress: _Progress, *, stream: bool
    ) -> AsyncGenerator[str, None]:
        await self.start()
        assert self._llm is not None and self._api is not None
        prompt: str | Sequence[int] = await self.render(request)
        if request.messages is not None:
            tokenizer = await self._get_tokenizer()
            encode: Callable[..., list[int]] = tokenizer.encode  # type: ignore[attr-defined]
            prompt = encode(prompt, add_special_tokens=False)
        salt = self.cache_salt(request.hints.tenant)
        params = make_sampling_params(sampling_spec(request, stream=stream), self._api)
        priority = request.hints.priority if self._priority and request.hints.priority is not None else 0
        request_id = f"agentflow-{uuid.uuid4().hex}"
        generate: Callable[..., AsyncGenerator[object, None]] = self._llm.generate  # type: ignore[attr-defined]
        async with self._limiter:
            progress.started = time.monotonic()
            try:
                # Closing AsyncLLM's generator early aborts the request in vLLM.
                outputs = generate(vllm_prompt(prompt, salt), params, request_id, priority=priority)
                async with aclosing(outputs):
                    async for output in outputs:
                        piece = self._absorb(output, progress)
                        if piece:
                            yield piece
            except EngineError:
                raise
            except Exception as exc:
                dead = type(exc).__name__ == "EngineDeadError"
                error_cls = EngineUnavailableError if dead else EngineRequestError
                raise error_cls(
                    f"{self.name}: request {request_id} failed: {type(exc).__name__}: {exc}"
                ) from exc

    @staticmethod
    def _absorb(output: object, progress: _Progress) -> str:
        """Fold one ``RequestOutput`` into ``progress``; return the new text."""
        prompt_ids = getattr(output, "prompt_token_ids", None)
        if prompt_ids is not None:
            progress.prompt_token_ids = prompt_ids
        cached = getattr(output, "num_cached_tokens", None)
        if cached is not None:
            progress.num_cached_tokens = cached
        completions = getattr(output, "outputs", None) or []
        if not completions:
            return ""
        first = completions[0]
        token_ids = getattr(first, "token_ids", None) or []
        if token_ids and progress.first_token is None:
            progress.first_token = time.monotonic()
        progress.completion_tokens += len(token_ids)
        reason = getattr(first, "finish_reason", None)
        if reason is not None:
            progress.finish = str(reason)
        piece = getattr(first, "text", "") or ""
        progress.pieces.append(piece)
        return piece

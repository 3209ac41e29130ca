"""Prefix-affinity routing over engine replicas: the cluster-level form of the KV-reuse-aware scheduler.

``PrefixRouter(replicas)`` is itself an ``Engine``. For every request it renders the prompt, tokenizes it, and
sends it to the replica most likely to hold the prompt's prefix in its KV cache, balancing load as it goes.
Replicas are any engines of the same model: local engine objects, ``OpenAIEngine`` endpoints, or ``RayEngine``
proxies of Ray actors each holding an embedded engine.

The router keeps one ``RadixTree`` per replica as its model of that replica's cache (every prompt routed there is
inserted; least-recently-used sequences are evicted beyond ``cache_tokens``)::

    request tokens : | system + document ........ | question |
    replica 0 tree : | system + document ........ |                  match 0 = len(shared prefix)
    replica 1 tree : | system |                                       match 1 = len(system)
    replica 2 tree : (nothing in common)                              match 2 = 0

Policy ``"affinity"``, per request:

1. ``best`` = the longest match over replicas. If it beats the least-loaded replica's match by less than
   ``min_gain_tokens`` (or ``min_gain_fraction`` of the prompt), nothing is worth chasing (a system prompt every
   replica holds, a brand-new prefix): send the request to the least-loaded replica (outstanding requests, then
   tokens routed so far, then index).
2. Otherwise the candidates are the replicas whose match is within ``match_slack_tokens`` of ``best``; pick the
   one with the fewest outstanding requests (then the longer match).
3. Load guard: if that replica has more than ``max_imbalance`` outstanding requests beyond the least-loaded
   replica, send the request to the least-loaded one instead (its prefix then lives in two places).

``"round_robin"`` and ``"least_loaded"`` are the baselines. ``stats()`` reports per-replica counts and the
engines' own cache usage (cached vs computed prompt tokens from each completion).

The router is a ``WrapperEngine`` of its tokenizer engine (``render``/``tokenize``). Of the optional protocols it
routes pins to the replica that holds the prefix and prefills like requests; it reports no cache events (the
replicas' caches are several, no one mirror can follow them) and salts as the first replica does.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, replace
from typing import Literal, get_args

from agentflow.engines import (
    CacheListener,
    CacheSalting,
    Capabilities,
    Chunk,
    ChunkStream,
    Completion,
    Engine,
    GenerationRequest,
    Prefilling,
    PrefixPinning,
    Unsubscribe,
    Usage,
    WrapperEngine,
    closing_stream,
    simple_tokenize,
)
from agentflow.engines._types import open_stream
from agentflow.errors import ConfigError, UnsupportedFeatureError

from ._radix import RadixTree

__all__ = ["PrefixRouter", "ReplicaStats", "RouteDecision", "RouteReason", "RoutingPolicy"]

RoutingPolicy = Literal["affinity", "round_robin", "least_loaded"]
"""How ``PrefixRouter`` picks a replica (see the module docstring)."""

RouteReason = Literal["affinity", "cold", "balance", "round_robin", "least_loaded"]
"""Why a replica was picked: the prefix match, no useful match, the load guard, or a baseline policy."""


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where one request goes and why.

    Attributes:
        replica: Index of the chosen replica.
        reason: Why it was chosen.
        matched_tokens: Prompt tokens the router expects the replica to hold.
        prompt_tokens: Tokens in the rendered prompt.
        matches: Expected cached-prefix length on every replica, by index.
    """

    replica: int
    reason: RouteReason
    matched_tokens: int
    prompt_tokens: int
    matches: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ReplicaStats:
    """What one replica was sent and what it reported.

    Attributes:
        name: The replica engine's name.
        requests: Requests routed to it.
        outstanding: Requests running on it now.
        routed_tokens: Prompt tokens routed to it.
        predicted_tokens: Prompt tokens the router expected it to hold (sum of matches).
        usage: Sum of the usage its completions reported (cached vs computed prompt tokens, timings).
        reasons: How many requests it got for each ``RouteReason``.
    """

    name: str
    requests: int
    outstanding: int
    routed_tokens: int
    predicted_tokens: int
    usage: Usage
    reasons: dict[str, int]


class _Replica:
    """Router-side state of one replica; lives as long as the router."""

    __slots__ = ("engine", "outstanding", "predicted", "reasons", "requests", "routed", "tree", "usage")

    def __init__(self, engine: Engine, cache_tokens: int | None) -> None:
        self.engine = engine
        self.tree = RadixTree(budget_tokens=cache_tokens)  # model of the replica's prefix cache
        self.outstanding = 0  # requests dispatched and not finished
        self.requests = 0
        self.routed = 0
        self.predicted = 0
        self.usage = Usage()
        self.reasons: dict[str, int] = {}


class PrefixRouter(WrapperEngine):
    """An ``Engine`` that spreads requests over replicas, keeping requests with a shared prefix together.

    Args:
        replicas: Engines serving the same model (their tokenizations must agree).
        policy: ``"affinity"`` (default), or a baseline: ``"round_robin"``, ``"least_loaded"``.
        tokenizer: The engine whose ``render``/``tokenize`` define the prompt tokens (default: the first replica;
            pass a local engine of the same model when the replicas are remote, to save a round trip). When it
            cannot tokenize (``UnsupportedFeatureError``, e.g. a hosted API), the rendered text is split into word
            and punctuation pieces instead, which keeps shared prefixes shared.
        match_slack_tokens: Replicas whose expected match is this close to the best one are equally good.
        min_gain_tokens: The best match must beat the least-loaded replica's by this many tokens to be followed.
        min_gain_fraction: ... and by this fraction of the prompt's tokens.
        max_imbalance: Outstanding requests a preferred replica may have beyond the least-loaded one.
        cache_tokens: Tokens of prefix cache assumed per replica (LRU beyond it); ``None`` for unbounded.
        close_replicas: Whether ``aclose`` closes the replicas (and the tokenizer, if given).

    Raises:
        ConfigError: No replicas, an unknown policy, or a negative option.

    Example:
        >>> import anyio
        >>> from agentflow.engines import GenerationRequest, TestEngine
        >>> router = PrefixRouter([TestEngine(name="a"), TestEngine(name="b")])
        >>> anyio.run(router.generate, GenerationRequest(prompt="hello")).text
        'echo: hello'
    """

    def __init__(
        self,
        replicas: Sequence[Engine],
        *,
        policy: RoutingPolicy = "affinity",
        tokenizer: Engine | None = None,
        match_slack_tokens: int = 16,
        min_gain_tokens: int = 32,
        min_gain_fraction: float = 0.25,
        max_imbalance: int = 2,
        cache_tokens: int | None = 65_536,
        close_replicas: bool = True,
    ) -> None:
        if not replicas:
            raise ConfigError("PrefixRouter needs at least one replica engine; pass replicas=[engine, ...]")
        if policy not in get_args(RoutingPolicy):
            raise ConfigError(
                f"PrefixRouter policy {policy!r} is unknown; use one of {list(get_args(RoutingPolicy))}"
            )
        for label, value in (
            ("match_slack_tokens", match_slack_tokens),
            ("min_gain_tokens", min_gain_tokens),
            ("min_gain_fraction", min_gain_fraction),
            ("max_imbalance", max_imbalance),
        ):
            if value < 0:
                raise ConfigError(f"PrefixRouter {label} must be >= 0, got {value}")
        if cache_tokens is not None and cache_tokens < 1:
            raise ConfigError(f"PrefixRouter cache_tokens must be >= 1 or None, got {cache_tokens}")
        super().__init__(tokenizer if tokenizer is not None else replicas[0])
        self._replicas = [_Replica(e, cache_tokens) for e in replicas]
        self._policy: RoutingPolicy = policy
        self._tokenizer = tokenizer
        self._slack = match_slack_tokens
        self._min_gain = min_gain_tokens
        self._min_gain_fraction = min_gain_fraction
        self._max_imbalance = max_imbalance
        self._close = close_replicas
        self._rr = itertools.count()  # round-robin position; lives as long as the router
        self._piece_tokens = False  # set once the tokenizer engine said it cannot tokenize

    # -- Engine protocol ------------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """``router[<policy>](<replica names>)``."""
        return f"router[{self._policy}]({', '.join(r.engine.name for r in self._replicas)})"

    @property
    def capabilities(self) -> Capabilities:
        """The first replica's capabilities, with ``slots`` summed over replicas."""
        first = self._replicas[0].engine.capabilities
        return replace(first, slots=sum(r.engine.capabilities.slots for r in self._replicas))

    @property
    def replicas(self) -> tuple[Engine, ...]:
        """The replica engines, by index."""
        return tuple(r.engine for r in self._replicas)

    @property
    def policy(self) -> RoutingPolicy:
        """The routing policy."""
        return self._policy

    async def generate(self, request: GenerationRequest) -> Completion:
        """Route the request and run it on the chosen replica."""
        decision = await self.route(request)
        replica = self._replicas[decision.replica]
        try:
            completion = await replica.engine.generate(request)
        finally:
            self.done(decision)
        replica.usage = replica.usage + completion.usage
        return completion

    def stream(self, request: GenerationRequest) -> ChunkStream:
        """Route the request and stream it from the chosen replica (outstanding there until the ``async with``
        exits)."""
        return closing_stream(self._chunks(request))

    async def _chunks(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        decision = await self.route(request)
        replica = self._replicas[decision.replica]
        try:
            async with open_stream(replica.engine, request) as chunks:
                async for chunk in chunks:
                    if chunk.usage is not None:
                        replica.usage = replica.usage + chunk.usage
                    yield chunk
        finally:
            self.done(decision)

    async def aclose(self) -> None:
        """Close the replicas (and the tokenizer) when the router owns them."""
        if not self._close:
            return
        for r in self._replicas:
            await r.engine.aclose()
        if self._tokenizer is not None:
            await self._tokenizer.aclose()

    # -- optional protocols ---------------------------------------------------------------------------------------

    def subscribe_cache_events(self, listener: CacheListener) -> Unsubscribe | None:
        """``None``: the replicas' caches are several; no one mirror can follow them."""
        return None

    def pin_prefix(self, tokens: Sequence[int], ttl_s: float) -> bool:
        """Pin ``tokens`` on the replica expected to hold the longest part of them; whether it keeps them."""
        matches = [r.tree.match(tokens) for r in self._replicas]
        engine = self._replicas[max(range(len(matches)), key=lambda i: (matches[i], -i))].engine
        return engine.pin_prefix(tokens, ttl_s) if isinstance(engine, PrefixPinning) else False

    def unpin_prefix(self, tokens: Sequence[int]) -> bool:
        """Release a pin of ``tokens`` on every replica; whether one held it."""
        released = [
            r.engine.unpin_prefix(tokens) for r in self._replicas if isinstance(r.engine, PrefixPinning)
        ]
        return any(released)

    async def prefill(self, request: GenerationRequest) -> Usage:
        """Route the request like ``generate`` and prefill it on the chosen replica (without a native prefill:
        a one-token generation)."""
        decision = await self.route(request)
        replica = self._replicas[decision.replica]
        try:
            if isinstance(replica.engine, Prefilling):
                usage = await replica.engine.prefill(request)
            else:
                usage = (await replica.engine.generate(replace(request, max_tokens=1))).usage
        finally:
            self.done(decision)
        replica.usage = replica.usage + usage
        return usage

    def cache_salt(self, tenant: str | None) -> str | None:
        """The first replica's cache salt for ``tenant`` (the replicas serve one model, configured alike)."""
        first = self._replicas[0].engine
        return first.cache_salt(tenant) if isinstance(first, CacheSalting) else None

    # -- routing --------------------------------------------------------------------------------------------------

    async def route(self, request: GenerationRequest) -> RouteDecision:
        """Choose the replica for ``request`` and count it as outstanding there.

        The caller must run the request on ``replicas[decision.replica]`` and call ``done(decision)`` afterwards
        (``generate`` and ``stream`` do both).
        """
        tokens = tuple(await self._prompt_tokens(request))
        decision = self.choose(tokens)
        chosen = self._replicas[decision.replica]
        chosen.tree.insert(tokens)
        chosen.outstanding += 1
        chosen.requests += 1
        chosen.routed += len(tokens)
        chosen.predicted += decision.matched_tokens
        chosen.reasons[decision.reason] = chosen.reasons.get(decision.reason, 0) + 1
        return decision

    async def _prompt_tokens(self, request: GenerationRequest) -> Sequence[int]:
        """The rendered prompt's tokens; text pieces when the tokenizer engine cannot tokenize (a hosted API).

        Affinity needs only a tokenization that keeps shared text prefixes shared, which the piece tokenizer does.
        """
        text = await self.render(request)
        if not self._piece_tokens:
            try:
                return await self.tokenize(text)
            except UnsupportedFeatureError:
                self._piece_tokens = True  # ask once; the engine will not learn to tokenize later
        return simple_tokenize(text)

    def done(self, decision: RouteDecision) -> None:
        """Mark a request routed with ``route`` as finished on its replica."""
        self._replicas[decision.replica].outstanding -= 1

    def choose(self, tokens: Sequence[int]) -> RouteDecision:
        """The routing decision for a prompt's tokens under the policy, without recording it."""
        # Invariant: reads router state only; route() applies the decision (tree insert, counters).
        matches = tuple(r.tree.match(tokens) for r in self._replicas)
        n = len(tokens)
        if self._policy == "round_robin":
            i = next(self._rr) % len(self._replicas)
            return RouteDecision(i, "round_robin", matches[i], n, matches)
        least = self._least_loaded(range(len(self._replicas)))
        if self._policy == "least_loaded":
            return RouteDecision(least, "least_loaded", matches[least], n, matches)
        best = max(matches)
        worth = max(self._min_gain, self._min_gain_fraction * n)
        if best == 0 or best - matches[least] < worth:
            # The least-loaded replica is (about) as good as any: a new prefix, or one it holds itself.
            reason: RouteReason = "affinity" if best and matches[least] >= worth else "cold"
            return RouteDecision(least, reason, matches[least], n, matches)
        candidates = [i for i, m in enumerate(matches) if m >= best - self._slack]
        pick = min(candidates, key=lambda i: (self._replicas[i].outstanding, -matches[i], i))
        if self._replicas[pick].outstanding - self._replicas[least].outstanding > self._max_imbalance:
            return RouteDecision(least, "balance", matches[least], n, matches)
        return RouteDecision(pick, "affinity", matches[pick], n, matches)

    def _least_loaded(self, indices: range) -> int:
        return min(indices, key=lambda i: (self._replicas[i].outstanding, self._replicas[i].routed, i))

    def stats(self) -> list[ReplicaStats]:
        """Per-replica counters, by index."""
        return [
            ReplicaStats(
                name=r.engine.name,
                requests=r.requests,
                outstanding=r.outstanding,
                routed_tokens=r.routed,
                predicted_tokens=r.predicted,
                usage=r.usage,
                reasons=dict(r.reasons),
            )
            for r in self._replicas
        ]

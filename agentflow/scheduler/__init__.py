"""The KV-reuse-aware request scheduler: one per engine, every agent's LLM request passes through it.

``Scheduler(engine, policy="ours")`` is itself an ``Engine``: agents call ``scheduler.generate(request)``.
It models the engine's prefix cache (``RadixTree`` for exact caches such as llama.cpp snapshots, ``BlockLRU``
for vLLM-style block caches), orders the ready queue by expected reuse, fan-out, DAG urgency, deadlines and
bounded aging (``CacheAwarePolicy``; ``FifoPolicy`` is the baseline), admits work under concurrency, rate and
cache-budget limits, pins and pre-warms prefixes of agents paused on tools, and measures reuse, waits and PTE.
``KVEventSubscriber`` keeps a ``BlockLRU`` in step with a vLLM server's KV cache events (ZMQ).
``PromptLayout`` keeps prompts' stable parts first so that agents share prefixes.
"""

from ._blocks import BlockLRU, BlockStats
from ._kv_events import KVEventStats, KVEventSubscriber
from ._layout import PromptLayout, canonical_json
from ._metrics import RequestMetrics, SchedulerMetrics, WorkflowMetrics, gamma_from_shape, pte
from ._policy import CacheAwarePolicy, FifoPolicy, Policy, QueuedRequest, make_policy, policy_names
from ._radix import Eviction, MatchListener, RadixTree, common_prefix_len
from ._router import PrefixRouter, ReplicaStats, RouteDecision, RouteReason, RoutingPolicy
from ._scheduler import DEFAULT_GAMMA, CacheModel, NoCache, Scheduler

__all__ = [
    "DEFAULT_GAMMA",
    "BlockLRU",
    "BlockStats",
    "CacheAwarePolicy",
    "CacheModel",
    "Eviction",
    "FifoPolicy",
    "KVEventStats",
    "KVEventSubscriber",
    "MatchListener",
    "NoCache",
    "Policy",
    "PrefixRouter",
    "PromptLayout",
    "QueuedRequest",
    "RadixTree",
    "ReplicaStats",
    "RequestMetrics",
    "RouteDecision",
    "RouteReason",
    "RoutingPolicy",
    "Scheduler",
    "SchedulerMetrics",
    "WorkflowMetrics",
    "canonical_json",
    "common_prefix_len",
    "gamma_from_shape",
    "make_policy",
    "policy_names",
    "pte",
]

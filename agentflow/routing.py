"""agentflow.routing: engine replicas behind a prefix-affinity router.

``PrefixRouter(replicas)`` is an ``Engine`` that sends every request to the replica most likely to hold its
prompt prefix (a radix tree per replica over rendered prompt tokens), balancing load; ``RayEngine`` runs a replica
as a Ray actor holding an embedded engine (extra ``agentflow[ray]``). Replicas may also be local engines or
``OpenAIEngine`` endpoints.
"""

from __future__ import annotations

from agentflow.engines._ray import EngineFactory, RayEngine
from agentflow._routing import PrefixRouter, ReplicaStats, RouteDecision, RouteReason, RoutingPolicy

__all__ = [
    "EngineFactory",
    "PrefixRouter",
    "RayEngine",
    "ReplicaStats",
    "RouteDecision",
    "RouteReason",
    "RoutingPolicy",
]

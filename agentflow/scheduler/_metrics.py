"""Scheduler metrics: per request, per workflow, and the prefill lower bound.

PTE (prefill token equivalents, from "Beyond Accuracy: Unveiling Inefficiency Patterns in Tool-Integrated
Reasoning") puts prefill and decode on one scale. For one turn with ``P`` prompt tokens of which ``C`` were
prefilled and ``D`` generated tokens::

    PTE(turn) = C + gamma * L * D        with  L = P + D / 2  (mean context length while decoding)

``gamma`` is the cost of attending to one cached token while decoding, relative to prefilling one token.
Decoding is memory bound (each step reads the whole KV cache) and prefill is compute bound, so::

    gamma = kv_bytes_per_token / bandwidth  /  (2 * n_params / flops)
          = kv_bytes_per_token * machine_balance / (2 * n_params)

with ``kv_bytes_per_token = 2 * n_layers * n_kv_heads * head_dim * dtype_bytes`` and ``machine_balance`` the
hardware's FLOP/byte ratio (``gamma_from_shape``). A workflow's PTE is the sum over its turns.

The lower bound on prefill is the number of tokens in the union trie of every prompt seen: each distinct
prefix has to be prefilled at least once, and an ideal cache prefills nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

__all__ = [
    "RequestMetrics",
    "SchedulerMetrics",
    "WorkflowMetrics",
    "gamma_from_shape",
    "pte",
]


def gamma_from_shape(
    *,
    n_params: float,
    n_layers: int,
    n_kv_heads: int,
    head_dim: int,
    dtype_bytes: int = 2,
    machine_balance: float = 10.0,
) -> float:
    """PTE's ``gamma`` from the model's shape (see the module docstring).

    Args:
        n_params: Model parameters.
        n_layers: Transformer layers.
        n_kv_heads: KV heads per layer.
        head_dim: Dimension per head.
        dtype_bytes: Bytes per KV element (2 for f16).
        machine_balance: Peak FLOP/s divided by memory bytes/s (about 10 on a desktop CPU, 300 on an H100).

    >>> round(gamma_from_shape(n_params=135e6, n_layers=30, n_kv_heads=3, head_dim=64), 5)  # SmolLM2-135M
    0.00085
    """
    kv_bytes = 2 * n_layers * n_kv_heads * head_dim * dtype_bytes
    return kv_bytes * machine_balance / (2.0 * n_params)


def pte(computed_tokens: int, prompt_tokens: int, completion_tokens: int, gamma: float) -> float:
    """Prefill token equivalents of one turn: ``computed + gamma * (prompt + completion / 2) * completion``.

    >>> round(pte(100, 400, 10, 0.001), 2)
    104.05
    """
    context = prompt_tokens + completion_tokens / 2.0
    return computed_tokens + gamma * context * completion_tokens


@dataclass(frozen=True, slots=True)
class RequestMetrics:
    """What happened to one request.

    Attributes:
        request_id: The scheduler's sequence number for the request.
        workflow_id: ``hints.workflow_id`` (``""`` if none).
        agent: ``hints.agent`` (``""`` if none).
        kind: ``"request"`` or ``"prewarm"``.
        prompt_tokens: Prompt length.
        cached_tokens: Prompt tokens the engine reported as reused (``None``: it did not say).
        computed_tokens: Prompt tokens the engine prefilled.
        predicted_cached_tokens: The cache model's prediction at dispatch.
        completion_tokens: Generated tokens.
        queue_s: Seconds from arrival at the scheduler to dispatch.
        ttft_s: Seconds from arrival to the first token (queue + engine TTFT).
        latency_s: Seconds from arrival to completion.
        pte: Prefill token equivalents of this turn.
        arrival_s: Arrival time, seconds since the scheduler started.
        finish_s: Completion time, seconds since the scheduler started.
    """

    request_id: int
    workflow_id: str
    agent: str
    kind: str
    prompt_tokens: int
    cached_tokens: int | None
    computed_tokens: int
    predicted_cached_tokens: int
    completion_tokens: int
    queue_s: float
    ttft_s: float
    latency_s: float
    pte: float
    arrival_s: float
    finish_s: float


@dataclass(frozen=True, slots=True)
class WorkflowMetrics:
    """Aggregates over the requests of one workflow (or of all of them).

    Attributes:
        workflow_id: The workflow (``"*"`` for the totals).
        requests: Completed requests (prewarms included).
        prompt_tokens: Sum of prompt tokens.
        cached_tokens: Sum of reused prompt tokens, over the requests whose engine reported them.
        computed_tokens: Sum of prefilled prompt tokens.
        completion_tokens: Sum of generated tokens.
        hit_rate: ``cached_tokens`` over the prompt tokens of the requests that reported them (0 when none).
        mean_queue_s: Mean queue wait of requests (prewarms are left out of the four latency figures: they
            run only when the engine is idle and nobody waits for them).
        max_queue_s: Longest queue wait of a request.
        mean_ttft_s: Mean time to first token of requests.
        mean_latency_s: Mean end-to-end latency of requests.
        pte: Sum of PTE.
        makespan_s: First arrival to last completion.
        lower_bound_prefill_tokens: Tokens in the union trie of this workflow's prompts.
        cache_unreported: Requests whose engine did not report cached tokens (left out of ``hit_rate``).
    """

    workflow_id: str
    requests: int
    prompt_tokens: int
    cached_tokens: int
    computed_tokens: int
    completion_tokens: int
    hit_rate: float
    mean_queue_s: float
    max_queue_s: float
    mean_ttft_s: float
    mean_latency_s: float
    pte: float
    makespan_s: float
    lower_bound_prefill_tokens: int
    cache_unreported: int = 0

    @classmethod
    def of(cls, workflow_id: str, rows: list[RequestMetrics], lower_bound: int) -> WorkflowMetrics:
        """Aggregate ``rows``."""
        n = len(rows)
        prompt = sum(r.prompt_tokens for r in rows)
        reported = [r for r in rows if r.cached_tokens is not None]
        cached = sum(r.cached_tokens or 0 for r in reported)
        reported_prompt = sum(r.prompt_tokens for r in reported)
        waited = [r for r in rows if r.kind == "request"]
        k = len(waited)
        return cls(
            workflow_id=workflow_id,
            requests=n,
            prompt_tokens=prompt,
            cached_tokens=cached,
            computed_tokens=sum(r.computed_tokens for r in rows),
            completion_tokens=sum(r.completion_tokens for r in rows),
            hit_rate=cached / reported_prompt if reported_prompt else 0.0,
            mean_queue_s=sum(r.queue_s for r in waited) / k if k else 0.0,
            max_queue_s=max((r.queue_s for r in waited), default=0.0),
            mean_ttft_s=sum(r.ttft_s for r in waited) / k if k else 0.0,
            mean_latency_s=sum(r.latency_s for r in waited) / k if k else 0.0,
            pte=sum(r.pte for r in rows),
            makespan_s=(max(r.finish_s for r in rows) - min(r.arrival_s for r in rows)) if n else 0.0,
            lower_bound_prefill_tokens=lower_bound,
            cache_unreported=n - len(reported),
        )


@dataclass(frozen=True, slots=True)
class SchedulerMetrics:
    """A snapshot of everything the scheduler measured (``Scheduler.metrics()``).

    Attributes:
        policy: The policy's name.
        total: Aggregates over all requests (``workflow_id == "*"``).
        workflows: Aggregates per ``hints.workflow_id``.
        requests: Every completed request, in completion order.
        lower_bound_prefill_tokens: Tokens in the union trie of all prompts seen.
        decisions: Scheduling decisions made (requests and prewarms dispatched).
        decision_us_mean: Mean microseconds per decision (policy pick plus admission checks).
        prediction_abs_error_tokens: Sum of ``|predicted - reported|`` cached tokens.
        pinned_prefixes: Pins live at snapshot time.
    """

    policy: str
    total: WorkflowMetrics
    workflows: Mapping[str, WorkflowMetrics]
    requests: tuple[RequestMetrics, ...]
    lower_bound_prefill_tokens: int
    decisions: int
    decision_us_mean: float
    prediction_abs_error_tokens: int
    pinned_prefixes: int = 0

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict (without the per-request rows)."""
        return {
            "policy": self.policy,
            "total": asdict(self.total),
            "workflows": {k: asdict(v) for k, v in self.workflows.items()},
            "lower_bound_prefill_tokens": self.lower_bound_prefill_tokens,
            "decisions": self.decisions,
            "decision_us_mean": self.decision_us_mean,
            "prediction_abs_error_tokens": self.prediction_abs_error_tokens,
            "pinned_prefixes": self.pinned_prefixes,
        }

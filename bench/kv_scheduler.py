"""KV-reuse-aware scheduling vs FIFO on the real embedded engine (llama.cpp, SmolLM2-135M, CPU).

Workload (fixed seed): ``W`` concurrent workflows, each with its own team of agents. Every agent's prompt
starts with the workflow's preamble and the agent's system prompt (together a few hundred tokens, laid out
with ``PromptLayout``). A workflow runs::

    planner(task) -> fan-out of K researchers (same prefix: preamble + researcher system + task)
                     each a tool loop of T turns: generate -> tool call (pause) -> generate on the
                     history + output + tool result -> ...   (the prompt grows every turn)
                  -> writer(findings)

All workflows start together, so their requests interleave at the engine. The same workload runs under
``fifo`` and ``ours`` (``CacheAwarePolicy`` + prewarm of the writer's prefix during tool pauses), each on a
fresh engine (cold cache). The engine's snapshot store is byte-bounded; a sweep over that budget shows where
the gain comes from, and a run where no two prompts share a prefix shows the scheduler's overhead.

Reported per run: makespan, prefill (computed) tokens, hit rate, waits (of requests; prewarms run only when
the engine is idle and nobody waits for them), TTFT, PTE, and the lower bound (tokens in the union trie of all
prompts). Every (budget, policy) run is repeated ``--repetitions`` times (3 with ``--quick``); fifo and ours
run back to back, alternating which goes first, so drift in the machine's load hits both. Tables and the
``ratios`` in the JSON are medians (ratios: medians of the per-repetition paired ratios), with the min-max
beside them; ``samples`` keeps every run. ``ours`` runs with the policy's defaults unless ``--age``,
``--max-wait`` or ``--max-slowdown`` are given.

``--engine openai:<base_url>#<model>`` runs the same workload against a server (e.g. vLLM); its cache is
the server's, so there is one "budget" (the server's cache) and every run's prompts carry a unique tag so
no run reuses another's prefixes. With ``--kv-events tcp://host:5557`` (and ``--kv-replay``, ``--kv-topic``,
``--kv-data-parallel-size``) the scheduler's block model follows vLLM's KV cache events (``scripts/gpu_check``
does all of this on a GPU machine). Usage::

    python bench/kv_scheduler.py [--quick] [--json PATH] [--repetitions N] [--engine SPEC] [--kv-events EP]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from _harness import (
    Machine,
    add_repetition_args,
    median_of,
    paired_ratios,
    repetitions_of,
    summarize,
    write_json,
)
from rich.console import Console
from rich.table import Table

from agentflow.engines import (
    CacheEvent,
    CacheListener,
    CacheListeners,
    Capabilities,
    Chunk,
    ChunkStream,
    Completion,
    Engine,
    GenerationRequest,
    LiveContext,
    LlamaCppEngine,
    Message,
    RequestHints,
    SnapshotStore,
    TestEngine,
    Unsubscribe,
    Usage,
    closing_stream,
    common_prefix_len,
    engine_from_spec,
    simple_tokenize,
)
from agentflow.scheduler import KVEventSubscriber, PromptLayout, Scheduler, gamma_from_shape

MB = 1024 * 1024
GAMMA = gamma_from_shape(n_params=135e6, n_layers=30, n_kv_heads=3, head_dim=64)  # SmolLM2-135M, CPU

_WORDS = [
    "analyse",
    "verify",
    "source",
    "claim",
    "budget",
    "schedule",
    "report",
    "evidence",
    "summary",
    "risk",
    "customer",
    "order",
    "invoice",
    "ledger",
    "policy",
    "review",
    "draft",
    "outline",
    "metric",
    "trend",
    "forecast",
    "anomaly",
    "region",
    "supplier",
    "contract",
    "clause",
    "deadline",
    "priority",
    "owner",
    "status",
    "dependency",
    "latency",
    "error",
    "retry",
    "cache",
    "index",
    "query",
    "table",
    "column",
    "filter",
    "join",
    "shipment",
    "warehouse",
    "route",
    "carrier",
    "delay",
    "refund",
    "ticket",
    "escalation",
    "audit",
    "compliance",
    "record",
    "archive",
]


def _text(rng: random.Random, words: int) -> str:
    out = []
    while len(out) < words:
        n = rng.randint(6, 12)
        sentence = " ".join(rng.choice(_WORDS) for _ in range(n))
        out.extend((sentence[0].upper() + sentence[1:] + ".").split())
    return " ".join(out[:words])


@dataclass(frozen=True)
class WorkflowSpec:
    """One workflow's agents, task and tool behaviour."""

    wid: str
    planner: PromptLayout
    researcher: PromptLayout
    writer: PromptLayout
    task: str
    subquestions: tuple[str, ...]
    tool_results: tuple[tuple[str, ...], ...]  # [researcher][turn]
    pauses: tuple[tuple[float, ...], ...]  # [researcher][turn]
    start_delay: float
    unique: bool  # every prompt starts with a fresh nonce: no shared prefixes at all


def make_workload(
    seed: int,
    n_workflows: int,
    fanout: int,
    turns: int,
    *,
    preamble_words: int,
    system_words: int,
    unique: bool = False,
) -> list[WorkflowSpec]:
    """The fixed workload: ``n_workflows`` workflows with ``fanout`` researchers of ``turns`` tool turns."""
    rng = random.Random(seed)
    specs = []
    for w in range(n_workflows):
        wid = f"wf{w}"
        preamble = f"Team {wid}. " + _text(rng, preamble_words)
        task = f"Task for {wid}: " + _text(rng, 20)

        def layout(role: str, preamble: str = preamble, task: str = task) -> PromptLayout:
            return PromptLayout(
                system=f"You are the {role}. " + _text(rng, system_words),
                shared_context=task,
                preamble=preamble,
            )

        specs.append(
            WorkflowSpec(
                wid=wid,
                planner=layout("planner"),
                researcher=layout("researcher"),
                writer=layout("writer"),
                task=task,
                subquestions=tuple(f"Subquestion {k}: " + _text(rng, 10) for k in range(fanout)),
                tool_results=tuple(
                    tuple("search() returned: " + _text(rng, 30) for _ in range(turns - 1))
                    for _ in range(fanout)
                ),
                pauses=tuple(
                    tuple(round(rng.uniform(0.3, 1.2), 2) for _ in range(turns - 1)) for _ in range(fanout)
                ),
                start_delay=0.05 * w,
                unique=unique,
            )
        )
    return specs


class _Nonce:
    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def __call__(self) -> str:
        return f"Request {self._rng.getrandbits(48):012x}.\n"


async def run_workflow(
    sched: Scheduler, spec: WorkflowSpec, *, max_tokens: int, prewarm: bool, nonce: _Nonce, scale: float = 1.0
) -> float:
    """Run one workflow through ``sched``; returns its finish time (perf_counter)."""
    await anyio.sleep(spec.start_delay * scale)

    def prompt(layout: PromptLayout, history: list[Message]) -> str:
        text = layout.prompt(history)
        return nonce() + text if spec.unique else text

    def hints(agent: str, group: str | None = None) -> RequestHints:
        return RequestHints(workflow_id=spec.wid, agent=agent, fanout_group=group)

    def request(
        layout: PromptLayout, history: list[Message], agent: str, group: str | None = None
    ) -> GenerationRequest:
        return GenerationRequest(
            prompt=prompt(layout, history), max_tokens=max_tokens, hints=hints(agent, group)
        )

    await sched.generate(request(spec.planner, [Message("user", spec.task)], "planner"))
    findings = [""] * len(spec.subquestions)

    async def researcher(k: int) -> None:
        history = [Message("user", spec.subquestions[k])]
        group: str | None = f"{spec.wid}/research"
        reply = await sched.generate(request(spec.researcher, history, f"researcher{k}", group))
        for result, pause in zip(spec.tool_results[k], spec.pauses[k], strict=True):
            await anyio.sleep(pause * scale)  # the tool call
            history += [Message("assistant", reply.text.strip()), Message("tool", result)]
            reply = await sched.generate(request(spec.researcher, history, f"researcher{k}"))
        findings[k] = reply.text.strip()

    async with anyio.create_task_group() as outer:
        if prewarm and not spec.unique:
            outer.start_soon(sched.prewarm, spec.writer.prefix_request((), hints=hints("writer")))
        async with anyio.create_task_group() as tg:
            for k in range(len(spec.subquestions)):
                tg.start_soon(researcher, k)
        await sched.generate(
            request(spec.writer, [Message("user", "Findings:\n" + "\n".join(findings))], "writer")
        )
    return time.perf_counter()


class SimEngine:
    """A timing model of ``LlamaCppEngine`` for iterating on the harness in seconds (``--engine sim``).

    Same reuse rules (live context, byte-bounded ``SnapshotStore``, spill before discarding, restore when it
    gains ``restore_min_gain`` tokens, at most ``len - 1`` reused) and cache events; costs are sleeps measured
    on this machine class, scaled by ``scale``. Its numbers are never reported as results.
    """

    def __init__(self, budget_bytes: int, *, scale: float) -> None:
        self._listeners = CacheListeners()
        self._scale = scale
        self._live: tuple[int, ...] = ()
        self._events: list[CacheEvent] = []
        self._store: SnapshotStore[None] = SnapshotStore(budget_bytes, listener=self._events.append)
        self._lock = anyio.Lock()
        self._n = 0

    name = "sim"
    capabilities = Capabilities(prefix_cache="exact", slots=1)

    async def tokenize(self, text: str) -> Sequence[int]:
        return simple_tokenize(text)

    async def render(self, request: GenerationRequest) -> str:
        return request.prompt or ""

    async def aclose(self) -> None:
        return None

    def subscribe_cache_events(self, listener: CacheListener) -> Unsubscribe:
        return self._listeners.subscribe(listener)

    def stream(self, request: GenerationRequest) -> ChunkStream:
        return closing_stream(self._chunks(request))

    async def _chunks(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        c = await self.generate(request)
        yield Chunk(c.text, usage=c.usage, finish_reason="stop")

    async def generate(self, request: GenerationRequest) -> Completion:
        tokens = tuple(simple_tokenize(request.prompt or ""))
        async with self._lock:
            start = time.perf_counter()
            limit = len(tokens) - 1
            live = min(common_prefix_len(self._live, tokens), limit)

            def plan() -> tuple[bool, int, tuple[int, ...] | None]:
                match = self._store.best_match(tokens, touch=False)
                snap = min(match.length, limit) if match is not None else 0
                if match is not None and snap >= live + 8:
                    return True, snap, match.tokens
                return False, live, None

            restore, reuse, target = plan()
            cost = 0.0
            if len(self._live) - (0 if restore else reuse) >= 32 and not self._store.covers(self._live):
                cost += 0.12
                if self._store.insert(self._live, None, len(self._live) * 23_000, keep=target):
                    restore, reuse, target = plan()
            if restore:
                self._store.best_match(tokens, touch=True)
                cost += 0.21
            cost += (len(tokens) - reuse) / 35.0 + request.max_tokens * 0.06
            await anyio.sleep(cost * self._scale)
            self._n += 1
            out = tuple(1_000_000 + self._n * 100 + i for i in range(request.max_tokens))
            self._live = tokens + out
            self._events.append(LiveContext(self._live))
            events = list(self._events)
            self._events.clear()
            for event in events:
                self._listeners.emit(event)
            usage = Usage(
                len(tokens),
                reuse,
                len(tokens) - reuse,
                request.max_tokens,
                0.0,
                0.0,
                time.perf_counter() - start,
            )
            return Completion("x " * request.max_tokens, usage)

    def stats(self) -> None:
        return None


def make_engine(kind: str, budget_bytes: int, threads: int, scale: float = 1.0) -> Engine:
    if kind == "test":
        return TestEngine(response="ok noted", prefix_cache=True)
    if kind == "sim":
        return SimEngine(budget_bytes, scale=scale)
    if kind.startswith("openai:"):
        return engine_from_spec(kind)
    return LlamaCppEngine(n_threads=threads, snapshot_bytes=budget_bytes, n_ctx=2048, seed=0)


@dataclass(frozen=True)
class KVEvents:
    """Where a vLLM server publishes KV cache events (``--kv-events``), for ``--engine openai:...``."""

    endpoint: str
    replay_endpoint: str | None
    topic: str
    data_parallel_size: int


async def run_policy(
    policy: str,
    workload: list[WorkflowSpec],
    *,
    engine_kind: str,
    budget_bytes: int,
    threads: int,
    max_tokens: int,
    ours_options: dict[str, float],
    run_tag: str = "",
    kv_events: KVEvents | None = None,
) -> dict[str, object]:
    """One cold-cache run of the whole workload under ``policy``.

    Embedded engines are created fresh per run. A server keeps its cache between runs, so there every
    prompt of a run starts with ``run_tag`` (unique per run) and no run reuses another's prefixes.
    """
    scale = 0.05 if engine_kind == "sim" else 1.0
    engine = make_engine(engine_kind, budget_bytes, threads, scale)
    await engine.tokenize("warm up")  # loads the model (or probes the server); not timed
    options = ours_options if policy == "ours" else {}
    sched = Scheduler(engine, policy=policy, policy_options=options, gamma=GAMMA)
    nonce = _Nonce(1234)
    finishes: dict[str, float] = {}
    if run_tag:
        workload = [tagged(spec, run_tag) for spec in workload]

    async def all_workflows() -> float:
        start = time.perf_counter()

        async def one(spec: WorkflowSpec) -> None:
            finishes[spec.wid] = await run_workflow(
                sched, spec, max_tokens=max_tokens, prewarm=policy != "fifo", nonce=nonce, scale=scale
            )

        async with anyio.create_task_group() as tg:
            for spec in workload:
                tg.start_soon(one, spec)
        for wid in finishes:
            finishes[wid] -= start
        return (time.perf_counter() - start) / scale

    kv_stats: dict[str, object] | None = None
    if kv_events is None:
        makespan = await all_workflows()
    else:
        async with KVEventSubscriber(
            sched,
            kv_events.endpoint,
            topic=kv_events.topic,
            replay_endpoint=kv_events.replay_endpoint,
            data_parallel_size=kv_events.data_parallel_size,
        ) as subscriber:
            await sched.prepare()
            makespan = await all_workflows()
        kv_stats = dataclasses.asdict(subscriber.stats())
    m = sched.metrics()
    stats = engine.stats() if isinstance(engine, LlamaCppEngine) else None
    await sched.aclose()
    t = m.total
    return {
        "policy": policy,
        "budget_mb": round(budget_bytes / MB, 1),
        "makespan_s": round(makespan, 3),
        "prefill_tokens": t.computed_tokens,
        "prompt_tokens": t.prompt_tokens,
        "cached_tokens": t.cached_tokens,
        "hit_rate": round(t.hit_rate, 4),
        "requests": t.requests,
        "prewarms": sum(1 for r in m.requests if r.kind == "prewarm"),
        "mean_queue_s": round(t.mean_queue_s, 3),
        "max_queue_s": round(t.max_queue_s, 3),
        "mean_ttft_s": round(t.mean_ttft_s, 3),
        "mean_latency_s": round(t.mean_latency_s, 3),
        "pte": round(t.pte, 1),
        "lower_bound_prefill_tokens": m.lower_bound_prefill_tokens,
        "engine_busy_s": round(sum(r.latency_s - r.queue_s for r in m.requests), 3),
        "scheduler_overhead_s": round(m.decisions * m.decision_us_mean * 1e-6, 6),
        "decision_us_mean": round(m.decision_us_mean, 2),
        "prediction_abs_error_tokens": m.prediction_abs_error_tokens,
        "restores": None if stats is None else stats.restores,
        "spills": None if stats is None else stats.spills,
        "workflow_makespan_s": {wid: round(f, 3) for wid, f in sorted(finishes.items())},
        "kv_events": kv_stats,
    }


def tagged(spec: WorkflowSpec, tag: str) -> WorkflowSpec:
    """``spec`` with ``tag`` in front of every agent's preamble (so no prompt shares a prefix across tags)."""

    def retag(layout: PromptLayout) -> PromptLayout:
        return dataclasses.replace(layout, preamble=f"{tag} {layout.preamble}")

    return dataclasses.replace(
        spec, planner=retag(spec.planner), researcher=retag(spec.researcher), writer=retag(spec.writer)
    )


def _ours_options(args: argparse.Namespace) -> dict[str, float]:
    """``ours``'s options from the command line (only those given; the policy's defaults otherwise)."""
    options: dict[str, float] = {}
    if args.age is not None:
        options["age_tokens_per_s"] = args.age
    if args.max_wait is not None:
        options["max_wait_s"] = args.max_wait
    if args.max_slowdown is not None:
        options["max_slowdown"] = args.max_slowdown
    return options


def _ratio(a: object, b: object) -> float:
    assert isinstance(a, int | float) and isinstance(b, int | float)
    return round(a / b, 3) if b else float("nan")


# Run metrics summarized over repetitions (median, min-max) in the tables and the JSON.
_METRICS = (
    "makespan_s",
    "prefill_tokens",
    "prompt_tokens",
    "cached_tokens",
    "hit_rate",
    "requests",
    "prewarms",
    "mean_queue_s",
    "max_queue_s",
    "mean_ttft_s",
    "mean_latency_s",
    "pte",
    "lower_bound_prefill_tokens",
    "engine_busy_s",
    "scheduler_overhead_s",
    "decision_us_mean",
    "prediction_abs_error_tokens",
    "restores",
    "spills",
)


def _medians(runs: list[dict[str, object]]) -> dict[str, object]:
    """Per metric, the median over repetitions (``None`` where the engine does not report it)."""
    out: dict[str, object] = {"policy": runs[0]["policy"], "budget_mb": runs[0]["budget_mb"]}
    for key in _METRICS:
        values = [r[key] for r in runs]
        if any(v is None for v in values):
            out[key] = None
            continue
        out[key] = round(median_of(summarize([float(v) for v in values])), 4)  # type: ignore[arg-type]
    return out


def _pair_ratios(fifo: list[dict[str, object]], ours: list[dict[str, object]]) -> dict[str, list[float]]:
    """Per repetition, the ratios of the fifo and ours runs measured back to back."""
    out: dict[str, list[float]] = {
        "makespan_fifo_over_ours": [],
        "prefill_fifo_over_ours": [],
        "prefill_ours_over_lower_bound": [],
        "max_wait_ours_over_fifo": [],
    }
    for f, o in zip(fifo, ours, strict=True):
        out["makespan_fifo_over_ours"].append(_ratio(f["makespan_s"], o["makespan_s"]))
        out["prefill_fifo_over_ours"].append(_ratio(f["prefill_tokens"], o["prefill_tokens"]))
        out["prefill_ours_over_lower_bound"].append(
            _ratio(o["prefill_tokens"], o["lower_bound_prefill_tokens"])
        )
        out["max_wait_ours_over_fifo"].append(_ratio(o["max_queue_s"], f["max_queue_s"]))
    return out


async def _pair(
    rep: int, label: str, run: Callable[[str, str], Awaitable[dict[str, object]]], console: Console
) -> dict[str, dict[str, object]]:
    """Run fifo and ours back to back, alternating which goes first, so slow drift in load hits both."""
    order = ("fifo", "ours") if rep % 2 == 0 else ("ours", "fifo")
    pair: dict[str, dict[str, object]] = {}
    for policy in order:
        console.print(f"[dim]repetition {rep + 1}: {policy}, {label}...[/dim]")
        result = await run(policy, f"Run {rep}-{policy}-{label}.")
        result["repetition"] = rep
        pair[policy] = result
    return pair


async def main_async(args: argparse.Namespace, machine: Machine) -> dict[str, object]:
    quick = args.quick
    reps = repetitions_of(args)
    n_wf, fanout, turns = (2, 3, 4) if quick else (3, 3, 5)
    shape = (
        {"preamble_words": 60, "system_words": 70} if quick else {"preamble_words": 90, "system_words": 110}
    )
    workload = make_workload(args.seed, n_wf, fanout, turns, **shape)
    server = args.engine.startswith("openai:")
    budgets = [0] if server else [int(b * MB) for b in args.sweep_mb]
    headline = 0 if server else int(args.budget_mb * MB)
    if headline not in budgets:
        budgets.insert(0, headline)
    kv_events = (
        KVEvents(args.kv_events, args.kv_replay, args.kv_topic, args.kv_data_parallel_size)
        if args.kv_events
        else None
    )
    common: dict[str, Any] = {
        "engine_kind": args.engine,
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "ours_options": _ours_options(args),
        "kv_events": kv_events,
    }
    console = Console(width=150)
    unique_wl = make_workload(args.seed + 1, 2, 1 if quick else 2, 2, unique=True, **shape)

    runs: dict[str, dict[str, list[dict[str, object]]]] = {}  # label -> policy -> runs in repetition order
    labels = [f"{b / MB:g} MB" if not server else "server cache" for b in budgets]
    for rep in range(reps):
        for budget, label in zip(budgets, labels, strict=True):

            async def at_budget(policy: str, tag: str, budget: int = budget) -> dict[str, object]:
                return await run_policy(
                    policy, workload, budget_bytes=budget, run_tag=tag if server else "", **common
                )

            pair = await _pair(rep, label, at_budget, console)
            for policy, result in pair.items():
                runs.setdefault(label, {}).setdefault(policy, []).append(result)

        async def no_sharing(policy: str, tag: str) -> dict[str, object]:
            return await run_policy(
                policy, unique_wl, budget_bytes=headline, run_tag=tag if server else "", **common
            )

        pair = await _pair(rep, "no shared prefixes", no_sharing, console)
        for policy, result in pair.items():
            runs.setdefault("no shared prefixes", {}).setdefault(policy, []).append(result)

    sweep: list[dict[str, object]] = []
    for budget, label in zip(budgets, labels, strict=True):
        fifo_runs, ours_runs = runs[label]["fifo"], runs[label]["ours"]
        ratios = {k: summarize(v) for k, v in _pair_ratios(fifo_runs, ours_runs).items()}
        sweep.append(
            {
                "budget_mb": None if server else round(budget / MB, 1),
                "fifo": _medians(fifo_runs),
                "ours": _medians(ours_runs),
                **{k: round(median_of(v), 3) for k, v in ratios.items()},
                "ratio_ranges": {k: [v["min"], v["max"]] for k, v in ratios.items()},
            }
        )
    head = sweep[budgets.index(headline)]
    fifo, ours = head["fifo"], head["ours"]
    head_ratios = _pair_ratios(
        runs[labels[budgets.index(headline)]]["fifo"], runs[labels[budgets.index(headline)]]["ours"]
    )
    ns_fifo, ns_ours = runs["no shared prefixes"]["fifo"], runs["no shared prefixes"]["ours"]
    ns_makespan = paired_ratios(
        [float(o["makespan_s"]) for o in ns_ours],  # type: ignore[arg-type]
        [float(f["makespan_s"]) for f in ns_fifo],  # type: ignore[arg-type]
    )
    ns_overhead = summarize(
        [float(o["scheduler_overhead_s"]) / max(float(o["engine_busy_s"]), 1e-9) for o in ns_ours]  # type: ignore[arg-type]
    )
    every_budget = [s["makespan_fifo_over_ours"] for s in sweep]
    result: dict[str, object] = {
        "bench": "kv_scheduler",
        "engine": args.engine,
        "quick": quick,
        "seed": args.seed,
        "repetitions": reps,
        "machine": machine.finish(),
        "workload": {
            "workflows": n_wf,
            "fanout": fanout,
            "turns": turns,
            "max_tokens": args.max_tokens,
            **shape,
        },
        "ours_policy_options": _ours_options(args) or "policy defaults",
        "headline_budget_mb": head["budget_mb"],
        "gamma": GAMMA,
        "results": {"fifo": fifo, "ours": ours},
        "lower_bound_prefill_tokens": ours["lower_bound_prefill_tokens"],  # type: ignore[index]
        "ratios": {
            "makespan_fifo_over_ours": head["makespan_fifo_over_ours"],
            "prefill_ours_over_lower_bound": head["prefill_ours_over_lower_bound"],
            "prefill_fifo_over_ours": head["prefill_fifo_over_ours"],
            "max_wait_ours_over_fifo": head["max_wait_ours_over_fifo"],
            "min_over_budgets_makespan_fifo_over_ours": min(every_budget),  # type: ignore[type-var]
        },
        "ratio_ranges": head["ratio_ranges"],
        "budget_sweep": sweep,
        "no_shared_prefix": {
            "fifo": _medians(ns_fifo),
            "ours": _medians(ns_ours),
            "makespan_ours_over_fifo": round(median_of(ns_makespan), 3),
            "makespan_ours_over_fifo_range": [ns_makespan["min"], ns_makespan["max"]],
            "scheduler_overhead_fraction_ours": float(f"{median_of(ns_overhead):.3g}"),
        },
        "samples": {
            "ratios_at_headline_budget": head_ratios,
            "runs": [r for label in runs for policy in runs[label] for r in runs[label][policy]],
        },
    }
    _print(console, result)
    return result


def _print(console: Console, result: dict[str, object]) -> None:
    reps = result["repetitions"]
    table = Table(
        title=f"KV-aware scheduling vs FIFO (snapshot budget sweep; cold cache per run; median of {reps} repetitions)"
    )
    for col in (
        "budget MB",
        "policy",
        "makespan s",
        "prefill tok",
        "hit rate",
        "lower bound",
        "mean TTFT s",
        "max wait s",
        "PTE",
        "restores",
    ):
        table.add_column(col, justify="right")
    for s in result["budget_sweep"]:  # type: ignore[attr-defined]
        for policy in ("fifo", "ours"):
            r = s[policy]
            table.add_row(
                str(s["budget_mb"]),
                policy,
                f"{r['makespan_s']:.1f}",
                f"{r['prefill_tokens']:.0f}",
                f"{r['hit_rate']:.2f}",
                f"{r['lower_bound_prefill_tokens']:.0f}",
                f"{r['mean_ttft_s']:.2f}",
                f"{r['max_queue_s']:.1f}",
                f"{r['pte']:.0f}",
                str(r["restores"]),
            )
    console.print(table)
    ratios = Table(title=f"ratios (median of {reps} paired repetitions, min-max)")
    ratios.add_column("metric")
    ratios.add_column("median", justify="right")
    ratios.add_column("min-max", justify="right")
    ranges = result["ratio_ranges"]
    for k, v in result["ratios"].items():  # type: ignore[attr-defined]
        lo_hi = ranges.get(k)  # type: ignore[attr-defined]
        ratios.add_row(k, str(v), "" if lo_hi is None else f"{lo_hi[0]:.3f}-{lo_hi[1]:.3f}")
    for s in result["budget_sweep"]:  # type: ignore[attr-defined]
        for key in ("makespan_fifo_over_ours", "max_wait_ours_over_fifo"):
            lo, hi = s["ratio_ranges"][key]
            ratios.add_row(f"{key} @ {s['budget_mb']} MB", str(s[key]), f"{lo:.3f}-{hi:.3f}")
    ns = result["no_shared_prefix"]
    lo, hi = ns["makespan_ours_over_fifo_range"]  # type: ignore[index]
    ratios.add_row(
        "no shared prefix: makespan ours/fifo", str(ns["makespan_ours_over_fifo"]), f"{lo:.3f}-{hi:.3f}"
    )  # type: ignore[index]
    ratios.add_row("no shared prefix: decision us (ours)", str(ns["ours"]["decision_us_mean"]), "")  # type: ignore[index]
    console.print(ratios)
    machine = result["machine"]
    console.print(
        f"load average at start {machine['load_average_at_start']}, at end {machine['load_average_at_end']} "  # type: ignore[index]
        f"(1/5/15 min) on {machine['cpus']} CPUs"  # type: ignore[index]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workload and sweep")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--seed", type=int, default=7)
    add_repetition_args(parser, quick=3, full=5)
    parser.add_argument(
        "--engine",
        default="llamacpp",
        help="'llamacpp' (default), 'openai:<base_url>#<model>' (a server, e.g. vLLM; one run per policy on "
        "its own cache), or 'sim'/'test' (a timing model / TestEngine: both only check the harness)",
    )
    parser.add_argument("--budget-mb", type=float, default=None, help="headline snapshot budget")
    parser.add_argument("--sweep-mb", type=lambda s: [float(x) for x in s.split(",")], default=None)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1 is best on a busy box)")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument(
        "--age", type=float, default=None, help="ours: cached tokens one second of waiting is worth"
    )
    parser.add_argument(
        "--max-wait", type=float, default=None, help="ours: hard bound on any request's wait (s)"
    )
    parser.add_argument(
        "--max-slowdown",
        type=float,
        default=None,
        help="ours: wait bound relative to FIFO's longest, in dispatches ('inf': off)",
    )
    parser.add_argument(
        "--kv-events", help="with --engine openai:...: vLLM's KV event endpoint, e.g. tcp://127.0.0.1:5557"
    )
    parser.add_argument("--kv-replay", help="vLLM's KV event replay endpoint, e.g. tcp://127.0.0.1:5558")
    parser.add_argument("--kv-topic", default="", help="vLLM's KV event topic")
    parser.add_argument(
        "--kv-data-parallel-size", type=int, default=1, help="data-parallel ranks publishing KV events"
    )
    args = parser.parse_args()
    if args.engine not in ("llamacpp", "sim", "test") and not args.engine.startswith("openai:"):
        parser.error(
            f"--engine must be llamacpp, sim, test or openai:<base_url>#<model>, got {args.engine!r}"
        )
    if args.kv_events and not args.engine.startswith("openai:"):
        parser.error("--kv-events needs --engine openai:<base_url>#<model> (a vLLM server)")
    if args.budget_mb is None:
        args.budget_mb = 16.0 if args.quick else 32.0
    if args.sweep_mb is None:
        args.sweep_mb = [0.0, 16.0, 512.0] if args.quick else [0.0, 16.0, 32.0, 64.0, 512.0]
    machine = Machine.now(engine=args.engine, llama_threads=args.threads)
    machine.print(Console(width=150))
    result = anyio.run(main_async, args, machine)
    write_json(args.json, result)


if __name__ == "__main__":
    main()

"""Prefix-affinity routing vs round-robin over embedded-engine replicas running as Ray actors.

Each replica is a Ray actor holding its own ``LlamaCppEngine`` (SmolLM2-135M on CPU, one thread, with its KV
snapshot store), behind a ``PrefixRouter``. Workload (fixed seed): ``G`` groups, each a shared document of a few
hundred tokens, asked ``Q`` short questions each; the questions arrive interleaved across groups (q1 of every
group in a seeded random order, then q2 ...), with at most ``2 x replicas`` requests in flight. The same workload runs under each routing
policy on fresh actors (cold caches, the model loaded and warmed before the clock starts):

- ``affinity``: the radix-tree prefix-affinity router with load balancing;
- ``round_robin``: the baseline;
- ``least_loaded``: fewest outstanding requests (a second baseline).

Reported per policy: makespan, prompt tokens prefilled (computed) and reused (cached) as the engines report them,
requests per replica; the ratios round-robin / affinity for prefill tokens and makespan; and the lower bound on
prefill (tokens in the union trie of all prompts: each distinct prefix token computed once). The policies run
``--repetitions`` times (3 with ``--quick``), in a rotated order each time so load drift hits all of them:
every figure is the median over the repetitions, ratios are medians of per-repetition ratios, and the JSON
keeps the min-max and every run. Usage::

    python bench/affinity_routing.py [--quick] [--json PATH] [--replicas N]
"""

from __future__ import annotations

import argparse
import functools
import random
import time
from pathlib import Path

import anyio
from _harness import Machine, add_repetition_args, combine, ranges, repetitions_of, summarize, write_json
from rich.console import Console
from rich.table import Table

from agentflow.engines import GenerationRequest, LlamaCppEngine, Message, RayEngine
from agentflow.scheduler import PrefixRouter, RadixTree, RoutingPolicy

POLICIES: tuple[RoutingPolicy, ...] = ("affinity", "round_robin", "least_loaded")

_WORDS = [
    "invoice",
    "ledger",
    "audit",
    "contract",
    "clause",
    "supplier",
    "shipment",
    "warehouse",
    "carrier",
    "refund",
    "ticket",
    "escalation",
    "policy",
    "review",
    "metric",
    "trend",
    "forecast",
    "anomaly",
    "region",
    "owner",
    "status",
    "deadline",
    "priority",
    "budget",
    "schedule",
    "report",
    "evidence",
    "record",
    "archive",
    "index",
    "query",
    "table",
    "column",
    "filter",
    "route",
    "delay",
    "compliance",
    "customer",
    "order",
    "risk",
    "summary",
    "draft",
]


def _document(rng: random.Random, words: int) -> str:
    out: list[str] = []
    while len(out) < words:
        sentence = [rng.choice(_WORDS) for _ in range(rng.randint(6, 12))]
        out.extend((" ".join(sentence).capitalize() + ".").split())
    return " ".join(out[:words])


def workload(seed: int, groups: int, questions: int, doc_words: int) -> list[GenerationRequest]:
    """Requests in arrival order: rounds of one question per group (``q`` of every group, then ``q + 1``...),
    each round in a seeded random group order, so no fixed stride lines groups up with replicas."""
    rng = random.Random(seed)
    docs = [f"Case file {g}. " + _document(rng, doc_words) for g in range(groups)]
    asks = [
        [f"Question {q}: which {rng.choice(_WORDS)} matters most?" for q in range(questions)] for _ in docs
    ]
    order = []
    for q in range(questions):
        round_groups = list(range(groups))
        rng.shuffle(round_groups)
        order.extend((g, q) for g in round_groups)
    return [
        GenerationRequest(
            messages=(
                Message("system", f"You answer questions about this case file in one word.\n{docs[g]}"),
                Message("user", asks[g][q]),
            ),
            max_tokens=4,
            seed=seed,
        )
        for g, q in order
    ]


def _engine_factory(threads: int) -> functools.partial[LlamaCppEngine]:
    return functools.partial(LlamaCppEngine, n_ctx=1024, n_threads=threads, seed=0)


async def run_policy(
    policy: RoutingPolicy,
    requests: list[GenerationRequest],
    tokenizer: LlamaCppEngine,
    replicas: int,
    threads: int,
    in_flight: int,
) -> dict[str, object]:
    """Run the workload on fresh actors under one policy; return its measurements."""
    engines = [
        await RayEngine.start(_engine_factory(threads), options={"num_cpus": 1}, name=f"replica{i}")
        for i in range(replicas)
    ]
    warm = GenerationRequest(prompt="Hi", max_tokens=1)
    for e in engines:
        await e.generate(warm)  # load the model before the clock starts
    router = PrefixRouter(engines, policy=policy, tokenizer=tokenizer, close_replicas=False)
    limiter = anyio.CapacityLimiter(in_flight)

    async def one(request: GenerationRequest) -> None:
        async with limiter:
            await router.generate(request)

    try:
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for request in requests:
                tg.start_soon(one, request)
                await anyio.sleep(0)  # keep arrival order: each task takes its limiter slot in turn
        makespan = time.perf_counter() - start
    finally:
        for e in engines:
            await e.aclose()
    stats = router.stats()
    computed = sum(s.usage.computed_tokens for s in stats)
    cached = sum(s.usage.cached_tokens for s in stats)
    prompt = sum(s.usage.prompt_tokens for s in stats)
    return {
        "policy": policy,
        "makespan_s": makespan,
        "prompt_tokens": prompt,
        "computed_tokens": computed,
        "cached_tokens": cached,
        "hit_rate": cached / prompt if prompt else 0.0,
        "requests_per_replica": [s.requests for s in stats],
        "reasons": [s.reasons for s in stats],
    }


async def lower_bound(requests: list[GenerationRequest], tokenizer: LlamaCppEngine) -> int:
    """Tokens in the union trie of all prompts (every distinct prefix token prefilled once)."""
    tree = RadixTree()
    for r in requests:
        tree.insert(await tokenizer.tokenize(await tokenizer.render(r)))
    return tree.total_tokens


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    import ray

    groups, questions, doc_words = (4, 3, 80) if args.quick else (args.groups, args.questions, 120)
    requests = workload(args.seed, groups, questions, doc_words)
    ray.init(num_cpus=args.replicas, include_dashboard=False, log_to_driver=False)
    tokenizer = LlamaCppEngine(n_ctx=1024, n_threads=1)
    reps = repetitions_of(args)
    per_rep: list[dict[str, dict[str, object]]] = []
    try:
        bound = await lower_bound(requests, tokenizer)
        for rep in range(reps):
            order = POLICIES[rep % len(POLICIES) :] + POLICIES[: rep % len(POLICIES)]
            done: dict[str, dict[str, object]] = {}
            for policy in order:
                done[policy] = await run_policy(
                    policy, requests, tokenizer, args.replicas, args.threads, in_flight=2 * args.replicas
                )
            per_rep.append({policy: done[policy] for policy in POLICIES})
    finally:
        await tokenizer.aclose()
        ray.shutdown()
    ratio_samples: dict[str, list[float]] = {
        "prefill_round_robin_over_affinity": [],
        "makespan_round_robin_over_affinity": [],
        "prefill_affinity_over_lower_bound": [],
    }
    for by in per_rep:
        aff, rr = by["affinity"], by["round_robin"]
        ratio_samples["prefill_round_robin_over_affinity"].append(
            _ratio(rr["computed_tokens"], aff["computed_tokens"])
        )
        ratio_samples["makespan_round_robin_over_affinity"].append(
            _ratio(rr["makespan_s"], aff["makespan_s"])
        )
        ratio_samples["prefill_affinity_over_lower_bound"].append(_ratio(aff["computed_tokens"], bound))
    medians = combine(per_rep)
    spans = ranges(per_rep)
    assert isinstance(medians, dict)
    ratio_stats = {k: summarize(v) for k, v in ratio_samples.items()}
    return {
        "bench": "affinity_routing",
        "quick": args.quick,
        "seed": args.seed,
        "config": {
            "replicas": args.replicas,
            "groups": groups,
            "questions_per_group": questions,
            "document_words": doc_words,
            "requests": len(requests),
            "in_flight": 2 * args.replicas,
            "llama_threads_per_replica": args.threads,
            "max_tokens": 4,
        },
        "repetitions": reps,
        "union_trie_tokens": bound,
        "runs": [medians[policy] for policy in POLICIES],
        "ratios": {k: v["median"] for k, v in ratio_stats.items()},
        "ratio_stats": ratio_stats,
        "ranges": spans,
        "samples": per_rep,
    }


def _ratio(a: object, b: object) -> float:
    assert isinstance(a, int | float) and isinstance(b, int | float)
    return float(a) / float(b) if b else float("nan")


def render(result: dict[str, object], console: Console) -> None:
    """Print the runs and ratios as tables."""
    table = Table(
        title=f"prefix-affinity vs round-robin routing ({result['config']}); median of {result['repetitions']}"
    )
    for col in ("policy", "makespan s", "prefill (computed)", "reused (cached)", "hit rate", "per replica"):
        table.add_column(col, justify="right")
    runs = result["runs"]
    assert isinstance(runs, list)
    for r in runs:
        table.add_row(
            str(r["policy"]),
            f"{r['makespan_s']:.2f}",
            str(r["computed_tokens"]),
            str(r["cached_tokens"]),
            f"{r['hit_rate']:.1%}",
            str(r["requests_per_replica"]),
        )
    console.print(table)
    ratios = Table(title=f"ratios (union-trie lower bound: {result['union_trie_tokens']} tokens)")
    ratios.add_column("ratio")
    ratios.add_column("median (min-max)", justify="right")
    rs = result["ratio_stats"]
    assert isinstance(rs, dict)
    for k, v in rs.items():
        ratios.add_row(k, f"{v['median']:.2f} ({v['min']:.2f}-{v['max']:.2f})")
    console.print(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workload (CI smoke run)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--groups", type=int, default=6)
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads per replica")
    add_repetition_args(parser, quick=3, full=5)
    args = parser.parse_args()
    console = Console()
    machine = Machine.now()
    machine.print(console)
    result = anyio.run(main_async, args)
    result["machine"] = machine.finish()
    render(result, console)
    write_json(args.json, result)


if __name__ == "__main__":
    main()

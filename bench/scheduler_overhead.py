"""Scheduling overhead: microseconds per decision with 1,000 queued requests.

Two measurements, each for ``fifo`` (the baseline) and ``ours``:

* ``policy``: the ready queue alone. 1,000 requests are queued; each decision is ``peek`` + ``take`` (timed),
  then one new request arrives (untimed) so the queue stays at 1,000; every 4th decision also re-ranks a
  queued request (timed), as the cache model does when a prefix it waits on becomes cached.
* ``scheduler``: the whole ``Scheduler`` dispatch path (policy, admission, cache-model ``acquire`` with
  watched-match updates of the queued siblings) on an engine that answers instantly. 1,000 requests from
  50 agents (300-token shared system prompts, 40-token private tails) are queued behind a held first
  request, then drained; the scheduler's own per-decision timer is reported.

Both are repeated (``--repetitions``, 3 with ``--quick``; fifo and ours alternate which goes first): every
figure is the median over the repetitions, with the min-max and every sample in the JSON.

Usage::

    python bench/scheduler_overhead.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

import anyio
from _harness import Machine, add_repetition_args, combine, ranges, repetitions_of, write_json
from rich.console import Console
from rich.table import Table

from agentflow.engines import (
    Capabilities,
    Chunk,
    ChunkStream,
    Completion,
    GenerationRequest,
    RequestHints,
    Usage,
    closing_stream,
)
from agentflow.scheduler import QueuedRequest, Scheduler, make_policy


def bench_policy(name: str, queued: int, decisions: int, seed: int) -> float:
    """Mean microseconds per decision of the bare policy with ``queued`` requests waiting."""
    rng = random.Random(seed)
    policy = make_policy(name)
    items: list[QueuedRequest] = []

    def arrive(seq: int, now: float) -> None:
        item = QueuedRequest(
            seq, now, 340, rng.randrange(0, 340), steps=rng.randrange(0, 4), group=f"g{rng.randrange(200)}"
        )
        items.append(item)
        policy.push(item)

    for seq in range(queued):
        arrive(seq, seq * 1e-4)
    now = queued * 1e-4
    spent = 0.0
    clock = time.perf_counter
    for d in range(decisions):
        now += 1e-4
        other = items[rng.randrange(len(items))]
        other.cached = min(other.n_tokens - 1, other.cached + 16)
        started = clock()
        if d % 4 == 0:
            policy.update(other)
        item = policy.peek(now)
        assert item is not None
        policy.take(item)
        spent += clock() - started
        arrive(queued + d, now)
    return spent * 1e6 / decisions


class InstantEngine:
    """An engine that answers at once; prompts are space-separated token ids. The first request waits on
    ``gate`` so the queue can fill."""

    def __init__(self) -> None:
        self.gate = anyio.Event()
        self._first = True

    @property
    def name(self) -> str:
        return "instant"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(prefix_cache="exact", slots=1)

    async def tokenize(self, text: str) -> Sequence[int]:
        return [int(t) for t in text.split()]

    async def render(self, request: GenerationRequest) -> str:
        return request.prompt or ""

    async def generate(self, request: GenerationRequest) -> Completion:
        if self._first:
            self._first = False
            await self.gate.wait()
        n = len((request.prompt or "").split())
        return Completion("ok", Usage(n, 0, n, 1))

    def stream(self, request: GenerationRequest) -> ChunkStream:
        return closing_stream(self._chunks(request))

    async def _chunks(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        completion = await self.generate(request)
        yield Chunk(completion.text, usage=completion.usage, finish_reason="stop")

    async def aclose(self) -> None:
        return None


async def bench_scheduler(name: str, queued: int, seed: int) -> dict[str, float]:
    """Per-decision cost of the full dispatch path while draining ``queued`` requests."""
    rng = random.Random(seed)
    systems = [[rng.randrange(50_000) for _ in range(300)] for _ in range(50)]
    prompts = [
        " ".join(map(str, systems[i % 50] + [rng.randrange(50_000) for _ in range(40)]))
        for i in range(queued)
    ]
    engine = InstantEngine()
    sched = Scheduler(engine, policy=name, cache_budget_tokens=None)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sched.generate, GenerationRequest(prompt="1 2 3"))
        await anyio.wait_all_tasks_blocked()
        for i, p in enumerate(prompts):
            hints = RequestHints(workflow_id=f"w{i % 10}", agent=f"a{i % 50}", fanout_group=f"f{i // 5}")
            tg.start_soon(sched.generate, GenerationRequest(prompt=p, max_tokens=1, hints=hints))
        await anyio.wait_all_tasks_blocked()
        assert sched.queued == queued
        start = time.perf_counter()
        engine.gate.set()
    wall = time.perf_counter() - start
    m = sched.metrics()
    return {
        "decision_us_mean": round(m.decision_us_mean, 2),
        "decisions": m.decisions,
        "drain_wall_us_per_request": round(wall * 1e6 / queued, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--seed", type=int, default=3)
    add_repetition_args(parser, quick=3, full=5)
    args = parser.parse_args()
    machine = Machine.now()
    machine.print(Console(width=120))
    queued = 1000
    decisions = 5_000 if args.quick else 50_000
    runs: list[dict[str, dict[str, float]]] = []
    for rep in range(repetitions_of(args)):
        run: dict[str, dict[str, float]] = {}
        for name in ("fifo", "ours") if rep % 2 == 0 else ("ours", "fifo"):
            policy_us = bench_policy(name, queued, decisions, args.seed)
            sched = anyio.run(bench_scheduler, name, queued, args.seed)
            run[name] = {
                "policy_decision_us": round(policy_us, 2),
                **{f"scheduler_{k}": v for k, v in sched.items()},
            }
        runs.append({name: run[name] for name in ("fifo", "ours")})
    results = combine(runs)
    spans = ranges(runs)
    assert isinstance(results, dict) and isinstance(spans, dict)
    out = {
        "bench": "scheduler_overhead",
        "quick": args.quick,
        "seed": args.seed,
        "queued": queued,
        "policy_decisions": decisions,
        "machine": machine.finish(),
        "repetitions": len(runs),
        "results": results,
        "ranges": spans,
        "samples": runs,
        "ratios": {
            "ours_over_fifo_policy": round(
                results["ours"]["policy_decision_us"] / results["fifo"]["policy_decision_us"], 2
            ),
            "ours_over_fifo_scheduler": round(
                results["ours"]["scheduler_decision_us_mean"] / results["fifo"]["scheduler_decision_us_mean"],
                2,
            ),
        },
        "goal_us": 100,
    }
    table = Table(
        title=f"scheduling overhead with {queued} queued requests (us per decision; median of {len(runs)}, min-max)"
    )
    for col in ("policy", "policy only", "scheduler dispatch", "drain wall / request"):
        table.add_column(col, justify="right")
    for name, r in results.items():
        cells = [
            f"{r[k]:.1f} ({spans[name][k][0]:.1f}-{spans[name][k][1]:.1f})"
            for k in (
                "policy_decision_us",
                "scheduler_decision_us_mean",
                "scheduler_drain_wall_us_per_request",
            )
        ]
        table.add_row(name, *cells)
    Console(width=120).print(table)
    write_json(args.json, out)


if __name__ == "__main__":
    main()

"""LLMCompiler vs ReAct on the same embedded engine and tools.

Two workloads, both with tool latency drawn from a seeded lognormal around 0.6 s:

- movie: Movie-Recommendation questions from ``../shared/data/llmcompiler`` (the gold plan is one
  independent ``search(title)`` per listed movie, eight per question);
- parallelqa: ParallelQA-shaped questions (compare 2-5 quantities, then compute) over a local fact table,
  with ``lookup`` and ``math`` tools.

Both agents get the same few-shot guidance for the domain, as in the LLMCompiler paper. Two modes:

- free: the model plans on its own (with the embedded 135M model its plans are often incomplete, so
  this mostly shows what a tiny model does; report it as such);
- gold: the same real engine, but every LLM turn is decoded under a grammar that only admits the gold
  answer for that turn (the gold plan for the planner, the next gold call for ReAct, the gold answer for
  the joiner), with a logit bias towards the gold text's canonical tokens. The model still prefills and
  decodes every token for real, so latency, tokens and PTE are real; only the choice of tokens is fixed. This measures what the orchestration buys when the model
  plans correctly, which is what the paper's speedups are about.

Before each workload, each agent answers one unmeasured question, so that both agents' fixed prompt
prefixes (system prompt, tool list, guide) are in the engine's cache, as in a running service. The llama.cpp
engine uses half the CPUs (``--threads``; at most 8): with every CPU it spins on thread barriers whenever
anything else runs, and one question's decoding then takes several times as long as the next one's (on a
shared 2-core machine, 2 threads made one compiler question take 50 s; 1 thread, 7.6-9.6 s for all eight).

Reports per workload and mode the mean end-to-end latency of each agent and the speedup (ReAct /
LLMCompiler), the seconds spent in LLM calls, LLM calls, tokens, PTE (prefill token equivalents, gamma from
SmolLM2-135M's shape) and tool calls.

Each question is one paired repetition: both agents answer it back to back (which goes first alternates), so
a load spike on a shared machine hits one pair, not one agent. The speedup is the median of the per-question
speedups (min-max beside it; the ratio of mean latencies is kept too), over 8 questions per workload with
``--quick`` (16 by default): with 2, one run gave 6.64x and the next 1.46x. The JSON also holds a split-half
check (the speedup on the even and on the odd questions) and, per question, where its time went: LLM
seconds, decoded and prefilled tokens, and the tool latencies drawn (their sum is what ReAct waits, their
maximum what the compiler's parallel calls wait). Questions of the same gold plan shape still differ: the
titles or entities differ in length, so the plan and every observation decode and prefill different token
counts; each question draws its own tool latencies; and on a shared machine the load moves under each run. The speedup is bounded by how much of ReAct's time is tool waiting:
where the LLM's time dominates (a 135M model decoding on two CPU cores), both agents spend it alike;
``--tool-median`` shows how the speedup grows as tools get slower relative to the LLM.

    python bench/compiler_vs_react.py [--quick] [--json PATH] [--engine SPEC] [--data DIR] [--mode gold|free|both]
                                      [--threads N] [--tool-median SECONDS]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from _harness import Machine, span, summarize, write_json
from rich.console import Console
from rich.table import Table

from agentflow import Err, run
from agentflow.agents import llm_compiler, react
from agentflow.dsl import Event
from agentflow.engines import (
    Chunk,
    ChunkStream,
    Completion,
    Engine,
    GenerationRequest,
    WrapperEngine,
    engine_from_spec,
)
from agentflow.executors import ToolRegistry
from agentflow.plans.builtin_tools import calculator
from agentflow.scheduler import gamma_from_shape, pte

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "llmcompiler"
END_TOKEN = "<|im_end|>"  # SmolLM2's end of turn (a special token: engine.tokenize parses it)
GAMMA = gamma_from_shape(n_params=135e6, n_layers=30, n_kv_heads=3, head_dim=64)


class Latency:
    """Seeded lognormal tool latency (median ``median_s``), one stream per (workload, question)."""

    def __init__(self, seed: int, median_s: float = 0.6, sigma: float = 0.35) -> None:
        self.rng = random.Random(seed)
        self.mu = math.log(median_s)
        self.sigma = sigma
        self.cap = 5.0 * median_s
        self.draws: list[float] = []  # every latency drawn, in order (for the per-question breakdown)

    def draw(self) -> float:
        value = min(self.cap, self.rng.lognormvariate(self.mu, self.sigma))
        self.draws.append(value)
        return value


def movie_tools(latency: Latency) -> ToolRegistry:
    registry = ToolRegistry()

    async def search(title: str) -> str:
        """Look up one movie by its title and return its genre and year.

        Args:
            title: The title of one movie.
        """
        await anyio.sleep(latency.draw())
        digest = hashlib.sha256(title.strip().lower().encode()).digest()
        genres = ["action", "thriller", "drama", "comedy", "science fiction", "animation"]
        return f"{title.strip()}: {genres[digest[0] % len(genres)]} film from {1960 + digest[1] % 60}."

    registry.register(search)
    return registry


MOVIE_GUIDE = """Example.
Question: Find a movie similar to Heat, Alien
Options:
Fargo
Up
Plan: [{"tool": "search", "args": {"title": "Heat"}}, {"tool": "search", "args": {"title": "Alien"}},
{"tool": "search", "args": {"title": "Fargo"}}, {"tool": "search", "args": {"title": "Up"}}]
Search every movie of the question and every option separately, one title per call."""

FACTS: dict[str, dict[str, float]] = {
    "height_m": {
        "Mount Everest": 8849,
        "K2": 8611,
        "Kangchenjunga": 8586,
        "Lhotse": 8516,
        "Makalu": 8485,
        "Cho Oyu": 8188,
        "Denali": 6190,
        "Mont Blanc": 4806,
        "Kilimanjaro": 5895,
        "Aconcagua": 6961,
    },
    "population_millions": {
        "Tokyo": 37.1,
        "Delhi": 33.8,
        "Shanghai": 29.9,
        "Sao Paulo": 22.8,
        "Mexico City": 22.5,
        "Cairo": 22.6,
        "Mumbai": 21.7,
        "Beijing": 21.8,
        "Dhaka": 23.9,
        "Osaka": 19.0,
    },
    "length_km": {
        "Nile": 6650,
        "Amazon": 6400,
        "Yangtze": 6300,
        "Mississippi": 6275,
        "Yenisei": 5539,
        "Yellow River": 5464,
        "Ob": 5410,
        "Parana": 4880,
        "Congo": 4700,
        "Amur": 4444,
    },
}
UNITS = {"height_m": "metres tall", "population_millions": "million people", "length_km": "km long"}


def parallelqa_questions(n: int, seed: int) -> list[dict[str, Any]]:
    """ParallelQA-shaped questions: 2-5 independent lookups, then arithmetic on them."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        attr = rng.choice(sorted(FACTS))
        width = 2 + i % 4
        names = rng.sample(sorted(FACTS[attr]), width)
        values = [FACTS[attr][name] for name in names]
        listing = ", ".join(names[:-1]) + f" and {names[-1]}"
        question = (
            f"What is the total {attr.split('_')[0]} of {listing} combined, in {UNITS[attr].split()[0]}?"
        )
        out.append(
            {
                "question": question,
                "answer": round(sum(values), 2),
                "branch": width,
                "names": names,
                "attr": attr,
            }
        )
    return out


def parallelqa_tools(latency: Latency) -> ToolRegistry:
    registry = ToolRegistry()

    async def lookup(entity: str) -> str:
        """Look up the key fact (height, population or length) of one mountain, city or river.

        Args:
            entity: The name of one mountain, city or river.
        """
        await anyio.sleep(latency.draw())
        for attr, table in FACTS.items():
            for name, value in table.items():
                if name.lower() == entity.strip().lower():
                    return f"{name} is {value:g} {UNITS[attr]}."
        return f"No fact found for {entity!r}."

    async def math(expression: str) -> float:
        """Evaluate an arithmetic expression with + - * / and parentheses.

        Args:
            expression: The expression, e.g. "8849 + 8611".
        """
        await anyio.sleep(latency.draw() / 4)
        return calculator(expression)

    registry.register(lookup)
    registry.register(math)
    return registry


PQA_GUIDE = """Example.
Question: What is the total length of the Nile and Amazon combined, in km?
Plan: [{"tool": "lookup", "args": {"entity": "Nile"}}, {"tool": "lookup", "args": {"entity": "Amazon"}},
{"tool": "math", "args": {"expression": "$1 + $2"}}]
Look up every entity separately, one per call, then combine the results with math."""


class GoldConstrained(WrapperEngine):
    """An engine wrapper that decodes each turn under a grammar admitting only the gold answer."""

    def __init__(
        self, inner: Engine, plan: list[dict[str, Any]], steps: list[dict[str, Any]], answer: str
    ) -> None:
        super().__init__(inner)
        self.plan = plan  # the compiler's gold plan (items without ids)
        self.steps = steps  # ReAct's gold actions, one per turn, the last a final answer
        self.answer = answer

    @property
    def name(self) -> str:
        return f"gold({self.wrapped.name})"

    def _gold(self, request: GenerationRequest) -> object | None:
        """The gold answer for this turn, or None for an unconstrained request."""
        schema = request.json_schema
        if schema is None:
            return None
        props = schema.get("properties")
        if schema.get("type") == "array":
            return self.plan
        if isinstance(props, dict) and "thought" in props:
            turn = sum(
                1 for m in request.messages or () if m.role == "user" and m.content.startswith("Observation")
            )
            return {"thought": "Next step.", "action": self.steps[min(turn, len(self.steps) - 1)]}
        return {"action": "finish", "answer": self.answer}

    async def _constrain(self, request: GenerationRequest) -> GenerationRequest:
        """Decode under a grammar admitting only the gold text (``json.dumps`` of the gold answer, as
        llama.cpp writes a ``const``), with a logit bias towards the gold text's own tokens and the end
        token, so the engine decodes the canonical tokenization (as a model that meant this answer would),
        not whatever split of the same characters the model ranks highest."""
        gold = self._gold(request)
        if gold is None:
            return request
        bos = len(await self.wrapped.tokenize(""))
        tokens = list(await self.wrapped.tokenize(json.dumps(gold)))[bos:]
        end = list(await self.wrapped.tokenize(END_TOKEN))[bos:]
        bias = {t: 100.0 for t in [*tokens, *end]}
        return dataclasses.replace(request, json_schema={"const": gold}, logit_bias=bias)

    async def generate(self, request: GenerationRequest) -> Completion:
        return await self.wrapped.generate(await self._constrain(request))

    def stream(self, request: GenerationRequest) -> ChunkStream:
        @asynccontextmanager
        async def constrained() -> AsyncIterator[AsyncIterator[Chunk]]:
            async with self.wrapped.stream(await self._constrain(request)) as chunks:
                yield chunks

        return constrained()

    async def aclose(self) -> None:
        """The inner engine is shared across questions; its owner closes it."""


def movie_gold(question: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    head, _, opts = question.partition("\nOptions:\n")
    titles = head.replace("Find a movie similar to ", "").split(", ") + [
        o for o in opts.split("\n") if o.strip()
    ]
    calls = [{"tool": "search", "args": {"title": t.strip()}} for t in titles]
    return calls, calls


def pqa_gold(names: list[str], attr: str, answer: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    lookups = [{"tool": "lookup", "args": {"entity": n}} for n in names]
    refs = " + ".join(f"${i}" for i in range(1, len(names) + 1))
    values = " + ".join(f"{FACTS[attr][n]:g}" for n in names)
    plan = [*lookups, {"tool": "math", "args": {"expression": refs}}]
    steps = [*lookups, {"tool": "math", "args": {"expression": values}}]
    return plan, steps


def _usage(trace: Sequence[Event]) -> dict[str, float]:
    calls = [e.data for e in trace if e.kind == "llm.call"]

    def total(key: str) -> int:
        return sum(int(c.get(key, 0)) for c in calls)  # type: ignore[call-overload]

    return {
        "llm_calls": len(calls),
        "prompt_tokens": total("prompt_tokens"),
        "computed_tokens": total("computed_tokens"),
        "completion_tokens": total("completion_tokens"),
        "pte": sum(
            pte(int(c["computed_tokens"]), int(c["prompt_tokens"]), int(c["completion_tokens"]), GAMMA)  # type: ignore[call-overload]
            for c in calls
        ),
        "tool_calls": sum(1 for e in trace if e.kind == "tool.call"),
        "llm_s": sum(float(c.get("total_s", 0.0)) for c in calls),  # type: ignore[arg-type]
    }


async def run_agent(
    kind: str,
    workload: str,
    q: dict[str, Any],
    engine: Engine,
    seed: int,
    max_steps: int,
    mode: str,
    tool_median_s: float = 0.6,
) -> dict[str, Any]:
    question = q["question"]
    if mode == "gold":
        plan, steps = (
            movie_gold(question) if workload == "movie" else pqa_gold(q["names"], q["attr"], q["answer"])
        )
        final = {"final_answer": str(q["answer"])}
        engine = GoldConstrained(engine, plan, [*steps, final], str(q["answer"]))
    latency = Latency(seed, median_s=tool_median_s)
    tools = movie_tools(latency) if workload == "movie" else parallelqa_tools(latency)
    guide = MOVIE_GUIDE if workload == "movie" else PQA_GUIDE
    agent = (
        llm_compiler(
            question, tools, max_replans=0, system=guide, planner_max_tokens=320, joiner_max_tokens=96
        )
        if kind == "compiler"
        else react(question, tools, max_steps=max_steps, system=guide, max_tokens=96)
    )
    t0 = time.perf_counter()
    out = await run(agent, engine=engine)
    seconds = time.perf_counter() - t0
    record: dict[str, Any] = {"seconds": seconds, "ok": not isinstance(out, Err), **_usage(out.trace)}
    record["tool_latency_sum_s"] = sum(latency.draws)
    record["tool_latency_max_s"] = max(latency.draws, default=0.0)
    if isinstance(out, Err):
        record["error"] = str(out.error)[:300]
        record["answer"] = ""
    else:
        record["answer"] = str(getattr(out.value, "answer", ""))
    return record


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(args.data)
    movies = json.loads((data_dir / "movie_recommendations_formatted.json").read_text())
    movies = [q for q in movies if len(movie_gold(q["question"])[0]) == 8]  # the gold plan: eight searches
    n = args.questions if args.questions is not None else (8 if args.quick else 16)
    rng = random.Random(args.seed)
    workloads = {
        "movie": [{"question": q["question"], "answer": q["answer"]} for q in rng.sample(movies, n)],
        "parallelqa": parallelqa_questions(n, args.seed),
    }
    warmups = {
        "movie": {
            "question": rng.choice(
                [q for q in movies if q["question"] not in {w["question"] for w in workloads["movie"]}]
            )["question"],
            "answer": "warm-up",
        },
        "parallelqa": parallelqa_questions(1, args.seed + 1)[0],
    }
    modes = ["gold", "free"] if args.mode == "both" else [args.mode]
    engine: Engine
    if args.engine.split(":", 1)[0].strip().lower() == "llamacpp" and args.threads:
        from agentflow.engines import LlamaCppEngine

        path = args.engine.partition(":")[2].strip()
        engine = LlamaCppEngine(None if path in ("", "default") else path, n_threads=args.threads)
    else:
        engine = engine_from_spec(args.engine)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for mode in modes:
            for workload, questions in workloads.items():
                key = f"{mode}/{workload}"
                results[key] = {"compiler": [], "react": []}
                # Steady state of a service: each agent's fixed prompt prefix (system prompt, tool list,
                # guide) is already in the engine's cache, for both agents alike. One unmeasured question
                # per agent puts it there.
                for kind in ("compiler", "react"):
                    await run_agent(kind, workload, warmups[workload], engine, 1, 12, mode, args.tool_median)
                for qi, q in enumerate(questions):
                    for kind in ("compiler", "react") if qi % 2 == 0 else ("react", "compiler"):
                        rec = await run_agent(
                            kind, workload, q, engine, args.seed * 1000 + qi, 12, mode, args.tool_median
                        )
                        rec["expected"] = q["answer"]
                        results[key][kind].append(rec)
                        print(
                            f"{key:18} q{qi} {kind:8} {rec['seconds']:6.1f}s llm={rec['llm_calls']} "
                            f"tools={rec['tool_calls']} ok={rec['ok']}",
                            flush=True,
                        )
    finally:
        await engine.aclose()

    def mean(workload: str, kind: str, key: str) -> float:
        return statistics.fmean(float(r[key]) for r in results[workload][kind])

    def mean_ratio(workload: str, indices: range) -> float:
        react_s = [float(results[workload]["react"][i]["seconds"]) for i in indices]
        compiler_s = [float(results[workload]["compiler"][i]["seconds"]) for i in indices]
        return sum(react_s) / sum(compiler_s)

    summary: dict[str, Any] = {
        "ratios": {},
        "llm_calls": {},
        "tokens": {},
        "pte": {},
        "latency_s": {},
        "tool_calls": {},
        "llm_s": {},
        "speedup_stats": {},
        "split_half": {},
    }
    for workload in results:
        react_runs, compiler_runs = results[workload]["react"], results[workload]["compiler"]
        paired = [
            float(r["seconds"]) / float(c["seconds"]) for r, c in zip(react_runs, compiler_runs, strict=True)
        ]
        stats = summarize(paired)
        mode, name = workload.split("/")
        suffix = "" if mode == "gold" else f"_{mode}"
        summary["ratios"][f"{name}_speedup{suffix}"] = stats["median"]
        summary["ratios"][f"{name}_speedup_mean_ratio{suffix}"] = mean_ratio(workload, range(len(paired)))
        summary["speedup_stats"][workload] = stats
        halves = [
            mean_ratio(workload, range(0, len(paired), 2)),
            mean_ratio(workload, range(1, len(paired), 2)),
        ]
        if len(paired) < 2:
            halves = halves[:1]
        summary["split_half"][workload] = {
            "even_odd_speedups": halves,
            "relative_gap": abs(halves[0] - halves[-1]) / statistics.fmean(halves),
        }
        for kind in ("compiler", "react"):
            key = f"{workload}/{kind}"
            summary["llm_calls"][key] = mean(workload, kind, "llm_calls")
            summary["tokens"][key] = {
                "prompt": mean(workload, kind, "prompt_tokens"),
                "computed": mean(workload, kind, "computed_tokens"),
                "completion": mean(workload, kind, "completion_tokens"),
            }
            summary["pte"][key] = mean(workload, kind, "pte")
            summary["latency_s"][key] = mean(workload, kind, "seconds")
            summary["tool_calls"][key] = mean(workload, kind, "tool_calls")
            summary["llm_s"][key] = mean(workload, kind, "llm_s")
    summary["per_question"] = results
    summary["config"] = {
        "repetitions_per_workload": n,
        "engine": args.engine,
        "threads": args.threads,
        "tool_median_s": args.tool_median,
        "questions_per_workload": n,
        "seed": args.seed,
        "gamma": GAMMA,
    }
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="8 questions per workload")
    parser.add_argument(
        "--questions",
        type=int,
        default=None,
        help="questions per workload, each a paired repetition (default 16; 8 with --quick; at least 3)",
    )
    parser.add_argument("--engine", default="llamacpp:default", help="engine spec")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder with the LLMCompiler data sets")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--mode", choices=["gold", "free", "both"], default="both", help="see the module docstring"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=max(1, min(8, (os.cpu_count() or 2) // 2)),
        help="llama.cpp threads for a llamacpp engine (default: half the CPUs, at most 8)",
    )
    parser.add_argument(
        "--tool-median",
        type=float,
        default=0.6,
        help="median tool latency in seconds (default 0.6, as in the task; larger values show how the "
        "speedup grows when tools, not the LLM, dominate)",
    )
    parser.add_argument("--json", metavar="PATH", help="write results as JSON here")
    args = parser.parse_args(argv)
    if args.questions is not None and args.questions < 3:
        parser.error(
            f"--questions must be >= 3 (each question is one paired repetition), got {args.questions}"
        )
    machine = Machine.now(engine=args.engine, llama_threads=args.threads)
    machine.print(Console(width=140))
    summary = anyio.run(bench, args)
    summary["machine"] = machine.finish()

    table = Table(title="LLMCompiler vs ReAct (means per question; speedup: median of per-question speedups)")
    for col in (
        "mode/workload",
        "agent",
        "latency s",
        "LLM s",
        "LLM calls",
        "tool calls",
        "prompt tok",
        "PTE",
        "speedup",
    ):
        table.add_column(col, justify="right")
    for workload in summary["per_question"]:
        for kind in ("compiler", "react"):
            key = f"{workload}/{kind}"
            table.add_row(
                workload,
                kind,
                f"{summary['latency_s'][key]:.1f}",
                f"{summary['llm_s'][key]:.1f}",
                f"{summary['llm_calls'][key]:.1f}",
                f"{summary['tool_calls'][key]:.1f}",
                f"{summary['tokens'][key]['prompt']:.0f}",
                f"{summary['pte'][key]:.0f}",
                f"{span(summary['speedup_stats'][workload])}x" if kind == "compiler" else "",
            )
    Console(width=140).print(table)
    breakdown = Table(title="Per question: where the time went (tools: sum / max of the latencies drawn)")
    for col in (
        "mode/workload",
        "q",
        "agent",
        "latency s",
        "LLM s",
        "decoded",
        "prefilled",
        "tools s",
        "speedup",
    ):
        breakdown.add_column(col, justify="right")
    for workload, by_kind in summary["per_question"].items():
        for qi, (c, r) in enumerate(zip(by_kind["compiler"], by_kind["react"], strict=True)):
            for kind, rec in (("compiler", c), ("react", r)):
                breakdown.add_row(
                    workload,
                    str(qi),
                    kind,
                    f"{rec['seconds']:.1f}",
                    f"{rec['llm_s']:.1f}",
                    str(rec["completion_tokens"]),
                    str(rec["computed_tokens"]),
                    f"{rec['tool_latency_sum_s']:.1f} / {rec['tool_latency_max_s']:.1f}",
                    f"{r['seconds'] / c['seconds']:.2f}x" if kind == "compiler" else "",
                )
    Console(width=140).print(breakdown)
    for workload, half in summary["split_half"].items():
        Console(width=140).print(
            f"{workload}: speedup on even / odd questions {' / '.join(f'{h:.2f}' for h in half['even_odd_speedups'])}"
            f" (gap {half['relative_gap']:.0%})"
        )
    write_json(args.json, summary)
    return summary


if __name__ == "__main__":
    main()

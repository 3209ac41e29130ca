"""EvoGit on online bin packing: the published baselines, then an evolution run with the configured engine.

Part 1 (baselines, measured in this run on the FunSearch instances in
``../shared/data/binpacking/funsearch_instances.json``): first fit, best fit and the two published
FunSearch heuristics, as excess bins over the L1 lower bound, next to the published numbers
(OR3: 5.74 %, 5.37 %, 3.11 %; Weibull 5k: 4.23 %, 3.98 %, 0.68 %).

Part 3 (pipeline check, no LLM): the same evolution with a synthetic mutator, a ``FunctionEngine`` that
answers every mutation prompt with a random member of a small family of parametric ``priority``
functions and every conflict prompt with one side. It measures what the EvoGit machinery (worktrees,
sandboxed evaluation, notes, selection, crossover) does when edits are meaningful, and its throughput
without LLM latency; it says nothing about any model.

Part 2 (evolution): a fresh repository from ``examples/evolve_binpacking/template`` (best fit), evolved
by ``--agents`` agents for ``--generations`` generations with ``--engine`` (default: the embedded
SmolLM2-135M). Fitness = minus the mean excess on training instances drawn with a fixed seed from the
OR3 and Weibull distributions. Reported: the fitness curve (best so far after each attempt), the best
training fitness against the starting best fit, candidates evaluated per minute, what happened to the
attempts (kept / worse / failed / rejected and why), and the fittest commit's excess on OR3 (and on
Weibull 5k without ``--quick``) next to best fit's.

Parts 2 and 3 are repeated (``--repetitions``, 3 with ``--quick``) with seeds ``--seed``, ``--seed + 1``, ...:
an evolution is a random search, so one run says little. The summary gives the median and min-max of the
best fitness, the test excess, candidates per minute and the wall time; every run is kept in the JSON.
Part 1 is deterministic and runs once.

    python bench/evogit_binpacking.py [--quick] [--json PATH] [--engine SPEC] [--agents N] [--generations G]
                                      [--repetitions R]
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio
from _harness import Machine, add_repetition_args, repetitions_of, summarize, write_json
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "evolve_binpacking"
sys.path[:0] = [str(EXAMPLE), str(EXAMPLE / "template")]

import reference_heuristics as ref  # noqa: E402
from run import evolve_example, excess, heuristic_at, load_datasets  # noqa: E402

from agentflow.engines import FunctionEngine, GenerationRequest  # noqa: E402

BASELINES = {
    "first_fit": {"OR3": ref.first_fit, "Weibull 5k": ref.first_fit},
    "best_fit": {"OR3": ref.best_fit, "Weibull 5k": ref.best_fit},
    "funsearch": {"OR3": ref.funsearch_or, "Weibull 5k": ref.funsearch_weibull},
}


def baselines(console: Console) -> list[dict[str, object]]:
    datasets, published = load_datasets()
    rows: list[dict[str, object]] = []
    table = Table(title="Baselines: excess bins over the L1 bound (%)")
    for col in ("dataset", "heuristic", "measured", "published", "difference", "seconds"):
        table.add_column(col)
    for name, instances in datasets.items():
        for heuristic, by_set in BASELINES.items():
            t0 = time.perf_counter()
            measured = excess(instances, by_set[name])
            seconds = time.perf_counter() - t0
            pub = float(published[name][heuristic])
            rows.append(
                {
                    "dataset": name,
                    "heuristic": heuristic,
                    "measured_percent": round(measured, 4),
                    "published_percent": pub,
                    "reproduced": round(measured, 2) == pub,
                    "seconds": round(seconds, 2),
                }
            )
            table.add_row(
                name, heuristic, f"{measured:.2f}", f"{pub:.2f}", f"{measured - pub:+.2f}", f"{seconds:.1f}"
            )
    console.print(table)
    return rows


def evolution(console: Console, args: argparse.Namespace) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix="evogit-bench-"))
    repo, report = anyio.run(
        lambda: evolve_example(
            workdir, engine=args.engine, agents=args.agents, generations=args.generations, seed=args.seed
        )
    )
    outcomes: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    for c in report.candidates:
        if c.status == "rejected":
            outcomes["rejected"] += 1
            reasons[c.detail.split("rejected: ", 1)[-1].split(":")[0][:60]] += 1
        elif c.status == "ok":
            outcomes["kept (>= parent)" if c.kept else "worse than parent"] += 1
        else:
            outcomes[c.status] += 1
    datasets, _ = load_datasets()
    test_sets = ["OR3"] if args.quick else ["OR3", "Weibull 5k"]
    assert report.best is not None
    evolved = heuristic_at(repo, report.best)
    test = {}
    for name in test_sets:
        test[name] = {
            "evolved_percent": round(excess(datasets[name], evolved), 4),
            "best_fit_percent": round(excess(datasets[name], ref.best_fit), 4),
        }
    curve = report.curve()
    table = Table(
        title=f"Evolution with {args.engine}: {args.agents} agents x {args.generations} generations"
    )
    for col in ("metric", "value"):
        table.add_column(col)
    table.add_row("training fitness: start (best fit)", f"{report.base_fitness}")
    table.add_row("training fitness: best found", f"{report.best_fitness}")
    table.add_row(
        "improved over best fit", str((report.best_fitness or -1e9) > (report.base_fitness or -1e9))
    )
    table.add_row("attempts / evaluated", f"{len(report.candidates)} / {report.evaluated}")
    table.add_row("candidates evaluated per minute", f"{report.per_minute:.2f}")
    table.add_row("wall time (s)", f"{report.elapsed_s:.1f}")
    table.add_row("outcomes", ", ".join(f"{k}: {v}" for k, v in outcomes.most_common()))
    table.add_row("rejection reasons", ", ".join(f"{k}: {v}" for k, v in reasons.most_common()) or "-")
    for name, row in test.items():
        table.add_row(
            f"{name} excess: evolved vs best fit",
            f"{row['evolved_percent']:.2f} % vs {row['best_fit_percent']:.2f} %",
        )
    table.add_row(
        "fitness curve (s, best)", " ".join(f"({t:.0f}, {b:.3f})" for t, b in curve if b is not None)
    )
    table.add_row("sandbox", ", ".join(report.sandbox_layers))
    console.print(table)
    return {
        "engine": args.engine,
        "agents": args.agents,
        "generations": args.generations,
        "seed": args.seed,
        "repository": str(repo),
        "base_fitness": report.base_fitness,
        "best_fitness": report.best_fitness,
        "best_commit": report.best,
        "improved": (report.best_fitness or -1e9) > (report.base_fitness or -1e9),
        "attempts": len(report.candidates),
        "evaluated": report.evaluated,
        "per_minute": round(report.per_minute, 3),
        "elapsed_s": round(report.elapsed_s, 2),
        "outcomes": dict(outcomes),
        "rejection_reasons": dict(reasons),
        "curve": [[round(t, 2), b] for t, b in curve],
        "test": test,
        "sandbox_layers": list(report.sandbox_layers),
    }


_FAMILY = (
    "    return -(bins - item) + {a} * ((bins - item) <= {t})",
    "    gap = bins - item\n    return -gap + {a} * (gap == 0) - {b} * ((gap > 0) & (gap < {t}))",
    "    gap = bins - item\n    return np.where(gap <= {t}, {a} - gap / {s}, -gap)",
    "    gap = bins - item\n    return np.where(gap <= {t}, 100 - gap, 0)",
)


def synthetic_mutator(seed: int) -> Callable[[GenerationRequest], str]:
    """Random parametric rewrites of ``priority`` (mutations) and random sides (conflicts); no model."""
    rng = random.Random(seed)

    def answer(request: GenerationRequest) -> str:
        assert request.messages is not None
        prompt = request.messages[-1].content
        if "Version A" in prompt:
            side = rng.choice(["Version A", "Version B"])
            return "```python\n" + prompt.split(side + ":\n```python\n", 1)[1].split("```", 1)[0] + "```"
        body = rng.choice(_FAMILY).format(
            a=rng.choice([0.5, 1, 2, 5, 20]),
            b=rng.choice([1, 2, 5, 10]),
            t=rng.randint(1, 25),
            s=rng.choice([1, 5, 20]),
        )
        return f"```python\ndef priority(item, bins):\n{body}\n```"

    return answer


def pipeline_check(console: Console, args: argparse.Namespace) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix="evogit-bench-synthetic-"))
    generations = 3 if args.quick else 8
    engine = FunctionEngine(synthetic_mutator(args.seed), name="synthetic-mutator")
    repo, report = anyio.run(
        lambda: evolve_example(workdir, engine=engine, agents=4, generations=generations, seed=args.seed)
    )
    datasets, _ = load_datasets()
    assert report.best is not None
    or3 = excess(datasets["OR3"], heuristic_at(repo, report.best))
    table = Table(title=f"Pipeline check: synthetic mutator (no LLM), 4 agents x {generations} generations")
    table.add_column("metric")
    table.add_column("value")
    table.add_row("training fitness: start -> best", f"{report.base_fitness} -> {report.best_fitness}")
    table.add_row("attempts / evaluated", f"{len(report.candidates)} / {report.evaluated}")
    table.add_row("crossovers", str(sum(1 for c in report.candidates if c.operator == "crossover")))
    table.add_row("candidates evaluated per minute", f"{report.per_minute:.1f}")
    table.add_row("OR3 excess of the best commit", f"{or3:.2f} % (best fit 5.37 %)")
    console.print(table)
    return {
        "agents": 4,
        "generations": generations,
        "base_fitness": report.base_fitness,
        "best_fitness": report.best_fitness,
        "attempts": len(report.candidates),
        "evaluated": report.evaluated,
        "crossovers": sum(1 for c in report.candidates if c.operator == "crossover"),
        "per_minute": round(report.per_minute, 2),
        "elapsed_s": round(report.elapsed_s, 2),
        "or3_excess_percent_best": round(or3, 4),
        "curve": [[round(t, 2), b] for t, b in report.curve()],
    }


_SUMMARY_KEYS = ("best_fitness", "evaluated", "per_minute", "elapsed_s")


def repeated_summary(runs: list[dict[str, object]]) -> dict[str, object]:
    """Median and min-max over the runs of their headline numbers (runs without a number are left out)."""
    out: dict[str, object] = {}
    for key in _SUMMARY_KEYS:
        values = [float(r[key]) for r in runs if isinstance(r.get(key), int | float)]  # type: ignore[arg-type]
        if values:
            out[key] = summarize(values)
    or3 = [
        float(r["test"]["OR3"]["evolved_percent"])  # type: ignore[index]
        for r in runs
        if isinstance(r.get("test"), dict) and "OR3" in r["test"]  # type: ignore[operator]
    ]
    or3 += [float(r["or3_excess_percent_best"]) for r in runs if "or3_excess_percent_best" in r]  # type: ignore[arg-type]
    if or3:
        out["or3_excess_percent_best"] = summarize(or3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 agents x 1 generation, OR3 test only")
    parser.add_argument("--json", dest="json_path", type=Path, default=None)
    parser.add_argument("--engine", default="llamacpp:default")
    parser.add_argument("--agents", type=int, default=None)
    parser.add_argument("--generations", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    add_repetition_args(parser, quick=3, full=3)
    args = parser.parse_args()
    args.agents = args.agents or (2 if args.quick else 4)
    args.generations = args.generations or (1 if args.quick else 6)
    console = Console()
    machine = Machine.now(engine=args.engine)
    machine.print(console)
    seeds = [args.seed + rep for rep in range(repetitions_of(args))]
    evolutions = [evolution(console, argparse.Namespace(**{**vars(args), "seed": s})) for s in seeds]
    checks = [pipeline_check(console, argparse.Namespace(**{**vars(args), "seed": s})) for s in seeds]
    summary = {
        "evolution": repeated_summary(evolutions),
        "pipeline_check_synthetic_mutator": repeated_summary(checks),
    }
    table = Table(title=f"Over {len(seeds)} seeds {seeds}: median (min-max)")
    for col in ("part", "metric", "median (min-max)"):
        table.add_column(col)
    for part, stats in summary.items():
        for key, stat in stats.items():
            assert isinstance(stat, dict)
            table.add_row(part, key, f"{stat['median']:.3f} ({stat['min']:.3f}-{stat['max']:.3f})")
    console.print(table)
    result = {
        "baselines": baselines(console),
        "summary": summary,
        "evolution": evolutions,
        "pipeline_check_synthetic_mutator": checks,
        "seeds": seeds,
        "quick": args.quick,
        "machine": machine.finish(),
    }
    if args.json_path:
        write_json(args.json_path, result)
        console.print(f"wrote {args.json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""EvoGit on online bin packing: the published baselines, then an evolution run with the configured engine.

Part 1 (baselines, measured in this run on the FunSearch instances in
``../shared/data/binpacking/funsearch_instances.json``): first fit, best fit and the two published
FunSearch heuristics, as excess bins over the L1 lower bound, next to the published numbers
(OR3: 5.74 %, 5.37 %, 3.11 %; Weibull 5k: 4.23 %, 3.98 %, 0.68 %).

Part 2 (evolution): a fresh repository from ``examples/evolve_binpacking/template`` (best fit), evolved
by ``--agents`` agents for ``--generations`` generations with ``--engine`` (default: the embedded
SmolLM2-135M). Fitness = minus the mean excess on training instances drawn with a fixed seed from the
OR3 and Weibull distributions. Reported: the fitness curve (best so far after each attempt), the best
training fitness against the starting best fit, candidates evaluated per minute, what happened to the
attempts (kept / worse / failed / rejected and why), and the fittest commit's excess on OR3 (and on
Weibull 5k without ``--quick``) next to best fit's.

    python bench/evogit_binpacking.py [--quick] [--json PATH] [--engine SPEC] [--agents N] [--generations G]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import anyio
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "evolve_binpacking"
sys.path[:0] = [str(EXAMPLE), str(EXAMPLE / "template")]

import reference_heuristics as ref  # noqa: E402
from run import evolve_example, excess, heuristic_at, load_datasets  # noqa: E402

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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 agents x 2 generations, OR3 test only")
    parser.add_argument("--json", dest="json_path", type=Path, default=None)
    parser.add_argument("--engine", default="llamacpp:default")
    parser.add_argument("--agents", type=int, default=None)
    parser.add_argument("--generations", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.agents = args.agents or (2 if args.quick else 4)
    args.generations = args.generations or (2 if args.quick else 6)
    console = Console()
    result = {"baselines": baselines(console), "evolution": evolution(console, args), "quick": args.quick}
    if args.json_path:
        args.json_path.write_text(json.dumps(result, indent=2))
        console.print(f"wrote {args.json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

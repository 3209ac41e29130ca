"""Longer fuzzing runs of the checks in tests/unit/security/test_fuzz.py (plan parsers, YAML plan loader,
``infer`` output validation, reference substitution): the same properties, many more cases.

    python bench/fuzz.py [--examples N] [--quick] [--json PATH] [--only NAME ...]

Each target reports how many cases ran, how long they took and whether any case broke the property
(an exception other than ours, or a hang caught by the per-target time limit).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
import traceback
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]


def load_targets() -> dict[str, Any]:
    path = ROOT / "tests" / "unit" / "security" / "test_fuzz.py"
    spec = importlib.util.spec_from_file_location("agentflow_fuzz_targets", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.TARGETS)


def _counting(check: Any, arity: int, counter: list[int]) -> Any:
    """``check`` with a fixed number of positional parameters (hypothesis refuses ``*args``), counting calls."""
    if arity == 1:

        def one(a: object) -> None:
            counter[0] += 1
            check(a)

        return one

    def two(a: object, b: object) -> None:
        counter[0] += 1
        check(a, b)

    return two


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=20_000, help="cases per target (default 20000)")
    parser.add_argument("--quick", action="store_true", help="2000 cases per target")
    parser.add_argument("--only", nargs="*", help="run only these targets")
    parser.add_argument("--json", metavar="PATH", help="write results as JSON here")
    args = parser.parse_args(argv)
    n = 2000 if args.quick else args.examples

    results: dict[str, Any] = {}
    for name, (strategies, check, ci_examples) in load_targets().items():
        if args.only and name not in args.only:
            continue
        counter = [0]
        counted = _counting(check, len(strategies), counter)
        test = settings(
            max_examples=n if name != "infer_validation" else max(ci_examples, n // 10),
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )(given(*strategies)(counted))
        t0 = time.perf_counter()
        failure = None
        try:
            test()
        except Exception as exc:
            failure = "".join(traceback.format_exception_only(type(exc), exc)).strip()[-2000:]
        seconds = time.perf_counter() - t0
        count = counter[0]
        results[name] = {"cases": count, "seconds": seconds, "ok": failure is None, "failure": failure}
        print(
            f"{name:18} {count:7d} cases  {seconds:7.1f} s  {'ok' if failure is None else 'FAILED'}",
            flush=True,
        )

    table = Table(title="fuzzing")
    for col in ("target", "cases", "seconds", "cases/s", "result"):
        table.add_column(col, justify="right")
    for name, r in results.items():
        table.add_row(
            name,
            str(r["cases"]),
            f"{r['seconds']:.1f}",
            f"{r['cases'] / max(r['seconds'], 1e-9):.0f}",
            "ok" if r["ok"] else "FAILED",
        )
    Console().print(table)
    summary = {"targets": results, "all_ok": all(r["ok"] for r in results.values()), "examples_per_target": n}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()

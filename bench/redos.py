"""ReDoS-shaped JSON Schema patterns: Python's backtracking ``re`` (the baseline) against the linear-time
Rust engine that ``agentflow.executors.JsonSchemaValidator`` now uses (pydantic-core's ``regex`` crate).

For each pattern and input length N the input is N copies of the repeated character plus one that
breaks the match (``"a" * N + "!"``; the classic catastrophic case: no match, every split tried). ``re`` runs only up to the N where one search stays under the per-case budget
(it doubles with every extra character or two); the Rust engine runs every N, up to a million
characters. Each case is repeated; the table shows the median and min-max in milliseconds and the ratio
re / rust where both ran. If the optional ``regex`` (with its timeout) or ``google-re2`` modules are
installed they are measured too; they are not dependencies of agentflow.

    python bench/redos.py [--quick] [--json PATH] [--repeats N]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agentflow.executors import safe_regex_search

PATTERNS = [("^(a+)+$", "a"), ("^(a|a)+$", "a"), (r"^(\w+\s?)*$", "a"), ("(x+x+)+y", "x")]
"""(pattern, the character repeated in its input)."""
SMALL = [12, 16, 18, 20, 22]
LARGE = [1_000, 100_000, 1_000_000]
BUDGET_S = 1.0  # stop raising N for a backtracking engine once one search takes longer than this

Search = Callable[[str, str], bool]


def _engines() -> dict[str, tuple[Search, bool]]:
    """name -> (search function, backtracks)."""
    engines: dict[str, tuple[Search, bool]] = {
        "re": (lambda p, s: re.search(p, s) is not None, True),
        "rust": (safe_regex_search, False),
    }
    try:
        regex = importlib.import_module("regex")
        engines["regex (timeout)"] = (lambda p, s: regex.search(p, s, timeout=BUDGET_S) is not None, True)
    except ImportError:
        pass
    try:
        re2 = importlib.import_module("re2")
        engines["re2"] = (lambda p, s: re2.search(p, s) is not None, False)
    except ImportError:
        pass
    return engines


def _time(search: Search, pattern: str, text: str, repeats: int) -> list[float]:
    search(pattern, "warm-up")  # compile (and cache) outside the clock
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        search(pattern, text)
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="two patterns, 3 repeats, N up to 100,000")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    patterns = PATTERNS[:2] if args.quick else PATTERNS
    repeats = 3 if args.quick else args.repeats
    sizes = SMALL + (LARGE[:2] if args.quick else LARGE)
    engines = _engines()
    rows: list[dict[str, object]] = []
    for pattern, char in patterns:
        for name, (search, backtracks) in engines.items():
            for n in sizes:
                if backtracks and n > SMALL[-1]:
                    break
                try:
                    times = _time(search, pattern, char * n + "!", repeats)
                except Exception as exc:  # e.g. regex's TimeoutError
                    rows.append({"pattern": pattern, "engine": name, "n": n, "error": type(exc).__name__})
                    break
                rows.append(
                    {
                        "pattern": pattern,
                        "engine": name,
                        "n": n,
                        "median_ms": 1000 * statistics.median(times),
                        "min_ms": 1000 * min(times),
                        "max_ms": 1000 * max(times),
                    }
                )
                if backtracks and min(times) > BUDGET_S:
                    break
    baseline = {(r["pattern"], r["n"]): r.get("median_ms") for r in rows if r["engine"] == "re"}
    table = Table(title=f"ReDoS patterns on c*N+'!' (median, min-max ms; {repeats} repeats)")
    for column in ("pattern", "engine", "N", "median ms", "min-max ms", "re / this"):
        table.add_column(column, justify="right" if column not in ("pattern", "engine") else "left")
    for row in rows:
        base = baseline.get((row["pattern"], row["n"]))
        median = row.get("median_ms")
        ratio = (
            f"{base / median:,.0f}x"
            if isinstance(base, float) and isinstance(median, float) and median
            else "-"
        )
        row["re_over_this"] = None if ratio == "-" else float(ratio.rstrip("x").replace(",", ""))
        table.add_row(
            str(row["pattern"]),
            str(row["engine"]),
            f"{row['n']:,}",
            f"{median:.3f}" if isinstance(median, float) else str(row.get("error")),
            f"{row['min_ms']:.3f}-{row['max_ms']:.3f}" if isinstance(median, float) else "-",
            ratio,
        )
    console = Console()
    console.print(table)
    load = os.getloadavg()
    console.print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; engines: {', '.join(engines)}")
    result: dict[str, object] = {
        "rows": rows,
        "repeats": repeats,
        "loadavg": list(load),
        "engines": list(engines),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

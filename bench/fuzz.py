"""Longer fuzzing runs of the checks in tests/unit/security/test_fuzz.py (plan parsers, YAML plan loader,
``infer`` output validation, reference substitution): the same properties, many more cases. Then two families of
crafted cases, each measured per case:

- ``redos``: plan inputs whose ``pattern:`` is ReDoS-shaped (nested or overlapping quantifiers) with a crafted
  ``default`` of growing length N, run through ``load_plan_text`` (what ``agentflow validate`` does). Each case runs
  in a worker process with a time limit, so a hang is reported (and the worker replaced) instead of stalling the
  bench; a linear pattern on the same inputs is the baseline. Time that doubles with each +1 of N is exponential
  backtracking; flat time means the regex engine (or a bound on it) holds.
- ``executor_chains``: deep dependency chains in the executor: a chain whose first (or middle) task fails (every
  later task must be skipped, no ``RecursionError``), tasks that reference later tasks (forward references; the
  incremental cycle check's visited-task count and the add time), both mixed with a shared backward reference;
  baseline in the same run: the previous cycle check (a depth-first search for a cycle from each added task).

    python bench/fuzz.py [--examples N] [--quick] [--json PATH] [--only NAME ...] [--seed N]

Targets: the hypothesis targets of test_fuzz.py, ``redos`` and ``executor_chains``. Timings are medians of
repeated runs with min-max; the 1-minute load average is printed and recorded, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from rich.console import Console
from rich.markup import escape
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


# --- ReDoS-shaped input patterns --------------------------------------------------------------------------------

REDOS_PATTERNS: dict[str, tuple[str, str, str]] = {
    # name: (pattern, repeated unit, the suffix that makes the match fail at the very end)
    "nested_plus": (r"^(a+)+$", "a", "!"),
    "overlapping_alt": (r"^(a|a)*$", "a", "!"),
    "alt_lengths": (r"^(a|aa)+$", "a", "!"),
    "word_space": (r"^(\w+\s?)*$", "a", "!"),
    "email_like": (r"^([a-z0-9]+)*@example\.com$", "a", "!"),
    "linear_baseline": (r"^a+$", "a", "!"),
}


def redos_plan(pattern: str, default: str) -> str:
    """A plan whose one input has ``pattern`` and the crafted ``default`` (YAML single-quoted)."""
    quoted_pattern = pattern.replace("'", "''")
    return (
        "apiVersion: agentflow/v1\nkind: Plan\nname: redos\n"
        "tools: [agentflow.plans.builtin_tools:word_count]\n"
        f"inputs:\n  s: {{type: string, pattern: '{quoted_pattern}', default: '{default}'}}\n"
        'steps:\n  - {id: w, tool: word_count, args: {text: "{{inputs.s}}"}}\n'
    )


def _redos_worker(conn: multiprocessing.connection.Connection) -> None:
    """Load plans sent over ``conn``; answer each with (seconds, outcome)."""
    from agentflow.errors import AgentflowError
    from agentflow.plans import load_plan_text

    while True:
        text = conn.recv()
        if text is None:
            return
        t0 = time.perf_counter()
        try:
            load_plan_text(text, file="redos.yaml")
            outcome = "accepted"
        except AgentflowError as exc:
            outcome = f"rejected: {type(exc).__name__}"
        except Exception as exc:
            outcome = f"CRASH: {type(exc).__name__}: {exc}"[:200]
        conn.send((time.perf_counter() - t0, outcome))


class _Worker:
    """A worker process that runs one case at a time and is replaced when a case hangs."""

    def __init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._start()

    def _start(self) -> None:
        self.conn, child = self._ctx.Pipe()
        self.proc = self._ctx.Process(target=_redos_worker, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def run(self, text: str, limit: float) -> tuple[float | None, str]:
        """(seconds, outcome), or (None, "HANG") when it took longer than ``limit`` (the worker is replaced)."""
        self.conn.send(text)
        if self.conn.poll(limit):
            seconds, outcome = self.conn.recv()
            return float(seconds), str(outcome)
        self.proc.kill()
        self.proc.join()
        self._start()
        return None, "HANG"

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()


def run_redos(quick: bool) -> dict[str, Any]:
    """Per pattern, per N: median and min-max seconds of validating the plan, or HANG past the limit."""
    sizes = [8, 16, 20, 22, 24, 26, 28, 30] if quick else [8, 16, 20, 22, 24, 26, 28, 30, 32, 40, 100]
    limit = 5.0 if quick else 30.0
    repeats = 3 if quick else 5
    worker = _Worker()
    worker.run(redos_plan("^a$", "a"), 120.0)  # warm up: imports
    cases: list[dict[str, Any]] = []
    try:
        for name, (pattern, unit, tail) in REDOS_PATTERNS.items():
            hung = False
            for n in sizes:
                if hung:
                    cases.append({"pattern": name, "n": n, "status": "skipped (smaller N hung)"})
                    continue
                text = redos_plan(pattern, unit * n + tail)
                times: list[float] = []
                outcome = ""
                for _ in range(repeats):
                    seconds, outcome = worker.run(text, limit)
                    if seconds is None:
                        hung = True
                        break
                    times.append(seconds)
                    if seconds > 1.0:
                        break  # slow enough: one measurement says what it needs to
                case: dict[str, Any] = {"pattern": name, "regex": pattern, "n": n}
                if hung:
                    case.update(status=f"HANG > {limit:g} s", seconds=None)
                else:
                    case.update(
                        status=outcome,
                        seconds=statistics.median(times),
                        min=min(times),
                        max=max(times),
                        runs=len(times),
                    )
                cases.append(case)
                print(f"redos {name:16} N={n:3d}  {_cell(case)}", flush=True)
    finally:
        worker.close()
    return {
        "limit_seconds": limit,
        "growth_per_char": _growth(cases),
        "cases": cases,
        "hangs": sum(1 for c in cases if str(c.get("status", "")).startswith("HANG")),
        "crashes": sum(1 for c in cases if str(c.get("status", "")).startswith("CRASH")),
        "ok": not any(str(c.get("status", "")).startswith(("HANG", "CRASH")) for c in cases),
    }


def _growth(cases: list[dict[str, Any]]) -> dict[str, float | None]:
    """Per pattern: the factor by which the time grows per character, from its two largest measured N.

    About 1 is linear (or flat); about 2 is exponential backtracking (each added character doubles the time).
    Cases under 5 ms are left out (noise).
    """
    growth: dict[str, float | None] = {}
    for name in REDOS_PATTERNS:
        timed = [c for c in cases if c["pattern"] == name and c.get("seconds") and c["seconds"] > 0.005]
        if len(timed) < 2:
            growth[name] = None
            continue
        a, b = timed[-2], timed[-1]
        growth[name] = (b["seconds"] / a["seconds"]) ** (1 / (b["n"] - a["n"]))
    return growth


def _cell(case: dict[str, Any]) -> str:
    if case.get("seconds") is None:
        return str(case["status"])
    return f"{case['seconds'] * 1000:9.2f} ms ({case['min'] * 1000:.2f}-{case['max'] * 1000:.2f})  {case['status']}"


# --- deep executor chains --------------------------------------------------------------------------------------


def _chain_tools() -> Any:
    from agentflow.executors import ToolRegistry, tool

    @tool
    async def echo(value: object) -> object:
        """Return the value."""
        return value

    @tool
    async def fail(message: str) -> str:
        """Raise an error."""
        raise RuntimeError(message)

    return ToolRegistry([echo, fail])


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, dict[str, float]]:
    values: list[float] = []
    result: Any = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        values.append(time.perf_counter() - t0)
    return result, {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _execute(tasks: list[Any], registry: Any) -> dict[str, Any]:
    """Add ``tasks`` one by one (as a streaming planner does), run them; times, statuses, visited tasks."""
    from agentflow.executors import Executor

    async def go() -> dict[str, Any]:
        t0 = time.perf_counter()
        async with Executor(registry).open() as execution:
            for task in tasks:
                execution.add(task)
            added = time.perf_counter()
            execution.close()
            report = await execution.wait()
            visits = execution.cycle_check_visits
        done = time.perf_counter()
        statuses: dict[str, int] = {}
        for result in report.results.values():
            statuses[result.status.value] = statuses.get(result.status.value, 0) + 1
        return {"add_s": added - t0, "run_s": done - added, "visits": visits, "statuses": statuses}

    try:
        return anyio.run(go)
    except RecursionError as exc:
        return {"error": f"RecursionError: {exc}"}


def _old_cycle_checks(tasks: list[Any]) -> float:
    """The previous executor's cycle check, a depth-first search for a cycle from every added task through all
    it reaches (what networkx's ``find_cycle(graph, source=task)`` did): seconds for the stream."""
    succ: dict[int, list[int]] = {}
    t0 = time.perf_counter()
    for task in tasks:
        succ.setdefault(task.id, [])
        for dep in task.deps:
            succ.setdefault(dep, []).append(task.id)
        if succ[task.id]:
            _reaches_a_cycle(succ, task.id)
    return time.perf_counter() - t0


def _reaches_a_cycle(succ: dict[int, list[int]], source: int) -> bool:
    on_path = {source: True}  # False once every successor of the node is searched
    stack = [(source, iter(succ[source]))]
    while stack:
        node, rest = stack[-1]
        nxt = next(rest, None)
        if nxt is None:
            on_path[node] = False
            stack.pop()
        elif on_path.get(nxt):
            return True
        elif nxt not in on_path:
            on_path[nxt] = True
            stack.append((nxt, iter(succ[nxt])))
    return False


def run_executor_chains(quick: bool, seed: int) -> dict[str, Any]:
    """Deep chains: failing heads, failures at depth, forward references, mixed references."""
    from agentflow.executors import Task

    rng = random.Random(seed)
    registry = _chain_tools()
    sizes = [500, 1000, 3000] if quick else [500, 1000, 3000, 10000]
    baseline_max = 1000 if quick else 3000
    repeats = 3 if quick else 5
    rows: list[dict[str, Any]] = []

    def chain(n: int, fail_at: int) -> list[Any]:
        return [
            Task(i, "fail", ("boom",)) if i == fail_at else Task(i, "echo", (f"${i - 1}",) if i > 1 else (0,))
            for i in range(1, n + 1)
        ]

    def forward(n: int) -> list[Any]:
        return [Task(i, "echo", (f"${i + 1}",)) for i in range(1, n)] + [Task(n, "echo", (0,))]

    def mixed(n: int) -> list[Any]:
        return (
            [Task(1, "echo", (0,))]
            + [Task(i, "echo", ([f"${i + 1}", "$1"],)) for i in range(2, n)]
            + [Task(n, "echo", (1,))]
        )

    for n in sizes:
        depth = rng.randint(n // 4, 3 * n // 4)
        cases: list[tuple[str, list[Any], int]] = [
            ("fail_at_head", chain(n, 1), n - 1),
            (f"fail_at_depth_{depth}", chain(n, depth), n - depth),
            ("fail_at_head_added_last", list(reversed(chain(n, 1))), n - 1),
            ("forward_refs", forward(n), 0),
            ("forward_and_backward_refs", mixed(n), 0),
        ]
        for name, tasks, want_skipped in cases:
            runs = [_execute(tasks, registry) for _ in range(repeats)]
            result = runs[-1]
            row: dict[str, Any] = {"case": name, "n": n, **result}
            if "error" not in result:
                row["add_s"] = statistics.median(r["add_s"] for r in runs)
                totals = [r["add_s"] + r["run_s"] for r in runs]
                timing = {"median": statistics.median(totals), "min": min(totals), "max": max(totals)}
            else:
                timing = {"median": float("nan"), "min": float("nan"), "max": float("nan")}
            row["total_s"] = timing
            skipped = result.get("statuses", {}).get("skipped", 0)
            row["ok"] = "error" not in result and skipped == want_skipped
            if name in ("forward_refs", "forward_and_backward_refs") and n <= baseline_max:
                _, old = _timed(functools.partial(_old_cycle_checks, tasks), 1 if n > 500 else repeats)
                row["baseline_cycle_check_s"] = old
                row["speedup_vs_baseline"] = old["median"] / max(result.get("add_s", 0.0), 1e-9)
            rows.append(row)
            print(
                f"chains {name:28} N={n:5d}  total {timing['median']:.3f} s  visits {result.get('visits', '-')}"
                f"  {'ok' if row['ok'] else 'FAILED ' + str(result)}",
                flush=True,
            )
    return {"rows": rows, "ok": all(r["ok"] for r in rows), "recursion_limit": sys.getrecursionlimit()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=20_000, help="cases per target (default 20000)")
    parser.add_argument("--quick", action="store_true", help="2000 cases per target")
    parser.add_argument("--only", nargs="*", help="run only these targets")
    parser.add_argument("--json", metavar="PATH", help="write results as JSON here")
    parser.add_argument("--seed", type=int, default=18, help="seed of the crafted cases (default 18)")
    args = parser.parse_args(argv)
    n = 2000 if args.quick else args.examples
    load_start = os.getloadavg()[0]

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
    console = Console(width=None if sys.stdout.isatty() else 180)
    console.print(table)
    summary: dict[str, Any] = {
        "targets": results,
        "examples_per_target": n,
        "seed": args.seed,
        "load_average_1m_at_start": round(load_start, 2),
    }
    if not args.only or "redos" in args.only:
        redos = run_redos(args.quick)
        summary["redos"] = redos
        console.print(_redos_table(redos))
    if not args.only or "executor_chains" in args.only:
        chains = run_executor_chains(args.quick, args.seed)
        summary["executor_chains"] = chains
        console.print(_chains_table(chains))
    summary["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    summary["all_ok"] = all(r["ok"] for r in results.values()) and all(
        summary[k]["ok"] for k in ("redos", "executor_chains") if k in summary
    )
    console.print(
        f"load average (1 min): {summary['load_average_1m_at_start']} at start, "
        f"{summary['load_average_1m_at_end']} at end; all ok: {summary['all_ok']}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return summary


def _redos_table(redos: dict[str, Any]) -> Table:
    table = Table(
        title=f"ReDoS-shaped input patterns through load_plan_text (limit {redos['limit_seconds']:g} s)"
    )
    sizes = sorted({c["n"] for c in redos["cases"]})
    table.add_column("pattern")
    for n in sizes:
        table.add_column(f"N={n}", justify="right")
    table.add_column("growth /char", justify="right")
    by_pattern: dict[str, dict[int, dict[str, Any]]] = {}
    for case in redos["cases"]:
        by_pattern.setdefault(case["pattern"], {})[case["n"]] = case
    for name, cases in by_pattern.items():
        cells = []
        for n in sizes:
            case = cases.get(n)
            if case is None:
                cells.append("")
            elif case.get("seconds") is None:
                cells.append("HANG" if str(case["status"]).startswith("HANG") else "-")
            else:
                cells.append(f"{case['seconds'] * 1000:.1f}")
        growth = redos["growth_per_char"].get(name)
        cells.append("" if growth is None else f"{growth:.2f}x")
        table.add_row(escape(f"{name} {REDOS_PATTERNS[name][0]}"), *cells)
    return table


def _chains_table(chains: dict[str, Any]) -> Table:
    table = Table(title="deep executor chains (median total seconds of add + run, min-max)")
    for col in (
        "case",
        "N",
        "total s (min-max)",
        "add s",
        "visits",
        "old check s",
        "add speedup",
        "statuses",
        "ok",
    ):
        table.add_column(col, justify="right")
    for row in chains["rows"]:
        total = row["total_s"]
        old = row.get("baseline_cycle_check_s")
        table.add_row(
            row["case"],
            str(row["n"]),
            f"{total['median']:.3f} ({total['min']:.3f}-{total['max']:.3f})",
            f"{row.get('add_s', 0.0):.3f}",
            str(row.get("visits", "-")),
            f"{old['median']:.3f}" if old else "",
            f"{row['speedup_vs_baseline']:.0f}x" if old else "",
            ", ".join(f"{k} {v}" for k, v in sorted(row.get("statuses", {}).items())) or row.get("error", ""),
            "ok" if row["ok"] else "FAILED",
        )
    return table


if __name__ == "__main__":
    main()

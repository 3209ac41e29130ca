"""Executor makespan on NESTFUL's gold call DAGs: how close to the critical path, how fast is dispatch?

Every NESTFUL sample (``non-executable-glaive-data.json``) is a sequence of tool calls labelled ``var1``,
``var2``, ... whose arguments reference earlier results as ``$varN$`` / ``$varN.field$`` (also inside longer
strings). Each sample becomes a plan of :class:`~agentflow.executors.Task` s (``$varN.field$`` -> ``${N.field}``,
literal dollar signs -> ``$$``; a reused label means the latest earlier call with it; the final ``var_result`` pseudo-call is the join and is not executed). Tools are
stubs that sleep a seeded pseudo-random 20-100 ms (a hash of the seed, the tool and its arguments) and return a
dict with every output field the data set reads from them.

Measured per sample:
- ``makespan_over_critical_path``: (last finish - first start) / the critical path computed from the *measured*
  tool durations (the physical limit with unlimited parallelism; the ratio isolates dispatch overhead);
- dispatch latency: from a task's last dependency finishing to the task's tool call starting.

Baselines in the same run: a polling dispatcher as in the original LLMCompiler (checks for ready tasks every
10 ms), run on the same samples and stubs; and sequential execution (one call at a time, as ReAct does), reported
as the sum of the measured durations. The whole measurement is repeated (``--repetitions``, 3 with ``--quick``):
every number reported is the median over the repetitions, with the min-max under ``ranges`` and each
repetition's results under ``samples``.

    python bench/executor_makespan.py [--data DIR] [--json PATH] [--quick] [--seed N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
from _harness import Machine, add_repetition_args, combine, ranges, repetitions_of, write_json
from rich.console import Console
from rich.table import Table

from agentflow.executors import Executor, PlanGraph, Task, Tool, ToolRegistry, substitute

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "nestful"
DATA_FILE = "non-executable-glaive-data.json"
SPEC_FILE = "non-executable-glaive-spec.json"
NESTFUL_REF = re.compile(r"\$(var\d+)((?:\.[A-Za-z_]\w*)*)\$")
JOIN_NAME = "var_result"
POLL_SECONDS = 0.010


def convert_string(text: str, ids: dict[str, int]) -> str:
    """NESTFUL ``$varN.field$`` -> ``${N.field}``; every other ``$`` becomes the literal escape ``$$``."""
    out: list[str] = []
    last = 0
    for match in NESTFUL_REF.finditer(text):
        label, fields = match.group(1), match.group(2)
        if label not in ids:
            continue
        out.append(text[last : match.start()].replace("$", "$$"))
        out.append(f"${{{ids[label]}{fields}}}")
        last = match.end()
    out.append(text[last:].replace("$", "$$"))
    return "".join(out)


def convert_value(value: object, ids: dict[str, int]) -> object:
    if isinstance(value, str):
        return convert_string(value, ids)
    if isinstance(value, list):
        return [convert_value(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: convert_value(v, ids) for k, v in value.items()}
    return value


def load_samples(data_dir: Path) -> tuple[list[list[Task]], dict[str, set[str]]]:
    """Plans (one per sample) and, per tool, the output fields the data set reads."""
    samples = json.loads((data_dir / DATA_FILE).read_text())
    fields: dict[str, set[str]] = {}
    spec_path = data_dir / SPEC_FILE
    if spec_path.exists():
        for spec in json.loads(spec_path.read_text()):
            outputs = spec.get("output_parameters") or {}
            fields.setdefault(spec["name"], set()).update(outputs)
    plans: list[list[Task]] = []
    for sample in samples:
        calls = [c for c in sample["output"] if c.get("name") != JOIN_NAME]
        # A label may be reused (two samples do); a reference means the latest earlier call with that label.
        ids: dict[str, int] = {}
        tasks = []
        for i, call in enumerate(calls, start=1):
            for match in NESTFUL_REF.finditer(json.dumps(call.get("arguments", {}))):
                label, path = match.group(1), match.group(2)
                if label in ids and path:
                    fields.setdefault(calls[ids[label] - 1]["name"], set()).add(path.split(".")[1])
            args = convert_value(call.get("arguments", {}), ids)
            tasks.append(Task(i, call["name"], kwargs=args))  # type: ignore[arg-type]
            if "label" in call:
                ids[call["label"]] = i
        plans.append(tasks)
    return plans, fields


def latency(seed: int, name: str, arguments: dict[str, object], low: float, high: float) -> float:
    key = f"{seed}|{name}|{json.dumps(arguments, sort_keys=True, default=str)}".encode()
    unit = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
    return low + (high - low) * unit


def make_stub(name: str, outputs: set[str], seed: int, low: float, high: float) -> Callable[..., object]:
    async def stub(**arguments: object) -> dict[str, object]:
        await anyio.sleep(latency(seed, name, arguments, low, high))
        return {field: f"{name}.{field}" for field in sorted(outputs)} or {"result": name}

    return stub


def build_registry(
    plans: list[list[Task]], fields: dict[str, set[str]], seed: int, low: float, high: float
) -> ToolRegistry:
    registry = ToolRegistry()
    for name in sorted({t.tool for plan in plans for t in plan}):
        outputs = fields.get(name, set())
        spec = {"name": name, "description": f"stub for {name}", "parameters": {"type": "object"}}
        registry.register(Tool.from_spec(spec, make_stub(name, outputs, seed, low, high), strict=False))
    return registry


async def run_ours(registry: ToolRegistry, plan: list[Task]) -> dict[str, object]:
    report = await Executor(registry).run(plan)
    failed = [r for r in report.results.values() if not r.ok]
    if failed:
        raise RuntimeError(f"stub plan failed: {failed[0].observation()}")
    durations = {
        i: r.finished_at - r.started_at for i, r in report.results.items() if r.started_at is not None
    }
    critical, _ = PlanGraph(plan).critical_path(durations)
    return {
        "makespan": report.makespan,
        "critical_path": critical,
        "sequential": sum(durations.values()),
        "dispatch": report.dispatch_latencies(),
    }


async def run_polling(registry: ToolRegistry, plan: list[Task]) -> dict[str, object]:
    """The original LLMCompiler's scheme: every POLL_SECONDS, start every task whose dependencies are done."""
    done: dict[int, tuple[object, float, float]] = {}  # id -> (value, started, finished)
    started: set[int] = set()
    dispatch: list[float] = []

    async def run_task(task: Task) -> None:
        begin = time.perf_counter()
        if task.deps:
            dispatch.append(begin - max(done[d][2] for d in task.deps))
        values = {d: done[d][0] for d in task.deps}
        arguments = {k: substitute(v, values) for k, v in task.kwargs.items()}
        value = await registry.get(task.tool).invoke(arguments)
        done[task.id] = (value, begin, time.perf_counter())

    async with anyio.create_task_group() as tg:
        while len(done) < len(plan):
            for task in plan:
                if task.id not in started and all(d in done for d in task.deps):
                    started.add(task.id)
                    tg.start_soon(run_task, task)
            await anyio.sleep(POLL_SECONDS)
    durations = {i: f - s for i, (_v, s, f) in done.items()}
    critical, _ = PlanGraph(plan).critical_path(durations)
    makespan = max(f for _v, _s, f in done.values()) - min(s for _v, s, _f in done.values())
    return {"makespan": makespan, "critical_path": critical, "dispatch": dispatch}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarize(runs: list[dict[str, object]]) -> dict[str, float]:
    ratios = [float(r["makespan"]) / float(r["critical_path"]) for r in runs]  # type: ignore[arg-type]
    dispatch = [d for r in runs for d in r["dispatch"]]  # type: ignore[attr-defined]
    return {
        "makespan_over_critical_path_mean": statistics.fmean(ratios),
        "makespan_over_critical_path_max": max(ratios),
        "dispatch_latency_ms_p50": percentile(dispatch, 50) * 1e3,
        "dispatch_latency_ms_p99": percentile(dispatch, 99) * 1e3,
        "dispatch_latency_ms_max": max(dispatch, default=0.0) * 1e3,
        "dispatches": float(len(dispatch)),
        "makespan_s_total": sum(float(r["makespan"]) for r in runs),  # type: ignore[arg-type]
    }


async def bench(opts: argparse.Namespace) -> dict[str, object]:
    plans, fields = load_samples(opts.data)
    if opts.quick:
        plans = plans[:30]
    low, high = opts.latency_ms[0] / 1e3, opts.latency_ms[1] / 1e3
    registry = build_registry(plans, fields, opts.seed, low, high)
    ours = [await run_ours(registry, plan) for plan in plans]
    polling = [await run_polling(registry, plan) for plan in plans]
    widths = [max(len(level) for level in PlanGraph(plan).levels()) for plan in plans]
    depths = [len(PlanGraph(plan).levels()) for plan in plans]
    ours_summary = summarize(ours)
    polling_summary = summarize(polling)
    sequential_total = sum(float(r["sequential"]) for r in ours)  # type: ignore[arg-type]
    return {
        "samples_count": len(plans),
        "tasks": sum(len(p) for p in plans),
        "seed": opts.seed,
        "latency_ms": list(opts.latency_ms),
        "max_width_mean": statistics.fmean(widths),
        "depth_mean": statistics.fmean(depths),
        "makespan_over_critical_path": {
            "mean": ours_summary["makespan_over_critical_path_mean"],
            "max": ours_summary["makespan_over_critical_path_max"],
        },
        "dispatch_latency_ms": {
            "p50": ours_summary["dispatch_latency_ms_p50"],
            "p99": ours_summary["dispatch_latency_ms_p99"],
            "max": ours_summary["dispatch_latency_ms_max"],
            "count": ours_summary["dispatches"],
        },
        "baseline_polling_10ms": polling_summary,
        "ratios": {
            "polling_makespan_over_ours": polling_summary["makespan_s_total"]
            / ours_summary["makespan_s_total"],
            "sequential_over_ours": sequential_total / ours_summary["makespan_s_total"],
        },
        "ours": ours_summary,
        "goals": {
            "makespan_within_1.05x_of_critical_path": ours_summary["makespan_over_critical_path_max"] <= 1.05,
            "dispatch_p99_under_1ms": ours_summary["dispatch_latency_ms_p99"] < 1.0,
        },
        "quick": opts.quick,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help=f"folder with {DATA_FILE} (and {SPEC_FILE})"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="only the first 30 samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, nargs=2, default=(20.0, 100.0), metavar=("LOW", "HIGH"))
    add_repetition_args(parser, quick=3, full=5)
    opts = parser.parse_args()
    machine = Machine.now()
    machine.print(Console())
    runs = [anyio.run(bench, opts) for _ in range(repetitions_of(opts))]
    result = combine(runs)
    assert isinstance(result, dict)
    spans = ranges(runs)
    assert isinstance(spans, dict)
    ours_median = result["ours"]
    result["goals"] = {
        "makespan_within_1.05x_of_critical_path": ours_median["makespan_over_critical_path_max"] <= 1.05,
        "dispatch_p99_under_1ms": ours_median["dispatch_latency_ms_p99"] < 1.0,
    }
    result.update(repetitions=len(runs), ranges=spans, samples=runs, machine=machine.finish())

    ours, base = result["ours"], result["baseline_polling_10ms"]
    title = f"NESTFUL gold DAGs ({result['samples_count']} samples, {result['tasks']} tool calls)"
    table = Table(title=f"{title}: median of {len(runs)} repetitions (min-max)")
    table.add_column("measure")
    table.add_column("agentflow executor", justify="right")
    table.add_column("polling 10 ms (baseline)", justify="right")
    for key, label in (
        ("makespan_over_critical_path_mean", "makespan / critical path (mean)"),
        ("makespan_over_critical_path_max", "makespan / critical path (max)"),
        ("dispatch_latency_ms_p50", "dispatch latency p50 (ms)"),
        ("dispatch_latency_ms_p99", "dispatch latency p99 (ms)"),
        ("dispatch_latency_ms_max", "dispatch latency max (ms)"),
        ("makespan_s_total", "total makespan (s)"),
    ):
        lo, hi = spans["ours"][key]
        blo, bhi = spans["baseline_polling_10ms"][key]
        table.add_row(label, f"{ours[key]:.4f} ({lo:.4f}-{hi:.4f})", f"{base[key]:.4f} ({blo:.4f}-{bhi:.4f})")
    ratios = result["ratios"]
    for key, label in (
        ("sequential_over_ours", "sequential (ReAct-style) / ours"),
        ("polling_makespan_over_ours", "polling / ours (makespan)"),
    ):
        lo, hi = spans["ratios"][key]
        table.add_row(label, f"{ratios[key]:.3f}x ({lo:.3f}-{hi:.3f})", "")
    Console(width=130).print(table)
    Console().print(f"goals (on the medians): {result['goals']}")
    write_json(opts.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""DSL overhead: trivial steps through agentflow vs hand-written anyio vs LangGraph's functional API.

Shapes (all steps trivial, so only the orchestration cost is measured):
- seq:  a 1,000-step sequential chain
- par:  a 1,000-way parallel fan-out
- tree: a depth-10 binary tree of parallel nodes (1,024 leaves)

Ratios: ours / anyio (how much the DSL costs over writing the same shape by hand) and
LangGraph / ours. Each shape is timed ``--repeats`` times and the median is reported.

    python bench/dsl_overhead.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from rich.console import Console
from rich.table import Table

from agentflow.dsl import Flow, flow, par, step

N = 1000
DEPTH = 10


# -- agentflow ------------------------------------------------------------------------------------
@step
async def inc(x: int) -> int:
    return x + 1


@flow
async def af_seq(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await inc(x)
    return x


def af_par(n: int) -> Flow[list[int]]:
    return par.map(inc, range(n))


def af_tree(depth: int, x: int = 0) -> Flow[int]:
    if depth == 0:
        return inc(x)
    return par(af_tree(depth - 1, x), af_tree(depth - 1, x)).map(lambda p: p[0] + p[1])


# -- hand-written anyio ---------------------------------------------------------------------------
async def raw_inc(x: int) -> int:
    return x + 1


async def raw_seq(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await raw_inc(x)
    return x


async def raw_par(n: int) -> list[int]:
    out = [0] * n

    async def one(i: int) -> None:
        out[i] = await raw_inc(i)

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    return out


async def raw_tree(depth: int, x: int = 0) -> int:
    if depth == 0:
        return await raw_inc(x)
    res = [0, 0]

    async def child(i: int) -> None:
        res[i] = await raw_tree(depth - 1, x)

    async with anyio.create_task_group() as tg:
        tg.start_soon(child, 0)
        tg.start_soon(child, 1)
    return res[0] + res[1]


# -- LangGraph functional API ----------------------------------------------------------------------
def langgraph_shapes() -> dict[str, Callable[[], object]] | None:
    try:
        from langgraph.func import entrypoint, task
    except ImportError:
        return None

    @task
    def lg_inc(x: int) -> int:
        return x + 1

    @entrypoint()
    def lg_seq(n: int) -> int:
        x = 0
        for _ in range(n):
            x = lg_inc(x).result()
        return x

    @entrypoint()
    def lg_par(n: int) -> list[int]:
        futures = [lg_inc(i) for i in range(n)]
        return [f.result() for f in futures]

    return {"seq": lambda: lg_seq.invoke(N), "par": lambda: lg_par.invoke(N)}


def time_async(make: Callable[[], Awaitable[object]], repeats: int) -> float:
    async def once() -> float:
        t0 = time.perf_counter()
        await make()
        return time.perf_counter() - t0

    async def all_runs() -> list[float]:
        await once()  # warm-up
        return [await once() for _ in range(repeats)]

    return statistics.median(anyio.run(all_runs))


def time_sync(fn: Callable[[], object], repeats: int) -> tuple[float, int]:
    """Median seconds of successful runs, and how many runs failed inside the library and were re-run
    (LangGraph's fan-out intermittently raises "dictionary changed size during iteration")."""
    failures = 0
    samples: list[float] = []
    while len(samples) < repeats + 1:
        t0 = time.perf_counter()
        try:
            fn()
        except RuntimeError:
            failures += 1
            if failures > 10 * (repeats + 1):
                raise
            continue
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples[1:]), failures


async def _check(f: Flow[Any], expected: object) -> object:
    out = await f.run()
    assert out.unwrap() == expected, f"benchmark shape computed {out!r}, expected {expected!r}"
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--json", metavar="PATH", help="write results as JSON here")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 9

    seconds: dict[str, dict[str, float]] = {"ours": {}, "anyio": {}, "langgraph": {}}
    seconds["ours"]["seq"] = time_async(lambda: _check(af_seq(N), N), repeats)
    seconds["ours"]["par"] = time_async(lambda: _check(af_par(N), [i + 1 for i in range(N)]), repeats)
    seconds["ours"]["tree"] = time_async(lambda: _check(af_tree(DEPTH), 2**DEPTH), repeats)
    seconds["anyio"]["seq"] = time_async(lambda: raw_seq(N), repeats)
    seconds["anyio"]["par"] = time_async(lambda: raw_par(N), repeats)
    seconds["anyio"]["tree"] = time_async(lambda: raw_tree(DEPTH), repeats)
    lg = langgraph_shapes()
    lg_failures: dict[str, int] = {}
    if lg is not None:
        lg_repeats = max(1, repeats // 3)
        seconds["langgraph"]["seq"], lg_failures["seq"] = time_sync(lg["seq"], lg_repeats)
        seconds["langgraph"]["par"], lg_failures["par"] = time_sync(lg["par"], lg_repeats)

    ours, raw, lgs = seconds["ours"], seconds["anyio"], seconds["langgraph"]
    ratios: dict[str, float | None] = {
        "seq_vs_anyio": ours["seq"] / raw["seq"],
        "par_vs_anyio": ours["par"] / raw["par"],
        "tree_vs_anyio": ours["tree"] / raw["tree"],
        "langgraph_seq_over_ours": lgs["seq"] / ours["seq"] if "seq" in lgs else None,
        "langgraph_par_over_ours": lgs["par"] / ours["par"] if "par" in lgs else None,
    }
    result: dict[str, Any] = {
        "ratios": ratios,
        "us_per_step": {"seq": ours["seq"] / N * 1e6, "par": ours["par"] / N * 1e6},
        "seconds": seconds,
        "shapes": {"seq_steps": N, "par_width": N, "tree_depth": DEPTH, "tree_leaves": 2**DEPTH},
        "repeats": repeats,
        "langgraph_installed": lg is not None,
        "langgraph_failed_runs_retried": lg_failures,
        "python": sys.version.split()[0],
    }

    table = Table(title="DSL overhead (median seconds)")
    for col in ("shape", "agentflow", "anyio by hand", "langgraph", "ours/anyio", "langgraph/ours"):
        table.add_column(col, justify="right")
    for shape in ("seq", "par", "tree"):
        lg_s = lgs.get(shape)
        table.add_row(
            shape,
            f"{ours[shape] * 1e3:.2f} ms",
            f"{raw[shape] * 1e3:.2f} ms",
            "-" if lg_s is None else f"{lg_s * 1e3:.1f} ms",
            f"{ours[shape] / raw[shape]:.2f}x",
            "-" if lg_s is None else f"{lg_s / ours[shape]:.1f}x",
        )
    Console().print(table)
    if lg is None:
        Console().print("langgraph is not installed (pip install 'agentflow[bench]'): its columns are empty")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()

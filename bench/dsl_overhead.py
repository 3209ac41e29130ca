"""DSL overhead: trivial steps through agentflow vs hand-written anyio vs LangGraph's functional API.

Shapes (all steps trivial, so only the orchestration cost is measured):
- seq:  a 1,000-step sequential chain
- par:  a 1,000-way parallel fan-out
- tree: a depth-10 binary tree of parallel nodes (1,024 leaves)

Ratios: ours / anyio (how much the DSL costs over writing the same shape by hand) and
LangGraph / ours. Each shape is timed ``--repetitions`` times (after one warm-up); the median is reported
with the min-max, and the JSON keeps every sample.

    python bench/dsl_overhead.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from _harness import Machine, add_repetition_args, repetitions_of, summarize, write_json
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


def time_async(make: Callable[[], Awaitable[object]], repeats: int) -> list[float]:
    async def once() -> float:
        t0 = time.perf_counter()
        await make()
        return time.perf_counter() - t0

    async def all_runs() -> list[float]:
        await once()  # warm-up
        return [await once() for _ in range(repeats)]

    samples: list[float] = anyio.run(all_runs)
    return samples


def time_sync(fn: Callable[[], object], repeats: int) -> tuple[list[float], int]:
    """Seconds of each successful run after a warm-up, and how many runs failed inside the library and were
    re-run (LangGraph's fan-out intermittently raises "dictionary changed size during iteration")."""
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
    return samples[1:], failures


async def _check(f: Flow[Any], expected: object) -> object:
    out = await f.run()
    assert out.unwrap() == expected, f"benchmark shape computed {out!r}, expected {expected!r}"
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", metavar="PATH", help="write results as JSON here")
    add_repetition_args(parser, quick=3, full=9)
    args = parser.parse_args(argv)
    repeats = repetitions_of(args)
    machine = Machine.now()
    machine.print(Console())

    samples: dict[str, dict[str, list[float]]] = {"ours": {}, "anyio": {}, "langgraph": {}}
    samples["ours"]["seq"] = time_async(lambda: _check(af_seq(N), N), repeats)
    samples["ours"]["par"] = time_async(lambda: _check(af_par(N), [i + 1 for i in range(N)]), repeats)
    samples["ours"]["tree"] = time_async(lambda: _check(af_tree(DEPTH), 2**DEPTH), repeats)
    samples["anyio"]["seq"] = time_async(lambda: raw_seq(N), repeats)
    samples["anyio"]["par"] = time_async(lambda: raw_par(N), repeats)
    samples["anyio"]["tree"] = time_async(lambda: raw_tree(DEPTH), repeats)
    lg = langgraph_shapes()
    lg_failures: dict[str, int] = {}
    if lg is not None:
        lg_repeats = max(3, repeats // 3)
        samples["langgraph"]["seq"], lg_failures["seq"] = time_sync(lg["seq"], lg_repeats)
        samples["langgraph"]["par"], lg_failures["par"] = time_sync(lg["par"], lg_repeats)
    seconds = {impl: {k: statistics.median(v) for k, v in shapes.items()} for impl, shapes in samples.items()}
    stats = {impl: {k: summarize(v) for k, v in shapes.items()} for impl, shapes in samples.items()}

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
        "seconds_stats": stats,
        "shapes": {"seq_steps": N, "par_width": N, "tree_depth": DEPTH, "tree_leaves": 2**DEPTH},
        "repetitions": repeats,
        "machine": machine.finish(),
        "langgraph_installed": lg is not None,
        "langgraph_failed_runs_retried": lg_failures,
        "python": sys.version.split()[0],
    }

    table = Table(title=f"DSL overhead (median ms of {repeats} repetitions, min-max)")
    for col in ("shape", "agentflow", "anyio by hand", "langgraph", "ours/anyio", "langgraph/ours"):
        table.add_column(col, justify="right")

    def ms(impl: str, shape: str) -> str:
        st = stats[impl].get(shape)
        if st is None:
            return "-"
        return f"{float(st['median']) * 1e3:.2f} ({float(st['min']) * 1e3:.2f}-{float(st['max']) * 1e3:.2f})"  # type: ignore[arg-type]

    for shape in ("seq", "par", "tree"):
        lg_s = lgs.get(shape)
        table.add_row(
            shape,
            ms("ours", shape),
            ms("anyio", shape),
            ms("langgraph", shape),
            f"{ours[shape] / raw[shape]:.2f}x",
            "-" if lg_s is None else f"{lg_s / ours[shape]:.1f}x",
        )
    Console(width=130).print(table)
    if lg is None:
        Console().print("langgraph is not installed (pip install 'agentflow[bench]'): its columns are empty")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()

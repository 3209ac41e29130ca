"""Throughput of durable state on PostgreSQL vs SQLite, with concurrent writer processes.

* Journaled steps per second: ``--writers`` processes (4) each run a workflow of ``--steps`` small named
  steps (one run each, distinct run ids) on one journal; every step is one committed transaction.
  steps/s = all steps / wall time from a common start signal to the last writer's end.
* Memory inserts per second: the writers insert ``--leaves`` leaves each into one memory store, one
  transaction per insert, either each into its own tree or all into one shared tree.

The baseline, in the same run: SQLite with its defaults (journal ``synchronous=FULL``, memory store
``synchronous=NORMAL``) next to PostgreSQL with its defaults (``synchronous_commit=on``). Each cell is
repeated ``--repeats`` times (fresh stores each time): median and min-max. Writers are forked; each
opens its own store after the fork. The load average is printed with the table (the machine may be
shared: absolute numbers are noisy, the ratio less so).

    python bench/durable_throughput.py [--postgres URL] [--writers 4] [--repeats 3] [--quick] [--json PATH]

Without ``--postgres`` a throwaway server is started with ``tests/_postgres_server.py`` (Debian's
``postgresql`` package) and stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.table import Table

from agentflow.dsl import step
from agentflow.memory import StoreCore, TemporalTreeCore
from agentflow.memory._pg_store import PgStoreCore
from agentflow.runtime import run

SEED = 20261203
"""Texts and timestamps are derived from it (the workload is the same in every run)."""


@step
async def tick(i: int) -> int:
    return i + 1


@step
async def chain(n: int) -> int:
    total = 0
    for i in range(n):
        total += await tick(i)
    return total


def _journal_writer(location: str, k: int, steps: int) -> None:
    out = anyio.run(lambda: run(chain, {"n": steps}, run_id=f"w{k}-{uuid.uuid4().hex[:8]}", journal=location))
    assert out.unwrap() == steps * (steps + 1) // 2  # type: ignore[union-attr]


def _memory_writer(location: str, k: int, leaves: int, shared: bool) -> None:
    core = PgStoreCore(location) if location.startswith("postgresql://") else StoreCore(location)
    tree = TemporalTreeCore(core, "shared" if shared else f"tree{k}")
    base = datetime(2024, 1, 1, tzinfo=UTC)
    for i in range(leaves):
        n = SEED + k * 100_000 + i
        tree.insert(
            f"writer {k} fact {i} about topic {n % 13}",
            session=f"s{k}-{i // 50}",
            at=base + timedelta(minutes=i),
        )
    core.close()


def _race(writers: int, work: Callable[[int], None]) -> float:
    """Fork ``writers`` processes that wait for one start signal and run ``work(k)``; wall seconds."""
    go_r, go_w = os.pipe()
    pids = []
    for k in range(writers):
        pid = os.fork()
        if pid == 0:
            os.close(go_w)
            os.read(go_r, 1)
            code = 0
            try:
                work(k)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            os._exit(code)
        pids.append(pid)
    os.close(go_r)
    time.sleep(0.2)  # every writer is waiting at the signal
    t0 = time.perf_counter()
    os.write(go_w, b"G" * writers)
    os.close(go_w)
    failed = 0
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        failed += status != 0
    elapsed = time.perf_counter() - t0
    if failed:
        raise RuntimeError(f"{failed} writer(s) failed (see their tracebacks above)")
    return elapsed


def _fresh(backend: str, pg_url: str, workdir: Path, what: str) -> str:
    tag = f"{what}_{uuid.uuid4().hex[:10]}"
    if backend == "postgresql":
        return f"{pg_url}{'&' if '?' in pg_url else '?'}schema=tp_{tag}"
    return str(workdir / f"{tag}.db")


def _prepare(location: str, what: str) -> None:
    """Create the store's schema before the writers start (so no writer pays for it)."""
    if what == "journal":
        from agentflow.runtime._durable import open_journal

        async def touch() -> None:
            store, _ = open_journal(location)
            async with store:
                await store.list_runs()

        anyio.run(touch)
    else:
        core = PgStoreCore(location) if location.startswith("postgresql://") else StoreCore(location)
        core.close()


def measure(args: argparse.Namespace, pg_url: str, workdir: Path) -> dict[str, Any]:
    cells: dict[str, dict[str, Any]] = {}
    workloads: list[tuple[str, str, int, Callable[[str], Callable[[int], None]]]] = [
        (
            "journaled steps/s",
            "journal",
            args.writers * (args.steps + 1),
            lambda loc: lambda k: _journal_writer(loc, k, args.steps),
        ),
        (
            "memory inserts/s (own tree)",
            "memory",
            args.writers * args.leaves,
            lambda loc: lambda k: _memory_writer(loc, k, args.leaves, False),
        ),
        (
            "memory inserts/s (shared tree)",
            "memory",
            args.writers * args.leaves,
            lambda loc: lambda k: _memory_writer(loc, k, args.leaves, True),
        ),
    ]
    for name, what, units, make in workloads:
        for backend in ("sqlite", "postgresql"):
            rates = []
            for _ in range(args.repeats):
                location = _fresh(backend, pg_url, workdir, what)
                _prepare(location, what)
                rates.append(units / _race(args.writers, make(location)))
            cells[f"{name} | {backend}"] = {
                "median": round(statistics.median(rates), 1),
                "min": round(min(rates), 1),
                "max": round(max(rates), 1),
                "runs": [round(r, 1) for r in rates],
            }
        sqlite, pg = cells[f"{name} | sqlite"]["median"], cells[f"{name} | postgresql"]["median"]
        cells[f"{name} | postgresql / sqlite"] = {"ratio": round(pg / sqlite, 3)}
    return cells


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--postgres", help="a postgresql:// URL (default: start a throwaway server)")
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=200, help="journaled steps per writer")
    ap.add_argument("--leaves", type=int, default=300, help="memory inserts per writer")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="50 steps, 80 leaves, 2 repeats")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.leaves, args.repeats = 50, 80, 2
    console = Console()
    server_dir: Path | None = None
    pg_url = args.postgres
    if pg_url is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from _postgres_server import start

        server_dir = Path(tempfile.mkdtemp(prefix="agentflow-bench-pg-"))
        pg_url = start(server_dir)
    load_before = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="throughput_") as tmp:
            cells = measure(args, pg_url, Path(tmp))
    finally:
        if server_dir is not None:
            from _postgres_server import stop

            stop(server_dir)
            shutil.rmtree(server_dir, ignore_errors=True)
    load_after = os.getloadavg()
    table = Table(
        title=f"durable throughput: {args.writers} writer processes, {args.repeats} repeats "
        f"(load {load_before[0]:.2f} -> {load_after[0]:.2f}, {os.cpu_count()} CPUs)"
    )
    for column in ("measure | backend", "median", "min-max", "ratio"):
        table.add_column(column, justify="left" if column.startswith("measure") else "right")
    for key, cell in cells.items():
        if "ratio" in cell:
            table.add_row(key, "", "", f"{cell['ratio']:.3f}")
        else:
            table.add_row(key, f"{cell['median']:.1f}", f"{cell['min']:.1f}-{cell['max']:.1f}", "")
    console.print(table)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            "writers": args.writers,
            "steps_per_writer": args.steps,
            "leaves_per_writer": args.leaves,
            "repeats": args.repeats,
            "seed": SEED,
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "cells": cells,
        }
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

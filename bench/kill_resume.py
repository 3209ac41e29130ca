"""Crash test of durable execution: SIGKILL a journaled run at random points, resume, check the effects.

The workflow (``pipeline``) fans out over ``WIDTH`` parallel branches; each branch fetches (pure), writes
a *keyed* effect and a *strict* effect, and the join writes one more strict effect. Effects append a
line to a file; a step sleeps a few milliseconds around its effect so kills land before, inside and
after effects.

* keyed effect (``record``): an idempotent step whose effect deduplicates by ``idempotency_key()``
  (it appends ``key\\tvalue`` unless the key is already in the file). After a crash it simply runs
  again with the same key.
* strict effect (``charge``): ``@step(idempotent=False)``, no deduplication at all. The journal never
  re-runs it: if a kill lands between its 'begun' record and its 'committed' record, the resume
  stops with a ``ResumeError``; the harness then plays the operator the error asks for: it looks in
  the effect file and calls ``resolve_step`` with the value found there (the effect happened) or
  ``rerun=True`` (it did not).

Each trial starts a fresh run in a child process, kills it with SIGKILL after a seeded random delay
(1-3 times, each resume can be killed again), then resumes it until it finishes. A trial passes when
the final value and state equal those of an uninterrupted run and every effect line is in its file
exactly once (no duplicate, none missing).

Children are forked from this (already imported) process by default, so a trial costs milliseconds
of start-up; ``--spawn`` starts each child as a fresh ``python`` process instead. The baseline, in the
same run: the workflow without a journal vs with one (journal overhead).

    python bench/kill_resume.py [--trials N] [--seed S] [--json PATH] [--quick] [--spawn]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import anyio
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from agentflow.dsl import Append, Err, Flow, Ok, current_path, par, step, update
from agentflow.errors import ResumeError
from agentflow.runtime import SqliteJournal, idempotency_key, resolve_step, run

WIDTH = 6
"""Parallel branches of the workflow."""

_EFFECTS = Path(os.environ.get("KILL_RESUME_EFFECTS", "."))
"""Directory of the effect files (set per trial; a child inherits it)."""

_READY_AT = [0.0]
"""When the last child attempt reported it was ready to run (``time.perf_counter()``)."""


class Notes(BaseModel):
    """The run state: a log every branch appends to (merged by ``Append``)."""

    seen: Annotated[list[str], Append] = []


def _pause(tag: str) -> float:
    """A deterministic 2-8 ms pause per step, so steps interleave and kills land everywhere."""
    return 0.002 + (sum(map(ord, tag)) % 7) / 1000


def _append_line(file: Path, line: str) -> None:
    fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _lines(file: Path) -> list[str]:
    return file.read_text().splitlines() if file.exists() else []


@step
async def fetch(i: int) -> int:
    await anyio.sleep(_pause(f"fetch{i}"))
    return i * i + 1


@step
async def record(value: int) -> int:
    """Keyed effect: appends ``key\\tvalue`` once per key, however often it runs."""
    key = await idempotency_key()
    await anyio.sleep(_pause(key))
    file = _EFFECTS / "keyed.log"
    if not any(line.split("\t", 1)[0] == key for line in _lines(file)):
        _append_line(file, f"{key}\t{value}")
    await anyio.sleep(0.002)
    return value + 7


@step(idempotent=False)
async def charge(amount: int) -> int:
    """Strict effect: appends ``path\\tvalue`` every time it runs (the journal must run it once)."""
    path = await current_path()
    await anyio.sleep(_pause(path))
    _append_line(_EFFECTS / "strict.log", f"{path}\t{amount * 3}")
    await anyio.sleep(0.002)
    return amount * 3


@step(name="charge")
async def charge_unguarded(amount: int) -> int:
    """The negative control: ``charge`` wrongly left idempotent, so a resume may run it twice."""
    path = await current_path()
    await anyio.sleep(_pause(path))
    _append_line(_EFFECTS / "strict.log", f"{path}\t{amount * 3}")
    await anyio.sleep(0.002)
    return amount * 3


_CONTROL = os.environ.get("KILL_RESUME_CONTROL") == "1"
"""Run the negative control (``charge_unguarded`` in place of ``charge``); a child inherits it."""


def _charge(amount: int) -> Flow[int]:
    return charge_unguarded(amount) if _CONTROL else charge(amount)


@step
async def branch(i: int) -> int:
    a = await fetch(i)
    b = await record(a)
    c = await _charge(b)
    await update(seen=[f"branch{i}:{c}"])
    return c


@step
async def pipeline(width: int) -> int:
    parts = await par.map(branch, list(range(width)))
    total = await _charge(sum(parts))
    await record(total)
    return total


# -- child process ---------------------------------------------------------------------------------


async def _child_run(journal: str, run_id: str, width: int) -> dict[str, Any]:
    out = await run(pipeline, {"width": width}, state=Notes(), run_id=run_id, journal=journal)
    if isinstance(out, Ok):
        assert isinstance(out.state, Notes)
        return {"ok": True, "value": out.value, "state": out.state.model_dump()}
    error = out.error
    refused = error.where if isinstance(error, ResumeError) and "not idempotent" in error.message else None
    return {"ok": False, "refused": refused, "error": str(error)}


def child_main(journal: str, run_id: str, width: int, ready_fd: int | None) -> None:
    """Run (or resume) the workflow; report readiness and the outcome as JSON lines on stdout/fd."""
    if ready_fd is not None:
        os.write(ready_fd, b"R")
    else:
        print("READY", flush=True)
    outcome = anyio.run(_child_run, journal, run_id, width)
    text = json.dumps(outcome)
    if ready_fd is not None:
        os.write(ready_fd, text.encode())
    else:
        print(text, flush=True)


# -- harness ---------------------------------------------------------------------------------------


def _attempt(
    journal: str, run_id: str, width: int, kill_after: float | None, spawn: bool, effects: Path
) -> dict[str, Any] | None:
    """One child attempt; killed after ``kill_after`` s (if it is still running). ``None``: it was killed."""
    if spawn:
        env = {**os.environ, "KILL_RESUME_EFFECTS": str(effects), "KILL_RESUME_CONTROL": str(int(_CONTROL))}
        cmd = [sys.executable, __file__, "--child", journal, run_id, str(width)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "READY":
            raise RuntimeError("child did not start")
        _READY_AT[0] = time.perf_counter()
        if kill_after is not None:
            try:
                proc.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return None
        rest = proc.stdout.read()
        proc.wait()
        return json.loads(rest.strip().splitlines()[-1])
    global _EFFECTS
    _EFFECTS = effects
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(r)
        code = 0
        try:
            child_main(journal, run_id, width, w)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(w)
    if os.read(r, 1) != b"R":
        raise RuntimeError("child did not start")
    _READY_AT[0] = time.perf_counter()
    killed = False
    if kill_after is not None:
        deadline = time.monotonic() + kill_after
        while time.monotonic() < deadline:
            done, _status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(min(0.0005, max(0.0, deadline - time.monotonic())))
        else:
            os.kill(pid, signal.SIGKILL)
            killed = True
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    if killed:
        return None
    data = b"".join(chunks).decode()
    return json.loads(data) if data else None


def _operator_resolve(journal: str, run_id: str, path: str, effects: Path) -> str:
    """What the ResumeError asks a person to do: look for the effect, then record it or allow a rerun."""
    found = [
        line.split("\t", 1)[1] for line in _lines(effects / "strict.log") if line.split("\t", 1)[0] == path
    ]
    if found:
        anyio.run(lambda: resolve_step(run_id, path, journal=journal, value=int(found[0])))
        return "value"
    anyio.run(lambda: resolve_step(run_id, path, journal=journal, rerun=True))
    return "rerun"


def _count_writes(journal: str, run_id: str) -> int:
    """Durable writes one uninterrupted run made: its step rows, non-idempotent ones twice (begun +
    committed), plus claiming and finishing the run."""

    async def count() -> int:
        async with SqliteJournal(journal) as j:
            steps = await j.get_steps(run_id)
        return len(steps) + sum(not s.idempotent for s in steps) + 2

    return anyio.run(count)


def _effect_counts(effects: Path, run_id: str) -> tuple[dict[str, int], dict[str, int]]:
    keyed: dict[str, int] = {}
    for line in _lines(effects / "keyed.log"):
        key = line.split("\t", 1)[0].removeprefix(f"{run_id}:")
        keyed[key] = keyed.get(key, 0) + 1
    strict: dict[str, int] = {}
    for line in _lines(effects / "strict.log"):
        key = line.split("\t", 1)[0]
        strict[key] = strict.get(key, 0) + 1
    return keyed, strict


def trial(
    n: int,
    rng: random.Random,
    horizon: float,
    reference: dict[str, Any],
    expect: tuple[set[str], set[str]],
    spawn: bool,
    width: int,
) -> dict[str, Any]:
    """One trial: a fresh run killed 1-3 times at random moments, then resumed to the end."""
    with tempfile.TemporaryDirectory(prefix=f"kill{n}_") as tmp:
        effects = Path(tmp)
        journal = str(effects / "journal.db")
        run_id = f"trial{n}"
        kills_planned = rng.randint(1, 3)
        kills = landed = resolutions = attempts = 0
        outcome: dict[str, Any] | None = None
        while True:
            attempts += 1
            if attempts > 50:
                raise RuntimeError(f"trial {n} did not finish in 50 attempts: {outcome}")
            kill_after = rng.uniform(0.0, horizon) if kills < kills_planned else None
            if kill_after is not None:
                kills += 1
            outcome = _attempt(journal, run_id, width, kill_after, spawn, effects)
            if outcome is None:
                landed += 1
                continue
            if outcome.get("refused"):
                _operator_resolve(journal, run_id, outcome["refused"], effects)
                resolutions += 1
                continue
            if not outcome["ok"]:
                raise RuntimeError(f"trial {n} failed: {outcome['error']}")
            break
        keyed, strict = _effect_counts(effects, run_id)
    violations = sum(abs(keyed.get(k, 0) - 1) for k in expect[0] | set(keyed))
    violations += sum(abs(strict.get(k, 0) - 1) for k in expect[1] | set(strict))
    identical = outcome["value"] == reference["value"] and outcome["state"] == reference["state"]
    return {
        "identical": identical,
        "violations": violations,
        "kills": kills,
        "landed": landed,
        "resolutions": resolutions,
        "attempts": attempts,
    }


async def _timed(width: int, journal: str | None, repeats: int, synchronous: str = "FULL") -> float:
    """Best-of-``repeats`` wall time of one uninterrupted run (in this process)."""
    best = float("inf")
    for k in range(repeats):
        t0 = time.perf_counter()
        if journal is None:
            out = await run(pipeline, {"width": width}, state=Notes())
        else:
            async with SqliteJournal(journal, synchronous="FULL" if synchronous == "FULL" else "NORMAL") as j:
                out = await run(pipeline, {"width": width}, state=Notes(), run_id=f"timing{k}", journal=j)
        assert not isinstance(out, Err), out
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--quick", action="store_true", help="10 trials")
    ap.add_argument("--spawn", action="store_true", help="fresh python process per attempt (slower)")
    ap.add_argument("--width", type=int, default=WIDTH)
    ap.add_argument(
        "--control-trials",
        type=int,
        default=10,
        help="trials of the negative control (the strict step wrongly left idempotent); 0 to skip",
    )
    args = ap.parse_args(argv)
    trials = 10 if args.quick else args.trials
    rng = random.Random(args.seed)
    console = Console()
    t_start = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="kill_ref_") as tmp:
        effects = Path(tmp)
        global _EFFECTS
        _EFFECTS = effects / "timing"
        _EFFECTS.mkdir()
        plain_s = anyio.run(_timed, args.width, None, 5)
        journaled_s = anyio.run(_timed, args.width, str(_EFFECTS / "timing.db"), 5)
        journaled_normal_s = anyio.run(_timed, args.width, str(_EFFECTS / "timing_normal.db"), 5, "NORMAL")
        reference = _attempt(str(effects / "journal.db"), "reference", args.width, None, args.spawn, effects)
        ref_seconds = time.perf_counter() - _READY_AT[0]
        assert reference is not None and reference["ok"], reference
        keyed, strict = _effect_counts(effects, "reference")
        expect = (set(keyed), set(strict))
        journal_writes = _count_writes(str(effects / "journal.db"), "reference")
    horizon = ref_seconds

    results = [trial(n, rng, horizon, reference, expect, args.spawn, args.width) for n in range(trials)]
    global _CONTROL
    _CONTROL = True
    control_rng = random.Random(args.seed + 1)
    control = [
        trial(n, control_rng, horizon, reference, expect, args.spawn, args.width)
        for n in range(args.control_trials)
    ]
    _CONTROL = False
    summary = {
        "trials": trials,
        "identical_results": sum(r["identical"] for r in results),
        "exactly_once_violations": sum(r["violations"] for r in results),
        "kills_sent": sum(r["kills"] for r in results),
        "kills_landed": sum(r["landed"] for r in results),
        "operator_resolutions": sum(r["resolutions"] for r in results),
        "attempts": sum(r["attempts"] for r in results),
        "control_trials": len(control),
        "control_exactly_once_violations": sum(r["violations"] for r in control),
        "effects_per_run": {"keyed": len(expect[0]), "strict": len(expect[1])},
        "width": args.width,
        "seed": args.seed,
        "mode": "spawn" if args.spawn else "fork",
        "reference_run_s": round(ref_seconds, 4),
        "baseline_no_journal_s": round(plain_s, 4),
        "journaled_s": round(journaled_s, 4),
        "journal_overhead_ratio": round(journaled_s / plain_s, 3),
        "journaled_synchronous_normal_s": round(journaled_normal_s, 4),
        "journal_normal_overhead_ratio": round(journaled_normal_s / plain_s, 3),
        "journal_writes_per_run": journal_writes,
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    table = Table(title=f"kill/resume: {trials} trials, SIGKILL at random points (seed {args.seed})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        table.add_row(k, str(v))
    console.print(table)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    ok = summary["identical_results"] == trials and summary["exactly_once_violations"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), None)
    else:
        sys.exit(main())

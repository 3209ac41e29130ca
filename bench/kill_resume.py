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

``--race``: exactly-once under contention (run leases). Each trial starts ``--race-procs`` worker
processes (2) at once, each running ``--race-runners`` concurrent ``agentflow.run`` calls (2) of the
*same* run id on the same journal, every runner opening the journal itself. A runner refused because
another holds the run's lease (in its own process or another) retries after a few milliseconds until
the run is finished (it then replays it whole). In half the trials one worker is SIGKILLed at a random
moment; the others take the run over. A trial passes when every runner that finished got the reference
value and state and every effect is in its file exactly once; the table counts the refusals that
show the runners really raced.

``--journal postgresql://...``: the same trials on a PostgreSQL journal (a fresh schema per invocation;
every trial its own run id). ``--stop-trials N`` adds lease-expiry takeovers: a holder is SIGSTOPped in
the middle of a run, a second process is refused until the holder's lease (``--lease-s``, 2 s) expires
on the journal's clock, then takes the run over and finishes it; the stopped holder is then continued
and must record nothing more (its writes are fenced). If the taker is refused at a step the stopped
holder began, the operator first makes sure that holder is gone (SIGKILL), then settles the step.
PostgreSQL only: a SQLite holder stopped inside a write transaction keeps the file's write lock, which
blocks every other writer until it continues (the server ends such a session on PostgreSQL).

Keyed effects deduplicate atomically (a marker file created with a hard link, as a unique column
would), so an old holder that wakes up after a takeover cannot apply one twice.

    python bench/kill_resume.py [--trials N] [--seed S] [--json PATH] [--quick] [--spawn]
    python bench/kill_resume.py --race [--trials N] [--race-procs 2] [--race-runners 2]
    python bench/kill_resume.py --race --journal postgresql://... --race-procs 3 --race-runners 1 \
        --race-kill-rate 1 --stop-trials 5
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
from agentflow.runtime import (
    Journal,
    PostgresJournal,
    SqliteJournal,
    idempotency_key,
    resolve_step,
    run,
)
from agentflow.runtime._durable import open_journal

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


def _apply_once(key: str, value: int) -> None:
    """The keyed effect's target: one marker file per key holding the value, created atomically (written
    to a temporary file, then hard-linked into place), so the first application wins and any later one,
    even racing, is a no-op, as with a unique column."""
    folder = _EFFECTS / "keyed"
    folder.mkdir(exist_ok=True)
    marker = folder / key.replace("/", "|")
    if marker.exists():
        return
    tmp = folder / f".{os.getpid()}.{random.random()}.tmp"
    tmp.write_text(str(value))
    try:
        os.link(tmp, marker)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


@step
async def record(value: int) -> int:
    """Keyed effect: applied once per ``idempotency_key()``, however often it runs."""
    key = await idempotency_key()
    await anyio.sleep(_pause(key))
    _apply_once(key, value)
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
        store, _ = open_journal(journal)
        async with store:
            steps = await store.get_steps(run_id)
        return len(steps) + sum(not s.idempotent for s in steps) + 2

    return anyio.run(count)


def _effect_counts(effects: Path, run_id: str) -> tuple[dict[str, int], dict[str, int]]:
    keyed: dict[str, int] = {}
    folder = effects / "keyed"
    for marker in sorted(folder.iterdir()) if folder.exists() else []:
        if not marker.name.startswith("."):
            key = marker.name.replace("|", "/").removeprefix(f"{run_id}:")
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
    journal_url: str | None = None,
    tag: str = "trial",
) -> dict[str, Any]:
    """One trial: a fresh run killed 1-3 times at random moments, then resumed to the end."""
    with tempfile.TemporaryDirectory(prefix=f"kill{n}_") as tmp:
        effects = Path(tmp)
        journal = journal_url or str(effects / "journal.db")
        run_id = f"{tag}{n}"
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


# -- race mode ---------------------------------------------------------------------------------------


async def _race_runner(journal: str, run_id: str, width: int, rng: random.Random) -> dict[str, Any]:
    """Run the workflow until it finishes (or a step is refused); count lease refusals on the way."""
    held_here = held_elsewhere = 0
    while True:
        try:
            out = await run(pipeline, {"width": width}, state=Notes(), run_id=run_id, journal=journal)
        except ResumeError as exc:
            if "already being run in this process" in exc.message:
                held_here += 1
            elif "is being run by" in exc.message:
                held_elsewhere += 1
            else:
                raise
            await anyio.sleep(rng.uniform(0.001, 0.008))
            continue
        counts = {"held_here": held_here, "held_elsewhere": held_elsewhere}
        if isinstance(out, Ok):
            assert isinstance(out.state, Notes)
            return {"ok": True, "value": out.value, "state": out.state.model_dump(), **counts}
        error = out.error
        refused = (
            error.where if isinstance(error, ResumeError) and "not idempotent" in error.message else None
        )
        return {"ok": False, "refused": refused, "error": str(error), **counts}


def _race_worker(
    journal: str, run_id: str, width: int, runners: int, seed: int, go_fd: int, out_fd: int
) -> None:
    """A worker process: wait for the start signal, race ``runners`` concurrent runs, report them as JSON."""
    os.read(go_fd, 1)

    async def race() -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = [{} for _ in range(runners)]

        async def one(k: int) -> None:
            try:
                results[k] = await _race_runner(journal, run_id, width, random.Random(seed * 31 + k))
            except Exception as exc:  # reported, so the harness fails the trial with the reason
                results[k] = {"ok": False, "refused": None, "error": f"{type(exc).__name__}: {exc}"}

        async with anyio.create_task_group() as tg:
            for k in range(runners):
                tg.start_soon(one, k)
        return results

    os.write(out_fd, json.dumps(anyio.run(race)).encode())


def _race_round(
    journal: str, run_id: str, width: int, procs: int, runners: int, kill_after: float | None, seed: int
) -> tuple[list[dict[str, Any]], bool]:
    """One round: ``procs`` forked workers race; one may be SIGKILLed. Returns the finished runners'
    reports and whether a kill landed."""
    go_r, go_w = os.pipe()
    children: list[tuple[int, int]] = []
    for p in range(procs):
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(go_w)
            os.close(out_r)
            code = 0
            try:
                _race_worker(journal, run_id, width, runners, seed * 7 + p, go_r, out_w)
            except BaseException:
                code = 1
            os._exit(code)
        os.close(out_w)
        children.append((pid, out_r))
    os.close(go_r)
    os.write(go_w, b"G" * procs)  # all workers start together
    os.close(go_w)
    landed = False
    if kill_after is not None:
        victim = children[seed % procs][0]
        deadline = time.monotonic() + kill_after
        while time.monotonic() < deadline:
            if os.waitpid(victim, os.WNOHANG)[0]:
                break
            time.sleep(0.0005)
        else:
            os.kill(victim, signal.SIGKILL)
            os.waitpid(victim, 0)  # reaped at once: its lease is free for the survivors
            landed = True
    reports: list[dict[str, Any]] = []
    for pid, out_r in children:
        chunks = []
        while chunk := os.read(out_r, 65536):
            chunks.append(chunk)
        os.close(out_r)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        if chunks:
            reports.extend(json.loads(b"".join(chunks).decode()))
    return reports, landed


def race_trial(
    n: int,
    rng: random.Random,
    horizon: float,
    reference: dict[str, Any],
    expect: tuple[set[str], set[str]],
    width: int,
    procs: int,
    runners: int,
    kill_rate: float = 0.5,
    journal_url: str | None = None,
) -> dict[str, Any]:
    """One race trial (see the module docstring); rounds repeat after an operator resolution or a kill."""
    with tempfile.TemporaryDirectory(prefix=f"race{n}_") as tmp:
        effects = Path(tmp)
        global _EFFECTS
        _EFFECTS = effects
        journal = journal_url or str(effects / "journal.db")
        run_id = f"race{n}"
        kill_after = rng.uniform(0.0, horizon) if rng.random() < kill_rate else None
        finished: list[dict[str, Any]] = []
        rounds = kills = resolutions = held_here = held_elsewhere = 0
        errors: list[str] = []
        while not finished:
            rounds += 1
            if rounds > 50:
                raise RuntimeError(f"race trial {n} did not finish in 50 rounds: {errors[-3:]}")
            reports, landed = _race_round(
                journal, run_id, width, procs, runners, kill_after, rng.randrange(1 << 30)
            )
            kill_after = None
            kills += landed
            held_here += sum(r.get("held_here", 0) for r in reports)
            held_elsewhere += sum(r.get("held_elsewhere", 0) for r in reports)
            finished = [r for r in reports if r.get("ok")]
            refused = {r["refused"] for r in reports if r.get("refused")}
            errors += [r["error"] for r in reports if not r.get("ok") and not r.get("refused")]
            if not finished:
                for path in sorted(refused):
                    _operator_resolve(journal, run_id, path, effects)
                    resolutions += 1
        keyed, strict = _effect_counts(effects, run_id)
    violations = sum(abs(keyed.get(k, 0) - 1) for k in expect[0] | set(keyed))
    violations += sum(abs(strict.get(k, 0) - 1) for k in expect[1] | set(strict))
    identical = all(r["value"] == reference["value"] and r["state"] == reference["state"] for r in finished)
    return {
        "identical": identical,
        "violations": violations,
        "finished_runners": len(finished),
        "unexpected_errors": errors,
        "held_here": held_here,
        "held_elsewhere": held_elsewhere,
        "kills": kills,
        "resolutions": resolutions,
        "rounds": rounds,
    }


def _race_summary(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    return {
        "mode": "race",
        "trials": len(results),
        "processes_per_trial": args.race_procs,
        "runners_per_process": args.race_runners,
        "identical_results": sum(r["identical"] for r in results),
        "exactly_once_violations": sum(r["violations"] for r in results),
        "runners_finished": sum(r["finished_runners"] for r in results),
        "unexpected_errors": sum(len(r["unexpected_errors"]) for r in results),
        "refused_same_process": sum(r["held_here"] for r in results),
        "refused_other_process": sum(r["held_elsewhere"] for r in results),
        "kills_landed": sum(r["kills"] for r in results),
        "operator_resolutions": sum(r["resolutions"] for r in results),
        "rounds": sum(r["rounds"] for r in results),
        "width": args.width,
        "seed": args.seed,
    }


def _journal_object(location: str, lease_s: float | None = None, synchronous: str = "FULL") -> Journal:
    """A journal at ``location`` (a file or a postgresql:// URL), with a lease length if given."""
    options: dict[str, Any] = {} if lease_s is None else {"lease_s": lease_s}
    if location.startswith("postgresql://"):
        return PostgresJournal(location, **options)
    return SqliteJournal(location, synchronous="FULL" if synchronous == "FULL" else "NORMAL", **options)


async def _timed(
    width: int, journal: str | None, repeats: int, synchronous: str = "FULL", tag: str = "timing"
) -> float:
    """Best-of-``repeats`` wall time of one uninterrupted run (in this process)."""
    best = float("inf")
    for k in range(repeats):
        t0 = time.perf_counter()
        if journal is None:
            out = await run(pipeline, {"width": width}, state=Notes())
        else:
            async with _journal_object(journal, synchronous=synchronous) as j:
                out = await run(pipeline, {"width": width}, state=Notes(), run_id=f"{tag}{k}", journal=j)
        assert not isinstance(out, Err), out
        best = min(best, time.perf_counter() - t0)
    return best


# -- SIGSTOP takeover -----------------------------------------------------------------------------


def _fork(fn: Any, *args: Any) -> tuple[int, int]:
    """Run ``fn(*args, out_fd)`` in a forked child; returns its pid and the read end of its pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            fn(*args, w)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        os._exit(code)
    os.close(w)
    return pid, r


def _collect(pid: int, r: int) -> dict[str, Any] | None:
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    data = b"".join(chunks).decode()
    return json.loads(data) if data else None


def _holder(journal: str, run_id: str, width: int, lease_s: float, out_fd: int) -> None:
    """The holder that gets SIGSTOPped: one attempt of the run with a short lease."""

    async def go() -> dict[str, Any]:
        async with _journal_object(journal, lease_s) as j:
            out = await run(pipeline, {"width": width}, state=Notes(), run_id=run_id, journal=j)
        if isinstance(out, Ok):
            return {"ok": True}
        return {"ok": False, "error": str(out.error), "lost": "lost its lease" in str(out.error)}

    os.write(out_fd, b"R")
    os.write(out_fd, json.dumps(anyio.run(go)).encode())


def _taker(journal: str, run_id: str, width: int, lease_s: float, out_fd: int) -> None:
    """The second process: retries while the lease is held, then runs the run to its end."""

    async def go() -> dict[str, Any]:
        started, refusals = time.time(), 0
        while True:
            async with _journal_object(journal, lease_s) as j:
                try:
                    claimed_at = time.time()
                    out = await run(pipeline, {"width": width}, state=Notes(), run_id=run_id, journal=j)
                except ResumeError as exc:
                    if "is being run by" not in exc.message:
                        raise
                    refusals += 1
                    await anyio.sleep(0.05)
                    continue
            waited = {"refusals": refusals, "claimed_at": claimed_at, "started": started}
            if isinstance(out, Ok):
                assert isinstance(out.state, Notes)
                return {"ok": True, "value": out.value, "state": out.state.model_dump(), **waited}
            error = out.error
            refused = (
                error.where if isinstance(error, ResumeError) and "not idempotent" in error.message else None
            )
            return {"ok": False, "refused": refused, "error": str(error), **waited}

    os.write(out_fd, json.dumps(anyio.run(go)).encode())


def _wait_claimed(journal: str, run_id: str) -> None:
    """Wait until the run's lease is held (the holder claimed it)."""

    async def poll() -> None:
        store, _ = open_journal(journal)
        async with store:
            with anyio.fail_after(60):
                while True:
                    record = await store.get_run(run_id)
                    if record is not None and record.lease_expires is not None:
                        return
                    await anyio.sleep(0.002)

    anyio.run(poll)


def stop_trial(
    n: int,
    rng: random.Random,
    horizon: float,
    reference: dict[str, Any],
    expect: tuple[set[str], set[str]],
    width: int,
    journal_url: str | None,
    lease_s: float,
    run_s: float,
) -> dict[str, Any]:
    """A holder SIGSTOPped mid-run (``run_s``: how long a run takes in-process); a second process takes
    the run over when the lease expires."""
    with tempfile.TemporaryDirectory(prefix=f"stop{n}_") as tmp:
        effects = Path(tmp)
        global _EFFECTS
        _EFFECTS = effects
        journal = journal_url or str(effects / "journal.db")
        run_id = f"stop{n}"
        holder_pid, holder_r = _fork(_holder, journal, run_id, width, lease_s)
        if os.read(holder_r, 1) != b"R":
            raise RuntimeError("holder did not start")
        _wait_claimed(journal, run_id)
        time.sleep(rng.uniform(0.1, 0.9) * run_s)  # within the holder's run (its in-process duration)
        os.kill(holder_pid, signal.SIGSTOP)
        stopped_at = time.time()
        resolutions, killed, rounds = 0, False, 0
        takeover_s: float | None = None
        while True:
            rounds += 1
            taker = _collect(*_fork(_taker, journal, run_id, width, lease_s))
            assert taker is not None
            if takeover_s is None:  # from the SIGSTOP to the first claim that got the lease
                takeover_s = round(taker["claimed_at"] - stopped_at, 3)
            if taker.get("ok"):
                break
            if not taker.get("refused"):
                raise RuntimeError(f"stop trial {n}: {taker['error']}")
            # The stopped holder began that step: make sure it is gone before settling it.
            if not killed:
                os.kill(holder_pid, signal.SIGKILL)
                killed = True
            _operator_resolve(journal, run_id, taker["refused"], effects)
            resolutions += 1
        if not killed:
            os.kill(holder_pid, signal.SIGCONT)
        holder = _collect(holder_pid, holder_r)
        keyed, strict = _effect_counts(effects, run_id)
    violations = sum(abs(keyed.get(k, 0) - 1) for k in expect[0] | set(keyed))
    violations += sum(abs(strict.get(k, 0) - 1) for k in expect[1] | set(strict))
    return {
        "identical": taker["value"] == reference["value"] and taker["state"] == reference["state"],
        "violations": violations,
        "taker_refusals": taker["refusals"],
        "takeover_wait_s": takeover_s,
        "holder_fenced": bool(holder and holder.get("lost")),
        "holder_finished_before_stop": bool(holder and holder.get("ok")),
        "holder_killed_for_resolution": killed,
        "resolutions": resolutions,
        "rounds": rounds,
    }


def _print_and_save(summary: dict[str, Any], title: str, json_path: Path | None, console: Console) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        table.add_row(k, str(v))
    console.print(table)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(summary, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--quick", action="store_true", help="10 trials")
    ap.add_argument("--spawn", action="store_true", help="fresh python process per attempt (slower)")
    ap.add_argument("--width", type=int, default=WIDTH)
    ap.add_argument("--race", action="store_true", help="runners in one process and across processes race")
    ap.add_argument("--race-procs", type=int, default=2, help="worker processes per race trial")
    ap.add_argument("--race-runners", type=int, default=2, help="concurrent runs per worker process")
    ap.add_argument("--race-kill-rate", type=float, default=0.5, help="share of race trials with a SIGKILL")
    ap.add_argument("--journal", help="a postgresql:// URL to run the trials on (default: SQLite files)")
    ap.add_argument("--stop-trials", type=int, default=0, help="SIGSTOP lease-expiry takeover trials")
    ap.add_argument("--lease-s", type=float, default=2.0, help="lease length in the SIGSTOP trials")
    ap.add_argument(
        "--control-trials",
        type=int,
        default=10,
        help="trials of the negative control (the strict step wrongly left idempotent); 0 to skip",
    )
    args = ap.parse_args(argv)
    trials = 10 if args.quick else args.trials
    rng = random.Random(args.seed)
    url: str | None = None
    if args.journal is not None:
        if not args.journal.startswith("postgresql://"):
            ap.error("--journal takes a postgresql:// URL (SQLite journals are made per trial)")
        url = f"{args.journal}{'&' if '?' in args.journal else '?'}schema=kr_{os.getpid()}_{int(time.time())}"
    if args.stop_trials and url is None:
        # A SQLite journal's writers share one file lock: a holder stopped inside a write transaction
        # blocks every writer until it continues, so a stopped holder can only be taken over on a server.
        ap.error("--stop-trials needs --journal postgresql://... (see the module docstring)")
    console = Console()
    t_start = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="kill_ref_") as tmp:
        effects = Path(tmp)
        global _EFFECTS
        _EFFECTS = effects / "timing"
        _EFFECTS.mkdir()
        plain_s = anyio.run(_timed, args.width, None, 5)
        journaled_s = anyio.run(_timed, args.width, url or str(_EFFECTS / "timing.db"), 5)
        journaled_normal_s = anyio.run(
            _timed, args.width, url or str(_EFFECTS / "timing_normal.db"), 5, "NORMAL", "timing_n"
        )
        ref_journal = url or str(effects / "journal.db")
        reference = _attempt(ref_journal, "reference", args.width, None, args.spawn, effects)
        ref_seconds = time.perf_counter() - _READY_AT[0]
        assert reference is not None and reference["ok"], reference
        keyed, strict = _effect_counts(effects, "reference")
        expect = (set(keyed), set(strict))
        journal_writes = _count_writes(ref_journal, "reference")
    horizon = ref_seconds

    if args.race:
        race_results = [
            race_trial(
                n,
                rng,
                horizon * 1.5,
                reference,
                expect,
                args.width,
                args.race_procs,
                args.race_runners,
                args.race_kill_rate,
                url,
            )
            for n in range(trials)
        ]
        race = _race_summary(race_results, args)
        race["journal"] = "postgresql" if url else "sqlite"
        stops = [
            stop_trial(n, rng, horizon, reference, expect, args.width, url, args.lease_s, journaled_s)
            for n in range(args.stop_trials)
        ]
        if stops:
            race["stop_trials"] = len(stops)
            race["stop_identical_results"] = sum(r["identical"] for r in stops)
            race["stop_exactly_once_violations"] = sum(r["violations"] for r in stops)
            race["stop_old_holder_fenced"] = sum(r["holder_fenced"] for r in stops)
            race["stop_old_holder_killed_for_resolution"] = sum(
                r["holder_killed_for_resolution"] for r in stops
            )
            race["stop_holder_finished_before_stop"] = sum(r["holder_finished_before_stop"] for r in stops)
            race["stop_taker_refusals"] = sum(r["taker_refusals"] for r in stops)
            race["stop_takeover_wait_s"] = [r["takeover_wait_s"] for r in stops]
            race["lease_s"] = args.lease_s
        race["reference_run_s"] = round(ref_seconds, 4)
        race["seconds"] = round(time.perf_counter() - t_start, 2)
        _print_and_save(
            race,
            f"kill/resume race: {trials} trials, {args.race_procs} processes x "
            f"{args.race_runners} runners on one run id (seed {args.seed})",
            args.json,
            console,
        )
        for r in race_results:
            for e in r["unexpected_errors"]:
                console.print(f"[red]unexpected:[/] {e}")
        passed = race["identical_results"] == trials and race["exactly_once_violations"] == 0
        passed = passed and all(r["identical"] and r["violations"] == 0 for r in stops)
        return 0 if passed and race["unexpected_errors"] == 0 else 1

    results = [trial(n, rng, horizon, reference, expect, args.spawn, args.width, url) for n in range(trials)]
    global _CONTROL
    _CONTROL = True
    control_rng = random.Random(args.seed + 1)
    control = [
        trial(n, control_rng, horizon, reference, expect, args.spawn, args.width, url, "control")
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
        "journal": "postgresql" if url else "sqlite",
        "reference_run_s": round(ref_seconds, 4),
        "baseline_no_journal_s": round(plain_s, 4),
        "journaled_s": round(journaled_s, 4),
        "journal_overhead_ratio": round(journaled_s / plain_s, 3),
        "journaled_synchronous_normal_s": round(journaled_normal_s, 4),
        "journal_normal_overhead_ratio": round(journaled_normal_s / plain_s, 3),
        "journal_writes_per_run": journal_writes,
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    _print_and_save(
        summary,
        f"kill/resume: {trials} trials, SIGKILL at random points (seed {args.seed})",
        args.json,
        console,
    )
    ok = summary["identical_results"] == trials and summary["exactly_once_violations"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), None)
    else:
        sys.exit(main())

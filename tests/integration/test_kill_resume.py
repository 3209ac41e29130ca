"""Crash test in real processes: a journaled run is SIGKILLed at seeded random points and resumed.

A small version of ``bench/kill_resume.py`` (which runs 60 trials): every trial must end with the value
and state of an uninterrupted run, and every effect line must be in its file exactly once. Each attempt
is a fresh ``python`` process; the journal and the effect files live in the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentflow.runs import show_run
from agentflow.runtime import resolve_step

pytestmark = pytest.mark.integration

CHILD = textwrap.dedent(
    '''
    """One attempt of the crash-test workflow: run or resume run RUN_ID of JOURNAL."""
    import json, os, sys
    from pathlib import Path
    from typing import Annotated

    import anyio
    from pydantic import BaseModel

    from agentflow.dsl import Append, Ok, current_path, par, step, update
    from agentflow.errors import ResumeError
    from agentflow.runtime import idempotency_key, run

    EFFECTS = Path(os.environ["EFFECTS"])


    class Notes(BaseModel):
        seen: Annotated[list[str], Append] = []


    def append(name: str, line: str) -> None:
        fd = os.open(EFFECTS / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)


    def lines(name: str) -> list[str]:
        f = EFFECTS / name
        return f.read_text().splitlines() if f.exists() else []


    @step
    async def record(value: int) -> int:
        key = await idempotency_key()
        await anyio.sleep(0.003)
        if not any(line.split("\\t")[0] == key for line in lines("keyed.log")):
            append("keyed.log", f"{key}\\t{value}")
        await anyio.sleep(0.002)
        return value + 1


    @step(idempotent=False)
    async def charge(amount: int) -> int:
        path = await current_path()
        await anyio.sleep(0.003)
        append("strict.log", f"{path}\\t{amount * 2}")
        await anyio.sleep(0.002)
        return amount * 2


    @step
    async def branch(i: int) -> int:
        b = await record(i * i)
        c = await charge(b)
        await update(seen=[f"b{i}:{c}"])
        return c


    @step
    async def pipeline(width: int) -> int:
        parts = await par.map(branch, list(range(width)))
        return await charge(sum(parts))


    async def main(journal: str, run_id: str) -> None:
        print("READY", flush=True)
        out = await run(pipeline, {"width": 4}, state=Notes(), run_id=run_id, journal=journal)
        if isinstance(out, Ok):
            print(json.dumps({"value": out.value, "state": out.state.model_dump()}), flush=True)
        elif isinstance(out.error, ResumeError) and "not idempotent" in out.error.message:
            print(json.dumps({"refused": out.error.where}), flush=True)
        else:
            print(json.dumps({"error": str(out.error)}), flush=True)


    anyio.run(main, sys.argv[1], sys.argv[2])
    '''
)


def _effect_lines(effects: Path) -> int:
    return sum(
        len((effects / n).read_text().splitlines())
        for n in ("keyed.log", "strict.log")
        if (effects / n).exists()
    )


def _attempt(script: Path, effects: Path, run_id: str, kill_at: int | None) -> dict[str, Any] | None:
    """Start one attempt; SIGKILL it once ``kill_at`` effect lines exist (a point in its progress, so
    the kill lands while it runs however fast the machine is). ``None`` when the kill landed."""
    env = {**os.environ, "EFFECTS": str(effects)}
    cmd = [sys.executable, str(script), str(effects / "journal.db"), run_id]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    if kill_at is not None:
        while proc.poll() is None and _effect_lines(effects) < kill_at:
            time.sleep(0.0005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return None
    out = proc.stdout.read()
    assert proc.wait() == 0, out
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _counts(effects: Path, name: str, run_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    file = effects / name
    for line in file.read_text().splitlines() if file.exists() else []:
        key = line.split("\t")[0].removeprefix(f"{run_id}:")
        counts[key] = counts.get(key, 0) + 1
    return counts


def _resolve_like_an_operator(effects: Path, run_id: str, path: str) -> None:
    """Do what the ResumeError asks: look for the effect, record its result or allow a rerun."""
    found = [
        line.split("\t")[1]
        for line in (effects / "strict.log").read_text().splitlines()
        if line.split("\t")[0] == path
    ]
    journal = str(effects / "journal.db")
    if found:
        anyio.run(lambda: resolve_step(run_id, path, journal=journal, value=int(found[0])))
    else:
        anyio.run(lambda: resolve_step(run_id, path, journal=journal, rerun=True))


def test_sigkilled_runs_resume_to_the_same_result_with_effects_exactly_once(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    ref_dir = tmp_path / "reference"
    ref_dir.mkdir()
    reference = _attempt(script, ref_dir, "ref", None)
    assert reference is not None and "value" in reference, reference
    expected_keyed = set(_counts(ref_dir, "keyed.log", "ref"))
    expected_strict = set(_counts(ref_dir, "strict.log", "ref"))
    assert len(expected_keyed) == 4 and len(expected_strict) == 5

    rng = random.Random(6)
    landed = 0
    for trial in range(5):
        effects = tmp_path / f"trial{trial}"
        effects.mkdir()
        run_id = f"t{trial}"
        # Kill once a random number of effects happened: before the first, between any two, or
        # after the second-to-last (the last effect and the commits after it are still to come).
        kill_at: int | None = rng.randrange(0, len(expected_keyed) + len(expected_strict))
        outcome: dict[str, Any] | None = None
        for _attempt_no in range(20):
            outcome = _attempt(script, effects, run_id, kill_at)
            kill_at = None
            if outcome is None:
                landed += 1
                continue
            if "refused" in outcome:
                _resolve_like_an_operator(effects, run_id, outcome["refused"])
                continue
            break
        assert outcome is not None and "value" in outcome, outcome
        assert outcome == reference
        keyed = _counts(effects, "keyed.log", run_id)
        strict = _counts(effects, "strict.log", run_id)
        assert keyed == dict.fromkeys(expected_keyed, 1)
        assert strict == dict.fromkeys(expected_strict, 1)
        assert anyio.run(show_run, run_id, str(effects / "journal.db")).run.status == "completed"
    assert landed >= 1  # at least one kill hit a running process (else nothing was tested)

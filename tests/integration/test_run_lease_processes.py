"""Run leases across real processes: two ``python`` processes start the same run id on one journal at
once; the non-idempotent effect happens once, the loser is refused naming the holder, and after a
SIGKILL of the holder the run is taken over at once (its process is gone) and finished without
running the effect again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path

    import anyio

    from agentflow.dsl import Ok, step
    from agentflow.errors import ResumeError
    from agentflow.runtime import run

    journal, effects, start_at, release = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])


    @step(idempotent=False)
    async def charge() -> int:
        fd = os.open(effects, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, f"{os.getpid()}\\n".encode())
        os.close(fd)
        print("CHARGED", flush=True)
        while not release.exists():  # the test says when the effect's step may finish
            await anyio.sleep(0.01)
        return 42


    @step
    async def wf() -> int:
        return await charge()


    async def main() -> None:
        await anyio.sleep(max(0.0, start_at - time.time()))
        try:
            out = await run(wf, run_id="shared", journal=journal)
        except ResumeError as exc:
            print(json.dumps({"refused": exc.message}), flush=True)
            return
        print(json.dumps({"value": out.value if isinstance(out, Ok) else None, "error": str(getattr(out, "error", ""))}), flush=True)


    anyio.run(main)
    """
)


def _start(
    script: Path, journal: Path, effects: Path, start_at: float, release: Path
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script), str(journal), str(effects), str(start_at), str(release)],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_two_processes_racing_for_one_run_id_run_the_effect_once(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    journal, effects = tmp_path / "j.db", tmp_path / "effects.log"
    release = tmp_path / "release"
    start_at = time.time() + 2.0  # both import agentflow first, then start together
    procs = [_start(script, journal, effects, start_at, release) for _ in range(2)]
    # The holder's effect step does not finish until the other process has ended, so that one can only
    # have met the lease (whichever process got it), never a finished run.
    deadline = time.time() + 120
    while all(p.poll() is None for p in procs) and time.time() < deadline:
        time.sleep(0.05)
    release.touch()
    outputs = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    assert sorted("value" in o for o in outputs) == [False, True]
    winner = next(o for o in outputs if "value" in o)
    loser = next(o for o in outputs if "refused" in o)
    assert winner["value"] == 42
    assert "is being run by process" in loser["refused"]
    assert len(effects.read_text().splitlines()) == 1


def test_killed_holder_is_taken_over_at_once_and_its_begun_effect_is_not_rerun(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    journal, effects = tmp_path / "j.db", tmp_path / "effects.log"
    holder = _start(script, journal, effects, 0.0, tmp_path / "never")
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "CHARGED"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    # The lease has most of its 30 s left, but its holder is gone: the next process takes over at once
    # and refuses to run the begun non-idempotent step again (an operator must settle it).
    second = _start(script, journal, effects, 0.0, tmp_path / "never")
    out = json.loads(second.communicate(timeout=120)[0].strip().splitlines()[-1])
    assert "not idempotent" in out["error"]
    assert len(effects.read_text().splitlines()) == 1

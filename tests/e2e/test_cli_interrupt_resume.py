"""Issue 19's first-hour promise: Ctrl-C loses nothing. A plan runs with `agentflow run` in a subprocess on
the real embedded engine, is SIGINTed half-way, shows up in `agentflow runs list`, and `agentflow resume RUN`
finishes it without re-running the LLM calls that had finished and without repeating `--input`.

The plan's third step is a tool that waits for the test to open a gate (a file), so the interruption lands
at a known point: after two LLM steps finished, before the third.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from agentflow.dsl import LLMCall, StepReplayed
from agentflow.runs import show_run

pytestmark = pytest.mark.e2e

GATE = '''
"""A tool that waits until the test opens its gate (the file NAME.open), saying when it starts waiting."""

from pathlib import Path

import anyio


async def wait_for_gate(name: str) -> str:
    """Wait until the file NAME.open exists.

    Args:
        name: The gate's name.
    """
    Path(f"{name}.waiting").write_text("waiting")
    while not Path(f"{name}.open").exists():
        await anyio.sleep(0.05)
    return f"gate {name} opened"
'''

PLAN = """
apiVersion: agentflow/v1
kind: Plan
name: interrupted
engine:
  spec: llamacpp:default
  max_tokens: 12
tools:
  - gate:wait_for_gate
inputs:
  topic: {type: string}
outputs:
  first: {value: "{{steps.first}}", type: string}
  second: {value: "{{steps.second}}", type: string}
  third: {value: "{{steps.third}}", type: string}
steps:
  - id: first
    prompt: "Name one colour of {{inputs.topic}}."
  - id: second
    prompt: "Name one animal that lives near {{inputs.topic}}."
  - id: gate
    tool: wait_for_gate
    args: {name: g}
  - id: third
    prompt: "Write three words about {{inputs.topic}}."
"""

DEADLINE_S = 600.0
"""How long the test waits for the run to reach its gate before giving up (a hang guard, not a measurement)."""


def _env() -> dict[str, str]:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("AGENTFLOW_JOURNAL", None)  # the default journal: .agentflow/journal.db in the working directory
    env.pop("AGENTFLOW_ENGINE", None)
    return env


def _agentflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentflow", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        cwd=cwd,
        env=_env(),
    )


def test_sigint_then_resume_finishes_the_run_without_rerunning_finished_llm_calls(tmp_path: Path) -> None:
    (tmp_path / "gate.py").write_text(GATE, encoding="utf-8")
    (tmp_path / "interrupted.yaml").write_text(PLAN, encoding="utf-8")
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentflow",
            "run",
            "interrupted.yaml",
            "--allow-tool",
            "gate:*",
            "--input",
            "topic=the sea",
            "--run-id",
            "sea-1",
            "--quiet",
        ],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not (tmp_path / "g.waiting").exists():
            assert run.poll() is None, run.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run never reached its gate"
            time.sleep(0.05)
        run.send_signal(signal.SIGINT)  # Ctrl-C, with the first two LLM steps finished
        _, err = run.communicate(timeout=DEADLINE_S)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 130, err[-3000:]
    assert "agentflow resume sea-1" in err

    listed = _agentflow("runs", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (row,) = [line.split() for line in listed.stdout.splitlines() if line.startswith("sea-1 ")]
    assert row[1] == "failed", listed.stdout  # resumable: interrupted before it finished

    (tmp_path / "g.open").write_text("", encoding="utf-8")
    resumed = _agentflow("resume", "sea-1", "--allow-tool", "gate:*", "--json", cwd=tmp_path)  # no --input
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    journal = str(tmp_path / ".agentflow" / "journal.db")
    detail = anyio.run(show_run, "sea-1", journal)
    assert detail.run.status == "completed" and detail.run.attempts == 2
    first, second = detail.attempts
    assert first.trace.status == "failed"
    before = {c.path: c for c in first.events if isinstance(c, LLMCall)}
    assert set(before) == {"interrupted/first", "interrupted/second"}
    assert all(c.status == "ok" and c.completion for c in before.values())
    after = [c.path for c in second.events if isinstance(c, LLMCall)]
    assert after == ["interrupted/third"]  # the finished LLM calls were not made again
    replayed = {e.path for e in second.events if isinstance(e, StepReplayed)}
    assert {"interrupted/first", "interrupted/second"} <= replayed

    outputs = json.loads(resumed.stdout)["outputs"]
    assert outputs["first"] == before["interrupted/first"].completion
    assert outputs["second"] == before["interrupted/second"].completion
    assert json.loads(detail.run.inputs or "{}") == {"topic": "the sea"}

    shown = _agentflow("runs", "show", "latest", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "attempt 1: failed" in shown.stdout and "attempt 2: completed" in shown.stdout
    report = _agentflow("report", "sea-1", "-o", "report.html", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "interrupted/third" in (tmp_path / "report.html").read_text(encoding="utf-8")

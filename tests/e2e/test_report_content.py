"""What a run's record shows: every LLM call's prompt and completion, and never a secret's value.

A plan runs on the real embedded engine through the CLI, with a journal. One tool reveals a secret and
returns it (a leaky tool), and a later step puts that result into its prompt. The HTML report must show
each call's prompt and completion in headless Chromium (DOM checked, screenshot taken), and the secret's
value must appear nowhere: not in the report, the journal (the run's steps and its stored trace), an
exported run file, or the prompt the model received.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from agentflow.runs import load_journaled_run

ROOT = Path(__file__).resolve().parents[2]
SECRET_VALUE = 'k3y-"quoted"\\slash-0123456789'  # JSON escaping must not let it through either
pytestmark = pytest.mark.e2e

TOOLS = '''
from agentflow.secrets import secret


def fetch_token() -> str:
    """Fetch the service token (a careless tool: it returns the token itself)."""
    return "token is " + secret("DEMO_SERVICE_TOKEN").reveal()
'''

PLAN = """
apiVersion: agentflow/v1
kind: Plan
name: leaky
engine:
  spec: llamacpp:default
  max_tokens: 12
tools:
  - leaky_tools:fetch_token
steps:
  - id: token
    tool: fetch_token
  - id: say
    prompt: "Repeat exactly: {{steps.token}}"
  - id: shout
    prompt: "Say hello to the reader."
"""


def _agentflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "DEMO_SERVICE_TOKEN": SECRET_VALUE, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [sys.executable, "-m", "agentflow", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=env,
    )


def _chromium() -> str:
    from test_cli_plans import _ensure_chromium

    return _ensure_chromium()


def test_report_shows_prompts_and_completions_and_no_secret_anywhere(tmp_path: Path) -> None:
    (tmp_path / "leaky_tools.py").write_text(TOOLS, encoding="utf-8")
    (tmp_path / "leaky.yaml").write_text(PLAN, encoding="utf-8")
    journal = tmp_path / "journal.db"
    proc = _agentflow(
        "run",
        "leaky.yaml",
        "--allow-tool",
        "leaky_tools:*",
        "--run-id",
        "leak-1",
        "--journal",
        str(journal),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = tmp_path / "report.html"
    made = _agentflow("report", "leak-1", "-o", str(html), "--journal", str(journal), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    exported = tmp_path / "leak-1.jsonl"
    made = _agentflow(
        "runs", "export", "leak-1", "--journal", str(journal), "-o", str(exported), cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr

    # What the model was asked and answered is in the record, the secret replaced by the marker.
    record = anyio.run(load_journaled_run, "leak-1", str(journal))
    from agentflow.dsl import LLMCall

    calls = [e for e in record.trace if isinstance(e, LLMCall)]
    assert len(calls) == 2 and all(c.messages and c.completion is not None for c in calls)
    assert "Repeat exactly: token is [secret]" in calls[0].messages[-1][1]  # type: ignore[index]

    # The secret's value, raw or JSON-escaped, is nowhere on disk.
    escaped = json.dumps(SECRET_VALUE)[1:-1]
    for path in [html, exported, *tmp_path.glob("journal.db*")]:
        data = path.read_bytes()
        assert SECRET_VALUE.encode() not in data and escaped.encode() not in data, path
    assert SECRET_VALUE not in proc.stdout + proc.stderr

    # In a browser: each call's prompt and completion are in the page, in a collapsible section.
    browser = _chromium()
    common = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run([*common, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('<details class="call">') >= 2
    for call in calls:
        assert call.completion is not None
        from html import escape

        assert escape(call.messages[-1][1], quote=False) in dom.stdout  # type: ignore[index]
        assert escape(call.completion.strip(), quote=False) in dom.stdout
    shot = tmp_path / "report.png"
    taken = subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1280,1400", html.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

"""The code blocks of the documentation site (``docs/``), and how each one is run by the tests.

Every fenced block has a language; what the tests do with it depends on the language and on an optional
marker, an HTML comment on the line just before the fence: ``<!-- docs-test: embedded -->``.

- ``python``: run as a script; ``bash``: run with ``bash -e``. Both run in a scratch folder holding a
  copy of ``examples/`` (commands and paths are written as from the repository root), with
  ``AGENTFLOW_ENGINE=test:``, so a run that does not choose its engine uses the deterministic
  ``TestEngine`` (tests/unit/test_docs.py). Marked ``embedded``: the block chooses the bundled model
  itself and runs on it, in tests/e2e/test_docs_embedded.py. Marked ``slow`` (starts Ray, for one): runs
  there too, with ``AGENTFLOW_ENGINE=test:``.
- ``yaml``: a complete plan; it is run with ``agentflow run --engine test:``.
- ``jsonl``: notes for ``agentflow memory import``; every line must load with ``load_jsonl``.
- ``text``: program output, shown and not run.
- Marked ``readme``: one of the README's two set-up commands, checked verbatim (CI runs them).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LANGUAGES = frozenset({"python", "bash", "yaml", "jsonl", "text"})
MODES = frozenset({"default", "embedded", "slow", "readme"})

_FENCE = re.compile(
    r"^(?P<indent>[ ]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ ]*$", re.S | re.M
)
_MARKER = re.compile(r"<!--\s*docs-test:\s*(?P<mode>[\w-]+)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a documentation page."""

    page: str  # path relative to docs/
    line: int  # 1-based line of the opening fence
    lang: str
    mode: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def blocks() -> list[Block]:
    """Every fenced block of every page, in page and document order."""
    out: list[Block] = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = _MARKER.search(before)
            indent = len(match.group("indent"))
            body = "\n".join(row[indent:] for row in match.group("body").splitlines())
            out.append(
                Block(
                    page=str(page.relative_to(DOCS)),
                    line=line,
                    lang=match.group("lang"),
                    mode=marker.group("mode") if marker else "default",
                    code=body + "\n",
                )
            )
    return out


def scratch(tmp_path: Path) -> Path:
    """A working folder with a copy of examples/ (plans read examples/data/ relative to it)."""
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    return work


def run_block(
    block: Block, work: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a python or bash block in ``work``; the venv's scripts come first on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**env, "PATH": bin_dir + ":" + env.get("PATH", ""), "NO_COLOR": "1", "COLUMNS": "120"}
    if block.lang == "python":
        script = work / "block.py"
        script.write_text(block.code, encoding="utf-8")
        cmd = [sys.executable, str(script)]
    else:
        cmd = ["bash", "-e", "-o", "pipefail", "-c", block.code]
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)

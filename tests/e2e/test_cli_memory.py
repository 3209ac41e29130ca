"""`agentflow memory import|query|stats` as a user runs them, on a real LoCoMo conversation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCOMO = ROOT.parent / "shared" / "data" / "locomo" / "26.json"
pytestmark = pytest.mark.e2e


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentflow", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


@pytest.mark.skipif(not LOCOMO.exists(), reason=f"LoCoMo data not found at {LOCOMO}")
def test_memory_import_query_stats(tmp_path: Path) -> None:
    imported = cli("memory", "import", str(LOCOMO), "--db", "m.db", cwd=tmp_path)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "locomo-26:" in imported.stdout
    again = cli("memory", "import", str(LOCOMO), "--db", "m.db", cwd=tmp_path)
    assert "locomo-26: 0 new leaves" in again.stdout
    query = cli(
        "memory",
        "query",
        "locomo-26",
        "LGBTQ support group",
        "-k",
        "3",
        "--json",
        "--db",
        "m.db",
        cwd=tmp_path,
    )
    assert query.returncode == 0, query.stderr
    hits = json.loads(query.stdout)
    assert len(hits) == 3 and "support group" in hits[0]["leaf"]["text"]
    stats = cli("memory", "stats", "--json", "--db", "m.db", cwd=tmp_path)
    data = json.loads(stats.stdout)
    assert data["journal_mode"] == "wal" and data["trees"][0]["leaves"] > 400


def test_memory_query_without_store_is_bad_input(tmp_path: Path) -> None:
    out = cli("memory", "query", "t", "x", "--db", "missing.db", cwd=tmp_path)
    assert out.returncode == 2
    assert "no memory store" in out.stdout

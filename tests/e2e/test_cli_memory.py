"""`agentflow memory import|query|stats` as a user runs them, on a real LoCoMo conversation written as notes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _bench import bench_module

ROOT = Path(__file__).resolve().parents[2]
LOCOMO = ROOT.parent / "shared" / "data" / "locomo" / "26.json"
pytestmark = pytest.mark.e2e


def locomo_notes(source: Path, target: Path) -> None:
    """Write a LoCoMo conversation as JSON Lines notes (one per turn), with the benchmarks' loader."""
    (conversation,) = bench_module("_locomo").load_locomo(source)
    lines = [
        json.dumps(
            {
                "text": t.text,
                "time": s.at.isoformat(),
                "session": s.name,
                "speaker": t.speaker,
                "id": t.dia_id,
            }
        )
        for s in conversation.sessions
        for t in s.turns
    ]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentflow", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


@pytest.mark.skipif(not LOCOMO.exists(), reason=f"LoCoMo data not found at {LOCOMO}")
def test_memory_import_query_stats(tmp_path: Path) -> None:
    locomo_notes(LOCOMO, tmp_path / "locomo-26.jsonl")
    imported = cli("memory", "import", "locomo-26.jsonl", "--db", "m.db", cwd=tmp_path)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "locomo-26:" in imported.stdout
    again = cli("memory", "import", "locomo-26.jsonl", "--db", "m.db", cwd=tmp_path)
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


def test_memory_import_jsonl_then_query_and_unknown_tree(tmp_path: Path) -> None:
    notes = tmp_path / "notes.jsonl"
    notes.write_text(
        '{"text": "Mia moved to Lisbon in March.", "time": "2024-03-02T10:15:00Z", "session": "chat-1"}\n'
        '{"text": "Noah adopted a grey cat.", "time": "2024-04-11T18:00:00Z", "session": "chat-2"}\n',
        encoding="utf-8",
    )
    imported = cli("memory", "import", str(notes), "--db", "m.db", cwd=tmp_path)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "notes: 2 new leaves" in imported.stdout
    query = cli("memory", "query", "notes", "grey cat", "-k", "1", "--json", "--db", "m.db", cwd=tmp_path)
    assert query.returncode == 0, query.stdout + query.stderr
    assert json.loads(query.stdout)[0]["leaf"]["text"] == "Noah adopted a grey cat."
    unknown = cli("memory", "query", "note", "grey cat", "--db", "m.db", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "no temporal tree 'note'; did you mean 'notes'?" in unknown.stdout


def test_memory_import_jsonl_with_a_bad_line_is_bad_input(tmp_path: Path) -> None:
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"text": "no time"}\n', encoding="utf-8")
    out = cli("memory", "import", str(notes), "--db", "m.db", cwd=tmp_path)
    assert out.returncode == 2
    assert "notes.jsonl:1: 'time' is missing" in out.stdout

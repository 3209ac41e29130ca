"""Crash safety and multi-process writers on real SQLite files and a real PostgreSQL server.

A writer process prints a leaf id only after its insert transaction committed; we SIGKILL it at a
random moment and check that every printed id survived and the file is intact. Several writers
inserting overlapping facts at the same time must lose nothing and create no duplicates.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _stores import store_core

from agentflow.memory import TemporalTreeCore

pytestmark = pytest.mark.integration

WRITER = Path(__file__).with_name("_writer.py")


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture
def db(memory_db: str) -> str:
    """The memory store, once per backend (SQLite file, PostgreSQL schema)."""
    return memory_db


def _leaf_ids(db: str, tree_id: str) -> list[str]:
    with store_core(db).connection() as conn:
        rows = conn.execute("SELECT key FROM tnodes WHERE tree_id = ? AND level = 3", (tree_id,)).fetchall()
    return [r[0].removeprefix("leaf:") for r in rows]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_acknowledged_inserts_survive_sigkill(db: str, seed: int) -> None:
    store_core(db)  # schema created before the writer starts
    proc = _spawn(db, "t", "0", "100000")
    assert proc.stdout is not None
    rng = random.Random(seed)
    wanted = rng.randint(20, 400)  # acknowledgements to see before the kill, then a random extra delay
    acked: list[str] = []
    while len(acked) < wanted:
        line = proc.stdout.readline()
        assert line, f"writer exited early: {proc.stderr.read() if proc.stderr else ''}"
        acked.append(line.split()[0])
    time.sleep(rng.uniform(0, 0.05))
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()  # buffered read: lines already read ahead by readline stay visible
    proc.wait()
    proc.stdout.close()
    if proc.stderr is not None:
        proc.stderr.close()
    acked += [line.split()[0] for line in rest.splitlines() if line and line != "DONE"]
    assert proc.returncode == -signal.SIGKILL

    store = store_core(db)
    assert store.integrity_check() == "ok"
    stored = set(_leaf_ids(db, "t"))
    assert set(acked) <= stored
    assert len(stored) <= len(acked) + 1  # at most the one insert in flight when killed
    tree = TemporalTreeCore(store, "t", summarize=lambda texts: " ".join(texts[:3]))
    hits = tree.search(f"fact number {acked[-1].removeprefix('L')}", k=1)
    assert hits and hits[0].leaf.id == acked[-1]
    assert tree.insert("after the crash", session="s0").created


def test_concurrent_writers_lose_nothing_and_create_no_duplicates(db: str) -> None:
    store_core(db)
    facts = 150
    # Four processes: two write disjoint unique ranges, two write the same 150 facts in different orders.
    procs = [
        _spawn(db, "u", "1000", "150"),
        _spawn(db, "u", "2000", "150"),
        _spawn(db, "f", "0", "300", "--facts", str(facts)),
        _spawn(db, "f", "75", "300", "--facts", str(facts)),
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    unique_ids = _leaf_ids(db, "u")
    assert sorted(unique_ids) == sorted(
        [f"L{i}" for i in range(1000, 1150)] + [f"L{i}" for i in range(2000, 2150)]
    )
    fact_ids = _leaf_ids(db, "f")
    assert len(fact_ids) == len(set(fact_ids)) == facts
    created = [line for out, _ in outputs[2:] for line in out.splitlines() if line.endswith(" 1")]
    assert len(created) == facts  # each fact was created by exactly one writer
    store = store_core(db)
    assert store.integrity_check() == "ok"
    with store.connection() as conn:
        sessions = conn.execute("SELECT COUNT(*) FROM tnodes WHERE tree_id = 'f' AND level = 2").fetchone()[0]
        positions = conn.execute(
            "SELECT COUNT(*) FROM (SELECT parent, position FROM tnodes WHERE tree_id = 'f' AND level = 3 "
            "GROUP BY parent, position HAVING COUNT(*) > 1) AS dup"
        ).fetchone()[0]
    assert sessions == facts // 50
    assert positions == 0

"""Subprocess used by the crash and concurrency tests: inserts leaves and prints each acknowledged id.

Usage: python _writer.py DB TREE START COUNT [--facts N]   (DB: a SQLite file or a postgresql:// URL)
Without --facts, leaf i has id "L{i}" and unique text. With --facts N, leaf i is fact number i % N
(same text, session and id in every process), so several writers insert the same facts concurrently.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

from agentflow.memory import StoreCore, TemporalTreeCore
from agentflow.memory._pg_store import PgStoreCore


def main() -> None:
    db, tree_id, start, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    facts = int(sys.argv[6]) if len(sys.argv) > 6 and sys.argv[5] == "--facts" else 0
    core = PgStoreCore(db) if db.startswith("postgresql://") else StoreCore(db, busy_timeout_s=60)
    tree = TemporalTreeCore(core, tree_id)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    for i in range(start, start + count):
        n = i % facts if facts else i
        result = tree.insert(
            f"fact number {n} about topic {n % 7}",
            session=f"s{n // 50}",
            at=base + timedelta(minutes=n),
            leaf_id=f"L{n}",
        )
        print(f"{result.leaf.id} {int(result.created)}", flush=True)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()

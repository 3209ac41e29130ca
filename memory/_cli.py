"""``agentflow memory import|query|stats``: the memory store from the command line.

Registered by ``agentflow.cli`` (a provider module: ``register(subparsers)``); each handler returns an exit
code (0 ok, 1 failed, 2 bad input).
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime
from pathlib import Path

import anyio

from agentflow.errors import AgentflowError

from ._locomo import import_locomo
from ._store import MemoryStore

__all__ = ["register"]

DEFAULT_DB = ".agentflow/memory.db"


def _db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        default=os.environ.get("AGENTFLOW_MEMORY", DEFAULT_DB),
        help=f"the memory store file (default: $AGENTFLOW_MEMORY or {DEFAULT_DB})",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``memory`` command to the ``agentflow`` CLI's subparsers."""
    memory = subparsers.add_parser("memory", help="import into, query and inspect the memory store")
    sub = memory.add_subparsers(dest="memory_command", required=True)

    p = sub.add_parser("import", help="import LoCoMo conversations (a .json file or a folder of them)")
    _db_arg(p)
    p.add_argument("path", help="a LoCoMo conversation file or a folder of them")
    p.add_argument("--tree-prefix", default="locomo-", help="tree ids are this prefix + the file's stem")
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser("query", help="retrieve the best leaves of a temporal tree for a query")
    _db_arg(p)
    p.add_argument("tree", help="the temporal tree id (see `agentflow memory stats`)")
    p.add_argument("query", help="what to look for")
    p.add_argument("-k", type=int, default=5, help="how many leaves (default 5)")
    p.add_argument("--since", type=datetime.fromisoformat, help="only leaves at or after this ISO time")
    p.add_argument("--until", type=datetime.fromisoformat, help="only leaves before this ISO time")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_query)

    p = sub.add_parser("stats", help="what the store holds")
    _db_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_stats)


def _open(db: str) -> MemoryStore:
    Path(db).parent.mkdir(parents=True, exist_ok=True)
    return MemoryStore(db)


def _cmd_import(args: argparse.Namespace) -> int:
    if not Path(args.path).exists():
        print(f"error: {args.path} does not exist; give a LoCoMo .json file or a folder of them")
        return 2

    async def go() -> dict[str, int]:
        async with _open(args.db) as store:
            return await import_locomo(store, args.path, tree_prefix=args.tree_prefix)

    try:
        counts = anyio.run(go)
    except AgentflowError as exc:
        print(f"error: {exc}")
        return 1
    for tree, n in sorted(counts.items()):
        print(f"{tree}: {n} new leaves")
    print(f"imported into {args.db}")
    return 0


def _cmd_query(args: argparse.Namespace) -> int:
    if args.k < 1:
        print(f"error: -k must be >= 1, got {args.k}")
        return 2
    if not Path(args.db).exists():
        print(f"error: no memory store at {args.db}; import something first (agentflow memory import ...)")
        return 2

    async def go() -> list[dict[str, object]]:
        async with MemoryStore(args.db) as store:
            hits = await store.temporal(args.tree).search(
                args.query, args.k, since=args.since, until=args.until
            )
            return [h.model_dump(mode="json") for h in hits]

    try:
        hits = anyio.run(go)
    except AgentflowError as exc:
        print(f"error: {exc}")
        return 1
    if args.json:
        print(json.dumps(hits, indent=2))
        return 0
    if not hits:
        print("no matching leaves")
    for h in hits:
        leaf = h["leaf"]
        assert isinstance(leaf, dict)
        print(f"{h['score']:.3f}  [{leaf['id']}] {leaf['at']}  {leaf.get('speaker') or ''}: {leaf['text']}")
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    if not Path(args.db).exists():
        print(f"error: no memory store at {args.db}")
        return 2

    async def go() -> dict[str, object]:
        async with MemoryStore(args.db) as store:
            return (await store.stats()).model_dump(mode="json")

    try:
        stats = anyio.run(go)
    except AgentflowError as exc:
        print(f"error: {exc}")
        return 1
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(
        f"{stats['path']}: schema v{stats['schema_version']}, {stats['journal_mode']}, {stats['bytes']} bytes"
    )
    trees = stats["trees"]
    assert isinstance(trees, list)
    for t in trees:
        print("  " + ", ".join(f"{k}={v}" for k, v in t.items()))
    return 0

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

from agentflow.errors import AgentflowError, UserError

from ._jsonl import import_jsonl
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

    p = sub.add_parser(
        "import",
        help="import notes (JSON Lines) into a temporal tree",
        description="Import into the memory store. JSON Lines (.jsonl): one note per line, "
        '{"text": ..., "time": "2024-03-02T10:15:00Z", "session": ..., "speaker": ..., "id": ...} '
        "(text and time required), into one temporal tree (--tree, default the file's stem). "
        "Re-importing adds nothing twice.",
    )
    _db_arg(p)
    p.add_argument("path", help="a .jsonl file of notes")
    p.add_argument("--tree", help="the tree id (default: the file's stem)")
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
    source = Path(args.path)
    if not source.is_file():
        print(f"error: {args.path} is not a file; give a .jsonl file of notes (one JSON object per line)")
        return 2

    async def go() -> dict[str, int]:
        async with _open(args.db) as store:
            tree = args.tree or source.stem
            return {tree: await import_jsonl(store, source, tree=tree)}

    try:
        counts = anyio.run(go)
    except UserError as exc:
        print(f"error: {exc}")
        return 2
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

    async def go() -> list[dict[str, object]] | str:
        async with MemoryStore(args.db) as store:
            trees = [t.tree_id for t in (await store.stats()).trees if t.kind == "temporal"]
            if args.tree not in trees:
                return _unknown_tree(args.tree, trees, args.db)
            hits = await store.temporal(args.tree).search(
                args.query, args.k, since=args.since, until=args.until
            )
            return [h.model_dump(mode="json") for h in hits]

    try:
        hits = anyio.run(go)
    except AgentflowError as exc:
        print(f"error: {exc}")
        return 1
    if isinstance(hits, str):
        print(f"error: {hits}")
        return 2
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


def _unknown_tree(tree: str, trees: list[str], db: str) -> str:
    """The message for a query naming a tree the store does not hold."""
    import difflib

    if not trees:
        return f"{db} holds no temporal tree; import notes first (agentflow memory import notes.jsonl)"
    close = difflib.get_close_matches(tree, trees, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listed = ", ".join(trees[:20]) + (" ..." if len(trees) > 20 else "")
    return f"{db} has no temporal tree {tree!r}; {hint}its trees are: {listed}"


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

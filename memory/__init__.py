"""agentflow.memory: task and temporal memory trees on a crash-safe SQLite store, with retrieval.

- ``MemoryStore(path)``: the store (SQLite, WAL, versioned schema); ``store.sync`` is its sync core.
- ``store.temporal(tree_id)``: a ``TemporalMemoryTree`` of turns/facts under session and month nodes;
  ``await tree.insert(text, session=...)``, ``await tree.search(query, k, since=..., until=...)``.
- ``store.task_tree(tree_id)``: a ``TaskMemoryTree`` the planner/executor fill as tasks run;
  ``await tree.prompt_for(node_id, budget_tokens)`` builds a step's context.
- ``import_jsonl(store, path, tree=...)``: load notes from JSON Lines (``{text, time, session}`` per line).
"""

from agentflow.memory._bm25 import BM25Index
from agentflow.memory._index import ScoringWeights
from agentflow.memory._jsonl import import_jsonl, load_jsonl
from agentflow.memory._models import (
    InsertResult,
    Leaf,
    NodeKind,
    PathNode,
    SearchHit,
    StoreStats,
    TaskNode,
    TaskStatus,
    TreeStats,
)
from agentflow.memory._store import MemoryStore, StoreCore, Synchronous
from agentflow.memory._summarize import ExtractiveSummarizer, Summarizer, SyncSummarizer
from agentflow.memory._task import TaskMemoryTree, TaskTreeCore
from agentflow.memory._temporal import NewLeaf, TemporalMemoryTree, TemporalTreeCore
from agentflow.memory._text import TokenCounter, approx_token_count, tokenize

__all__ = [
    "BM25Index",
    "ExtractiveSummarizer",
    "InsertResult",
    "Leaf",
    "MemoryStore",
    "NewLeaf",
    "NodeKind",
    "PathNode",
    "ScoringWeights",
    "SearchHit",
    "StoreCore",
    "StoreStats",
    "Summarizer",
    "SyncSummarizer",
    "Synchronous",
    "TaskMemoryTree",
    "TaskNode",
    "TaskStatus",
    "TaskTreeCore",
    "TemporalMemoryTree",
    "TemporalTreeCore",
    "TokenCounter",
    "TreeStats",
    "approx_token_count",
    "import_jsonl",
    "load_jsonl",
    "tokenize",
]

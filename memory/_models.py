"""The rows the memory store hands out: leaves, tree nodes, search hits, task nodes and store statistics.

These are pydantic models (frozen) because they cross the package edge: the CLI prints them as JSON,
tools return them to agents, and they are rebuilt from SQLite rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "InsertResult",
    "Leaf",
    "NodeKind",
    "PathNode",
    "SearchHit",
    "StoreStats",
    "TaskNode",
    "TaskStatus",
    "TreeStats",
    "from_epoch",
]


def from_epoch(seconds: float) -> datetime:
    """Convert stored epoch seconds into an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, tz=UTC)


class NodeKind(StrEnum):
    """Levels of the temporal tree, root first."""

    ROOT = "root"
    PERIOD = "period"
    SESSION = "session"
    LEAF = "leaf"


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PathNode(_Row):
    """One inner node on a leaf's path: the root, its period (a month) or its session."""

    kind: NodeKind
    key: str = Field(description="The period ('2023-05'), session name, or 'root'.")
    at: datetime = Field(description="The session's date; a period's first instant; the root's creation.")
    summary: str = ""


class Leaf(_Row):
    """A turn or fact stored in a temporal tree."""

    id: str = Field(
        description="The leaf id, given by the caller (e.g. 'D3:12') or derived from its content."
    )
    session: str
    at: datetime
    position: int = Field(description="Order of the leaf within its session, from 0.")
    speaker: str | None = None
    text: str
    meta: dict[str, str] = Field(default_factory=dict)


class InsertResult(_Row):
    """The outcome of one insert: the stored leaf, and whether this call created it (False: a duplicate)."""

    leaf: Leaf
    created: bool


class SearchHit(_Row):
    """A retrieved leaf with its score and its path (root, period, session)."""

    leaf: Leaf
    score: float
    path: tuple[PathNode, ...]


class TaskStatus(StrEnum):
    """Lifecycle of a task node: pending -> running -> done | failed (a failed task may run again)."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class TaskNode(_Row):
    """One step of a task memory tree."""

    id: str
    parent: str | None
    title: str
    input: str = ""
    output: str | None = None
    error: str | None = None
    status: TaskStatus = TaskStatus.PENDING
    deps: tuple[str, ...] = ()
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class TreeStats(_Row):
    """Counts for one tree."""

    tree_id: str
    kind: str
    nodes: int
    leaves: int
    dirty: int


class StoreStats(_Row):
    """What a store holds."""

    path: str
    schema_version: int
    journal_mode: str
    synchronous: str
    trees: tuple[TreeStats, ...]
    bytes: int

"""The in-memory retrieval index of one temporal tree, kept in step with SQLite through ``seq``.

The store is the source of truth; this index is a cache that any process can rebuild. Every write
to a tree stamps the rows it created or re-summarized with the tree's next ``seq``, so a reader
catches up by loading the rows with ``seq`` above the last one it applied (its own writes and other
processes' alike). Leaves are append-only; a session's or period's summary document is replaced when
its summary changes.

Scoring (see ``ScoringWeights``) combines, for each leaf, max-normalized BM25 scores of:

    the leaf itself
    + session  * its session's summary
    + period   * its period's summary
    + neighbor * (the previous turn + the next turn in the same session)

so a turn that names no query term can still rank when its session is about the query and its
neighbours mention it, which is what a flat index over turns cannot do.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from agentflow.memory._bm25 import BM25Index
from agentflow.memory._text import tokenize

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray: TypeAlias = npt.NDArray[np.float64]
    IntArray: TypeAlias = npt.NDArray[np.int64]

__all__ = ["InnerNode", "ScoringWeights", "TreeIndex"]

ROOT, PERIOD, SESSION, LEAF = 0, 1, 2, 3


@dataclass(frozen=True)
class ScoringWeights:
    """How much a leaf's ancestors and neighbours add to its own BM25 score (all max-normalized).

    The defaults were chosen on two LoCoMo conversations (26 and 30) out of eight, from a coarse grid
    (session in {0.25, 0.5, 1}, neighbor in {0.1, 0.2, 0.3}, period in {0, 0.2}); the benchmark
    reports the other six separately.

    Attributes:
        session: Weight of the leaf's session summary score.
        period: Weight of the leaf's period (month) summary score.
        neighbor: Weight of each adjacent turn's own score.
    """

    session: float = 0.5
    period: float = 0.0
    neighbor: float = 0.3


@dataclass
class InnerNode:
    """A root, period or session as the index knows it (mutable: its summary changes)."""

    rowid: int
    level: int
    key: str
    ts: float
    parent: int | None
    summary: str = ""
    dense: int = -1  # position among the nodes of its level
    doc: int = -1  # slot of its summary in the level's BM25 index, -1 when it has none
    members: list[tuple[int, int]] = field(default_factory=list)  # sessions: sorted (position, leaf slot)


@dataclass(frozen=True)
class _Arrays:
    """numpy copies of the per-leaf and per-node columns, rebuilt after the index changes."""

    ts: FloatArray
    session: IntArray
    period: IntArray
    prev: IntArray
    next: IntArray
    rowid: IntArray
    session_doc: IntArray
    period_doc: IntArray


def _normalized(scores: FloatArray) -> FloatArray:
    top = float(scores.max()) if len(scores) else 0.0
    return scores / top if top > 0 else scores


class TreeIndex:
    """Leaves and summaries of one tree, indexed for BM25 with ancestor and neighbour propagation."""

    def __init__(self) -> None:
        # Highest seq applied; rows with a higher seq are loaded on the next catch-up.
        self.seen_seq = 0
        self.leaves = BM25Index()
        self.sessions_bm25 = BM25Index(removable=True)
        self.periods_bm25 = BM25Index(removable=True)
        # Per leaf slot (append-only).
        self.leaf_rowid: array[int] = array("q")
        self.leaf_ts: array[float] = array("d")
        self.leaf_session: array[int] = array("q")
        self.leaf_period: array[int] = array("q")
        self.prev: array[int] = array("q")
        self.next: array[int] = array("q")
        self.slot_of_rowid: dict[int, int] = {}
        # Inner nodes by rowid, and the dense order of sessions and periods.
        self.inner: dict[int, InnerNode] = {}
        self.sessions: list[InnerNode] = []
        self.periods: list[InnerNode] = []
        # numpy views rebuilt when _version moves past _arrays_at.
        self._version = 0
        self._arrays_at = -1
        self._arrays: _Arrays | None = None

    def apply(
        self, rows: Sequence[tuple[int, int, str, int | None, float, int, str | None, str, str]]
    ) -> None:
        """Apply rows ``(rowid, level, key, parent, ts, position, speaker, text, summary)``, parents first."""
        for rowid, level, key, parent, ts, position, speaker, text, summary in rows:
            if level == LEAF:
                if rowid not in self.slot_of_rowid:
                    self._add_leaf(rowid, parent, ts, position, leaf_text(speaker, text))
                continue
            node = self.inner.get(rowid)
            if node is None:
                node = self.inner[rowid] = InnerNode(rowid, level, key, ts, parent)
                if level == SESSION:
                    node.dense = len(self.sessions)
                    self.sessions.append(node)
                elif level == PERIOD:
                    node.dense = len(self.periods)
                    self.periods.append(node)
            if summary != node.summary:
                self._set_summary(node, summary)
        self._version += 1

    def _set_summary(self, node: InnerNode, summary: str) -> None:
        node.summary = summary
        bm25 = (
            self.sessions_bm25
            if node.level == SESSION
            else self.periods_bm25
            if node.level == PERIOD
            else None
        )
        if bm25 is None:
            return
        if node.doc >= 0:
            bm25.remove(node.doc)
            node.doc = -1
        if summary:
            node.doc = bm25.add(tokenize(summary))

    def _add_leaf(self, rowid: int, parent: int | None, ts: float, position: int, text: str) -> None:
        session = self.inner[parent] if parent is not None else None
        assert session is not None and session.level == SESSION, f"leaf row {rowid} has no session parent"
        slot = self.leaves.add(tokenize(text))
        self.slot_of_rowid[rowid] = slot
        self.leaf_rowid.append(rowid)
        self.leaf_ts.append(ts)
        self.leaf_session.append(session.dense)
        period = self.inner[session.parent] if session.parent is not None else None
        self.leaf_period.append(period.dense if period is not None else -1)
        self.prev.append(-1)
        self.next.append(-1)
        members = session.members
        i = bisect.bisect(members, (position, slot))
        members.insert(i, (position, slot))
        if i > 0:
            before = members[i - 1][1]
            self.prev[slot], self.next[before] = before, slot
        if i + 1 < len(members):
            after = members[i + 1][1]
            self.next[slot], self.prev[after] = after, slot

    def _np(self) -> _Arrays:
        if self._arrays is None or self._arrays_at != self._version:
            import numpy as np  # deferred: a heavy import (tests/unit/test_import_cost.py)

            self._arrays = _Arrays(
                ts=np.array(self.leaf_ts, dtype=np.float64),
                session=np.array(self.leaf_session, dtype=np.int64),
                period=np.array(self.leaf_period, dtype=np.int64),
                prev=np.array(self.prev, dtype=np.int64),
                next=np.array(self.next, dtype=np.int64),
                rowid=np.array(self.leaf_rowid, dtype=np.int64),
                session_doc=np.array([s.doc for s in self.sessions], dtype=np.int64),
                period_doc=np.array([p.doc for p in self.periods], dtype=np.int64),
            )
            self._arrays_at = self._version
        return self._arrays

    def _level_scores(self, bm25: BM25Index, docs: IntArray, query: list[str]) -> FloatArray:
        import numpy as np  # deferred: a heavy import (tests/unit/test_import_cost.py)

        raw = bm25.scores(query)
        dense = np.where(docs >= 0, raw[np.maximum(docs, 0)] if len(raw) else 0.0, 0.0)
        return _normalized(dense.astype(np.float64))

    def scores(self, query: str, weights: ScoringWeights) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """Combined score of every leaf slot for ``query``, and which leaves contain a query term.

        BM25Okapi's idf is 0 or negative for a term in half or more of the documents (always so in a
        one-document tree), so a leaf that contains query terms can score <= 0; the mask keeps it.
        """
        import numpy as np  # deferred: a heavy import (tests/unit/test_import_cost.py)

        terms = tokenize(query)
        n = self.leaves.size
        if not terms or n == 0:
            return np.zeros(n, dtype=np.float64), np.zeros(n, dtype=bool)
        arrays = self._np()
        padded = np.zeros(n + 1, dtype=np.float64)  # slot n stays 0: a missing neighbour (-1) reads it
        own = padded[:n]
        matched = np.zeros(n, dtype=bool)
        self.leaves.scores(terms, out=own, matched=matched)
        best = float(own.max())
        if best > 0:
            own /= best
        total = own.copy()
        if weights.session and self.sessions:
            per_session = self._level_scores(self.sessions_bm25, arrays.session_doc, terms)
            total += weights.session * per_session[arrays.session]
        if weights.period and self.periods:
            per_period = self._level_scores(self.periods_bm25, arrays.period_doc, terms)
            period = arrays.period
            total += weights.period * np.where(period >= 0, per_period[np.maximum(period, 0)], 0.0)
        if weights.neighbor:
            total += weights.neighbor * (padded[arrays.prev] + padded[arrays.next])
        return total, matched

    def top(
        self, query: str, k: int, weights: ScoringWeights, since: float | None, until: float | None
    ) -> list[tuple[int, float]]:
        """The ``k`` best ``(rowid, score)`` pairs, best first, ties broken by insertion order.

        Invariant: the result depends only on the indexed rows and the arguments, never on numpy's
        partition order: ties at the cut are resolved by slot before truncating.
        """
        import numpy as np  # deferred: a heavy import (tests/unit/test_import_cost.py)

        total, matched = self.scores(query, weights)
        if len(total) == 0:
            return []
        keep = (total > 0) | matched
        if since is not None or until is not None:
            ts = self._np().ts
            if since is not None:
                keep &= ts >= since
            if until is not None:
                keep &= ts <= until
        cand = np.flatnonzero(keep)
        values = total[cand]
        if len(cand) > k:
            cut = -np.partition(-values, k - 1)[k - 1]
            chosen = values >= cut
            cand, values = cand[chosen], values[chosen]
        order = np.lexsort((cand, -values))[:k]
        rowids = self._np().rowid
        return [(int(rowids[cand[i]]), float(values[i])) for i in order]


def leaf_text(speaker: str | None, text: str) -> str:
    """The text a leaf is indexed and summarized under: ``"speaker: text"``, or the text alone."""
    return f"{speaker}: {text}" if speaker else text

"""The temporal memory tree: turns and facts under session, period (month) and root nodes.

::

    root
    ├── period 2023-05                (a month, from its sessions' dates)
    │   ├── session D1  8 May 2023    (sessions carry their date)
    │   │   ├── leaf D1:1  "Caroline: Hey Mel! ..."
    │   │   └── leaf D1:2  ...
    │   └── session D2 ...
    └── period 2023-06 ...

Inserting a leaf writes the leaf and marks only its path (session, period, root) dirty, in one
transaction. Summaries of dirty nodes are recomputed lazily, bottom-up, on ``refresh()`` or before a
search. Retrieval scores leaves and node summaries with BM25 and propagates session/period scores and
neighbouring turns' scores to each leaf (see ``agentflow.memory._index``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio

from agentflow.errors import ConfigError, MemoryStoreError
from agentflow.memory._index import LEAF, PERIOD, ROOT, SESSION, ScoringWeights, leaf_text
from agentflow.memory._models import InsertResult, Leaf, NodeKind, PathNode, SearchHit, from_epoch
from agentflow.memory._schema import content_hash
from agentflow.memory._store import translate_errors
from agentflow.memory._summarize import ExtractiveSummarizer, Summarizer, SyncSummarizer

if TYPE_CHECKING:
    from agentflow.memory._pg_store import PgStoreCore
    from agentflow.memory._store import Connection, MemoryStore, StoreCore

__all__ = ["NewLeaf", "ScoringWeights", "TemporalMemoryTree", "TemporalTreeCore"]

_KINDS = {ROOT: NodeKind.ROOT, PERIOD: NodeKind.PERIOD, SESSION: NodeKind.SESSION, LEAF: NodeKind.LEAF}
_LEVELS = {kind: level for level, kind in _KINDS.items()}
_REFRESH_ORDER = (NodeKind.SESSION, NodeKind.PERIOD, NodeKind.ROOT)
_LEAF_COLUMNS = "id, key, parent, ts, position, speaker, text, meta"
DEFAULT_SUMMARIZER = ExtractiveSummarizer(max_words=200)
"""The summarizer used when none is given (200 words: chosen with the retrieval weights, see ScoringWeights)."""
SummaryWork = tuple[int, int, list[str]]
"""A dirty node to summarize: (rowid, the tree's newest ``seq`` when read, children's texts)."""


def to_epoch(value: datetime, name: str) -> float:
    """Epoch seconds of an aware datetime; a naive one is taken as UTC."""
    if not isinstance(value, datetime):
        raise ConfigError(
            f"{name}={value!r} is not a datetime; pass a datetime (naive values are read as UTC)"
        )
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


@dataclass
class _InsertTxn:
    """What one insert transaction has learned so far (discarded if it rolls back)."""

    seq: int
    sessions: dict[str, tuple[int, float, int, int]]
    dirty: set[int]


@dataclass(frozen=True)
class NewLeaf:
    """One leaf to insert.

    Attributes:
        text: The turn or fact.
        session: The session it belongs to (created on first use).
        at: When it was said; defaults to the session's date.
        speaker: Who said it.
        leaf_id: A stable id (``"D3:12"``); derived from the content when omitted.
        meta: Small string attributes stored with the leaf.
        session_at: The session's date when this insert creates the session (default: ``at`` or now).
    """

    text: str
    session: str
    at: datetime | None = None
    speaker: str | None = None
    leaf_id: str | None = None
    meta: dict[str, str] = field(default_factory=dict)
    session_at: datetime | None = None


class TemporalTreeCore:
    """The synchronous temporal tree over a ``StoreCore``.

    Args:
        store: The store core.
        tree_id: The tree's id in the store.
        summarize: Runs inline on refresh (a ``SyncSummarizer``'s ``summarize_sync``; default: the
            extractive summarizer with a 200-word budget); ``None`` leaves summaries to the async tree
            (an LLM summarizer).
        weights: Retrieval weights.
    """

    def __init__(
        self,
        store: StoreCore | PgStoreCore,
        tree_id: str,
        *,
        summarize: Callable[[Sequence[str]], str] | None = DEFAULT_SUMMARIZER.summarize_sync,
        weights: ScoringWeights | None = None,
    ) -> None:
        if not tree_id:
            raise ConfigError("tree_id is empty; name the tree, e.g. 'chat-42'")
        self.store = store
        self.tree_id = tree_id
        self.summarize = summarize
        self.weights = weights or ScoringWeights()
        # The retrieval cache (shared through the store), loaded on first search, caught up from seq.
        self._index = store.tree_index(tree_id)
        # Committed facts that never change, so writes can skip their lookups: the tree row exists;
        # session name -> (session rowid, session ts, period rowid, root rowid).
        self._tree_ready = False
        self._sessions: dict[str, tuple[int, float, int, int]] = {}
        # Inner rows known to be dirty as of seq _known_seq, our last committed insert. The knowledge
        # holds only while nobody else wrote to the tree since (MAX(seq) still equals _known_seq).
        self._known_seq = -1
        self._known_dirty: frozenset[int] = frozenset()

    # ---- writes -------------------------------------------------------------------------------

    def _begin(self, conn: Connection) -> int:
        if not self._tree_ready:
            self.store.ensure_tree(conn, self.tree_id, "temporal")
        # Invariant: BEGIN IMMEDIATE serializes writers, so MAX(seq) + 1 is unique and commits in order.
        return int(
            conn.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM tnodes WHERE tree_id = ?", (self.tree_id,)
            ).fetchone()[0]
        )

    def _inner(self, conn: Connection, key: str) -> tuple[int, float, int | None] | None:
        row = conn.execute(
            "SELECT id, ts, parent FROM tnodes WHERE tree_id = ? AND key = ?", (self.tree_id, key)
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def _ensure_inner(
        self,
        conn: Connection,
        level: int,
        key: str,
        ts: float,
        parent: int | None,
        text: str,
        seq: int,
    ) -> tuple[int, float, int | None]:
        found = self._inner(conn, key)
        if found is not None:
            return found
        cur = conn.execute(
            "INSERT INTO tnodes (tree_id, key, level, parent, ts, text, seq) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.tree_id, key, level, parent, ts, text, seq),
        )
        return (int(cur.lastrowid or 0), ts, parent)

    def _session_path(
        self,
        conn: Connection,
        session: str,
        ts: float,
        title: str | None,
        seq: int,
        staged: dict[str, tuple[int, float, int, int]],
    ) -> tuple[int, float, int, int]:
        """(session, its ts, period, root) rowids, creating what is missing; new entries go to ``staged``."""
        known = self._sessions.get(session) or staged.get(session)
        if known is not None:
            return known
        found = self._inner(conn, f"session:{session}")
        if found is not None:
            period_id = found[2]
            assert period_id is not None
            root_id = conn.execute("SELECT parent FROM tnodes WHERE id = ?", (period_id,)).fetchone()[0]
            staged[session] = (found[0], found[1], period_id, root_id)
            return staged[session]
        root = self._ensure_inner(conn, ROOT, "root", time.time(), None, "", seq)
        month = datetime.fromtimestamp(ts, tz=UTC)
        start = month.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()
        period = self._ensure_inner(conn, PERIOD, f"period:{month:%Y-%m}", start, root[0], "", seq)
        node = self._ensure_inner(conn, SESSION, f"session:{session}", ts, period[0], title or session, seq)
        staged[session] = (node[0], node[1], period[0], root[0])
        return staged[session]

    def _insert_one(self, conn: Connection, item: NewLeaf, txn: _InsertTxn) -> InsertResult:
        if not item.session:
            raise ConfigError("session is empty; every leaf belongs to a named session")
        at = None if item.at is None else to_epoch(item.at, "at")
        digest = content_hash(item.leaf_id, item.session, item.speaker, item.text, at)
        key = f"leaf:{item.leaf_id if item.leaf_id is not None else digest[:24]}"
        if item.session_at is not None:
            session_ts = to_epoch(item.session_at, "session_at")
        else:
            session_ts = at if at is not None else time.time()
        session_id, session_ts, period_id, root_id = self._session_path(
            conn, item.session, session_ts, None, txn.seq, txn.sessions
        )
        seq = txn.seq
        ts = at if at is not None else session_ts
        meta = json.dumps(item.meta, sort_keys=True) if item.meta else "{}"
        # The duplicate check is the insert itself: the unique (tree, key) and (tree, content_hash)
        # indexes turn a repeat into a no-op inside this transaction, so two writers never both insert.
        inserted = conn.execute(
            "INSERT INTO tnodes (tree_id, key, level, parent, ts, position, speaker, text, meta, content_hash, seq) "
            "VALUES (?, ?, ?, ?, ?, (SELECT COALESCE(MAX(position) + 1, 0) FROM tnodes WHERE parent = ?), "
            "?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING position",
            (self.tree_id, key, LEAF, session_id, ts, session_id, item.speaker, item.text, meta, digest, seq),
        ).fetchone()
        if inserted is None:
            existing = conn.execute(
                f"SELECT {_LEAF_COLUMNS} FROM tnodes WHERE tree_id = ? AND content_hash = ? "
                f"UNION ALL SELECT {_LEAF_COLUMNS} FROM tnodes WHERE tree_id = ? AND key = ? LIMIT 1",
                (self.tree_id, digest, self.tree_id, key),
            ).fetchone()
            leaf = self._leaf(conn, existing)
            if (leaf.session, leaf.speaker, leaf.text) != (item.session, item.speaker, item.text):
                raise MemoryStoreError(
                    f"leaf {leaf.id!r} in tree {self.tree_id!r} already holds different content "
                    f"({leaf.text[:40]!r}); insert the new content under another leaf_id"
                )
            return InsertResult(leaf=leaf, created=False)
        position = inserted[0]
        # Mark the path dirty unless it is known to be (a concurrent refresh notices this insert
        # through its seq); only clean rows are written, so a stream of inserts rewrites no inner row.
        if not (session_id in txn.dirty and period_id in txn.dirty and root_id in txn.dirty):
            conn.execute(
                "UPDATE tnodes SET dirty = 1 WHERE id IN (?, ?, ?) AND dirty = 0",
                (session_id, period_id, root_id),
            )
            txn.dirty.update((session_id, period_id, root_id))
        leaf = Leaf(
            id=key.removeprefix("leaf:"),
            session=item.session,
            at=from_epoch(ts),
            position=position,
            speaker=item.speaker,
            text=item.text,
            meta=dict(item.meta),
        )
        return InsertResult(leaf=leaf, created=True)

    def insert(
        self,
        text: str,
        *,
        session: str,
        at: datetime | None = None,
        speaker: str | None = None,
        leaf_id: str | None = None,
        meta: dict[str, str] | None = None,
        session_at: datetime | None = None,
    ) -> InsertResult:
        """Insert one leaf in its own transaction; a duplicate returns the stored leaf with ``created=False``."""
        item = NewLeaf(text, session, at, speaker, leaf_id, dict(meta or {}), session_at)
        return self.insert_many([item])[0]

    def insert_many(self, items: Sequence[NewLeaf]) -> list[InsertResult]:
        """Insert several leaves in one transaction (all or none)."""
        if not items:
            return []
        with self.store.tree_lock(self.tree_id):
            with self.store.write(self.tree_id, f"insert into tree {self.tree_id!r}") as conn:
                seq = self._begin(conn)
                known = self._known_dirty if seq - 1 == self._known_seq else frozenset()
                txn = _InsertTxn(seq, {}, set(known))
                results = [self._insert_one(conn, item, txn) for item in items]
            self._commit_cache(txn.sessions)
            self._known_seq, self._known_dirty = seq, frozenset(txn.dirty)
        return results

    def _commit_cache(self, staged: dict[str, tuple[int, float, int, int]]) -> None:
        """Remember what a committed transaction created or looked up (never after a rollback)."""
        self._tree_ready = True
        self._sessions.update(staged)

    def add_session(self, session: str, at: datetime, *, title: str | None = None) -> PathNode:
        """Create a session dated ``at`` (under its month's period); an existing one is returned as is."""
        ts = to_epoch(at, "at")
        staged: dict[str, tuple[int, float, int, int]] = {}
        with self.store.write(self.tree_id, f"add session to tree {self.tree_id!r}") as conn:
            seq = self._begin(conn)
            row_id, ts, _, _ = self._session_path(conn, session, ts, title, seq, staged)
            summary = conn.execute("SELECT summary FROM tnodes WHERE id = ?", (row_id,)).fetchone()[0]
        self._commit_cache(staged)
        return PathNode(kind=NodeKind.SESSION, key=session, at=from_epoch(ts), summary=summary)

    # ---- summaries ----------------------------------------------------------------------------

    def dirty_work(self, kind: NodeKind) -> list[SummaryWork]:
        """The dirty nodes of one kind with their children's texts (leaves' text or child summaries).

        Refresh asks for sessions, then periods, then the root, writing each level's summaries with
        ``write_summaries`` before reading the next, so parents summarize fresh child summaries.
        """
        level = _LEVELS[kind]
        work: list[SummaryWork] = []
        # One snapshot, so the texts and the seq they are stamped with agree.
        with self.store.snapshot(f"reading dirty nodes of tree {self.tree_id!r}") as conn:
            dirty = conn.execute(
                "SELECT id FROM tnodes WHERE tree_id = ? AND level = ? AND dirty > 0 ORDER BY id",
                (self.tree_id, level),
            ).fetchall()
            newest = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM tnodes WHERE tree_id = ?", (self.tree_id,)
            )
            generation = int(newest.fetchone()[0])
            for (node_id,) in dirty:
                if level == SESSION:
                    rows = conn.execute(
                        "SELECT speaker, text FROM tnodes WHERE parent = ? ORDER BY position, id", (node_id,)
                    ).fetchall()
                    texts = [leaf_text(s, t) for s, t in rows]
                else:
                    rows = conn.execute(
                        "SELECT summary FROM tnodes WHERE parent = ? AND summary != '' ORDER BY ts, id",
                        (node_id,),
                    ).fetchall()
                    texts = [r[0] for r in rows]
                work.append((node_id, generation, texts))
        return work

    def write_summaries(self, results: Sequence[tuple[int, int, str]]) -> None:
        """Store ``(rowid, generation, summary)``; if the tree was written since ``generation``, stay dirty.

        Invariant: a node is marked clean only if nothing was written to the tree after the snapshot its
        summary was computed from (every write stamps a fresh ``seq``), and writing a node's summary
        makes its parent dirty. This is conservative: a write
        elsewhere in the tree during a slow LLM summary makes the node be summarized again next time.
        """
        if not results:
            return
        self._known_seq, self._known_dirty = -1, frozenset()
        with self.store.write(self.tree_id, f"write summaries of tree {self.tree_id!r}") as conn:
            seq = self._begin(conn)
            conn.executemany(
                "UPDATE tnodes SET summary = ?, seq = ?, dirty = ? WHERE id = ?",
                [
                    (summary, seq, int(generation != seq - 1), node_id)
                    for node_id, generation, summary in results
                ],
            )
            # A parent summarizes its children's summaries, so it is stale now too.
            marks = ",".join("?" * len(results))
            conn.execute(
                "UPDATE tnodes SET dirty = 1 WHERE dirty = 0 AND id IN "
                f"(SELECT parent FROM tnodes WHERE id IN ({marks}) AND parent IS NOT NULL)",
                [node_id for node_id, _, _ in results],
            )

    def refresh(self) -> int:
        """Re-summarize dirty nodes bottom-up with the inline summarizer; returns how many were rewritten."""
        summarize = self.summarize
        if summarize is None:
            raise ConfigError(
                f"tree {self.tree_id!r} has an async summarizer; call `await tree.refresh()` on the async tree"
            )
        done = 0
        with self.store.tree_lock(self.tree_id):
            if not self.has_dirty():
                return 0
            for kind in _REFRESH_ORDER:
                work = self.dirty_work(kind)
                self.write_summaries([(node_id, gen, summarize(texts)) for node_id, gen, texts in work])
                done += len(work)
        return done

    def has_dirty(self) -> bool:
        """Whether any node waits for a new summary (one lookup in a small partial index)."""
        with self.store.connection() as conn, translate_errors("reading dirty nodes", self.store.path):
            row = conn.execute(
                "SELECT 1 FROM tnodes WHERE tree_id = ? AND level < 3 AND dirty > 0 LIMIT 1", (self.tree_id,)
            ).fetchone()
            return row is not None

    def dirty(self) -> set[str]:
        """Keys of the dirty nodes (``"root"``, ``"period:2023-05"``, ``"session:D1"``)."""
        with self.store.connection() as conn:
            rows = conn.execute("SELECT key FROM tnodes WHERE tree_id = ? AND dirty > 0", (self.tree_id,))
            return {r[0] for r in rows}

    # ---- reads --------------------------------------------------------------------------------

    def _catch_up(self, conn: Connection) -> None:
        row = conn.execute("SELECT MAX(seq) FROM tnodes WHERE tree_id = ?", (self.tree_id,)).fetchone()
        if row[0] is None or row[0] <= self._index.seen_seq:
            return
        rows = conn.execute(
            "SELECT id, level, key, parent, ts, position, speaker, text, summary FROM tnodes "
            "WHERE tree_id = ? AND seq > ? AND seq <= ? ORDER BY level, seq, id",
            (self.tree_id, self._index.seen_seq, row[0]),
        ).fetchall()
        self._index.apply(rows)
        self._index.seen_seq = row[0]

    def _leaf(self, conn: Connection, row: tuple[int, str, int, float, int, str | None, str, str]) -> Leaf:
        _, key, parent, ts, position, speaker, text, meta = row
        session = conn.execute("SELECT key FROM tnodes WHERE id = ?", (parent,)).fetchone()[0]
        return Leaf(
            id=key.removeprefix("leaf:"),
            session=session.removeprefix("session:"),
            at=from_epoch(ts),
            position=position,
            speaker=speaker,
            text=text,
            meta=json.loads(meta),
        )

    def _path(self, conn: Connection, session_rowid: int) -> tuple[PathNode, ...]:
        path: list[PathNode] = []
        node_id: int | None = session_rowid
        while node_id is not None:
            level, key, ts, summary, parent = conn.execute(
                "SELECT level, key, ts, summary, parent FROM tnodes WHERE id = ?", (node_id,)
            ).fetchone()
            path.append(
                PathNode(kind=_KINDS[level], key=key.split(":", 1)[-1], at=from_epoch(ts), summary=summary)
            )
            node_id = parent
        return tuple(reversed(path))

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        refresh: bool = True,
    ) -> list[SearchHit]:
        """The ``k`` leaves that best match ``query``, best first, each with its path.

        Args:
            query: Free text.
            k: How many leaves at most (leaves that match nothing are never returned).
            since: Only leaves at or after this time.
            until: Only leaves at or before this time.
            refresh: Re-summarize dirty nodes first (when the tree has an inline summarizer).
        """
        if k < 1:
            raise ConfigError(f"k={k!r} must be at least 1")
        lo = None if since is None else to_epoch(since, "since")
        hi = None if until is None else to_epoch(until, "until")
        with self.store.tree_lock(self.tree_id):
            if refresh and self.summarize is not None:
                self.refresh()
            with self.store.connection() as conn:
                self._catch_up(conn)
                top = self._index.top(query, k, self.weights, lo, hi)
                if not top:
                    return []
                marks = ",".join("?" * len(top))
                rows = {
                    r[0]: r
                    for r in conn.execute(
                        f"SELECT {_LEAF_COLUMNS} FROM tnodes WHERE id IN ({marks})", [i for i, _ in top]
                    )
                }
            # Paths and session names come from the index, which was just caught up under the lock.
            paths: dict[int, tuple[PathNode, ...]] = {}
            hits: list[SearchHit] = []
            for rowid, score in top:
                _, key, parent, ts, position, speaker, text, meta = rows[rowid]
                path = paths.get(parent)
                if path is None:
                    path = paths[parent] = self._indexed_path(parent)
                leaf = Leaf(
                    id=key.removeprefix("leaf:"),
                    session=path[-1].key,
                    at=from_epoch(ts),
                    position=position,
                    speaker=speaker,
                    text=text,
                    meta=json.loads(meta),
                )
                hits.append(SearchHit(leaf=leaf, score=score, path=path))
            return hits

    def _indexed_path(self, session_rowid: int) -> tuple[PathNode, ...]:
        path: list[PathNode] = []
        node = self._index.inner.get(session_rowid)
        while node is not None:
            key = node.key.split(":", 1)[-1]
            path.append(
                PathNode(kind=_KINDS[node.level], key=key, at=from_epoch(node.ts), summary=node.summary)
            )
            node = self._index.inner.get(node.parent) if node.parent is not None else None
        return tuple(reversed(path))

    def get(self, leaf_id: str) -> Leaf | None:
        """The leaf with this id, or None."""
        with self.store.connection() as conn:
            row = conn.execute(
                f"SELECT {_LEAF_COLUMNS} FROM tnodes WHERE tree_id = ? AND key = ?",
                (self.tree_id, f"leaf:{leaf_id}"),
            ).fetchone()
            return None if row is None else self._leaf(conn, row)

    def path(self, leaf_id: str) -> tuple[PathNode, ...]:
        """The leaf's path: root, period, session."""
        with self.store.connection() as conn:
            row = conn.execute(
                "SELECT parent FROM tnodes WHERE tree_id = ? AND key = ?", (self.tree_id, f"leaf:{leaf_id}")
            ).fetchone()
            if row is None:
                raise MemoryStoreError(f"no leaf {leaf_id!r} in tree {self.tree_id!r}; check the id")
            return self._path(conn, row[0])

    def leaves(self, session: str | None = None) -> list[Leaf]:
        """All leaves (of one session), in time order."""
        with self.store.connection() as conn:
            if session is None:
                rows = conn.execute(
                    f"SELECT {_LEAF_COLUMNS} FROM tnodes WHERE tree_id = ? AND level = 3 ORDER BY ts, position, id",
                    (self.tree_id,),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_LEAF_COLUMNS} FROM tnodes WHERE parent = "
                    "(SELECT id FROM tnodes WHERE tree_id = ? AND key = ?) ORDER BY position, id",
                    (self.tree_id, f"session:{session}"),
                ).fetchall()
            return [self._leaf(conn, r) for r in rows]


class TemporalMemoryTree:
    """The async temporal memory tree; every call runs the core in the store's worker threads.

    Get one from ``MemoryStore.temporal(tree_id)``.

    Args:
        store: The async store.
        tree_id: The tree's id.
        summarizer: An LLM ``Summarizer`` (async) or a ``SyncSummarizer``; default ``ExtractiveSummarizer()``.
        weights: Retrieval weights.
    """

    def __init__(
        self,
        store: MemoryStore,
        tree_id: str,
        *,
        summarizer: Summarizer | SyncSummarizer | None = None,
        weights: ScoringWeights | None = None,
    ) -> None:
        if not tree_id:
            raise ConfigError("tree_id is empty; name the tree, e.g. 'chat-42'")
        self.store = store
        self.tree_id = tree_id
        self.summarizer: Summarizer | SyncSummarizer = summarizer or DEFAULT_SUMMARIZER
        self._weights = weights
        self._core: TemporalTreeCore | None = None

    @property
    def sync(self) -> TemporalTreeCore:
        """The synchronous core (opens the store on first use; blocking)."""
        if self._core is None:
            inline = self.summarizer.summarize_sync if isinstance(self.summarizer, SyncSummarizer) else None
            self._core = TemporalTreeCore(
                self.store.sync, self.tree_id, summarize=inline, weights=self._weights
            )
        return self._core

    async def _core_async(self) -> TemporalTreeCore:
        if self._core is None:
            await self.store.run(lambda: self.sync)
        assert self._core is not None
        return self._core

    async def insert(
        self,
        text: str,
        *,
        session: str,
        at: datetime | None = None,
        speaker: str | None = None,
        leaf_id: str | None = None,
        meta: dict[str, str] | None = None,
        session_at: datetime | None = None,
    ) -> InsertResult:
        """Insert one leaf (one transaction); a duplicate returns the stored leaf with ``created=False``."""
        core = await self._core_async()
        return await self.store.run(
            core.insert,
            text,
            session=session,
            at=at,
            speaker=speaker,
            leaf_id=leaf_id,
            meta=meta,
            session_at=session_at,
        )

    async def insert_many(self, items: Sequence[NewLeaf]) -> list[InsertResult]:
        """Insert several leaves in one transaction."""
        core = await self._core_async()
        return await self.store.run(core.insert_many, list(items))

    async def add_session(self, session: str, at: datetime, *, title: str | None = None) -> PathNode:
        """Create a dated session (an existing one is returned unchanged)."""
        core = await self._core_async()
        return await self.store.run(core.add_session, session, at, title=title)

    async def refresh(self) -> int:
        """Re-summarize the dirty nodes, sessions first; returns how many were rewritten.

        An LLM summarizer runs in the event loop (up to 4 summaries at once). If the tree is written to
        while a summary is being computed, the new summary is stored but its node stays dirty and is
        redone on the next refresh.
        """
        core = await self._core_async()
        if core.summarize is not None:
            return await self.store.run(core.refresh)
        summarizer = self.summarizer
        assert isinstance(summarizer, Summarizer)
        if not await self.store.run(core.has_dirty):
            return 0
        done = 0
        limiter = anyio.CapacityLimiter(4)
        for kind in _REFRESH_ORDER:
            work = await self.store.run(core.dirty_work, kind)
            results: list[tuple[int, int, str]] = []

            async def one(
                node_id: int, generation: int, texts: list[str], out: list[tuple[int, int, str]]
            ) -> None:
                async with limiter:
                    out.append((node_id, generation, await summarizer.summarize(texts)))

            async with anyio.create_task_group() as tg:
                for node_id, generation, texts in work:
                    tg.start_soon(one, node_id, generation, texts, results)
            await self.store.run(core.write_summaries, sorted(results))
            done += len(work)
        return done

    async def search(
        self, query: str, k: int = 10, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[SearchHit]:
        """The ``k`` best leaves for ``query`` with their paths; dirty summaries are refreshed first."""
        core = await self._core_async()
        if core.summarize is None:
            await self.refresh()
        return await self.store.run(core.search, query, k, since=since, until=until)

    async def get(self, leaf_id: str) -> Leaf | None:
        """The leaf with this id, or None."""
        core = await self._core_async()
        return await self.store.run(core.get, leaf_id)

    async def path(self, leaf_id: str) -> tuple[PathNode, ...]:
        """The leaf's path: root, period, session."""
        core = await self._core_async()
        return await self.store.run(core.path, leaf_id)

    async def leaves(self, session: str | None = None) -> list[Leaf]:
        """All leaves (of one session), in time order."""
        core = await self._core_async()
        return await self.store.run(core.leaves, session)

"""An incremental BM25 (Okapi) index whose scores equal ``rank_bm25.BM25Okapi`` on the same corpus.

``rank_bm25`` recomputes every statistic from the whole corpus whenever it is built, which is fine for a
one-off corpus but not for a memory that grows one leaf at a time and is queried in between. This index
keeps an inverted index (term -> postings) that grows with each ``add`` and computes the same formula at
query time, vectorized with numpy over the postings of the query terms only:

    idf(t)   = ln(N - n_t + 0.5) - ln(n_t + 0.5),   replaced by epsilon * mean(idf) when negative
    score(d) = sum over query terms t of idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * |d| / avgdl))

Documents live in integer *slots* (``0, 1, 2, ...`` in insertion order). A removable index can also drop
or replace a document (used for node summaries, which are rewritten when they are refreshed); a removed
slot is never reused and scores 0.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray: TypeAlias = npt.NDArray[np.float64]

__all__ = ["BM25Index"]

_TF_BITS = 20
_TF_MAX = (1 << _TF_BITS) - 1  # a term repeated more than ~1M times in one document counts as ~1M


class BM25Index:
    """An inverted index with BM25Okapi scoring that grows one document at a time.

    Args:
        k1: Term-frequency saturation (rank-bm25's default 1.5).
        b: Length normalization (rank-bm25's default 0.75).
        epsilon: Floor for negative idf values, as a fraction of the mean idf (rank-bm25's default 0.25).
        removable: Keep each document's terms so that ``remove`` works (costs memory; off for leaves).
    """

    def __init__(
        self, *, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25, removable: bool = False
    ) -> None:
        import numpy as np  # deferred: a heavy import (tests/unit/test_import_cost.py)

        self.k1 = k1
        self.b = b
        self.epsilon = epsilon
        self._removable = removable
        # Postings, appended on add and never shrunk: term -> packed (slot << 20 | term frequency).
        self._post: dict[str, array[int]] = {}
        # Document frequency of each term among live documents.
        self._df: dict[str, int] = {}
        # Per-slot length (tokens) and liveness; grown by doubling.
        self._len = np.zeros(64, dtype=np.float64)
        self._alive = np.zeros(64, dtype=bool)
        self._slots = 0
        self._live = 0
        self._total_len = 0.0
        # Terms of each live document, only when removable: slot -> Counter.
        self._doc_terms: dict[int, Counter[str]] = {}
        # Query-time caches, dropped when the term's postings (or any liveness) change.
        self._cache: dict[str, tuple[npt.NDArray[np.int64], FloatArray]] = {}
        self._mean_idf_at: int = -1
        self._mean_idf = 0.0
        self._version = 0

    @property
    def size(self) -> int:
        """Number of slots handed out (live and removed documents)."""
        return self._slots

    @property
    def live(self) -> int:
        """Number of live documents (the ``N`` of the idf formula)."""
        return self._live

    def add(self, tokens: Sequence[str]) -> int:
        """Index one document and return its slot."""
        import numpy as np  # deferred: a heavy import (tests/unit/test_import_cost.py)

        slot = self._slots
        if slot == len(self._len):
            self._len = np.concatenate([self._len, np.zeros(len(self._len), dtype=np.float64)])
            self._alive = np.concatenate([self._alive, np.zeros(len(self._alive), dtype=bool)])
        self._slots += 1
        self._live += 1
        self._len[slot] = len(tokens)
        self._alive[slot] = True
        self._total_len += len(tokens)
        counts = Counter(tokens)
        post, df = self._post, self._df
        base = slot << _TF_BITS
        for term, tf in counts.items():
            packed = base | (tf if tf <= _TF_MAX else _TF_MAX)
            postings = post.get(term)
            if postings is None:
                post[term] = array("q", (packed,))
                df[term] = 1
            else:
                postings.append(packed)
                df[term] += 1
        if self._cache:
            for term in counts:
                self._cache.pop(term, None)
        if self._removable:
            self._doc_terms[slot] = counts
        self._version += 1
        return slot

    def remove(self, slot: int) -> None:
        """Drop a live document (only for a ``removable`` index); its slot then scores 0."""
        if not self._removable:
            raise ValueError("this BM25Index was built with removable=False; build it with removable=True")
        counts = self._doc_terms.pop(slot, None)
        if counts is None:
            return
        self._alive[slot] = False
        self._live -= 1
        self._total_len -= float(self._len[slot])
        for term in counts:
            self._df[term] -= 1
            if self._df[term] == 0:
                del self._df[term]
            self._cache.pop(term, None)
        self._version += 1

    def idf(self, term: str) -> float:
        """The idf of ``term`` exactly as BM25Okapi computes it (0 for unknown terms)."""
        n = self._df.get(term)
        if not n:
            return 0.0
        value = math.log(self._live - n + 0.5) - math.log(n + 0.5)
        if value < 0:
            return self.epsilon * self._average_idf()
        return value

    def _average_idf(self) -> float:
        import numpy as np  # deferred: a heavy import (tests/unit/test_import_cost.py)

        if self._mean_idf_at != self._version:
            dfs = np.fromiter(self._df.values(), dtype=np.float64, count=len(self._df))
            idfs = np.log(self._live - dfs + 0.5) - np.log(dfs + 0.5)
            self._mean_idf = float(idfs.sum() / len(idfs)) if len(idfs) else 0.0
            self._mean_idf_at = self._version
        return self._mean_idf

    def _postings(self, term: str) -> tuple[npt.NDArray[np.int64], FloatArray]:
        cached = self._cache.get(term)
        if cached is None:
            import numpy as np  # deferred: a heavy import (tests/unit/test_import_cost.py)

            packed = np.array(self._post[term], dtype=np.int64)
            slots = packed >> _TF_BITS
            tfs = (packed & _TF_MAX).astype(np.float64)
            if self._removable:
                keep = self._alive[slots]
                slots, tfs = slots[keep], tfs[keep]
            cached = self._cache[term] = (slots, tfs)
        return cached

    def scores(
        self,
        query: Sequence[str],
        *,
        out: FloatArray | None = None,
        matched: npt.NDArray[np.bool_] | None = None,
    ) -> FloatArray:
        """Score every slot against ``query`` (a token list; repeated terms count again, as in BM25Okapi).

        Args:
            query: The query terms.
            out: A zeroed array of length ``size`` to add the scores into (saves an allocation).
            matched: A boolean array of length ``size``; slots holding a query term are set True.

        Returns:
            An array of length ``size``; removed slots and documents without a query term score 0.
        """
        import numpy as np  # deferred: a heavy import (tests/unit/test_import_cost.py)

        if out is None:
            out = np.zeros(self._slots, dtype=np.float64)
        if self._live == 0:
            return out
        k1, b = self.k1, self.b
        avgdl = self._total_len / self._live
        for term in query:
            if term not in self._df:
                continue
            idf = self.idf(term)
            slots, tf = self._postings(term)
            dl = self._len[slots]
            out[slots] += idf * (tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl)))
            if matched is not None:
                matched[slots] = True
        return out

"""The incremental BM25 index scores exactly like rank_bm25.BM25Okapi."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rank_bm25 import BM25Okapi

from agentflow.memory import BM25Index, tokenize

CORPUS = [
    "Caroline went to the LGBTQ support group yesterday",
    "Melanie painted a sunrise over the lake last year",
    "the support group helped Caroline feel accepted",
    "Melanie signed up for a pottery class",
    "pottery is relaxing, Melanie says, and the class is fun",
    "Caroline is researching adoption agencies",
    "the the the group group",
]
QUERIES = [
    "When did Caroline go to the support group?",
    "pottery class Melanie",
    "group group support",
    "unknown words only",
    "adoption",
]


def _index(docs: list[list[str]]) -> BM25Index:
    index = BM25Index(removable=True)
    for doc in docs:
        index.add(doc)
    return index


@pytest.mark.parametrize("query", QUERIES)
def test_scores_equal_rank_bm25_on_small_corpus(query: str) -> None:
    docs = [tokenize(d) for d in CORPUS]
    expected = BM25Okapi(docs).get_scores(tokenize(query))
    got = _index(docs).scores(tokenize(query))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_negative_idf_floor_matches_rank_bm25_when_term_is_in_most_documents() -> None:
    docs = [["common", "a"], ["common", "b"], ["common", "c"], ["rare"]]
    index = _index(docs)
    reference = BM25Okapi(docs)
    assert index.idf("common") == pytest.approx(reference.idf["common"], abs=1e-12)
    np.testing.assert_allclose(
        index.scores(["common", "rare"]), reference.get_scores(["common", "rare"]), atol=1e-12
    )


def test_remove_gives_scores_of_corpus_without_the_document() -> None:
    docs = [tokenize(d) for d in CORPUS]
    index = _index(docs)
    index.remove(2)
    remaining = [d for i, d in enumerate(docs) if i != 2]
    expected = BM25Okapi(remaining).get_scores(tokenize(QUERIES[0]))
    got = np.delete(index.scores(tokenize(QUERIES[0])), 2)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert index.scores(tokenize(QUERIES[0]))[2] == 0.0
    assert index.live == len(docs) - 1


def test_remove_refused_when_index_is_not_removable() -> None:
    index = BM25Index()
    index.add(["a"])
    with pytest.raises(ValueError, match="removable=True"):
        index.remove(0)


words = st.sampled_from(["alpha", "beta", "gamma", "delta", "eps", "zeta"])


@settings(max_examples=60, deadline=None)
@given(docs=st.lists(st.lists(words, max_size=8), min_size=1, max_size=12), query=st.lists(words, max_size=5))
def test_scores_equal_rank_bm25_for_generated_corpora(docs: list[list[str]], query: list[str]) -> None:
    if sum(map(len, docs)) == 0:
        return  # rank_bm25 divides by a zero average length; a corpus of empty documents has no scores
    np.testing.assert_allclose(_index(docs).scores(query), BM25Okapi(docs).get_scores(query), atol=1e-9)

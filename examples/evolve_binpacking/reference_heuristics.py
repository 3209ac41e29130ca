"""The baselines of the bin-packing benchmark: first fit, best fit and the two published FunSearch heuristics.

The FunSearch heuristics are the ones printed in google-deepmind/funsearch
``bin_packing/bin_packing.ipynb`` ("Heuristic discovered for the OR datasets" and "... for the
Weibull datasets"), reproduced exactly (bins are the remaining capacities of the bins the item fits in).
"""

from __future__ import annotations

import numpy as np


def first_fit(item: float, bins: np.ndarray) -> np.ndarray:
    """Every fitting bin scores the same, so the first one (lowest index) wins."""
    return np.zeros(len(bins))


def best_fit(item: float, bins: np.ndarray) -> np.ndarray:
    """The tightest fitting bin wins (FunSearch's starting point)."""
    return -(bins - item)


def funsearch_or(item: float, bins: np.ndarray) -> np.ndarray:
    """FunSearch's heuristic discovered for the OR datasets."""

    def s(bin: float, item: float) -> float:
        if bin - item <= 2:
            return 4
        elif (bin - item) <= 3:
            return 3
        elif (bin - item) <= 5:
            return 2
        elif (bin - item) <= 7:
            return 1
        elif (bin - item) <= 9:
            return 0.9
        elif (bin - item) <= 12:
            return 0.95
        elif (bin - item) <= 15:
            return 0.97
        elif (bin - item) <= 18:  # noqa: SIM114 (verbatim from the notebook)
            return 0.98
        elif (bin - item) <= 20:  # noqa: SIM114
            return 0.98
        elif (bin - item) <= 21:
            return 0.98
        else:
            return 0.99

    return np.array([s(b, item) for b in bins])


def funsearch_weibull(item: float, bins: np.ndarray) -> np.ndarray:
    """FunSearch's heuristic discovered for the Weibull datasets."""
    max_bin_cap = max(bins)
    score = (bins - max_bin_cap) ** 2 / item + bins**2 / (item**2)
    score += bins**2 / item**3
    score[bins > item] = -score[bins > item]
    score[1:] -= score[:-1]
    result: np.ndarray = score
    return result

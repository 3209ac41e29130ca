"""Online bin packing as in FunSearch: items arrive one by one, ``priority`` picks the bin.

The packer is the FunSearch skeleton: the bins array starts with one empty bin per item, the
heuristic scores the bins the item fits in, and the item goes to the highest score (the first
one on ties). Excess = (bins used - L1 lower bound) / L1 bound, averaged as FunSearch does
(mean bins over instances against the mean L1 bound).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Priority = Callable[[float, np.ndarray], np.ndarray]


def online_binpack(items: Sequence[int], capacity: int, priority: Priority) -> int:
    """Pack ``items`` online into bins of ``capacity``; returns the number of bins used."""
    bins = np.array([capacity for _ in range(len(items))])
    for item in items:
        valid = np.nonzero((bins - item) >= 0)[0]
        scores = priority(item, bins[valid])
        best = valid[np.argmax(scores)]
        bins[best] -= item
    if (bins < 0).any():
        raise ValueError("a bin overflowed: the packing is invalid")
    return int((bins != capacity).sum())


def l1_bound(items: Sequence[int], capacity: int) -> float:
    """The L1 lower bound on the optimal number of bins: ceil(sum / capacity)."""
    return float(np.ceil(np.sum(items) / capacity))


def excess_percent(instances: Sequence[tuple[Sequence[int], int]], priority: Priority) -> float:
    """FunSearch's excess: (mean bins - mean L1 bound) / mean L1 bound, in percent."""
    used = [online_binpack(items, cap, priority) for items, cap in instances]
    bound = [l1_bound(items, cap) for items, cap in instances]
    return 100.0 * (float(np.mean(used)) - float(np.mean(bound))) / float(np.mean(bound))


def or_like(rng: np.random.Generator, n: int = 500) -> tuple[list[int], int]:
    """An instance from the OR3 distribution: sizes uniform in [20, 100], capacity 150."""
    return [int(x) for x in rng.integers(20, 101, size=n)], 150


def weibull_like(rng: np.random.Generator, n: int = 5000) -> tuple[list[int], int]:
    """An instance from the Weibull 5k distribution: Weibull(shape 3, scale 45) clipped to [1, 100], capacity 100."""
    sizes = np.clip(np.round(45.0 * rng.weibull(3.0, size=n)), 1, 100)
    return [int(x) for x in sizes], 100

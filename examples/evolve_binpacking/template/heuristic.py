"""The heuristic being evolved: which bin an arriving item goes to."""

from __future__ import annotations

import numpy as np


def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """Return the priority of putting ``item`` into each bin (highest wins).

    Args:
        item: Size of the item to pack.
        bins: Remaining capacities of the bins the item fits in.

    Returns:
        One score per bin, same shape as ``bins``.
    """
    return -(bins - item)

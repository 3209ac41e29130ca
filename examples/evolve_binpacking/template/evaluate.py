"""Fitness of ``heuristic.priority``: minus the excess bins (percent over the L1 bound) on training instances.

The training instances are drawn with a fixed seed from the distributions of the benchmark sets
(OR3: uniform 20..100, capacity 150; Weibull 5k: Weibull(3, 45), capacity 100) but are not the
benchmark instances. Prints one number; higher is better (0 would mean L1-optimal packings).
"""

from __future__ import annotations

import numpy as np
from binpack import excess_percent, or_like, weibull_like
from heuristic import priority

SEED = 20231214


def main() -> None:
    rng = np.random.default_rng(SEED)
    or_instances = [or_like(rng, 500) for _ in range(4)]
    weibull_instances = [weibull_like(rng, 2000) for _ in range(2)]
    score = -(excess_percent(or_instances, priority) + excess_percent(weibull_instances, priority)) / 2.0
    print(f"{score:.6f}")


if __name__ == "__main__":
    main()

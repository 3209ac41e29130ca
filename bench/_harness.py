"""What every benchmark shares: repetitions, median and min-max, the machine it ran on, and the JSON file.

A benchmark measures the same thing ``repetitions`` times (at least 3 with ``--quick``), reports the median
with the min-max range, and keeps every raw sample in its JSON, so a reader can tell a real difference from
noise. It prints the machine first (CPUs, load average at start), because on a shared machine absolute times
move with the load: compare ratios measured in the same run, and quote the load with any number.

    from _harness import Machine, add_repetition_args, summarize, span, write_json

    machine = Machine.now()                        # at start: platform, CPUs, load average
    machine.print(console)
    samples = [measure() for _ in range(args.repetitions)]
    stat = summarize(samples)                      # {"median", "min", "max", "n", "samples"}
    console.print(span(stat))                      # "1.23 (1.10-1.40)"
    write_json(args.json, {"machine": machine.finish(), "seconds": stat, ...})
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

__all__ = [
    "Machine",
    "add_repetition_args",
    "combine",
    "median_of",
    "paired_ratios",
    "ranges",
    "repetitions_of",
    "span",
    "summarize",
    "write_json",
]

Stat = dict[str, object]
"""``{"median": float, "min": float, "max": float, "n": int, "samples": [float, ...]}``."""


def add_repetition_args(parser: argparse.ArgumentParser, *, quick: int = 3, full: int = 5) -> None:
    """Add ``--repetitions N`` (default ``quick`` with ``--quick``, else ``full``; at least 3 either way)."""
    if quick < 3 or full < quick:
        raise ValueError(
            f"repetitions must be >= 3 in quick mode and no fewer in full mode, got {quick}/{full}"
        )
    parser.add_argument(
        "--repetitions",
        type=int,
        default=None,
        help=f"times each measurement is repeated (default {quick} with --quick, {full} otherwise; min 3)",
    )
    parser.set_defaults(_repetitions_default=(quick, full))


def repetitions_of(args: argparse.Namespace) -> int:
    """The repetitions to run: ``--repetitions`` if given (at least 3), else the mode's default."""
    quick, full = args._repetitions_default
    given: int | None = args.repetitions
    if given is not None and given < 3:
        raise SystemExit(
            f"--repetitions must be >= 3 (a median of fewer says nothing about noise), got {given}"
        )
    return given if given is not None else (quick if getattr(args, "quick", False) else full)


def summarize(samples: Sequence[float]) -> Stat:
    """Median, min, max and the raw samples of one measurement repeated ``len(samples)`` times."""
    values = [float(s) for s in samples]
    if not values:
        raise ValueError("summarize needs at least one sample")
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "samples": values,
    }


def median_of(stat: Stat) -> float:
    """The median of a ``summarize`` result."""
    value = stat["median"]
    assert isinstance(value, float)
    return value


def span(stat: Stat, fmt: str = "{:.2f}") -> str:
    """``"median (min-max)"``, e.g. ``1.23 (1.10-1.40)``."""
    return f"{fmt.format(stat['median'])} ({fmt.format(stat['min'])}-{fmt.format(stat['max'])})"


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> Stat:
    """``summarize`` of per-repetition ratios ``a_i / b_i`` (pairs measured back to back share the load)."""
    if len(numerators) != len(denominators):
        raise ValueError(f"paired_ratios needs equal lengths, got {len(numerators)} and {len(denominators)}")
    return summarize([a / b if b else float("nan") for a, b in zip(numerators, denominators, strict=True)])


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def combine(runs: Sequence[object]) -> object:
    """One result from the results of repeated runs (same shape): every number becomes the median over the
    runs, dicts are combined key by key, and anything else is kept when all runs agree (else the list of
    what each run gave)."""
    first = runs[0]
    if all(_is_number(r) for r in runs):
        middle = statistics.median(float(r) for r in runs)  # type: ignore[arg-type]
        return int(middle) if all(isinstance(r, int) for r in runs) and middle.is_integer() else middle
    if all(isinstance(r, Mapping) for r in runs):
        keys = list(first)  # type: ignore[call-overload]
        if all(list(r) == keys for r in runs):  # type: ignore[call-overload]
            return {k: combine([r[k] for r in runs]) for k in keys}  # type: ignore[index]
    return first if all(r == first for r in runs) else list(runs)


def ranges(runs: Sequence[object]) -> object:
    """The ``[min, max]`` over repeated runs of every number in their results (dicts key by key); ``None``
    where the runs hold no number."""
    first = runs[0]
    if all(_is_number(r) for r in runs):
        values = [float(r) for r in runs]  # type: ignore[arg-type]
        return [min(values), max(values)]
    if all(isinstance(r, Mapping) for r in runs):
        keys = list(first)  # type: ignore[call-overload]
        if all(list(r) == keys for r in runs):  # type: ignore[call-overload]
            out = {k: ranges([r[k] for r in runs]) for k in keys}  # type: ignore[index]
            return {k: v for k, v in out.items() if v is not None} or None
    return None


def _load() -> tuple[float, float, float]:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:  # not available on this platform
        return (float("nan"),) * 3  # type: ignore[return-value]
    return round(one, 2), round(five, 2), round(fifteen, 2)


@dataclass
class Machine:
    """The machine a benchmark ran on: taken at start, completed at the end with ``finish``."""

    platform: str
    python: str
    cpus: int
    load_average_at_start: tuple[float, float, float]
    started_unix: float
    extra: dict[str, object] = field(default_factory=dict)

    @classmethod
    def now(cls, **extra: object) -> Machine:
        """The machine as it is now (call before the first measurement)."""
        return cls(
            platform=platform.platform(),
            python=sys.version.split()[0],
            cpus=os.cpu_count() or 0,
            load_average_at_start=_load(),
            started_unix=round(time.time(), 1),
            extra=dict(extra),
        )

    def print(self, console: Console) -> None:
        """One line: CPUs, load average (1, 5, 15 min) at start, platform, extras."""
        one, five, fifteen = self.load_average_at_start
        extras = "".join(f", {k}={v}" for k, v in self.extra.items())
        console.print(
            f"[bold]machine[/bold]: {self.cpus} CPUs, load average at start {one} / {five} / {fifteen} "
            f"(1/5/15 min), {self.platform}, Python {self.python}{extras}"
        )

    def finish(self) -> dict[str, object]:
        """The JSON record, with the load average at the end and the wall time added."""
        return {
            "platform": self.platform,
            "python": self.python,
            "cpus": self.cpus,
            "load_average_at_start": list(self.load_average_at_start),
            "load_average_at_end": list(_load()),
            "wall_s": round(time.time() - self.started_unix, 1),
            **self.extra,
        }


def write_json(path: str | os.PathLike[str] | None, result: Mapping[str, object]) -> None:
    """Write ``result`` as indented JSON (parent folders created); nothing when ``path`` is ``None``."""
    if path is None:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2, default=str))

"""LoCoMo evidence recall of the temporal memory tree vs flat BM25 over turns, plus insert and query speed.

For each conversation we build a temporal tree (sessions dated from ``session_N_date_time``, leaf ids =
turn ids like ``D3:12``) in a real SQLite file, and for each QA item with evidence we retrieve the top-k
turns for the question. Recall@k = |retrieved ∩ evidence| / |evidence|, averaged over questions. The
baseline is ``rank_bm25.BM25Okapi`` over the same turn texts with the same tokenizer, in the same run.
The tree's weights were picked on conversations 26 and 30 (see ``ScoringWeights``); the held-out
recall over the other conversations is reported separately.

Also measured: inserts per second (one transaction per turn, no LLM summaries, synchronous=NORMAL
and FULL; and one transaction per session) and the p50/p95 latency of ``search`` on a synthetic
100,000-leaf tree (1,000 sessions of 100 leaves, Zipf-distributed words; a quarter of the queries
carry a ``since`` filter). Wall-clock rates depend on how busy the machine is: the load average is
recorded, and inserts per CPU-second are reported next to inserts per second. Recall is deterministic and
measured once; the timings are repeated (``--repetitions``, 3 with ``--quick``) into fresh SQLite files and
reported as medians, with the min-max and every sample in the JSON.

Usage: python bench/locomo_recall.py [--data DIR] [--json PATH] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from _harness import Machine, add_repetition_args, combine, ranges, repetitions_of, write_json
from _locomo import LocomoConversation, load_locomo
from rank_bm25 import BM25Okapi
from rich.console import Console
from rich.table import Table

from agentflow.memory import (
    ExtractiveSummarizer,
    NewLeaf,
    ScoringWeights,
    StoreCore,
    Synchronous,
    TemporalTreeCore,
    tokenize,
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "locomo"
DEV_CONVERSATIONS = {"26", "30", "conv-26", "conv-30"}
KS = (5, 10)
SEED = 7


@dataclass
class Recall:
    """Sums of per-question recall, per k, for one system."""

    sums: dict[int, float]
    n: int = 0

    def add(self, retrieved: Sequence[str], evidence: Sequence[str]) -> None:
        gold = set(evidence)
        for k in KS:
            self.sums[k] += len(gold & set(retrieved[:k])) / len(gold)
        self.n += 1

    def value(self, k: int) -> float:
        return 100.0 * self.sums[k] / self.n if self.n else 0.0


def new_recall() -> Recall:
    return Recall({k: 0.0 for k in KS})


def tree_core(path: Path, tree_id: str, weights: ScoringWeights | None = None) -> TemporalTreeCore:
    store = StoreCore(path)
    summarizer = ExtractiveSummarizer(max_words=200)
    return TemporalTreeCore(store, tree_id, summarize=summarizer.summarize_sync, weights=weights)


def evaluate(
    conversations: list[LocomoConversation], workdir: Path, ablations: dict[str, ScoringWeights]
) -> dict[str, dict[str, Recall]]:
    """Recall per system, overall and on the held-out conversations."""
    systems = ["tree", "flat", *ablations]
    out = {split: {s: new_recall() for s in systems} for split in ("all", "held_out")}
    for conv in conversations:
        core = tree_core(workdir / f"recall-{conv.conv_id}.db", f"locomo-{conv.conv_id}")
        for session in conv.sessions:
            core.insert_many(session.leaves())
        leaves = conv.leaves()
        ids = [leaf.leaf_id or "" for leaf in leaves]
        flat = BM25Okapi([tokenize(f"{leaf.speaker}: {leaf.text}") for leaf in leaves])
        variants = {
            name: TemporalTreeCore(core.store, core.tree_id, weights=w) for name, w in ablations.items()
        }
        splits = ["all"] + ([] if conv.conv_id in DEV_CONVERSATIONS else ["held_out"])
        for qa in conv.questions:
            if not qa.evidence:
                continue
            k = max(KS)
            got = {"tree": [h.leaf.id for h in core.search(qa.question, k)]}
            scores = flat.get_scores(tokenize(qa.question))
            got["flat"] = [ids[i] for i in np.argsort(-scores, kind="stable")[:k]]
            for name, variant in variants.items():
                got[name] = [h.leaf.id for h in variant.search(qa.question, k, refresh=False)]
            for split in splits:
                for system, retrieved in got.items():
                    out[split][system].add(retrieved, qa.evidence)
        core.store.close()
    return out


def insert_rate(
    conversations: list[LocomoConversation],
    workdir: Path,
    synchronous: Synchronous,
    limit: int,
    *,
    batch: bool,
) -> dict[str, float]:
    """Turns per second into a real SQLite file, no summaries (they are computed lazily on read).

    ``batch=False``: one transaction per turn (``insert``); ``batch=True``: one per session
    (``insert_many``). Also reports turns per CPU-second of this process, which does not depend on
    how busy the machine is.
    """
    store = StoreCore(workdir / f"insert-{synchronous}-{batch}.db", synchronous=synchronous)
    groups: list[tuple[TemporalTreeCore, list[NewLeaf]]] = []
    total = 0
    for conv in conversations:
        tree = TemporalTreeCore(store, f"ins-{conv.conv_id}")
        for session in conv.sessions:
            leaves = session.leaves()[: max(0, limit - total)]
            total += len(leaves)
            if leaves:
                groups.append((tree, leaves))
    cpu, start = time.process_time(), time.perf_counter()
    for tree, leaves in groups:
        if batch:
            tree.insert_many(leaves)
        else:
            for leaf in leaves:
                tree.insert_many([leaf])
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert sum(t.leaves for t in store.stats().trees) == total
    store.close()
    return {"per_s": total / elapsed, "per_cpu_s": total / cpu}


def synthetic_query_p95(workdir: Path, n_leaves: int, n_queries: int) -> dict[str, float]:
    """Build a synthetic tree of ``n_leaves`` leaves (100 per session) and time ``search``."""
    rng = random.Random(SEED)
    vocab = [f"w{i}" for i in range(20_000)]
    cum_weights = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(vocab))))  # Zipf-like
    store = StoreCore(workdir / "synthetic.db")
    core = TemporalTreeCore(store, "synthetic", summarize=ExtractiveSummarizer(max_words=200).summarize_sync)
    start_day = datetime(2020, 1, 1, tzinfo=UTC)
    t0 = time.perf_counter()
    batch: list[NewLeaf] = []
    for i in range(n_leaves):
        session = i // 100
        at = start_day + timedelta(days=session, minutes=i % 100)
        words = rng.choices(vocab, cum_weights=cum_weights, k=rng.randint(8, 25))
        batch.append(NewLeaf(" ".join(words), session=f"s{session}", at=at, leaf_id=f"L{i}"))
        if len(batch) == 100:
            core.insert_many(batch)
            batch = []
    if batch:
        core.insert_many(batch)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    core.search("w1 w2", 10)  # loads the index and writes the summaries once
    first_s = time.perf_counter() - t0
    times: list[float] = []
    cpu_times: list[float] = []
    since = start_day + timedelta(days=n_leaves // 200)
    for q in range(n_queries):
        query = " ".join(rng.choices(vocab[:5000], k=rng.randint(3, 8)))
        t0, c0 = time.perf_counter(), time.thread_time()
        if q % 4 == 3:
            core.search(query, 10, since=since)
        else:
            core.search(query, 10)
        times.append((time.perf_counter() - t0) * 1000)
        cpu_times.append((time.thread_time() - c0) * 1000)
    store.close()
    times.sort()
    cpu_times.sort()
    return {
        "query_p50_ms": statistics.median(times),
        "query_p95_ms": times[int(0.95 * (len(times) - 1))],
        "query_p95_cpu_ms": cpu_times[int(0.95 * (len(cpu_times) - 1))],
        "build_s": build_s,
        "first_search_s": first_s,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="LoCoMo folder (or one file)")
    parser.add_argument("--json", type=Path, default=None, help="write results as JSON here")
    parser.add_argument("--quick", action="store_true", help="2 conversations, 10k synthetic leaves")
    add_repetition_args(parser, quick=3, full=5)
    args = parser.parse_args(argv)
    console = Console()
    machine = Machine.now()
    machine.print(console)
    conversations = load_locomo(args.data)
    if args.quick:  # one tuning conversation and one held out
        dev = [c for c in conversations if c.conv_id in DEV_CONVERSATIONS][:1]
        conversations = dev + [c for c in conversations if c.conv_id not in DEV_CONVERSATIONS][:1]
    n_synthetic = 10_000 if args.quick else 100_000
    ablations = {
        "tree: leaf only": ScoringWeights(session=0.0, period=0.0, neighbor=0.0),
        "tree: + session": ScoringWeights(session=0.5, period=0.0, neighbor=0.0),
        "tree: + neighbor": ScoringWeights(session=0.0, period=0.0, neighbor=0.3),
        "tree: + period 0.2": ScoringWeights(session=0.5, period=0.2, neighbor=0.3),
    }
    reps = repetitions_of(args)
    runs: list[dict[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="locomo-bench-") as tmp:
        work = Path(tmp)
        recall = evaluate(conversations, work, ablations)  # deterministic: measured once
        for rep in range(reps):  # timings: repeated, each into fresh SQLite files
            here = work / f"rep{rep}"
            here.mkdir()
            runs.append(
                {
                    "normal": insert_rate(
                        conversations, here, "NORMAL", 5000 if args.quick else 20_000, batch=False
                    ),
                    "batched": insert_rate(
                        conversations, here, "NORMAL", 5000 if args.quick else 20_000, batch=True
                    ),
                    "full": insert_rate(conversations, here, "FULL", 200 if args.quick else 500, batch=False),
                    "speed": synthetic_query_p95(here, n_synthetic, 200 if args.quick else 500),
                }
            )
    medians = combine(runs)
    spans = ranges(runs)
    assert isinstance(medians, dict) and isinstance(spans, dict)
    normal, batched, full, speed = (medians[k] for k in ("normal", "batched", "full", "speed"))

    load = os.getloadavg()[0]
    table = Table(title=f"LoCoMo evidence recall ({len(conversations)} conversations)")
    table.add_column("system")
    for split in ("all", "held_out"):
        for k in KS:
            table.add_column(f"R@{k} {split}", justify="right")
    for system in recall["all"]:
        table.add_row(system, *(f"{recall[s][system].value(k):.1f}" for s in ("all", "held_out") for k in KS))
    console.print(table)
    console.print(
        f"questions: {recall['all']['tree'].n} (held out: {recall['held_out']['tree'].n}); "
        f"insert/s (one txn per turn) NORMAL {normal['per_s']:,.0f} ({normal['per_cpu_s']:,.0f} per CPU-s), "
        f"FULL {full['per_s']:,.0f}; one txn per session {batched['per_s']:,.0f}; load average {load:.1f}; "
        f"query p50/p95 at {n_synthetic:,} leaves: {speed['query_p50_ms']:.2f} / {speed['query_p95_ms']:.2f} ms "
        f"(p95 CPU time {speed['query_p95_cpu_ms']:.2f} ms) "
        f"(build {speed['build_s']:.1f} s, first search incl. index load {speed['first_search_s']:.1f} s); "
        f"medians of {reps} repetitions, min-max: insert/s {spans['normal']['per_s'][0]:,.0f}-"
        f"{spans['normal']['per_s'][1]:,.0f}, query p95 {spans['speed']['query_p95_ms'][0]:.2f}-"
        f"{spans['speed']['query_p95_ms'][1]:.2f} ms"
    )
    result: dict[str, object] = {
        f"recall@{k}": {
            "tree": round(recall["all"]["tree"].value(k), 2),
            "flat": round(recall["all"]["flat"].value(k), 2),
        }
        for k in sorted(KS, reverse=True)
    }
    result.update(
        {
            "insert_per_s": round(normal["per_s"], 1),
            f"query_p95_ms_{'100k' if n_synthetic == 100_000 else f'{n_synthetic // 1000}k'}": round(
                speed["query_p95_ms"], 3
            ),
            "insert_per_cpu_s": round(normal["per_cpu_s"], 1),
            "insert_per_s_synchronous_full": round(full["per_s"], 1),
            "insert_per_s_one_txn_per_session": round(batched["per_s"], 1),
            "load_average_1m": round(load, 2),
            "cpus": os.cpu_count(),
            "query_p50_ms": round(speed["query_p50_ms"], 3),
            "query_p95_cpu_ms": round(speed["query_p95_cpu_ms"], 3),
            "held_out": {
                f"recall@{k}": {s: round(r.value(k), 2) for s, r in recall["held_out"].items()} for k in KS
            },
            "ablation_all": {
                f"recall@{k}": {s: round(r.value(k), 2) for s, r in recall["all"].items()} for k in KS
            },
            "questions": recall["all"]["tree"].n,
            "conversations": len(conversations),
            "synthetic_leaves": n_synthetic,
            "quick": args.quick,
            "repetitions": reps,
            "timing_ranges": spans,
            "timing_samples": runs,
            "machine": machine.finish(),
        }
    )
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()

"""BFCL function specs through the tool registry: can every spec load, and does every gold call validate?

Reads ``BFCL_v4_parallel.json`` and ``BFCL_v4_parallel_multiple.json`` (JSON lines, one question each with its
``function`` specs) and ``possible_answer/`` (per gold call, each argument's list of allowed values, where ``""``
means the argument may be omitted). Every question gets its own registry (names repeat across questions with
different specs). Nested dict answers are {key: [allowed, ...]} maps themselves. Each gold call is checked as several concrete calls: the first allowed value of every argument,
then each alternative value of each argument in turn, then each omittable argument left out. A gold call is valid
when all of its concrete calls validate against the generated argument schema.

Baseline, same run: the raw BFCL parameter schemas checked as JSON Schema without our normalizer (BFCL's
``dict``/``float``/``tuple``/``any`` types are not JSON Schema), and the gold calls validated against them where the
raw schema is usable.

    python bench/bfcl_schemas.py [--data DIR] [--json PATH] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jsonschema
from _harness import Machine, add_repetition_args, repetitions_of, span, summarize, write_json
from rich.console import Console
from rich.table import Table

from agentflow.errors import AgentflowError
from agentflow.executors import Tool, ToolRegistry

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "bfcl"
FILES = ("BFCL_v4_parallel.json", "BFCL_v4_parallel_multiple.json")


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pick(value: object) -> object:
    """Turn one allowed value into a concrete value: nested dicts are themselves {key: [allowed, ...]} maps."""
    if isinstance(value, dict) and all(isinstance(v, list) for v in value.values()):
        out: dict[str, object] = {}
        for key, options in value.items():
            present = [v for v in options if v != ""]
            if present:
                out[key] = pick(present[0])
        return out
    return value


def concrete_calls(
    allowed: dict[str, list[object]], tool: Tool
) -> tuple[list[tuple[str, dict[str, object]]], list[str]]:
    """Expand one gold call's allowed values into labelled concrete argument dicts.

    Alternatives BFCL's own checker can never accept are left out and returned as notes: leaving out a parameter
    the spec requires ("" listed for a required parameter), and giving a parameter the spec does not declare
    (a value listed next to "" for an undeclared name). A value for an undeclared name *without* "" stays in, so
    it is rejected.
    """
    declared = set(tool.param_names)
    notes: list[str] = []
    base: dict[str, object] = {}
    for name, values in allowed.items():
        present = [v for v in values if v != ""]
        if name not in declared and "" in values:
            if present:
                notes.append(
                    f"{name}={present!r} is not a parameter of the spec (omitting it is the other answer)"
                )
            continue
        if present:
            base[name] = pick(present[0])
    calls = [("first allowed values", dict(base))]
    for name, values in allowed.items():
        if name not in base:
            continue
        present = [v for v in values if v != ""]
        calls.extend((f"{name}={alt!r}", {**base, name: pick(alt)}) for alt in present[1:])
        if "" in values:
            if name in tool.required:
                notes.append(f"{name} may be omitted per the answer, but the spec requires it")
            else:
                calls.append((f"{name} omitted", {k: v for k, v in base.items() if k != name}))
    return calls, notes


def check(data: Path, quick: bool) -> dict[str, object]:
    """One full pass: load every spec, validate every gold call; the fractions and lists are deterministic."""
    started = time.perf_counter()
    specs_total = specs_loaded = 0
    raw_specs_valid = 0
    calls_total = calls_valid = raw_calls_valid = some_valid = 0
    concrete_total = 0
    rejected: list[dict[str, object]] = []
    unreachable: list[dict[str, object]] = []
    per_file: dict[str, dict[str, int]] = {}
    for filename in FILES:
        questions = read_jsonl(data / filename)
        answers = {a["id"]: a for a in read_jsonl(data / "possible_answer" / filename)}
        if quick:
            questions = questions[:40]
        stats = {"questions": len(questions), "specs": 0, "gold_calls": 0, "gold_valid": 0}
        for question in questions:
            qid = str(question["id"])
            registry = ToolRegistry()
            raw_validators: dict[str, jsonschema.Draft202012Validator] = {}
            for spec in question["function"]:  # type: ignore[attr-defined]
                specs_total += 1
                stats["specs"] += 1
                try:
                    registry.register(Tool.from_spec(spec))
                    specs_loaded += 1
                except AgentflowError as exc:
                    rejected.append(
                        {"id": qid, "function": spec.get("name"), "stage": "load", "reason": str(exc)}
                    )
                try:
                    jsonschema.Draft202012Validator.check_schema(spec["parameters"])
                    raw_specs_valid += 1
                    raw_validators[spec["name"]] = jsonschema.Draft202012Validator(spec["parameters"])
                except jsonschema.SchemaError:
                    pass
            for gold in answers[qid]["ground_truth"]:  # type: ignore[index]
                ((name, allowed),) = gold.items()
                calls_total += 1
                stats["gold_calls"] += 1
                problems: list[str] = []
                raw_ok = name in raw_validators
                if name not in registry:
                    rejected.append(
                        {"id": qid, "function": name, "stage": "validate", "reason": "no such spec"}
                    )
                    continue
                calls, notes = concrete_calls(allowed, registry.get(name))
                unreachable.extend({"id": qid, "function": name, "note": note} for note in notes)
                for label, arguments in calls:
                    concrete_total += 1
                    try:
                        registry.get(name).validate(arguments)
                    except AgentflowError as exc:
                        problems.append(f"{label}: {exc}")
                    if raw_ok:
                        try:
                            raw_ok = not list(raw_validators[name].iter_errors(arguments))
                        except jsonschema.exceptions.UnknownType:
                            raw_ok = False
                some_valid += int(len(problems) < len(calls))
                if problems:
                    rejected.append(
                        {"id": qid, "function": name, "stage": "validate", "reason": "; ".join(problems)}
                    )
                else:
                    calls_valid += 1
                    stats["gold_valid"] += 1
                raw_calls_valid += int(raw_ok)
        per_file[filename] = stats
    elapsed = time.perf_counter() - started

    return {
        "specs_loaded_fraction": specs_loaded / specs_total if specs_total else 0.0,
        "gold_calls_valid_fraction": calls_valid / calls_total if calls_total else 0.0,
        "gold_calls_with_some_valid_alternative_fraction": some_valid / calls_total if calls_total else 0.0,
        "specs": specs_total,
        "gold_calls": calls_total,
        "concrete_calls_checked": concrete_total,
        "baseline_raw_specs_valid_json_schema_fraction": raw_specs_valid / specs_total
        if specs_total
        else 0.0,
        "baseline_raw_gold_calls_valid_fraction": raw_calls_valid / calls_total if calls_total else 0.0,
        "per_file": per_file,
        "rejected": rejected,
        "unreachable_gold_alternatives": unreachable,
        "seconds": round(elapsed, 3),
        "quick": quick,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the BFCL files")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="only the first 40 questions of each file")
    add_repetition_args(parser, quick=3, full=5)
    opts = parser.parse_args()
    machine = Machine.now()
    console = Console()
    machine.print(console)

    runs = [check(opts.data, opts.quick) for _ in range(repetitions_of(opts))]
    seconds = [float(r.pop("seconds")) for r in runs]  # type: ignore[arg-type]
    if any(r != runs[0] for r in runs[1:]):
        raise SystemExit("bfcl_schemas: repetitions disagree on deterministic results; this is a bug")
    result = {**runs[0], "seconds": summarize(seconds), "repetitions": len(runs), "machine": machine.finish()}

    table = Table(title="BFCL specs -> tool registry -> gold-call validation")
    table.add_column("measure")
    table.add_column("ours (normalized)", justify="right")
    table.add_column("baseline (raw schema)", justify="right")
    table.add_row(
        "specs loaded / valid JSON Schema",
        f"{result['specs_loaded_fraction']:.4f}",
        f"{result['baseline_raw_specs_valid_json_schema_fraction']:.4f}",
    )
    table.add_row(
        "gold calls valid",
        f"{result['gold_calls_valid_fraction']:.4f}",
        f"{result['baseline_raw_gold_calls_valid_fraction']:.4f}",
    )
    table.add_row(
        "gold calls with >= 1 valid alternative",
        f"{result['gold_calls_with_some_valid_alternative_fraction']:.4f}",
        "",
    )
    table.add_row(
        "specs / gold calls / concrete calls",
        f"{result['specs']} / {result['gold_calls']} / {result['concrete_calls_checked']}",
        "",
    )
    console.print(table)
    for item in result["unreachable_gold_alternatives"]:  # type: ignore[attr-defined]
        console.print(
            f"[yellow]unreachable alternative[/yellow] {item['id']} {item['function']}: {item['note']}"
        )
    for item in result["rejected"]:  # type: ignore[attr-defined]
        console.print(
            f"[red]rejected[/red] {item['id']} {item['function']} ({item['stage']}): {item['reason']}"
        )
    console.print(f"check time: {span(result['seconds'], '{:.3f}')} s over {len(runs)} repetitions")  # type: ignore[arg-type]
    write_json(opts.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

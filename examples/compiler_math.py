"""LLMCompiler on ParallelQA-style questions: parallel lookups in a data table, then arithmetic.

    python examples/compiler_math.py [--engine SPEC] [--question TEXT]

The planner writes a JSON plan under a grammar that only admits the two tools with typed arguments;
each call starts as soon as it is decoded and its inputs are ready; the joiner answers or asks for one
replan. ``lookup`` reads examples/data/peaks_and_rivers.csv (an unknown name is an error the joiner
sees, not a made-up value) and ``math`` is the safe calculator.

The bundled SmolLM2-135M (the default engine) cannot really plan: expect wrong or incomplete plans and
answers. The run, its plan and its tool calls are real either way; for real answers use a real model:

    python examples/compiler_math.py --engine openai:http://127.0.0.1:8000/v1#Qwen/Qwen3-8B
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from agentflow import Err, run_sync, usage_of
from agentflow.agents import llm_compiler
from agentflow.executors import ToolRegistry
from agentflow.plans.builtin_tools import calculator

DATA = Path(__file__).resolve().parent / "data" / "peaks_and_rivers.csv"


def _rows() -> dict[str, dict[str, str]]:
    with DATA.open(encoding="utf-8", newline="") as fh:
        return {row["name"].casefold(): row for row in csv.DictReader(fh)}


def lookup(entity: str) -> str:
    """Look up the height of a mountain or the length of a river.

    Args:
        entity: One name, e.g. "K2" or "Nile".
    """
    rows = _rows()
    row = rows.get(entity.strip().casefold())
    if row is None:
        known = ", ".join(r["name"] for r in rows.values())
        raise ValueError(f"no mountain or river named {entity!r} in {DATA.name}; known: {known}")
    size = "tall" if row["kind"] == "mountain" else "long"
    return f"{row['name']} ({row['where']}) is {row['value']} {row['unit']} {size}."


def math(expression: str) -> float:
    """Evaluate arithmetic with + - * / and parentheses.

    Args:
        expression: The expression, e.g. "8849 - 8611".
    """
    return calculator(expression)


GUIDE = """Example.
Question: How much longer is the Nile than the Amazon, in km?
Plan: [{"tool": "lookup", "args": {"entity": "Nile"}}, {"tool": "lookup", "args": {"entity": "Amazon"}},
{"tool": "math", "args": {"expression": "6650 - 6400"}}]
Look up each entity in its own call."""


QUESTION = "How much taller is Mount Everest than K2, in metres?"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", default="llamacpp:default")
    parser.add_argument("--question", default=QUESTION)
    args = parser.parse_args()

    tools = ToolRegistry([lookup, math])
    outcome = run_sync(llm_compiler(args.question, tools, system=GUIDE, max_replans=1), engine=args.engine)
    if isinstance(outcome, Err):
        print(f"run failed: {outcome.error}")
        return 1
    result = outcome.value
    print(f"question: {args.question}")
    for task in result.tasks:
        print(f"  {task.id}. {task.call_text()}  ->  {result.results[task.id].observation()}")
    print(f"answer:   {result.answer}  (replans: {result.replans})")
    if args.question == QUESTION:
        rows = _rows()
        print(f"check:    the table says {int(rows['mount everest']['value']) - int(rows['k2']['value'])} m")
    if args.engine == "llamacpp:default":
        print(
            "note:     the bundled 135M model rarely plans well; run on a real model with --engine openai:URL#MODEL"
        )
    u = usage_of(outcome.trace)
    print(
        f"usage:    {u.prompt_tokens} prompt tokens ({u.cached_tokens} cached), {u.completion_tokens} completion tokens"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""LLMCompiler on ParallelQA-style questions: parallel lookups in a local fact table, then math.

    python examples/compiler_math.py [--engine SPEC] [--question TEXT]

The planner (on the embedded SmolLM2-135M by default) writes a JSON plan under a grammar that only
admits the two tools with typed arguments; each call starts as soon as it is decoded and its inputs
are ready; the joiner answers or asks for one replan. With a model this small the plans are often
incomplete; the run, its plan and its tool calls are real either way.
"""

from __future__ import annotations

import argparse

from agentflow import Err, run_sync, usage_of
from agentflow.agents import llm_compiler
from agentflow.executors import ToolRegistry
from agentflow.plans.builtin_tools import calculator

FACTS = {
    "mount everest": "Mount Everest is 8849 metres tall.",
    "k2": "K2 is 8611 metres tall.",
    "mont blanc": "Mont Blanc is 4806 metres tall.",
    "nile": "The Nile is 6650 km long.",
    "amazon": "The Amazon is 6400 km long.",
    "tokyo": "Tokyo has 37.1 million people.",
    "delhi": "Delhi has 33.8 million people.",
}


def lookup(entity: str) -> str:
    """Look up the key fact about one mountain, river or city.

    Args:
        entity: One name, e.g. "K2".
    """
    return FACTS.get(entity.strip().lower(), f"No fact found for {entity!r}.")


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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", default="llamacpp:default")
    parser.add_argument("--question", default="How much taller is Mount Everest than K2, in metres?")
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
    u = usage_of(outcome.trace)
    print(
        f"usage:    {u.prompt_tokens} prompt tokens ({u.cached_tokens} cached), {u.completion_tokens} completion tokens"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fuzzing in CI (thousands of cases): the LLMCompiler plan parsers, the YAML plan loader, ``infer``'s
output validation and the executor's reference substitution. Nothing may raise anything but our own
errors, and nothing may hang (pytest-timeout). Longer runs: ``bench/fuzz.py``."""

from __future__ import annotations

import contextlib
import json

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from agentflow import Err, Ok, infer, run
from agentflow.agents import JsonPlanParser, PlanParser
from agentflow.engines import FunctionEngine
from agentflow.errors import AgentflowError, PlanError
from agentflow.executors import ToolRegistry, substitute
from agentflow.plans import load_plan_text

TOOLS = {"search", "math", "math.factorial"}

plan_alphabet = st.sampled_from(list("0123456789.()[]{},:=\"$ \n\tabcjoinsearchmath_-\\'#TruNlF"))
plan_like = st.lists(
    st.one_of(
        st.text(plan_alphabet, max_size=40),
        st.sampled_from(["1. search(", '"x")', "$1", "${2}", "join()\n", "\n", "2. math(", "Thought: "]),
    ),
    max_size=12,
).map("".join)


def check_plan_parser(text: str, cut: int) -> None:
    for parser in (PlanParser(TOOLS), JsonPlanParser(TOOLS)):
        try:
            for i in range(0, len(text), cut):
                parser.feed(text[i : i + cut])
            parser.finish()
        except PlanError:
            pass


yaml_like = st.lists(
    st.one_of(
        st.text(max_size=30),
        st.sampled_from(
            [
                "apiVersion: agentflow/v1\n",
                "kind: Plan\n",
                "steps:\n",
                "  - id: a\n",
                "    llm: hi {{x}}\n",
                "    parallel:\n",
                "inputs: {x: {type: string}}\n",
                "&a [*a, *a]\n",
                "!!python/object:os.system\n",
                "- ",
                ": ",
                "{{",
                "\t",
            ]
        ),
    ),
    max_size=14,
).map("".join)


def check_yaml_loader(text: str | bytes) -> None:
    with contextlib.suppress(PlanError):
        load_plan_text(text, file="fuzz.yaml")


class Target(BaseModel):
    name: str = Field(max_length=20)
    count: int = Field(ge=0)
    tags: list[str] = []


def check_infer(raw: str) -> None:
    async def go() -> Ok[Target] | Err:
        return await run(infer(Target, "x", max_repairs=1), engine=FunctionEngine(lambda r: raw))

    out = anyio.run(go)
    if isinstance(out, Ok):
        assert isinstance(out.value, Target)
    else:
        assert type(out.error).__name__ == "InferenceError", out.error


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(st.sampled_from(list("$ab1{}.2 x")), max_size=12),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c, max_size=4),
    max_leaves=12,
)


def check_substitution(value: object, results: dict[int, object]) -> None:
    try:
        out = substitute(value, results)  # type: ignore[arg-type]
    except (LookupError, AgentflowError):
        return
    # Substituting again must change nothing that came from a result: results holding "$N" stay literal.
    if isinstance(value, str) and value.strip() in {f"${k}" for k in results}:
        assert out == results[int(value.strip()[1:])]


infer_outputs = st.one_of(
    st.text(max_size=80),
    st.builds(
        json.dumps,
        st.recursive(
            st.none() | st.integers() | st.text(max_size=10),
            lambda c: st.lists(c) | st.dictionaries(st.text(max_size=5), c),
            max_leaves=8,
        ),
    ),
    st.builds(lambda n, c: json.dumps({"name": n, "count": c}), st.text(max_size=30), st.integers(-5, 5)),
)
ref_results = st.dictionaries(
    st.integers(1, 3),
    st.one_of(
        st.text(max_size=12), st.integers(), st.dictionaries(st.sampled_from(["a", "b"]), st.integers())
    ),
)

TARGETS = {
    "plan_parser": (
        (st.one_of(st.text(max_size=200), plan_like), st.integers(1, 7)),
        check_plan_parser,
        1500,
    ),
    "yaml_loader": ((st.one_of(yaml_like, st.binary(max_size=120)),), check_yaml_loader, 800),
    "infer_validation": ((infer_outputs,), check_infer, 300),
    "substitution": ((json_values, ref_results), check_substitution, 800),
}
"""name -> (strategies, check, examples in CI); bench/fuzz.py runs the same checks for longer."""


def _fuzz_test(name: str) -> object:
    strategies, check, examples = TARGETS[name]
    wrapped = settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))(
        given(*strategies)(check)
    )
    return pytest.mark.timeout(300)(wrapped)


test_plan_parser_raises_only_plan_error = _fuzz_test("plan_parser")
test_yaml_plan_loader_raises_only_plan_error = _fuzz_test("yaml_loader")
test_infer_validation_gives_a_model_or_inference_error = _fuzz_test("infer_validation")
test_substitution_raises_only_lookup_or_our_errors_and_never_rescans = _fuzz_test("substitution")


def test_registry_validation_rejects_without_crashing() -> None:
    registry = ToolRegistry()

    def tool(a: int, b: str = "x") -> str:
        """A tool.

        Args:
            a: A number.
            b: A word.
        """
        return f"{a}{b}"

    registry.register(tool)
    t = registry.get("tool")
    for bad in ({}, {"a": "no"}, {"a": 1, "c": 2}, {"a": None}):
        with pytest.raises(AgentflowError):
            t.validate(bad)

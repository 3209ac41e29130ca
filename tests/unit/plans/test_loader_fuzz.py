"""Hypothesis fuzz of the loader: whatever the text, the only exception is our PlanError."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentflow.errors import PlanError
from agentflow.plans import load_plan_text

EXAMPLE = (Path(__file__).parents[3] / "examples" / "topic_digest.yaml").read_text(encoding="utf-8")

_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _load(text: str | bytes) -> None:
    try:
        load_plan_text(text, file="fuzz.yaml")
    except PlanError as exc:
        assert exc.file == "fuzz.yaml"
        assert exc.message


@_FUZZ
@given(st.text(max_size=400))
def test_loader_raises_only_plan_error_on_any_text(text: str) -> None:
    _load(text)


@_FUZZ
@given(st.binary(max_size=300))
def test_loader_raises_only_plan_error_on_any_bytes(data: bytes) -> None:
    _load(data)


_YAMLISH = st.sampled_from(
    [
        "apiVersion: agentflow/v1\n",
        "kind: Plan\n",
        "steps:\n",
        "  - id: a\n",
        "    prompt: '{{steps.a}}'\n",
        "    tool: split\n",
        "    parallel:\n",
        "      - {id: b, prompt: x}\n",
        "    map: '{{inputs.x}}'\n",
        "    do: [{id: c, prompt: y}]\n",
        "inputs: {x: {type: array}}\n",
        "x: &a [1, 2]\n",
        "y: *a\n",
        "z: !!binary aGk=\n",
        "tools: [agentflow.plans.builtin_tools:split]\n",
        "  - {id: d, branch: {value: '{{inputs.x}}'}, then: [{id: e, prompt: z}]}\n",
        "    retry: {attempts: 0}\n",
        "    timeout: -1\n",
        "    needs: [a]\n",
        "[\n",
        "{{\n",
        "\t\n",
    ]
)


@_FUZZ
@given(st.lists(_YAMLISH, max_size=14))
def test_loader_raises_only_plan_error_on_plan_like_text(lines: list[str]) -> None:
    _load("".join(lines))


@_FUZZ
@given(
    st.integers(min_value=0, max_value=len(EXAMPLE) - 1),
    st.integers(min_value=1, max_value=40),
    st.text(max_size=8),
)
def test_loader_raises_only_plan_error_on_mutated_example(at: int, cut: int, insert: str) -> None:
    _load(EXAMPLE[:at] + insert + EXAMPLE[at + cut :])

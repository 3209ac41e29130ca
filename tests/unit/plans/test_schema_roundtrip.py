"""The published JSON Schema, Python-built plans, and the YAML round trip."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentflow.plans as plans
from agentflow import Ok, run
from agentflow.engines import TestEngine
from agentflow.plans import (
    AgentSpec,
    BranchStep,
    Condition,
    EngineSpec,
    LLMStep,
    LoopSpec,
    LoopStep,
    MapStep,
    OutputSpec,
    ParallelStep,
    Plan,
    RetrySpec,
    SchemaSpec,
    SequenceStep,
    Step,
    ToolStep,
    check_plan,
    dump_plan,
    load_plan,
    load_plan_text,
    plan_json_schema,
)
from agentflow.plans._dump import plan_to_data
from agentflow.plans._loader import walk_steps

EXAMPLES = sorted((Path(__file__).parents[3] / "examples").glob("*.yaml"))


def test_exports_match_all() -> None:
    public = {n for n in dir(plans) if not n.startswith("_")} - {"annotations", "builtin_tools"}
    assert len(set(plans.__all__)) == len(plans.__all__)
    assert set(plans.__all__) == public


def test_schema_is_valid_draft_2020_12() -> None:
    schema = plan_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_schema_validates_every_example(path: Path) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    jsonschema.validate(data, plan_json_schema())


def test_schema_rejects_what_the_loader_rejects_structurally() -> None:
    validator = jsonschema.Draft202012Validator(plan_json_schema())
    bad = {"apiVersion": "agentflow/v1", "kind": "Plan", "steps": [{"id": "a", "promt": "x"}]}
    assert list(validator.iter_errors(bad))


def test_examples_list_is_not_empty() -> None:
    assert {p.name for p in EXAMPLES} >= {"topic_digest.yaml", "typed_triage.yaml", "calc_loop.yaml"}


def _python_plan() -> Plan:
    return Plan(
        name="built",
        description="multi-line\ndescription",
        engine=EngineSpec(spec="test:", max_tokens=32),
        tools=["agentflow.plans.builtin_tools:split", "agentflow.plans.builtin_tools:word_count"],
        agents={"writer": AgentSpec(system="be brief")},
        inputs={"text": SchemaSpec(type="string", default="a, b")},
        outputs={"n": OutputSpec(value="{{steps.n}}", type="integer")},
        steps=[
            ToolStep(id="parts", tool="split", args={"text": "{{inputs.text}}"}),
            MapStep(
                id="each",
                map="{{steps.parts}}",
                as_="part",
                max_concurrency=2,
                do=[LLMStep(id="say", agent="writer", prompt="say {{part}}", retry=RetrySpec(attempts=2))],
            ),
            ParallelStep(
                id="both",
                parallel=[
                    LLMStep(id="x", prompt="x {{steps.each}}", timeout=5.0),
                    SequenceStep(id="seq", steps=[LLMStep(id="y", prompt="y")]),
                ],
            ),
            BranchStep(
                id="br",
                branch=Condition(value="{{steps.x}}", contains="x"),
                then=[LLMStep(id="t", prompt="t")],
                else_=[LLMStep(id="e", prompt="e")],
            ),
            LoopStep(
                id="lp",
                loop=LoopSpec(until=Condition(value="{{loop.index}}", ge=1), max_iter=3),
                do=[LLMStep(id="body", prompt="{{loop.index}}")],
            ),
            ToolStep(id="n", tool="word_count", args={"text": "{{steps.x}}"}),
        ],
    )


def test_python_plan_dumps_to_yaml_and_loads_back_equal() -> None:
    plan = _python_plan()
    text = dump_plan(plan)
    assert text.startswith("apiVersion: agentflow/v1\nkind: Plan\nname: built\n")
    assert "as: part" in text and "else:" in text
    assert load_plan_text(text).plan == plan
    jsonschema.validate(yaml.safe_load(text), plan_json_schema())


@pytest.mark.anyio
async def test_python_plan_and_its_yaml_run_the_same() -> None:
    plan = _python_plan()
    from_python = await run(check_plan(plan).workflow, engine=TestEngine())
    from_yaml = await run(load_plan_text(dump_plan(plan)).workflow, engine=TestEngine())
    assert isinstance(from_python, Ok) and isinstance(from_yaml, Ok)
    assert from_python.value == from_yaml.value
    assert [(e.kind, e.path) for e in from_python.trace] == [(e.kind, e.path) for e in from_yaml.trace]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_round_trips(path: Path) -> None:
    loaded = load_plan(path)
    assert load_plan_text(dump_plan(loaded.plan)).plan == loaded.plan


_ids = st.integers(min_value=0, max_value=10**6).map(lambda i: f"s{i}")
_text = st.text(st.characters(blacklist_characters="{}\x00", blacklist_categories=("Cs",)), max_size=30)


def _steps() -> st.SearchStrategy[Step]:
    leaf = st.one_of(
        st.builds(lambda i, p: LLMStep(id=i, prompt=p), _ids, _text),
        st.builds(
            lambda i, t: ToolStep(id=i, tool="word_count", args={"text": t}),
            _ids,
            _text,
        ),
    )
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.builds(
                lambda i, c: ParallelStep(id=i, parallel=c), _ids, st.lists(inner, min_size=1, max_size=3)
            ),
            st.builds(
                lambda i, c: SequenceStep(id=i, steps=c), _ids, st.lists(inner, min_size=1, max_size=3)
            ),
            st.builds(
                lambda i, c, n: MapStep(id=i, map="{{inputs.xs}}", max_concurrency=n, do=c),
                _ids,
                st.lists(inner, min_size=1, max_size=2),
                st.none() | st.integers(1, 4),
            ),
        ),
        max_leaves=6,
    )


def _unique(steps: list[Step]) -> bool:
    ids = [s.id for s in walk_steps(steps)]
    return len(ids) == len(set(ids))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(st.lists(_steps(), min_size=1, max_size=3).filter(_unique))
def test_generated_plans_round_trip_through_yaml(steps: list[Step]) -> None:
    plan = Plan(
        name="gen",
        tools=["agentflow.plans.builtin_tools:word_count"],
        inputs={"xs": SchemaSpec(type="array", default=[1, 2])},
        steps=steps,
    )
    loaded = load_plan_text(dump_plan(plan))
    assert loaded.plan == plan
    assert plan_to_data(loaded.plan) == plan_to_data(plan)

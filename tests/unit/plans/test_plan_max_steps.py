"""Plans cannot fan out without bound: three nested maps over 20 items (8,000 tool calls) are stopped by the run's,
the plan's or the CLI's step budget (issue 18, item 6)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import plan_tools
import pytest

from agentflow import Err, run
from agentflow.errors import StepBudgetExceededError
from agentflow.plans import LoadedPlan, dump_plan, load_plan_text

NESTED = textwrap.dedent(
    """
    apiVersion: agentflow/v1
    kind: Plan
    name: nested-maps
    tools: [plan_tools:record]
    inputs:
      xs: {type: array, items: {type: integer}, default: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]}
    steps:
      - id: a
        map: "{{inputs.xs}}"
        as: x
        do:
          - id: b
            map: "{{inputs.xs}}"
            as: y
            do:
              - id: c
                map: "{{inputs.xs}}"
                as: z
                do:
                  - {id: t, tool: record, args: {label: "{{x}}-{{y}}-{{z}}"}}
    """
)


def _plan(extra: str = "") -> LoadedPlan:
    return load_plan_text(NESTED + extra, allow_tools=["plan_tools:*"])


@pytest.fixture(autouse=True)
def _clear() -> None:
    plan_tools.CALLS.clear()


@pytest.mark.anyio
async def test_three_nested_maps_over_20_items_stopped_by_run_max_steps() -> None:
    outcome = await run(_plan().workflow, max_steps=150)
    assert isinstance(outcome, Err) and isinstance(outcome.error, StepBudgetExceededError)
    assert len(plan_tools.CALLS) <= 150
    # The error names the step where the budget ran out.
    assert outcome.error.where is not None and "nested-maps" in outcome.error.where


@pytest.mark.anyio
async def test_three_nested_maps_over_20_items_stopped_by_plan_max_steps() -> None:
    outcome = await run(_plan("max_steps: 60\n").workflow)
    assert isinstance(outcome, Err) and "max_steps=60" in str(outcome.error)
    assert len(plan_tools.CALLS) <= 60


@pytest.mark.anyio
async def test_plan_max_steps_cannot_widen_the_run_limit() -> None:
    outcome = await run(_plan("max_steps: 100000\n").workflow, max_steps=40)
    assert isinstance(outcome, Err) and "max_steps=40" in str(outcome.error)
    assert len(plan_tools.CALLS) <= 40


def test_plan_max_steps_round_trips_and_must_be_positive() -> None:
    loaded = _plan("max_steps: 60\n")
    assert loaded.plan.max_steps == 60
    assert load_plan_text(dump_plan(loaded.plan), allow_tools=["plan_tools:*"]).plan == loaded.plan
    with pytest.raises(Exception, match="max_steps"):
        _plan("max_steps: 0\n")


def test_cli_default_max_steps_stops_nested_maps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agentflow import cli

    plan = tmp_path / "nested.yaml"
    builtin = NESTED.replace("plan_tools:record", "agentflow.plans.builtin_tools:word_count")
    plan.write_text(builtin.replace("tool: record, args: {label:", "tool: word_count, args: {text:"))
    code = cli.main(["run", str(plan), "--engine", "test:", "--no-save", "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "max_steps=1000" in err


def test_cli_max_steps_flag_lowers_the_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agentflow import cli

    plan = tmp_path / "nested.yaml"
    plan.write_text(NESTED)
    args = ["run", str(plan), "--engine", "test:", "--no-save", "--quiet", "--max-steps", "25"]
    code = cli.main([*args, "--allow-tool", "plan_tools:*"])
    assert code == 1 and "max_steps=25" in capsys.readouterr().err
    assert len(plan_tools.CALLS) <= 25

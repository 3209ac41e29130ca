"""Compiled plans run as ordinary flows: data flow, parallel DAGs, map limits, branch, loop, retry, timeout."""

from __future__ import annotations

import json
import textwrap

import anyio
import plan_tools
import pytest
from pydantic import BaseModel

from agentflow import Err, Ok, flow, run
from agentflow.dsl import Event, LLMCall, RetryScheduled, StepEnded, StepStarted, ToolCall, get_state, update
from agentflow.engines import FunctionEngine, GenerationRequest, TestEngine
from agentflow.errors import InferenceError, LoopLimitError, StepTimeout, ToolError
from agentflow.plans import LoadedPlan, load_plan_text

HEAD = "apiVersion: agentflow/v1\nkind: Plan\nname: t\n"
ALLOW = ["plan_tools:*"]


def _plan(body: str) -> LoadedPlan:
    return load_plan_text(HEAD + textwrap.dedent(body), allow_tools=ALLOW)


def _last_user(request: GenerationRequest) -> str:
    assert request.messages is not None
    return [m.content for m in request.messages if m.role == "user"][-1]


@pytest.mark.anyio
async def test_tool_results_flow_into_later_steps_typed() -> None:
    loaded = _plan(
        """
        tools: [agentflow.plans.builtin_tools:split, agentflow.plans.builtin_tools:word_count]
        inputs:
          text: {type: string, default: "a, b, c"}
        outputs:
          parts: {value: "{{steps.parts}}", type: array}
          count: {value: "{{steps.count}}", type: integer}
        steps:
          - {id: parts, tool: split, args: {text: "{{inputs.text}}"}}
          - {id: count, tool: word_count, args: {text: "{{steps.parts}} and {{steps.parts[0]}}"}}
        """
    )
    out = await run(loaded.workflow, {"text": "x, y"})
    assert isinstance(out, Ok)
    assert out.value == {"parts": ["x", "y"], "count": 4}
    tool_events = [e for e in out.trace if isinstance(e, ToolCall)]
    assert [e.tool for e in tool_events] == ["split", "word_count"]
    assert all(e.ok for e in tool_events)
    assert tool_events[0].args == {"text": "x, y"} and tool_events[0].result == '["x", "y"]'


@pytest.mark.anyio
async def test_llm_step_uses_agent_system_prompt_and_engine_defaults() -> None:
    seen: list[GenerationRequest] = []

    def answer(request: GenerationRequest) -> str:
        seen.append(request)
        return f"  said: {_last_user(request)}  "

    loaded = _plan(
        """
        engine: {max_tokens: 70, temperature: 0.5}
        agents:
          writer: {system: "be brief about {{inputs.topic}}", max_tokens: 50}
        inputs:
          topic: {type: string}
        steps:
          - {id: a, agent: writer, prompt: "topic {{inputs.topic}}"}
          - {id: b, prompt: "again {{steps.a}}"}
        """
    )
    out = await run(loaded.workflow, {"topic": "tea"}, engine=FunctionEngine(answer))
    assert isinstance(out, Ok)
    assert out.value == {"result": "said: again said: topic tea"}
    first, second = seen
    assert first.messages is not None and first.messages[0].content == "be brief about tea"
    assert (first.max_tokens, first.temperature) == (50, 0.5)
    assert second.messages is not None and [m.role for m in second.messages] == ["user"]
    assert second.max_tokens == 70


@pytest.mark.anyio
async def test_parallel_children_wait_only_for_the_siblings_they_reference() -> None:
    plan_tools.CALLS.clear()
    loaded = _plan(
        """
        tools: [plan_tools:record]
        steps:
          - id: block
            parallel:
              - {id: late, tool: record, args: {label: "late after {{steps.early}}"}}
              - {id: early, tool: record, args: {label: early}}
              - {id: other, tool: record, args: {label: other}, needs: [early]}
        """
    )
    out = await run(loaded.workflow)
    assert isinstance(out, Ok)
    assert out.value == {"result": {"late": "late after early", "early": "early", "other": "other"}}
    assert plan_tools.CALLS[0] == "early"
    assert sorted(plan_tools.CALLS[1:]) == ["late after early", "other"]


@pytest.mark.anyio
async def test_map_respects_max_concurrency_and_keeps_item_order() -> None:
    plan_tools.ACTIVE.update(now=0, peak=0)
    loaded = _plan(
        """
        tools: [plan_tools:tracked]
        inputs:
          xs: {type: array, items: {type: string}}
        steps:
          - id: each
            map: "{{inputs.xs}}"
            as: x
            max_concurrency: 2
            do:
              - {id: t, tool: tracked, args: {label: "{{x}}!"}}
        """
    )
    out = await run(loaded.workflow, {"xs": ["a", "b", "c", "d", "e"]})
    assert isinstance(out, Ok)
    assert out.value == {"result": ["a!", "b!", "c!", "d!", "e!"]}
    assert plan_tools.ACTIVE["peak"] == 2


@pytest.mark.anyio
async def test_map_over_a_non_list_fails_with_the_fix() -> None:
    loaded = _plan(
        """
        inputs:
          xs: {type: string}
        steps:
          - {id: each, map: "{{inputs.xs}}", do: [{id: t, prompt: "{{item}}"}]}
        """
    )
    out = await run(loaded.workflow, {"xs": "abc"}, engine=TestEngine())
    assert isinstance(out, Err)
    assert "needs a list" in str(out.error) and "t/each" in str(out.error)


@pytest.mark.anyio
@pytest.mark.parametrize(("n", "expected"), [(5, "big"), (1, "small")])
async def test_branch_picks_the_arm_by_condition(n: int, expected: str) -> None:
    loaded = _plan(
        """
        tools: [plan_tools:record]
        inputs:
          n: {type: integer}
        steps:
          - id: pick
            branch: {value: "{{inputs.n}}", gt: 3}
            then: [{id: big, tool: record, args: {label: big}}]
            else: [{id: small, tool: record, args: {label: small}}]
        """
    )
    out = await run(loaded.workflow, {"n": n})
    assert isinstance(out, Ok) and out.value == {"result": expected}


@pytest.mark.anyio
async def test_loop_repeats_until_condition_and_sees_its_index() -> None:
    loaded = _plan(
        """
        tools: [agentflow.plans.builtin_tools:calculator]
        steps:
          - id: grow
            loop:
              max_iter: 10
              until: {value: "{{steps.v}}", ge: 16}
            do:
              - {id: v, tool: calculator, args: {expression: "2 ** ({{loop.index}} + 1)"}}
        """
    )
    out = await run(loaded.workflow)
    assert isinstance(out, Ok) and out.value == {"result": 16.0}
    assert sum(1 for e in out.trace if e.kind == "tool.call") == 4


@pytest.mark.anyio
async def test_loop_past_max_iter_is_a_loop_limit_error() -> None:
    loaded = _plan(
        """
        tools: [plan_tools:record]
        steps:
          - id: forever
            loop: {max_iter: 3, until: {value: "{{steps.r}}", equals: never}}
            do: [{id: r, tool: record, args: {label: again}}]
        """
    )
    out = await run(loaded.workflow)
    assert isinstance(out, Err) and isinstance(out.error, LoopLimitError)


@pytest.mark.anyio
async def test_retry_reruns_a_failing_tool_step() -> None:
    plan_tools.FLAKY["left"] = 2
    loaded = _plan(
        """
        tools: [plan_tools:flaky]
        steps:
          - {id: f, tool: flaky, args: {text: ok}, retry: {attempts: 3}}
        """
    )
    out = await run(loaded.workflow)
    assert isinstance(out, Ok) and out.value == {"result": "ok"}
    assert sum(1 for e in out.trace if isinstance(e, RetryScheduled)) == 2
    failed = [e for e in out.trace if isinstance(e, ToolCall) and not e.ok]
    assert len(failed) == 2 and "transient failure" in str(failed[0].error)
    assert all(e.status == "error" and e.started <= e.time for e in failed)


@pytest.mark.anyio
async def test_tool_failure_without_retry_is_a_tool_error() -> None:
    plan_tools.FLAKY["left"] = 1
    loaded = _plan("tools: [plan_tools:flaky]\nsteps:\n  - {id: f, tool: flaky, args: {text: ok}}\n")
    out = await run(loaded.workflow)
    assert isinstance(out, Err) and isinstance(out.error, ToolError)


@pytest.mark.anyio
async def test_timeout_turns_a_slow_step_into_step_timeout() -> None:
    loaded = _plan(
        "tools: [plan_tools:sleepy]\nsteps:\n  - {id: s, tool: sleepy, args: {seconds: 30}, timeout: 0.05}\n"
    )
    out = await run(loaded.workflow)
    assert isinstance(out, Err) and isinstance(out.error, StepTimeout)
    assert any(e.kind == "timeout" for e in out.trace)


@pytest.mark.anyio
async def test_output_schema_gives_typed_json_after_a_repair() -> None:
    answers = iter(['{"n": "three"}', '{"n": 3}'])
    seen: list[GenerationRequest] = []

    def answer(request: GenerationRequest) -> str:
        seen.append(request)
        return next(answers)

    loaded = _plan(
        """
        steps:
          - id: count
            prompt: how many?
            output: {type: object, properties: {n: {type: integer}}, required: [n]}
        """
    )
    out = await run(loaded.workflow, engine=FunctionEngine(answer))
    assert isinstance(out, Ok) and out.value == {"result": {"n": 3}}
    assert seen[0].json_schema == {  # decoded with the object closed to undeclared keys
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    }
    assert "not of type 'integer'" in _last_user(seen[1])
    calls = [e for e in out.trace if isinstance(e, LLMCall)]
    assert [(e.attempt, e.valid) for e in calls] == [(1, False), (2, True)]
    assert calls[0].error is not None and "not of type 'integer'" in calls[0].error


@pytest.mark.anyio
async def test_output_schema_gives_up_after_bounded_repairs() -> None:
    loaded = _plan(
        "steps:\n  - {id: c, prompt: x, output: {type: object, properties: {n: {type: integer}}, required: [n]}}\n"
    )
    engine = FunctionEngine(lambda request: "not json")
    out = await run(loaded.workflow, engine=engine)
    assert isinstance(out, Err) and isinstance(out.error, InferenceError)
    assert out.error.raw == "not json" and len(engine.requests) == 3


@pytest.mark.anyio
async def test_declared_output_that_breaks_its_schema_fails_the_run() -> None:
    loaded = _plan(
        """
        tools: [plan_tools:record]
        outputs:
          n: {value: "{{steps.r}}", type: integer}
        steps:
          - {id: r, tool: record, args: {label: x}}
        """
    )
    out = await run(loaded.workflow)
    assert isinstance(out, Err)
    assert "output 'n'" in str(out.error) and "does not match its schema" in str(out.error)


def test_bind_inputs_fills_defaults_and_rejects_unknown_missing_and_mistyped() -> None:
    loaded = _plan(
        """
        inputs:
          a: {type: integer}
          b: {type: string, default: hi}
        steps:
          - {id: s, prompt: "{{inputs.a}} {{inputs.b}}"}
        """
    )
    assert loaded.bind_inputs({"a": 1}) == {"a": 1, "b": "hi"}
    with pytest.raises(Exception, match="needs input 'a'"):
        loaded.bind_inputs({})
    with pytest.raises(Exception, match="has no input"):
        loaded.bind_inputs({"a": 1, "zz": 2})
    with pytest.raises(Exception, match="does not match its schema"):
        loaded.bind_inputs({"a": "one"})


@pytest.mark.anyio
async def test_a_run_listener_hears_every_plan_step_start_and_end() -> None:
    events: list[tuple[str, str]] = []

    def listen(event: Event) -> None:
        if isinstance(event, StepStarted | StepEnded):
            events.append((event.kind, event.path))

    loaded = _plan(
        "tools: [plan_tools:record]\nsteps:\n  - {id: a, tool: record, args: {label: x}}\n  - {id: b, prompt: y}\n"
    )
    out = await run(loaded.workflow, engine=TestEngine(), on_event=listen)
    assert isinstance(out, Ok)
    assert events == [
        ("step.start", "t"),
        ("step.start", "t/a"),
        ("step.end", "t/a"),
        ("step.start", "t/b"),
        ("step.end", "t/b"),
        ("step.end", "t"),
    ]


class Outer(BaseModel):
    note: str = "kept"


@pytest.mark.anyio
async def test_plan_runs_as_a_sub_workflow_without_touching_the_callers_state() -> None:
    loaded = _plan("steps:\n  - {id: a, prompt: inner}\n")

    @flow
    async def outer() -> tuple[dict[str, object], str]:
        await update(note="before")
        result = await loaded.workflow()
        state = await get_state(Outer)
        return result, state.note

    out = await run(outer, state=Outer(), engine=TestEngine(response="answer"))
    assert isinstance(out, Ok)
    assert out.value == ({"result": "answer"}, "before")
    assert any(e.path == "t/a" and e.kind == "llm.call" for e in out.trace)


@pytest.mark.anyio
async def test_template_error_at_run_time_names_the_step() -> None:
    loaded = _plan(
        """
        tools: [plan_tools:record]
        steps:
          - {id: r, tool: record, args: {label: x}}
          - {id: s, prompt: "{{steps.r.missing}}"}
        """
    )
    out = await run(loaded.workflow, engine=TestEngine())
    assert isinstance(out, Err)
    assert "t/s" in str(out.error) and "has no 'missing'" in str(out.error)


@pytest.mark.anyio
async def test_json_is_written_into_text_templates() -> None:
    seen: list[str] = []
    loaded = _plan(
        """
        tools: [agentflow.plans.builtin_tools:split]
        steps:
          - {id: p, tool: split, args: {text: "a,b"}}
          - {id: s, prompt: "items: {{steps.p}}"}
        """
    )
    await run(loaded.workflow, engine=FunctionEngine(lambda r: seen.append(_last_user(r)) or "ok"))
    assert seen == [f"items: {json.dumps(['a', 'b'], separators=(', ', ': '))}"]


@pytest.mark.anyio
async def test_a_parallel_child_starts_when_its_own_needs_are_done_not_a_whole_level() -> None:
    # Two chains: slow_a -> after_a, and fast_b -> after_b. slow_a blocks until after_b has run. Run level by
    # level ({slow_a, fast_b} then {after_a, after_b}), after_b would wait for slow_a and nothing could ever
    # finish; run as a dataflow, the fast chain completes while the slow one waits (no clock involved).
    plan_tools.CALLS.clear()
    plan_tools.GATE["open"] = anyio.Event()
    loaded = _plan(
        """tools: [plan_tools:record, plan_tools:wait_gate, plan_tools:open_gate]
steps:
  - id: both
    parallel:
      - {id: slow_a, tool: wait_gate, args: {label: slow_a}}
      - {id: after_a, tool: record, args: {label: "after {{steps.slow_a}}"}}
      - {id: fast_b, tool: record, args: {label: fast_b}}
      - {id: after_b, tool: open_gate, args: {label: "after {{steps.fast_b}}"}}
"""
    )
    with anyio.fail_after(60):  # a deadlock fails here; nothing is timed
        out = await run(loaded.workflow)
    assert isinstance(out, Ok), out
    assert plan_tools.CALLS == ["fast_b", "after fast_b", "slow_a", "after slow_a"]
    starts = [e.path for e in out.trace if isinstance(e, StepStarted)]
    assert "t/both/[3]/after_b" in starts and "t/both/[1]/after_a" in starts  # branch = declared position

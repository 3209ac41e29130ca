"""Every kind of bad plan is one PlanError naming file:line:column and the fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agentflow.errors import PlanError
from agentflow.plans import load_plan, load_plan_text
from agentflow.plans._yaml import MAX_BYTES, MAX_NODES

HEAD = "apiVersion: agentflow/v1\nkind: Plan\n"


def _error(text: str, **kwargs: object) -> PlanError:
    with pytest.raises(PlanError) as info:
        load_plan_text(textwrap.dedent(text), file="plan.yaml", **kwargs)  # type: ignore[arg-type]
    return info.value


def test_load_rejects_malformed_yaml_with_position() -> None:
    err = _error(HEAD + "steps:\n  - id: a\n    prompt: [unclosed\n")
    assert err.file == "plan.yaml"
    assert err.line is not None and err.line >= 5
    assert "invalid YAML" in err.message and "fix the syntax" in err.message


def test_load_rejects_unknown_key_with_suggestion() -> None:
    err = _error(HEAD + "steps:\n  - id: a\n    prompt: hi\n    max_tokns: 3\n")
    assert (err.line, err.column) == (6, 5)
    assert "unknown key 'max_tokns'" in err.message
    assert "did you mean 'max_tokens'?" in err.message
    assert "step 'a'" in err.message


def test_load_rejects_unknown_top_level_key() -> None:
    err = _error(HEAD + "stepz: []\nsteps:\n  - {id: a, prompt: hi}\n")
    assert (err.line, err.column) == (3, 1)
    assert "did you mean 'steps'?" in err.message


def test_load_rejects_wrong_type_at_the_value() -> None:
    err = _error(HEAD + "steps:\n  - id: a\n    prompt: hi\n    max_tokens: lots\n")
    assert (err.line, err.column) == (6, 17)
    assert "max_tokens" in err.message and "integer" in err.message and "'lots'" in err.message


def test_load_rejects_step_without_kind() -> None:
    err = _error(HEAD + "steps:\n  - id: a\n    promt: hi\n")
    assert err.line == 4
    assert "needs exactly one of the keys prompt, tool, parallel" in err.message
    assert "promt" in err.message


def test_load_rejects_missing_key() -> None:
    err = _error(HEAD + "steps:\n  - prompt: hi\n")
    assert err.line == 4
    assert "missing the required key 'id'" in err.message


def test_load_rejects_missing_api_version() -> None:
    err = _error("kind: Plan\nsteps:\n  - {id: a, prompt: hi}\n")
    assert "apiVersion: agentflow/v1" in err.message


def test_load_rejects_other_api_version() -> None:
    err = _error("apiVersion: agentflow/v2\nkind: Plan\nsteps:\n  - {id: a, prompt: hi}\n")
    assert err.line == 1
    assert "'agentflow/v2'" in err.message and "'agentflow/v1'" in err.message


def test_load_rejects_undefined_input_reference() -> None:
    err = _error(
        HEAD + "inputs:\n  topic: {type: string}\nsteps:\n  - id: a\n    prompt: 'about {{inputs.topik}}'\n"
    )
    assert (err.line, err.column) == (7, 13)
    assert "unknown input 'topik'" in err.message and "did you mean 'topic'?" in err.message


def test_load_rejects_undefined_step_reference() -> None:
    err = _error(HEAD + "steps:\n  - id: first\n    prompt: hi\n  - id: b\n    prompt: 'x {{steps.frist}}'\n")
    assert err.line == 7
    assert "unknown step 'frist'" in err.message and "did you mean 'first'?" in err.message


def test_load_rejects_forward_reference() -> None:
    err = _error(HEAD + "steps:\n  - id: a\n    prompt: '{{steps.b}}'\n  - id: b\n    prompt: hi\n")
    assert err.line == 5
    assert "has not run at this point" in err.message and "move it before this step" in err.message


def test_load_rejects_self_reference() -> None:
    err = _error(HEAD + "steps:\n  - id: a\n    prompt: '{{steps.a}}'\n")
    assert "this step or encloses it" in err.message


def test_load_rejects_unknown_template_root() -> None:
    err = _error(HEAD + "steps:\n  - id: a\n    prompt: '{{topic}}'\n")
    assert "unknown name 'topic'" in err.message and "inputs, steps" in err.message


def test_load_rejects_bad_template_syntax() -> None:
    err = _error(HEAD + "steps:\n  - id: a\n    prompt: 'x {{ inputs.a + 1 }}'\n")
    assert err.line == 5
    assert "is not a reference" in err.message


def test_load_rejects_unclosed_template() -> None:
    err = _error(HEAD + "steps:\n  - id: a\n    prompt: 'x {{inputs.a'\n")
    assert "not closed" in err.message


def test_load_rejects_cycle_in_parallel_block() -> None:
    err = _error(
        HEAD
        + """steps:
  - id: both
    parallel:
      - id: a
        prompt: '{{steps.b}}'
      - id: b
        prompt: '{{steps.a}}'
"""
    )
    assert err.line == 6
    assert "a -> b -> a" in err.message and "cycle" in err.message


def test_load_rejects_cycle_in_parallel_block_naming_only_its_steps_from_the_first_in_the_file() -> None:
    err = _error(
        HEAD
        + """steps:
  - id: both
    parallel:
      - {id: lead, prompt: hi}
      - {id: c, prompt: '{{steps.b}}'}
      - {id: a, prompt: '{{steps.c}}', needs: [lead]}
      - {id: b, prompt: x, needs: [a]}
"""
    )
    assert err.line == 7  # step c, the cycle's first step in the file
    assert "steps c -> a -> b -> c in parallel block 'both' wait for each other" in err.message
    assert "lead" not in err.message


def test_load_rejects_needs_of_non_sibling() -> None:
    err = _error(HEAD + "steps:\n  - id: p\n    parallel:\n      - {id: a, prompt: hi, needs: [zz]}\n")
    assert "needs 'zz', which is not a sibling" in err.message


def test_load_rejects_needs_outside_parallel() -> None:
    err = _error(HEAD + "steps:\n  - {id: a, prompt: hi}\n  - {id: b, prompt: hi, needs: [a]}\n")
    assert "only orders siblings inside a parallel block" in err.message


def test_load_rejects_duplicate_step_ids() -> None:
    err = _error(HEAD + "steps:\n  - id: a\n    prompt: hi\n  - id: a\n    prompt: again\n")
    assert err.line == 6
    assert "duplicate step id 'a' (first at line 4" in err.message


def test_load_rejects_duplicate_mapping_keys() -> None:
    err = _error(HEAD + "steps:\n  - id: a\n    prompt: hi\n    prompt: again\n")
    assert err.line == 6
    assert "duplicate key 'prompt'" in err.message


def test_load_rejects_alias_bomb_quickly() -> None:
    lines = [HEAD.rstrip(), 'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    lines.append("steps:\n  - {id: a, prompt: hi}")
    err = _error("\n".join(lines) + "\n")
    assert f"more than {MAX_NODES} values" in err.message and "alias bomb" in err.message


def test_load_rejects_recursive_alias() -> None:
    err = _error(HEAD + "x: &loop [*loop]\nsteps:\n  - {id: a, prompt: hi}\n")
    assert "cycle" in err.message


def test_load_rejects_oversized_file(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(HEAD + "description: '" + "x" * (MAX_BYTES + 10) + "'\n", encoding="utf-8")
    with pytest.raises(PlanError) as info:
        load_plan(big)
    assert "more than the" in info.value.message and info.value.file == str(big)


def test_load_rejects_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError) as info:
        load_plan(tmp_path / "nope.yaml")
    assert "no such plan file" in info.value.message


def test_load_rejects_empty_and_non_mapping_documents() -> None:
    assert "the plan is empty" in _error("").message
    assert "not a list" in _error("- 1\n- 2\n").message


def test_load_rejects_custom_tags() -> None:
    err = _error(HEAD + "x: !!python/object:os.system ls\nsteps:\n  - {id: a, prompt: hi}\n")
    assert err.line == 3
    assert "unsupported YAML tag" in err.message


def test_load_rejects_non_string_keys() -> None:
    err = _error(HEAD + "1: x\nsteps:\n  - {id: a, prompt: hi}\n")
    assert "mapping keys must be plain strings" in err.message


def test_load_rejects_tool_outside_allowlist() -> None:
    err = _error(HEAD + "tools: ['os:system']\nsteps:\n  - {id: a, prompt: hi}\n")
    assert err.line == 3
    assert "not on the tool allowlist" in err.message and "--allow-tool 'os:system'" in err.message


def test_load_accepts_allowlisted_tool() -> None:
    loaded = load_plan_text(
        HEAD + "tools: ['plan_tools:shout']\nsteps:\n  - {id: a, tool: shout, args: {text: hi}}\n",
        allow_tools=["plan_tools:*"],
    )
    assert loaded.tools.names() == ["shout"]


def test_load_rejects_unknown_tool_with_suggestion() -> None:
    err = _error(
        HEAD
        + "tools: [agentflow.plans.builtin_tools:word_count]\nsteps:\n  - {id: a, tool: wordcount, args: {}}\n"
    )
    assert err.line == 5
    assert "unknown tool 'wordcount'" in err.message and "did you mean 'word_count'?" in err.message


def test_load_rejects_ill_typed_literal_tool_argument() -> None:
    err = _error(
        HEAD
        + "tools: [agentflow.plans.builtin_tools:keywords]\n"
        + "steps:\n  - id: a\n    tool: keywords\n    args: {text: hi, n: many}\n"
    )
    assert err.line == 7
    assert "argument 'n'" in err.message


def test_load_rejects_unknown_agent() -> None:
    err = _error(
        HEAD + "agents:\n  writer: {system: be brief}\nsteps:\n  - {id: a, prompt: hi, agent: writr}\n"
    )
    assert "unknown agent 'writr'" in err.message and "did you mean 'writer'?" in err.message


def test_load_rejects_input_default_not_matching_schema() -> None:
    err = _error(HEAD + "inputs:\n  n: {type: integer, default: many}\nsteps:\n  - {id: a, prompt: hi}\n")
    assert "default of input 'n'" in err.message


def test_load_rejects_unknown_json_schema_keyword() -> None:
    err = _error(HEAD + "inputs:\n  n: {tpye: integer}\nsteps:\n  - {id: a, prompt: hi}\n")
    assert "unknown key 'tpye'" in err.message and "did you mean 'type'?" in err.message


def test_load_rejects_map_results_used_outside_the_map() -> None:
    err = _error(
        HEAD
        + """inputs:
  xs: {type: array}
steps:
  - id: m
    map: '{{inputs.xs}}'
    do:
      - {id: inner, prompt: '{{item}}'}
  - {id: after, prompt: '{{steps.inner}}'}
"""
    )
    assert err.line == 10
    assert "has not run at this point" in err.message


@pytest.mark.parametrize(
    "text",
    [
        "[" * 200_000,
        "- " * 200_000,
        "{a: " * 200_000,
        "a:\n" + "".join("  " * i + "- x:\n" for i in range(200)),
    ],
)
def test_load_rejects_deep_nesting_without_crashing(text: str) -> None:
    err = _error(text)
    assert "nests deeper than" in err.message


def test_load_rejects_a_huge_unclosed_template_in_linear_time() -> None:
    prompt = "{{inputs.x}} " * 50_000 + "{{inputs.x"
    err = _error(HEAD + "inputs: {x: {type: string}}\nsteps:\n  - id: a\n    prompt: '" + prompt + "'\n")
    assert "not closed" in err.message and err.line == 6

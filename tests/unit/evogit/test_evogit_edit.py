"""Mutation edit format: region discovery and validation of LLM replies."""

from __future__ import annotations

import ast

from agentflow.agents.evogit import (
    Applied,
    Rejected,
    apply_reply,
    extract_code_block,
    find_regions,
    mutation_prompt,
)

MODULE = '''"""m."""

import math


def area(r):
    return math.pi * r * r


class Shape:
    def scale(self, k):
        return k * 2
'''


def test_find_regions_lists_functions_and_methods_with_indent() -> None:
    regions = {r.name: r for r in find_regions("m.py", MODULE)}
    assert set(regions) == {"area", "scale"}
    assert regions["area"].indent == ""
    assert regions["scale"].indent == "    "
    assert regions["area"].text(MODULE).startswith("def area(r):")


def test_find_regions_prefers_evolve_block_markers() -> None:
    src = "x = 1\n# EVOLVE-BLOCK-START\ny = 2\nz = 3\n# EVOLVE-BLOCK-END\n"
    [region] = find_regions("cfg.py", src)
    assert (region.kind, region.start, region.end) == ("block", 2, 4)


def test_find_regions_whole_file_when_not_python() -> None:
    [region] = find_regions("notes/params.txt", "alpha=1\n")
    assert region.kind == "file" and region.name == "params.txt"


def test_find_regions_empty_when_python_does_not_parse() -> None:
    assert find_regions("bad.py", "def (:\n") == []


def test_apply_reply_replaces_function_when_reply_is_valid() -> None:
    region = next(r for r in find_regions("m.py", MODULE) if r.name == "area")
    result = apply_reply(MODULE, region, "Sure!\n```python\ndef area(r):\n    return 3.0 * r * r\n```\n")
    assert isinstance(result, Applied)
    assert "return 3.0 * r * r" in result.new_source
    assert "class Shape" in result.new_source
    ast.parse(result.new_source)


def test_apply_reply_reindents_method_when_model_dedents() -> None:
    region = next(r for r in find_regions("m.py", MODULE) if r.name == "scale")
    result = apply_reply(MODULE, region, "```python\ndef scale(self, k):\n    return k * 3\n```")
    assert isinstance(result, Applied)
    assert "    def scale(self, k):\n        return k * 3\n" in result.new_source


def test_apply_reply_rejects_when_no_code_block() -> None:
    region = find_regions("m.py", MODULE)[0]
    result = apply_reply(MODULE, region, "I think you should use a better formula.")
    assert isinstance(result, Rejected) and "code block" in result.reason


def test_apply_reply_rejects_when_code_does_not_parse() -> None:
    region = find_regions("m.py", MODULE)[0]
    result = apply_reply(MODULE, region, "```python\ndef area(r):\n    return (r\n```")
    assert isinstance(result, Rejected) and "parse" in result.reason


def test_apply_reply_rejects_when_function_renamed() -> None:
    region = find_regions("m.py", MODULE)[0]
    result = apply_reply(MODULE, region, "```python\ndef volume(r):\n    return r\n```")
    assert isinstance(result, Rejected) and "`area`" in result.reason


def test_apply_reply_rejects_when_unchanged() -> None:
    region = find_regions("m.py", MODULE)[0]
    result = apply_reply(MODULE, region, f"```python\n{region.text(MODULE)}```")
    assert isinstance(result, Rejected) and "unchanged" in result.reason


def test_extract_code_block_accepts_unterminated_block() -> None:
    assert extract_code_block("```python\nx = 1\ny = 2") == "x = 1\ny = 2"


def test_mutation_prompt_names_function_goal_and_score() -> None:
    region = find_regions("m.py", MODULE)[0]
    prompt = mutation_prompt(MODULE, region, goal="smaller error", fitness=-1.5)
    assert "`area`" in prompt and "smaller error" in prompt and "-1.5" in prompt

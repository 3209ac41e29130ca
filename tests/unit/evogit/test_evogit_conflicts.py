"""Conflict-marker parsing, rendering and the fitness-based hunk fallback."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentflow.agents.evogit import Hunk, choose_by_fitness, conflict_prompt, parse_conflicts, render

DIFF3 = "a\n<<<<<<< ours\nx = 1\n||||||| base\nx = 0\n=======\nx = 2\n>>>>>>> theirs\nb\n"


def test_parse_conflicts_reads_diff3_base() -> None:
    segments = parse_conflicts(DIFF3)
    assert segments == ["a\n", Hunk("x = 1\n", "x = 2\n", "x = 0\n"), "b\n"]


def test_parse_conflicts_raises_when_unbalanced() -> None:
    with pytest.raises(ValueError, match="unbalanced"):
        parse_conflicts("<<<<<<< ours\nx\n=======\n")


def test_choose_by_fitness_takes_fitter_side() -> None:
    segments = parse_conflicts(DIFF3)
    assert render(segments, choose_by_fitness(segments, 1.0, 2.0)) == "a\nx = 2\nb\n"
    assert render(segments, choose_by_fitness(segments, 3.0, 2.0)) == "a\nx = 1\nb\n"
    assert render(segments, choose_by_fitness(segments, None, None)) == "a\nx = 1\nb\n"


def test_render_raises_when_resolution_count_differs() -> None:
    with pytest.raises(ValueError, match="1 conflicted hunks need 1"):
        render(parse_conflicts(DIFF3), [])


def test_conflict_prompt_shows_both_versions_and_base() -> None:
    prompt = conflict_prompt("m.py", parse_conflicts(DIFF3), 0)
    assert "x = 1" in prompt and "x = 2" in prompt and "x = 0" in prompt


_line = st.text(alphabet="abcxyz 01:", min_size=0, max_size=8).map(lambda s: s + "\n")
_lines = st.lists(_line, max_size=4).map("".join)
_segment = st.one_of(_lines.filter(bool), st.tuples(_lines, _lines, st.one_of(st.none(), _lines)))


@given(st.lists(_segment, max_size=6))
def test_parse_conflicts_round_trips_marked_files(parts: list[object]) -> None:
    text = []
    expected_ours = []
    for part in parts:
        if isinstance(part, tuple):
            ours, theirs, base = part
            text.append("<<<<<<< ours\n" + ours)
            if base is not None:
                text.append("||||||| base\n" + base)
            text.append("=======\n" + theirs + ">>>>>>> theirs\n")
            expected_ours.append(ours)
        else:
            text.append(part)
            expected_ours.append(part)
    segments = parse_conflicts("".join(text))
    assert render(segments, choose_by_fitness(segments, 1.0, 0.0)) == "".join(expected_ours)

"""The built-in calculator: exact integer arithmetic, bounded so no input can hold the CPU (issue 18, item 6)."""

from __future__ import annotations

import operator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentflow.plans.builtin_tools import calculator

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


@pytest.mark.parametrize(
    "expression",
    [
        "((9**999)**999)**999",
        "(9**999)**999",
        "99999999999999999999**500",
        "(7**900)*(7**900)*(7**900)*(7**900)",
    ],
)
def test_calculator_refuses_big_integer_tower_before_computing(expression: str) -> None:
    with pytest.raises(ValueError, match="bits"):
        calculator(expression)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [("10**20 % 7", 2.0), ("2**1000 // 2**990", 1024.0), ("(10**300)*(10**300)/10**300", 1e300)],
)
def test_calculator_keeps_large_intermediates_exact(expression: str, expected: float) -> None:
    assert calculator(expression) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("9**999", "too large for a float"),
        ("1e300**2", "too large for a float"),
        ("(-8)**0.5", "real number"),
    ],
)
def test_calculator_rejects_results_no_float_can_hold(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        calculator(expression)
    assert repr(expression) in str(caught.value)


@given(
    st.integers(-(10**12), 10**12),
    st.integers(-(10**12), 10**12),
    st.sampled_from(["+", "-", "*"]),
)
def test_calculator_agrees_with_python_on_integers(a: int, b: int, op: str) -> None:
    assert calculator(f"({a}) {op} ({b})") == float(_OPS[op](a, b))

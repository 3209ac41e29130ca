"""Errors as JSON records (what the journal stores for a failed tool call): the round-trip law for every
class of ``agentflow.errors``, and records from an untrusted journal that must not rebuild."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from agentflow.engines import Completion, ToolCallRequest, Usage
from agentflow.errors import (
    AgentflowError,
    BudgetExceededError,
    ConfigError,
    EngineRequestError,
    InferenceError,
    LoopLimitError,
    MergeConflict,
    PlanError,
    RaceLostError,
    SerializationError,
    StepBudgetExceededError,
    StepError,
    StepTimeout,
    ToolCallError,
    ToolError,
)

ANY = TypeAdapter(AgentflowError)

text = st.text(max_size=40)
count = st.integers(min_value=0, max_value=10**6)

ERRORS: list[st.SearchStrategy[AgentflowError]] = [
    st.builds(lambda m: AgentflowError(m), text),
    st.builds(lambda m, w: ConfigError(m, where=w), text, st.none() | text),
    st.builds(lambda m: EngineRequestError(m), text),
    st.builds(lambda m, f, ln: PlanError(m, file=f, line=ln), text, st.none() | text, st.none() | count),
    st.builds(SerializationError, text, text),
    st.builds(lambda m, r, n: InferenceError(m, raw=r, attempts=n), text, text, count),
    st.builds(ToolError, text, text),
    st.builds(StepTimeout, text, st.floats(min_value=0, max_value=1e6)),
    st.builds(LoopLimitError, text, count),
    st.builds(MergeConflict, text, text, st.lists(count, max_size=4)),
    st.builds(BudgetExceededError, count, count),
    st.builds(StepBudgetExceededError, count, text),
    st.builds(lambda p, m: StepError(p, ValueError(m)), text, text),
    st.builds(lambda p, a, b: RaceLostError(p, [ToolError(a, b), StepTimeout(a, 1.5)]), text, text, text),
    st.builds(
        lambda t, m, p: ToolCallError(
            t,
            m,
            problems={"c1": p},
            completion=Completion("", Usage(1, 2), "tool_calls", "m", (ToolCallRequest("c1", t),)),
        ),
        text,
        text,
        text,
    ),
]


def same(a: object, b: object) -> bool:
    """Errors compare by class and text (exceptions compare by identity); the rest by value."""
    if isinstance(a, BaseException):
        return type(a) is type(b) and str(a) == str(b)
    if isinstance(a, tuple):
        return (
            isinstance(b, tuple) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    return a == b


@given(st.one_of(ERRORS))
def test_error_round_trips_as_its_class_with_its_message_and_attributes(error: AgentflowError) -> None:
    back = ANY.validate_json(ANY.dump_json(error))
    assert type(back) is type(error)
    assert str(back) == str(error) and back.message == error.message and back.where == error.where
    for name in type(error)._attribute_types():
        assert same(getattr(back, name), getattr(error, name)), name


def test_error_of_a_class_outside_agentflow_errors_is_stored_as_its_nearest_ancestor() -> None:
    class QuotaError(ToolError):
        pass

    back = ANY.validate_json(ANY.dump_json(QuotaError("search", "over quota")))
    assert type(back) is ToolError and back.tool == "search" and str(back) == "tool 'search': over quota"


def test_nested_exception_of_another_library_comes_back_as_a_runtime_error_naming_it() -> None:
    class Unreachable(Exception):
        pass

    back = ANY.validate_json(ANY.dump_json(StepError("fetch", Unreachable("host down"))))
    assert isinstance(back, StepError) and type(back.cause) is RuntimeError
    assert str(back.cause) == "Unreachable: host down"
    keyed = ANY.validate_json(ANY.dump_json(StepError("f", KeyError("k"))))
    assert isinstance(keyed, StepError) and type(keyed.cause) is KeyError


def test_error_field_keeps_the_declared_bound() -> None:
    """A field typed ``ToolError | StepTimeout`` reads back only those classes and their subclasses."""
    field = TypeAdapter(ToolError | StepTimeout | None)
    assert isinstance(
        field.validate_json(
            field.dump_json(ToolCallError("t", "m", problems={}, completion=Completion("", Usage())))
        ),
        ToolCallError,
    )
    with pytest.raises(ValidationError, match="ConfigError, which is not a ToolError"):
        TypeAdapter(ToolError).validate_json(ANY.dump_json(ConfigError("nope")))


def record(**fields: object) -> bytes:
    return json.dumps(
        {"type": "ToolError", "message": "m", "where": None, "attrs": {"tool": "t"}, "errors": {}} | fields
    ).encode()


BAD_RECORDS: list[tuple[bytes, str]] = [
    (record(type="os.system"), "'os.system', which is not a class of agentflow.errors"),
    (record(type="Interrupted"), "not a class of agentflow.errors"),
    (record(type=None), "field 'type' must be a string"),
    (record(message=3), "field 'message' must be a string"),
    (record(attrs={}), "lacks its attribute 'tool'"),
    (record(attrs={"tool": ["x"]}), "bad 'tool'"),
    (record(attrs=[1]), "'attrs' and 'errors' must be objects"),
    (b'"ToolError"', "must be an object"),
]


@pytest.mark.parametrize(("raw", "why"), BAD_RECORDS)
def test_bad_record_is_refused_naming_what_is_wrong(raw: bytes, why: str) -> None:
    with pytest.raises(ValidationError, match=why.replace("(", r"\(").replace(")", r"\)")):
        ANY.validate_json(raw)


def test_record_nesting_is_bounded() -> None:
    nested: dict[str, object] = {"type": "ConfigError", "message": "m", "attrs": {}, "errors": {}}
    for _ in range(20):
        nested = {"type": "StepError", "message": "m", "where": "p", "attrs": {}, "errors": {"cause": nested}}
    with pytest.raises(ValidationError, match="nests deeper than 8 levels"):
        ANY.validate_json(json.dumps(nested))


def test_record_sets_only_the_attributes_its_class_declares() -> None:
    raw = record(attrs={"tool": "t", "__class__": "x", "__dict__": {"tool": "evil"}, "message": "other"})
    back = ANY.validate_json(raw)
    assert type(back) is ToolError and back.tool == "t" and back.message == "m"


def test_records_are_json_and_name_the_class() -> None:
    stored = json.loads(ANY.dump_json(StepTimeout("task search", 2.0)))
    assert stored == {
        "type": "StepTimeout",
        "message": "did not finish within 2 s (raise the timeout or make the step faster)",
        "where": "task search",
        "attrs": {"seconds": 2.0},
        "errors": {},
    }

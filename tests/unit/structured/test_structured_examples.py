"""``example_from_schema`` (what ``TestEngine`` answers) satisfies random schemas with the listed constraints."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentflow.engines import example_from_schema
from agentflow.structured import AnswerCheck

PATTERNS = [r"^\d{4}$", r"^[a-z]+$", r"^[A-Z][a-z]{2,5}$", r"ab+c", r"^(red|green)-\d$", r"^\w+@\w+\.com$"]
FORMATS = ["date", "date-time", "time", "uuid", "email", "ipv4", "ipv6", "hostname", "uri"]

Schema = dict[str, object]


def _string() -> st.SearchStrategy[Schema]:
    def build(lo: int | None, span: int | None, pattern: str | None, fmt: str | None) -> Schema:
        out: Schema = {"type": "string"}
        if fmt is not None:
            out["format"] = fmt
            return out
        if pattern is not None:
            out["pattern"] = pattern
            return out
        if lo is not None:
            out["minLength"] = lo
        if span is not None:
            out["maxLength"] = (lo or 0) + span
        return out

    return st.builds(
        build,
        st.none() | st.integers(0, 20),
        st.none() | st.integers(0, 20),
        st.none() | st.sampled_from(PATTERNS),
        st.none() | st.sampled_from(FORMATS),
    )


def _number() -> st.SearchStrategy[Schema]:
    def build(kind: str, lo: int | None, span: int | None, xlo: bool, xhi: bool, step: int | None) -> Schema:
        out: Schema = {"type": kind}
        if lo is not None:
            out["exclusiveMinimum" if xlo else "minimum"] = lo
        if span is not None:
            hi = (lo if lo is not None else 0) + span + (2 if xlo or xhi else 0)
            out["exclusiveMaximum" if xhi else "maximum"] = hi
        if step is not None:
            out["multipleOf"] = step
            if span is not None and lo is not None:
                out.pop("maximum", None)
                out.pop("exclusiveMaximum", None)
        return out

    return st.builds(
        build,
        st.sampled_from(["integer", "number"]),
        st.none() | st.integers(-1000, 1000),
        st.none() | st.integers(0, 50),
        st.booleans(),
        st.booleans(),
        st.none() | st.integers(1, 7),
    )


SCALARS = st.one_of(
    _string(),
    _number(),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.lists(st.text(max_size=5) | st.integers(), min_size=1, max_size=4, unique=True).map(
        lambda v: {"enum": v}
    ),
    st.integers().map(lambda v: {"const": v}),
)


def _extend(children: st.SearchStrategy[Schema]) -> st.SearchStrategy[Schema]:
    def obj(props: dict[str, Schema], required: list[bool], closed: bool) -> Schema:
        names = list(props)
        out: Schema = {"type": "object", "properties": props}
        req = [n for n, r in zip(names, required, strict=False) if r]
        if req:
            out["required"] = req
        if closed:
            out["additionalProperties"] = False
        return out

    def arr(items: Schema, lo: int, span: int | None, unique: bool) -> Schema:
        out: Schema = {"type": "array", "items": items, "minItems": lo}
        if span is not None:
            out["maxItems"] = lo + span
        if unique and items.get("type") in ("integer", "string") and len(items) == 1:
            out["uniqueItems"] = True
        return out

    return st.one_of(
        st.builds(
            obj,
            st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), children, max_size=4),
            st.lists(st.booleans(), max_size=4),
            st.booleans(),
        ),
        st.builds(arr, children, st.integers(0, 3), st.none() | st.integers(0, 3), st.booleans()),
        st.lists(children, min_size=1, max_size=3).map(lambda b: {"anyOf": b}),
        st.tuples(_string(), _number()).map(lambda b: {"oneOf": [b[0], {**b[1], "type": "integer"}]}),
    )


SCHEMAS = st.recursive(SCALARS, _extend, max_leaves=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SCHEMAS)
def test_example_values_validate_against_random_schemas(schema: Schema) -> None:
    value = example_from_schema(schema)
    found = AnswerCheck(schema).violations(value)
    assert found == [], (schema, value, found)


@settings(max_examples=100, deadline=None)
@given(SCHEMAS)
def test_example_values_validate_behind_a_ref(schema: Schema) -> None:
    wrapped: Schema = {
        "$defs": {"T": schema},
        "type": "object",
        "properties": {"t": {"$ref": "#/$defs/T"}},
        "required": ["t"],
    }
    value = example_from_schema(wrapped)
    assert AnswerCheck(wrapped).violations(value) == []

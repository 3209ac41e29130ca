"""Tools from functions and specs, argument validation, per-tool timeout / retries / concurrency, the registry."""

from __future__ import annotations

import threading

import anyio
import pytest

import agentflow.executors as ex
from agentflow.errors import ConfigError, StepTimeout, ToolError
from agentflow.executors import Tool, ToolRegistry, normalize_schema, tool


def test_public_names_match_all() -> None:
    public = sorted(n for n in dir(ex) if not n.startswith("_") and n not in {"annotations"})
    assert public == sorted(ex.__all__)
    assert len(set(ex.__all__)) == len(ex.__all__)


@tool
def lookup(city: str, year: int = 2020, units: list[str] | None = None) -> dict[str, object]:
    """Look up facts about a city.

    Longer explanation that is part of the summary.

    Args:
        city: The city's name,
            possibly with a country.
        year (int): The year of the census.
        units: Unit names.

    Returns:
        The facts.
    """
    return {"city": city, "year": year, "units": units}


def test_schema_from_function_uses_signature_and_docstring() -> None:
    params = lookup.parameters
    assert params["required"] == ["city"]
    props = params["properties"]
    assert isinstance(props, dict)
    assert props["city"]["description"] == "The city's name, possibly with a country."  # type: ignore[index]
    assert props["year"]["type"] == "integer"  # type: ignore[index]
    assert props["year"]["default"] == 2020  # type: ignore[index]
    assert props["units"]["description"] == "Unit names."  # type: ignore[index]
    assert params["additionalProperties"] is False
    assert (
        lookup.description == "Look up facts about a city.\n\nLonger explanation that is part of the summary."
    )
    assert lookup.param_names == ("city", "year", "units")


def test_validate_coerces_typed_values_when_valid() -> None:
    assert lookup.validate({"city": "Oslo", "year": "1990"}) == {"city": "Oslo", "year": 1990}


def test_validate_lists_every_problem_when_invalid() -> None:
    with pytest.raises(ToolError) as info:
        lookup.validate({"year": "soon", "colour": "red"})
    text = str(info.value)
    assert "tool 'lookup'" in text
    assert "'city': missing required argument" in text
    assert "'year'" in text and "'soon'" in text
    assert "'colour': unexpected argument" in text
    assert "lookup(city: string, year?: integer" in text


def test_bind_maps_positional_arguments_in_declaration_order() -> None:
    assert lookup.bind(("Oslo", 1990), {"units": ["m"]}) == {"city": "Oslo", "year": 1990, "units": ["m"]}
    with pytest.raises(ToolError, match="at most 3 positional"):
        lookup.bind(("a", 1, [], 4), {})
    with pytest.raises(ToolError, match="both by position and by name"):
        lookup.bind(("a",), {"city": "b"})


def test_check_skips_pending_arguments_and_checks_the_rest() -> None:
    lookup.check({"city": "$1", "year": 3}, pending={"city"})
    lookup.check({"year": "$2"}, pending={"year", "city"})
    with pytest.raises(ToolError, match="'year'"):
        lookup.check({"city": "$1", "year": "never"}, pending={"city"})
    with pytest.raises(ToolError, match="'city': missing"):
        lookup.check({"year": 3})


@pytest.mark.anyio
async def test_invoke_runs_sync_function_in_a_worker_thread() -> None:
    release = threading.Event()

    @tool
    def blocking(x: int) -> int:
        """Wait for the test to release the thread."""
        assert release.wait(timeout=30)
        return x + 1

    async with anyio.create_task_group() as tg:
        results: list[object] = []

        async def call() -> None:
            results.append(await blocking.invoke({"x": 1}))

        tg.start_soon(call)
        await anyio.sleep(0)
        release.set()
    assert results == [2]


@pytest.mark.anyio
async def test_invoke_wraps_exceptions_in_tool_error_with_cause() -> None:
    @tool
    async def broken(x: int) -> int:
        """Always fails."""
        raise ValueError(f"bad {x}")

    with pytest.raises(ToolError, match="raised ValueError: bad 3") as info:
        await broken.invoke({"x": 3})
    assert isinstance(info.value.__cause__, ValueError)


@pytest.mark.anyio
async def test_invoke_times_out_with_step_timeout() -> None:
    @tool(timeout=0.01)
    async def stuck() -> None:
        """Never returns."""
        await anyio.sleep_forever()

    with pytest.raises(StepTimeout):
        await stuck.invoke({})


@pytest.mark.anyio
async def test_invoke_retries_until_success_when_retries_allow() -> None:
    calls: list[int] = []

    @tool(retries=2)
    async def flaky(x: int) -> int:
        """Fails twice."""
        calls.append(x)
        if len(calls) < 3:
            raise RuntimeError("transient")
        return x

    assert await flaky.invoke({"x": 7}) == 7
    assert calls == [7, 7, 7]
    calls.clear()
    with pytest.raises(ToolError, match="transient"):
        await flaky.with_options(retries=1).invoke({"x": 1})
    assert calls == [1, 1]


@pytest.mark.anyio
async def test_invoke_never_retries_invalid_arguments() -> None:
    calls: list[int] = []

    @tool(retries=3)
    async def strict(x: int) -> int:
        """Counts calls."""
        calls.append(x)
        return x

    with pytest.raises(ToolError, match="invalid arguments"):
        await strict.invoke({"x": "nope"})
    assert calls == []


@pytest.mark.anyio
async def test_max_concurrency_caps_simultaneous_calls() -> None:
    state = {"now": 0, "peak": 0}
    reached = anyio.Event()
    gate = anyio.Event()

    @tool(max_concurrency=2)
    async def limited(i: int) -> int:
        """Counts concurrent calls."""
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        if state["now"] == 2:
            reached.set()
        await gate.wait()
        state["now"] -= 1
        return i

    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(limited.invoke, {"i": i})
        await reached.wait()
        for _ in range(5):
            await anyio.sleep(0)
        assert state["now"] == 2
        gate.set()
    assert state["peak"] == 2


def test_from_function_rejects_star_args_and_bad_names() -> None:
    def varargs(*items: int) -> int:
        return sum(items)

    with pytest.raises(ConfigError, match="declare each argument"):
        Tool.from_function(varargs)
    with pytest.raises(ConfigError, match="invalid"):
        Tool.from_function(lookup.validate, name="bad name")
    with pytest.raises(ConfigError, match="timeout"):
        Tool.from_function(lookup.validate, name="x", timeout=-1)


OPENAI_SPEC = {
    "type": "function",
    "function": {
        "name": "weather.get",
        "description": "Get the weather.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city"],
        },
    },
}

BFCL_SPEC = {
    "name": "math.factorial",
    "description": "Factorial.",
    "parameters": {
        "type": "dict",
        "properties": {
            "number": {"type": "integer", "description": "n"},
            "scale": {"type": "float", "optional": True, "default": 1.0},
            "coords": {"type": "tuple", "items": {"type": "float"}},
            "payload": {"type": "any"},
            "flags": {"type": "dict", "properties": {"fast": {"type": "boolean"}}, "optional": []},
        },
        "required": ["number", "scale"],
        "optional": ["payload"],
    },
}


def test_from_spec_reads_openai_form() -> None:
    weather = Tool.from_spec(OPENAI_SPEC)
    assert weather.name == "weather.get"
    assert weather.required == frozenset({"city"})
    assert weather.validate({"city": "Paris", "days": 2}) == {"city": "Paris", "days": 2}
    with pytest.raises(ToolError, match="'days': 0 is less than the minimum of 1"):
        weather.validate({"city": "Paris", "days": 0})
    with pytest.raises(ToolError, match="'extra' was unexpected"):
        weather.validate({"city": "Paris", "extra": 1})


def test_from_spec_normalizes_bfcl_dialect() -> None:
    fact = Tool.from_spec(BFCL_SPEC, nullable_optional=False)
    params = fact.parameters
    assert params["type"] == "object"
    assert params["required"] == ["number"]
    props = params["properties"]
    assert props["scale"] == {"type": "number", "default": 1.0}  # type: ignore[index]
    assert props["coords"] == {"type": "array", "items": {"type": "number"}}  # type: ignore[index]
    assert props["payload"] == {}  # type: ignore[index]
    assert props["flags"]["type"] == "object"  # type: ignore[index]
    fact.validate({"number": 5, "coords": [1, 2.5], "payload": {"any": ["thing"]}})
    with pytest.raises(ToolError, match="'number': 'five' is not of type 'integer'"):
        fact.validate({"number": "five"})


def test_from_spec_lets_optional_arguments_be_null_by_default() -> None:
    fact = Tool.from_spec(BFCL_SPEC)
    assert fact.validate({"number": 3, "scale": None}) == {"number": 3, "scale": None}
    with pytest.raises(ToolError, match="'number': None is not of type 'integer'"):
        fact.validate({"number": None})
    assert "scale?: number|null" in fact.signature_hint()


def test_normalize_schema_reads_required_flags_on_properties() -> None:
    schema = normalize_schema(
        {"type": "object", "properties": {"a": {"type": "str", "required": True}, "b": {"type": "int"}}}
    )
    assert schema == {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
        "required": ["a"],
    }


def test_normalize_schema_rejects_unknown_types() -> None:
    with pytest.raises(ConfigError, match="unknown type 'quaternion'"):
        normalize_schema({"type": "object", "properties": {"q": {"type": "quaternion"}}})


@pytest.mark.anyio
async def test_spec_tool_without_implementation_refuses_to_run() -> None:
    spec_only = Tool.from_spec(OPENAI_SPEC)
    assert not spec_only.has_implementation
    with pytest.raises(ToolError, match="no implementation"):
        await spec_only.invoke({"city": "Rome"})
    seen: list[dict[str, object]] = []
    bound = spec_only.with_options(fn=lambda **kw: seen.append(kw) or "sunny")
    assert await bound.invoke({"city": "Rome"}) == "sunny"
    assert seen == [{"city": "Rome"}]


def test_registry_register_get_and_suggest() -> None:
    registry = ToolRegistry([lookup])
    registry.register_specs([OPENAI_SPEC, BFCL_SPEC])
    assert registry.names() == ["lookup", "math.factorial", "weather.get"]
    assert registry.get("math.factorial").name == "math.factorial"
    with pytest.raises(ToolError, match="did you mean 'lookup'"):
        registry.get("lookupp")
    with pytest.raises(ConfigError, match="already registered"):
        registry.register(lookup)
    registry.register(lookup.with_options(timeout=3), replace=True)
    assert registry.get("lookup").timeout == 3
    schemas = registry.schemas()
    assert [s["function"]["name"] for s in schemas] == registry.names()  # type: ignore[index,call-overload]


def test_allowlist_view_hides_other_tools() -> None:
    registry = ToolRegistry([lookup])
    registry.register_specs([OPENAI_SPEC])
    view = registry.allowlist(["weather.get"])
    assert view.names() == ["weather.get"]
    assert "lookup" not in view and "weather.get" in view
    with pytest.raises(ToolError, match="not allowed here"):
        view.get("lookup")
    with pytest.raises(ConfigError, match="unregistered"):
        registry.allowlist(["nope"])
    with pytest.raises(ConfigError, match="not in this view"):
        view.allowlist(["lookup"])
    assert [t.name for t in view] == ["weather.get"]

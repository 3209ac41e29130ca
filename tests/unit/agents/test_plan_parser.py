"""The LLMCompiler plan parsers: text format (incremental), JSON form and its schema; hypothesis round trips and
garbage that may only ever raise PlanError."""

from __future__ import annotations

import functools
import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentflow.agents._plan_parser import (
    JsonPlanParser,
    PlanParser,
    compiler_plan_schema,
    format_plan,
    parse_json_plan,
    parse_plan,
)
from agentflow.errors import PlanError
from agentflow.executors import Executor, Task, ToolRegistry, tool


@tool
def search(query: str) -> str:
    """Search the web."""
    return f"results for {query}"


@tool(name="math")
def math_tool(problem: str, context: list[str] | None = None) -> float:
    """Solve a math problem."""
    return 1.0


@tool(name="math.factorial")
def factorial(number: int) -> int:
    """Factorial."""
    result = 1
    for i in range(2, number + 1):
        result *= i
    return result


REGISTRY = ToolRegistry([search, math_tool, factorial])

PLAN = """Thought: I need facts first.
1. search("Barack Obama")
2. search('Michelle Obama')
Thought: now compute
3. math(problem="$1 + $2", context=["$1", $2])
4. math.factorial(number=$3)
5. join()
<END_OF_PLAN>
"""


def test_parse_plan_reads_tasks_thoughts_kwargs_and_dotted_names() -> None:
    plan = parse_plan(PLAN, REGISTRY)
    assert plan.joined
    assert plan.thoughts == ["I need facts first.", "now compute"]
    assert [t.tool for t in plan.tasks] == ["search", "search", "math", "math.factorial"]
    t1, t2, t3, t4 = plan.tasks
    assert t1.args == ("Barack Obama",) and t1.thought == "I need facts first."
    assert t2.args == ("Michelle Obama",) and t2.thought is None
    assert t3.kwargs == {"problem": "$1 + $2", "context": ["$1", "$2"]}
    assert t3.deps == {1, 2} and t3.thought == "now compute"
    assert t4.kwargs == {"number": "$3"} and t4.deps == {3}


def test_feed_returns_each_task_as_soon_as_its_line_completes() -> None:
    parser = PlanParser(REGISTRY)
    seen: list[list[int]] = []
    for char in PLAN:
        seen.append([t.id for t in parser.feed(char)])
    completed_at = {ids[0]: i for i, ids in enumerate(seen) if ids}
    for task_id in (1, 2, 3, 4):
        line_end = PLAN.index("\n", PLAN.index(f"{task_id}. "))
        assert completed_at[task_id] == line_end
    assert parser.joined
    assert parser.feed("6. search('ignored')\n") == []


def test_finish_returns_the_last_unterminated_line() -> None:
    parser = PlanParser(REGISTRY)
    assert parser.feed('1. search("a")\n2. search("b")') == [parse_plan('1. search("a")', REGISTRY).tasks[0]]
    assert [t.id for t in parser.finish()] == [2]
    assert not parser.joined


def test_call_may_span_lines_while_brackets_are_open() -> None:
    plan = parse_plan('1. math(problem="x",\n   context=["a",\n "b"])\n2. join()\n', REGISTRY)
    assert plan.tasks[0].kwargs == {"problem": "x", "context": ["a", "b"]}
    assert plan.joined


def test_literals_python_and_json_spellings() -> None:
    parser = PlanParser({"f"})
    (task,) = parser.feed(
        "1. f(1, -2.5, 1e3, True, false, None, null, (1, 2), {'k': [\"v\", 'w\\n']}, \"$${x}\")\n"
    )
    assert task.args == (1, -2.5, 1000.0, True, False, None, None, [1, 2], {"k": ["v", "w\n"]}, "$${x}")
    assert task.deps == frozenset()


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ('1. search("a")\n2. serch("b")\n', "unknown tool.*did you mean 'search'", 2),
        (
            '1. search("a")\n2. math(problem="$3")\n',
            r"references \$3, which is defined later \(forward reference\)",
            2,
        ),
        ('1. search("a")\n2. math(problem="$2")\n', "references its own result", 2),
        ('1. search("$0")\n', r"references \$0, but no task 0 exists", 1),
        ('1. search("a")\n3. search("b")\n', "out of order; the next task must be numbered 2", 2),
        ("1. search(query=1)\n", "bad arguments.*'query'", 1),
        ('1. search("a", "b")\n', "bad arguments.*at most 1 positional", 1),
        ('1. search(q="a")\n', "bad arguments.*'q': unexpected argument", 1),
        ('1. math.factorial(number="ten")\n', "bad arguments.*'number'", 1),
        ('1. search(query="a", "b")\n', "positional argument follows keyword argument", 1),
        ('1. search(query="a") trailing\n', "unexpected text after the call", 1),
        ("1. search(Obama)\n", "unquoted word 'Obama'", 1),
        ('1. search("a")\nHere is my plan\n', "expected a task", 2),
        ("1. search($x)\n", "'\\$' must start a reference", 1),
        ('1. search("a")\n2. join(1)\n', r"join\(\) takes no arguments", 2),
    ],
)
def test_plan_mistakes_are_plan_errors_naming_the_line(text: str, message: str, line: int) -> None:
    with pytest.raises(PlanError, match=message) as info:
        parse_plan(text, REGISTRY)
    assert info.value.line == line
    assert f"plan line {line} " in str(info.value)


def test_syntax_errors_carry_the_column() -> None:
    with pytest.raises(PlanError) as info:
        parse_plan('1. search("a" "b")\n', REGISTRY)
    assert info.value.line == 1 and info.value.column == 15


def test_unclosed_call_followed_by_next_task_names_the_unclosed_line() -> None:
    with pytest.raises(PlanError, match="cut off") as info:
        parse_plan('1. search("a"\n2. search("b")\n', REGISTRY)
    assert info.value.line == 1


def test_unterminated_call_at_end_of_stream_is_a_plan_error() -> None:
    parser = PlanParser(REGISTRY)
    assert parser.feed('1. search("abc\n') == []
    with pytest.raises(PlanError, match="cut off"):
        parser.finish()


def test_references_pass_static_checks_for_typed_parameters() -> None:
    plan = parse_plan(
        "1. math.factorial(5)\n2. math.factorial($1)\n3. math.factorial(number=${2})\n", REGISTRY
    )
    assert [t.deps for t in plan.tasks] == [frozenset(), frozenset({1}), frozenset({2})]


def test_replan_continues_ids_and_may_reference_earlier_results() -> None:
    replan = parse_plan('4. math(problem="$2 * 3")\n5. join()\n', REGISTRY, first_id=4, known_ids={1, 2, 3})
    assert replan.tasks[0].id == 4 and replan.tasks[0].deps == {2}
    with pytest.raises(PlanError, match="next task must be numbered 4"):
        parse_plan('1. search("x")\n', REGISTRY, first_id=4, known_ids={1, 2, 3})


def test_non_strict_mode_ignores_chatter() -> None:
    plan = parse_plan(
        'Sure! Here is the plan:\n```\n1. search("a")\n```\n2. join()\n', REGISTRY, strict=False
    )
    assert [t.id for t in plan.tasks] == [1] and plan.joined


@pytest.mark.anyio
async def test_streamed_plan_feeds_the_executor_before_the_plan_ends() -> None:
    parser = PlanParser(REGISTRY)
    async with Executor(REGISTRY).open() as run:
        for task in parser.feed('1. search("Barack Obama")\n2. math.factorial(3)\n'):
            run.add(task)
        first = await run.result(1)
        assert first.value == "results for Barack Obama"
        for task in parser.feed("3. math.factorial($2)\n4. join()\n"):
            run.add(task)
        run.close()
        report = await run.wait()
    assert report.results[3].value == 720


# -- JSON form -----------------------------------------------------------------------------------------------------


def test_json_plan_parses_incrementally_and_checks_like_text() -> None:
    text = json.dumps(
        [
            {"id": 1, "tool": "search", "args": {"query": "Obama"}},
            {"id": 2, "tool": "math.factorial", "args": [5]},
            {"id": 3, "tool": "math", "args": {"problem": "$1 and $2", "context": ["$1"]}},
        ],
        indent=1,
    )
    parser = JsonPlanParser(REGISTRY)
    ids: list[int] = []
    for i in range(0, len(text), 7):
        ids.extend(t.id for t in parser.feed(text[i : i + 7]))
    parser.finish()
    assert ids == [1, 2, 3] and parser.joined
    assert parser.tasks[2].deps == {1, 2}
    assert parser.tasks[1].args == (5,)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id": 1}', "must start with"),
        ('[{"id": 1, "tool": "nope", "args": {}}]', "unknown tool"),
        ('[{"id": 1, "tool": "search", "args": {"query": "$2"}}]', "forward reference"),
        ('[{"id": 2, "tool": "search", "args": {"query": "x"}}]', "numbered 1"),
        ('[{"id": "1", "tool": "search", "args": {}}]', "'id' must be an integer"),
        ('[{"id": 1, "tool": "search", "args": {"query": 3}}]', "bad arguments"),
        ('[{"id": 1, "tool": "search", "args": {"query": "x"}} {"id": 2}]', "unexpected"),
        ('[{"id": 1, "tool": "search", "args": {"query": "x"}, "extra": 1}]', "unexpected keys"),
        ('[{"id": 1, "tool": "search", "args": {"query": "x"}}', "cut off"),
        ('[{"id": 1, "tool": "search", "args": {"query": x}}]', "invalid JSON"),
    ],
)
def test_json_plan_mistakes_are_plan_errors(text: str, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        parse_json_plan(text, REGISTRY)


def test_plan_json_schema_accepts_valid_plans_and_rejects_bad_ones() -> None:
    schema = compiler_plan_schema(REGISTRY)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = [
        {"id": 1, "tool": "math.factorial", "args": {"number": 4}},
        {"id": 2, "tool": "math.factorial", "args": {"number": "$1"}},
        {"id": 3, "tool": "math", "args": {"problem": "$2 + 1", "context": ["$1"]}},
    ]
    assert list(validator.iter_errors(good)) == []
    assert parse_json_plan(json.dumps(good), REGISTRY).tasks[1].deps == {1}
    for bad in (
        [{"id": 1, "tool": "unknown", "args": {}}],
        [{"id": 1, "tool": "math.factorial", "args": {"number": "four"}}],
        [{"id": 1, "tool": "search", "args": {"query": "x", "k": 3}}],
        [],
    ):
        assert list(validator.iter_errors(bad)), bad
    names_only = compiler_plan_schema({"a", "b"})
    jsonschema.validate([{"id": 1, "tool": "b", "args": {"anything": [1]}}], names_only)


# -- hypothesis ----------------------------------------------------------------------------------------------------

_TEXT = st.text(alphabet=st.characters(blacklist_characters="$", blacklist_categories=("Cs",)), max_size=12)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT
)


@functools.cache
def _values(earlier: int) -> st.SearchStrategy[object]:
    refs = list(range(1, earlier + 1))
    scalar = _SCALARS
    if refs:
        ref = st.sampled_from(refs).flatmap(
            lambda r: st.sampled_from([f"${r}", f"${{{r}}}", f"${r}.field", f"text ${r} more"])
        )
        scalar = scalar | ref
    return st.recursive(
        scalar,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
        max_leaves=4,
    )


@st.composite
def _plans(draw: st.DrawFn) -> list[Task]:
    count = draw(st.integers(1, 5))
    tasks: list[Task] = []
    for task_id in range(1, count + 1):
        earlier = task_id - 1
        args = draw(st.lists(_values(earlier), max_size=3))
        names = draw(
            st.lists(st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True), max_size=2, unique=True)
        )
        kwargs = {n: draw(_values(earlier)) for n in names if n not in ("true", "false", "null", "join")}
        thought = draw(
            st.none() | st.text(alphabet="abc xyz.", min_size=1, max_size=20).map(str.strip).filter(bool)
        )
        tool_name = draw(st.sampled_from(["search", "math.factorial", "a.b.c", "tool_1"]))
        tasks.append(Task(task_id, tool_name, tuple(args), kwargs, thought=thought))  # type: ignore[arg-type]
    return tasks


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=_plans(), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_generated_plans_round_trip_through_text_in_any_chunking(plan: list[Task], cuts: list[int]) -> None:
    text = format_plan(plan)
    names = {"search", "math.factorial", "a.b.c", "tool_1"}
    parser = PlanParser(names)
    got: list[Task] = []
    points = sorted({c % (len(text) + 1) for c in cuts})
    start = 0
    for point in [*points, len(text)]:
        got.extend(parser.feed(text[start:point]))
        start = point
    got.extend(parser.finish())
    assert got == plan
    assert parser.joined


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=_plans())
def test_generated_plans_round_trip_through_json(plan: list[Task]) -> None:
    items = [{"id": t.id, "tool": t.tool, "args": t.kwargs if not t.args else list(t.args)} for t in plan]
    if any(t.args and t.kwargs for t in plan):
        return
    parsed = parse_json_plan(json.dumps(items), {"search", "math.factorial", "a.b.c", "tool_1"})
    assert [(t.id, t.tool, t.args, t.kwargs, t.deps) for t in parsed.tasks] == [
        (t.id, t.tool, t.args, t.kwargs, t.deps) for t in plan
    ]


_GARBAGE_ALPHABET = st.sampled_from(
    [*"0123456789.()[]{}\"'$,=:\n -_abcjoinThought\\END<>", "1. ", "join()", "$1"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_GARBAGE_ALPHABET, max_size=80).map("".join) | st.text(max_size=200))
def test_garbage_only_ever_raises_plan_error(text: str) -> None:
    for strict in (True, False):
        parser = PlanParser(REGISTRY, strict=strict)
        try:
            parser.feed(text)
            parser.finish()
        except PlanError:
            pass
    json_parser = JsonPlanParser(REGISTRY)
    try:
        json_parser.feed(text)
        json_parser.finish()
    except PlanError:
        pass


def test_deep_nesting_is_a_plan_error_not_a_crash() -> None:
    with pytest.raises(PlanError, match="deeper than"):
        parse_plan("1. search(" + "[" * 500 + "]" * 500 + ")\n", {"search"})
    with pytest.raises(PlanError, match="deeper than"):
        parse_json_plan('[{"id": 1, "tool": "search", "args": ' + "[" * 500 + "]" * 500 + "}]", {"search"})


def test_plan_json_schema_converts_to_a_llama_cpp_grammar() -> None:
    grammar_module = pytest.importorskip("llama_cpp.llama_grammar")
    gbnf = grammar_module.json_schema_to_gbnf(json.dumps(compiler_plan_schema(REGISTRY)))
    assert '"\\"math.factorial\\""' in gbnf
    grammar_module.LlamaGrammar.from_string(gbnf, verbose=False)

"""ReDoS and remote references in user-supplied JSON Schemas (issue 18, item 6).

A plan's ``pattern: '^(a+)+$'`` with a crafted default stalled ``validate`` exponentially on
Python's backtracking ``re`` (N=30: 38 s). Patterns now run on pydantic-core's Rust regex engine,
linear in the input: the inputs below (thousands of characters) would take longer than the age of
the universe with backtracking, so each test finishing at all is the regression check.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.errors import ConfigError, PlanError
from agentflow.executors import JsonSchemaValidator, safe_regex_search
from agentflow.network import NetworkPolicy
from agentflow.plans import load_plan_text

EVIL = ["^(a+)+$", "^(a|a)+$", "^(a|aa)+$", r"^(\w+\s?)*$", "^([a-zA-Z0-9]+)*@$", "(x+x+)+y"]
CRAFTED = "a" * 5000 + "!"

PLAN = """\
apiVersion: agentflow/v1
kind: Plan
inputs:
  x:
    type: string
    pattern: '{pattern}'
    default: '{default}'
steps:
  - id: s
    prompt: 'hi {{{{inputs.x}}}}'
"""


@pytest.mark.parametrize("pattern", EVIL)
def test_redos_pattern_with_crafted_default_does_not_stall_validate(pattern: str) -> None:
    text = PLAN.format(pattern=pattern.replace("'", "''"), default=CRAFTED)
    with pytest.raises(PlanError) as info:
        load_plan_text(text, file="p.yaml", network=NetworkPolicy())
    assert (info.value.line, info.value.column) == (7, 14) and "does not match" in info.value.message


def test_redos_pattern_on_a_run_input_does_not_stall_binding() -> None:
    loaded = load_plan_text(PLAN.format(pattern="^(a+)+$", default="aaa"), network=NetworkPolicy())
    with pytest.raises(ConfigError, match="does not match"):
        loaded.bind_inputs({"x": CRAFTED})
    assert loaded.bind_inputs({"x": "a" * 5000}) == {"x": "a" * 5000}


def test_redos_pattern_properties_and_additional_properties_run_in_linear_time() -> None:
    schema = {
        "type": "object",
        "patternProperties": {"^(a+)+$": {"type": "integer"}},
        "additionalProperties": False,
    }
    validator = JsonSchemaValidator(schema)  # type: ignore[arg-type]
    problems = validator.errors({CRAFTED: 1, "a" * 3000: "not an int"})
    assert any("do" in p and "not match any of the regexes" in p for p in problems)
    assert any("is not of type 'integer'" in p for p in problems)


@pytest.mark.parametrize("pattern", ["(?=a)b", r"(a)\1", "(?<!x)y"])
def test_pattern_that_needs_backtracking_is_refused_at_its_position(pattern: str) -> None:
    with pytest.raises(PlanError) as info:
        load_plan_text(PLAN.format(pattern=pattern, default="b"), file="p.yaml", network=NetworkPolicy())
    assert (info.value.line, info.value.column) == (6, 14)
    assert "without backtracking" in info.value.message


def test_deeply_nested_pattern_is_a_config_error_not_a_recursion_error() -> None:
    with pytest.raises(ConfigError):
        JsonSchemaValidator({"type": "string", "pattern": "(" * 5000 + ")" * 5000})


SAFE = ["^a", "b$", "^[a-c]+$", "ab|cd", "a.c", "^$", "x*", r"^\d{2,3}-[a-z]?$"]


@settings(max_examples=300, deadline=None)
@given(pattern=st.sampled_from(SAFE), text=st.text(alphabet="abcdx-0123\n", max_size=12))
def test_safe_search_agrees_with_re_search_on_patterns_without_hazards(pattern: str, text: str) -> None:
    # Python's `$` also matches before a final newline; ECMA-262 (JSON Schema) and Rust do not.
    expected = re.search(pattern.replace("$", r"\Z"), text) is not None
    assert safe_regex_search(pattern, text) is expected


class _Hits(BaseHTTPRequestHandler):
    paths: list[str] = []  # noqa: RUF012 - one list shared by the test's server

    def do_GET(self) -> None:
        self.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"type": "string"}')

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def schema_server() -> Iterator[str]:
    _Hits.paths = []
    server = HTTPServer(("127.0.0.1", 0), _Hits)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/schema.json"
    finally:
        server.shutdown()
        server.server_close()


def test_remote_schema_reference_is_never_fetched(schema_server: str) -> None:
    validator = JsonSchemaValidator({"$ref": schema_server})
    problems = validator.errors(3)
    assert problems and "remote references are never fetched" in problems[0]
    assert _Hits.paths == []
    local = JsonSchemaValidator({"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s"})
    assert local.errors(3) == ["3 is not of type 'string'"]

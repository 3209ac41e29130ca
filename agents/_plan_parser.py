"""Incremental parsers for LLMCompiler plans: the text format and the JSON form for constrained decoding.

The text format, one task per line, as the planner streams it::

    Thought: I need the population first.
    1. search("Barack Obama")
    2. math(problem="$1 + 3", context=["$1"])
    3. join()
    <END_OF_PLAN>

Calls take positional and keyword arguments; tool names may be dotted (``math.factorial``); argument values are
Python/JSON literals (strings, numbers, lists, tuples, dicts, ``True``/``true``, ``None``/``null``) and ``$N`` /
``${N}`` / ``$N.field`` references, quoted or not. A call may span several lines while its brackets are open.
Task ids are consecutive from ``first_id``; ``join()`` ends the plan and anything after it is ignored.

:class:`PlanParser` takes text chunks as they stream from the engine and returns each task the moment its line is
complete, so the executor can start it while the rest of the plan is still being generated. Every mistake is a
:class:`~agentflow.errors.PlanError` naming the line number, the column and the line's text: unparsable lines,
unknown tools, arguments that do not fit the tool (checked statically, references left for run time), references
to tasks not defined yet (forward references), and self references (the only cycle a plan without forward
references can have).

The JSON form (:func:`compiler_plan_schema`, :class:`JsonPlanParser`) is a list of ``{"id", "tool", "args"}`` objects;
its schema is generated from the registry so a grammar (llama.cpp, vLLM structured outputs) can only produce known
tools with well-typed arguments, and its parser also returns each task as soon as its object closes.

A literal dollar sign followed by a digit must be written ``$$`` (``"costs $$5"``), or it is read as a reference.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from pydantic import JsonValue

from agentflow.errors import PlanError, ToolError
from agentflow.executors import TOOL_NAME, Task, Tool, ToolRegistry, ToolView, ref_ids

__all__ = [
    "JsonPlanParser",
    "ParsedPlan",
    "PlanParser",
    "compiler_plan_schema",
    "format_plan",
    "parse_json_plan",
    "parse_plan",
]

ToolSource = ToolRegistry | ToolView | Collection[str]
"""What a parser checks tool names against: a registry or view (names and arguments) or a set of names."""

_MAX_DEPTH = 64
_TASK_LINE = re.compile(r"\s*(\d+)\s*[.)]\s*(.*)", re.DOTALL)
_THOUGHT = re.compile(r"\s*thought\s*:\s*(.*)", re.IGNORECASE | re.DOTALL)
_END = re.compile(r"\s*<\s*END_OF_PLAN\s*>\s*", re.IGNORECASE)
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_]\w*")
_CONSTANTS: dict[str, JsonValue] = {
    "True": True,
    "true": True,
    "False": False,
    "false": False,
    "None": None,
    "null": None,
}
_REF_TEXT = re.compile(r"\$\{\d+(?:\.[A-Za-z_]\w*)*\}|\$\d+(?:\.[A-Za-z_]\w*)*")
_JOIN = "join"


@dataclass(frozen=True)
class ParsedPlan:
    """A whole plan.

    Attributes:
        tasks: The tasks in plan order.
        joined: Whether the plan ended with ``join()``.
        thoughts: Every ``Thought:`` line's text, in order.
    """

    tasks: list[Task] = field(default_factory=list)
    joined: bool = False
    thoughts: list[str] = field(default_factory=list)


class _Incomplete(Exception):
    """The call text ended inside a string or an open bracket (more lines may complete it)."""


class _SyntaxProblem(Exception):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


class _CallReader:
    """Recursive-descent reader of ``name(args)`` with literal arguments."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> _SyntaxProblem:
        return _SyntaxProblem(message, self.pos)

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_ws()
        if self.pos >= len(self.text):
            raise _Incomplete
        return self.text[self.pos]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.fail(f"expected {char!r}, found {self.text[self.pos]!r}")
        self.pos += 1

    def call(self) -> tuple[str, list[JsonValue], dict[str, JsonValue]]:
        self.skip_ws()
        match = TOOL_NAME.match(self.text, self.pos)
        if match is None:
            raise self.fail("expected a tool name such as search or math.factorial")
        name = match.group(0)
        self.pos = match.end()
        self.expect("(")
        args: list[JsonValue] = []
        kwargs: dict[str, JsonValue] = {}
        while self.peek() != ")":
            start = self.pos
            key = _NAME.match(self.text, self.pos)
            if key is not None and key.group(0) not in _CONSTANTS:
                after = key.end()
                while after < len(self.text) and self.text[after].isspace():
                    after += 1
                if (
                    after < len(self.text)
                    and self.text[after] == "="
                    and self.text[after : after + 2] != "=="
                ):
                    self.pos = after + 1
                    if key.group(0) in kwargs:
                        raise _SyntaxProblem(f"keyword argument {key.group(0)!r} is given twice", start)
                    kwargs[key.group(0)] = self.value(0)
                    self.separator(")")
                    continue
            if kwargs:
                raise _SyntaxProblem("positional argument follows keyword argument", start)
            args.append(self.value(0))
            self.separator(")")
        self.pos += 1
        return name, args, kwargs

    def separator(self, closing: str) -> None:
        char = self.peek()
        if char == ",":
            self.pos += 1
        elif char != closing:
            raise self.fail(f"expected ',' or {closing!r}, found {char!r}")

    def value(self, depth: int) -> JsonValue:
        if depth > _MAX_DEPTH:
            raise self.fail(f"arguments nest deeper than {_MAX_DEPTH} levels")
        char = self.peek()
        if char in "\"'":
            return self.string()
        if char == "$":
            match = _REF_TEXT.match(self.text, self.pos)
            if match is None:
                raise self.fail(
                    "'$' must start a reference such as $1, ${1} or $1.field (write $$ for a dollar sign)"
                )
            self.pos = match.end()
            return match.group(0)
        if char in "[(":
            closing = "]" if char == "[" else ")"
            self.pos += 1
            items: list[JsonValue] = []
            while self.peek() != closing:
                items.append(self.value(depth + 1))
                self.separator(closing)
            self.pos += 1
            return items
        if char == "{":
            self.pos += 1
            obj: dict[str, JsonValue] = {}
            while self.peek() != "}":
                if self.peek() not in "\"'":
                    raise self.fail("dict keys must be quoted strings")
                key = self.string()
                self.expect(":")
                obj[key] = self.value(depth + 1)
                self.separator("}")
            self.pos += 1
            return obj
        number = _NUMBER.match(self.text, self.pos)
        if number is not None:
            self.pos = number.end()
            if self.pos == len(self.text):
                raise _Incomplete
            text = number.group(0)
            return float(text) if any(c in text for c in ".eE") else int(text)
        name = _NAME.match(self.text, self.pos)
        if name is not None and name.group(0) in _CONSTANTS:
            self.pos = name.end()
            return _CONSTANTS[name.group(0)]
        if name is not None:
            raise self.fail(f'unquoted word {name.group(0)!r}; quote strings, e.g. "{name.group(0)}"')
        raise self.fail(f"unexpected {char!r}; expected a string, number, list, dict, True/False/None or $N")

    def string(self) -> str:
        start = self.pos
        quote = self.text[start]
        pos = start + 1
        while True:
            if pos >= len(self.text):
                raise _Incomplete
            char = self.text[pos]
            if char == "\\":
                pos += 2
                continue
            if char == quote:
                break
            pos += 1
        self.pos = pos + 1
        literal = self.text[start : self.pos].replace("\r", "").replace("\n", "\\n")
        try:
            decoded = ast.literal_eval(literal)
        except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
            raise _SyntaxProblem(f"invalid string literal {literal[:40]!r}: {exc}", start) from exc
        if not isinstance(decoded, str):
            raise _SyntaxProblem(f"invalid string literal {literal[:40]!r}", start)
        return decoded


class _PlanChecker:
    """Checks each task against the ids defined so far and the tools; shared by the text and JSON parsers."""

    def __init__(self, tools: ToolSource, first_id: int, known_ids: Iterable[int]) -> None:
        if isinstance(first_id, bool) or not isinstance(first_id, int) or first_id < 1:
            raise PlanError(f"first_id={first_id!r} must be an integer >= 1")
        self.tools = tools
        self.next_id = first_id
        self.defined: set[int] = set(known_ids)
        self.tasks: list[Task] = []

    def error(self, message: str, line: int, text: str, column: int | None = None) -> PlanError:
        shown = text.strip()
        if len(shown) > 200:
            shown = shown[:197] + "..."
        return PlanError(f"plan line {line} {shown!r}: {message}", line=line, column=column)

    def check_id(self, task_id: int, line: int, text: str) -> None:
        if task_id != self.next_id:
            raise self.error(
                f"task id {task_id} is out of order; the next task must be numbered {self.next_id}",
                line,
                text,
            )

    def add(
        self,
        task_id: int,
        name: str,
        args: list[JsonValue],
        kwargs: dict[str, JsonValue],
        thought: str | None,
        line: int,
        text: str,
    ) -> Task:
        self.check_id(task_id, line, text)
        tool = self._tool(name, line, text)
        try:
            task = Task(task_id, name, tuple(args), kwargs, thought=thought)
        except PlanError as exc:
            raise self.error(exc.message, line, text) from exc
        for dep in sorted(task.deps):
            if dep in self.defined:
                continue
            if dep > task_id:
                raise self.error(
                    f"task {task_id} references ${dep}, which is defined later (forward reference); "
                    "a task may only use the results of tasks above it",
                    line,
                    text,
                )
            raise self.error(f"task {task_id} references ${dep}, but no task {dep} exists", line, text)
        if tool is not None:
            try:
                bound = tool.bind(task.args, task.kwargs)
                tool.check(bound, pending={k for k, v in bound.items() if ref_ids(v)})
            except ToolError as exc:
                raise self.error(f"bad arguments: {exc.message}", line, text) from exc
        self.defined.add(task_id)
        self.next_id = task_id + 1
        self.tasks.append(task)
        return task

    def join(self, task_id: int | None, line: int, text: str) -> None:
        if task_id is not None:
            self.check_id(task_id, line, text)
            self.next_id = task_id + 1

    def _tool(self, name: str, line: int, text: str) -> Tool | None:
        if isinstance(self.tools, (ToolRegistry, ToolView)):
            try:
                return self.tools.get(name)
            except ToolError as exc:
                raise self.error(f"unknown tool: {exc.message}", line, text) from exc
        if name not in self.tools:
            raise self.error(
                f"unknown tool {name!r}; available tools: {', '.join(sorted(self.tools))}", line, text
            )
        return None


class PlanParser:
    """Parses the LLMCompiler text format incrementally; see the module docstring for the format.

    Examples:
        >>> parser = PlanParser({"search", "math"})
        >>> parser.feed('1. search("Barack Obama")\\n2. math("$1 + 3")')
        [Task(id=1, tool='search', args=('Barack Obama',), kwargs={}, thought=None, deps=frozenset())]
        >>> [t.deps for t in parser.feed("\\n3. join()\\n")]
        [frozenset({1})]
        >>> parser.joined
        True

    Args:
        tools: The registry/view the plan may use (tool names and arguments are checked), or just the names.
        first_id: The id the first task must have (a replan continues after the previous plan's last id).
        known_ids: Ids of earlier results the plan may reference (from previous plans).
        strict: Raise on lines that are neither tasks, thoughts, blank nor ``<END_OF_PLAN>``; when false such
            lines are ignored.
        max_call_chars: The longest a (possibly multi-line) call may be.
    """

    def __init__(
        self,
        tools: ToolSource,
        *,
        first_id: int = 1,
        known_ids: Iterable[int] = (),
        strict: bool = True,
        max_call_chars: int = 20_000,
    ) -> None:
        self._checker = _PlanChecker(tools, first_id, known_ids)
        self._strict = strict
        self._max_call_chars = max_call_chars
        self._buffer = ""  # text after the last complete line
        self._line_no = 0  # lines consumed so far
        self._pending: list[str] = []  # lines of a call whose brackets are still open
        self._pending_start = 0  # line number of the first pending line
        self._thought: str | None = None  # the last thought, attached to the next task
        self._thoughts: list[str] = []
        self._joined = False
        self._finished = False

    @property
    def joined(self) -> bool:
        """Whether ``join()`` was read (the plan is complete)."""
        return self._joined

    @property
    def tasks(self) -> list[Task]:
        """Every task returned so far."""
        return list(self._checker.tasks)

    @property
    def thoughts(self) -> list[str]:
        """Every ``Thought:`` text so far."""
        return list(self._thoughts)

    def feed(self, chunk: str) -> list[Task]:
        """Add streamed text; return the tasks whose lines were completed by it.

        Raises:
            PlanError: A completed line is invalid (the parser should not be used afterwards).
        """
        if self._finished:
            raise PlanError("this plan parser is finished; create a new one for the next plan")
        if self._joined:
            return []
        self._buffer += chunk
        out: list[Task] = []
        while not self._joined:
            newline = self._buffer.find("\n")
            if newline < 0:
                break
            line = self._buffer[:newline]
            self._buffer = self._buffer[newline + 1 :]
            self._line_no += 1
            task = self._line(line.rstrip("\r"), final=False)
            if task is not None:
                out.append(task)
        if self.joined:  # the property, not the field: mypy would keep the loop's narrowing of the field
            self._buffer = ""
        elif len(self._buffer) > self._max_call_chars:
            raise self._checker.error(
                f"line longer than {self._max_call_chars} characters", self._line_no + 1, self._buffer[:200]
            )
        return out

    def finish(self) -> list[Task]:
        """Declare the end of the stream; return the tasks of the last, unterminated line.

        Raises:
            PlanError: The last line is invalid or a call is left unterminated.
        """
        if self._finished:
            return []
        out: list[Task] = []
        if not self._joined and (self._buffer or self._pending):
            self._line_no += 1
            task = self._line(self._buffer.rstrip("\r"), final=True)
            self._buffer = ""
            if task is not None:
                out.append(task)
        self._finished = True
        return out

    def plan(self) -> ParsedPlan:
        """The plan read so far."""
        return ParsedPlan(tasks=self.tasks, joined=self._joined, thoughts=self.thoughts)

    def _line(self, line: str, *, final: bool) -> Task | None:
        if self._pending:
            if _TASK_LINE.match(line) is not None or _THOUGHT.match(line) is not None:
                text = "\n".join(self._pending)
                raise self._checker.error(
                    "the call is cut off (unclosed bracket or string)", self._pending_start, text
                )
            self._pending.append(line)
            return self._call("\n".join(self._pending), self._pending_start, final=final)
        stripped = line.strip()
        if not stripped or _END.fullmatch(stripped):
            return None
        thought = _THOUGHT.fullmatch(stripped)
        if thought is not None:
            self._thought = thought.group(1).strip()
            self._thoughts.append(self._thought)
            return None
        if _TASK_LINE.match(stripped) is None:
            if self._strict:
                raise self._checker.error(
                    "expected a task 'N. tool(args)', 'Thought: ...' or 'N. join()'", self._line_no, line
                )
            return None
        self._pending_start = self._line_no
        self._pending = [line]
        return self._call(line, self._line_no, final=final)

    def _call(self, text: str, line_no: int, *, final: bool) -> Task | None:
        head = _TASK_LINE.match(text)
        assert head is not None
        task_id = int(head.group(1))
        body = head.group(2)
        body_offset = head.start(2)
        reader = _CallReader(body)
        try:
            name, args, kwargs = reader.call()
            reader.skip_ws()
            if reader.pos < len(body):
                raise reader.fail(f"unexpected text after the call: {body[reader.pos : reader.pos + 40]!r}")
        except _Incomplete:
            if final:
                self._pending = []
                raise self._checker.error(
                    "the call is cut off (unclosed bracket or string)", line_no, text
                ) from None
            if len(text) > self._max_call_chars:
                raise self._checker.error(
                    f"call longer than {self._max_call_chars} characters (unclosed bracket or string?)",
                    line_no,
                    text,
                ) from None
            return None
        except _SyntaxProblem as exc:
            column = _column(text, body_offset + exc.offset)
            raise self._checker.error(exc.message, line_no, text, column=column) from None
        self._pending = []
        if name == _JOIN:
            if args or kwargs:
                raise self._checker.error("join() takes no arguments", line_no, text)
            self._checker.join(task_id, line_no, text)
            self._joined = True
            return None
        thought, self._thought = self._thought, None
        return self._checker.add(task_id, name, args, kwargs, thought, line_no, text)


def _column(text: str, offset: int) -> int:
    before = text[:offset]
    return offset - (before.rfind("\n") + 1) + 1


def parse_plan(
    text: str, tools: ToolSource, *, first_id: int = 1, known_ids: Iterable[int] = (), strict: bool = True
) -> ParsedPlan:
    """Parse a whole text plan at once (see :class:`PlanParser` for the options).

    Raises:
        PlanError: The first invalid line.
    """
    parser = PlanParser(tools, first_id=first_id, known_ids=known_ids, strict=strict)
    parser.feed(text)
    parser.finish()
    return parser.plan()


def format_plan(tasks: Iterable[Task], *, join: bool = True) -> str:
    """Render tasks as plan text (thoughts included), e.g. for few-shot prompts or replan context."""
    lines: list[str] = []
    last = 0
    for task in tasks:
        if task.thought:
            lines.append(f"Thought: {task.thought}")
        lines.append(f"{task.id}. {task.call_text()}")
        last = task.id
    if join:
        lines.append(f"{last + 1}. join()")
    return "\n".join(lines) + "\n"


# -- JSON form -----------------------------------------------------------------------------------------------------

# Character classes, not escapes: llama-cpp-python's schema-to-grammar converter reads ``\$\{?`` as an
# optional literal "${" and writes a GBNF escape that llama.cpp's grammar parser rejects.
_REF_STRING: dict[str, JsonValue] = {
    "type": "string",
    "pattern": r"^[$][{]?[0-9]+([.][A-Za-z_][A-Za-z0-9_]*)*[}]?$",
}


def compiler_plan_schema(
    tools: ToolSource, *, typed_args: bool = True, ids: bool = True
) -> dict[str, JsonValue]:
    """The JSON Schema of a JSON plan over ``tools``, for grammar-constrained decoding.

    A plan is an array of ``{"id": int, "tool": name, "args": {...}}``; with ``typed_args`` (and a registry or
    view), each tool's ``args`` follow its parameter schema, where every non-string argument may also be a
    ``$N`` reference string.

    Args:
        tools: A registry or view, or tool names (then ``args`` is any object).
        typed_args: Constrain ``args`` by each tool's schema.
        ids: Include the ``id`` key. Without it, items are numbered by position (parse with
            ``JsonPlanParser(..., positional_ids=True)``), which spares small models a class of mistakes.
    """
    items: list[JsonValue] = []
    defs: dict[str, JsonValue] = {}
    if isinstance(tools, (ToolRegistry, ToolView)):
        named: list[tuple[str, Tool | None]] = [(t.name, t) for t in tools]
    else:
        named = [(n, None) for n in sorted(tools)]
    for name, tool in named:
        args: JsonValue = {"type": "object"}
        if typed_args and tool is not None:
            args = _args_schema(tool, defs)
        items.append(
            {
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "tool": {"const": name},
                    "args": args,
                },
                "required": ["id", "tool", "args"],
                "additionalProperties": False,
            }
        )
        if not ids:
            item = items[-1]
            assert isinstance(item, dict)
            props = item["properties"]
            assert isinstance(props, dict)
            del props["id"]
            item["required"] = ["tool", "args"]
    schema: dict[str, JsonValue] = {
        "type": "array",
        "minItems": 1,
        "items": {"anyOf": items} if items else False,
    }
    if defs:
        schema["$defs"] = defs
    return schema


def _args_schema(tool: Tool, defs: dict[str, JsonValue]) -> JsonValue:
    params = tool.parameters
    local_defs = params.pop("$defs", None)
    prefix = re.sub(r"\W", "_", tool.name) + "__"
    if isinstance(local_defs, dict):
        text = json.dumps(params).replace('"#/$defs/', f'"#/$defs/{prefix}')
        params = json.loads(text)
        for key, value in local_defs.items():
            defs[prefix + key] = json.loads(json.dumps(value).replace('"#/$defs/', f'"#/$defs/{prefix}'))
    props = params.get("properties")
    if isinstance(props, dict):
        for key, prop in list(props.items()):
            if not (isinstance(prop, dict) and prop.get("type") == "string"):
                props[key] = {"anyOf": [prop, _REF_STRING]}
    return params


class JsonPlanParser:
    """Parses a JSON plan (an array of ``{"id", "tool", "args"}``) incrementally.

    Each task is returned as soon as its object closes. ``args`` may be an object (keyword arguments) or an
    array (positional). An item whose tool is ``"join"`` ends the plan like ``join()``.

    Examples:
        >>> parser = JsonPlanParser({"search"})
        >>> [t.id for t in parser.feed('[{"id": 1, "tool": "search", "args": {"q": "x"}}, {"id": 2,')]
        [1]

    Args:
        tools: As for :class:`PlanParser`.
        first_id: The id the first task must have.
        known_ids: Ids of earlier results the plan may reference.
        positional_ids: Items may leave out ``id``; they are numbered by position from ``first_id``.
    """

    def __init__(
        self,
        tools: ToolSource,
        *,
        first_id: int = 1,
        known_ids: Iterable[int] = (),
        positional_ids: bool = False,
    ) -> None:
        self._checker = _PlanChecker(tools, first_id, known_ids)
        self._positional_ids = positional_ids  # items carry no "id": the k-th item gets first_id + k - 1
        self._text = ""  # all text fed so far
        self._pos = 0  # scan position in self._text
        self._line = 1  # line number at self._pos
        self._state = "start"  # start -> array -> (after item) ... -> done
        self._depth = 0  # bracket depth inside the current item
        self._in_string = False
        self._escape = False
        self._item_start = -1  # offset of the current item's '{', or -1
        self._item_closed_at = -1  # offset of the '{' of the item that just closed
        self._item_line = 0
        self._joined = False

    @property
    def tasks(self) -> list[Task]:
        """Every task returned so far."""
        return list(self._checker.tasks)

    @property
    def joined(self) -> bool:
        """Whether the array closed or a join item was read."""
        return self._joined

    def feed(self, chunk: str) -> list[Task]:
        """Add streamed text; return the tasks whose objects were completed by it.

        Raises:
            PlanError: Invalid JSON structure, a malformed item, or a task that fails the plan checks.
        """
        self._text += chunk
        out: list[Task] = []
        text = self._text
        while self._pos < len(text) and self._state != "done":
            char = text[self._pos]
            if self._item_start >= 0:
                self._scan_item(char)
                if self._item_start < 0:
                    task = self._item(text[self._item_closed_at : self._pos + 1])
                    if task is not None:
                        out.append(task)
            elif char.isspace():
                pass
            elif self._state == "start":
                if char != "[":
                    raise self._error(f"a JSON plan must start with '[', found {char!r}")
                self._state = "array"
            elif self._state in ("array", "after_comma") and char == "{":
                self._item_start = self._pos
                self._item_line = self._line
                self._depth = 1
            elif self._state == "array" and char == "]":
                self._state = "done"
                self._joined = True
            elif self._state == "after_item" and char == ",":
                self._state = "after_comma"
            elif self._state == "after_item" and char == "]":
                self._state = "done"
                self._joined = True
            else:
                raise self._error(f"unexpected {char!r} in the plan array")
            if char == "\n":
                self._line += 1
            self._pos += 1
        return out

    def finish(self) -> list[Task]:
        """Declare the end of the stream.

        Raises:
            PlanError: The array is not closed.
        """
        if self._state != "done" and not self._joined:
            raise self._error("the JSON plan is cut off (the array is not closed)")
        return []

    def plan(self) -> ParsedPlan:
        """The plan read so far."""
        return ParsedPlan(tasks=self.tasks, joined=self._joined)

    def _scan_item(self, char: str) -> None:
        if self._in_string:
            if self._escape:
                self._escape = False
            elif char == "\\":
                self._escape = True
            elif char == '"':
                self._in_string = False
            return
        if char == '"':
            self._in_string = True
        elif char in "{[":
            self._depth += 1
            if self._depth > _MAX_DEPTH:
                raise self._error(f"the item nests deeper than {_MAX_DEPTH} levels")
        elif char in "}]":
            self._depth -= 1
            if self._depth == 0:
                self._item_closed_at = self._item_start
                self._item_start = -1
                self._state = "after_item"

    def _error(self, message: str) -> PlanError:
        return PlanError(f"JSON plan line {self._line}: {message}", line=self._line)

    def _item(self, text: str) -> Task | None:
        line = self._item_line
        try:
            item = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise self._checker.error(f"invalid JSON: {exc}", line, text) from None
        if not isinstance(item, dict):
            raise self._checker.error("each plan item must be an object", line, text)
        task_id, name, args = item.get("id"), item.get("tool"), item.get("args", {})
        if self._positional_ids and task_id is None:
            task_id = self._checker.next_id
        unknown = sorted(set(item) - {"id", "tool", "args", "thought"})
        if unknown:
            raise self._checker.error(f"unexpected keys {unknown}; items have id, tool, args", line, text)
        if isinstance(task_id, bool) or not isinstance(task_id, int):
            raise self._checker.error(f"'id' must be an integer, got {task_id!r}", line, text)
        if not isinstance(name, str):
            raise self._checker.error(f"'tool' must be a string, got {name!r}", line, text)
        if name == _JOIN:
            self._checker.join(task_id, line, text)
            self._joined = True
            self._state = "done"
            return None
        thought = item.get("thought")
        thought_text = thought if isinstance(thought, str) else None
        if isinstance(args, dict):
            return self._checker.add(task_id, name, [], args, thought_text, line, text)
        if isinstance(args, list):
            return self._checker.add(task_id, name, args, {}, thought_text, line, text)
        raise self._checker.error(f"'args' must be an object or an array, got {args!r}", line, text)


def parse_json_plan(
    text: str, tools: ToolSource, *, first_id: int = 1, known_ids: Iterable[int] = ()
) -> ParsedPlan:
    """Parse a whole JSON plan at once.

    Raises:
        PlanError: Invalid JSON structure or a task that fails the plan checks.
    """
    parser = JsonPlanParser(tools, first_id=first_id, known_ids=known_ids)
    parser.feed(text)
    parser.finish()
    return parser.plan()

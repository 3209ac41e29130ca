"""Reading plan YAML safely, keeping the line and column of every value.

PyYAML composes the text into a node graph (libyaml when available); this module turns the nodes into
plain JSON-compatible data itself, so that it can:

- remember where each value and each mapping key came from (``Document.positions``),
- refuse what a plan never needs and an attacker might send: files over ``MAX_BYTES``, alias expansion
  over ``MAX_NODES`` nodes (alias bombs), recursive aliases, nesting deeper than ``MAX_DEPTH``, duplicate
  keys, non-string keys, custom tags, and non-finite numbers,
- read scalars by the YAML 1.2 core schema (``yes``, ``on``, ``1:30``, ``0777`` are not booleans or
  base-60/octal numbers there) and refuse the plain scalars that YAML 1.1 tools read differently, so a
  value never changes type or meaning silently: ``timeout: yes`` or ``max_tokens: 1:30`` is an error
  that says what to write instead.

Every problem is a ``PlanError`` naming file:line:column.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import JsonValue

from agentflow.errors import PlanError

if TYPE_CHECKING:
    import yaml

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "Document", "Path", "read_yaml"]

MAX_BYTES = 1_000_000
"""Largest plan file accepted, in bytes."""

MAX_NODES = 50_000
"""Most values a plan may expand to (aliases count once per use)."""

MAX_DEPTH = 64
"""Deepest nesting of mappings and lists."""

Path = tuple[str | int, ...]
"""Where a value sits in the document: keys and list indices from the root."""

_MAX_FLOW_BRACKETS = 2 * 64  # unclosed '[' / '{' allowed before parsing (YAML scanners are O(n * depth))

# The YAML 1.2 core schema's tag resolution for plain scalars (https://yaml.org/spec/1.2.2/#1032-tag-resolution).
_CORE_NULL = frozenset({"", "~", "null", "Null", "NULL"})
_CORE_TRUE = frozenset({"true", "True", "TRUE"})
_CORE_FALSE = frozenset({"false", "False", "FALSE"})
_CORE_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_CORE_FLOAT = re.compile(
    r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)"
)
# What YAML accepts in a stream: everything else (control characters, lone surrogates) is refused.
_NOT_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _line_column(text: str, index: int) -> tuple[int, int]:
    """1-based (line, column) of the character at ``index``."""
    return text.count("\n", 0, index) + 1, index - text.rfind("\n", 0, index)


def _core_tag(value: str) -> str:
    """The YAML 1.2 core schema tag of an untagged plain scalar."""
    if value in _CORE_NULL:
        return _TAG + "null"
    if value in _CORE_TRUE or value in _CORE_FALSE:
        return _TAG + "bool"
    if _CORE_INT.fullmatch(value):
        return _TAG + "int"
    if _CORE_FLOAT.fullmatch(value):
        return _TAG + "float"
    return _TAG + "str"


def _core_value(tag: str, value: str) -> JsonValue:
    """A scalar's value under the YAML 1.2 core schema.

    Raises:
        ValueError: ``value`` is not a core-schema spelling of ``tag``.
    """
    if tag == _TAG + "null":
        if value not in _CORE_NULL:
            raise ValueError("null is written null, ~ or nothing")
        return None
    if tag == _TAG + "bool":
        if value in _CORE_TRUE or value in _CORE_FALSE:
            return value in _CORE_TRUE
        raise ValueError("a boolean is written true or false")
    if tag == _TAG + "int":
        if not _CORE_INT.fullmatch(value):
            raise ValueError("an integer is written 42, -7, 0o755 or 0x1F")
        if value.startswith("0o"):
            return int(value[2:], 8)
        if value.startswith("0x"):
            return int(value[2:], 16)
        return int(value)
    if tag == _TAG + "float":
        if not _CORE_FLOAT.fullmatch(value):
            raise ValueError("a number is written 1.5, -0.25 or 1e3")
        return float(value.lower().replace(".inf", "inf").replace(".nan", "nan"))
    raise ValueError(f"{tag!r} is not a scalar tag")


def _yaml11_value(tag: str, value: str) -> JsonValue:
    """How YAML 1.1 tools (PyYAML's ``safe_load``) read a plain scalar PyYAML resolves to ``tag``."""
    import yaml  # deferred: a heavy import (tests/unit/test_import_cost.py)

    node = yaml.ScalarNode(tag, value)
    scalars = _scalars()
    if tag == _TAG + "bool":
        return bool(scalars.construct_yaml_bool(node))
    if tag == _TAG + "int":
        return int(scalars.construct_yaml_int(node))
    return float(scalars.construct_yaml_float(node))


def _ambiguity(value: str) -> str | None:
    """Why a plain scalar would mean something else to a YAML 1.1 tool, or ``None`` if it would not."""
    import yaml  # deferred: a heavy import (tests/unit/test_import_cost.py)

    old = _resolve(yaml.ScalarNode, value, (True, False))
    if old not in (_TAG + "bool", _TAG + "int", _TAG + "float"):
        return None
    new = _core_tag(value)
    try:
        old_value = _yaml11_value(old, value)
        if new == old and _core_value(new, value) == old_value:
            return None
    except (ValueError, TypeError, OverflowError, yaml.YAMLError):
        return None
    read_as = "the text " + repr(value) if new == _TAG + "str" else repr(_core_value(new, value))
    if old == _TAG + "bool":
        fix = f"write {str(old_value).lower()} for a boolean"
    elif new == _TAG + "int":  # a leading zero: octal in YAML 1.1, decimal in YAML 1.2
        digits = value.lstrip("+-").lstrip("0") or "0"
        fix = f"write 0o{digits} for the octal number {old_value} or {_core_value(new, value)!r} for the decimal one"
    else:
        fix = f"write {old_value!r} for that number"
    return (
        f"{value!r} is read as {old_value!r} by YAML 1.1 tools but as {read_as} by YAML 1.2, which plans use; "
        f"{fix}, or quote it ('{value}') for text"
    )


def _flow_bound(text: str) -> int:
    """An upper bound of the flow-collection nesting: unclosed ``[``/``{`` anywhere (quotes ignored)."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif ch in "]}" and depth:
            depth -= 1
    return deepest


@functools.cache
def _resolver() -> yaml.resolver.Resolver:
    """PyYAML's tag resolver, built on first use."""
    import yaml  # deferred: a heavy import (tests/unit/test_import_cost.py)

    return yaml.resolver.Resolver()


@functools.cache
def _scalars() -> yaml.SafeLoader:
    """A loader used only for its scalar constructors (``construct_yaml_int``...), built on first use."""
    import yaml  # deferred: a heavy import (tests/unit/test_import_cost.py)

    return yaml.SafeLoader("")


def _resolve(kind: type[yaml.Node], value: str | None, implicit: object) -> str:
    """The tag PyYAML's resolver gives an untagged node (``int``, ``bool``, ``str``...)."""
    tag: str = _resolver().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
    return tag


def _mark(mark: object) -> yaml.Mark | None:
    """libyaml's marks as PyYAML marks (the node classes are typed for the latter)."""
    import yaml  # deferred: a heavy import (tests/unit/test_import_cost.py)

    if mark is None:
        return None
    line, column = int(getattr(mark, "line", 0)), int(getattr(mark, "column", 0))
    return yaml.Mark(str(getattr(mark, "name", "")), int(getattr(mark, "index", 0)), line, column, None, 0)


def _compose(text: str, file: str | None) -> yaml.Node | None:
    """Compose the YAML node graph from parser events without recursion, checking depth as it goes.

    PyYAML's composers (libyaml's and the Python one) recurse once per nesting level, which deep input
    turns into a crash or a RecursionError; here the nesting is an explicit stack.
    """
    import yaml  # deferred: a heavy import (tests/unit/test_import_cost.py)

    root: yaml.Node | None = None
    anchors: dict[str, yaml.Node] = {}
    stack: list[yaml.Node] = []
    pending_keys: list[yaml.Node | None] = []  # per open mapping: its key waiting for a value
    documents = 0

    def fail(message: str, event: yaml.Event) -> PlanError:
        mark = event.start_mark
        if mark is None:
            return PlanError(message, file=file)
        return PlanError(message, file=file, line=mark.line + 1, column=mark.column + 1)

    def attach(node: yaml.Node, event: yaml.Event) -> None:
        nonlocal root
        anchor = getattr(event, "anchor", None)
        if anchor is not None and not isinstance(event, yaml.AliasEvent):
            anchors[anchor] = node
        if not stack:
            root = node
            return
        parent = stack[-1]
        if isinstance(parent, yaml.SequenceNode):
            parent.value.append(node)
        elif pending_keys[-1] is None:
            pending_keys[-1] = node
        else:
            parent.value.append((pending_keys[-1], node))
            pending_keys[-1] = None

    loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise fail("a plan file holds one YAML document; remove the extra '---' document", event)
        elif isinstance(event, yaml.AliasEvent):
            target = anchors.get(event.anchor or "")
            if target is None:
                raise fail(
                    f"alias *{event.anchor} has no anchor &{event.anchor} before it; define it first", event
                )
            attach(target, event)
        elif isinstance(event, yaml.ScalarEvent):
            tag = event.tag
            if tag is None or tag == "!":
                plain = bool(event.implicit[0]) and tag is None
                tag = _core_tag(event.value) if plain else _TAG + "str"
                if plain and (why := _ambiguity(event.value)) is not None:
                    raise fail(why, event)
            attach(
                yaml.ScalarNode(
                    tag, event.value, _mark(event.start_mark), _mark(event.end_mark), style=event.style
                ),
                event,
            )
        elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            is_seq = isinstance(event, yaml.SequenceStartEvent)
            kind = yaml.SequenceNode if is_seq else yaml.MappingNode
            tag = event.tag
            if tag is None or tag == "!":
                tag = _resolve(kind, None, event.implicit)
            node = kind(tag, [], _mark(event.start_mark), None, flow_style=event.flow_style)
            attach(node, event)
            stack.append(node)
            pending_keys.append(None)
            if len(stack) > MAX_DEPTH:
                raise fail(f"the plan nests deeper than {MAX_DEPTH} levels; flatten it", event)
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            stack.pop().end_mark = _mark(event.end_mark)
            pending_keys.pop()
    return root


_TAG = "tag:yaml.org,2002:"


@dataclass(frozen=True)
class Document:
    """Plain data read from YAML, with positions.

    Attributes:
        data: The JSON-compatible value.
        positions: 1-based (line, column) of the value at each path.
        key_positions: 1-based (line, column) of the mapping key that leads to each path.
        file: The file name, if the text came from one.
    """

    data: JsonValue
    positions: dict[Path, tuple[int, int]]
    key_positions: dict[Path, tuple[int, int]]
    file: str | None

    def where(self, path: Path, *, key: bool = False) -> tuple[int | None, int | None]:
        """The position of the value at ``path`` (or of its key), or of its nearest known ancestor."""
        table = self.key_positions if key else self.positions
        p = path
        while p:
            if p in table:
                return table[p]
            if p in self.positions:
                return self.positions[p]
            p = p[:-1]
        return self.positions.get((), (None, None))

    def error(self, message: str, path: Path, *, key: bool = False) -> PlanError:
        """A ``PlanError`` located at ``path``."""
        line, column = self.where(path, key=key)
        return PlanError(message, file=self.file, line=line, column=column)


class _Reader:
    def __init__(self, file: str | None) -> None:
        self.file = file
        self.count = 0  # values produced so far; bounded by MAX_NODES
        self.active: set[int] = set()  # ids of nodes on the current descent (detects recursive aliases)
        self.positions: dict[Path, tuple[int, int]] = {}
        self.key_positions: dict[Path, tuple[int, int]] = {}

    def fail(self, message: str, node: yaml.Node) -> PlanError:
        mark = node.start_mark
        return PlanError(message, file=self.file, line=mark.line + 1, column=mark.column + 1)

    def value(self, node: yaml.Node, path: Path) -> JsonValue:
        import yaml  # deferred: a heavy import (tests/unit/test_import_cost.py)

        self.count += 1
        if self.count > MAX_NODES:
            raise self.fail(
                f"the plan expands to more than {MAX_NODES} values (an alias bomb?); "
                "use fewer aliases or split the plan",
                node,
            )
        if len(path) > MAX_DEPTH:
            raise self.fail(f"the plan nests deeper than {MAX_DEPTH} levels; flatten it", node)
        if id(node) in self.active:
            raise self.fail(
                "a YAML alias refers to a value that contains it (a cycle); remove the alias", node
            )
        self.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                if node.tag != _TAG + "seq":
                    raise self.fail(f"unsupported YAML tag {node.tag!r}; plans use plain lists", node)
                return [self.value(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
            raise self.fail(f"unsupported YAML node {type(node).__name__}", node)
        finally:
            self.active.discard(id(node))

    def mapping(self, node: yaml.MappingNode, path: Path) -> JsonValue:
        import yaml  # deferred: a heavy import (tests/unit/test_import_cost.py)

        if node.tag != _TAG + "map":
            raise self.fail(f"unsupported YAML tag {node.tag!r}; plans use plain mappings", node)
        out: dict[str, JsonValue] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                raise self.fail(
                    "YAML merge keys (<<) are not supported in plans; write the keys out", key_node
                )
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _TAG + "str":
                raise self.fail("mapping keys must be plain strings; quote the key", key_node)
            key = str(key_node.value)
            if key in out:
                line, column = self.key_positions[(*path, key)]
                raise self.fail(
                    f"duplicate key {key!r} (first at line {line}, column {column}); keep one of them",
                    key_node,
                )
            self.key_positions[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self.value(value_node, (*path, key))
        return out

    def scalar(self, node: yaml.ScalarNode) -> JsonValue:
        tag = node.tag
        if tag == _TAG + "str" or tag == _TAG + "timestamp":
            return str(node.value)
        if tag == _TAG + "null":
            return None
        if tag in (_TAG + "bool", _TAG + "int", _TAG + "float"):
            try:
                value = _core_value(tag, str(node.value))
            except (ValueError, OverflowError) as exc:
                raise self.fail(
                    f"cannot read {node.value!r} as {tag.removeprefix(_TAG)}: {exc}", node
                ) from None
            if isinstance(value, float) and not math.isfinite(value):
                raise self.fail(f"{node.value!r} is not a finite number; plans are JSON-compatible", node)
            return value
        raise self.fail(
            f"unsupported YAML tag {tag!r}; plans use plain strings, numbers, booleans and null", node
        )


def read_yaml(text: str | bytes, *, file: str | None = None) -> Document:
    """Parse one YAML document into plain data with positions.

    Args:
        text: The YAML text (bytes are decoded as UTF-8).
        file: The file name used in error messages.

    Raises:
        PlanError: The text is too large, not UTF-8, not valid YAML, or uses something plans refuse.
    """
    import yaml  # deferred: a heavy import (tests/unit/test_import_cost.py)

    if len(text) > MAX_BYTES:
        raise PlanError(
            f"the plan is {len(text)} bytes, more than the {MAX_BYTES} allowed; split it", file=file
        )
    if isinstance(text, bytes):
        raw = text
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            column = len(raw[raw.rfind(b"\n", 0, exc.start) + 1 : exc.start].decode("utf-8", "replace")) + 1
            raise PlanError(
                f"the plan is not UTF-8 text (byte 0x{raw[exc.start]:02x}); save it as UTF-8",
                file=file,
                line=line,
                column=column,
            ) from None
    bad = _NOT_PRINTABLE.search(text)
    if bad is not None:
        line, column = _line_column(text, bad.start())
        raise PlanError(
            f"the plan contains the control character U+{ord(bad.group()):04X}, which YAML does not allow; "
            "remove it (write it as an escape such as \\u0001 inside a double-quoted string)",
            file=file,
            line=line,
            column=column,
        )
    if _flow_bound(text) > _MAX_FLOW_BRACKETS:
        raise PlanError(
            f"the plan nests deeper than {MAX_DEPTH} levels (it has more than {_MAX_FLOW_BRACKETS} unclosed "
            "'[' or '{'); flatten it, or balance brackets inside text",
            file=file,
        )
    try:
        node = _compose(text, file)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise PlanError(
            f"invalid YAML: {problem}; fix the syntax",
            file=file,
            line=None if mark is None else mark.line + 1,
            column=None if mark is None else mark.column + 1,
        ) from None
    except yaml.YAMLError as exc:
        raise PlanError(f"invalid YAML: {exc}; fix the syntax", file=file) from None
    if node is None:
        raise PlanError(
            "the plan is empty; start it with 'apiVersion: agentflow/v1' and 'kind: Plan'", file=file
        )
    reader = _Reader(file)
    try:
        data = reader.value(node, ())
    except RecursionError:
        raise PlanError(f"the plan nests deeper than {MAX_DEPTH} levels; flatten it", file=file) from None
    return Document(data, reader.positions, reader.key_positions, file)

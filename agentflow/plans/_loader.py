"""Loading plans: YAML -> pydantic models -> checked ``LoadedPlan`` (tools resolved, templates checked).

Every problem is one ``PlanError`` that names file:line:column, the bad value and the fix:

- YAML problems, size and alias limits (``_yaml``);
- unknown keys (with the closest allowed key), wrong types, missing keys (pydantic, located);
- duplicate step ids, unknown agents or tools, tools outside the allowlist, ill-typed literal tool
  arguments;
- template syntax, references to undefined inputs or steps, references to steps that run later, and
  cycles among the children of a ``parallel`` block;
- engine specs (an unknown scheme, a malformed URL) and network destinations the plan chooses (its
  engine's server or model hub, its OTLP endpoint, content capture in spans) that the user has not
  allowed (``agentflow.network``).
"""

from __future__ import annotations

import difflib
import graphlib
import os
import stat
import typing
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, JsonValue, ValidationError

from agentflow.dsl import Flow
from agentflow.errors import ConfigError, PlanError, ToolError
from agentflow.executors import JsonSchemaValidator, Tool, ToolRegistry, safe_regex_search
from agentflow.network import HOSTS_ENV, NetworkPolicy, host_label, user_config_path

from ._schema import (
    _KIND_CLASSES,
    API_VERSION,
    BranchStep,
    Condition,
    LLMStep,
    LoopStep,
    MapStep,
    MCPToolsRef,
    ParallelStep,
    Plan,
    SchemaSpec,
    SequenceStep,
    Step,
    ToolRef,
    ToolStep,
)
from ._templates import Template, TemplateSyntaxError, parse_template, template_refs
from ._tools import ToolAllowlist, resolve_tool
from ._yaml import MAX_BYTES, Document, Path, read_yaml

if TYPE_CHECKING:
    from agentflow.mcp import MCPSource

MCPAllow = Iterable["str | MCPSource"]
"""The user's MCP allowlist: their own ``MCPSource`` objects and command/URL patterns (see ``MCPAllowlist``)."""

__all__ = [
    "LoadedPlan",
    "PlanChoice",
    "check_plan",
    "children_of",
    "load_plan",
    "load_plan_text",
    "referenced_steps",
    "walk_steps",
]

PlanChoice = Literal["engine", "telemetry"]
"""A plan block the user can override (``--engine``, ``--trace``): its network choices are then unused."""

_STEP_LISTS: dict[type[BaseModel], tuple[str, ...]] = {
    ParallelStep: ("parallel",),
    SequenceStep: ("steps",),
    MapStep: ("do",),
    BranchStep: ("then", "else"),
    LoopStep: ("do",),
}


def children_of(step: Step) -> list[tuple[str, list[Step]]]:
    """The child step lists of a step, by their YAML key (``parallel``, ``steps``, ``do``, ``then``, ``else``)."""
    out: list[tuple[str, list[Step]]] = []
    for key in _STEP_LISTS.get(type(step), ()):
        attr = "else_" if key == "else" else key
        out.append((key, list(getattr(step, attr))))
    return out


@dataclass(frozen=True)
class LoadedPlan:
    """A checked plan, ready to compile and run.

    Attributes:
        plan: The validated plan model.
        tools: The tools its steps may call (the plan's ``tools:`` plus any given to the loader); tools of
            MCP sources join them while the plan runs.
        file: The file it came from, if any.
        document: The YAML document with positions, if it came from text.
        mcp_sources: The MCP servers the plan's ``tools:`` name, as the user allowed them; a run of the
            plan connects to them first and closes them when it ends.
    """

    plan: Plan
    tools: ToolRegistry
    file: str | None = None
    document: Document | None = field(default=None, repr=False, compare=False)
    mcp_sources: tuple[MCPSource, ...] = ()

    @property
    def name(self) -> str:
        """The plan's name."""
        return self.plan.name

    @property
    def engine_spec(self) -> str | None:
        """The engine spec the plan asks for, if any."""
        return self.plan.engine.spec

    def bind_inputs(self, given: Mapping[str, object]) -> dict[str, object]:
        """Check run inputs against the declared ones and fill in defaults.

        Raises:
            ConfigError: An unknown or missing input, or a value that does not match its schema.
        """
        declared = self.plan.inputs
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise ConfigError(
                f"plan {self.name!r} has no input(s) {unknown}; its inputs are {sorted(declared) or 'none'}"
            )
        values: dict[str, object] = {}
        for name, spec in declared.items():
            if name in given:
                value = given[name]
            elif "default" in spec.model_fields_set:
                value = spec.default
            else:
                raise ConfigError(
                    f"plan {self.name!r} needs input {name!r} ({_describe_schema(spec)}); "
                    f"pass --input {name}=... (CLI) or inputs={{{name!r}: ...}}"
                )
            problems = JsonSchemaValidator(spec.to_json_schema(), where=f"inputs.{name}").errors(value)
            if problems:
                raise ConfigError(
                    f"input {name!r} = {value!r} does not match its schema: {'; '.join(problems)}"
                )
            values[name] = value
        return values

    def workflow(self, **inputs: object) -> Flow[dict[str, object]]:
        """The plan as a Flow yielding its outputs by name (``{"result": ...}`` when it declares none).

        Raises:
            ConfigError: The inputs do not match the declared ones.
        """
        from ._compile import compile_plan

        return compile_plan(self, self.bind_inputs(inputs))

    def with_tools(self, registry: ToolRegistry) -> LoadedPlan:
        """The plan checked again against ``registry`` (its tools plus the connected MCP sources' tools).

        Raises:
            PlanError: A step names a tool the registry lacks or calls it with ill-typed arguments (located
                at file:line:column like any load error).
        """
        if self.document is not None:
            doc = self.document
        else:
            from ._dump import plan_to_data

            doc = Document(plan_to_data(self.plan), {}, {}, None)
        # Connecting changes no destination: the engine and telemetry blocks were checked at the first load.
        return _Loader(doc, (), registry, overridden=("engine", "telemetry"), connected=True).load(doc.data)


def load_plan(
    path: str | os.PathLike[str],
    *,
    allow_tools: Iterable[str] = (),
    tools: ToolRegistry | None = None,
    network: NetworkPolicy | None = None,
    overridden: Collection[PlanChoice] = (),
    allow_mcp: MCPAllow = (),
) -> LoadedPlan:
    """Read, validate and check a plan file.

    Args:
        path: The YAML file.
        allow_tools: Extra ``module:attr`` patterns the plan's ``tools:`` may import (the built-in
            tools are always allowed).
        tools: Tools provided by the caller, callable from steps without a ``tools:`` entry.
        network: What the plan may reach (default ``NetworkPolicy.from_user()``: the user's
            ``AGENTFLOW_ALLOW_HOSTS`` and config file). A plan whose engine server, model hub or OTLP
            endpoint is not allowed, or that asks for content capture the user did not allow, is refused.
        overridden: Plan blocks the caller replaces with its own choice (``"engine"`` when an engine
            is given, ``"telemetry"`` when tracing is configured by the user): their destinations are
            not used, so they are not checked against ``network`` (their syntax still is).
        allow_mcp: MCP servers the plan's ``tools: [{mcp: ...}]`` may use: the user's ``MCPSource``
            objects (used by name) and patterns of commands/URLs a plan may write itself.

    Raises:
        PlanError: The file is missing, too large, or invalid (the message names file:line:column).
    """
    name = os.fspath(path)
    raw = _read_plan_file(name)
    return load_plan_text(
        raw,
        file=name,
        allow_tools=allow_tools,
        tools=tools,
        network=network,
        overridden=overridden,
        allow_mcp=allow_mcp,
    )


def _read_plan_file(name: str) -> bytes:
    """The bytes of a regular file of at most ``MAX_BYTES`` (a FIFO, device or directory is refused
    without blocking: the file is opened non-blocking and checked on the open descriptor)."""
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise PlanError("no such plan file; check the path", file=name) from None
    except IsADirectoryError:
        raise PlanError("this is a directory, not a plan file", file=name) from None
    except OSError as exc:
        raise PlanError(f"cannot read the plan file: {exc.strerror}", file=name) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise PlanError("this is a directory, not a plan file", file=name)
        if not stat.S_ISREG(info.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device or socket"
            raise PlanError(f"this is {kind}, not a regular file; save the plan to a file", file=name)
        if info.st_size > MAX_BYTES:
            raise PlanError(
                f"the plan is {info.st_size} bytes, more than the {MAX_BYTES} allowed; split it", file=name
            )
        with os.fdopen(fd, "rb") as fh:
            fd = -1  # owned by fh now
            return fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise PlanError(f"cannot read the plan file: {exc.strerror}", file=name) from None
    finally:
        if fd >= 0:
            os.close(fd)


def load_plan_text(
    text: str | bytes,
    *,
    file: str | None = None,
    allow_tools: Iterable[str] = (),
    tools: ToolRegistry | None = None,
    network: NetworkPolicy | None = None,
    overridden: Collection[PlanChoice] = (),
    allow_mcp: MCPAllow = (),
) -> LoadedPlan:
    """Validate and check a plan given as YAML (or JSON) text; see ``load_plan``.

    Raises:
        PlanError: The text is not a valid plan.
    """
    doc = read_yaml(text, file=file)
    return _Loader(doc, allow_tools, tools, network, overridden, allow_mcp=allow_mcp).load(doc.data)


def check_plan(
    plan: Plan | Mapping[str, JsonValue],
    *,
    allow_tools: Iterable[str] = (),
    tools: ToolRegistry | None = None,
    network: NetworkPolicy | None = None,
    overridden: Collection[PlanChoice] = (),
    allow_mcp: MCPAllow = (),
) -> LoadedPlan:
    """Check a plan built in Python (a ``Plan`` or its dict form) as the loader checks files.

    Raises:
        PlanError: The plan is invalid (locations are paths in the plan, not lines).
    """
    if isinstance(plan, Plan):
        from ._dump import plan_to_data

        data: JsonValue = plan_to_data(plan)
    else:
        data = dict(plan)
    doc = Document(data, {}, {}, None)
    return _Loader(doc, allow_tools, tools, network, overridden, allow_mcp=allow_mcp).load(data)


# -- validation errors ------------------------------------------------------------------------------


def _human_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<plan>"


def _describe_schema(spec: SchemaSpec) -> str:
    return f"type {spec.type}" if spec.type else "any JSON value"


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _has_dict(annotation: object) -> bool:
    if typing.get_origin(annotation) is dict:
        return True
    return any(_has_dict(arg) for arg in typing.get_args(annotation))


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that validates the object at ``loc`` (a pydantic error location)."""
    current: type[BaseModel] = Plan
    pending: list[type[BaseModel]] | None = None  # union members until a tag picks one
    skip_key = False  # the next part is a key of a dict field
    for part in loc:
        if skip_key:
            skip_key = False
            continue
        if isinstance(part, int):
            continue
        if pending is not None:
            by_name = {m.__name__: m for m in pending}
            chosen = _KIND_CLASSES.get(part) or by_name.get(part)
            if chosen is None:
                return None
            current, pending = chosen, None
            continue
        if part == current.__name__:
            continue
        fields = {f.alias or n: f for n, f in current.model_fields.items()}
        if part not in fields:
            return current
        annotation = fields[part].annotation
        models = _models_in(annotation)
        if not models:
            return current
        skip_key = _has_dict(annotation)
        if len(models) == 1:
            current = models[0]
        else:
            pending = models
    return current if pending is None else None


def _data_path(data: JsonValue, loc: Sequence[str | int]) -> Path:
    """Map a pydantic error location onto the data (dropping union tags that are not keys)."""
    path: list[str | int] = []
    node: JsonValue = data
    for part in loc:
        if (isinstance(node, dict) and isinstance(part, str) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        ):
            path.append(part)
            node = node[part]  # type: ignore[index]
        elif isinstance(node, dict) and isinstance(part, int) and str(part) in node:
            path.append(str(part))
            node = node[str(part)]
    return tuple(path)


def _step_label(data: JsonValue, path: Path) -> str:
    """``step 'x'`` for the innermost step containing ``path``, else the dotted path."""
    node: JsonValue = data
    label = ""
    for part in path:
        if isinstance(node, dict) and isinstance(part, str):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            node = node[part]
        else:
            break
        if isinstance(node, dict) and isinstance(node.get("id"), str) and any(k in node for k in _MARKERS):
            label = f"step {node['id']!r}"
    return label


_MARKERS = ("prompt", "tool", "parallel", "steps", "map", "branch", "loop")


def _validation_error(exc: ValidationError, doc: Document) -> PlanError:
    errors = exc.errors()
    # Prefer the most specific location; union members produce several errors for one value.
    errors.sort(key=lambda e: -len(e["loc"]))
    first = errors[0]
    loc = tuple(first["loc"])
    path = _data_path(doc.data, loc)
    where = _human_path(path)
    label = _step_label(doc.data, path)
    at = f"{label} ({where})" if label else where
    kind = first["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        model = _model_at(loc[:-1])
        allowed = sorted(f.alias or n for n, f in model.model_fields.items()) if model else []
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        parent = _human_path(path[:-1])
        message = f"unknown key {key!r} in {label or parent}; {hint}allowed keys: {', '.join(allowed)}"
        err = doc.error(message, path, key=True)
    elif kind == "missing":
        key = str(loc[-1])
        message = f"{label or _human_path(path)} is missing the required key {key!r}; add it (see `agentflow schema`)"
        err = doc.error(message, path)
    elif kind == "step_kind":
        keys = sorted(first["input"]) if isinstance(first["input"], dict) else []
        message = f"{at} is not a step: it needs exactly one of the keys {', '.join(_MARKERS)}" + (
            f" (it has {', '.join(keys)})" if keys else ""
        )
        err = doc.error(message, path)
    elif kind == "string_pattern_mismatch":
        hints = {
            "tools": "write a tool reference as 'module:attr', e.g. 'agentflow.plans.builtin_tools:lookup'",
            "ref": "write a tool reference as 'module:attr', e.g. 'agentflow.plans.builtin_tools:lookup'",
            "name": "use letters, digits, '.', '_' and '-'",
            "url": "write the MCP server's http(s) URL, e.g. http://127.0.0.1:8000/mcp",
        }
        key = next((str(p) for p in reversed(path) if isinstance(p, str)), "")
        hint = hints.get(key, "use letters, digits and '_', starting with a letter or '_'")
        err = doc.error(f"{at}: {first['input']!r} is not allowed here; {hint}", path)
    elif kind == "literal_error" and loc and loc[-1] == "apiVersion":
        err = doc.error(f"apiVersion is {first['input']!r}; this loader reads {API_VERSION!r}", path)
    else:
        value = first.get("input")
        shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
        err = doc.error(f"{at}: {first['msg']} (got {shown[:80]}); see `agentflow schema`", path)
    more = len({tuple(e["loc"]) for e in errors}) - 1
    if more > 0:
        err = PlanError(
            f"{err.message} (and {more} more problem{'s' if more > 1 else ''})",
            file=err.file,
            line=err.line,
            column=err.column,
        )
    return err


def _patterns_in(schema: JsonValue, path: Path) -> Iterable[tuple[str, Path]]:
    """The ``pattern`` values in a plan's JSON Schema (its keys are the plan's keys), with their paths."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "pattern" and isinstance(value, str):
                yield value, (*path, key)
            elif key not in ("enum", "const", "default"):
                yield from _patterns_in(value, (*path, key))


# -- semantic checks ---------------------------------------------------------------------------------


class _Loader:
    def __init__(
        self,
        doc: Document,
        allow_tools: Iterable[str],
        tools: ToolRegistry | None,
        network: NetworkPolicy | None = None,
        overridden: Collection[PlanChoice] = (),
        *,
        allow_mcp: MCPAllow = (),
        connected: bool = False,
    ) -> None:
        self.doc = doc
        self.network = network
        self.overridden = frozenset(overridden)
        try:
            self.allowlist = ToolAllowlist(allow_tools)
        except ValueError as exc:
            raise PlanError(str(exc)) from None
        self.allow_mcp = allow_mcp
        # connected: ``tools`` already holds every tool of the plan (its own and its MCP sources'), so the
        # plan's ``tools:`` entries are not resolved again (LoadedPlan.with_tools, while a run holds them).
        self.connected = connected
        self.mcp_sources: dict[
            str, MCPSource
        ] = {}  # the plan's MCP sources by name, as the user allowed them
        self.registry = ToolRegistry()
        if tools is not None:
            for tool in tools:
                self.registry.register(tool)
        self.ids: dict[str, Path] = {}  # every step id -> where it is defined
        self.plan: Plan | None = None

    def fail(self, message: str, path: Path, *, key: bool = False) -> PlanError:
        return self.doc.error(message, path, key=key)

    def load(self, data: JsonValue) -> LoadedPlan:
        if not isinstance(data, dict):
            raise self.fail(
                f"a plan is a mapping with apiVersion, kind and steps, not a {type(data).__name__}", ()
            )
        if "apiVersion" not in data:
            raise self.fail(f"the plan has no 'apiVersion'; add 'apiVersion: {API_VERSION}' at the top", ())
        if "kind" not in data:
            raise self.fail("the plan has no 'kind'; add 'kind: Plan' at the top", ())
        try:
            plan = Plan.model_validate(data)
        except ValidationError as exc:
            raise _validation_error(exc, self.doc) from None
        except RecursionError:
            raise self.fail("the plan nests too deeply; flatten it", ()) from None
        self.plan = plan
        self._network(plan)
        self._tools(plan)
        self._collect_ids(plan.steps, ("steps",))
        self._schemas(plan)
        for name, agent in plan.agents.items():
            if agent.system is not None:
                self._template(agent.system, ("agents", name, "system"), frozenset(), frozenset({"inputs"}))
        produced = self._sequence(plan.steps, ("steps",), frozenset(), frozenset())
        for name, out in plan.outputs.items():
            self._template(out.value, ("outputs", name, "value"), frozenset(produced), frozenset())
        return LoadedPlan(
            plan=plan,
            tools=self.registry,
            file=self.doc.file,
            document=self.doc,
            mcp_sources=tuple(self.mcp_sources.values()),
        )

    # network destinations -------------------------------------------------------------------------

    def _network(self, plan: Plan) -> None:
        """Engine spec syntax, then every destination the plan chooses against the user's allowlist."""
        from agentflow.engines import parse_engine_spec  # deferred: engines import is not free

        policy = self.network
        destinations: list[tuple[str, str, Path]] = []  # (what is sent, url, where in the plan)
        if plan.engine.spec is not None:
            where: Path = ("engine", "spec")
            try:
                parts = parse_engine_spec(plan.engine.spec)
            except ConfigError as exc:
                raise self.fail(exc.message, where) from None
            if parts.destination is not None and "engine" not in self.overridden:
                sent = (
                    "its prompts and the API key in $OPENAI_API_KEY (if set)"
                    if parts.scheme == "openai"
                    else "a model download request (with the hub token in $HF_TOKEN, if set)"
                )
                destinations.append(
                    (f"engine spec {plan.engine.spec!r} sends {sent}", parts.destination, where)
                )
        telemetry = plan.telemetry
        if telemetry.endpoint is not None:
            where = ("telemetry", "endpoint")
            if telemetry.exporter != "otlp":
                raise self.fail(
                    "telemetry.endpoint is only used by 'exporter: otlp'; set the exporter or remove the endpoint",
                    where,
                )
            try:
                host_label(telemetry.endpoint)
            except ConfigError as exc:
                raise self.fail(f"telemetry.endpoint: {exc.message}", where) from None
            if "telemetry" not in self.overridden:
                what = "the run's spans (and any $OTEL_EXPORTER_OTLP_HEADERS credentials)"
                destinations.append((f"telemetry sends {what}", telemetry.endpoint, where))
        needs_content = (
            telemetry.capture_content and telemetry.exporter == "otlp" and "telemetry" not in self.overridden
        )
        if not destinations and not needs_content:
            return
        if policy is None:
            policy = NetworkPolicy.from_user()
        for what, url, where in destinations:
            if not policy.allows(url):
                host = host_label(url)
                raise self.fail(
                    f"{what} to {host}, a host you have not allowed; if you trust it, run with "
                    f"--allow-host {host} (or add it to ${HOSTS_ENV} or to allow_hosts in "
                    f"{user_config_path()}), or choose the destination yourself "
                    f"({'--engine SPEC' if where[0] == 'engine' else '--trace otlp --trace-endpoint URL'})",
                    where,
                )
        if needs_content and not policy.trace_content:
            raise self.fail(
                "telemetry.capture_content: true would put prompts, outputs and tool arguments into spans "
                "sent off this machine, which you have not allowed; allow it with --allow-trace-content (or "
                "AGENTFLOW_ALLOW_TRACE_CONTENT=1, or allow_trace_content in the config file), or remove it",
                ("telemetry", "capture_content"),
            )

    # tools and schemas -----------------------------------------------------------------------------

    def _tools(self, plan: Plan) -> None:
        if self.connected:
            return
        for i, entry in enumerate(plan.tools):
            path: Path = ("tools", i)
            if isinstance(entry, MCPToolsRef):
                self._mcp_source(entry, path)
                continue
            ref = ToolRef(ref=entry) if isinstance(entry, str) else entry
            if not self.allowlist.allows(ref.ref):
                raise self.fail(
                    f"tool {ref.ref!r} is not on the tool allowlist ({', '.join(self.allowlist.patterns)}); "
                    f"if you trust it, allow it with --allow-tool '{ref.ref}' (CLI) or allow_tools=[...]",
                    path,
                )
            try:
                tool = resolve_tool(
                    ref.ref,
                    name=ref.name,
                    timeout=ref.timeout,
                    named_exactly=self.allowlist.names_exactly(ref.ref),
                )
            except ValueError as exc:
                raise self.fail(f"tool {ref.ref!r}: {exc}", path) from None
            if tool.name in self.registry:
                raise self.fail(
                    f"two tools are named {tool.name!r}; give one another name with {{ref: ..., name: ...}}",
                    path,
                )
            self.registry.register(tool)

    def _mcp_source(self, entry: MCPToolsRef, path: Path) -> None:
        from agentflow.mcp import MCPAllowlist

        if entry.mcp in self.mcp_sources:
            raise self.fail(f"MCP source {entry.mcp!r} is listed twice; list each source once", path)
        clash = [n for n in self.registry.names() if n.startswith(entry.mcp + ".")]
        if clash:
            raise self.fail(
                f"MCP source {entry.mcp!r} would share the prefix '{entry.mcp}.' with tools {clash}; rename it",
                path,
            )
        base_dir = os.path.dirname(os.path.abspath(self.doc.file)) if self.doc.file else None
        try:
            source = MCPAllowlist(self.allow_mcp).resolve(
                entry.mcp,
                command=entry.command,
                url=entry.url,
                tools=entry.tools,
                timeout=entry.timeout,
                cwd=base_dir,
            )
        except ConfigError as exc:
            raise self.fail(exc.message, path) from None
        self.mcp_sources[entry.mcp] = source

    def _schemas(self, plan: Plan) -> None:
        for name, spec in plan.inputs.items():
            self._json_schema(spec, ("inputs", name))
            if "default" in spec.model_fields_set:
                problems = JsonSchemaValidator(spec.to_json_schema()).errors(spec.default)
                if problems:
                    raise self.fail(
                        f"the default of input {name!r} does not match its schema: {'; '.join(problems)}",
                        ("inputs", name, "default"),
                    )
        for name, out in plan.outputs.items():
            self._json_schema(out, ("outputs", name))

    def _json_schema(self, spec: SchemaSpec, path: Path) -> None:
        for pattern, here in _patterns_in(spec.to_json_schema(), path):
            try:
                safe_regex_search(pattern, "")  # compiles it: a pattern that needs backtracking is refused
            except ConfigError as exc:
                raise self.fail(exc.message, here) from None
        try:
            JsonSchemaValidator(spec.to_json_schema(), where=_human_path(path))
        except ConfigError as exc:
            raise self.fail(exc.message, path) from None

    # step ids --------------------------------------------------------------------------------------

    def _collect_ids(self, steps: Sequence[Step], path: Path) -> None:
        for i, step in enumerate(steps):
            here = (*path, i)
            if step.id in self.ids:
                line, column = self.doc.where((*self.ids[step.id], "id"))
                first = f" (first at line {line}, column {column})" if line is not None else ""
                raise self.fail(
                    f"duplicate step id {step.id!r}{first}; step ids must be unique", (*here, "id")
                )
            self.ids[step.id] = here
            for key, children in children_of(step):
                self._collect_ids(children, (*here, key))

    # scopes ------------------------------------------------------------------------------------------

    def _sequence(
        self, steps: Sequence[Step], path: Path, visible: frozenset[str], names: frozenset[str]
    ) -> set[str]:
        produced: set[str] = set()
        for i, step in enumerate(steps):
            if step.needs:
                raise self.fail(
                    f"step {step.id!r} has 'needs', which only orders siblings inside a parallel block; "
                    "in a list, steps already run in order: remove 'needs'",
                    (*path, i, "needs"),
                )
            made, _ = self._step(step, (*path, i), visible | produced, names)
            produced |= made
        return produced

    def _step(
        self, step: Step, path: Path, visible: frozenset[str], names: frozenset[str]
    ) -> tuple[set[str], set[str]]:
        """Check one step; return (ids whose results exist after it, step ids it references)."""
        refs: set[str] = set()
        produced: set[str] = {step.id}
        plan = self.plan
        assert plan is not None
        if isinstance(step, LLMStep):
            refs |= self._template(step.prompt, (*path, "prompt"), visible, names)
            if step.system is not None:
                refs |= self._template(step.system, (*path, "system"), visible, names)
            if step.agent is not None and step.agent not in plan.agents:
                raise self.fail(self._unknown("agent", step.agent, plan.agents), (*path, "agent"))
            if step.output is not None:
                self._json_schema(step.output, (*path, "output"))
        elif isinstance(step, ToolStep):
            refs |= self._tool_step(step, path, visible, names)
        elif isinstance(step, SequenceStep):
            produced |= self._sequence(step.steps, (*path, "steps"), visible, names)
            refs |= referenced_steps(step)
        elif isinstance(step, ParallelStep):
            produced |= self._parallel(step, path, visible, names)
            refs |= referenced_steps(step)
        elif isinstance(step, MapStep):
            refs |= self._template(step.map, (*path, "map"), visible, names)
            if step.as_ in ("inputs", "steps", "loop"):
                raise self.fail(f"'as: {step.as_}' hides a built-in name; choose another name", (*path, "as"))
            self._sequence(step.do, (*path, "do"), visible, names | {step.as_})
            refs |= referenced_steps(step)
        elif isinstance(step, BranchStep):
            refs |= self._condition(step.branch, (*path, "branch"), visible, names)
            self._sequence(step.then, (*path, "then"), visible, names)
            self._sequence(step.else_, (*path, "else"), visible, names)
            refs |= referenced_steps(step)
        elif isinstance(step, LoopStep):
            body = self._sequence(step.do, (*path, "do"), visible, names | {"loop"})
            produced |= body
            refs |= self._condition(
                step.loop.until, (*path, "loop", "until"), visible | body, names | {"loop"}
            )
            refs |= referenced_steps(step)
        else:
            typing.assert_never(step)
        return produced, refs

    def _parallel(
        self, step: ParallelStep, path: Path, visible: frozenset[str], names: frozenset[str]
    ) -> set[str]:
        children = step.parallel
        sibling_made: dict[str, set[str]] = {}
        for child in children:
            made: set[str] = {child.id}
            for _, grand in children_of(child):
                made |= {s.id for s in walk_steps(grand)}
            sibling_made[child.id] = made
        all_made = set().union(*sibling_made.values())
        owner = {sid: cid for cid, ids in sibling_made.items() for sid in ids}
        waits: dict[str, set[str]] = {}  # child -> the siblings it waits for
        produced: set[str] = set()
        for i, child in enumerate(children):
            here = (*path, "parallel", i)
            waits[child.id] = set()
            for j, need in enumerate(child.needs):
                if need not in sibling_made or need == child.id:
                    siblings = sorted(s for s in sibling_made if s != child.id)
                    raise self.fail(
                        f"step {child.id!r} needs {need!r}, which is not a sibling in parallel block "
                        f"{step.id!r}; siblings: {', '.join(siblings) or 'none'}",
                        (*here, "needs", j),
                    )
                waits[child.id].add(need)
            own = sibling_made[child.id]
            made, refs = self._step(child, here, visible | (all_made - own), names)
            produced |= made
            waits[child.id] |= {owner[ref] for ref in refs if ref in owner and owner[ref] != child.id}
        try:
            graphlib.TopologicalSorter(waits).prepare()
        except graphlib.CycleError as exc:
            cycle: list[str] = exc.args[1][:-1]  # in run order, the first node repeated at the end
            declared = [c.id for c in children]
            index = min(declared.index(c) for c in cycle)  # point at the cycle's first child in the file
            start = cycle.index(declared[index])
            order = [*cycle[start:], *cycle[:start], declared[index]]
            raise self.fail(
                f"steps {' -> '.join(order)} in parallel block {step.id!r} wait for each other (a cycle); "
                "remove one of these references or move one step after the block",
                (*path, "parallel", index),
            ) from None
        return produced

    def _tool_step(
        self, step: ToolStep, path: Path, visible: frozenset[str], names: frozenset[str]
    ) -> set[str]:
        source = self.mcp_sources.get(step.tool.split(".", 1)[0])
        if source is not None and step.tool not in self.registry:
            # An MCP tool: its schema is known once the run connects (LoadedPlan.with_tools checks it then).
            remote = step.tool.split(".", 1)[1] if "." in step.tool else ""
            if source.tools is not None and remote not in source.tools:
                raise self.fail(
                    f"tool {step.tool!r} is not among the tools this plan takes from MCP source "
                    f"{source.name!r}: {', '.join(source.tools)}; add {remote!r} to its 'tools:'",
                    (*path, "tool"),
                )
            return self._tool_args(step, path, visible, names)[0]
        if step.tool not in self.registry:
            raise self.fail(
                self._unknown("tool", step.tool, self.registry.names())
                + "; list it under 'tools:' as 'module:attr' (or its MCP server as {mcp: NAME})",
                (*path, "tool"),
            )
        refs, pending = self._tool_args(step, path, visible, names)
        tool: Tool = self.registry.get(step.tool)
        try:
            tool.check(step.args, pending=pending)
        except ToolError as exc:
            raise self.fail(f"step {step.id!r}: {exc.message}", (*path, "args")) from None
        return refs

    def _tool_args(
        self, step: ToolStep, path: Path, visible: frozenset[str], names: frozenset[str]
    ) -> tuple[set[str], set[str]]:
        """The step ids a tool step's arguments reference, and the arguments that hold templates."""
        refs: set[str] = set()
        pending: set[str] = set()
        for name, value in step.args.items():
            here = (*path, "args", name)
            try:
                found = template_refs(value)
            except TemplateSyntaxError as exc:
                raise self.fail(f"argument {name!r}: bad template: {exc}", here) from None
            for _, template in found:
                refs |= self._check_refs(template, here, visible, names)
            if found:
                pending.add(name)
        return refs, pending

    def _condition(
        self, cond: Condition, path: Path, visible: frozenset[str], names: frozenset[str]
    ) -> set[str]:
        return self._template(cond.value, (*path, "value"), visible, names)

    def _template(self, text: str, path: Path, visible: frozenset[str], names: frozenset[str]) -> set[str]:
        try:
            template = parse_template(text)
        except TemplateSyntaxError as exc:
            raise self.fail(f"bad template at character {exc.offset + 1}: {exc}", path) from None
        return self._check_refs(template, path, visible, names)

    def _check_refs(
        self, template: Template, path: Path, visible: frozenset[str], names: frozenset[str]
    ) -> set[str]:
        plan = self.plan
        assert plan is not None
        used: set[str] = set()
        for ref in template.refs:
            if ref.root == "inputs":
                if ref.parts and str(ref.parts[0]) not in plan.inputs:
                    raise self.fail(
                        f"template {ref}: {self._unknown('input', str(ref.parts[0]), plan.inputs)}; "
                        "declare it under 'inputs:'",
                        path,
                    )
            elif ref.root == "steps":
                if not ref.parts:
                    raise self.fail(f"template {ref} needs a step id, e.g. {{{{steps.<id>}}}}", path)
                target = str(ref.parts[0])
                if target not in self.ids:
                    raise self.fail(f"template {ref}: {self._unknown('step', target, self.ids)}", path)
                defined = self.ids[target]
                if path[: len(defined)] == defined:
                    raise self.fail(
                        f"template {ref}: step {target!r} is this step or encloses it, so its result does not "
                        "exist yet; refer to an earlier step instead",
                        path,
                    )
                if target not in visible:
                    raise self.fail(
                        f"template {ref}: step {target!r} has not run at this point (it is defined at "
                        f"{_human_path(self.ids[target])}, later or inside a map/branch whose results are not "
                        "visible here); move it before this step, or put both in a parallel block",
                        path,
                    )
                used.add(target)
            elif ref.root not in names:
                known = ["inputs", "steps", *sorted(names)]
                raise self.fail(
                    f"template {ref}: unknown name {ref.root!r}; templates start with one of {', '.join(known)}",
                    path,
                )
        return used

    @staticmethod
    def _unknown(what: str, name: str, known: Iterable[str]) -> str:
        names = sorted(known)
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown {what} {name!r}; {hint}known {what}s: {', '.join(names) or 'none'}"


def walk_steps(steps: Sequence[Step]) -> Iterable[Step]:
    """Every step in ``steps`` and below, depth first, in document order."""
    for step in steps:
        yield step
        for _, children in children_of(step):
            yield from walk_steps(children)


def referenced_steps(step: Step) -> set[str]:
    """Ids of the steps whose results templates anywhere inside ``step`` use."""
    found: set[str] = set()
    for text in _strings_of(step):
        if "{{" not in text:
            continue
        try:
            template = parse_template(text)
        except TemplateSyntaxError:
            continue
        found |= {str(r.parts[0]) for r in template.refs if r.root == "steps" and r.parts}
    return found


def _strings_of(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _strings_of(getattr(value, name))
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings_of(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings_of(v)

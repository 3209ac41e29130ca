"""Tools: a name, a JSON Schema for the arguments, and (usually) a Python function that does the work.

A :class:`Tool` is built either from a typed Python function (``@tool`` / :meth:`Tool.from_function`: the argument
schema comes from the signature through pydantic, descriptions from the Google-style docstring) or from a
JSON-Schema function spec (:meth:`Tool.from_spec`: OpenAI ``{"type": "function", "function": {...}}`` or BFCL /
Gorilla style, whose dialect is normalized by :func:`~agentflow.executors.normalize_schema`). Either way the tool
validates the arguments of each call and raises :class:`~agentflow.errors.ToolError` with every violation named.

:meth:`Tool.invoke` is where the per-tool policy lives: argument validation, the concurrency limit, the
per-attempt timeout (:class:`~agentflow.errors.StepTimeout`) and retries with exponential backoff. Sync functions
run in a worker thread (``anyio.to_thread.run_sync``) so they never block the event loop.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import re
import typing
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NotRequired, Required, overload

import anyio
import anyio.lowlevel
from pydantic import ConfigDict, Field, JsonValue, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from agentflow.dsl import Backoff, Retrier
from agentflow.errors import ConfigError, StepTimeout, ToolError

from ._budget import current_step_budget
from ._docstring import parse_docstring
from ._schema import JsonSchemaValidator, normalize_schema

__all__ = ["Tool", "ToolFunction", "tool"]

ToolFunction = Callable[..., object]
"""A tool implementation: a sync or async callable taking the tool's arguments by name."""

TOOL_NAME = re.compile(r"[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*")
"""Tool names: identifiers joined by dots (``search``, ``math.factorial``, ``spotify.play``)."""


def _check_name(name: str) -> str:
    if not isinstance(name, str) or TOOL_NAME.fullmatch(name) is None:
        raise ConfigError(
            f"tool name {name!r} is invalid; use identifiers joined by dots, e.g. 'search' or 'math.factorial'"
        )
    return name


def _preview(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Validator(ABC):
    """How one tool checks its arguments (pydantic for Python functions, JSON Schema for specs)."""

    @abstractmethod
    def validate(self, arguments: Mapping[str, object]) -> tuple[dict[str, object], list[str]]:
        """The validated arguments and the problems found (empty when valid)."""

    @abstractmethod
    def check_partial(self, arguments: Mapping[str, object], pending: Collection[str]) -> list[str]:
        """Problems with the arguments known now, skipping ``pending`` ones (they hold references)."""


class _PydanticValidator(_Validator):
    def __init__(
        self, adapter: TypeAdapter[Any], fields: Mapping[str, TypeAdapter[Any]], required: frozenset[str]
    ):
        self._adapter = adapter
        self._fields = dict(fields)
        self._required = required

    def validate(self, arguments: Mapping[str, object]) -> tuple[dict[str, object], list[str]]:
        try:
            return dict(self._adapter.validate_python(dict(arguments))), []
        except ValidationError as exc:
            return {}, _pydantic_lines(exc)

    def check_partial(self, arguments: Mapping[str, object], pending: Collection[str]) -> list[str]:
        lines: list[str] = []
        for name, value in arguments.items():
            if name in pending:
                continue
            field_adapter = self._fields.get(name)
            if field_adapter is None:
                lines.append(f"argument {name!r}: unexpected argument")
                continue
            try:
                field_adapter.validate_python(value)
            except ValidationError as exc:
                lines.extend(_pydantic_lines(exc, prefix=name))
        lines.extend(
            f"argument {name!r}: missing required argument"
            for name in sorted(self._required)
            if name not in arguments and name not in pending
        )
        return lines


def _pydantic_lines(exc: ValidationError, prefix: str | None = None) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in ((prefix,) if prefix else ()) + tuple(err["loc"]))
        if err["type"] == "missing":
            lines.append(f"argument {loc!r}: missing required argument")
        elif err["type"] == "extra_forbidden":
            lines.append(f"argument {loc!r}: unexpected argument")
        else:
            lines.append(f"argument {loc!r}: {err['msg']} (got {_preview(err['input'])})")
    return lines


class _SchemaValidator(_Validator):
    def __init__(self, schema: Mapping[str, JsonValue], where: str):
        self._schema = dict(schema)
        self._where = where
        self._full = JsonSchemaValidator(self._schema, where=where)

    def validate(self, arguments: Mapping[str, object]) -> tuple[dict[str, object], list[str]]:
        lines = self._full.errors(dict(arguments))
        return (dict(arguments), []) if not lines else ({}, lines)

    def check_partial(self, arguments: Mapping[str, object], pending: Collection[str]) -> list[str]:
        if not pending:
            return self._full.errors(dict(arguments))
        schema = dict(self._schema)
        required = schema.get("required")
        if isinstance(required, list):
            schema["required"] = [n for n in required if n not in pending]
        known = {k: v for k, v in arguments.items() if k not in pending}
        return JsonSchemaValidator(schema, where=self._where).errors(known)


class Tool:
    """A callable tool with a validated argument schema and its own timeout, concurrency limit and retries.

    Build one with :meth:`from_function` (or the :func:`tool` decorator) or :meth:`from_spec`; the constructor is
    internal. Tools are immutable; :meth:`with_options` returns a changed copy.
    """

    def __init__(
        self,
        *,
        name: str,
        description: str,
        parameters: Mapping[str, JsonValue],
        fn: ToolFunction | None,
        validator: _Validator,
        positional_only: Sequence[str] = (),
        timeout: float | None = None,
        max_concurrency: int | None = None,
        retries: int = 0,
        retry_backoff: float = 0.0,
        returns: object = None,
    ) -> None:
        self._name = _check_name(name)
        if timeout is not None and not timeout > 0:
            raise ConfigError(
                f"tool {name!r}: timeout={timeout!r} must be a positive number of seconds or None"
            )
        if max_concurrency is not None and (not isinstance(max_concurrency, int) or max_concurrency < 1):
            raise ConfigError(
                f"tool {name!r}: max_concurrency={max_concurrency!r} must be an integer >= 1 or None"
            )
        if not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"tool {name!r}: retries={retries!r} must be an integer >= 0")
        if retry_backoff < 0:
            raise ConfigError(f"tool {name!r}: retry_backoff={retry_backoff!r} must be >= 0 seconds")
        self._description = description
        self._parameters = dict(parameters)
        self._fn = fn
        self._validator = validator
        self._positional_only = tuple(positional_only)
        self._timeout = timeout
        self._max_concurrency = max_concurrency
        self._retries = retries
        self._retry_backoff = retry_backoff
        self._is_async = fn is not None and _is_async_callable(fn)
        self._returns = returns
        # Reads results back from JSON (a journal) as ``returns``: built on first use and kept with the tool;
        # ``_typed_results`` turns off when there is no type to read as (or pydantic cannot read it).
        self._typed_results = returns is not None and returns is not Any
        self._result_adapter: TypeAdapter[Any] | None = None
        # One limiter per running event loop (anyio limiters belong to one loop); lives as long as the loop.
        self._limiters: weakref.WeakKeyDictionary[object, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()
        props = self._parameters.get("properties")
        self._param_names: tuple[str, ...] = tuple(props) if isinstance(props, Mapping) else ()
        req = self._parameters.get("required")
        self._required: frozenset[str] = (
            frozenset(str(r) for r in req) if isinstance(req, list) else frozenset()
        )

    # -- construction -------------------------------------------------------------------------------------------

    @classmethod
    def from_function(
        cls,
        fn: ToolFunction,
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        retries: int = 0,
        retry_backoff: float = 0.0,
    ) -> Tool:
        """Build a tool from a typed Python function (sync or async).

        Args:
            fn: The implementation. Every parameter must be a named parameter (no ``*args`` / ``**kwargs``);
                annotations become the argument schema, defaults make arguments optional.
            name: The tool's name (default: ``fn.__name__``); dots are allowed (``"math.factorial"``).
            description: What the tool does (default: the docstring's summary).
            timeout: Seconds per attempt, or None for no limit.
            max_concurrency: At most this many calls of this tool at once per event loop, or None.
            retries: Extra attempts after a failure or timeout (validation errors are never retried).
            retry_backoff: Seconds before the first retry, doubled for each further one.

        Raises:
            ConfigError: The function has ``*args``/``**kwargs``, an unresolvable annotation, or a bad option.
        """
        tool_name = name if name is not None else getattr(fn, "__name__", None)
        if tool_name is None:
            raise ConfigError(f"cannot name tool for {fn!r}; pass name=")
        _check_name(tool_name)
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"tool {tool_name!r}: cannot read the signature of {fn!r}: {exc}") from exc
        target = fn.func if isinstance(fn, functools.partial) else fn
        try:
            hints = typing.get_type_hints(target, include_extras=True)
        except Exception as exc:
            raise ConfigError(
                f"tool {tool_name!r}: cannot resolve the annotations of {fn!r} ({exc}); "
                "import the annotated types at module level"
            ) from exc
        doc = parse_docstring(inspect.getdoc(target))
        fields: dict[str, object] = {}
        adapters: dict[str, TypeAdapter[Any]] = {}
        defaults: dict[str, object] = {}
        required: set[str] = set()
        positional_only: list[str] = []
        for param in signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ConfigError(
                    f"tool {tool_name!r}: parameter {param.name!r} is *args/**kwargs; declare each argument by name"
                )
            if param.kind is param.POSITIONAL_ONLY:
                positional_only.append(param.name)
            annotation = hints.get(param.name, Any)
            desc = doc.params.get(param.name)
            annotated: Any = typing.Annotated[annotation, Field(description=desc)] if desc else annotation
            if param.default is param.empty:
                fields[param.name] = Required[annotated]
                required.add(param.name)
            else:
                fields[param.name] = NotRequired[annotated]
                defaults[param.name] = param.default
            adapters[param.name] = TypeAdapter(annotated)
        try:
            typed_dict = TypedDict(f"{tool_name.replace('.', '_')}_args", fields, total=False)  # type: ignore[misc]
            adapter: TypeAdapter[Any] = TypeAdapter(with_config(ConfigDict(extra="forbid"))(typed_dict))
            schema: dict[str, JsonValue] = adapter.json_schema()
        except Exception as exc:
            raise ConfigError(f"tool {tool_name!r}: cannot build an argument schema: {exc}") from exc
        schema.pop("title", None)
        props = schema.get("properties")
        if isinstance(props, dict):
            for pname, default in defaults.items():
                prop = props.get(pname)
                if isinstance(prop, dict) and _is_json(default):
                    prop["default"] = typing.cast(JsonValue, default)
        return cls(
            name=tool_name,
            description=description if description is not None else doc.summary,
            parameters=schema,
            fn=fn,
            validator=_PydanticValidator(adapter, adapters, frozenset(required)),
            positional_only=positional_only,
            timeout=timeout,
            max_concurrency=max_concurrency,
            retries=retries,
            retry_backoff=retry_backoff,
            returns=hints.get("return"),
        )

    @classmethod
    def from_spec(
        cls,
        spec: Mapping[str, JsonValue],
        fn: ToolFunction | None = None,
        *,
        strict: bool = True,
        nullable_optional: bool = True,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        retries: int = 0,
        retry_backoff: float = 0.0,
    ) -> Tool:
        """Build a tool from a JSON-Schema function spec.

        Accepts the OpenAI form ``{"type": "function", "function": {"name", "description", "parameters"}}`` and
        the bare form ``{"name", "description", "parameters"}`` used by BFCL/Gorilla, whose non-standard types
        (``dict``, ``float``, ``tuple``, ``any``) and ``optional`` markers are normalized to JSON Schema.

        Args:
            spec: The function spec.
            fn: The implementation, called with the validated arguments by keyword; None for a schema-only tool
                (validating calls works, invoking raises :class:`ToolError`).
            strict: Reject arguments the spec does not declare (adds ``additionalProperties: false`` to the
                top-level object unless the spec says otherwise).
            nullable_optional: Let optional arguments also be ``null``, meaning "not given" (the OpenAI
                strict-mode convention; BFCL gold calls pass ``None`` for Python-style ``=None`` defaults).
            timeout: Seconds per attempt, or None.
            max_concurrency: At most this many calls at once per event loop, or None.
            retries: Extra attempts after a failure or timeout.
            retry_backoff: Seconds before the first retry, doubled for each further one.

        Raises:
            ConfigError: The spec lacks a name, has an invalid name, or its parameters are not a valid schema.
        """
        body: Mapping[str, JsonValue] = spec
        inner = spec.get("function")
        if spec.get("type") == "function" and isinstance(inner, Mapping):
            body = inner
        name = body.get("name")
        if not isinstance(name, str):
            raise ConfigError(f"function spec has no string 'name': {_preview(dict(spec), 200)}")
        _check_name(name)
        raw_params = body.get("parameters")
        if raw_params is None:
            raw_params = {"type": "object", "properties": {}}
        if not isinstance(raw_params, Mapping):
            raise ConfigError(
                f"tool {name!r}: 'parameters' must be an object schema, got {_preview(raw_params)}"
            )
        schema = normalize_schema(raw_params, where=f"{name}.parameters")
        if "type" not in schema:
            schema["type"] = "object"
        if nullable_optional:
            _allow_null_for_optional(schema)
        if strict and "additionalProperties" not in schema and schema.get("type") == "object":
            schema["additionalProperties"] = False
        description = body.get("description")
        return cls(
            name=name,
            description=description if isinstance(description, str) else "",
            parameters=schema,
            fn=fn,
            validator=_SchemaValidator(schema, f"{name}.parameters"),
            timeout=timeout,
            max_concurrency=max_concurrency,
            retries=retries,
            retry_backoff=retry_backoff,
        )

    def with_options(
        self,
        *,
        fn: ToolFunction | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        retries: int | None = None,
        retry_backoff: float | None = None,
    ) -> Tool:
        """Return a copy with the given implementation or policy replaced (None keeps the current value)."""
        return Tool(
            name=self._name,
            description=self._description,
            parameters=self._parameters,
            fn=fn if fn is not None else self._fn,
            validator=self._validator,
            positional_only=self._positional_only,
            timeout=timeout if timeout is not None else self._timeout,
            max_concurrency=max_concurrency if max_concurrency is not None else self._max_concurrency,
            retries=retries if retries is not None else self._retries,
            retry_backoff=retry_backoff if retry_backoff is not None else self._retry_backoff,
            returns=self._returns,
        )

    # -- description ----------------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The tool's name, as plans call it."""
        return self._name

    @property
    def description(self) -> str:
        """What the tool does, for prompts."""
        return self._description

    @property
    def parameters(self) -> dict[str, JsonValue]:
        """The JSON Schema (draft 2020-12) of the arguments object (a copy)."""
        return json.loads(json.dumps(self._parameters))  # type: ignore[no-any-return]

    @property
    def param_names(self) -> tuple[str, ...]:
        """Declared argument names in declaration order (positional arguments bind in this order)."""
        return self._param_names

    @property
    def required(self) -> frozenset[str]:
        """Names of the arguments a call must give."""
        return self._required

    @property
    def timeout(self) -> float | None:
        """Seconds per attempt, or None."""
        return self._timeout

    @property
    def max_concurrency(self) -> int | None:
        """Concurrent calls allowed per event loop, or None for no limit."""
        return self._max_concurrency

    @property
    def retries(self) -> int:
        """Extra attempts after a failure or timeout."""
        return self._retries

    @property
    def fn(self) -> ToolFunction | None:
        """The implementation (``None`` for a spec-only tool)."""
        return self._fn

    @property
    def returns(self) -> object:
        """The declared return type (a function tool's return annotation), or ``None`` when it declares none."""
        return self._returns

    def typed_result(self, value: object) -> object:
        """A result read back from JSON (a journal) as the declared return type: a model returned by the tool
        comes back as that model, not as its dict. ``value`` is returned unchanged when the tool declares no
        return type or ``value`` does not fit it (the tool returned something else than it declared)."""
        if not self._typed_results:
            return value
        adapter = self._result_adapter
        if adapter is None:
            form: Any = self._returns
            try:
                adapter = self._result_adapter = TypeAdapter(form)
            except Exception:  # a return annotation pydantic cannot build a schema for
                self._typed_results = False
                return value
        try:
            return adapter.validate_python(value)
        except ValidationError:
            return value

    @property
    def has_implementation(self) -> bool:
        """Whether :meth:`invoke` can run the tool (spec-only tools cannot)."""
        return self._fn is not None

    def schema(self) -> dict[str, JsonValue]:
        """Return the OpenAI-style function spec ``{"type": "function", "function": {...}}``."""
        return {
            "type": "function",
            "function": {"name": self._name, "description": self._description, "parameters": self.parameters},
        }

    def signature_hint(self) -> str:
        """A one-line summary of the arguments, used in error messages: ``search(query: string, k?: integer)``."""
        props = self._parameters.get("properties")
        parts = []
        for pname in self._param_names:
            prop = props.get(pname) if isinstance(props, Mapping) else None
            kind = prop.get("type", "any") if isinstance(prop, Mapping) else "any"
            if isinstance(kind, list):
                kind = "|".join(str(k) for k in kind)
            parts.append(f"{pname}{'' if pname in self._required else '?'}: {kind}")
        return f"{self._name}({', '.join(parts)})"

    def __repr__(self) -> str:
        return f"Tool({self.signature_hint()})"

    # -- arguments ------------------------------------------------------------------------------------------------

    def bind(self, args: Sequence[JsonValue], kwargs: Mapping[str, JsonValue]) -> dict[str, JsonValue]:
        """Map positional arguments onto parameter names (declaration order) and merge the keyword arguments.

        Raises:
            ToolError: Too many positional arguments, or one argument given both positionally and by name.
        """
        if len(args) > len(self._param_names):
            raise ToolError(
                self._name,
                f"takes at most {len(self._param_names)} positional arguments but {len(args)} were given; "
                f"expected {self.signature_hint()}",
            )
        bound: dict[str, JsonValue] = dict(zip(self._param_names, args, strict=False))
        for key, value in kwargs.items():
            if key in bound:
                raise ToolError(
                    self._name,
                    f"argument {key!r} given both by position and by name; expected {self.signature_hint()}",
                )
            bound[key] = value
        return bound

    def check(self, arguments: Mapping[str, object], *, pending: Collection[str] = ()) -> None:
        """Check a call statically, skipping arguments whose value is not known yet.

        Args:
            arguments: Arguments by name.
            pending: Names whose values hold references to results not known yet; they are not type-checked and
                count as present.

        Raises:
            ToolError: Unknown, missing or ill-typed arguments (every problem listed).
        """
        lines = self._validator.check_partial(arguments, pending)
        if lines:
            raise self._invalid(arguments, lines)

    def validate(self, arguments: Mapping[str, object]) -> dict[str, object]:
        """Validate a complete call and return the arguments as the implementation receives them.

        Raises:
            ToolError: Unknown, missing or ill-typed arguments (every problem listed).
        """
        values, lines = self._validator.validate(arguments)
        if lines:
            raise self._invalid(arguments, lines)
        return values

    def _invalid(self, arguments: Mapping[str, object], lines: list[str]) -> ToolError:
        return ToolError(
            self._name,
            f"invalid arguments {_preview(dict(arguments), 200)}: {'; '.join(lines)}; "
            f"call it as {self.signature_hint()}",
        )

    # -- calling --------------------------------------------------------------------------------------------------

    async def invoke(self, arguments: Mapping[str, object]) -> object:
        """Validate ``arguments`` and run the tool under its concurrency limit, timeout and retry policy.

        Returns:
            Whatever the implementation returned.

        Raises:
            ToolError: Invalid arguments, no implementation, or the implementation raised (after all retries;
                the original exception is the ``__cause__``).
            StepTimeout: The last attempt ran past the tool's timeout.
            StepBudgetExceededError: The run's step budget (``max_steps``) is used up; the tool was not called.
        """
        budget = current_step_budget()
        if budget is not None:
            budget.charge(f"a call of tool {self._name!r}")
        values = self.validate(arguments)
        if self._fn is None:
            raise ToolError(
                self._name, "has no implementation; pass fn= to Tool.from_spec or Tool.with_options"
            )
        limiter = self._limiter()

        async def attempt(_: int) -> object:
            if limiter is None:
                return await self._attempt(values)
            async with limiter:
                return await self._attempt(values)

        retrier = Retrier(
            attempts=self._retries + 1,
            # retry_backoff seconds before the first retry, doubled for each further one.
            backoff=Backoff(initial=self._retry_backoff, factor=2.0, max=math.inf, jitter=0.0),
            retryable=lambda error: isinstance(error, (ToolError, StepTimeout)),
        )
        return await retrier.call(attempt)

    async def _attempt(self, values: dict[str, object]) -> object:
        result: object = None
        with anyio.move_on_after(self._timeout) as scope:
            try:
                result = await self._call(values)
            except ToolError:
                raise
            except BaseException as exc:
                # SystemExit (argparse on bad input, sys.exit), KeyboardInterrupt and other BaseExceptions the
                # tool's own code raised are its failure, not the end of the run; only cancellation passes.
                if isinstance(exc, GeneratorExit) or _is_cancellation(exc):
                    raise
                raise ToolError(self._name, f"raised {type(exc).__name__}: {exc}") from exc
        if scope.cancelled_caught:
            raise StepTimeout(f"tool {self._name}", self._timeout or 0.0)
        return result

    async def _call(self, values: dict[str, object]) -> object:
        fn = self._fn
        assert fn is not None
        values = dict(values)
        positional = [values.pop(n) for n in self._positional_only if n in values]
        if self._is_async:
            result = fn(*positional, **values)
        else:
            result = await anyio.to_thread.run_sync(
                functools.partial(fn, *positional, **values), abandon_on_cancel=True
            )
        if inspect.isawaitable(result):
            result = await result
        return result

    def _limiter(self) -> anyio.CapacityLimiter | None:
        if self._max_concurrency is None:
            return None
        token = anyio.lowlevel.current_token()
        key = getattr(token, "native_token", token)
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = anyio.CapacityLimiter(self._max_concurrency)
            self._limiters[key] = limiter
        return limiter


def _is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is (or a group holds) the event loop's cancellation, which must propagate."""
    cancelled = anyio.get_cancelled_exc_class()
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(cancelled) is not None
    return isinstance(exc, cancelled)


def _allow_null_for_optional(schema: dict[str, JsonValue]) -> None:
    props = schema.get("properties")
    required = schema.get("required")
    if not isinstance(props, dict):
        return
    for name, prop in props.items():
        if (isinstance(required, list) and name in required) or not isinstance(prop, dict):
            continue
        kind = prop.get("type")
        if isinstance(kind, str) and kind != "null":
            prop["type"] = [kind, "null"]
        elif isinstance(kind, list) and "null" not in kind:
            prop["type"] = [*kind, "null"]
        enum = prop.get("enum")
        if isinstance(enum, list) and None not in enum:
            prop["enum"] = [*enum, None]


def _is_async_callable(fn: object) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def _is_json(value: object) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


@overload
def tool(fn: ToolFunction, /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    retries: int = 0,
    retry_backoff: float = 0.0,
) -> Callable[[ToolFunction], Tool]: ...


def tool(
    fn: ToolFunction | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    retries: int = 0,
    retry_backoff: float = 0.0,
) -> Tool | Callable[[ToolFunction], Tool]:
    """Turn a typed function into a :class:`Tool`; usable bare (``@tool``) or with options (``@tool(timeout=5)``).

    See :meth:`Tool.from_function` for the arguments.
    """

    def wrap(f: ToolFunction) -> Tool:
        return Tool.from_function(
            f,
            name=name,
            description=description,
            timeout=timeout,
            max_concurrency=max_concurrency,
            retries=retries,
            retry_backoff=retry_backoff,
        )

    return wrap(fn) if fn is not None else wrap

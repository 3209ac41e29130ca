"""Errors as JSON records, so that values holding them (a tool call's failed result) can be journaled.

An ``AgentflowError`` is stored as its class's name, its message, its location and the attributes its class
declares (class annotations, or ``_attribute_types``)::

    {"type": "ToolError", "message": "tool 'add': raised ValueError: ...", "where": null,
     "attrs": {"tool": "add"}, "errors": {}}

Attributes that hold exceptions (``StepError.cause``, ``RaceLostError.errors``) go under ``errors`` as
records of their own. A record is rebuilt as the class it names, looked up among the classes of
``agentflow.errors`` only (never imported by a name read from the record), and only if that class is the
type the reader declared or a subclass of it. An error of a class outside ``agentflow.errors`` (a user's
subclass) is stored as its nearest ``agentflow.errors`` ancestor. A nested exception that is not an
``AgentflowError`` is rebuilt as the built-in exception class of that name, or as a ``RuntimeError`` naming
its type. Records come from outside the process (a journal file): their nesting is bounded and every field is
checked, so a bad record is a ``ValueError`` (a pydantic ``ValidationError`` where pydantic reads it).
"""

from __future__ import annotations

import builtins
import typing
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import core_schema

from ._errors import AgentflowError

__all__ = ["error_from_record", "error_record", "error_schema"]

MAX_DEPTH = 8
"""Deepest nesting of error records (an error's cause's cause...) that is stored and read back."""

_HOME_MODULES = frozenset({"agentflow.dsl._errors", "agentflow.errors"})
"""Where the classes a record may name are defined (what ``agentflow.errors`` exports)."""

_OWN_FIELDS = frozenset({"message", "where"})


def _known_classes() -> dict[str, type[AgentflowError]]:
    """``agentflow.errors``' classes by name (every subclass of ``AgentflowError`` defined there)."""
    found: dict[str, type[AgentflowError]] = {"AgentflowError": AgentflowError}
    todo = [AgentflowError]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__ in _HOME_MODULES:
                found[sub.__name__] = sub
    return found


def _stored_class(error: AgentflowError) -> type[AgentflowError]:
    """The class a record of ``error`` names: its own, or its nearest ancestor from ``agentflow.errors``."""
    known = _known_classes()
    for klass in type(error).__mro__:
        if (
            isinstance(klass, type)
            and issubclass(klass, AgentflowError)
            and known.get(klass.__name__) is klass
        ):
            return klass
    return AgentflowError


_FIELDS: dict[type[AgentflowError], dict[str, object]] = {}
"""``_fields`` of each class met so far (a fixed set: the classes of ``agentflow.errors``)."""


def _fields(klass: type[AgentflowError]) -> dict[str, object]:
    """The attributes ``klass`` declares (beyond message and where), with their types."""
    found = _FIELDS.get(klass)
    if found is None:
        found = _FIELDS[klass] = {k: v for k, v in klass._attribute_types().items() if k not in _OWN_FIELDS}
    return found


def _error_kind(tp: object) -> str | None:
    """``"one"`` for an exception-typed attribute, ``"many"`` for a tuple of exceptions, else ``None``."""
    if isinstance(tp, type) and issubclass(tp, BaseException):
        return "one"
    args = typing.get_args(tp)
    if (
        typing.get_origin(tp) is tuple
        and args
        and isinstance(args[0], type)
        and issubclass(args[0], BaseException)
    ):
        return "many"
    return None


@lru_cache(maxsize=64)
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def error_record(error: BaseException, *, depth: int = 0) -> dict[str, Any]:
    """``error`` as a JSON record (see the module docstring)."""
    if not isinstance(error, AgentflowError):
        return {"type": None, "type_name": type(error).__name__, "message": str(error)}
    klass = _stored_class(error)
    attrs: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    for name, tp in _fields(klass).items():
        value = getattr(error, name, None)
        kind = _error_kind(tp)
        if kind is None:
            attrs[name] = _adapter(tp).dump_python(value, mode="json", warnings=False)
        elif depth < MAX_DEPTH and kind == "one" and isinstance(value, BaseException):
            errors[name] = error_record(value, depth=depth + 1)
        elif depth < MAX_DEPTH and kind == "many" and isinstance(value, tuple | list):
            errors[name] = [error_record(e, depth=depth + 1) for e in value if isinstance(e, BaseException)]
    return {
        "type": klass.__name__,
        "message": error.message,
        "where": error.where,
        "attrs": attrs,
        "errors": errors,
    }


def _text(record: Mapping[str, object], key: str, *, optional: bool = False) -> str | None:
    value = record.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ValueError(f"error record field {key!r} must be a string, got {value!r}")
    return value


def _foreign(record: Mapping[str, object]) -> BaseException:
    """A nested exception of a class outside agentflow: the built-in class of that name, else RuntimeError."""
    name = _text(record, "type_name")
    message = _text(record, "message")
    assert name is not None and message is not None
    klass = getattr(builtins, name, None)
    if isinstance(klass, type) and issubclass(klass, Exception):
        try:
            return klass(message)
        except Exception:
            pass
    return RuntimeError(f"{name}: {message}")


def error_from_record(
    record: object, bound: type[AgentflowError] = AgentflowError, *, depth: int = 0
) -> AgentflowError:
    """Rebuild the error a record describes, as a ``bound`` (its class or a subclass of it).

    Raises:
        ValueError: the record is malformed, names no class of ``agentflow.errors``, names one that is not a
            ``bound``, lacks a declared attribute, or nests deeper than ``MAX_DEPTH``.
    """
    if depth > MAX_DEPTH:
        raise ValueError(f"error record nests deeper than {MAX_DEPTH} levels")
    if not isinstance(record, Mapping):
        raise ValueError(f"an error record must be an object, got {type(record).__name__}")
    name = _text(record, "type")
    klass = _known_classes().get(name or "")
    if klass is None:
        raise ValueError(f"error record names {name!r}, which is not a class of agentflow.errors")
    if not issubclass(klass, bound):
        raise ValueError(f"error record names {name}, which is not a {bound.__name__}")
    message = _text(record, "message")
    assert message is not None
    attrs = record.get("attrs", {})
    errors = record.get("errors", {})
    if not isinstance(attrs, Mapping) or not isinstance(errors, Mapping):
        raise ValueError("error record fields 'attrs' and 'errors' must be objects")
    error = klass.__new__(klass)
    AgentflowError.__init__(error, message, where=_text(record, "where", optional=True))
    for field, tp in _fields(klass).items():
        kind = _error_kind(tp)
        if kind is None:
            if field not in attrs:
                raise ValueError(f"error record of {name} lacks its attribute {field!r}")
            try:
                value: object = _adapter(tp).validate_python(attrs[field])
            except ValidationError as exc:
                raise ValueError(
                    f"error record of {name} has a bad {field!r}: {exc.errors()[0]['msg']}"
                ) from None
        else:
            stored = errors.get(field)
            nested = stored if kind == "many" and isinstance(stored, list) else [stored]
            rebuilt = tuple(
                _foreign(r)
                if isinstance(r, Mapping) and r.get("type") is None
                else error_from_record(r, depth=depth + 1)
                for r in nested
                if r is not None
            )
            value = rebuilt if kind == "many" else (rebuilt[0] if rebuilt else None)
        setattr(error, field, value)
    return error


def _serialize(error: object) -> object:
    if not isinstance(error, BaseException):
        raise TypeError(f"expected an exception, got {type(error).__name__}")
    return error_record(error)


def error_schema(bound: type[AgentflowError]) -> core_schema.CoreSchema:
    """The pydantic schema of a field typed ``bound``: an instance passes as it is, a record is rebuilt, and
    both serialize as a record."""

    def rebuild(record: object) -> AgentflowError:
        return error_from_record(record, bound)

    from_record = core_schema.no_info_plain_validator_function(rebuild)
    return core_schema.json_or_python_schema(
        json_schema=from_record,
        python_schema=core_schema.union_schema([core_schema.is_instance_schema(bound), from_record]),
        serialization=core_schema.plain_serializer_function_ser_schema(_serialize),
    )

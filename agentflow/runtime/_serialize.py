"""Serialization of step results and run state for the journal, through pydantic.

A value is encoded to JSON and, before it is stored, decoded again and checked, so that a value the
journal accepted is a value a resumed run can restore: a problem is reported when the step commits,
not later when someone tries to resume. Every failure is a ``SerializationError`` whose ``path``
names the bad value from its root (``result.items[3].when``, ``state.notes['k']``).

How a value is typed:

* a declared type (``@step`` return annotation, ``named(..., result_type=...)``): encoded and decoded
  with ``TypeAdapter(result_type)``, so models, dataclasses, datetimes... come back as they were;
* no declared type: only plain JSON values (``None``, ``bool``, ``int``, ``float``, ``str``, and
  lists, tuples and string-keyed dicts of them) are accepted, and must come back equal;
* state: ``type(state)`` (a pydantic model).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from agentflow.errors import SerializationError

__all__ = [
    "decode_state",
    "decode_value",
    "encode_state",
    "encode_value",
    "find_unserializable",
    "to_json",
]

_PLAIN_KINDS: dict[type, str] = {
    type(None): "none",
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    list: "list",
    tuple: "tuple",
    dict: "dict",
}
"""Value kinds storable without a declared type (the tag says how to rebuild the outer container)."""


@lru_cache(maxsize=512)
def _adapter_cached(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def _adapter(tp: object) -> TypeAdapter[Any]:
    form: Any = tp
    try:
        return _adapter_cached(form)
    except TypeError:  # an unhashable type expression
        return TypeAdapter(form)


def _loc_path(root: str, loc: tuple[int | str, ...]) -> str:
    out = root
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _validation_error(root: str, exc: ValidationError) -> SerializationError:
    first = exc.errors()[0]
    path = _loc_path(root, tuple(first["loc"]))
    return SerializationError(
        path,
        f"the stored JSON does not decode back ({first['msg']}); make the value match its declared type "
        "or declare a type that can hold it",
    )


def find_unserializable(value: object, root: str) -> tuple[str, str] | None:
    """The path and reason of the first value under ``value`` that pydantic cannot turn into JSON.

    >>> class Opaque: ...
    >>> find_unserializable({"items": [1, Opaque()]}, "result")[0]
    "result['items'][1]"
    """
    if isinstance(value, BaseModel):
        fields = dict(type(value).model_fields)
        for name in fields:
            found = find_unserializable(getattr(value, name), f"{root}.{name}")
            if found is not None:
                return found
        for name, extra in (value.model_extra or {}).items():
            found = find_unserializable(extra, f"{root}.{name}")
            if found is not None:
                return found
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            found = find_unserializable(getattr(value, f.name), f"{root}.{f.name}")
            if found is not None:
                return found
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str | int | float | bool) and key is not None:
                return f"{root}[{key!r}]", f"dict key of type {type(key).__name__} cannot be a JSON key"
            found = find_unserializable(item, f"{root}[{key!r}]")
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple | set | frozenset):
        for i, item in enumerate(value):
            found = find_unserializable(item, f"{root}[{i}]")
            if found is not None:
                return found
        return None
    try:
        to_jsonable_python(value)
    except PydanticSerializationError as exc:
        return root, f"{type(value).__name__} is not JSON-serializable ({exc})"
    return None


def _unserializable(value: object, root: str, exc: Exception) -> SerializationError:
    found = find_unserializable(value, root)
    path, why = found if found is not None else (root, str(exc))
    return SerializationError(
        path,
        f"{why}; store a serializable form instead (a pydantic model, dataclass, or plain JSON data), "
        "or keep the object in deps rather than in results and state",
    )


def to_json(value: object, root: str) -> str:
    """Plain JSON for ``value`` (pydantic's encoders for models, datetimes...); errors name the path."""
    try:
        return json.dumps(to_jsonable_python(value), separators=(",", ":"))
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        raise _unserializable(value, root, exc) from exc


def _check_plain(value: object, back: object, root: str) -> None:
    """Raise at the first place where ``back`` (decoded without a type) differs from ``value``."""
    if isinstance(value, float) and isinstance(back, float) and math.isnan(value) and math.isnan(back):
        return
    if type(value) not in _PLAIN_KINDS:
        raise SerializationError(
            root,
            f"a {type(value).__name__} needs a declared type to be restored; annotate the step's return "
            "type (or pass named(..., result_type=...))",
        )
    if isinstance(value, list | tuple):
        assert isinstance(back, list | tuple)
        for i, (a, b) in enumerate(zip(value, back, strict=True)):
            _check_plain(a, b, f"{root}[{i}]")
        return
    if isinstance(value, dict):
        assert isinstance(back, dict)
        for key, item in value.items():
            if not isinstance(key, str):
                raise SerializationError(
                    f"{root}[{key!r}]",
                    f"a dict key of type {type(key).__name__} becomes a string in JSON; use string keys or "
                    "declare the result type",
                )
            _check_plain(item, back[key], f"{root}[{key!r}]")
        return
    if value != back:
        raise SerializationError(root, f"{value!r} comes back as {back!r}; declare the result type")


def encode_value(value: object, result_type: object, root: str = "result") -> tuple[str, str]:
    """Encode a step result. Returns ``(json_text, kind)``; ``kind`` is ``"typed"`` or a plain kind tag.

    Raises:
        SerializationError: naming the path to the bad value.
    """
    if result_type is not None and result_type is not Any:
        adapter = _adapter(result_type)
        try:
            text = adapter.dump_json(value, warnings=False).decode()
        except (PydanticSerializationError, ValueError, TypeError) as exc:
            raise _unserializable(value, root, exc) from exc
        try:
            adapter.validate_json(text)
        except ValidationError as exc:
            raise _validation_error(root, exc) from exc
        return text, "typed"
    text = to_json(value, root)
    _check_plain(value, json.loads(text), root)
    return text, _PLAIN_KINDS[type(value)]


def decode_value(text: str, kind: str, result_type: object) -> object:
    """Decode a stored step result (inverse of ``encode_value``).

    Raises:
        ValidationError: when the stored JSON does not match ``result_type`` (the code changed).
    """
    if result_type is not None and result_type is not Any:
        return _adapter(result_type).validate_json(text)
    value = json.loads(text)
    if kind == "tuple":
        return tuple(value)
    return value


def encode_state(state: object, root: str = "state") -> str:
    """Encode the run state (a pydantic model or ``None``); errors name the path to the bad value."""
    if state is None:
        return "null"
    if not isinstance(state, BaseModel):
        raise SerializationError(
            root, f"state must be a pydantic model to be journaled, got {type(state).__name__}"
        )
    try:
        text = state.model_dump_json(warnings=False)
    except (PydanticSerializationError, ValueError, TypeError) as exc:
        raise _unserializable(state, root, exc) from exc
    try:
        type(state).model_validate_json(text)
    except ValidationError as exc:
        raise _validation_error(root, exc) from exc
    return text


def decode_state(text: str, like: object) -> BaseModel | None:
    """Decode stored state with the type of ``like`` (the state the resumed run has at that point).

    Raises:
        ValidationError: the stored state does not fit the current state model.
        TypeError: state was stored but the current run has none (or the reverse).
    """
    if text == "null":
        return None
    if not isinstance(like, BaseModel):
        raise TypeError(f"the journal holds a state here but the run's state is {type(like).__name__}")
    return type(like).model_validate_json(text)

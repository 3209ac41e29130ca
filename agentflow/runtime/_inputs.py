"""Checking a run's inputs against the workflow function's parameters before anything runs.

``agentflow.run(triage, {"texts": "one text"})`` for ``async def triage(texts: list[str])`` would
otherwise iterate the characters of the string; a missing input would surface as a ``StepError`` wrapping
a ``TypeError``. Here each input is validated with pydantic against its parameter's annotation (lax mode:
``"3"`` is accepted for an ``int``, a ``str`` is not a ``list[str]``), unknown and missing inputs are
named, and the run gets the validated values (a dict given for a pydantic model parameter arrives as
the model).
"""

from __future__ import annotations

import inspect
import typing
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from agentflow.errors import ConfigError

__all__ = ["validate_inputs"]

_CONFIG = ConfigDict(arbitrary_types_allowed=True, extra="forbid")


def _name(fn: Callable[..., object]) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or fn)


def _preview(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_text(annotation: object) -> str:
    if annotation is inspect.Parameter.empty:
        return "any value"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


@dataclass(frozen=True)
class _Parameters:
    """What validation needs to know about one workflow function (computed once per function)."""

    name: str
    named: Mapping[str, inspect.Parameter]  # the parameters an input can fill, by name
    hints: Mapping[str, object]  # their resolved annotations
    takes_extra: bool  # whether ``**kwargs`` accepts inputs with other names
    model: type[BaseModel] | None  # validates the named inputs; None when there is nothing to check


_CACHE: weakref.WeakKeyDictionary[Callable[..., object], _Parameters | None] = weakref.WeakKeyDictionary()
"""Per workflow function; entries go with their function."""


def _parameters(workflow: Callable[..., object]) -> _Parameters | None:
    """The workflow's parameters, or ``None`` when they cannot be inspected or resolved."""
    try:
        signature = inspect.signature(workflow)
        hints = typing.get_type_hints(workflow, include_extras=True)
    except Exception:  # no signature, or annotations naming what the module cannot resolve
        return None
    params = signature.parameters
    if any(p.kind is inspect.Parameter.POSITIONAL_ONLY for p in params.values()):
        return None
    named = {
        n: p
        for n, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    name = _name(workflow)
    fields: dict[str, Any] = {
        n: (hints.get(n, Any), ... if p.default is inspect.Parameter.empty else p.default)
        for n, p in named.items()
    }
    model = create_model(f"{name.replace('.', '_')}_inputs", __config__=_CONFIG, **fields) if fields else None
    takes_extra = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return _Parameters(name, named, hints, takes_extra, model)


def validate_inputs(workflow: Callable[..., object], inputs: Mapping[str, object]) -> dict[str, object]:
    """The inputs, validated against ``workflow``'s parameters (an unannotated one takes any value).

    A workflow without an inspectable signature, or whose annotations cannot be resolved, gets its
    inputs unchanged (they are still checked by Python when it is called).

    Raises:
        ConfigError: An input the workflow does not take, a required input that is missing, or a
            value that does not match its parameter's type (every problem is named).
    """
    try:
        spec = _CACHE[workflow] if workflow in _CACHE else _CACHE.setdefault(workflow, _parameters(workflow))
    except TypeError:  # not weakly referenceable (a builtin, a callable object without __weakref__)
        spec = _parameters(workflow)
    if spec is None:
        return dict(inputs)
    unknown = sorted(set(inputs) - set(spec.named))
    if unknown and not spec.takes_extra:
        raise ConfigError(
            f"workflow {spec.name!r} has no input(s) {unknown}; its inputs are {sorted(spec.named) or 'none'}"
        )
    if spec.model is None:
        return dict(inputs)
    given = {k: v for k, v in inputs.items() if k in spec.named}
    try:
        checked = spec.model.model_validate(given)
    except ValidationError as exc:
        raise ConfigError(_message(spec.name, exc, spec.named, spec.hints, given)) from None
    return {**dict(inputs), **{k: getattr(checked, k) for k in given}}


def _message(
    name: str,
    exc: ValidationError,
    params: Mapping[str, inspect.Parameter],
    hints: Mapping[str, object],
    given: Mapping[str, object],
) -> str:
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        key = str(loc[0]) if loc else "?"
        expected = _type_text(hints.get(key, params[key].annotation if key in params else None))
        where = key + "".join(f"[{part!r}]" for part in loc[1:])
        if error["type"] == "missing" and len(loc) == 1:
            problems.append(f"input {key!r} ({expected}) is missing; pass inputs={{{key!r}: ...}}")
        else:
            problems.append(
                f"input {where!r} = {_preview(error.get('input', given.get(key)))} is not a valid "
                f"{expected}: {error['msg']}"
            )
    return f"workflow {name!r}: " + "; ".join(problems)

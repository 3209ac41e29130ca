"""Task references (``$N``, ``${N}``, ``$N.field``) inside tool arguments: finding them and substituting them.

A plan's arguments are JSON values whose strings may name earlier tasks' results:

- ``"$3"`` or ``"${3}"`` as the *whole* string is replaced by task 3's result with its own type (a list stays
  a list, a number stays a number);
- ``"$3.distance"`` / ``"${3.distance}"`` picks a field of task 3's result (a mapping key or an attribute);
  fields are identifiers, so ``"$1.50"`` is a reference to ``$1`` followed by the text ``.50``;
- a reference *inside* a longer string (``"sum of $1 and $2"``) is replaced by ``str(value)``;
- ``$$`` is a literal dollar sign (``"$$5"`` stays the text ``$5`` and references nothing).

Substitution is single-pass: the text that a tool returned is inserted as a value and never scanned again, so
an observation that happens to contain ``$1`` cannot pull another task's result into an argument.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import JsonValue

__all__ = ["REF_PATTERN", "Ref", "UnresolvedFieldError", "find_refs", "ref_ids", "resolve", "substitute"]

_FIELD = r"(?:\.[A-Za-z_]\w*)*"
REF_PATTERN = re.compile(rf"\$\$|\$\{{(\d+)({_FIELD})\}}|\$(\d+)({_FIELD})")
"""Matches ``$$`` (escape), ``${N}`` / ``${N.a.b}`` and ``$N`` / ``$N.a.b``."""


@dataclass(frozen=True)
class Ref:
    """One reference to a task's result.

    Attributes:
        task: The referenced task id.
        path: Field names to follow into the result (empty for the whole result).
    """

    task: int
    path: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "$" + ".".join((str(self.task), *self.path))


class UnresolvedFieldError(LookupError):
    """A ``$N.field`` reference names a field the result of task N does not have."""

    def __init__(self, ref: Ref, missing: str, value: object) -> None:
        self.ref = ref
        self.missing = missing
        available = _field_names(value)
        hint = (
            f"available fields: {', '.join(available)}"
            if available
            else f"the result is {type(value).__name__}"
        )
        super().__init__(
            f"reference {ref} names field {missing!r}, which task {ref.task}'s result lacks ({hint})"
        )


def _match_ref(match: re.Match[str]) -> Ref | None:
    if match.group(0) == "$$":
        return None
    digits = match.group(1) if match.group(1) is not None else match.group(3)
    fields = match.group(2) if match.group(1) is not None else match.group(4)
    return Ref(int(digits), tuple(f for f in fields.split(".") if f))


def find_refs(value: JsonValue) -> list[Ref]:
    """Return every reference in ``value`` (strings anywhere inside lists and dict values), in order."""
    found: list[Ref] = []
    _collect(value, found)
    return found


def ref_ids(value: JsonValue) -> frozenset[int]:
    """Return the ids of the tasks ``value`` references."""
    return frozenset(r.task for r in find_refs(value))


def _collect(value: JsonValue, out: list[Ref]) -> None:
    if isinstance(value, str):
        if "$" in value:
            for match in REF_PATTERN.finditer(value):
                ref = _match_ref(match)
                if ref is not None:
                    out.append(ref)
    elif isinstance(value, list):
        for item in value:
            _collect(item, out)
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, out)


def substitute(value: JsonValue, results: Mapping[int, object]) -> object:
    """Replace every reference in ``value`` by the referenced result, in one pass.

    Args:
        value: An argument value as the plan wrote it.
        results: Finished tasks' results by task id; every referenced id must be present.

    Returns:
        A copy of ``value`` with references replaced (whole-string references keep the result's type).

    Raises:
        LookupError: A referenced task has no result in ``results`` (``KeyError``), or a ``$N.field`` names a
            missing field (``UnresolvedFieldError``, whose message names the available fields).
    """
    if isinstance(value, str):
        if "$" not in value:
            return value
        whole = REF_PATTERN.fullmatch(value)
        if whole is not None:
            ref = _match_ref(whole)
            if ref is not None:
                return resolve(ref, results)
        return REF_PATTERN.sub(lambda m: _render(m, results), value)
    if isinstance(value, list):
        return [substitute(item, results) for item in value]
    if isinstance(value, dict):
        return {key: substitute(item, results) for key, item in value.items()}
    return value


def _render(match: re.Match[str], results: Mapping[int, object]) -> str:
    ref = _match_ref(match)
    if ref is None:
        return "$"
    return str(resolve(ref, results))


def resolve(ref: Ref, results: Mapping[int, object]) -> object:
    """Return the value ``ref`` points at (the task's result, then each field in ``ref.path``)."""
    value = results[ref.task]
    for name in ref.path:
        if isinstance(value, Mapping):
            if name not in value:
                raise UnresolvedFieldError(ref, name, value)
            value = value[name]
        elif hasattr(value, name) and not name.startswith("_"):
            value = getattr(value, name)
        else:
            raise UnresolvedFieldError(ref, name, value)
    return value


def _field_names(value: object) -> list[str]:
    if isinstance(value, Mapping):
        return [str(k) for k in value]
    fields = getattr(type(value), "model_fields", None) or getattr(value, "__dataclass_fields__", None)
    if isinstance(fields, Mapping):
        return [str(k) for k in fields]
    return []

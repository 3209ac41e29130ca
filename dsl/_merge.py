"""State merge rules for joining parallel branches.

Each ``par`` branch starts from a snapshot of the state. At the join, every field that some branch
changed is merged by the rule declared on the field::

    class Notes(BaseModel):
        seen: Annotated[list[str], Append] = []
        best: Annotated[float, Max] = 0.0
        last: Annotated[str, Replace] = ""      # the highest-numbered branch that wrote it wins
        count: Annotated[int, Reducer(lambda base, vs: base + sum(v - base for v in vs))] = 0
        owner: str = ""                         # no rule: written by two branches -> MergeConflict

A field without a rule that two branches set to *different* values is a ``MergeConflict``; it is
never resolved silently.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from ._errors import MergeConflict

_MISSING = object()


class MergeRule(ABC):
    """How to combine the values several branches wrote to one state field.

    Subclasses implement ``merge(base, values)`` where ``base`` is the value before the fork and
    ``values`` are the changed values of the branches that wrote the field, in branch order. They
    raise ``ValueError`` when the values cannot be merged (the message ends up in a ``MergeConflict``).
    """

    @abstractmethod
    def merge(self, base: object, values: Sequence[object]) -> object:
        """Combine the branch values."""

    def __repr__(self) -> str:
        return type(self).__name__


class _Append(MergeRule):
    """Concatenate what each branch appended after the base (lists, tuples, strings)."""

    def merge(self, base: object, values: Sequence[object]) -> object:
        if not isinstance(base, list | tuple | str):
            raise ValueError(f"Append needs a list, tuple or str field, got {type(base).__name__}")
        n = len(base)
        out = list(base) if not isinstance(base, str) else [base]
        for v in values:
            if not isinstance(v, type(base)) or v[:n] != base:
                raise ValueError("a branch changed existing items of an Append field (only appends merge)")
            if isinstance(base, str):
                out.append(v[n:])
            else:
                out.extend(v[n:])
        if isinstance(base, str):
            return "".join(str(x) for x in out)
        return tuple(out) if isinstance(base, tuple) else out


class _Max(MergeRule):
    """The largest value written."""

    def merge(self, base: object, values: Sequence[object]) -> object:
        return max(values)  # type: ignore[type-var]


class _Min(MergeRule):
    """The smallest value written."""

    def merge(self, base: object, values: Sequence[object]) -> object:
        return min(values)  # type: ignore[type-var]


class _Replace(MergeRule):
    """The value of the highest-numbered branch that wrote the field (declared, so deterministic)."""

    def merge(self, base: object, values: Sequence[object]) -> object:
        return values[-1]


class _Union(MergeRule):
    """Union of sets, or of dicts (a key written differently by two branches is a conflict)."""

    def merge(self, base: object, values: Sequence[object]) -> object:
        if isinstance(base, set | frozenset):
            acc = set(base)
            for v in values:
                if not isinstance(v, set | frozenset):
                    raise ValueError(f"a branch wrote a {type(v).__name__} to a set field")
                acc |= v
            return type(base)(acc)
        if isinstance(base, dict):
            merged: dict[object, object] = dict(base)
            written: dict[object, object] = {}
            for v in values:
                assert isinstance(v, dict)
                for key, item in v.items():
                    if base.get(key, _MISSING) == item:
                        continue
                    if key in written and written[key] != item:
                        raise ValueError(f"two branches wrote different values for key {key!r}")
                    written[key] = merged[key] = item
            return merged
        raise ValueError(f"Union needs a set or dict field, got {type(base).__name__}")


@dataclass(frozen=True)
class Reducer(MergeRule):
    """A custom rule: ``fn(base, values) -> merged``.

    >>> Reducer(lambda base, vs: base + sum(v - base for v in vs)).merge(1, [3, 4])
    6
    """

    fn: Callable[[object, Sequence[object]], object]

    def merge(self, base: object, values: Sequence[object]) -> object:
        return self.fn(base, values)


Append = _Append()
"""Merge rule: keep every branch's appended items, in branch order."""
Max = _Max()
"""Merge rule: keep the largest value."""
Min = _Min()
"""Merge rule: keep the smallest value."""
Replace = _Replace()
"""Merge rule: the highest-numbered writing branch wins (an explicit, deterministic last-writer-wins)."""
Union = _Union()
"""Merge rule: union of sets or dicts."""


def _rule_of(model: type[BaseModel], field: str) -> MergeRule | None:
    info = model.model_fields.get(field)
    if info is None:
        return None
    for meta in info.metadata:
        if isinstance(meta, MergeRule):
            return meta
    return None


def snapshot(state: BaseModel | None) -> BaseModel | None:
    """The state a parallel branch starts from: the same object when the model is frozen, a deep copy
    otherwise (so in-place mutation in one branch cannot leak into another)."""
    if state is None or state.model_config.get("frozen"):
        return state
    return state.model_copy(deep=True)


def merge_states(path: str, base: BaseModel | None, branches: Sequence[BaseModel | None]) -> BaseModel | None:
    """Join the final states of parallel branches that all started from ``base``.

    Raises:
        MergeConflict: Two branches wrote an unruled field with different values, a rule rejected the
            values, or a branch replaced the state with a model of another type.
    """
    changed = [(i, s) for i, s in enumerate(branches) if s is not base]
    if not changed:
        return base
    if base is None:
        distinct = [(i, s) for i, s in changed if s is not None]
        if len(distinct) == 1:
            return distinct[0][1]
        first = distinct[0][1]
        if all(s == first for _, s in distinct):
            return first
        raise MergeConflict(path, "<state>", [i for i, _ in distinct], "branches set different states")
    model = type(base)
    for i, s in changed:
        if type(s) is not model:
            raise MergeConflict(
                path,
                "<state>",
                [i],
                f"branch {i} replaced the {model.__name__} state with {type(s).__name__}",
            )
    updates: dict[str, object] = {}
    for field in model.model_fields:
        before = getattr(base, field)
        writers: list[tuple[int, object]] = []
        for i, s in changed:
            v = getattr(s, field, _MISSING)
            if v is not _MISSING and v != before:
                writers.append((i, v))
        if not writers:
            continue
        if len(writers) == 1:
            updates[field] = writers[0][1]
            continue
        rule = _rule_of(model, field)
        if rule is None:
            if all(v == writers[0][1] for _, v in writers):
                updates[field] = writers[0][1]
                continue
            raise MergeConflict(path, field, [i for i, _ in writers])
        try:
            updates[field] = rule.merge(before, [v for _, v in writers])
        except ValueError as exc:
            raise MergeConflict(path, field, [i for i, _ in writers], f"{rule!r} rule: {exc}") from exc
    if not updates:
        return base
    return base.model_copy(update=updates)

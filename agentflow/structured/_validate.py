"""Checking a decoded answer: strict JSON parsing, then every JSON Schema constraint, named with its path.

A grammar narrows what an engine can emit; it never replaces this check. Constraints a grammar cannot
express (``uniqueItems``, ``not``, a look-ahead ``pattern``), servers that ignore the schema, and answers cut
off by ``max_tokens`` all end up here, and the first unmet constraint is reported as a ``Violation``: the
JSON Schema keyword, the JSON path of the value in the answer, and what is wrong.

Parsing is strict where Python's ``json`` is lenient: raw control characters in strings, ``NaN`` /
``Infinity``, lone UTF-16 surrogates and duplicate object keys are refused, so whatever passes can be
serialized again and read by any JSON parser. Formats are checked for ``date``, ``date-time``, ``time``,
``uuid``, ``email``, ``ipv4``, ``ipv6``, ``hostname``, ``uri`` and ``duration`` (the JSON Schema draft
validators treat ``format`` as an annotation unless asked; we always ask).
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import json
import re
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from pydantic import JsonValue

from agentflow.errors import ConfigError

if TYPE_CHECKING:
    import jsonschema

__all__ = ["FORMATS", "AnswerCheck", "Violation", "json_path", "parse_json_strict"]

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME_RE = re.compile(r"^(\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_EMAIL_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$")
_HOST_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]*$")
_DURATION_RE = re.compile(r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_MAX_REPORTED = 5


@dataclass(frozen=True, slots=True)
class Violation:
    """One unmet constraint of an answer.

    Attributes:
        constraint: The JSON Schema keyword that failed (``maximum``, ``pattern``, ``format``, ``required``...),
            ``json`` when the text is not strict JSON, or ``max_tokens`` when the answer was cut off.
        path: JSON path of the offending value in the answer (``$`` is the whole answer, ``$.items[2].name``).
        message: What is wrong, in words.
    """

    constraint: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.constraint}]"


class _Rejected(ValueError):
    pass


def _reject_constant(name: str) -> object:
    raise _Rejected(f"{name} is not JSON; write a number or null")


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _Rejected(f"the key {key!r} appears twice in one object; keep one")
        out[key] = value
    return out


def parse_json_strict(text: str) -> JsonValue | Violation:
    """Parse ``text`` as one strict JSON value, or say why it is not one.

    Refuses raw control characters inside strings, ``NaN``/``Infinity``, duplicate keys and lone surrogates.

    >>> parse_json_strict('{"a": [1, 2]}')
    {'a': [1, 2]}
    >>> print(parse_json_strict('"tab\\there"'))
    $: not strict JSON: Invalid control character at: line 1 column 5 (char 4) [json]
    """
    try:
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except _Rejected as exc:
        return Violation("json", "$", f"not strict JSON: {exc}")
    except json.JSONDecodeError as exc:
        return Violation("json", "$", f"not strict JSON: {exc}")
    except RecursionError:
        return Violation("json", "$", "not strict JSON: nested too deeply to parse")
    bad = _find_surrogate(value, "$")
    if bad is not None:
        return Violation(
            "json", bad, "a string holds a lone UTF-16 surrogate escape; write a whole character"
        )
    return cast(JsonValue, value)


def _find_surrogate(value: object, path: str) -> str | None:
    stack: list[tuple[object, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if _SURROGATE_RE.search(item):
                return where
        elif isinstance(item, dict):
            for k, v in item.items():
                if _SURROGATE_RE.search(k):
                    return where
                stack.append((v, _child(where, k)))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return None


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


def json_path(parts: Sequence[str | int]) -> str:
    """The JSON path of a location given as keys and indices (``["a", 0]`` -> ``$.a[0]``)."""
    path = "$"
    for part in parts:
        path = _child(path, part)
    return path


# -- formats --------------------------------------------------------------------------------------------------


def _date(value: str) -> bool:
    if not _DATE_RE.match(value):
        return False
    _dt.date.fromisoformat(value)
    return True


def _time(value: str) -> bool:
    m = _TIME_RE.match(value)
    if m is None:
        return False
    hour, minute, second = int(m.group(1)), int(m.group(2)), int(m.group(3))
    return hour <= 23 and minute <= 59 and second <= 60


def _date_time(value: str) -> bool:
    head, sep, tail = value.partition("T") if "T" in value else value.partition("t")
    return bool(sep) and _date(head) and _time(tail)


def _uuid(value: str) -> bool:
    if len(value) != 36 or [i for i, c in enumerate(value) if c == "-"] != [8, 13, 18, 23]:
        return False
    uuid.UUID(value)
    return True


def _email(value: str) -> bool:
    return bool(_EMAIL_RE.match(value)) and len(value) <= 254


def _hostname(value: str) -> bool:
    name = value[:-1] if value.endswith(".") else value
    return 0 < len(name) <= 253 and all(_HOST_LABEL_RE.match(label) for label in name.split("."))


def _ipv4(value: str) -> bool:
    ipaddress.IPv4Address(value)
    return True


def _ipv6(value: str) -> bool:
    ipaddress.IPv6Address(value)
    return True


def _uri(value: str) -> bool:
    return bool(_URI_RE.match(value))


def _duration(value: str) -> bool:
    return bool(_DURATION_RE.match(value))


FORMATS: dict[str, object] = {
    "date": _date,
    "date-time": _date_time,
    "time": _time,
    "uuid": _uuid,
    "email": _email,
    "hostname": _hostname,
    "ipv4": _ipv4,
    "ipv6": _ipv6,
    "uri": _uri,
    "duration": _duration,
}
"""The ``format`` values checked after decoding (name -> predicate on strings); other formats are annotations."""


def _format_checker() -> jsonschema.FormatChecker:
    import jsonschema

    checker = jsonschema.FormatChecker(formats=())
    for name, fn in FORMATS.items():
        checker.checks(name, raises=(ValueError, TypeError))(fn)  # type: ignore[type-var]
    return checker


# -- schema checking ---------------------------------------------------------------------------------------------


class AnswerCheck:
    """Validates answers against one JSON Schema (draft from ``$schema``, 2020-12 by default), formats included.

    Args:
        schema: The JSON Schema the answer must satisfy.
        where: What the schema belongs to, for error messages.

    Raises:
        ConfigError: The schema itself is not valid JSON Schema.
    """

    def __init__(self, schema: Mapping[str, object], *, where: str = "schema") -> None:
        import jsonschema
        import jsonschema.validators

        raw = dict(schema)
        cls = jsonschema.validators.validator_for(raw, default=jsonschema.Draft202012Validator)
        try:
            # format_checker=None: a pattern Python cannot compile is reported per answer, not here.
            cls.check_schema(raw, format_checker=None)  # type: ignore[call-arg]
        except jsonschema.SchemaError as exc:
            raise ConfigError(f"{where} is not valid JSON Schema: {exc.message}; fix the schema") from exc
        validating = jsonschema.validators.extend(cls, {"pattern": _pattern_keyword})  # type: ignore[no-untyped-call]
        self._validator = validating(raw, format_checker=_format_checker())

    def violations(self, value: object) -> list[Violation]:
        """Every unmet constraint of a parsed answer (at most a handful), shallowest first; empty when valid."""
        found: list[Violation] = []
        errors = sorted(self._errors(value), key=lambda e: (len(e.absolute_path), [str(p) for p in e.path]))
        for error in errors[:_MAX_REPORTED]:
            found.append(
                Violation(
                    str(error.validator),
                    json_path(list(error.absolute_path)),
                    _message(error),
                )
            )
        return found

    def check(self, text: str) -> JsonValue | Violation:
        """Parse ``text`` strictly and validate it; the value, or the first unmet constraint."""
        value = parse_json_strict(text)
        if isinstance(value, Violation):
            return value
        found = self.violations(value)
        return found[0] if found else value

    def _errors(self, value: object) -> Iterator[jsonschema.ValidationError]:
        try:
            yield from self._validator.iter_errors(value)
        except RecursionError:
            import jsonschema

            yield jsonschema.ValidationError("the answer nests too deeply to check", validator="json")


def _message(error: jsonschema.ValidationError) -> str:
    text = error.message
    return text if len(text) <= 300 else text[:297] + "..."


def _pattern_keyword(
    validator: jsonschema.protocols.Validator, pattern: object, instance: object, schema: object
) -> Iterator[jsonschema.ValidationError]:
    """``pattern`` with Python's ``re`` (search semantics); a pattern Python cannot compile is reported."""
    import jsonschema

    if not isinstance(instance, str) or not isinstance(pattern, str):
        return
    try:
        with warnings.catch_warnings():  # FutureWarning on "[[" and the like: the schema's business
            warnings.simplefilter("ignore")
            found = re.search(pattern, instance)
    except re.error as exc:
        yield jsonschema.ValidationError(
            f"the schema's pattern {pattern!r} cannot be checked here ({exc}); write it in the common "
            "subset of ECMA-262 and Python regular expressions"
        )
        return
    if found is None:
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")

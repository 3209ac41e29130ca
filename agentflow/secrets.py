"""Secrets as capability handles, and redaction of revealed values as taint tracking.

``secret("WEATHER_API_KEY")`` is a handle, not a value: it prints, serializes, journals and traces as
``secret('WEATHER_API_KEY')``. Only code that needs the value (a tool's body, an engine adapter) calls
``reveal()``, which reads it from the environment (or a provider) at that moment. The LLM never sees a
handle's value because nothing that builds a prompt reveals it.

Defence in depth: a revealed value is *tainted*. It is remembered (in memory only) by the scope it was
revealed in, together with the forms it takes when text carrying it is encoded (JSON-escaped once and
twice, ``repr``, HTML-escaped), so ``redact(text)`` blanks every such form out of whatever leaves a
component: plan templates before they become prompts or tool arguments, tool observations, trace events,
every journal column, saved runs, reports, and the exception chains of failed runs
(``redact_exception``). A tool that echoes its API key therefore still cannot leak it into the model's
context or the run's records.

Scopes. ``agentflow.run`` opens a ``secret_scope()`` per run (held in a context variable, so it follows
the run into its tasks and worker threads): two runs in one process never see each other's revealed
values. A value revealed inside a nested scope is also added to the enclosing scopes, since what the
inner run returns flows into the outer one. Values revealed outside any scope (by code that runs before
or between runs, e.g. an engine built at start-up) belong to the process and are redacted in every scope.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import html
import json
import os
import re
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, TypeVar

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from agentflow.errors import AgentflowError, ConfigError, RuntimeFailure

if TYPE_CHECKING:
    from agentflow.engines import GenerationRequest

__all__ = [
    "REDACTED",
    "RevealedValues",
    "Secret",
    "any_revealed",
    "encoded_forms",
    "redact",
    "redact_data",
    "redact_exception",
    "redact_request",
    "secret",
    "secret_scope",
]

REDACTED = "[secret]"
"""The one redaction marker: what a secret value is replaced with by ``redact`` and by telemetry's ``SecretScrubber``."""

_MIN_REDACT_LEN = 4  # shorter values would blank out ordinary text

_E = TypeVar("_E", bound=BaseException)


def encoded_forms(value: str) -> frozenset[str]:
    r"""The forms ``value`` takes inside encoded text: itself, JSON-escaped once and twice (ASCII-only
    and not), ``repr``'s escaping and HTML escaping. Each is what a JSON document, a JSON string inside
    a JSON document, a Python repr or an HTML page holding the value contains verbatim.

    >>> sorted(encoded_forms('ab"cd'))
    ['ab"cd', 'ab&quot;cd', 'ab\\"cd', 'ab\\\\\\"cd']
    """

    def escaped(text: str, ascii_only: bool) -> str:
        return json.dumps(text, ensure_ascii=ascii_only)[1:-1]

    forms = {value, repr(value)[1:-1], html.escape(value), html.escape(value, quote=False)}
    for ascii_only in (True, False):
        once = escaped(value, ascii_only)
        forms.update((once, escaped(once, ascii_only)))
    return frozenset(f for f in forms if len(f) >= _MIN_REDACT_LEN)


class RevealedValues:
    """The secret values revealed in one scope, with their encoded forms.

    Args:
        parent: The enclosing scope: values added here are added there too.
    """

    __slots__ = ("_forms", "_lock", "parent")

    def __init__(self, parent: RevealedValues | None = None) -> None:
        self.parent = parent
        # The encoded forms of every value revealed in this scope or a nested one; lives with the scope.
        self._forms: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        """Taint ``value`` (values shorter than 4 characters are ignored: they would blank ordinary text)."""
        if len(value) < _MIN_REDACT_LEN:
            return
        forms = encoded_forms(value)
        scope: RevealedValues | None = self
        while scope is not None:
            with scope._lock:
                scope._forms = scope._forms | forms
            scope = scope.parent

    @property
    def forms(self) -> frozenset[str]:
        """Every encoded form of the values tainted in this scope (and nested ones)."""
        return self._forms


_process = RevealedValues()
"""Values revealed outside any scope: they belong to the process and are redacted in every scope."""

_current: contextvars.ContextVar[RevealedValues | None] = contextvars.ContextVar(
    "agentflow_revealed_values", default=None
)


@contextmanager
def secret_scope() -> Iterator[RevealedValues]:
    """A scope for revealed values: what is revealed inside (in this task, the tasks it starts and the
    worker threads it calls) is redacted inside, and in the enclosing scope, but not in sibling scopes.
    ``agentflow.run`` opens one per run; open one yourself around a run and whatever you do with its
    outcome afterwards (saving, printing) to keep redacting the run's values there.

    >>> with secret_scope() as scope:
    ...     scope.add("hunter22")
    ...     redact("password: hunter22")
    'password: [secret]'
    >>> redact("password: hunter22")
    'password: hunter22'
    """
    scope = RevealedValues(_current.get())
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)


def _all_forms() -> frozenset[str]:
    scope = _current.get()
    forms = _process.forms
    while scope is not None:
        forms = forms | scope.forms
        scope = scope.parent
    return forms


@functools.lru_cache(maxsize=64)
def _pattern(forms: frozenset[str]) -> re.Pattern[str]:
    # Longest first, so a longer encoded form is replaced whole, not as a shorter form plus leftovers.
    return re.compile("|".join(re.escape(f) for f in sorted(forms, key=lambda f: (-len(f), f))))


class Secret:
    """A handle to a secret value; see the module docstring.

    Args:
        name: The secret's name (by default also the environment variable it is read from).
        provider: ``provider(name) -> str`` to fetch the value elsewhere (a vault); default: ``os.environ``.
    """

    __slots__ = ("_provider", "name")

    def __init__(self, name: str, provider: Callable[[str], str] | None = None) -> None:
        if not name or not isinstance(name, str):
            raise ConfigError(f"a secret needs a non-empty name, got {name!r}")
        self.name = name
        self._provider = provider

    def reveal(self) -> str:
        """The secret's value. Call only where the value is used (an HTTP header, a tool's client).

        The value is tainted in the current scope (the run), so ``redact`` blanks it out of the run's
        records from then on.
        """
        if self._provider is not None:
            value = self._provider(self.name)
        else:
            value = os.environ.get(self.name, "")
            if not value:
                raise ConfigError(
                    f"secret {self.name!r} is not set: export {self.name}=... in the environment "
                    "(or give secret() a provider)"
                )
        (_current.get() or _process).add(value)
        return value

    def __repr__(self) -> str:
        return f"secret({self.name!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("agentflow.Secret", self.name))

    def __reduce__(self) -> tuple[Callable[[str], Secret], tuple[str]]:
        return (Secret, (self.name,))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: object, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Validate from a handle or ``{"secret": NAME}``; serialize as ``{"secret": NAME}`` (never the value)."""

        def from_any(value: object) -> Secret:
            if isinstance(value, Secret):
                return value
            if isinstance(value, Mapping) and isinstance(value.get("secret"), str):
                return Secret(str(value["secret"]))
            raise ValueError("expected a secret handle or {'secret': NAME}")

        return core_schema.no_info_plain_validator_function(
            from_any,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda s: {"secret": s.name}),
        )


def secret(name: str, provider: Callable[[str], str] | None = None) -> Secret:
    """A handle to the secret ``name`` (read from the environment variable of that name when revealed).

    >>> key = secret("DEMO_KEY")
    >>> key
    secret('DEMO_KEY')
    """
    return Secret(name, provider)


def any_revealed() -> bool:
    """Whether any value is tainted in the current scope (if not, ``redact`` is the identity)."""
    return bool(_all_forms())


def redact(text: str) -> str:
    """``text`` with every tainted value, in each of its encoded forms, replaced by ``REDACTED``.

    >>> import os
    >>> os.environ["DEMO_TOKEN"] = 'tok-12"34'
    >>> _ = secret("DEMO_TOKEN").reveal()
    >>> redact('the token is tok-12"34')
    'the token is [secret]'
    >>> import json; redact(json.dumps({"token": 'tok-12"34'}))
    '{"token": "[secret]"}'
    """
    forms = _all_forms()
    if not forms:
        return text
    return _pattern(forms).sub(REDACTED, text)


def redact_data(value: object) -> object:
    """``redact`` applied to every string (keys included) inside nested dicts, lists and tuples."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact_data(k): redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return _rebuild(value, [redact_data(v) for v in value])
    return value


def redact_request(request: GenerationRequest) -> GenerationRequest:
    """An engine request with tainted values redacted from its prompt and messages (what the LLM-call
    primitive sends, so a value a tool revealed never reaches the model)."""
    if not any_revealed():
        return request
    messages = request.messages
    if messages is not None:
        messages = tuple(
            dataclasses.replace(
                m,
                content=redact(m.content),
                tool_calls=tuple(dataclasses.replace(c, arguments=redact(c.arguments)) for c in m.tool_calls),
            )
            for m in messages
        )
    prompt = redact(request.prompt) if request.prompt is not None else None
    return dataclasses.replace(request, prompt=prompt, messages=messages)


def redact_exception(error: _E) -> _E:
    """Redact tainted values from an exception and everything chained to it, in place: ``args``,
    string attributes (``message``, ``where``, ``raw`` ...), notes, ``__cause__``, ``__context__``,
    exceptions held in attributes (``StepError.cause``, ``RaceLostError.errors``) and exception groups;
    so ``traceback.format_exception(error)`` shows no secret. A chained exception whose text still
    carries a secret after that (a ``__str__`` computed from other data) is replaced in the chain by
    a ``RuntimeFailure`` with its redacted text. Returns ``error`` (or its stand-in, likewise)."""
    if not any_revealed():
        return error
    return _scrub(error, {})


def _leaks(exc: BaseException) -> bool:
    try:
        text = "".join(traceback.format_exception_only(exc))
    except Exception:  # a broken __str__: the text cannot carry anything
        return False
    return redact(text) != text


def _scrub(exc: _E, done: dict[int, BaseException]) -> _E:
    """Redact ``exc`` and its chain in place (``done``: what was already handled, by id, and its result)."""
    seen = done.get(id(exc))
    if seen is not None:
        return seen  # type: ignore[return-value]
    done[id(exc)] = exc
    with suppress(TypeError, AttributeError):
        exc.args = tuple(_scrub_value(a, done) for a in exc.args)
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list):
        exc.__notes__ = [redact(n) if isinstance(n, str) else n for n in notes]
    for name, value in list(getattr(exc, "__dict__", {}).items()):
        if name != "__notes__":
            with suppress(TypeError, AttributeError):
                setattr(exc, name, _scrub_value(value, done))
    if isinstance(exc, OSError):
        for name in ("strerror", "filename", "filename2"):
            value = getattr(exc, name, None)
            if isinstance(value, str):
                setattr(exc, name, redact(value))
    if isinstance(exc, SyntaxError) and isinstance(exc.text, str):
        exc.text = redact(exc.text)
    if exc.__cause__ is not None:
        exc.__cause__ = _scrub(exc.__cause__, done)
    if exc.__context__ is not None:
        exc.__context__ = _scrub(exc.__context__, done)
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            _scrub(inner, done)
    if not _leaks(exc):
        return exc
    # The text is computed from something we cannot rewrite: stand in for it, keeping the chain.
    text = redact("".join(traceback.format_exception_only(exc)).strip())
    where = exc.where if isinstance(exc, AgentflowError) else None
    stand_in = RuntimeFailure(f"{text} (the original error's text held a secret value)", where=where)
    stand_in.__cause__, stand_in.__context__ = exc.__cause__, exc.__context__
    stand_in.__suppress_context__ = exc.__suppress_context__
    stand_in.__traceback__ = exc.__traceback__
    done[id(exc)] = stand_in
    return stand_in  # type: ignore[return-value]


def _scrub_value(value: object, done: dict[int, BaseException]) -> object:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, BaseException):
        return _scrub(value, done)
    if isinstance(value, Mapping):
        return {_scrub_value(k, done): _scrub_value(v, done) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_scrub_value(v, done) for v in value]
        return _rebuild(value, items)
    return value


def _rebuild(original: list[object] | tuple[object, ...], items: list[object]) -> object:
    """A list or tuple (a named tuple too) of the same type holding ``items``."""
    if isinstance(original, list):
        return items if type(original) is list else type(original)(items)
    if hasattr(original, "_fields"):
        maker: Callable[..., object] = type(original)
        return maker(*items)
    return tuple(items) if type(original) is tuple else type(original)(items)

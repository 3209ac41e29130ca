"""Secrets as capability handles.

``secret("WEATHER_API_KEY")`` is a handle, not a value: it prints, serializes, journals and traces as
``secret('WEATHER_API_KEY')``. Only code that needs the value (a tool's body, an engine adapter) calls
``reveal()``, which reads it from the environment (or a provider) at that moment. The LLM never sees a
handle's value because nothing that builds a prompt reveals it.

Defence in depth: every value revealed in this process is remembered (as a value, in memory only) so
``redact(text)`` can blank it out of anything that leaves a component: tool observations before they
enter a prompt, trace events, journal rows, reports and error messages. A tool that echoes its API key
therefore still cannot leak it into the model's context or the run's records.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from agentflow.errors import ConfigError

__all__ = ["REDACTED", "Secret", "any_revealed", "redact", "redact_data", "secret"]

REDACTED = "[secret]"
"""What a revealed secret value is replaced with by ``redact``."""

_MIN_REDACT_LEN = 4  # shorter values would blank out ordinary text

_lock = threading.Lock()
_revealed: set[str] = set()  # values revealed in this process; lives as long as the process


def _remember(value: str) -> None:
    if len(value) >= _MIN_REDACT_LEN:
        with _lock:
            _revealed.add(value)


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
        """The secret's value. Call only where the value is used (an HTTP header, a tool's client)."""
        if self._provider is not None:
            value = self._provider(self.name)
        else:
            value = os.environ.get(self.name, "")
            if not value:
                raise ConfigError(
                    f"secret {self.name!r} is not set: export {self.name}=... in the environment "
                    "(or give secret() a provider)"
                )
        _remember(value)
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
    """Whether any secret value has been revealed in this process (if not, ``redact`` is the identity)."""
    return bool(_revealed)


def redact(text: str) -> str:
    """``text`` with every secret value revealed in this process replaced by ``REDACTED``.

    >>> import os
    >>> os.environ["DEMO_TOKEN"] = "tok-123456"
    >>> _ = secret("DEMO_TOKEN").reveal()
    >>> redact("the token is tok-123456")
    'the token is [secret]'
    """
    with _lock:
        values = sorted(_revealed, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def redact_data(value: object) -> object:
    """``redact`` applied to every string inside nested dicts, lists and tuples (for trace event data)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_data(v) for v in value)
    return value

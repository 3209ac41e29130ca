"""The root of agentflow's exception hierarchy and the errors the DSL itself produces.

The DSL depends on nothing else in agentflow, so the root class lives here; ``agentflow.errors``
re-exports it and adds the engine, tool, plan and store errors underneath. See ``agentflow/errors.py``
for the whole tree.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import CoreSchema


class AgentflowError(Exception):
    """Root of every error agentflow raises or returns as an ``Err`` value.

    Errors are pydantic-serializable, so values holding them can be journaled: a field typed with an error
    class stores the error's class name, message, location and declared attributes, and reads it back as
    that class of ``agentflow.errors`` (see ``agentflow.dsl._error_record``). The attributes a class stores
    are its class annotations.

    Attributes:
        message: What went wrong (without the location).
        where: The step path (``research/search[2]``) or file location the error belongs to, if known.
    """

    message: str
    where: str | None

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)

    def at(self, where: str) -> AgentflowError:
        """Return this error with ``where`` filled in when it was not known yet."""
        if self.where is None:
            self.where = where
            self.args = (f"{where}: {self.message}",)
        return self

    @classmethod
    def _attribute_types(cls) -> dict[str, object]:
        """The attributes a stored error of this class keeps, with their types (its class annotations).

        A class whose annotations name types imported only for type checking overrides this.
        """
        return typing.get_type_hints(cls)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: type[object], handler: GetCoreSchemaHandler) -> CoreSchema:
        from ._error_record import error_schema

        assert isinstance(source, type) and issubclass(source, AgentflowError)
        return error_schema(source)


class UserError(AgentflowError):
    """A mistake in what the user gave us: a plan, a configuration, an argument."""


class ConfigError(UserError):
    """A configuration value is invalid (an engine spec, a limit, an option)."""


class RuntimeFailure(AgentflowError):
    """Something failed while a workflow was running."""


class StepError(RuntimeFailure):
    """A step's own code raised an exception; the original is kept as ``__cause__`` and ``cause``."""

    cause: BaseException

    def __init__(self, path: str, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(f"step raised {type(cause).__name__}: {cause}", where=path or "<root>")


class StepTimeout(RuntimeFailure):
    """A step did not finish within its time limit."""

    seconds: float

    def __init__(self, path: str, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(
            f"did not finish within {seconds:g} s (raise the timeout or make the step faster)",
            where=path or "<root>",
        )


class MergeConflict(RuntimeFailure):
    """Parallel branches wrote the same state field and the field declares no merge rule."""

    field: str
    branches: tuple[int, ...]

    def __init__(self, path: str, field: str, branches: Sequence[int], detail: str = "") -> None:
        self.field = field
        self.branches = tuple(branches)
        hint = detail or (
            f"declare a merge rule on the field (e.g. `{field}: Annotated[..., Replace]`, Append, Max, Reducer), "
            "or write the field from one branch only"
        )
        super().__init__(
            f"parallel branches {list(self.branches)} all wrote state field {field!r}; {hint}",
            where=path or "<root>",
        )


class LoopLimitError(RuntimeFailure):
    """A loop (or replan, retry, generation) ran into its iteration limit."""

    limit: int

    def __init__(self, path: str, limit: int, what: str = "loop") -> None:
        self.limit = limit
        super().__init__(f"{what} reached its limit of {limit} iterations", where=path or "<root>")


class RaceLostError(RuntimeFailure):
    """Every contender of a ``race`` failed; ``errors`` holds each branch's error in order."""

    errors: tuple[AgentflowError, ...]

    def __init__(self, path: str, errors: Sequence[AgentflowError]) -> None:
        self.errors = tuple(errors)
        listed = "; ".join(f"[{i}] {e}" for i, e in enumerate(self.errors))
        super().__init__(f"all {len(self.errors)} race branches failed: {listed}", where=path or "<root>")


class StateTypeError(UserError):
    """The run's state is not of the type a flow asked for."""

"""The tool registry: tools by name, their schemas for prompts, and per-agent allowlist views."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping

from pydantic import JsonValue

from agentflow.errors import ConfigError, ToolError

from ._tool import Tool, ToolFunction

__all__ = ["ToolRegistry", "ToolView"]


def _unknown(name: str, known: Iterable[str], what: str) -> ToolError:
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listed = ", ".join(names) if names else "none"
    return ToolError(name, f"is not {what}; {hint}available tools: {listed}")


class ToolView:
    """A read-only view of a registry restricted to an allowlist of names (what one agent may call).

    The view is live: it reads through to the registry, so re-registering an allowed tool is seen at once.
    """

    def __init__(self, registry: ToolRegistry, names: Iterable[str]) -> None:
        self._registry = registry
        self._names = frozenset(names)

    def get(self, name: str) -> Tool:
        """Return the allowed tool ``name``.

        Raises:
            ToolError: ``name`` is not registered or not on this view's allowlist.
        """
        if name not in self._names:
            raise _unknown(name, self._names, "allowed here")
        return self._registry.get(name)

    def names(self) -> list[str]:
        """Allowed tool names, sorted."""
        return sorted(n for n in self._names if n in self._registry)

    def schemas(self) -> list[dict[str, JsonValue]]:
        """OpenAI-style function specs of the allowed tools, sorted by name."""
        return [self._registry.get(n).schema() for n in self.names()]

    def allowlist(self, names: Iterable[str]) -> ToolView:
        """Narrow this view further.

        Raises:
            ConfigError: A name is not allowed in this view.
        """
        wanted = list(names)
        outside = [n for n in wanted if n not in self._names]
        if outside:
            raise ConfigError(f"cannot allow {outside}: not in this view's allowlist {sorted(self._names)}")
        return ToolView(self._registry, wanted)

    def __contains__(self, name: object) -> bool:
        return name in self._names and name in self._registry

    def __iter__(self) -> Iterator[Tool]:
        return (self._registry.get(n) for n in self.names())

    def __len__(self) -> int:
        return len(self.names())


class ToolRegistry:
    """Tools by name.

    Example:
        >>> from agentflow.executors import ToolRegistry, tool
        >>> @tool
        ... def add(a: int, b: int) -> int:
        ...     '''Add two integers.'''
        ...     return a + b
        >>> registry = ToolRegistry([add])
        >>> registry.get("add").param_names
        ('a', 'b')
    """

    def __init__(self, tools: Iterable[Tool | ToolFunction] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for item in tools:
            self.register(item)

    def register(self, item: Tool | ToolFunction, *, replace: bool = False) -> Tool:
        """Add a tool (a plain typed function is wrapped with :meth:`Tool.from_function`).

        Args:
            item: A :class:`Tool` or a typed function.
            replace: Allow replacing a tool of the same name.

        Returns:
            The registered tool.

        Raises:
            ConfigError: A tool of that name is already registered and ``replace`` is false.
        """
        new = item if isinstance(item, Tool) else Tool.from_function(item)
        if new.name in self._tools and not replace:
            raise ConfigError(f"tool {new.name!r} is already registered; pass replace=True to replace it")
        self._tools[new.name] = new
        return new

    def register_specs(
        self,
        specs: Iterable[Mapping[str, JsonValue]],
        implementations: Mapping[str, ToolFunction] | None = None,
    ) -> list[Tool]:
        """Register JSON-Schema function specs (OpenAI or BFCL style), with implementations by name if given.

        Raises:
            ConfigError: A spec is malformed or its name is already registered.
        """
        impls = implementations or {}
        tools = [Tool.from_spec(spec) for spec in specs]
        return [self.register(t.with_options(fn=impls.get(t.name))) for t in tools]

    def get(self, name: str) -> Tool:
        """Return the tool called ``name``.

        Raises:
            ToolError: No such tool (the message suggests the closest name).
        """
        found = self._tools.get(name)
        if found is None:
            raise _unknown(name, self._tools, "registered")
        return found

    def names(self) -> list[str]:
        """Registered tool names, sorted."""
        return sorted(self._tools)

    def schemas(self) -> list[dict[str, JsonValue]]:
        """OpenAI-style function specs of every tool, sorted by name."""
        return [self._tools[n].schema() for n in self.names()]

    def allowlist(self, names: Iterable[str]) -> ToolView:
        """Return a view exposing only ``names``.

        Raises:
            ConfigError: A name is not registered.
        """
        wanted = list(names)
        missing = [n for n in wanted if n not in self._tools]
        if missing:
            raise ConfigError(f"cannot allow unregistered tools {missing}; registered: {self.names()}")
        return ToolView(self, wanted)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return (self._tools[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._tools)

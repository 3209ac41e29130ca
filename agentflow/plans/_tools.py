"""Resolving a plan's ``tools:`` references against the user's allowlist.

A plan names Python objects as ``module:attr``. Importing a module runs its code, so a reference is
imported only if it matches the allowlist the *user* controls (the CLI's ``--allow-tool``, or
``allow_tools=`` in code); a plan can never widen it. ``DEFAULT_ALLOWLIST`` holds the built-in tools.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Iterable

from agentflow.errors import AgentflowError
from agentflow.executors import Tool

__all__ = ["DEFAULT_ALLOWLIST", "ToolAllowlist", "resolve_tool"]

DEFAULT_ALLOWLIST: tuple[str, ...] = ("agentflow.plans.builtin_tools:*",)
"""References every plan may use: the built-in deterministic tools."""


class ToolAllowlist:
    """Which ``module:attr`` references a plan may import (shell-style patterns such as ``mytools:*``).

    >>> ToolAllowlist(["mytools:*"]).allows("mytools:search")
    True
    >>> ToolAllowlist().allows("os:system")
    False
    """

    def __init__(self, patterns: Iterable[str] = (), *, include_defaults: bool = True) -> None:
        extra = [p.strip() for p in patterns if p.strip()]
        for pattern in extra:
            if ":" not in pattern:
                raise ValueError(
                    f"tool allowlist entry {pattern!r} has no ':'; write 'module:attr' or 'module:*'"
                )
        self.patterns: tuple[str, ...] = (*(DEFAULT_ALLOWLIST if include_defaults else ()), *extra)

    def allows(self, ref: str) -> bool:
        """Whether ``ref`` matches one of the patterns."""
        return any(fnmatch.fnmatchcase(ref, p) for p in self.patterns)


def resolve_tool(ref: str, *, name: str | None = None, timeout: float | None = None) -> Tool:
    """Import ``module:attr`` and make a ``Tool`` of it (a ``Tool`` is used as is, a function is wrapped).

    The caller checks the allowlist first.

    Raises:
        ValueError: The module or attribute cannot be imported, or is neither a ``Tool`` nor a function.
    """
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"cannot import module {module_name!r} ({exc}); check the name and your PYTHONPATH"
        ) from None
    except Exception as exc:
        raise ValueError(f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    if not hasattr(module, attr):
        public = sorted(a for a in vars(module) if not a.startswith("_"))[:20]
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}; it has {', '.join(public)}")
    target = getattr(module, attr)
    try:
        if isinstance(target, Tool):
            if name is not None and name != target.name:
                raise ValueError(
                    f"{ref} is a Tool named {target.name!r}; a Tool object cannot be renamed to {name!r} "
                    "(drop 'name:' or reference the plain function)"
                )
            return target.with_options(timeout=timeout) if timeout is not None else target
        if callable(target):
            return Tool.from_function(target, name=name, timeout=timeout)
    except AgentflowError as exc:
        raise ValueError(exc.message) from None
    raise ValueError(f"{ref} is a {type(target).__name__}, not a function or Tool")

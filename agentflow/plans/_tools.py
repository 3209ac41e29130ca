"""Resolving a plan's ``tools:`` references against the user's allowlist.

A plan names Python objects as ``module:attr``. Importing a module runs its code, so a reference is
imported only if it matches the allowlist the *user* controls (the CLI's ``--allow-tool``, or
``allow_tools=`` in code); a plan can never widen it. ``DEFAULT_ALLOWLIST`` holds the built-in tools.

What a reference may name is narrow: a ``Tool`` object or a plain Python function, never a class, a
builtin or a typing object. A wildcard pattern (``mytools:*``) allows the tools a module *offers*:
public names it lists in ``__all__``, or, without ``__all__``, public functions it defines itself;
not private helpers (``_eval``) nor what it merely imports (``Callable``, ``rmtree``). To use
anything else the user names it exactly (``--allow-tool mytools:helper``).
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
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

    def names_exactly(self, ref: str) -> bool:
        """Whether a pattern without wildcards is ``ref`` itself (the user named this very object).

        >>> ToolAllowlist(["mytools:search"]).names_exactly("mytools:search")
        True
        >>> ToolAllowlist(["mytools:*"]).names_exactly("mytools:search")
        False
        """
        return ref in self.patterns and not any(ch in ref for ch in "*?[")


def _offered(module: object, module_name: str, attr: str, target: object) -> bool:
    """Whether a module offers ``attr`` as a tool to wildcard patterns (see the module docstring)."""
    if attr.startswith("_"):
        return False
    exported = getattr(module, "__all__", None)
    if isinstance(exported, list | tuple):
        return attr in exported
    return isinstance(target, Tool) or getattr(target, "__module__", None) == module_name


def resolve_tool(
    ref: str, *, name: str | None = None, timeout: float | None = None, named_exactly: bool = True
) -> Tool:
    """Import ``module:attr`` and make a ``Tool`` of it (a ``Tool`` is used as is, a function is wrapped).

    The caller checks the allowlist first.

    Args:
        ref: ``module:attr``.
        name: The tool's name (default: the function's).
        timeout: Seconds per call.
        named_exactly: ``False`` when only a wildcard pattern allowed ``ref``: then it must be a tool
            the module offers (public, and in ``__all__`` or defined by the module).

    Raises:
        ValueError: The module or attribute cannot be imported, is not offered to a wildcard, or is
            neither a ``Tool`` nor a plain function.
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
    if not named_exactly and not _offered(module, module_name, attr, target):
        why = (
            "a private name"
            if attr.startswith("_")
            else "not a tool the module offers (not in its __all__, or imported from elsewhere)"
        )
        raise ValueError(
            f"{ref} is {why}; a wildcard pattern does not allow it. If you trust it, allow exactly this "
            f"reference with --allow-tool '{ref}' (CLI) or allow_tools=[{ref!r}]"
        )
    if not isinstance(target, Tool) and not (inspect.isfunction(target) or inspect.ismethod(target)):
        kind = "a class" if isinstance(target, type) else f"a {type(target).__name__}"
        raise ValueError(
            f"{ref} is {kind}, not a function or Tool; plan tools are Python functions or Tool objects"
        )
    try:
        if isinstance(target, Tool):
            if name is not None and name != target.name:
                raise ValueError(
                    f"{ref} is a Tool named {target.name!r}; a Tool object cannot be renamed to {name!r} "
                    "(drop 'name:' or reference the plain function)"
                )
            return target.with_options(timeout=timeout) if timeout is not None else target
        return Tool.from_function(target, name=name, timeout=timeout)
    except AgentflowError as exc:
        raise ValueError(exc.message) from None
    except Exception as exc:  # e.g. pydantic cannot build a schema for a parameter type
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(f"{ref} cannot be used as a tool: {type(exc).__name__}: {first}") from None

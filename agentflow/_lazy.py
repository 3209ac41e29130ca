"""Lazy package attributes (PEP 562), so that importing a package does not import all its modules.

A package lists which module defines each public name; the first access imports that module and caches the
value in the package's namespace. Type checkers see the names through ``if TYPE_CHECKING:`` imports in the
package, which cost nothing at run time::

    if TYPE_CHECKING:
        from ._compiler import llm_compiler
    __getattr__, __dir__ = lazy_attributes(__name__, globals(), {"llm_compiler": "._compiler"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str,
    namespace: dict[str, Any],
    names: Mapping[str, str],
    *,
    submodules: Iterable[str] = (),
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose public names load on first access.

    Args:
        package: The package's ``__name__``.
        namespace: The package's ``globals()``; loaded values are cached there.
        names: Public name -> the module defining it (absolute, or relative to ``package`` with a leading dot).
        submodules: Submodule names reachable as attributes (``package.<name>``), imported on first access.
    """
    lazy_submodules = frozenset(submodules)

    def __getattr__(name: str) -> object:
        module = names.get(name)
        if module is not None:
            value = getattr(importlib.import_module(module, package), name)
            namespace[name] = value
            return value
        if name in lazy_submodules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())) | set(names))

    return __getattr__, __dir__

"""Writing plans back to YAML: the inverse of the loader for plans built in Python or loaded from files.

``load_plan_text(dump_plan(plan)).plan == plan`` holds for every valid plan (a tested round trip).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from pydantic import JsonValue

from ._schema import Plan

if TYPE_CHECKING:
    import yaml

__all__ = ["dump_plan", "plan_to_data"]


def plan_to_data(plan: Plan) -> dict[str, JsonValue]:
    """The plan as plain data with the file's keys (``as``, ``else``), leaving out unset optional keys."""
    data: dict[str, JsonValue] = plan.model_dump(mode="json", by_alias=True, exclude_unset=True)
    head: dict[str, JsonValue] = {"apiVersion": plan.apiVersion, "kind": plan.kind, "name": plan.name}
    return {**head, **{k: v for k, v in data.items() if k not in head}}


_BREAKS = ("\r", "\x85", "\u2028", "\u2029")


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if any(b in value for b in _BREAKS) or not value.replace("\n", "").isprintable():
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    style = "|" if "\n" in value and not value.endswith((" ", "\t")) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


@functools.cache
def _dumper() -> type[yaml.SafeDumper]:
    """The plan dumper class, built on first use."""
    import yaml  # deferred: a heavy import (tests/unit/test_import_cost.py)

    class Dumper(yaml.SafeDumper):
        """Block style; multi-line strings as ``|`` literals so prompts stay readable."""

    Dumper.add_representer(str, _str)
    return Dumper


def dump_plan(plan: Plan) -> str:
    """The plan as YAML text that loads back to an equal ``Plan``."""
    import yaml  # deferred: a heavy import (tests/unit/test_import_cost.py)

    text: str = yaml.dump(
        plan_to_data(plan), Dumper=_dumper(), sort_keys=False, allow_unicode=True, width=100
    )
    return text

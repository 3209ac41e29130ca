"""The public surface of agentflow.agents.evogit is explicit and sorted (constants, classes, functions)."""

from __future__ import annotations

import agentflow.agents.evogit as evogit


def _isort_key(name: str) -> tuple[bool, bool, str]:
    return (not name.isupper(), not name[:1].isupper(), name)


def test_all_is_sorted_and_every_name_exists() -> None:
    assert evogit.__all__ == sorted(evogit.__all__, key=_isort_key)
    assert len(set(evogit.__all__)) == len(evogit.__all__)
    for name in evogit.__all__:
        assert hasattr(evogit, name), name


def test_all_lists_every_public_attribute() -> None:
    # dir(): names load lazily, on first access; TYPE_CHECKING is the typing flag the lazy imports use.
    public = {n for n in dir(evogit) if not n.startswith("_") and n not in ("annotations", "TYPE_CHECKING")}
    modules = {n for n in public if type(getattr(evogit, n)).__name__ == "module"}
    assert public - modules == set(evogit.__all__)

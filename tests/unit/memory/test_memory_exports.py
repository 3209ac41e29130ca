"""The public surface of agentflow.memory is explicit and sorted."""

from __future__ import annotations

import agentflow.memory as memory


def test_all_is_sorted_and_every_name_exists() -> None:
    assert memory.__all__ == sorted(memory.__all__)
    for name in memory.__all__:
        assert hasattr(memory, name), name


def test_all_lists_every_public_attribute() -> None:
    public = {n for n in vars(memory) if not n.startswith("_") and n != "annotations"}
    modules = {n for n in public if type(getattr(memory, n)).__name__ == "module"}
    assert public - modules == set(memory.__all__)

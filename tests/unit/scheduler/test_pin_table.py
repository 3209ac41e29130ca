"""PinTable: the one pin/unpin/expire of the cache models, with a fake clock."""

from __future__ import annotations

import pytest

from agentflow.errors import ConfigError
from agentflow.scheduler._pins import PinTable


def _table(now: list[float], calls: list[tuple[str, tuple[int, ...]]]) -> PinTable:
    return PinTable(
        clock=lambda: now[0],
        hold=lambda seq: calls.append(("hold", seq)),
        unhold=lambda seq: calls.append(("unhold", seq)),
    )


def test_pin_holds_once_and_repin_moves_expiry_when_sequence_is_pinned_again() -> None:
    now: list[float] = [0.0]
    calls: list[tuple[str, tuple[int, ...]]] = []
    pins = _table(now, calls)
    pins.pin((1, 2), 10.0)
    now[0] = 5.0
    pins.pin((1, 2), 10.0)  # now expires at 15, not 10
    assert calls == [("hold", (1, 2))]
    now[0] = 12.0
    assert pins.expire() == 0 and (1, 2) in pins
    now[0] = 15.0
    assert pins.expire() == 1
    assert calls == [("hold", (1, 2)), ("unhold", (1, 2))]
    assert pins.as_dict() == {}


def test_expire_releases_in_expiry_order_when_several_pins_lapse() -> None:
    now: list[float] = [0.0]
    calls: list[tuple[str, tuple[int, ...]]] = []
    pins = _table(now, calls)
    pins.pin((3,), 3.0)
    pins.pin((1,), 1.0)
    pins.pin((2,), 2.0)
    now[0] = 2.5
    assert pins.expire() == 2
    assert [seq for kind, seq in calls if kind == "unhold"] == [(1,), (2,)]
    assert list(pins) == [(3,)]


def test_unpin_unholds_once_and_reports_unknown_when_not_pinned() -> None:
    now: list[float] = [0.0]
    calls: list[tuple[str, tuple[int, ...]]] = []
    pins = _table(now, calls)
    pins.pin((7,), 1.0)
    assert pins.unpin((7,)) is True
    assert pins.unpin((7,)) is False
    now[0] = 2.0
    assert pins.expire() == 0  # the removed pin's heap entry is stale and skipped
    assert calls == [("hold", (7,)), ("unhold", (7,))]


def test_pin_ignores_empty_sequence_and_rejects_bad_ttl() -> None:
    now: list[float] = [0.0]
    calls: list[tuple[str, tuple[int, ...]]] = []
    pins = _table(now, calls)
    pins.pin((), 1.0)
    assert calls == [] and pins.as_dict() == {}
    with pytest.raises(ConfigError, match="ttl_s must be > 0"):
        pins.pin((1,), 0.0)

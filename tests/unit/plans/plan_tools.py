"""Tools the plan tests import by ``module:attr`` (this folder is on sys.path under pytest)."""

from __future__ import annotations

import anyio

CALLS: list[str] = []
"""Every call of ``record``, in order (tests clear it)."""

ACTIVE = {"now": 0, "peak": 0}
"""Concurrent calls of ``tracked`` right now and at most."""


def shout(text: str) -> str:
    """Upper-case a text.

    Args:
        text: The text.
    """
    return text.upper()


async def record(label: str) -> str:
    """Append a label to CALLS.

    Args:
        label: What to record.
    """
    CALLS.append(label)
    return label


async def tracked(label: str) -> str:
    """Count concurrent calls while sleeping briefly.

    Args:
        label: Returned as is.
    """
    ACTIVE["now"] += 1
    ACTIVE["peak"] = max(ACTIVE["peak"], ACTIVE["now"])
    try:
        await anyio.sleep(0.02)
    finally:
        ACTIVE["now"] -= 1
    return label


async def sleepy(seconds: float) -> str:
    """Sleep, then answer.

    Args:
        seconds: How long to sleep.
    """
    await anyio.sleep(seconds)
    return "woke"


FLAKY = {"left": 0}
"""How many more calls of ``flaky`` fail."""


def flaky(text: str) -> str:
    """Fail while FLAKY['left'] > 0, then echo.

    Args:
        text: Echoed back.
    """
    if FLAKY["left"] > 0:
        FLAKY["left"] -= 1
        raise RuntimeError("transient failure")
    return text


GATE: dict[str, anyio.Event] = {}
"""``GATE["open"]``: set by ``open_gate``; ``wait_gate`` blocks until then (tests create the event)."""


async def wait_gate(label: str) -> str:
    """Block until ``open_gate`` runs, then record the label.

    Args:
        label: What to record.
    """
    await GATE["open"].wait()
    CALLS.append(label)
    return label


async def open_gate(label: str) -> str:
    """Record the label and let every ``wait_gate`` call go on.

    Args:
        label: What to record.
    """
    CALLS.append(label)
    GATE["open"].set()
    return label

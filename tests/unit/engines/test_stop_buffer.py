"""Unit tests of StopBuffer: streamed output equals cutting the text at the first completed stop string."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agentflow.engines._stops import StopBuffer


def _reference(pieces: list[str], stops: list[str]) -> tuple[str, bool]:
    """Generation stops after the first piece that completes a stop string; cut at its earliest start."""
    text = ""
    for piece in pieces:
        text += piece
        hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
        if hits:
            return text[: min(hits)], True
    return text, False


def test_stop_split_across_pieces_is_detected_and_held_back() -> None:
    buf = StopBuffer(["END"])
    assert buf.feed("abc E") == ("abc ", False)
    assert buf.feed("N") == ("", False)
    assert buf.feed("Dtail") == ("", True)
    assert buf.text == "abc "
    assert buf.stopped


def test_held_back_prefix_is_released_when_it_does_not_complete() -> None:
    buf = StopBuffer(["END"])
    assert buf.feed("xE") == ("x", False)
    assert buf.feed("Nx") == ("ENx", False)
    assert buf.flush() == ""


def test_flush_releases_trailing_partial_stop() -> None:
    buf = StopBuffer(["END"])
    buf.feed("abEN")
    assert buf.flush() == "EN"
    assert buf.text == "abEN"


def test_no_stops_passes_everything_through() -> None:
    buf = StopBuffer([])
    assert buf.feed("a") == ("a", False)
    assert buf.feed("") == ("", False)


@given(
    st.lists(st.text(alphabet="ab\n", max_size=4), max_size=12),
    st.lists(st.text(alphabet="ab\n", min_size=0, max_size=3), max_size=3),
)
def test_streamed_text_equals_reference_cut_for_any_split(pieces: list[str], stops: list[str]) -> None:
    buf = StopBuffer(stops)
    out = []
    stopped = False
    for piece in pieces:
        emitted, stopped = buf.feed(piece)
        out.append(emitted)
        if stopped:
            break
    if not stopped:
        out.append(buf.flush())
    expected, expected_stop = _reference(pieces, stops)
    assert "".join(out) == expected == buf.text
    assert stopped == expected_stop

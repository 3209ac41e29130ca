"""Stop-string handling for engines that stream text piece by piece.

A stop string may arrive split over several pieces, so text that could be the start of a stop string is held
back until the next piece decides it. The streamed text always equals what a batch cut of the whole output at
the first stop string would give.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StopBuffer"]


class StopBuffer:
    """Accumulates generated text and releases the part that can no longer turn into a stop string.

    Args:
        stops: Stop strings (empty strings are ignored).

    >>> buf = StopBuffer(["\\n\\n"])
    >>> buf.feed("Hello\\n")
    ('Hello', False)
    >>> buf.feed("\\nmore")
    ('', True)
    >>> buf.text
    'Hello'
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._text = ""  # everything fed so far (cut at the stop once found)
        self._emitted = 0  # characters of _text already released
        self._stopped = False

    @property
    def text(self) -> str:
        """The output so far, cut before the first stop string."""
        return self._text

    @property
    def stopped(self) -> bool:
        """Whether a stop string was found."""
        return self._stopped

    def feed(self, piece: str) -> tuple[str, bool]:
        """Add a piece of output.

        Args:
            piece: The next decoded text.

        Returns:
            The text that is now safe to emit, and whether a stop string was found (then nothing more
            should be generated; the returned text ends right before the stop string).
        """
        if self._stopped:
            return "", True
        self._text += piece
        # Invariant: no stop string starts before self._emitted (such a start would have been held back).
        cut = -1
        for stop in self._stops:
            i = self._text.find(stop, self._emitted)
            if i >= 0 and (cut < 0 or i < cut):
                cut = i
        if cut >= 0:
            self._text = self._text[:cut]
            self._stopped = True
            return self._release(cut), True
        return self._release(len(self._text) - self._holdback()), False

    def flush(self) -> str:
        """Release everything held back (the output ended without a stop string)."""
        return self._release(len(self._text))

    def _holdback(self) -> int:
        """Length of the longest suffix of the text that is a proper prefix of some stop string."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(self._text) - self._emitted), best, -1):
                if self._text.endswith(stop[:n]):
                    best = n
                    break
        return best

    def _release(self, upto: int) -> str:
        if upto <= self._emitted:
            return ""
        out = self._text[self._emitted : upto]
        self._emitted = upto
        return out

"""A token mask over the logits: enforcing a ``Grammar`` while an embedded engine decodes.

Per generation step the engine asks ``TokenMatcher.mask`` to set the logits of every token the grammar
forbids to ``-inf`` (one llguidance bitmask, unpacked with numpy), samples as usual, and hands the token to
``consume``. When the grammar is complete (``complete``: nothing but end-of-sequence may follow), the engine
stops without sampling again, so a finished JSON value is never followed by filler tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._grammar import Grammar

if TYPE_CHECKING:
    import llguidance
    import numpy
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["TokenMatcher"]


class TokenMatcher:
    """Enforces one ``Grammar`` over one generation, token by token.

    Not thread-safe; one per request. The tokenizer is an ``llguidance.LLTokenizer`` of the engine's
    vocabulary (``llguidance.llamacpp.lltokenizer_from_vocab`` for llama.cpp).

    Args:
        tokenizer: The engine's vocabulary as llguidance sees it.
        grammar: The compiled grammar (``compile_grammar``).
    """

    def __init__(self, tokenizer: llguidance.LLTokenizer, grammar: Grammar) -> None:
        import llguidance
        import numpy as np  # deferred: a heavy import (tests/unit/test_import_cost.py)

        self._np = np
        self._matcher = llguidance.LLMatcher(tokenizer, grammar.text, log_level=0)
        self._vocab = tokenizer.vocab_size
        # Scratch bitmask, one bit per token, rewritten at every step.
        # Set once the matcher fails by itself (llguidance parser limits): decoding goes on unconstrained.
        self._released = False
        self._bits: NDArray[np.int32] = np.full(((self._vocab + 31) // 32,), -1, dtype=np.int32)

    @property
    def error(self) -> str:
        """The matcher's error ("" when fine): a token outside the grammar, or a parser limit hit."""
        return self._matcher.get_error()

    @property
    def released(self) -> bool:
        """The matcher hit an internal limit and stopped constraining (the answer is checked afterwards)."""
        return self._released

    @property
    def complete(self) -> bool:
        """The grammar is satisfied and admits no further token (only end-of-sequence)."""
        return not self._released and self._matcher.is_stopped()

    @property
    def accepting(self) -> bool:
        """The text so far is a complete value (more tokens may still be allowed)."""
        return self._matcher.is_accepting()

    def compute_bitmask(self) -> NDArray[np.int32]:
        """The next-token mask as llguidance computes it: one bit per token id (a view, rewritten per call)."""
        self._matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        return self._bits

    def allowed(self) -> NDArray[np.bool_]:
        """Which token ids the grammar allows next (a boolean array over the vocabulary)."""
        self.compute_bitmask()
        np = self._np
        bits: NDArray[numpy.bool_] = np.unpackbits(self._bits.view(np.uint8), bitorder="little").astype(bool)
        return bits[: self._vocab]

    def mask(self, logits: NDArray[np.float32]) -> None:
        """Set the logits of forbidden tokens to ``-inf`` in place (``logits`` covers the vocabulary).

        If llguidance fails by itself (a parser limit on a pathological grammar), the matcher is released:
        the logits stay as they are from then on, and the caller's check judges the answer.
        """
        if self._released:
            return
        allowed = self.allowed()
        if self._matcher.is_error() or not allowed.any():
            self._released = True
            return
        n = min(len(logits), len(allowed))
        logits[:n][~allowed[:n]] = -self._np.inf
        logits[n:] = -self._np.inf

    def consume(self, token: int) -> bool:
        """Advance over a sampled token; ``False`` if the grammar forbids it (see ``error``)."""
        return self._released or self._matcher.consume_token(token)

    def consume_all(self, tokens: list[int]) -> int:
        """Advance over ``tokens`` as far as the grammar allows; how many were consumed."""
        return self._matcher.try_consume_tokens(tokens)

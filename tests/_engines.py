"""Test doubles beyond the library's own: ``PinningEngine``, a ``TestEngine`` with the optional protocols
``PrefixPinning`` and ``Prefilling`` (what the embedded engine offers a scheduler), for the protocol tests of
the scheduler, the router and the wrappers."""

from __future__ import annotations

from collections.abc import Sequence

from agentflow.engines import GenerationRequest, TestEngine, Usage


class PinningEngine(TestEngine):
    """A ``TestEngine`` (exact one-context cache) that records pins and prefills natively.

    Attributes:
        pins: Pinned token prefixes -> TTL, as the scheduler or router pinned them.
        prefilled: The requests given to ``prefill``, in order.
    """

    __test__ = False

    def __init__(self, *, name: str = "pinning") -> None:
        super().__init__(name=name, prefix_cache=True)
        self.pins: dict[tuple[int, ...], float] = {}
        self.prefilled: list[GenerationRequest] = []

    def pin_prefix(self, tokens: Sequence[int], ttl_s: float) -> bool:
        self.pins[tuple(tokens)] = ttl_s
        return True

    def unpin_prefix(self, tokens: Sequence[int]) -> bool:
        return self.pins.pop(tuple(tokens), None) is not None

    async def prefill(self, request: GenerationRequest) -> Usage:
        """Counts the prompt as computed (the simulated cache is not touched)."""
        self.prefilled.append(request)
        n = len(await self.tokenize(await self.render(request)))
        return Usage(prompt_tokens=n, cached_tokens=0, computed_tokens=n)

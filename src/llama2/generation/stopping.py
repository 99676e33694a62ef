"""Stop strings: cut the output at the first stop string and hold back text that may become one.

A streamed delta must never reveal the start of a stop string that the next token completes, so
the checker only releases text that cannot be the beginning of any stop string.
"""

from __future__ import annotations


class StopStringChecker:
    """Tracks one sequence's text; `update(text)` returns (text safe to emit so far, stopped?)."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.final_text: str | None = None

    def update(self, text: str) -> tuple[str, bool]:
        """Given the full text so far, return the prefix that is safe to show and whether to stop."""
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.final_text = text[:cut]
            return self.final_text, True
        return text[: len(text) - self._held_back(text)], False

    def _held_back(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest

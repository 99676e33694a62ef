"""Turning a growing list of token ids into text deltas that never split a UTF-8 character.

SentencePiece's byte-fallback pieces can encode one character across several tokens; decoding a
prefix that ends mid-character yields U+FFFD. We hold such a tail back until it completes.
"""

from __future__ import annotations

from typing import Callable

REPLACEMENT_CHAR = "\ufffd"


class IncrementalDecoder:
    """Feed token ids one at a time; `text` is everything decodable so far, without a partial tail.

    `prefix` (the prompt's last token) is decoded along with the new tokens and then cut off:
    SentencePiece drops the leading space of the first token it decodes, so without a prefix
    "Once upon a time" + "▁there" would read "Once upon a timethere".
    """

    def __init__(self, decode: Callable[[list[int]], str], prefix: list[int] | None = None) -> None:
        self._decode_all = decode
        self._prefix = list(prefix or [])
        self._prefix_chars = len(decode(self._prefix)) if self._prefix else 0
        self.tokens: list[int] = []
        self.text = ""

    def _decode(self, tokens: list[int]) -> str:
        return self._decode_all(self._prefix + tokens)[self._prefix_chars :]

    def push(self, token: int) -> str:
        """Add a token; return the newly completed text (possibly empty)."""
        self.tokens.append(token)
        full = self._decode(self.tokens)
        if full.endswith(REPLACEMENT_CHAR):
            return ""  # an incomplete multi-byte character: wait for the rest
        delta = full[len(self.text):] if full.startswith(self.text) else full
        self.text = full
        return delta

    def flush(self) -> str:
        """Text left over at the end (a trailing partial character is emitted as decoded)."""
        full = self._decode(self.tokens)
        delta = full[len(self.text):] if full.startswith(self.text) else ""
        self.text = full
        return delta

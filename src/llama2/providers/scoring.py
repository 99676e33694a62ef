"""lm-evaluation-harness's conventions for scoring, shared by every provider that scores text.

`loglikelihood(context, continuation)`: trailing whitespace of the context moves to the start of the
continuation, so that with SentencePiece the space is part of the continuation's first token
(" A", not "" + "A"); the pair is then encoded whole and split where the encoded context ends.
`loglikelihood_rolling(text)`: the text's tokens are scored in disjoint windows of at most the
context length, the first conditioned on BOS, later ones on as much preceding text as fits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from llama2.model.tokenizer import Tokenizer


def move_trailing_space(context: str, continuation: str) -> tuple[str, str]:
    """("Answer: ", "A") -> ("Answer:", " A"), as lm-eval's `_encode_pair` does."""
    n = len(context) - len(context.rstrip())
    return (context[:-n], context[-n:] + continuation) if n else (context, continuation)


def encode_pair(tokenizer: Tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation): BOS + the pair encoded whole, split at the length of
    BOS + the context encoded alone (call `move_trailing_space` first)."""
    whole = tokenizer.encode(context + continuation, bos=True, eos=False)
    split = len(tokenizer.encode(context, bos=True, eos=False))
    return whole[:split], whole[split:]


def rolling_windows(tokens: Sequence[int], prefix: int, max_len: int) -> Iterator[tuple[list[int], list[int]]]:
    """Disjoint `(context, targets)` windows that score every token of `tokens` exactly once.

    Each window's input (context + targets minus the last target) is at most `max_len` tokens; the
    first has `[prefix]` (BOS) as context; later windows score up to `max_len` new tokens and take as
    context the tokens just before them, so each prediction sees as much text as fits
    (lm-eval's `get_rolling_token_windows` with context_len=1, then `make_disjoint_window`).
    """
    tokens = list(tokens)
    if not tokens:
        return
    first = min(max_len, len(tokens))
    yield [prefix], tokens[:first]
    done = first
    while done < len(tokens):
        count = min(len(tokens) - done, max_len)
        end = done + count
        yield tokens[max(end - max_len - 1, 0) : done], tokens[done:end]
        done = end

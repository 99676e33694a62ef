"""Log-likelihoods from an OpenAI-style completions endpoint: send context + continuation with
`echo=True, logprobs=1` and read back the prompt's own token log-probabilities (lm-eval's method
for completion APIs).

The server's tokenizer is unknown here, so the continuation's tokens are found by text offset: a
token belongs to the continuation when it ends after the context does. One token is generated
(`max_tokens=1`: some servers read 0 as "no limit") and dropped by the same offsets.
"""

from __future__ import annotations

from collections.abc import Sequence

from llama2.errors import ProviderError, UnsupportedError
from llama2.providers.base import Loglikelihood


def echo_arguments(model: str, context: str, continuation: str) -> dict[str, object]:
    """Keyword arguments of `completions.create` that score `continuation` after `context`."""
    prompt = context + continuation
    return {"model": model, "prompt": prompt, "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}


def score_echo(spec: str, text: str, logprobs: object, context: str, continuation: str) -> Loglikelihood:
    """Sum the continuation's token log-probabilities from an echoed choice (`text` is the echoed
    prompt plus the generated token; `logprobs` the choice's logprobs object)."""
    tokens: Sequence[str] | None = getattr(logprobs, "tokens", None)
    offsets: Sequence[int] | None = getattr(logprobs, "text_offset", None)
    values: Sequence[float | None] | None = getattr(logprobs, "token_logprobs", None)
    tops: Sequence[dict[str, float] | None] | None = getattr(logprobs, "top_logprobs", None)
    if not (tokens and offsets and values and tops) or not text.startswith(context + continuation):
        raise UnsupportedError(
            f"{spec}: the server did not echo the prompt's log-probabilities; "
            "set loglikelihood: false for it in the providers file and evaluate by generation"
        )
    # Some servers (llama.cpp) count offsets over the tokens' text, which has the SentencePiece
    # leading space that the returned text lacks: shift the boundaries by the difference.
    shift = len("".join(tokens)) - len(text)
    start, end = len(context) + shift, len(context + continuation) + shift
    total, greedy, count = 0.0, True, 0
    for token, offset, value, top in zip(tokens, offsets, values, tops):
        if offset >= end or (offset + len(token) <= start and offset < start):
            continue
        if value is None or not top:
            raise ProviderError(
                f"{spec}: the server gave no log-probability for the first token; give a non-empty context"
            )
        total += value
        greedy = greedy and value >= max(top.values())
        count += 1
    if count == 0:
        raise ProviderError(f"{spec}: no token of the continuation {continuation!r} found in the echoed prompt")
    return Loglikelihood(total, greedy)

"""Plain data types shared across layers: chat messages, sampling settings, generation results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

Role = Literal["system", "user", "assistant"]


class Message(TypedDict):
    role: Role
    content: str


Dialog = list[Message]

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. `temperature=0` means greedy; Meta's defaults are 0.6 / 0.9 (LLAMA2.md §1.4).

    `stop` strings end a sequence as soon as its text contains one; the stop string itself is not
    part of the returned text (the OpenAI convention). `max_new_tokens=None` means "until EOS or the
    end of the context window".
    """

    max_new_tokens: int | None = 256
    temperature: float = 0.6
    top_p: float = 0.9
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass
class GenerationResult:
    """One finished sequence: the new token ids, their text, and why it stopped."""

    tokens: list[int]
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    logprobs: list[float] | None = None
    top_logprobs: list[dict[int, float]] | None = None
    hidden_states: Any = None  # torch.Tensor (sampled tokens, dim), with Engine(keep_hidden_states=True)

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token as OpenAI's `logprobs` show it: its text and bytes, its log-probability,
    and the most likely alternatives at that position as (text, bytes, logprob)."""

    token: str
    bytes: bytes
    logprob: float
    top: tuple[tuple[str, bytes, float], ...] = ()


@dataclass
class StreamDelta:
    """A piece of streamed output for sequence `index`: new text (never a split UTF-8 character),
    the token ids that arrived with it and, when asked for, their log-probabilities. The last piece
    of a sequence carries its finish reason and token counts (what a streamed usage block needs)."""

    index: int
    text: str
    tokens: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    logprobs: list[float] | None = None
    top_logprobs: list[dict[int, float]] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    token_logprobs: list[TokenLogprob] | None = None  # filled by providers, for the server

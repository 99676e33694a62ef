"""The one interface every model is reached through, local or remote.

Evaluation and serving never touch the engine or an SDK directly: they hold a `Provider` and make
three kinds of call — `generate` (text or chat, optionally streamed), `loglikelihood` and
`loglikelihood_rolling` — the narrow waist lm-evaluation-harness showed is enough for every
benchmark. Calls are `async` so one event loop can keep many API requests in flight (the runner) or
serve many users (the server); a local provider batches a list of requests into one engine call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from llama2.errors import UnsupportedError
from llama2.types import Dialog, SamplingParams, StreamDelta, TokenLogprob


@dataclass(frozen=True)
class GenerateRequest:
    """A prompt to continue: plain text (a completion) or a dialog (a chat)."""

    prompt: str | Dialog
    params: SamplingParams = field(default_factory=SamplingParams)

    @property
    def is_chat(self) -> bool:
        return not isinstance(self.prompt, str)


@dataclass
class Completion:
    """One generated answer with what it cost. `cost_usd` is None when the model has no known price."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float = 0.0
    cost_usd: float | None = None
    logprobs: list[float] | None = None
    token_logprobs: list[TokenLogprob] | None = None  # with token texts, where the backend gives them


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Score `continuation` given `context` (lm-eval's contract: the text is split between them as given)."""

    context: str
    continuation: str


@dataclass(frozen=True)
class Loglikelihood:
    """Summed log-probability of the continuation, and whether greedy decoding would produce it."""

    logprob: float
    is_greedy: bool


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do. Chat APIs usually give neither raw completion nor log-likelihoods;
    tasks then fall back to generation and say so."""

    chat: bool = True
    text_completion: bool = True
    loglikelihood: bool = False
    streaming: bool = True


class Provider(ABC):
    """A model behind one interface. Subclasses set `spec` (what the user typed, e.g. `local:default`)
    and `capabilities`, and implement the calls their backend supports."""

    spec: str
    capabilities: Capabilities

    @property
    def identity(self) -> str:
        """What makes two providers give the same answers — the cache key's model part. A local
        provider adds a fingerprint of its weights so a retrained checkpoint never hits old entries."""
        return self.spec

    @abstractmethod
    async def generate(self, requests: Sequence[GenerateRequest]) -> list[Completion]:
        """Answer every request, in order. Implementations batch or run them concurrently."""

    async def stream(self, request: GenerateRequest) -> AsyncIterator[StreamDelta]:
        """Yield the answer in pieces as it is produced (`index` is 0; the last piece has a
        `finish_reason`). Backends without streaming yield the whole answer as one piece."""
        (completion,) = await self.generate([request])
        yield StreamDelta(
            index=0, text=completion.text, finish_reason=completion.finish_reason,  # type: ignore[arg-type]
            logprobs=completion.logprobs,
            prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
        )

    async def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        raise UnsupportedError(f"{self.spec} cannot score log-likelihoods; evaluate it by generation instead")

    async def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        """Log-probability of each whole text (perplexity tasks), windowed over the context length."""
        raise UnsupportedError(f"{self.spec} cannot score log-likelihoods; evaluate it by generation instead")

    async def aclose(self) -> None:
        """Release connections, threads and memory. Safe to call twice."""

    async def __aenter__(self) -> "Provider":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
